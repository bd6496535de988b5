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
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dicom_node.jobs import Job, JobState
from dicom_node.service import NodeService, loop_backoff
from tests.dicom_node.service_helpers import non_head_series, send_datasets, wait_for

pytestmark = pytest.mark.integration


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
    send_datasets(service, non_head_series(3))
    received = wait_for(lambda: _job(service, JobState.RECEIVED), "a RECEIVED job")

    with _write_lock(service.jobs.path):
        # The series goes quiet while the lock is held: mark_queued and claim_next fail.
        wait_for(lambda: _loop_errors(service, "assembling") >= 2, "assembler failures")
        wait_for(lambda: _loop_errors(service, "inference") >= 2, "worker failures")
        _, report = wait_for(
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

    done = wait_for(
        lambda: (j := service.jobs.get(received.id)).is_terminal and j, "the job to finish"
    )
    assert done.state is JobState.SKIPPED, done
    assert wait_for(lambda: _healthz(service)[0] == 200, "/healthz to recover")
    assert "assembling: round failed" in caplog.text
    assert "working again after" in caplog.text


def test_instances_stored_while_the_database_is_locked_still_become_a_job(
    make_service: Callable[..., NodeService],
) -> None:
    service = make_service()
    with _write_lock(service.jobs.path):
        send_datasets(service, non_head_series(2))  # stored; counting them on a job has to wait
        assert service.jobs.list_jobs() == []
    job = wait_for(
        lambda: (js := service.jobs.list_jobs()) and js[0].is_terminal and js[0], "the job"
    )
    assert job.instance_count == 2
    assert job.state is JobState.SKIPPED


def test_a_series_longer_than_max_slices_is_skipped_before_its_pixels_are_read(
    make_service: Callable[..., NodeService],
) -> None:
    service = make_service(selection={"min_slices": 1, "max_slices": 4})
    send_datasets(service, non_head_series(5))
    job = wait_for(lambda: (js := service.jobs.list_jobs()) and js[0].is_terminal and js[0], "job")
    assert job.state is JobState.SKIPPED
    assert job.reason == (
        "5 slices, more than selection.max_slices 4 (counted in the spool; no pixel data read)"
    )


def test_a_series_over_max_series_voxels_is_skipped_before_its_pixels_are_read(
    make_service: Callable[..., NodeService], synthetic_head_study: Any
) -> None:
    soft = synthetic_head_study.soft
    voxels = len(soft) * int(soft[0].Rows) * int(soft[0].Columns)
    service = make_service(limits={"max_series_voxels": voxels - 1})
    send_datasets(service, soft)
    job = wait_for(lambda: (js := service.jobs.list_jobs()) and js[0].is_terminal and js[0], "job")
    assert job.state is JobState.SKIPPED
    assert job.reason == (
        f"skipped: the series has {voxels} voxels ({len(soft)} instances), more than "
        f"limits.max_series_voxels {voxels - 1} (one job's memory budget; counted from the "
        "headers, no pixel data read)"
    )


def test_queue_metrics_are_served(make_service: Callable[..., NodeService]) -> None:
    service = make_service()
    send_datasets(service, non_head_series(2))
    wait_for(lambda: (js := service.jobs.list_jobs()) and js[0].is_terminal, "the job")
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
