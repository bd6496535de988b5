"""NodeService in process: receive over DICOM, skip what is not a head, stay responsive, stop.

The node runs with its default weights and engine on free loopback ports; the PACS is a
pynetdicom peer that sends with C-STORE and receives the results on its own storage SCP, so
every exchange is real DICOM over TCP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import (
    Comprehensive3DSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SegmentationStorage,
    generate_uid,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node.config import parse_config
from dicom_node.jobs import Job, JobState
from dicom_node.service import NodeService
from dicom_node.status import StoreStatus
from tests.dicom_node.instances import ct_slice

pytestmark = pytest.mark.integration

NODE_AE: Final[str] = "ICHNET"
PACS_AE: Final[str] = "PACS"
#: One inference of the 28-slice head on a busy 2-core CPU, with a wide margin.
JOB_TIMEOUT_S: Final[float] = 180.0
#: A stop with nothing to do only has to wake the idle loops (they wait on events).
IDLE_STOP_BOUND_S: Final[float] = 5.0
STOP_TIMEOUT_S: Final[float] = 60.0
_NODE_THREADS: Final = ("ichnet-assembler", "ichnet-worker", "ichnet-sender")


@dataclass
class ResultPeer:
    """The PACS's storage SCP: keeps every SEG / SR the node sends back."""

    server: ThreadedAssociationServer
    received: list[Dataset] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@pytest.fixture
def result_peer() -> Iterator[ResultPeer]:
    ae = AE(ae_title=PACS_AE)
    for sop_class in (SegmentationStorage, Comprehensive3DSRStorage):
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    received: list[Dataset] = []

    def on_store(event: Event) -> int:
        received.append(event.dataset)
        return int(StoreStatus.SUCCESS)

    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    yield ResultPeer(server, received)
    server.shutdown()


@pytest.fixture
def service(
    tmp_path: Path, free_port: int, result_peer: ResultPeer, engine_cache_dir: Path
) -> Iterator[NodeService]:
    """A started node (default weights and engine) whose only peer is ``result_peer``."""
    config = parse_config(
        {
            "node": {"ae_title": NODE_AE, "port": free_port, "storage_dir": str(tmp_path)},
            "peers": [{"ae_title": PACS_AE, "host": "127.0.0.1", "port": result_peer.port}],
            "series": {"complete_after_s": 0.5, "poll_interval_s": 0.1},
            "model": {"cache_dir": str(engine_cache_dir)},
        }
    )
    node = NodeService(config)
    node.start()
    yield node
    if any(t.name in _NODE_THREADS for t in threading.enumerate()):
        node.stop(STOP_TIMEOUT_S)


def _send(port: int, paths: list[Path]) -> None:
    """C-STORE ``paths`` from the PACS over one association; each must be acknowledged."""
    ae = AE(ae_title=PACS_AE)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        for path in paths:
            assert assoc.send_c_store(dcmread(path)).Status == StoreStatus.SUCCESS, path
    finally:
        assoc.release()


def _echo(port: int) -> int:
    ae = AE(ae_title=PACS_AE)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def _wait_for_job(
    node: NodeService, condition: Callable[[Job], bool], what: str, timeout_s: float
) -> Job:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = node.jobs.list_jobs()
        if jobs and condition(jobs[-1]):
            return jobs[-1]
        time.sleep(0.02)
    pytest.fail(f"no job {what} within {timeout_s:.0f} s: {node.jobs.list_jobs()}")


@pytest.mark.shared_data
def test_a_non_head_series_is_skipped_with_its_reason_and_nothing_is_sent(
    service: NodeService, result_peer: ResultPeer, shared_data: Path
) -> None:
    sources = sorted((shared_data / "real" / "abdomen_ct_3slice").glob("*.dcm"))
    _send(service.port, sources)

    job = _wait_for_job(service, lambda j: j.is_terminal, "finished", JOB_TIMEOUT_S)
    assert job.state is JobState.SKIPPED
    assert job.instance_count == len(sources)
    assert job.reason is not None and "COLONOSCOPY, not a head" in job.reason, job.reason
    assert [j.id for j in service.jobs.list_jobs()] == [job.id]
    assert not service.outbox.job_dir(job.id).exists()
    assert not (service.results_dir / str(job.id)).exists()
    service.stop(STOP_TIMEOUT_S)  # the sender has stopped: nothing can still go out
    assert result_peer.received == []


@pytest.mark.shared_data
def test_the_node_answers_echo_while_a_job_runs(
    service: NodeService,
    result_peer: ResultPeer,
    head_ct_dir: Path,
) -> None:
    sources = sorted(head_ct_dir.glob("*.dcm"))
    _send(service.port, sources)

    running = _wait_for_job(
        service, lambda j: j.state is JobState.RUNNING, "RUNNING", JOB_TIMEOUT_S
    )
    assert _echo(service.port) == StoreStatus.SUCCESS
    assert service.jobs.get(running.id).state is JobState.RUNNING, "echo came after the job"

    done = _wait_for_job(service, lambda j: j.is_terminal, "finished", JOB_TIMEOUT_S)
    assert (done.id, done.state) == (running.id, JobState.DONE), done.reason
    assert sorted(str(ds.SOPClassUID) for ds in result_peer.received) == sorted(
        [Comprehensive3DSRStorage, SegmentationStorage]
    )
    [study_uid] = {dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in sources}
    assert {ds.StudyInstanceUID for ds in result_peer.received} == {study_uid}
    assert (service.results_dir / str(done.id) / "result.json").is_file()
    assert set(done.timings) >= {"volume", "inference", "results", "send"}


def test_graceful_stop_while_idle_returns_quickly(
    service: NodeService, caplog: pytest.LogCaptureFixture
) -> None:
    port = service.port
    assert _echo(port) == StoreStatus.SUCCESS
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="dicom_node.service"):
        service.stop(STOP_TIMEOUT_S)
    elapsed = time.monotonic() - started
    assert elapsed < IDLE_STOP_BOUND_S, f"idle stop took {elapsed:.1f} s"
    assert [t.name for t in threading.enumerate() if t.name in _NODE_THREADS] == []
    assert "still busy at shutdown" not in caplog.text
    ae = AE(ae_title=PACS_AE)
    ae.add_requested_context(Verification)
    assert not ae.associate("127.0.0.1", port, ae_title=NODE_AE).is_established


@pytest.mark.shared_data
def test_a_job_that_cannot_write_its_results_fails_and_the_worker_goes_on(
    service: NodeService, result_peer: ResultPeer, head_ct_dir: Path, shared_data: Path
) -> None:
    # A real file-system failure: the outbox folder was replaced by a file, so no job folder
    # can be made in it once the analysis is done.
    service.outbox.root.rmdir()
    service.outbox.root.write_text("not a directory")
    _send(service.port, sorted(head_ct_dir.glob("*.dcm")))
    failed = _wait_for_job(service, lambda j: j.is_terminal, "finished", JOB_TIMEOUT_S)
    assert failed.state is JobState.FAILED
    assert failed.reason is not None and "NotADirectoryError" in failed.reason, failed.reason

    # The worker is still alive: the next series is taken and decided on.
    _send(service.port, sorted((shared_data / "real" / "abdomen_ct_3slice").glob("*.dcm")))
    skipped = _wait_for_job(
        service, lambda j: j.id != failed.id and j.is_terminal, "finished", JOB_TIMEOUT_S
    )
    assert skipped.state is JobState.SKIPPED, skipped
    assert result_peer.received == []


#: A study's second series arrives one instance every SLOW_SEND_S for longer than the quiet period.
STUDY_QUIET_S: Final[float] = 2.0
SLOW_SEND_S: Final[float] = 0.25
SLOW_SERIES_SLICES: Final[int] = 14


def _tiny_series(study_uid: str, count: int) -> list[Dataset]:
    """``count`` 8x6 slices of one series of ``study_uid`` (no head CT: skipped quickly)."""
    series_uid = generate_uid()
    slices = []
    for index in range(count):
        ds = ct_slice()
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.ImagePositionPatient = [0, 0, float(index)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        slices.append(ds)
    return slices


@pytest.mark.parametrize("per_study", ["one", "all"])
def test_a_studys_series_are_queued_together_once_none_is_arriving(
    tmp_path: Path, free_port: int, engine_cache_dir: Path, per_study: str
) -> None:
    config = parse_config(
        {
            "node": {"ae_title": NODE_AE, "port": free_port, "storage_dir": str(tmp_path)},
            "peers": [{"ae_title": PACS_AE, "host": "127.0.0.1", "port": 9}],
            "series": {"complete_after_s": STUDY_QUIET_S, "poll_interval_s": 0.1},
            "selection": {"per_study": per_study},
            "model": {"cache_dir": str(engine_cache_dir)},
        }
    )
    node = NodeService(config)
    node.start()
    try:
        study_uid = generate_uid()
        first, second = _tiny_series(study_uid, 5), _tiny_series(study_uid, SLOW_SERIES_SLICES)
        ae = AE(ae_title=PACS_AE)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AE)
        assert assoc.is_established
        try:
            for ds in first:
                assert assoc.send_c_store(ds).Status == StoreStatus.SUCCESS
            first_done = time.monotonic()
            for ds in second:
                assert assoc.send_c_store(ds).Status == StoreStatus.SUCCESS
                time.sleep(SLOW_SEND_S)
            # The first series has been quiet for longer than the quiet period by now.
            assert time.monotonic() - first_done > STUDY_QUIET_S + 0.5
            states = {j.series_instance_uid: j.state for j in node.jobs.list_jobs()}
        finally:
            assoc.release()
        first_state = states[first[0].SeriesInstanceUID]
        if per_study == "one":
            assert first_state is JobState.RECEIVED, "waits for the study's other series"
        else:
            assert first_state is not JobState.RECEIVED, "decided on its own"
        assert states[second[0].SeriesInstanceUID] is JobState.RECEIVED
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not all(j.is_terminal for j in node.jobs.list_jobs()):
            assert time.monotonic() < deadline, node.jobs.list_jobs()
            time.sleep(0.05)
        assert [j.state for j in node.jobs.list_jobs()] == [JobState.SKIPPED, JobState.SKIPPED]
    finally:
        node.stop(STOP_TIMEOUT_S)
