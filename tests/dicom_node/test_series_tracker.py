"""The series-completion rule, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import threading

import pytest

from dicom_node.series_tracker import SeriesKey, SeriesTracker
from dicom_node.stack import SliceHeader


class FakeClock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


HEAD = SeriesKey("1.2.3", "1.2.3.1")
SCOUT = SeriesKey("1.2.3", "1.2.3.2")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_series_completes_only_after_the_quiet_period(clock: FakeClock) -> None:
    tracker = SeriesTracker(quiet_period_s=5.0, clock=clock)
    tracker.instance_received(HEAD, "1.2.3.1.1", "PACS")
    clock.advance(4.9)
    assert tracker.pop_complete() == []
    clock.advance(0.1)
    [done] = tracker.pop_complete()
    assert done.key == HEAD
    assert done.instance_count == 1
    assert tracker.pop_complete() == []  # handed out once
    assert tracker.pending() == []


def test_each_new_instance_restarts_the_quiet_period(clock: FakeClock) -> None:
    tracker = SeriesTracker(quiet_period_s=5.0, clock=clock)
    for index in range(4):
        tracker.instance_received(HEAD, f"1.2.3.1.{index}", "PACS")
        clock.advance(3.0)  # never 5 s quiet while slices keep coming
        assert tracker.pop_complete() == []
    clock.advance(2.0)
    [done] = tracker.pop_complete()
    assert done.first_received == 1000.0
    assert done.last_received == 1009.0
    assert done.instance_count == 4


def test_series_are_independent_and_come_out_oldest_first(clock: FakeClock) -> None:
    tracker = SeriesTracker(quiet_period_s=5.0, clock=clock)
    tracker.instance_received(SCOUT, "1.2.3.2.1", "PACS")
    clock.advance(1.0)
    tracker.instance_received(HEAD, "1.2.3.1.1", "PACS")
    clock.advance(4.0)
    assert [s.key for s in tracker.pop_complete()] == [SCOUT]
    assert [s.key for s in tracker.pending()] == [HEAD]
    clock.advance(1.0)
    tracker.instance_received(SCOUT, "1.2.3.2.2", "PACS")
    clock.advance(5.0)
    assert [s.key for s in tracker.pop_complete()] == [HEAD, SCOUT]


def test_resent_instances_count_once_and_senders_are_kept_in_order(clock: FakeClock) -> None:
    tracker = SeriesTracker(quiet_period_s=1.0, clock=clock)
    tracker.instance_received(HEAD, "1.2.3.1.1", "CT01")
    tracker.instance_received(HEAD, "1.2.3.1.1", "PACS")
    tracker.instance_received(HEAD, "1.2.3.1.2", "CT01")
    [pending] = tracker.pending()
    assert pending.sop_instance_uids == frozenset({"1.2.3.1.1", "1.2.3.1.2"})
    assert pending.calling_ae_titles == ("CT01", "PACS")


def test_a_straggler_after_completion_starts_the_series_again(clock: FakeClock) -> None:
    tracker = SeriesTracker(quiet_period_s=5.0, clock=clock)
    tracker.instance_received(HEAD, "1.2.3.1.1", "PACS")
    clock.advance(5.0)
    assert len(tracker.pop_complete()) == 1
    tracker.instance_received(HEAD, "1.2.3.1.2", "PACS")
    assert tracker.pop_complete() == []
    clock.advance(5.0)
    [again] = tracker.pop_complete()
    assert again.sop_instance_uids == frozenset({"1.2.3.1.2"})


def test_pending_is_a_snapshot(clock: FakeClock) -> None:
    tracker = SeriesTracker(quiet_period_s=5.0, clock=clock)
    tracker.instance_received(HEAD, "1.2.3.1.1", "PACS")
    [before] = tracker.pending()
    tracker.instance_received(HEAD, "1.2.3.1.2", "PACS")
    assert before.instance_count == 1


def test_negative_quiet_period_is_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match=r"quiet_period_s must be >= 0 seconds, got -1"):
        SeriesTracker(quiet_period_s=-1, clock=clock)


def test_concurrent_arrivals_from_several_threads_are_all_counted(clock: FakeClock) -> None:
    tracker = SeriesTracker(quiet_period_s=5.0, clock=clock)
    per_thread = 200

    def receive(thread_index: int) -> None:
        for index in range(per_thread):
            tracker.instance_received(HEAD, f"1.2.3.1.{thread_index}.{index}", f"AE{thread_index}")

    threads = [threading.Thread(target=receive, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    clock.advance(5.0)
    [done] = tracker.pop_complete()
    assert done.instance_count == 4 * per_thread
    assert sorted(done.calling_ae_titles) == ["AE0", "AE1", "AE2", "AE3"]


# -- settle after release -------------------------------------------------------------------

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
ASSOCIATION = ("127.0.0.1", 40001)


def _send_stack(
    tracker: SeriesTracker, indices: range, association: tuple[str, int] = ASSOCIATION
) -> None:
    for index in indices:
        header = SliceHeader((0.0, 0.0, 5.0 * index), AXIAL, instance_number=index + 1)
        tracker.instance_received(
            HEAD, f"1.2.3.1.{index}", "PACS", header=header, association=association
        )


def test_released_gap_free_stack_settles_long_before_the_quiet_period(clock: FakeClock) -> None:
    tracker = SeriesTracker(30.0, clock, settle_after_release_s=1.0)
    _send_stack(tracker, range(20))
    clock.advance(5.0)
    assert tracker.pop_complete() == []  # association still open: quiet period only
    tracker.association_ended(ASSOCIATION, released=True)
    [done] = tracker.pop_complete()
    assert (done.rule, done.instance_count) == ("settled", 20)


def test_settle_waits_its_time_after_the_last_instance(clock: FakeClock) -> None:
    tracker = SeriesTracker(30.0, clock, settle_after_release_s=1.0)
    _send_stack(tracker, range(20))
    tracker.association_ended(ASSOCIATION, released=True)
    clock.advance(0.9)
    assert tracker.pop_complete() == []
    clock.advance(0.1)
    assert [s.rule for s in tracker.pop_complete()] == ["settled"]


def test_a_stack_with_a_hole_waits_for_the_quiet_period(clock: FakeClock) -> None:
    tracker = SeriesTracker(30.0, clock, settle_after_release_s=1.0)
    _send_stack(tracker, range(10))
    _send_stack(tracker, range(11, 20))
    tracker.association_ended(ASSOCIATION, released=True)
    clock.advance(29.0)
    assert tracker.pop_complete() == []
    clock.advance(1.0)
    assert [s.rule for s in tracker.pop_complete()] == ["quiet"]


def test_an_aborted_association_never_settles(clock: FakeClock) -> None:
    tracker = SeriesTracker(30.0, clock, settle_after_release_s=1.0)
    _send_stack(tracker, range(20))
    tracker.association_ended(ASSOCIATION, released=False)
    clock.advance(10.0)
    assert tracker.pop_complete() == []


def test_a_series_on_two_associations_settles_only_when_both_are_released(
    clock: FakeClock,
) -> None:
    tracker = SeriesTracker(30.0, clock, settle_after_release_s=1.0)
    other = ("127.0.0.1", 40002)
    _send_stack(tracker, range(10))
    _send_stack(tracker, range(10, 20), other)
    tracker.association_ended(ASSOCIATION, released=True)
    clock.advance(2.0)
    assert tracker.pop_complete() == []
    tracker.association_ended(other, released=True)
    assert [s.instance_count for s in tracker.pop_complete()] == [20]


def test_instances_of_unknown_origin_leave_the_series_to_the_quiet_period(
    clock: FakeClock,
) -> None:
    tracker = SeriesTracker(30.0, clock, settle_after_release_s=1.0)
    _send_stack(tracker, range(19))
    tracker.instance_received(
        HEAD, "1.2.3.1.19", "PACS", header=SliceHeader((0.0, 0.0, 95.0), AXIAL, instance_number=20)
    )  # e.g. found in the spool at start-up
    tracker.association_ended(ASSOCIATION, released=True)
    clock.advance(5.0)
    assert tracker.pop_complete() == []


def test_settle_zero_turns_the_rule_off(clock: FakeClock) -> None:
    tracker = SeriesTracker(30.0, clock, settle_after_release_s=0.0)
    _send_stack(tracker, range(20))
    tracker.association_ended(ASSOCIATION, released=True)
    clock.advance(10.0)
    assert tracker.pop_complete() == []
