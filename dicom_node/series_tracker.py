"""When a series is complete: no new instance for ``quiet_period_s`` (``series.complete_after_s``).

DICOM has no "end of series" message: a PACS sends the instances of a series over one or more
associations and then simply stops. The usual rule, used here, is a quiet period per series
(PS3.4 leaves completeness to the receiver). The rule is pure logic with an injected clock, so
tests drive time by hand and the C-STORE handler thread (which records arrivals) and the
assembler thread (which collects complete series) share one tracker under a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple


class SeriesKey(NamedTuple):
    """Identity of a series: Study Instance UID and Series Instance UID."""

    study_instance_uid: str
    series_instance_uid: str


@dataclass(frozen=True)
class SeriesActivity:
    """What arrived for one series so far (a snapshot; the tracker keeps its own state).

    Attributes
    ----------
    key:
        The series.
    sop_instance_uids:
        Distinct instances received (a re-sent instance counts once).
    calling_ae_titles:
        Distinct AE titles that sent instances of the series, in order of first arrival; the
        first is where results normally go back.
    first_received, last_received:
        Clock readings of the first and the latest arrival.
    """

    key: SeriesKey
    sop_instance_uids: frozenset[str]
    calling_ae_titles: tuple[str, ...]
    first_received: float
    last_received: float

    @property
    def instance_count(self) -> int:
        """Number of distinct instances."""
        return len(self.sop_instance_uids)


#: A series handed over by :meth:`SeriesTracker.pop_complete`.
CompletedSeries = SeriesActivity


@dataclass
class _Pending:
    sop_instance_uids: set[str] = field(default_factory=set)
    calling_ae_titles: list[str] = field(default_factory=list)
    first_received: float = 0.0
    last_received: float = 0.0

    def snapshot(self, key: SeriesKey) -> SeriesActivity:
        return SeriesActivity(
            key=key,
            sop_instance_uids=frozenset(self.sop_instance_uids),
            calling_ae_titles=tuple(self.calling_ae_titles),
            first_received=self.first_received,
            last_received=self.last_received,
        )


class SeriesTracker:
    """Collects arrivals per series and hands out each series once it has been quiet long enough.

    A series popped as complete is forgotten; should more of its instances arrive later (a
    re-send, a late straggler), it starts a new quiet period and is handed out again, so the
    job queue decides what a repeat means.

    Parameters
    ----------
    quiet_period_s:
        Seconds without a new instance after which a series counts as complete.
    clock:
        Monotonic seconds (``time.monotonic`` in the node, a fake in tests).

    Raises
    ------
    ValueError
        If ``quiet_period_s`` is negative.
    """

    def __init__(self, quiet_period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if quiet_period_s < 0:
            raise ValueError(f"quiet_period_s must be >= 0 seconds, got {quiet_period_s!r}")
        self.quiet_period_s = quiet_period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[SeriesKey, _Pending] = {}

    def instance_received(
        self, key: SeriesKey, sop_instance_uid: str, calling_ae_title: str
    ) -> None:
        """Record one arrival; restarts the series' quiet period."""
        now = self._clock()
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending(first_received=now)
            pending.sop_instance_uids.add(sop_instance_uid)
            if calling_ae_title not in pending.calling_ae_titles:
                pending.calling_ae_titles.append(calling_ae_title)
            pending.last_received = now

    def pop_complete(self) -> list[CompletedSeries]:
        """Remove and return every series quiet for at least ``quiet_period_s``, oldest first."""
        now = self._clock()
        with self._lock:
            done = [
                key
                for key, pending in self._pending.items()
                if now - pending.last_received >= self.quiet_period_s
            ]
            completed = [self._pending.pop(key).snapshot(key) for key in done]
        return sorted(completed, key=lambda series: series.last_received)

    def pending(self) -> list[SeriesActivity]:
        """Series not yet handed out by :meth:`pop_complete`, oldest activity first."""
        with self._lock:
            snapshots = [pending.snapshot(key) for key, pending in self._pending.items()]
        return sorted(snapshots, key=lambda series: series.last_received)
