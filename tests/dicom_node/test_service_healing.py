"""NodeService under faults: a locked job database, a series too long to read, ``/healthz``.

The faults are real: another SQLite connection holds the write lock of ``jobs.sqlite3`` (what
a second process, a backup tool or a stuck transaction does), and instances arrive over DICOM
from a pynetdicom peer. The queue's busy timeout is shortened for these tests (the node waits
10 s per statement), so each fault shows up within seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from dicom_node import jobs
from dicom_node.config import parse_config
from dicom_node.jobs import Job, JobState
from dicom_node.service import NodeService, loop_backoff
from dicom_node.status import StoreStatus
from tests.dicom_node.instances import ct_slice

pytestmark = pytest.mark.integration

NODE_AE: Final[str] = "ICHNET"
PACS_AE: Final[str] = "PACS"
#: Busy timeout of the node's queue in these tests (the product default is 10 s).
BUSY_TIMEOUT_S: Final[float] = 0.5
WAIT_S: Final[float] = 60.0


@pytest.fixture
def make_service(
    tmp_path: Path, engine_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., NodeService]]:
    monkeypatch.setattr(jobs, "BUSY_TIMEOUT_S", BUSY_TIMEOUT_S)
    services: list[NodeService] = []

    def factory(**sections: dict[str, Any]) -> NodeService:
        ports = []
        for _ in range(2):
            with contextlib.closing(socket.socket()) as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        data: dict[str, Any] = {
            "node": {
                "ae_title": NODE_AE,
                "port": ports[0],
                "metrics_port": ports[1],
                "storage_dir": str(tmp_path / "storage"),
            },
            "peers": [{"ae_title": PACS_AE, "host": "127.0.0.1", "port": 9}],
            "series": {"complete_after_s": 0.5, "poll_interval_s": 0.1},
            "engine": "torch",
            "model": {"cache_dir": str(engine_cache_dir)},
        }
        for name, values in sections.items():
            data[name] = {**data.get(name, {}), **values}
        service = NodeService(parse_config(data))
        service.start()
        services.append(service)
        return service

    yield factory
    for service in services:
        service.stop(30)


def _series(count: int) -> list[Dataset]:
    """``count`` slices of one series that is no head CT (skipped quickly, no inference)."""
    series_uid = generate_uid()
    slices = []
    for index in range(count):
        ds = ct_slice()
        ds.SeriesInstanceUID = series_uid
        ds.ImagePositionPatient = [0, 0, float(index)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelData = np.zeros((8, 6), np.int16).tobytes()
        slices.append(ds)
    return slices


def _send(service: NodeService, datasets: list[Dataset]) -> None:
    ae = AE(ae_title=PACS_AE)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.dimse_timeout = 60
    assoc = ae.associate("127.0.0.1", service.port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        for ds in datasets:
            assert assoc.send_c_store(ds).Status == StoreStatus.SUCCESS
    finally:
        assoc.release()


def _wait(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _job(service: NodeService, state: JobState) -> Job | None:
    return next((j for j in service.jobs.list_jobs() if j.state is state), None)


@contextlib.contextmanager
def _write_lock(path: Path) -> Iterator[None]:
    """Hold the database's write lock from another connection, as another process would."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


def _healthz(service: NodeService) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{service.config.node.metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as rsp:
            return rsp.status, json.loads(rsp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _loop_errors(service: NodeService, loop: str) -> float:
    value = service.metrics.registry.get_sample_value("ichnet_loop_errors_total", {"loop": loop})
    return value or 0.0


def test_a_locked_database_is_survived_reported_and_nothing_is_lost(
    make_service: Callable[..., NodeService], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dicom_node.service")
    service = make_service(series={"complete_after_s": 2.0})
    assert _healthz(service)[0] == 200
    _send(service, _series(3))
    received = _wait(lambda: _job(service, JobState.RECEIVED), "a RECEIVED job")

    with _write_lock(service.jobs.path):
        # The series goes quiet while the lock is held: mark_queued and claim_next fail.
        _wait(lambda: _loop_errors(service, "assembling") >= 2, "assembler failures")
        _wait(lambda: _loop_errors(service, "inference") >= 2, "worker failures")
        _, report = _wait(
            lambda: (
                (r := _healthz(service))[0] == 503
                and {"assembling", "inference", "job_store"} <= set(r[1]["failing"])
                and r
            ),
            "/healthz to name the failing parts",
        )
        assert "database is locked" in report["parts"]["job_store"]
        assert "database is locked" in report["parts"]["inference"]
        assert service.jobs.get(received.id).state is JobState.RECEIVED
        assert all(t.is_alive() for t in service._threads)

    done = _wait(
        lambda: (j := service.jobs.get(received.id)).is_terminal and j, "the job to finish"
    )
    assert done.state is JobState.SKIPPED, done
    assert _wait(lambda: _healthz(service)[0] == 200, "/healthz to recover")
    assert "assembling: round failed" in caplog.text
    assert "working again after" in caplog.text


def test_instances_stored_while_the_database_is_locked_still_become_a_job(
    make_service: Callable[..., NodeService],
) -> None:
    service = make_service()
    with _write_lock(service.jobs.path):
        _send(service, _series(2))  # stored; counting them on a job has to wait
        assert service.jobs.list_jobs() == []
    job = _wait(lambda: (js := service.jobs.list_jobs()) and js[0].is_terminal and js[0], "the job")
    assert job.instance_count == 2
    assert job.state is JobState.SKIPPED


def test_a_series_longer_than_max_slices_is_skipped_before_its_pixels_are_read(
    make_service: Callable[..., NodeService],
) -> None:
    service = make_service(selection={"min_slices": 1, "max_slices": 4})
    _send(service, _series(5))
    job = _wait(lambda: (js := service.jobs.list_jobs()) and js[0].is_terminal and js[0], "job")
    assert job.state is JobState.SKIPPED
    assert job.reason == (
        "5 slices, more than selection.max_slices 4 (counted in the spool; no pixel data read)"
    )


def test_queue_metrics_are_served(make_service: Callable[..., NodeService]) -> None:
    service = make_service()
    _send(service, _series(2))
    _wait(lambda: (js := service.jobs.list_jobs()) and js[0].is_terminal, "the job")
    url = f"http://127.0.0.1:{service.config.node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as rsp:
        body = rsp.read().decode()
    assert 'ichnet_jobs{state="SKIPPED"} 1.0' in body
    assert 'ichnet_jobs{state="QUEUED"} 0.0' in body
    assert "ichnet_oldest_queued_job_age_seconds 0.0" in body
    assert "ichnet_storage_free_bytes " in body
    assert 'ichnet_component_up{part="inference"} 1.0' in body


def test_loop_backoff_doubles_up_to_its_cap() -> None:
    assert [loop_backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert loop_backoff(100) == 30.0
