"""Read-only queries of the job queue, as a mixin of :class:`~dicom_node.jobs.JobStore`.

The store (connection, lock, transactions, state changes, recovery) lives in
:mod:`dicom_node.jobs`; what the assembler, the sender, retention, metrics and the operator
commands ask of the queue without changing it lives here. Every query holds the store's lock,
so it never runs inside another thread's transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable

from dicom_node.job_schema import COLUMNS, row_to_job
from dicom_node.job_states import Job, JobState


class JobQueries:
    """Queries over ``self._conn`` under ``self._lock`` (both set by the store)."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

    def received_job(self, study_instance_uid: str, series_instance_uid: str) -> Job | None:
        """The series' open (RECEIVED) batch, if any: what the series tracker queues."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE study_instance_uid = ? "
                "AND series_instance_uid = ? AND state = ?",
                (study_instance_uid, series_instance_uid, JobState.RECEIVED.value),
            ).fetchone()
        return row_to_job(row) if row is not None else None

    def next_result_version(self, study_instance_uid: str, series_instance_uid: str) -> int:
        """The ``result_version`` the next analysis of this series gets: one more than the
        highest any job of the series has (1 for the first)."""
        with self._lock:
            (highest,) = self._conn.execute(
                "SELECT max(result_version) FROM jobs WHERE study_instance_uid = ? "
                "AND series_instance_uid = ?",
                (study_instance_uid, series_instance_uid),
            ).fetchone()
        return int(highest or 0) + 1

    def series_jobs(self, study_instance_uid: str, series_instance_uid: str) -> list[Job]:
        """Every job of one series, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE study_instance_uid = ? "
                "AND series_instance_uid = ? ORDER BY id",
                (study_instance_uid, series_instance_uid),
            ).fetchall()
        return [row_to_job(r) for r in rows]

    def expired_jobs(self, before: float) -> list[Job]:
        """DONE and SKIPPED jobs that ended before ``before`` and still have their files
        (retention's candidates), oldest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE state IN (?, ?) AND updated_at < ? "
                "AND purged_at IS NULL ORDER BY id",
                (JobState.DONE.value, JobState.SKIPPED.value, before),
            ).fetchall()
        return [row_to_job(r) for r in rows]

    def newest_instance_times(self) -> dict[tuple[str, str], float]:
        """``(study, series) -> latest last_instance_at`` over all jobs: what the startup scan
        compares spool folders with, in one query."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT study_instance_uid, series_instance_uid, max(last_instance_at) "
                "FROM jobs GROUP BY study_instance_uid, series_instance_uid"
            ).fetchall()
        return {(study, series): float(latest) for study, series, latest in rows}

    def due_for_sending(self, now: float) -> list[Job]:
        """SENDING jobs whose next attempt is due at ``now``, the longest-waiting first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE state = ? "
                "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
                "ORDER BY coalesce(next_attempt_at, updated_at), id",
                (JobState.SENDING.value, now),
            ).fetchall()
        return [row_to_job(r) for r in rows]

    def latest_job(self, study_instance_uid: str, series_instance_uid: str) -> Job | None:
        """The series' newest job in any state: the startup spool scan compares its
        ``last_instance_at`` with the files on disk to find instances no job has seen."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE study_instance_uid = ? "
                "AND series_instance_uid = ? ORDER BY id DESC LIMIT 1",
                (study_instance_uid, series_instance_uid),
            ).fetchone()
        return row_to_job(row) if row is not None else None

    def jobs_of_study(self, study_instance_uid: str) -> list[Job]:
        """Every job of one study, oldest first: the study-level series choice compares them
        (dicom_node.study_selection)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE study_instance_uid = ? ORDER BY id",
                (study_instance_uid,),
            ).fetchall()
        return [row_to_job(r) for r in rows]

    def list_jobs(self, states: Iterable[JobState | str] | None = None) -> list[Job]:
        """All jobs (or those in ``states``), oldest first."""
        with self._lock:
            if states is None:
                rows = self._conn.execute(f"SELECT {COLUMNS} FROM jobs ORDER BY id").fetchall()
            else:
                wanted = [JobState(s).value for s in states]
                rows = self._conn.execute(
                    f"SELECT {COLUMNS} FROM jobs WHERE state IN ({', '.join('?' * len(wanted))}) "
                    "ORDER BY id",
                    wanted,
                ).fetchall()
        return [row_to_job(r) for r in rows]

    def count_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zero included); for metrics."""
        with self._lock:
            rows = self._conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(state): n for state, n in rows})
        return counts
