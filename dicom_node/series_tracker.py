"""When a series is complete: two rules, the fast one first.

DICOM has no "end of series" message: a PACS sends the instances of a series over one or more
associations and then simply stops (PS3.4 leaves completeness to the receiver).

1. **Settle after release** (``series.settle_after_release_s``): every association that brought
   instances of the series has been *released* (not aborted), its slices form one gap-free
   stack (:func:`dicom_node.stack.stack_problem`), and nothing new arrived for the settle time.
   A modality or PACS that sends a whole series and releases gets its results seconds later.
2. **Quiet period** (``series.complete_after_s``): no new instance for that long. The fallback
   for everything rule 1 cannot vouch for (no geometry, a missing position, an aborted or
   still-open association), long enough that a slow sender is not split into partial analyses.

A series that trickles in over several associations can still complete by rule 1 between two
of them when the first part is itself a gap-free stack; the later instances then start a new
job that analyses the whole series (a new result version), never a silently partial one.

The rules are pure logic with an injected clock, so tests drive time by hand and the C-STORE
handler threads (arrivals, releases) and the assembler thread (which collects complete series)
share one tracker under a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from dicom_node.stack import SliceHeader, stack_problem

#: An association as the tracker knows it: the peer's (address, port), unique while it is open.
AssociationKey = tuple[str, int]


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
    rule:
        How a completed series was judged complete: ``"settled"`` (released, gap-free stack)
        or ``"quiet"`` (the quiet period); ``""`` while it is pending.
    """

    key: SeriesKey
    sop_instance_uids: frozenset[str]
    calling_ae_titles: tuple[str, ...]
    first_received: float
    last_received: float
    rule: str = ""

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
    #: Slice geometry per SOP Instance UID (``None``: the instance had none).
    headers: dict[str, SliceHeader | None] = field(default_factory=dict)
    #: Associations that brought instances and are not released yet.
    open_associations: set[AssociationKey] = field(default_factory=set)
    #: Whether an association of this series was released ...
    released: bool = False
    #: ... and whether one was aborted, or brought instances unknown to the tracker.
    aborted: bool = False
    #: Cached verdict of :func:`stack_problem` for the current instances (``""``: not computed).
    problem: str | None = ""

    def snapshot(self, key: SeriesKey, rule: str = "") -> SeriesActivity:
        return SeriesActivity(
            key=key,
            sop_instance_uids=frozenset(self.sop_instance_uids),
            calling_ae_titles=tuple(self.calling_ae_titles),
            first_received=self.first_received,
            last_received=self.last_received,
            rule=rule,
        )

    def settled(self) -> bool:
        """Rule 1 apart from the settle time: released and one gap-free stack."""
        if not self.released or self.aborted or self.open_associations:
            return False
        if self.problem == "":
            self.problem = stack_problem(
                [self.headers.get(uid) for uid in sorted(self.sop_instance_uids)]
            )
        return self.problem is None


class SeriesTracker:
    """Collects arrivals per series and hands out each series once it has been quiet long enough.

    A series popped as complete is forgotten; should more of its instances arrive later (a
    re-send, a late straggler), it starts a new quiet period and is handed out again, so the
    job queue decides what a repeat means.

    Parameters
    ----------
    quiet_period_s:
        Seconds without a new instance after which a series counts as complete.
    settle_after_release_s:
        Seconds without a new instance after which a released, gap-free series counts as
        complete; 0 turns that rule off.
    clock:
        Monotonic seconds (``time.monotonic`` in the node, a fake in tests).

    Raises
    ------
    ValueError
        If ``quiet_period_s`` or ``settle_after_release_s`` is negative.
    """

    def __init__(
        self,
        quiet_period_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        settle_after_release_s: float = 0.0,
    ) -> None:
        if quiet_period_s < 0:
            raise ValueError(f"quiet_period_s must be >= 0 seconds, got {quiet_period_s!r}")
        if settle_after_release_s < 0:
            raise ValueError(
                f"settle_after_release_s must be >= 0 seconds, got {settle_after_release_s!r}"
            )
        self.quiet_period_s = quiet_period_s
        self.settle_after_release_s = settle_after_release_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[SeriesKey, _Pending] = {}

    def instance_received(
        self,
        key: SeriesKey,
        sop_instance_uid: str,
        calling_ae_title: str,
        *,
        header: SliceHeader | None = None,
        association: AssociationKey | None = None,
    ) -> None:
        """Record one arrival; restarts the series' quiet period.

        ``association`` is the open association that brought it (``None``: unknown, e.g. the
        spool read at start-up, which leaves the series to the quiet period); ``header`` its
        geometry for the settle rule.
        """
        now = self._clock()
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending(first_received=now)
            pending.sop_instance_uids.add(sop_instance_uid)
            pending.headers[sop_instance_uid] = header
            pending.problem = ""
            if calling_ae_title not in pending.calling_ae_titles:
                pending.calling_ae_titles.append(calling_ae_title)
            pending.last_received = now
            if association is None:
                pending.aborted = True
            else:
                pending.open_associations.add(association)

    def association_ended(self, association: AssociationKey, *, released: bool) -> None:
        """An association was released (``released=True``) or aborted.

        Only a release lets its series settle: an abort may have cut a series short, so those
        series wait for the quiet period (and a later association cannot undo that).
        """
        with self._lock:
            for pending in self._pending.values():
                if association not in pending.open_associations:
                    continue
                pending.open_associations.discard(association)
                pending.released = True
                pending.aborted = pending.aborted or not released

    def _complete_by(self, pending: _Pending, now: float) -> str | None:
        quiet = now - pending.last_received
        if quiet >= self.quiet_period_s:
            return "quiet"
        settle = self.settle_after_release_s
        if settle > 0 and quiet >= settle and pending.settled():
            return "settled"
        return None

    def pop_complete(self) -> list[CompletedSeries]:
        """Remove and return every complete series (either rule), oldest activity first."""
        now = self._clock()
        completed: list[CompletedSeries] = []
        with self._lock:
            for key, pending in list(self._pending.items()):
                rule = self._complete_by(pending, now)
                if rule is not None:
                    completed.append(self._pending.pop(key).snapshot(key, rule))
        return sorted(completed, key=lambda series: series.last_received)

    def pending(self) -> list[SeriesActivity]:
        """Series not yet handed out by :meth:`pop_complete`, oldest activity first."""
        with self._lock:
            snapshots = [pending.snapshot(key) for key, pending in self._pending.items()]
        return sorted(snapshots, key=lambda series: series.last_received)
