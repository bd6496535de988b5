"""Is the node doing its work? The answer ``/healthz`` gives, part by part.

A node can answer C-ECHO and acknowledge instances while nothing is ever analysed (a dead
worker thread) or sent (a locked job database); a port check cannot see that. Each long-running
loop of :class:`~dicom_node.service.NodeService` therefore reports to a :class:`LoopMonitor`
(heartbeat, busy with a job, consecutive failures), and :class:`HealthCheck` combines them with
the SCP's accept loop and a write-lock probe of the job database into one
:class:`HealthReport`: healthy only when every part is.

Parts (the names ``/healthz`` uses):

* ``receiving``: the SCP's accept loop runs and its socket is open;
* ``assembling``: the assembler loop (quiet series -> QUEUED jobs);
* ``inference``: the worker loop (QUEUED -> RUNNING -> SENDING/SKIPPED/FAILED);
* ``sending``: the sender loop (SENDING -> DONE/FAILED);
* ``notifying``: the notifier loop (queued notifications posted to ``notifications:``);
* ``retention``: the retention loop (files of expired DONE/SKIPPED jobs removed);
* ``job_store``: ``jobs.sqlite3`` can be opened read-write and its write lock taken;
* ``storage``: free space under ``storage_dir`` is above ``storage.min_free_bytes`` (below it
  the node refuses new data, so monitoring must hear of it before the PACS does).

A loop is unhealthy when its thread has ended, when its latest attempt failed (it is backing
off and retrying), or when it has not come round for :data:`STALL_AFTER_S` although it is not
busy with a job (inference and sending legitimately take minutes).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: A loop that is not busy and has not come round for this long counts as stuck.
STALL_AFTER_S: Final[float] = 60.0
#: How long the job-store probe waits for another connection's write lock.
JOB_STORE_PROBE_TIMEOUT_S: Final[float] = 2.0
#: The parts of a :class:`HealthReport`, in the order ``/healthz`` lists them.
PARTS: Final[tuple[str, ...]] = (
    "receiving",
    "assembling",
    "inference",
    "sending",
    "notifying",
    "retention",
    "job_store",
    "storage",
)
OK: Final[str] = "ok"


class LoopMonitor:
    """What one service loop last did; written by the loop, read by :class:`HealthCheck`.

    Parameters
    ----------
    name:
        The loop's part name (``assembling``, ``inference``, ``sending``).
    clock:
        Monotonic seconds.
    stall_after_s:
        See :data:`STALL_AFTER_S`.
    """

    def __init__(
        self,
        name: str,
        clock: Callable[[], float] = time.monotonic,
        stall_after_s: float = STALL_AFTER_S,
    ) -> None:
        self.name = name
        self.thread: threading.Thread | None = None
        self._clock = clock
        self._stall_after_s = stall_after_s
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._busy: str | None = None
        self._busy_since = 0.0
        self._failures = 0
        self._failing_since = 0.0
        self._last_error = ""

    def beat(self) -> None:
        """The loop came round (called at the top of each round)."""
        with self._lock:
            self._last_beat = self._clock()

    @contextlib.contextmanager
    def busy(self, what: str) -> Iterator[None]:
        """Mark a long step (a job's inference, a delivery round) so it is not seen as stuck."""
        with self._lock:
            self._busy, self._busy_since = what, self._clock()
        try:
            yield
        finally:
            with self._lock:
                self._busy = None
                self._last_beat = self._clock()

    def succeeded(self) -> int:
        """A round completed; returns how many failed rounds came before it (0 usually)."""
        with self._lock:
            failures, self._failures = self._failures, 0
            return failures

    def failed(self, exc: BaseException) -> int:
        """A round raised ``exc``; returns the number of consecutive failures so far."""
        with self._lock:
            if self._failures == 0:
                self._failing_since = self._clock()
            self._failures += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            return self._failures

    def problem(self) -> str | None:
        """Why this loop is unhealthy, or ``None``."""
        thread = self.thread
        if thread is None or not thread.is_alive():
            name = thread.name if thread is not None else self.name
            return f"thread {name} is not running"
        now = self._clock()
        with self._lock:
            if self._failures:
                return (
                    f"failing for {now - self._failing_since:.0f} s ({self._failures} "
                    f"attempt(s), retrying with backoff): {self._last_error}"
                )
            if self._busy is not None:
                return None
            quiet = now - self._last_beat
        if quiet > self._stall_after_s:
            return f"stuck: no round completed for {quiet:.0f} s"
        return None

    def describe(self) -> str:
        """For a healthy loop: ``ok``, or ``ok (busy: job 3 for 12 s)``."""
        with self._lock:
            busy, since = self._busy, self._busy_since
        return f"{OK} (busy: {busy} for {self._clock() - since:.0f} s)" if busy else OK


def job_store_problem(path: Path, timeout_s: float = JOB_STORE_PROBE_TIMEOUT_S) -> str | None:
    """Why ``path`` (the job database) cannot take a write now, or ``None``.

    Opens its own connection read-write (never creating the file) and takes and releases the
    write lock (``BEGIN IMMEDIATE`` + ``ROLLBACK``): nothing is written, but a database that is
    read-only, missing, corrupt or locked by another writer beyond ``timeout_s`` shows up.
    """
    if not path.is_file():
        return f"{path} does not exist"
    try:
        with contextlib.closing(
            sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=rw",
                uri=True,
                timeout=timeout_s,
                isolation_level=None,
            )
        ) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return f"{path} is not writable: {exc}"
    return None


@dataclass(frozen=True)
class HealthReport:
    """Each part's state: ``ok`` (possibly with a remark) or what is wrong."""

    parts: Mapping[str, str]
    failing: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        return not self.failing

    def as_json(self) -> dict[str, object]:
        """``{"status": "ok"|"unhealthy", "failing": [...], "parts": {...}}`` for ``/healthz``."""
        return {
            "status": OK if self.healthy else "unhealthy",
            "failing": list(self.failing),
            "parts": dict(self.parts),
        }


class HealthCheck:
    """Combines the node's parts into one :class:`HealthReport`.

    Parameters
    ----------
    receiving:
        Returns whether the SCP accepts connections.
    loops:
        The loop monitors (assembling, inference, sending).
    job_store_path:
        ``<storage_dir>/jobs.sqlite3``.
    storage:
        Returns why the disk takes no more data (below the watermark), or ``None``; without
        it the report has no ``storage`` part.
    """

    def __init__(
        self,
        receiving: Callable[[], bool],
        loops: Mapping[str, LoopMonitor],
        job_store_path: Path,
        storage: Callable[[], str | None] | None = None,
    ) -> None:
        self._receiving = receiving
        self._loops = dict(loops)
        self._job_store_path = job_store_path
        self._storage = storage

    def report(self) -> HealthReport:
        """Check every part now."""
        parts: dict[str, str] = {}
        failing: list[str] = []
        parts["receiving"] = OK if self._receiving() else "the DICOM SCP is not accepting"
        for name, monitor in self._loops.items():
            problem = monitor.problem()
            parts[name] = monitor.describe() if problem is None else problem
            if problem is not None:
                failing.append(name)
        store = job_store_problem(self._job_store_path)
        parts["job_store"] = store or OK
        if parts["receiving"] != OK:
            failing.append("receiving")
        if store is not None:
            failing.append("job_store")
        if self._storage is not None:
            low = self._storage()
            parts["storage"] = low or OK
            if low is not None:
                failing.append("storage")
        ordered = {name: parts[name] for name in PARTS if name in parts}
        return HealthReport(ordered, tuple(n for n in PARTS if n in failing))
