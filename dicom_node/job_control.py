"""Operator controls behind ``ichnet-node jobs list|show|retry|resend`` (DESIGN.md "More CLI").

An operator must see every job with its state and reason, rerun a job that FAILED or was
SKIPPED (after fixing a rule or the weights), and send a job's results again (after a PACS
outage, or when the PACS lost them), without editing the database by hand. These functions work
on the node's storage folder directly, so they run beside a running node: the node's loops poll
the queue, pick up a re-run job within a second and send a resent job when it is due.

* ``retry`` makes a *new* QUEUED job for the series (DESIGN.md: a re-analysis has its own job);
  its results get the series' next ``result_version`` and new UIDs.
* ``resend`` refills the job's outbox from the kept copy in ``results/<job>/`` and makes the
  job SENDING again from its first attempt: the very objects sent before, under the same UIDs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dicom_node.audit import AuditLog
from dicom_node.config import AuditSyslogSection
from dicom_node.jobs import Job, JobState, JobStore, UnknownJobError
from dicom_node.layout import StorageLayout
from dicom_node.outbox import Outbox, pending_files
from dicom_node.results import RESULT_JSON_NAME
from dicom_node.storage import InstanceStore


class JobControlError(Exception):
    """An operator command that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class NodeStorage:
    """The parts of ``storage_dir`` the operator commands touch."""

    jobs: JobStore
    spool: InstanceStore
    outbox: Outbox
    kept_results: Outbox

    @classmethod
    def open(cls, storage_dir: Path, syslog: AuditSyslogSection | None = None) -> NodeStorage:
        """Open the node's storage; refuses a folder that holds no job database. Operator
        actions are audited like the node's own, to ``syslog`` too when given."""
        database = StorageLayout(Path(storage_dir)).jobs_db
        if not database.is_file():
            raise JobControlError(
                f"{storage_dir} holds no job database ({database.name}); is node.storage_dir "
                "of this config the node's?"
            )
        return cls(
            JobStore.for_storage_dir(
                storage_dir, audit=AuditLog.for_storage_dir(storage_dir, syslog)
            ),
            InstanceStore(storage_dir),
            Outbox.for_storage_dir(storage_dir),
            Outbox.kept_results(storage_dir),
        )

    def close(self) -> None:
        self.jobs.close()


def list_lines(jobs: JobStore) -> Iterator[str]:
    """One line per job: id, state, series instance UID, calling AE, result version, reason
    (tab-separated, in that order; ``-`` for a job without results)."""
    for job in jobs.list_jobs():
        version = "-" if job.result_version is None else str(job.result_version)
        reason = (job.reason or "").replace("\n", " ")
        yield "\t".join(
            (
                str(job.id),
                job.state.value,
                job.series_instance_uid,
                job.calling_ae,
                version,
                reason,
            )
        )


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def show_lines(storage: NodeStorage, job_id: int) -> Iterator[str]:
    """Everything known about one job, one ``key: value`` per line."""
    job = _get(storage.jobs, job_id)
    kept = storage.kept_results.job_dir(job.id)
    fields = {
        "job": job.id,
        "state": job.state.value,
        "reason": job.reason or "-",
        "study_instance_uid": job.study_instance_uid,
        "series_instance_uid": job.series_instance_uid,
        "calling_ae": job.calling_ae,
        "result_version": job.result_version if job.result_version is not None else "-",
        "instances_in_batch": job.instance_count,
        "created": _time(job.created_at),
        "updated": _time(job.updated_at),
        "last_instance": _time(job.last_instance_at),
        "runs": job.runs,
        "send_attempts": job.attempts,
        "sending_since": _time(job.sending_since),
        "next_attempt": _time(job.next_attempt_at),
        "files_removed_by_retention": _time(job.purged_at),
        "timings_s": json.dumps(job.timings, sort_keys=True),
        "spool": _spool_summary(storage.spool, job),
        "results": str(kept) if kept.is_dir() else "-",
        "unsent_results": _unsent(job),
    }
    result_json = kept / RESULT_JSON_NAME
    if result_json.is_file():
        result = json.loads(result_json.read_text(encoding="utf-8"))
        fields["present"] = json.dumps(result.get("present"), sort_keys=True)
        fields["hemorrhage_volume_ml"] = result.get("hemorrhage_volume_ml")
    for key, value in fields.items():
        yield f"{key}: {value}"


def _spool_summary(spool: InstanceStore, job: Job) -> str:
    paths = spool.series_paths(job.study_instance_uid, job.series_instance_uid)
    folder = spool.series_dir(job.study_instance_uid, job.series_instance_uid)
    return f"{len(paths)} instance(s) in {folder}" if paths else "none"


def _unsent(job: Job) -> str:
    if job.outbox_dir is None or not job.outbox_dir.is_dir():
        return "none"
    return ", ".join(p.name for p in pending_files(job.outbox_dir)) or "none"


def _get(jobs: JobStore, job_id: int) -> Job:
    try:
        return jobs.get(job_id)
    except UnknownJobError as exc:
        raise JobControlError(str(exc)) from None


def retry(storage: NodeStorage, job_id: int, now: float | None = None) -> Job:
    """Queue a new analysis of a FAILED or SKIPPED job's series; returns the new job.

    Raises
    ------
    JobControlError
        The job is in another state, or its instances are no longer in the spool.
    """
    job = _get(storage.jobs, job_id)
    if job.state not in (JobState.FAILED, JobState.SKIPPED):
        raise JobControlError(
            f"job {job_id} is {job.state.value}; only a FAILED or SKIPPED job can be retried "
            "(use 'resend' to send a DONE job's results again)"
        )
    if not storage.spool.series_paths(job.study_instance_uid, job.series_instance_uid):
        raise JobControlError(
            f"job {job_id}: the series' instances are no longer in the spool (removed by "
            "retention or by hand); send the series to the node again"
        )
    return storage.jobs.rerun(job_id, time.time() if now is None else now)


def resend(storage: NodeStorage, job_id: int) -> Job:
    """Send a DONE or FAILED job's results again, from the kept copy; returns the job.

    Raises
    ------
    JobControlError
        The job is in another state, never had results, or retention removed them.
    """
    job = _get(storage.jobs, job_id)
    if job.state not in (JobState.DONE, JobState.FAILED):
        raise JobControlError(
            f"job {job_id} is {job.state.value}; only a DONE or FAILED job's results can be "
            "resent (a SENDING job is being sent; a SKIPPED one has none)"
        )
    if job.result_version is None:
        raise JobControlError(
            f"job {job_id} FAILED before it had results; use 'retry' to analyse the series again"
        )
    kept = storage.kept_results.job_dir(job.id)
    files = pending_files(kept) if kept.is_dir() else []
    if not files:
        raise JobControlError(
            f"job {job_id}: its results are no longer kept in {kept} (removed by retention); "
            "use 'retry' to analyse the series again"
        )
    outbox_dir = storage.outbox.refill(job.id, files)
    return storage.jobs.resend(job.id, outbox_dir)
