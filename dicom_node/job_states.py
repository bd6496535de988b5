"""The job lifecycle as pure rules: states, legal transitions, the job record, recovery.

A job follows one path through the node (../shared/DESIGN.md "Data flow")::

    RECEIVED -> QUEUED -> RUNNING -> SENDING -> DONE
    RUNNING  -> QUEUED             (only by recovery: the process died mid-inference)
    SENDING  -> SENDING            (a transient send failure, rescheduled with attempts + 1)
    RECEIVED | QUEUED | RUNNING -> SKIPPED            (selection refused the series)
    RECEIVED | QUEUED | RUNNING | SENDING -> FAILED   (with the reason)
    DONE | FAILED -> SENDING       (only by an operator's ``ichnet-node jobs resend``)

DONE, FAILED and SKIPPED are terminal: the node never moves a job out of them by itself.

* ``RECEIVED``: instances are still arriving; the store counts them.
* ``QUEUED``: the series tracker saw the series go quiet; waiting for a worker.
* ``RUNNING``: a worker claimed it (selection, volume, inference, result objects).
* ``SENDING``: the results lie in the job's outbox folder until the peer acknowledged each one.

No I/O here: :class:`~dicom_node.jobs.JobStore` asks :func:`check_transition` before every
state it writes (recovery included), so the table below is the one place that decides what may
happen to a job, and it can be tested without a database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

#: A job whose RUNNING stage was interrupted this many times is failed instead of rerun, so a
#: series that crashes the process (out of memory, a native library fault) cannot crash-loop it.
DEFAULT_MAX_RUNS: Final[int] = 3


class JobState(str, Enum):
    """Where a job stands; the values are what the database stores."""

    RECEIVED = "RECEIVED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SENDING = "SENDING"
    DONE = "DONE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


#: States the node never moves a job out of by itself.
TERMINAL_STATES: Final[frozenset[JobState]] = frozenset(
    {JobState.DONE, JobState.FAILED, JobState.SKIPPED}
)

#: The legal transitions, ``from -> {to, ...}``. RUNNING -> QUEUED happens only in recovery
#: (:func:`recovery_target`); SENDING -> SENDING is a rescheduled send.
ALLOWED_TRANSITIONS: Final[Mapping[JobState, frozenset[JobState]]] = {
    JobState.RECEIVED: frozenset({JobState.QUEUED, JobState.SKIPPED, JobState.FAILED}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.SKIPPED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.QUEUED, JobState.SENDING, JobState.SKIPPED, JobState.FAILED}
    ),
    JobState.SENDING: frozenset({JobState.SENDING, JobState.DONE, JobState.FAILED}),
    JobState.DONE: frozenset({JobState.SENDING}),
    JobState.FAILED: frozenset({JobState.SENDING}),
    JobState.SKIPPED: frozenset(),
}


class JobStoreError(Exception):
    """Base class of the queue's own errors."""


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


def check_transition(
    job_id: int,
    current: JobState,
    wanted: JobState,
    *,
    only_from: JobState | frozenset[JobState] | None = None,
) -> None:
    """Raise :class:`IllegalTransitionError` unless ``current -> wanted`` is legal.

    ``only_from`` narrows the legal source states: a retry is SENDING -> SENDING only, queueing
    is RECEIVED -> QUEUED only (RUNNING -> QUEUED belongs to recovery), a first send is
    RUNNING -> SENDING only and a resend DONE | FAILED -> SENDING only, although the table
    allows those targets from other states too.
    """
    narrowed = {only_from} if isinstance(only_from, JobState) else only_from
    needed = [
        source
        for source, targets in ALLOWED_TRANSITIONS.items()
        if wanted in targets and (narrowed is None or source in narrowed)
    ]
    if current not in needed:
        raise IllegalTransitionError(job_id, current, wanted, needed)


def recovery_target(runs: int, max_runs: int = DEFAULT_MAX_RUNS) -> tuple[JobState, str | None]:
    """Where a job found RUNNING at startup goes, and the reason recorded with it.

    It was interrupted mid-inference: back to QUEUED (rerun from the spool), unless it was
    already claimed ``max_runs`` times; then FAILED, so a series that kills the process cannot
    crash-loop the node.
    """
    if max_runs < 1:
        raise ValueError(f"max_runs must be >= 1, got {max_runs}")
    if runs >= max_runs:
        return JobState.FAILED, (
            f"interrupted {runs} times while RUNNING (the node stopped during processing); "
            "not retried again"
        )
    return JobState.QUEUED, None


@dataclass(frozen=True)
class Job:
    """One row of the queue, as read at one instant (a snapshot: re-read with ``JobStore.get``).

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
    #: Which analysis of the series this job's results are (1 = first); ``None`` until the
    #: job has results (it became SENDING).
    result_version: int | None = None
    #: When the job last became SENDING; the sender's give-up horizon counts from here.
    sending_since: float | None = None
    #: When retention removed the job's files (spool, results, outbox); ``None`` = still there.
    purged_at: float | None = None

    @property
    def timings(self) -> dict[str, float]:
        """The stage timings as a dict (decoded from :attr:`timings_json`)."""
        return dict(json.loads(self.timings_json))

    @property
    def is_terminal(self) -> bool:
        """True for DONE, FAILED and SKIPPED."""
        return self.state in TERMINAL_STATES


class UnknownJobError(JobStoreError, LookupError):
    """No job with the given id exists."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id} in the job store")


class SchemaVersionError(JobStoreError):
    """The database was written by a different, incompatible version of the node."""


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
