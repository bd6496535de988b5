"""The health rules alone: loop monitors on a fake clock, the job-store probe on a real SQLite file,
and the HTTP endpoint's paths."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.health import STALL_AFTER_S, HealthCheck, LoopMonitor, job_store_problem
from dicom_node.jobs import JobStore
from dicom_node.metrics import NodeMetrics, start_metrics_server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def running_thread() -> Iterator[threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="ichnet-test-loop", daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join()


def _monitor(thread: threading.Thread, clock: FakeClock) -> LoopMonitor:
    monitor = LoopMonitor("inference", clock)
    monitor.thread = thread
    return monitor


def test_a_loop_that_comes_round_is_healthy_and_one_that_stops_is_stuck(
    running_thread: threading.Thread,
) -> None:
    clock = FakeClock()
    monitor = _monitor(running_thread, clock)
    monitor.beat()
    clock.now += STALL_AFTER_S - 1
    assert monitor.problem() is None
    clock.now += 2
    assert monitor.problem() == f"stuck: no round completed for {STALL_AFTER_S + 1:.0f} s"


def test_a_busy_loop_is_not_stuck(running_thread: threading.Thread) -> None:
    clock = FakeClock()
    monitor = _monitor(running_thread, clock)
    with monitor.busy("job 7"):
        clock.now += 10 * STALL_AFTER_S
        assert monitor.problem() is None
        assert monitor.describe() == f"ok (busy: job 7 for {10 * STALL_AFTER_S:.0f} s)"
    assert monitor.problem() is None  # finishing the job counts as progress


def test_failures_are_reported_until_a_round_succeeds(running_thread: threading.Thread) -> None:
    clock = FakeClock()
    monitor = _monitor(running_thread, clock)
    assert monitor.failed(sqlite3.OperationalError("database is locked")) == 1
    clock.now += 5
    assert monitor.failed(sqlite3.OperationalError("database is locked")) == 2
    assert monitor.problem() == (
        "failing for 5 s (2 attempt(s), retrying with backoff): "
        "OperationalError: database is locked"
    )
    assert monitor.succeeded() == 2
    assert monitor.problem() is None


def test_a_dead_thread_is_named() -> None:
    thread = threading.Thread(target=lambda: None, name="ichnet-worker")
    thread.start()
    thread.join()
    monitor = _monitor(thread, FakeClock())
    assert monitor.problem() == "thread ichnet-worker is not running"
    assert LoopMonitor("sending").problem() == "thread sending is not running"


def test_the_job_store_probe_sees_a_locked_and_a_missing_database(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    assert job_store_problem(store.path) is None
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        problem = job_store_problem(store.path, timeout_s=0.2)
        other.execute("ROLLBACK")
    assert problem is not None and "is not writable: database is locked" in problem
    assert job_store_problem(store.path) is None
    store.close()
    assert (
        job_store_problem(tmp_path / "none.sqlite3")
        == f"{tmp_path / 'none.sqlite3'} does not exist"
    )
    assert not (tmp_path / "none.sqlite3").exists(), "the probe must not create a database"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as rsp:
            return rsp.status, rsp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthz_answers_only_on_its_path_and_names_the_failing_part(
    free_port: int, tmp_path: Path, running_thread: threading.Thread
) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    loops = {name: _monitor(running_thread, FakeClock()) for name in ("assembling", "sending")}
    dead = threading.Thread(target=lambda: None, name="ichnet-worker")
    dead.start()
    dead.join()
    loops["inference"] = _monitor(dead, FakeClock())
    receiving = [True]
    check = HealthCheck(lambda: receiving[0], loops, store.path)
    metrics = NodeMetrics()
    server, thread = start_metrics_server(free_port, "127.0.0.1", metrics.registry, check.report)
    base = f"http://127.0.0.1:{free_port}"
    try:
        status, body = _get(f"{base}/healthz")
        assert status == 503
        report = json.loads(body)
        assert report["status"] == "unhealthy"
        assert report["failing"] == ["inference"]
        assert report["parts"]["inference"] == "thread ichnet-worker is not running"
        assert report["parts"]["job_store"] == "ok"

        loops["inference"].thread = running_thread  # a worker runs again
        status, body = _get(f"{base}/healthz")
        assert status == 200, body
        assert json.loads(body) == {
            "status": "ok",
            "failing": [],
            "parts": dict.fromkeys(
                ("receiving", "assembling", "inference", "sending", "job_store"), "ok"
            ),
        }
        receiving[0] = False
        status, body = _get(f"{base}/healthz")
        assert (status, json.loads(body)["failing"]) == (503, ["receiving"])
        for path in ("/", "/health", "/healthz/x", "/metricsx"):
            assert _get(f"{base}{path}")[0] == 404, path
        status, body = _get(f"{base}/metrics")
        assert status == 200 and "ichnet_associations_accepted_total" in body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        store.close()
