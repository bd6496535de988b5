"""Durable job queue: one row per received series batch, in SQLite (WAL) under ``storage_dir``.

The lifecycle (states, legal transitions, what recovery does with an interrupted job) is pure
logic in :mod:`dicom_node.job_states`; this module stores it. Every state this module writes
goes through :func:`~dicom_node.job_states.check_transition` first, recovery included.

Why SQLite: the queue must survive a crash or power cut at any instant without a server to run,
and the node is one process. Every state change is a single SQL statement (or one ``BEGIN
IMMEDIATE`` transaction), so a ``SIGKILL`` leaves either the old or the new state, never half.

Durability choice: ``journal_mode=WAL`` with ``synchronous=NORMAL`` for the per-instance upsert,
and ``synchronous=FULL`` for the (few, per-series) state changes. In WAL mode NORMAL loses no
committed transaction when the *process* dies (the WAL is in the OS page cache), only when the
*machine* loses power before the next WAL sync, and the database never corrupts. The
instance itself is already fsynced to the spool before the C-STORE success goes out, so the
per-instance row is bookkeeping: making it FULL would add a second fsync to every received
instance. State changes are rare and decide what is rerun or resent after a power cut, so they
pay for the WAL sync (which also makes every earlier NORMAL commit durable).

A series that arrives again after its batch left ``RECEIVED`` (late instances, or a modality
resending the series) starts a *new* job; that job reruns the workflow on the whole series as
the spool then holds it, and its results go out as a new batch. ``instance_count`` counts only the
instances of its own batch. Each analysis that produces results gets the series' next
``result_version`` (1, 2, ...; :meth:`JobStore.next_result_version`), recorded when the job
becomes SENDING; an operator's ``jobs retry`` is such a re-analysis too (:meth:`JobStore.rerun`).

The table layout and its versions are in :mod:`dicom_node.job_schema`, the read-only queries
in :mod:`dicom_node.job_queries`. A job's end (DONE, FAILED, SKIPPED) goes to the audit trail.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from dicom_node.audit import AuditEvent, AuditLog
from dicom_node.job_queries import JobQueries
from dicom_node.job_schema import (
    COLUMNS,
    MIGRATE_1_TO_2,
    SCHEMA,
    SCHEMA_VERSION,
    UPSERT_INSTANCE,
    row_to_job,
)
from dicom_node.job_states import (
    ALLOWED_TRANSITIONS,
    DEFAULT_MAX_RUNS,
    TERMINAL_STATES,
    IllegalTransitionError,
    Job,
    JobState,
    JobStoreError,
    RecoveryReport,
    SchemaVersionError,
    UnknownJobError,
    check_transition,
    recovery_target,
)
from dicom_node.layout import StorageLayout
from dicom_node.storage import create_private_file, make_private_dirs

__all__ = [
    "ALLOWED_TRANSITIONS",
    "DEFAULT_MAX_RUNS",
    "TERMINAL_STATES",
    "IllegalTransitionError",
    "Job",
    "JobState",
    "JobStore",
    "JobStoreError",
    "RecoveryReport",
    "SchemaVersionError",
    "UnknownJobError",
]

logger = logging.getLogger(__name__)

#: How long a statement waits for another connection's write lock before failing.
BUSY_TIMEOUT_S = 10.0


#: The audit event of each terminal state a job can reach.
_AUDIT_EVENTS: Final[dict[JobState, AuditEvent]] = {
    JobState.DONE: AuditEvent.JOB_DONE,
    JobState.FAILED: AuditEvent.JOB_FAILED,
    JobState.SKIPPED: AuditEvent.JOB_SKIPPED,
}


def _log_transition(job: Job, previous: JobState) -> None:
    # UIDs and the AE title identify the series; patient identity never enters the queue.
    suffix = f": {job.reason}" if job.reason and job.state is not JobState.QUEUED else ""
    level = logging.WARNING if job.state is JobState.FAILED else logging.INFO
    logger.log(
        level,
        "job %d %s -> %s (study %s, series %s, from %s)%s",
        job.id,
        previous.value,
        job.state.value,
        job.study_instance_uid,
        job.series_instance_uid,
        job.calling_ae,
        suffix,
    )


class JobStore(JobQueries):
    """The queue: a thread-safe handle on ``jobs.sqlite3``.

    One connection, opened with ``check_same_thread=False`` and guarded by a lock. The sqlite3
    module's transaction state lives on the connection, so two threads sharing it unguarded
    would interleave their statements inside each other's transactions; the lock makes every
    method atomic with respect to the other threads of this process, and ``BEGIN IMMEDIATE``
    makes multi-statement methods atomic with respect to other processes (a CLI reading the
    queue, a second node instance by mistake).

    Parameters
    ----------
    path
        The database file, normally ``<storage_dir>/jobs.sqlite3`` (see :meth:`for_storage_dir`).
        Its folder is created if missing.
    clock
        Time source for ``updated_at`` of state changes that take no ``now`` argument.
    audit
        Where a job's end (DONE, FAILED, SKIPPED) is recorded; ``None`` records nothing (tools
        that only read the queue).

    Raises
    ------
    SchemaVersionError
        If the file holds a queue of another schema version.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._audit = audit
        self._lock = threading.RLock()
        make_private_dirs(self.path.parent)
        # The file is made 0600 before SQLite opens it: SQLite gives its -wal and -shm files the
        # database file's mode, so the whole queue (series UIDs, AE titles) stays private. A
        # file an earlier version created (0644) is tightened too.
        create_private_file(self.path)
        # isolation_level=None: no implicit BEGIN; single statements autocommit and the
        # multi-statement methods open their own BEGIN IMMEDIATE.
        self._conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._init_schema()
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def for_storage_dir(
        cls,
        storage_dir: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
    ) -> JobStore:
        """Open ``<storage_dir>/jobs.sqlite3``."""
        return cls(StorageLayout(Path(storage_dir)).jobs_db, clock=clock, audit=audit)

    def _init_schema(self) -> None:
        with self._transaction(durable=True):
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, SCHEMA_VERSION):
                raise SchemaVersionError(
                    f"{self.path}: job database has schema version {version}, this node "
                    f"understands version {SCHEMA_VERSION}; move the file aside or upgrade"
                )
            if version == 1:
                for statement in MIGRATE_1_TO_2:
                    self._conn.execute(statement)
                logger.info("%s: job database upgraded to schema version 2", self.path)
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """Hold the lock and one ``BEGIN IMMEDIATE`` transaction; commit, or roll back on error.

        ``durable`` commits with ``synchronous=FULL`` (the WAL is fsynced at commit).
        """
        with self._lock:
            if durable:
                self._conn.execute("PRAGMA synchronous=FULL")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            finally:
                if durable:
                    self._conn.execute("PRAGMA synchronous=NORMAL")

    def _get_locked(self, job_id: int) -> Job:
        row = self._conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJobError(job_id)
        return row_to_job(row)

    def _transition_locked(
        self,
        conn: sqlite3.Connection,
        job_id: int,
        wanted: JobState,
        now: float,
        *,
        only_from: JobState | frozenset[JobState] | None = None,
        increment: str | None = None,
        **columns: Any,
    ) -> tuple[Job, JobState]:
        """Inside an open transaction: move one job to ``wanted`` (and set ``columns``) if
        :func:`~dicom_node.job_states.check_transition` allows it; returns the job as
        written and its previous state.

        ``increment`` names an integer column to add one to in the same statement.
        """
        previous = self._get_locked(job_id).state
        check_transition(job_id, previous, wanted, only_from=only_from)
        assignments = "".join(f", {name} = ?" for name in columns)
        if increment is not None:
            assignments += f", {increment} = {increment} + 1"
        row = conn.execute(
            f"UPDATE jobs SET state = ?, updated_at = ?{assignments} WHERE id = ? "
            f"RETURNING {COLUMNS}",
            (wanted.value, now, *columns.values(), job_id),
        ).fetchone()
        return row_to_job(row), previous

    def _transition(
        self,
        job_id: int,
        wanted: JobState,
        *,
        only_from: JobState | frozenset[JobState] | None = None,
        increment: str | None = None,
        **columns: Any,
    ) -> Job:
        """One state change in its own durable transaction, logged once committed."""
        with self._transaction(durable=True) as conn:
            job, previous = self._transition_locked(
                conn,
                job_id,
                wanted,
                self._clock(),
                only_from=only_from,
                increment=increment,
                **columns,
            )
        _log_transition(job, previous)
        self._audit_end(job)
        return job

    def _audit_end(self, job: Job) -> None:
        """Record a job's end (DONE, FAILED, SKIPPED) in the audit trail."""
        event = _AUDIT_EVENTS.get(job.state)
        if self._audit is None or event is None:
            return
        self._audit.record(
            event,
            calling_ae=job.calling_ae,
            study_instance_uid=job.study_instance_uid,
            series_instance_uid=job.series_instance_uid,
            status=job.state.value,
            reason=f"job {job.id}" + (f": {job.reason}" if job.reason else ""),
        )

    # -- receiving --------------------------------------------------------------------------

    def record_instance(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        calling_ae: str,
        now: float,
    ) -> int:
        """Count one received instance on its series' open batch; returns the job id.

        The open batch is the series' RECEIVED job; if there is none (first instance, or the
        earlier batch already left RECEIVED) a new RECEIVED job starts. One SQL upsert: called
        from the C-STORE handler for every instance, so it stays cheap.

        Parameters
        ----------
        study_instance_uid, series_instance_uid
            The instance's (0020,000D) and (0020,000E).
        calling_ae
            Calling AE title of the association; kept from the batch's first instance.
        now
            Receive time (seconds since the epoch).
        """
        with self._lock:
            job_id, count = self._conn.execute(
                UPSERT_INSTANCE,
                (study_instance_uid, series_instance_uid, calling_ae, now, now, now),
            ).fetchall()[0]
        if count == 1:
            logger.info(
                "job %d RECEIVED (study %s, series %s, from %s)",
                job_id,
                study_instance_uid,
                series_instance_uid,
                calling_ae,
            )
        return int(job_id)

    # -- transitions ------------------------------------------------------------------------

    def mark_queued(self, job_id: int) -> Job:
        """RECEIVED -> QUEUED: the series is complete and waits for a worker."""
        return self._transition(job_id, JobState.QUEUED, only_from=JobState.RECEIVED)

    def mark_queued_together(self, job_ids: Iterable[int]) -> list[Job]:
        """RECEIVED -> QUEUED for several jobs in one transaction: no worker claims one of them
        before all are queued (the series of one study, which the worker compares)."""
        changed: list[tuple[Job, JobState]] = []
        with self._transaction(durable=True) as conn:
            now = self._clock()
            for job_id in job_ids:
                changed.append(
                    self._transition_locked(
                        conn, job_id, JobState.QUEUED, now, only_from=JobState.RECEIVED
                    )
                )
        for job, previous in changed:
            _log_transition(job, previous)
        return [job for job, _ in changed]

    def claim_next(self, now: float) -> Job | None:
        """Atomically take the oldest QUEUED job and make it RUNNING; ``None`` if none waits.

        Safe with several worker threads (and processes): each job is handed out once.
        """
        with self._transaction(durable=True) as conn:
            row = conn.execute(
                "SELECT id FROM jobs WHERE state = ? ORDER BY created_at, id LIMIT 1",
                (JobState.QUEUED.value,),
            ).fetchone()
            if row is None:
                return None
            job, previous = self._transition_locked(
                conn, row["id"], JobState.RUNNING, now, only_from=JobState.QUEUED, increment="runs"
            )
        _log_transition(job, previous)
        return job

    def mark_sending(self, job_id: int, outbox_dir: str | Path, result_version: int) -> Job:
        """RUNNING -> SENDING: the results (the series' ``result_version``) are complete in
        ``outbox_dir``; send them now."""
        if result_version < 1:
            raise ValueError(f"result versions start at 1, got {result_version}")
        return self._transition(
            job_id,
            JobState.SENDING,
            only_from=JobState.RUNNING,
            outbox_dir=str(outbox_dir),
            next_attempt_at=None,
            reason=None,
            result_version=result_version,
            sending_since=self._clock(),
        )

    def resend(self, job_id: int, outbox_dir: str | Path) -> Job:
        """DONE | FAILED -> SENDING (an operator's ``jobs resend``): send the job's results,
        refilled into ``outbox_dir``, again from the first attempt.

        Raises
        ------
        IllegalTransitionError
            If the job is not DONE or FAILED.
        ValueError
            If the job never had results (no ``result_version``).
        """
        with self._lock:
            job = self.get(job_id)
            if job.result_version is None:
                raise ValueError(
                    f"job {job_id} has no results to send (it is {job.state.value} and was "
                    "never analysed to the end)"
                )
            return self._transition(
                job_id,
                JobState.SENDING,
                only_from=frozenset({JobState.DONE, JobState.FAILED}),
                outbox_dir=str(outbox_dir),
                next_attempt_at=None,
                reason=None,
                attempts=0,
                sending_since=self._clock(),
            )

    def schedule_retry(self, job_id: int, next_attempt_at: float, reason: str) -> Job:
        """SENDING -> SENDING: a send failed transiently; try again at ``next_attempt_at``."""
        return self._transition(
            job_id,
            JobState.SENDING,
            only_from=JobState.SENDING,
            increment="attempts",
            next_attempt_at=next_attempt_at,
            reason=reason,
        )

    def mark_done(self, job_id: int) -> Job:
        """SENDING -> DONE: the peer acknowledged every result."""
        return self._transition(job_id, JobState.DONE, reason=None, next_attempt_at=None)

    def mark_failed(self, job_id: int, reason: str) -> Job:
        """Any open state -> FAILED, with the reason an operator reads."""
        return self._transition(job_id, JobState.FAILED, reason=reason, next_attempt_at=None)

    def mark_skipped(self, job_id: int, reason: str) -> Job:
        """RECEIVED/QUEUED/RUNNING -> SKIPPED: the selection rules refuse the series."""
        return self._transition(job_id, JobState.SKIPPED, reason=reason)

    def set_timings(self, job_id: int, timings: Mapping[str, float]) -> Job:
        """Merge stage timings (seconds) into the job's ``timings``; no state change."""
        with self._transaction(durable=False) as conn:
            merged = self._get_locked(job_id).timings
            merged.update({str(k): float(v) for k, v in timings.items()})
            row = conn.execute(
                f"UPDATE jobs SET timings = ? WHERE id = ? RETURNING {COLUMNS}",
                (json.dumps(merged, sort_keys=True), job_id),
            ).fetchone()
        return row_to_job(row)

    def rerun(self, job_id: int, now: float) -> Job:
        """A new QUEUED job that analyses ``job_id``'s series again (an operator's ``jobs
        retry`` of a FAILED or SKIPPED job); the old job keeps its state and reason.

        Raises
        ------
        ValueError
            If the job is not FAILED or SKIPPED.
        """
        with self._transaction(durable=True) as conn:
            job = self._get_locked(job_id)
            if job.state not in (JobState.FAILED, JobState.SKIPPED):
                raise ValueError(
                    f"job {job_id} is {job.state.value}; only a FAILED or SKIPPED job can be "
                    "retried (use 'resend' to send a job's results again)"
                )
            row = conn.execute(
                f"INSERT INTO jobs (study_instance_uid, series_instance_uid, calling_ae, state, "
                "reason, instance_count, created_at, updated_at, last_instance_at) "
                f"VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?) RETURNING {COLUMNS}",
                (
                    job.study_instance_uid,
                    job.series_instance_uid,
                    job.calling_ae,
                    JobState.QUEUED.value,
                    f"re-run of job {job_id}",
                    now,
                    now,
                    job.last_instance_at,
                ),
            ).fetchone()
        new = row_to_job(row)
        logger.info(
            "job %d QUEUED: re-run of job %d (series %s)", new.id, job_id, new.series_instance_uid
        )
        return new

    def mark_purged(self, job_id: int, now: float) -> Job:
        """Record that retention removed the job's files; no state change."""
        with self._transaction(durable=False) as conn:
            row = conn.execute(
                f"UPDATE jobs SET purged_at = ? WHERE id = ? RETURNING {COLUMNS}",
                (now, job_id),
            ).fetchone()
        if row is None:
            raise UnknownJobError(job_id)
        return row_to_job(row)

    # -- reading ----------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """The job with this id; raises :class:`UnknownJobError` if there is none."""
        with self._lock:
            return self._get_locked(job_id)

    # -- startup ----------------------------------------------------------------------------

    def recover(self, now: float, *, max_runs: int = DEFAULT_MAX_RUNS) -> RecoveryReport:
        """Put the queue back in order after a (possibly unclean) restart.

        RUNNING jobs were interrupted mid-inference: they go back to QUEUED and are rerun from
        the spool, unless they were already claimed ``max_runs`` times (then FAILED, so a series
        that kills the process cannot crash-loop the node). RECEIVED, QUEUED and SENDING jobs
        stay as they are and are returned for the caller to resume.

        Parameters
        ----------
        now
            Time stamp for the state changes.
        max_runs
            How many interrupted runs a job gets before it is failed.
        """
        if max_runs < 1:
            raise ValueError(f"max_runs must be >= 1, got {max_runs}")
        requeued: list[tuple[Job, JobState]] = []
        with self._transaction(durable=True) as conn:
            running = conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE state = ? ORDER BY id",
                (JobState.RUNNING.value,),
            ).fetchall()
            for job in map(row_to_job, running):
                target, reason = recovery_target(job.runs, max_runs)
                requeued.append(
                    self._transition_locked(
                        conn, job.id, target, now, only_from=JobState.RUNNING, reason=reason
                    )
                )
            others = conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE state IN (?, ?, ?) ORDER BY id",
                (JobState.RECEIVED.value, JobState.QUEUED.value, JobState.SENDING.value),
            ).fetchall()
        for job, previous in requeued:
            _log_transition(job, previous)
            self._audit_end(job)
        rest = [row_to_job(r) for r in others]
        report = RecoveryReport(
            requeued=tuple(j for j, _ in requeued if j.state is JobState.QUEUED),
            failed=tuple(j for j, _ in requeued if j.state is JobState.FAILED),
            received=tuple(j for j in rest if j.state is JobState.RECEIVED),
            queued=tuple(
                j
                for j in rest
                if j.state is JobState.QUEUED and all(j.id != r.id for r, _ in requeued)
            ),
            sending=tuple(j for j in rest if j.state is JobState.SENDING),
        )
        logger.info(
            "job store recovered: %d rerun, %d failed after repeated interruption, "
            "%d still receiving, %d queued, %d sending",
            len(report.requeued),
            len(report.failed),
            len(report.received),
            len(report.queued),
            len(report.sending),
        )
        return report

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
