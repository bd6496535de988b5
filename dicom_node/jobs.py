"""Durable job queue: one row per received series batch, in SQLite (WAL) under ``storage_dir``.

A job follows one path through the node (../shared/DESIGN.md "Data flow")::

    RECEIVED -> QUEUED -> RUNNING -> SENDING -> DONE
    RUNNING  -> QUEUED             (only by recover(): the process died mid-inference)
    SENDING  -> SENDING            (schedule_retry: a transient send failure, attempts + 1)
    RECEIVED | QUEUED | RUNNING -> SKIPPED            (selection refused the series)
    RECEIVED | QUEUED | RUNNING | SENDING -> FAILED   (with the reason)

DONE, FAILED and SKIPPED are terminal.

* ``RECEIVED``: instances are still arriving; :meth:`JobStore.record_instance` counts them.
* ``QUEUED``: the series tracker saw the series go quiet; waiting for a worker.
* ``RUNNING``: a worker claimed it (selection, volume, inference, result objects).
* ``SENDING``: the results lie in the job's outbox folder until the peer acknowledged each one.

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
instances of its own batch.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

#: File name of the queue database inside ``storage_dir``.
JOBS_DB_NAME = "jobs.sqlite3"
#: Bumped whenever the table layout changes; an unknown version is refused, never guessed at.
SCHEMA_VERSION = 1
#: How long a statement waits for another connection's write lock before failing.
BUSY_TIMEOUT_S = 10.0
#: A job whose RUNNING stage was interrupted this many times is failed instead of rerun, so a
#: series that crashes the process (out of memory, a native library fault) cannot crash-loop it.
DEFAULT_MAX_RUNS = 3


class JobState(str, Enum):
    """Where a job stands; the values are what the database stores."""

    RECEIVED = "RECEIVED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SENDING = "SENDING"
    DONE = "DONE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


#: States a job never leaves.
TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.SKIPPED})

#: The legal transitions, ``from -> {to, ...}``. RUNNING -> QUEUED happens only in
#: :meth:`JobStore.recover`; SENDING -> SENDING is a rescheduled send.
ALLOWED_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.RECEIVED: frozenset({JobState.QUEUED, JobState.SKIPPED, JobState.FAILED}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.SKIPPED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.QUEUED, JobState.SENDING, JobState.SKIPPED, JobState.FAILED}
    ),
    JobState.SENDING: frozenset({JobState.SENDING, JobState.DONE, JobState.FAILED}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.SKIPPED: frozenset(),
}


class JobStoreError(Exception):
    """Base class of the queue's own errors."""


class UnknownJobError(JobStoreError, LookupError):
    """No job with the given id exists."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id} in the job store")


class IllegalTransitionError(JobStoreError, ValueError):
    """A state change the lifecycle does not allow (see :data:`ALLOWED_TRANSITIONS`)."""

    def __init__(
        self, job_id: int, current: JobState, wanted: JobState, needed: Iterable[JobState]
    ) -> None:
        self.job_id = job_id
        self.current = current
        self.wanted = wanted
        super().__init__(
            f"job {job_id} is {current.value}: cannot move it to {wanted.value}, which needs a "
            f"job in {' or '.join(s.value for s in needed)}"
        )


class SchemaVersionError(JobStoreError):
    """The database was written by a different, incompatible version of the node."""


@dataclass(frozen=True)
class Job:
    """One row of the queue, as read at one instant (a snapshot: re-read with :meth:`JobStore.get`).

    Times are seconds since the epoch (whatever clock the caller passes as ``now``).
    """

    id: int
    study_instance_uid: str
    series_instance_uid: str
    #: Calling AE title of the association that sent the batch; results go back to this peer.
    calling_ae: str
    state: JobState
    #: Why the job FAILED or was SKIPPED, or the last transient send error while SENDING.
    reason: str | None
    instance_count: int
    created_at: float
    updated_at: float
    last_instance_at: float
    #: Send attempts that failed transiently and were rescheduled.
    attempts: int
    #: How often a worker claimed the job (more than one means a restart interrupted it).
    runs: int
    #: When the next send attempt is due; ``None`` = as soon as possible.
    next_attempt_at: float | None
    #: ``<storage_dir>/outbox/<job_id>/`` once the job is SENDING.
    outbox_dir: Path | None
    #: Stage timings in seconds as JSON text (``{"inference": 1.2, ...}``).
    timings_json: str

    @property
    def timings(self) -> dict[str, float]:
        """The stage timings as a dict (decoded from :attr:`timings_json`)."""
        return dict(json.loads(self.timings_json))

    @property
    def is_terminal(self) -> bool:
        """True for DONE, FAILED and SKIPPED."""
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class RecoveryReport:
    """What :meth:`JobStore.recover` found and did at startup."""

    #: Were RUNNING when the process died; now QUEUED again (rerun from the spool).
    requeued: tuple[Job, ...]
    #: Were RUNNING too often (:data:`DEFAULT_MAX_RUNS`); now FAILED.
    failed: tuple[Job, ...]
    #: Still RECEIVED: hand them to the series tracker so their quiet period restarts.
    received: tuple[Job, ...]
    #: Already QUEUED: nothing to do, a worker claims them.
    queued: tuple[Job, ...]
    #: SENDING: their outbox is (re)sent when due.
    sending: tuple[Job, ...]


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    -- AUTOINCREMENT: ids are never reused, so an old outbox/<id> folder never meets a new job.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ({", ".join(f"'{s.value}'" for s in JobState)})),
    reason TEXT,
    instance_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_instance_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    outbox_dir TEXT,
    timings TEXT NOT NULL DEFAULT '{{}}'
);
-- At most one open (RECEIVED) batch per series: the target of record_instance's upsert.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_open_batch
    ON jobs (study_instance_uid, series_instance_uid) WHERE state = 'RECEIVED';
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at, id);
"""

_COLUMNS = (
    "id, study_instance_uid, series_instance_uid, calling_ae, state, reason, instance_count, "
    "created_at, updated_at, last_instance_at, attempts, runs, next_attempt_at, outbox_dir, timings"
)

_UPSERT_INSTANCE = f"""
INSERT INTO jobs (study_instance_uid, series_instance_uid, calling_ae, state, instance_count,
                  created_at, updated_at, last_instance_at)
VALUES (?, ?, ?, '{JobState.RECEIVED.value}', 1, ?, ?, ?)
ON CONFLICT (study_instance_uid, series_instance_uid) WHERE state = '{JobState.RECEIVED.value}'
DO UPDATE SET instance_count = instance_count + 1,
              last_instance_at = max(last_instance_at, excluded.last_instance_at),
              updated_at = excluded.updated_at
RETURNING id, instance_count
"""


def _row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        study_instance_uid=row["study_instance_uid"],
        series_instance_uid=row["series_instance_uid"],
        calling_ae=row["calling_ae"],
        state=JobState(row["state"]),
        reason=row["reason"],
        instance_count=row["instance_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_instance_at=row["last_instance_at"],
        attempts=row["attempts"],
        runs=row["runs"],
        next_attempt_at=row["next_attempt_at"],
        outbox_dir=Path(row["outbox_dir"]) if row["outbox_dir"] is not None else None,
        timings_json=row["timings"],
    )


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


class JobStore:
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

    Raises
    ------
    SchemaVersionError
        If the file holds a queue of another schema version.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
        cls, storage_dir: str | Path, *, clock: Callable[[], float] = time.time
    ) -> JobStore:
        """Open ``<storage_dir>/jobs.sqlite3``."""
        return cls(Path(storage_dir) / JOBS_DB_NAME, clock=clock)

    def _init_schema(self) -> None:
        with self._transaction(durable=True):
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise SchemaVersionError(
                    f"{self.path}: job database has schema version {version}, this node "
                    f"understands version {SCHEMA_VERSION}; move the file aside or upgrade"
                )
            for statement in _SCHEMA.split(";"):
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
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJobError(job_id)
        return _row_to_job(row)

    def _transition(
        self,
        job_id: int,
        wanted: JobState,
        *,
        only_from: JobState | None = None,
        increment: str | None = None,
        **columns: Any,
    ) -> Job:
        """Move one job to ``wanted`` (and set ``columns``) if the lifecycle allows it.

        ``only_from`` narrows the legal source states to one (a retry is SENDING -> SENDING
        only, even though SENDING is also reached from RUNNING); ``increment`` names an integer
        column to add one to in the same statement.
        """
        assignments = "".join(f", {name} = ?" for name in columns)
        if increment is not None:
            assignments += f", {increment} = {increment} + 1"
        sql = (
            f"UPDATE jobs SET state = ?, updated_at = ?{assignments} WHERE id = ? "
            f"RETURNING {_COLUMNS}"
        )
        with self._transaction(durable=True) as conn:
            previous = self._get_locked(job_id).state
            needed = (
                [only_from]
                if only_from is not None
                else [s for s, targets in ALLOWED_TRANSITIONS.items() if wanted in targets]
            )
            if previous not in needed:
                raise IllegalTransitionError(job_id, previous, wanted, needed)
            row = conn.execute(
                sql, (wanted.value, self._clock(), *columns.values(), job_id)
            ).fetchone()
        job = _row_to_job(row)
        _log_transition(job, previous)
        return job

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
                _UPSERT_INSTANCE,
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

    def received_job(self, study_instance_uid: str, series_instance_uid: str) -> Job | None:
        """The series' open (RECEIVED) batch, if any: what the series tracker queues."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE study_instance_uid = ? "
                "AND series_instance_uid = ? AND state = ?",
                (study_instance_uid, series_instance_uid, JobState.RECEIVED.value),
            ).fetchone()
        return _row_to_job(row) if row is not None else None

    # -- transitions ------------------------------------------------------------------------

    def mark_queued(self, job_id: int) -> Job:
        """RECEIVED -> QUEUED: the series is complete and waits for a worker."""
        return self._transition(job_id, JobState.QUEUED, only_from=JobState.RECEIVED)

    def claim_next(self, now: float) -> Job | None:
        """Atomically take the oldest QUEUED job and make it RUNNING; ``None`` if none waits.

        Safe with several worker threads (and processes): each job is handed out once.
        """
        with self._transaction(durable=True) as conn:
            row = conn.execute(
                f"UPDATE jobs SET state = ?, updated_at = ?, runs = runs + 1 "
                f"WHERE id = (SELECT id FROM jobs WHERE state = ? ORDER BY created_at, id LIMIT 1) "
                f"RETURNING {_COLUMNS}",
                (JobState.RUNNING.value, now, JobState.QUEUED.value),
            ).fetchone()
        if row is None:
            return None
        job = _row_to_job(row)
        _log_transition(job, JobState.QUEUED)
        return job

    def mark_sending(self, job_id: int, outbox_dir: str | Path) -> Job:
        """RUNNING -> SENDING: the results are complete in ``outbox_dir``; send them now."""
        return self._transition(
            job_id,
            JobState.SENDING,
            only_from=JobState.RUNNING,
            outbox_dir=str(outbox_dir),
            next_attempt_at=None,
            reason=None,
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
                f"UPDATE jobs SET timings = ? WHERE id = ? RETURNING {_COLUMNS}",
                (json.dumps(merged, sort_keys=True), job_id),
            ).fetchone()
        return _row_to_job(row)

    # -- reading ----------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """The job with this id; raises :class:`UnknownJobError` if there is none."""
        with self._lock:
            return self._get_locked(job_id)

    def due_for_sending(self, now: float) -> list[Job]:
        """SENDING jobs whose next attempt is due at ``now``, the longest-waiting first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state = ? "
                "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
                "ORDER BY coalesce(next_attempt_at, updated_at), id",
                (JobState.SENDING.value, now),
            ).fetchall()
        return [_row_to_job(r) for r in rows]

    def latest_job(self, study_instance_uid: str, series_instance_uid: str) -> Job | None:
        """The series' newest job in any state: the startup spool scan compares its
        ``last_instance_at`` with the files on disk to find instances no job has seen."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE study_instance_uid = ? "
                "AND series_instance_uid = ? ORDER BY id DESC LIMIT 1",
                (study_instance_uid, series_instance_uid),
            ).fetchone()
        return _row_to_job(row) if row is not None else None

    def list_jobs(self, states: Iterable[JobState | str] | None = None) -> list[Job]:
        """All jobs (or those in ``states``), oldest first."""
        with self._lock:
            if states is None:
                rows = self._conn.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id").fetchall()
            else:
                wanted = [JobState(s).value for s in states]
                rows = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({', '.join('?' * len(wanted))}) "
                    "ORDER BY id",
                    wanted,
                ).fetchall()
        return [_row_to_job(r) for r in rows]

    def count_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zero included); for metrics."""
        with self._lock:
            rows = self._conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(state): n for state, n in rows})
        return counts

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
                f"SELECT {_COLUMNS} FROM jobs WHERE state = ? ORDER BY id",
                (JobState.RUNNING.value,),
            ).fetchall()
            for job in map(_row_to_job, running):
                if job.runs >= max_runs:
                    reason = (
                        f"interrupted {job.runs} times while RUNNING (the node stopped during "
                        "processing); not retried again"
                    )
                    new_state, new_reason = JobState.FAILED, reason
                else:
                    new_state, new_reason = JobState.QUEUED, None
                row = conn.execute(
                    f"UPDATE jobs SET state = ?, reason = ?, updated_at = ? WHERE id = ? "
                    f"RETURNING {_COLUMNS}",
                    (new_state.value, new_reason, now, job.id),
                ).fetchone()
                requeued.append((_row_to_job(row), job.state))
            others = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?, ?, ?) ORDER BY id",
                (JobState.RECEIVED.value, JobState.QUEUED.value, JobState.SENDING.value),
            ).fetchall()
        for job, previous in requeued:
            _log_transition(job, previous)
        rest = [_row_to_job(r) for r in others]
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
