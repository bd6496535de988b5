"""Start-up recovery: resume what a previous run left, the job queue first, then the spool.

Every state lives on disk (spool, SQLite, outbox), so a crash loses nothing a peer was told was
stored: RUNNING jobs are rerun, RECEIVED series go back to the series tracker and complete after
a fresh quiet period, SENDING outboxes are resent, series folders a retention round left renamed
are given back (:func:`dicom_node.retention.restore_interrupted`), and spool files no job has
seen (stored, then the process died before the queue counted them) get a job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pydicom

from dicom_node.jobs import JobStore
from dicom_node.retention import restore_interrupted
from dicom_node.series_tracker import SeriesKey, SeriesTracker
from dicom_node.storage import InstanceStore

logger = logging.getLogger(__name__)

#: Tolerance when comparing a spool file's mtime with a job's last_instance_at.
MTIME_SLACK_S: Final[float] = 1e-3


def recover(
    jobs: JobStore, store: InstanceStore, tracker: SeriesTracker, clock: Callable[[], float]
) -> bool:
    """Resume the previous run's work (see the module docstring).

    Returns
    -------
    bool
        Whether jobs wait for the worker (queued, or rerun).
    """
    report = jobs.recover(clock())
    for job in report.received:
        track_series_on_disk(
            store, tracker, job.study_instance_uid, job.series_instance_uid, job.calling_ae
        )
    restore_interrupted(store)
    for series in store.changed_series(jobs.newest_instance_times(), MTIME_SLACK_S):
        latest = jobs.latest_job(series.study_instance_uid, series.series_instance_uid)
        if latest is not None and series.newest_mtime <= latest.last_instance_at + MTIME_SLACK_S:
            continue  # the folder changed, but by a removal or a replaced file
        calling_ae = latest.calling_ae if latest is not None else calling_ae_of(series.paths)
        logger.info(
            "spool holds unseen instances of series %s: starting a job",
            series.series_instance_uid,
        )
        for _ in series.paths:
            jobs.record_instance(
                series.study_instance_uid, series.series_instance_uid, calling_ae, clock()
            )
        track_series_on_disk(
            store, tracker, series.study_instance_uid, series.series_instance_uid, calling_ae
        )
    logger.info(
        "recovered: %d rerun, %d failed, %d receiving, %d queued, %d sending",
        len(report.requeued),
        len(report.failed),
        len(report.received),
        len(report.queued),
        len(report.sending),
    )
    return bool(report.queued or report.requeued)


def track_series_on_disk(
    store: InstanceStore, tracker: SeriesTracker, study: str, series: str, calling_ae: str
) -> None:
    """Hand a spooled series back to the tracker (it completes after a fresh quiet period)."""
    key = SeriesKey(study, series)
    for path in store.series_paths(study, series):
        tracker.instance_received(key, path.stem, calling_ae)


def calling_ae_of(paths: tuple[Path, ...]) -> str:
    """Who sent a spooled series: SourceApplicationEntityTitle of its first file's meta."""
    for path in paths:
        try:
            meta = pydicom.filereader.read_file_meta_info(path)
        except (OSError, ValueError):
            continue
        title = str(meta.get("SourceApplicationEntityTitle", "")).strip()
        if title:
            return title
    return ""
