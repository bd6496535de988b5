"""The durable job queue: upserts, the lifecycle, recovery, threads, and real crashes (SIGKILL)."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node import jobs
from dicom_node.job_states import check_transition
from dicom_node.jobs import (
    IllegalTransitionError,
    JobState,
    JobStore,
    SchemaVersionError,
    UnknownJobError,
)

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES_A = "1.2.826.0.1.3680043.8.498.1.1"
SERIES_B = "1.2.826.0.1.3680043.8.498.1.2"
PEER = "PACS"
REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[JobStore]:
    with JobStore.for_storage_dir(tmp_path, clock=clock) as s:
        yield s


def _job_in_state(store: JobStore, state: JobState, series: str = SERIES_A) -> int:
    """A job driven along the happy path up to ``state`` (RECEIVED..SENDING)."""
    job_id = store.record_instance(STUDY, series, PEER, now=1.0)
    if state is JobState.RECEIVED:
        return job_id
    store.mark_queued(job_id)
    if state is JobState.QUEUED:
        return job_id
    claimed = store.claim_next(now=2.0)
    assert claimed is not None and claimed.id == job_id
    if state is JobState.RUNNING:
        return job_id
    store.mark_sending(job_id, f"/outbox/{job_id}", result_version=1)
    assert state is JobState.SENDING
    return job_id


# -- receiving ------------------------------------------------------------------------------


def test_database_lives_in_storage_dir_in_wal_mode(tmp_path: Path, store: JobStore) -> None:
    assert store.path == tmp_path / "jobs.sqlite3"
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_record_instance_counts_on_one_open_batch(store: JobStore) -> None:
    first = store.record_instance(STUDY, SERIES_A, PEER, now=10.0)
    again = store.record_instance(STUDY, SERIES_A, "OTHER", now=12.5)
    other = store.record_instance(STUDY, SERIES_B, PEER, now=11.0)

    assert first == again != other
    job = store.get(first)
    assert job.state is JobState.RECEIVED
    assert job.instance_count == 2
    assert job.created_at == 10.0
    assert job.last_instance_at == 12.5
    assert job.calling_ae == PEER  # the batch keeps its first sender
    assert store.get(other).instance_count == 1
    assert store.received_job(STUDY, SERIES_A) == job


def test_out_of_order_receive_time_does_not_move_last_instance_back(store: JobStore) -> None:
    job_id = store.record_instance(STUDY, SERIES_A, PEER, now=20.0)
    store.record_instance(STUDY, SERIES_A, PEER, now=15.0)
    assert store.get(job_id).last_instance_at == 20.0


def test_series_arriving_after_its_batch_left_received_starts_a_new_job(
    store: JobStore,
) -> None:
    first = _job_in_state(store, JobState.QUEUED)
    late = store.record_instance(STUDY, SERIES_A, PEER, now=30.0)
    assert late != first
    assert store.get(late).state is JobState.RECEIVED
    assert store.get(late).instance_count == 1
    assert store.get(first).state is JobState.QUEUED
    assert store.received_job(STUDY, SERIES_A) == store.get(late)


def test_received_job_is_none_without_open_batch(store: JobStore) -> None:
    assert store.received_job(STUDY, SERIES_A) is None


# -- lifecycle ------------------------------------------------------------------------------


def test_happy_path_records_every_stage(store: JobStore, clock: FakeClock) -> None:
    job_id = store.record_instance(STUDY, SERIES_A, PEER, now=1.0)
    clock.now = 5.0
    assert store.mark_queued(job_id).state is JobState.QUEUED
    running = store.claim_next(now=6.0)
    assert running is not None
    assert (running.id, running.state, running.runs, running.updated_at) == (
        job_id,
        JobState.RUNNING,
        1,
        6.0,
    )
    clock.now = 7.0
    sending = store.mark_sending(job_id, Path("/var/outbox/1"), result_version=1)
    assert sending.state is JobState.SENDING
    assert sending.outbox_dir == Path("/var/outbox/1")
    assert sending.next_attempt_at is None
    clock.now = 8.0
    done = store.mark_done(job_id)
    assert (done.state, done.updated_at, done.reason, done.is_terminal) == (
        JobState.DONE,
        8.0,
        None,
        True,
    )


@pytest.mark.parametrize(
    ("state", "action", "message"),
    [
        (
            JobState.RECEIVED,
            "mark_done",
            "is RECEIVED: cannot move it to DONE, which needs a job in SENDING",
        ),
        (
            JobState.RECEIVED,
            "mark_sending",
            "is RECEIVED: cannot move it to SENDING, which needs a job in RUNNING",
        ),
        (
            JobState.QUEUED,
            "mark_queued",
            "is QUEUED: cannot move it to QUEUED, which needs a job in RECEIVED",
        ),
        (JobState.RUNNING, "mark_queued", "is RUNNING: cannot move it to QUEUED"),
        (
            JobState.RUNNING,
            "schedule_retry",
            "is RUNNING: cannot move it to SENDING, which needs a job in SENDING",
        ),
        (
            JobState.SENDING,
            "mark_sending",
            "is SENDING: cannot move it to SENDING, which needs a job in RUNNING",
        ),
        (
            JobState.SENDING,
            "mark_skipped",
            "is SENDING: cannot move it to SKIPPED, which needs a job in RECEIVED or QUEUED or RUNNING",
        ),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(
    store: JobStore, state: JobState, action: str, message: str
) -> None:
    job_id = _job_in_state(store, state)
    before = store.get(job_id)
    calls = {
        "mark_done": lambda: store.mark_done(job_id),
        "mark_sending": lambda: store.mark_sending(job_id, "/x", result_version=1),
        "mark_queued": lambda: store.mark_queued(job_id),
        "schedule_retry": lambda: store.schedule_retry(job_id, 99.0, "busy"),
        "mark_skipped": lambda: store.mark_skipped(job_id, "not a head CT"),
    }
    with pytest.raises(IllegalTransitionError, match=f"job {job_id} {message}"):
        calls[action]()
    assert store.get(job_id) == before


@pytest.mark.parametrize("terminal", ["done", "failed", "skipped"])
def test_terminal_states_are_final(store: JobStore, terminal: str) -> None:
    if terminal == "done":
        job_id = _job_in_state(store, JobState.SENDING)
        store.mark_done(job_id)
    elif terminal == "failed":
        job_id = _job_in_state(store, JobState.RUNNING)
        store.mark_failed(job_id, "inference crashed")
    else:
        job_id = _job_in_state(store, JobState.RECEIVED)
        store.mark_skipped(job_id, "modality MR is not CT")
    state = store.get(job_id).state
    with pytest.raises(IllegalTransitionError, match=f"is {state.value}: cannot move it to FAILED"):
        store.mark_failed(job_id, "again")


def test_failed_and_skipped_keep_their_reason(store: JobStore) -> None:
    failed = _job_in_state(store, JobState.SENDING)
    skipped = _job_in_state(store, JobState.QUEUED, series=SERIES_B)
    store.mark_failed(failed, "peer PACS refused: SOP class not supported")
    store.mark_skipped(skipped, "slice thickness 12 mm exceeds 10 mm")
    assert store.get(failed).reason == "peer PACS refused: SOP class not supported"
    assert store.get(skipped).state is JobState.SKIPPED
    assert store.get(skipped).reason == "slice thickness 12 mm exceeds 10 mm"


def test_unknown_job_is_named(store: JobStore) -> None:
    with pytest.raises(UnknownJobError, match="no job with id 42"):
        store.get(42)
    with pytest.raises(UnknownJobError, match="no job with id 42"):
        store.mark_queued(42)
    with pytest.raises(UnknownJobError, match="no job with id 42"):
        store.set_timings(42, {"inference": 1.0})


def test_claim_next_takes_oldest_queued_first(store: JobStore) -> None:
    assert store.claim_next(now=0.0) is None
    older = store.record_instance(STUDY, SERIES_A, PEER, now=1.0)
    newer = store.record_instance(STUDY, SERIES_B, PEER, now=2.0)
    store.mark_queued(newer)
    store.mark_queued(older)
    first = store.claim_next(now=3.0)
    second = store.claim_next(now=3.0)
    assert first is not None and second is not None
    assert (first.id, second.id) == (older, newer)
    assert store.claim_next(now=3.0) is None


def test_retry_schedule_and_due_for_sending(store: JobStore) -> None:
    job_id = _job_in_state(store, JobState.SENDING)
    assert [j.id for j in store.due_for_sending(now=0.0)] == [job_id]  # due at once

    retried = store.schedule_retry(job_id, next_attempt_at=50.0, reason="connection refused")
    assert (retried.state, retried.attempts, retried.next_attempt_at, retried.reason) == (
        JobState.SENDING,
        1,
        50.0,
        "connection refused",
    )
    assert store.due_for_sending(now=49.9) == []
    assert [j.id for j in store.due_for_sending(now=50.0)] == [job_id]
    assert store.schedule_retry(job_id, next_attempt_at=90.0, reason="again").attempts == 2
    assert store.mark_done(job_id).next_attempt_at is None


def test_set_timings_merges(store: JobStore) -> None:
    job_id = _job_in_state(store, JobState.RUNNING)
    store.set_timings(job_id, {"volume": 0.5, "inference": 2.0})
    job = store.set_timings(job_id, {"inference": 1.5, "results": 0.25})
    assert job.timings == {"volume": 0.5, "inference": 1.5, "results": 0.25}
    assert job.state is JobState.RUNNING


def test_list_and_count_by_state(store: JobStore) -> None:
    received = _job_in_state(store, JobState.RECEIVED)
    queued = _job_in_state(store, JobState.QUEUED, series=SERIES_B)
    assert [j.id for j in store.list_jobs()] == [received, queued]
    assert [j.id for j in store.list_jobs([JobState.QUEUED, "DONE"])] == [queued]
    counts = store.count_by_state()
    assert counts[JobState.RECEIVED] == counts[JobState.QUEUED] == 1
    assert sum(counts.values()) == 2
    with pytest.raises(ValueError, match="'WAITING' is not a valid JobState"):
        store.list_jobs(["WAITING"])


def test_transitions_are_logged_with_uids(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="dicom_node.jobs"):
        job_id = _job_in_state(store, JobState.RUNNING)
        store.mark_failed(job_id, "engine crashed")
    lines = [r.getMessage() for r in caplog.records]
    assert f"job {job_id} RECEIVED (study {STUDY}, series {SERIES_A}, from {PEER})" in lines
    assert any(
        f"job {job_id} QUEUED -> RUNNING (study {STUDY}, series {SERIES_A}" in m for m in lines
    )
    failed = [r for r in caplog.records if "RUNNING -> FAILED" in r.getMessage()]
    assert failed and failed[0].levelno == logging.WARNING
    assert failed[0].getMessage().endswith(": engine crashed")


# -- durability and recovery ---------------------------------------------------------------


def test_state_survives_reopen(tmp_path: Path) -> None:
    with JobStore.for_storage_dir(tmp_path) as store:
        job_id = _job_in_state(store, JobState.SENDING)
        store.schedule_retry(job_id, 77.0, "peer busy")
    with JobStore.for_storage_dir(tmp_path) as store:
        job = store.get(job_id)
    assert (job.state, job.attempts, job.next_attempt_at, job.outbox_dir) == (
        JobState.SENDING,
        1,
        77.0,
        Path(f"/outbox/{job_id}"),
    )


def test_recover_requeues_running_and_reports_the_rest(store: JobStore) -> None:
    received = _job_in_state(store, JobState.RECEIVED)
    running = _job_in_state(store, JobState.RUNNING, series=SERIES_B)
    sending = _job_in_state(store, JobState.SENDING, series="1.2.3.4")
    queued = _job_in_state(store, JobState.QUEUED, series="1.2.3.5")

    report = store.recover(now=100.0)
    assert [j.id for j in report.requeued] == [running]
    assert report.requeued[0].state is JobState.QUEUED
    assert report.requeued[0].updated_at == 100.0
    assert [j.id for j in report.received] == [received]
    assert [j.id for j in report.sending] == [sending]
    assert [j.id for j in report.queued] == [queued]
    assert report.failed == ()
    assert store.get(sending).state is JobState.SENDING


def test_recover_fails_a_job_that_keeps_crashing_the_node(store: JobStore) -> None:
    job_id = _job_in_state(store, JobState.RUNNING)  # run 1
    store.recover(now=10.0)
    store.claim_next(now=11.0)  # run 2
    report = store.recover(now=12.0, max_runs=2)
    assert [j.id for j in report.failed] == [job_id]
    job = store.get(job_id)
    assert job.state is JobState.FAILED
    assert job.reason is not None and "interrupted 2 times while RUNNING" in job.reason


def test_recover_rejects_nonsense_max_runs(store: JobStore) -> None:
    with pytest.raises(ValueError, match="max_runs must be >= 1, got 0"):
        store.recover(now=0.0, max_runs=0)


def test_every_state_written_is_asked_of_the_state_machine(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[JobState, JobState]] = []

    def recording(
        job_id: int, current: JobState, wanted: JobState, *, only_from: JobState | None = None
    ) -> None:
        asked.append((current, wanted))
        check_transition(job_id, current, wanted, only_from=only_from)

    monkeypatch.setattr(jobs, "check_transition", recording)
    first = _job_in_state(store, JobState.SENDING)
    store.schedule_retry(first, next_attempt_at=5.0, reason="busy")
    store.mark_done(first)
    _job_in_state(store, JobState.RUNNING, series=SERIES_B)
    store.recover(now=10.0)
    assert asked == [
        (JobState.RECEIVED, JobState.QUEUED),
        (JobState.QUEUED, JobState.RUNNING),
        (JobState.RUNNING, JobState.SENDING),
        (JobState.SENDING, JobState.SENDING),
        (JobState.SENDING, JobState.DONE),
        (JobState.RECEIVED, JobState.QUEUED),
        (JobState.QUEUED, JobState.RUNNING),
        (JobState.RUNNING, JobState.QUEUED),  # recovery goes through the same rule
    ]


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(
        SchemaVersionError, match="schema version 99, this node understands version 2"
    ):
        JobStore(path)


def test_a_version_1_database_is_upgraded_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, study_instance_uid TEXT NOT NULL,
            series_instance_uid TEXT NOT NULL, calling_ae TEXT NOT NULL, state TEXT NOT NULL,
            reason TEXT, instance_count INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, last_instance_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, runs INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL, outbox_dir TEXT, timings TEXT NOT NULL DEFAULT '{}');
        INSERT INTO jobs (study_instance_uid, series_instance_uid, calling_ae, state,
            created_at, updated_at, last_instance_at) VALUES ('1.2', '1.2.3', 'PACS', 'DONE', 1, 2, 1);
        PRAGMA user_version=1;
        """
    )
    conn.close()
    os.chmod(path, 0o644)  # as version 1 left it
    with JobStore(path) as store:
        [job] = store.list_jobs()
        assert (job.state, job.result_version, job.purged_at) == (JobState.DONE, None, None)
        assert path.stat().st_mode & 0o777 == 0o600
        assert store.next_result_version("1.2", "1.2.3") == 1


def test_result_versions_count_per_series_and_reruns_are_new_jobs(
    store: JobStore, clock: FakeClock
) -> None:
    first = _run_to_sending(store, SERIES_A, version=1)
    store.mark_done(first)
    assert store.next_result_version(STUDY, SERIES_A) == 2
    assert store.next_result_version(STUDY, SERIES_B) == 1
    second = _run_to_sending(store, SERIES_A, version=2)
    store.mark_failed(second, "peer refused")
    rerun = store.rerun(second, now=50.0)
    assert (rerun.state, rerun.series_instance_uid, rerun.result_version) == (
        JobState.QUEUED,
        SERIES_A,
        None,
    )
    assert rerun.id not in (first, second)
    assert store.get(second).state is JobState.FAILED, "the old job keeps its state"
    with pytest.raises(ValueError, match="only a FAILED or SKIPPED job can be retried"):
        store.rerun(first, now=51.0)


def test_resend_moves_done_and_failed_back_to_sending_from_the_first_attempt(
    store: JobStore, clock: FakeClock
) -> None:
    job_id = _run_to_sending(store, SERIES_A, version=1)
    store.schedule_retry(job_id, next_attempt_at=99.0, reason="peer down")
    store.mark_failed(job_id, "gave up")
    clock.now = 500.0
    again = store.resend(job_id, "/outbox/again")
    assert (again.state, again.attempts, again.sending_since, again.reason) == (
        JobState.SENDING,
        0,
        500.0,
        None,
    )
    store.mark_done(job_id)
    assert store.resend(job_id, "/outbox/again").state is JobState.SENDING
    skipped = store.record_instance(STUDY, SERIES_B, PEER, now=1.0)
    store.mark_skipped(skipped, "not a head")
    with pytest.raises(ValueError, match="has no results"):
        store.resend(skipped, "/x")


def _run_to_sending(store: JobStore, series: str, version: int) -> int:
    job_id = store.record_instance(STUDY, series, PEER, now=1.0)
    store.mark_queued(job_id)
    claimed = store.claim_next(now=2.0)
    assert claimed is not None and claimed.id == job_id
    store.mark_sending(job_id, f"/outbox/{job_id}", result_version=version)
    return job_id


# -- threads --------------------------------------------------------------------------------


def test_concurrent_record_instance_loses_no_count(store: JobStore) -> None:
    threads_n, per_thread = 4, 100

    def receive(series: str) -> None:
        for i in range(per_thread):
            store.record_instance(STUDY, series, PEER, now=float(i))

    threads = [
        threading.Thread(target=receive, args=(SERIES_A if i % 2 else SERIES_B,))
        for i in range(threads_n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    jobs = store.list_jobs()
    assert sorted(j.instance_count for j in jobs) == [200, 200]


def test_concurrent_claims_hand_out_each_job_once(tmp_path: Path, store: JobStore) -> None:
    ids = set()
    for i in range(24):
        job_id = store.record_instance(STUDY, f"1.2.3.{i}", PEER, now=float(i))
        store.mark_queued(job_id)
        ids.add(job_id)
    # Two connections (as two processes would have) and two threads on each.
    other = JobStore(store.path)
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(s: JobStore) -> None:
        while (job := s.claim_next(now=1.0)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (store, other, store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert sorted(claimed) == sorted(ids)


# -- real crashes ---------------------------------------------------------------------------


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill(proc: subprocess.Popen[str]) -> list[str]:
    """SIGKILL the child; returns the complete lines it printed that were not read yet."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout is not None
    rest = proc.stdout.read()
    proc.stdout.close()
    return rest.split("\n")[:-1]


def test_sigkill_while_receiving_keeps_every_committed_instance(tmp_path: Path) -> None:
    proc = _spawn(
        """
        import sys
        from dicom_node.jobs import JobStore
        store = JobStore.for_storage_dir(sys.argv[1])
        i = 0
        while True:
            i += 1
            store.record_instance("1.2.3", f"1.2.3.{i // 50}", "PACS", float(i))
            if i % 50 == 49:  # the batch's last instance: the series went quiet
                store.mark_queued(store.received_job("1.2.3", f"1.2.3.{i // 50}").id)
            print(i, flush=True)
        """,
        str(tmp_path),
    )
    assert proc.stdout is not None
    acknowledged = 0
    while acknowledged < 400:  # the writer is busy mid-loop when the kill lands
        acknowledged = int(proc.stdout.readline())
    # The child runs ahead of this reader: its last printed line is the last commit it saw.
    acknowledged = max([acknowledged, *map(int, _kill(proc))])

    with JobStore.for_storage_dir(tmp_path) as store:
        conn = sqlite3.connect(store.path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        total = sum(j.instance_count for j in store.list_jobs())
        # Every instance reported as recorded is there; at most the one in flight beyond that.
        assert acknowledged <= total <= acknowledged + 1
        report = store.recover(now=0.0)
        # Only the newest batch may still be open; it is closed when the kill fell between its
        # last instance's mark_queued and the next batch's first instance.
        jobs = sorted(store.list_jobs(), key=lambda j: j.id)
        assert [j.id for j in report.received] in ([], [jobs[-1].id])
        assert len(report.queued) == len(jobs) - len(report.received)
        complete = {j.series_instance_uid: j.instance_count for j in report.queued}
        batch = {"1.2.3.0": 49}  # i = 1..49, then 50 per batch
        assert all(n == batch.get(uid, 50) for uid, n in complete.items()), complete
        assert len(report.queued) >= acknowledged // 50 - 1


def test_sigkill_mid_inference_reruns_the_job(tmp_path: Path) -> None:
    proc = _spawn(
        """
        import sys, time
        from dicom_node.jobs import JobStore
        store = JobStore.for_storage_dir(sys.argv[1])
        for series in ("1.2.3.1", "1.2.3.2"):
            store.mark_queued(store.record_instance("1.2.3", series, "PACS", 1.0))
        job = store.claim_next(now=2.0)
        print(job.id, flush=True)
        time.sleep(60)  # "inference"; killed long before
        """,
        str(tmp_path),
    )
    assert proc.stdout is not None
    claimed = int(proc.stdout.readline())
    _kill(proc)

    with JobStore.for_storage_dir(tmp_path) as store:
        assert store.get(claimed).state is JobState.RUNNING
        report = store.recover(now=3.0)
        assert [j.id for j in report.requeued] == [claimed]
        rerun = store.claim_next(now=4.0)
        assert rerun is not None
        assert (rerun.id, rerun.runs) == (claimed, 2)


def test_mark_queued_together_queues_all_or_none(store: JobStore) -> None:
    first = store.record_instance(STUDY, SERIES_A, PEER, now=1.0)
    second = store.record_instance(STUDY, SERIES_B, PEER, now=1.0)
    queued = store.mark_queued_together([first, second])
    assert [(j.id, j.state) for j in queued] == [
        (first, JobState.QUEUED),
        (second, JobState.QUEUED),
    ]
    third = store.record_instance(STUDY, "1.2.826.0.1.3680043.8.498.1.3", PEER, now=2.0)
    with pytest.raises(IllegalTransitionError):
        store.mark_queued_together([third, first])  # first is QUEUED already
    assert store.get(third).state is JobState.RECEIVED, "the transaction was rolled back"
    assert [j.id for j in store.jobs_of_study(STUDY)] == [first, second, third]
