"""The series-completion rule, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import threading

import pytest

from dicom_node.series_tracker import SeriesKey, SeriesTracker


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
