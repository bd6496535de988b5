"""Retention: the files of finished jobs are removed ``storage.retention_hours`` after they ended.

Without it the spool grows with every study until the disk is full. What is removed, and when:

* a DONE or SKIPPED job that ended more than ``retention_hours`` ago loses its kept results
  (``results/<job>/``) and any outbox folder left (``outbox/<job>/``); the job's row stays in
  the queue (``purged_at`` set), so ``ichnet-node jobs list`` still shows what happened;
* a series' spool folder (``incoming/<study>/<series>/``) is removed only when *every* job of
  the series is DONE or SKIPPED and expired: a RECEIVED, QUEUED, RUNNING or SENDING job still
  needs the instances, and a FAILED job keeps them for an operator's ``jobs retry``.

A spool folder is shared with whatever arrives for the series next, so it is never deleted in
place. :func:`remove_series_folder` first renames it to a hidden name inside its study folder
(atomic), then asks whether anything arrived for the series since the decision (a new job, or
the series tracker waiting on it); if so the files go back, otherwise the hidden folder is
deleted. An instance being written meanwhile is either in the renamed folder before its job was
recorded, and then the C-STORE handler sees its file gone and refuses it (0xA700, the peer
resends; see :func:`dicom_node.handlers.handle_store`), or its job was recorded first and
retention gives the folder back. A renamed folder a crash left behind is given back at start
(:func:`restore_interrupted`), never deleted blind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dicom_node.jobs import JobState, JobStore
from dicom_node.outbox import Outbox
from dicom_node.storage import InstanceStore
from ichnet_core.durable import fsync_directory

logger = logging.getLogger(__name__)

#: Hidden name of a series folder being removed: ``.purge-<series>-<hex>`` in its study folder.
PURGE_PREFIX: Final[str] = ".purge-"
_FINISHED: Final[frozenset[JobState]] = frozenset({JobState.DONE, JobState.SKIPPED})

#: ``(study, series) -> True`` while something for the series is arriving or waiting to be
#: queued (the service's series tracker); retention then leaves the series alone.
SeriesBusy = Callable[[str, str], bool]


@dataclass(frozen=True)
class RetentionReport:
    """What one retention round removed."""

    jobs_purged: int
    series_removed: int


class Retention:
    """Removes the files of expired jobs (see the module docstring).

    Parameters
    ----------
    jobs, store, outbox, kept_results:
        The node's queue, spool, outbox and ``results/`` folders.
    retention_hours:
        ``storage.retention_hours``.
    busy:
        See :data:`SeriesBusy`.
    """

    def __init__(
        self,
        jobs: JobStore,
        store: InstanceStore,
        outbox: Outbox,
        kept_results: Outbox,
        retention_hours: float,
        busy: SeriesBusy,
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.outbox = outbox
        self.kept_results = kept_results
        self.retention_s = retention_hours * 3600.0
        self._busy = busy

    def run_once(self, now: float) -> RetentionReport:
        """Remove what expired by ``now``; returns what was removed."""
        cutoff = now - self.retention_s
        purged = removed = 0
        for job in self.jobs.expired_jobs(cutoff):
            for folder in (self.kept_results.job_dir(job.id), self.outbox.job_dir(job.id)):
                shutil.rmtree(folder, ignore_errors=True)
            series_jobs = self.jobs.series_jobs(job.study_instance_uid, job.series_instance_uid)
            if all(j.state in _FINISHED and j.updated_at < cutoff for j in series_jobs):
                known = frozenset(j.id for j in series_jobs)
                if remove_series_folder(
                    self.store,
                    job.study_instance_uid,
                    job.series_instance_uid,
                    self._arrived_since(known),
                ):
                    removed += 1
            self.jobs.mark_purged(job.id, now)
            purged += 1
        if purged:
            logger.info(
                "retention: removed the files of %d job(s) that ended more than %g h ago "
                "(%d series folder(s) of the spool)",
                purged,
                self.retention_s / 3600.0,
                removed,
            )
        return RetentionReport(purged, removed)

    def _arrived_since(self, known: frozenset[int]) -> SeriesBusy:
        """Whether a series is busy now or has a job that was not among ``known``."""

        def arrived(study: str, series: str) -> bool:
            return self._busy(study, series) or any(
                j.id not in known for j in self.jobs.series_jobs(study, series)
            )

        return arrived


def remove_series_folder(
    store: InstanceStore, study: str, series: str, arrived_since: SeriesBusy
) -> bool:
    """Remove one series' spool folder unless something arrived for it meanwhile.

    Returns
    -------
    bool
        True when the folder is gone (or was already), False when it was given back.
    """
    folder = store.series_dir(study, series)
    if not folder.is_dir():
        return True
    hidden = folder.with_name(f"{PURGE_PREFIX}{series}-{uuid.uuid4().hex}")
    os.rename(folder, hidden)
    if arrived_since(study, series):
        _give_back(store, hidden, study, series)
        logger.info("retention: series %s received new instances; its spool is kept", series)
        return False
    shutil.rmtree(hidden)
    fsync_directory(hidden.parent)
    with contextlib.suppress(OSError):  # not empty: another series of the study is there
        hidden.parent.rmdir()
    return True


def _give_back(store: InstanceStore, hidden: Path, study: str, series: str) -> None:
    """Move the files of a renamed series folder back; newer files of the same name win."""
    folder = store.series_dir(study, series)
    for path in sorted(hidden.iterdir()):
        if not store.is_instance_file(path):
            continue
        store.ensure_series_dir(study, series)
        target = folder / path.name
        if not target.exists():
            os.rename(path, target)
    fsync_directory(folder)
    shutil.rmtree(hidden)


def restore_interrupted(store: InstanceStore) -> int:
    """Give back series folders a crash left renamed mid-removal; returns how many."""
    if not store.incoming_dir.is_dir():
        return 0
    restored = 0
    for hidden in store.incoming_dir.glob(f"*/{PURGE_PREFIX}*"):
        series = hidden.name[len(PURGE_PREFIX) :].rsplit("-", 1)[0]
        _give_back(store, hidden, hidden.parent.name, series)
        restored += 1
    if restored:
        logger.warning("restored %d spool folder(s) whose removal a restart interrupted", restored)
    return restored
