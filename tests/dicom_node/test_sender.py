"""The result sender against real peers on loopback: dcmtk storescp and pynetdicom SCPs.

No peer is mocked. dcmtk's storescp stands in for a PACS; in-process pynetdicom SCPs return the
statuses and rejections a real PACS can produce; a peer in a subprocess dies mid-association.
Backoff is checked with a fake clock, never by sleeping.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import highdicom as hd
import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import (
    UID,
    Comprehensive3DSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    SegmentationStorage,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset
from pynetdicom.events import Event

from dicom_node.config import Peer, SenderSection
from dicom_node.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_node.jobs import JobState, JobStore
from dicom_node.outbox import Outbox, pending_files
from dicom_node.sender import (
    JITTER_FRACTION,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    OutboxFile,
    PeerStatus,
    ResultSender,
    SendOutcomeKind,
    StatusCategory,
    backoff_delay,
    build_presentation_contexts,
    classify_store_status,
)
from tests.dicom_node.dcmtk import dcmtk_tool

STORESCP = dcmtk_tool("storescp")
needs_storescp = pytest.mark.skipif(STORESCP is None, reason="dcmtk storescp is not installed")

OUR_AE = "ICHNET"
PEER_AE = "PACS"
LOCALHOST = "127.0.0.1"
SETTINGS = SenderSection(max_attempts=3, initial_backoff_s=2.0, max_backoff_s=5.0)

# C-STORE statuses a peer may return (PS3.4 Table B.2-1, PS3.7 Annex C), named for the tests.
SUCCESS = 0x0000
REFUSED_OUT_OF_RESOURCES = 0xA700
ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
ERROR_CANNOT_UNDERSTAND = 0xC000
REFUSED_SOP_CLASS_NOT_SUPPORTED = 0x0122
WARNING_COERCION_OF_DATA_ELEMENTS = 0xB000
RESOURCE_LIMITATION = 0x0213
PENDING = 0xFF00


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


# -- result objects -------------------------------------------------------------------------


def _ct_slice(index: int, study: str, series: str, frame: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Sender^Test", "S1", "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "CT", "test", 1, index + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(index)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.zeros((4, 4), np.int16).tobytes()
    return ds


@pytest.fixture(scope="module")
def result_objects() -> tuple[Dataset, Dataset]:
    """A small highdicom SEG and Comprehensive 3D SR on a 2-slice CT, like the node's results."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    source = [_ct_slice(i, study, series, frame) for i in range(2)]
    mask = np.zeros((2, 4, 4), dtype=bool)
    mask[0, 1:3, 1:3] = True
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="hemorrhage",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Hemorrhage,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="sender-test", version="0", family=codes.DCM.ArtificialIntelligence
        ),
    )
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=generate_uid(),
        series_number=100,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="1",
    )
    root = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport, template_id="1500")
    root.ContentSequence = DicomSequence(
        [
            hd.sr.CodeContentItem(
                name=codes.DCM.Finding,
                value=codes.SCT.Hemorrhage,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        ]
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=source,
        content=root,
        series_number=101,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
    )
    return seg, sr


@dataclass
class Results:
    """One job's outbox folder with a SEG and an SR in it."""

    job_id: int
    job_dir: Path
    seg: Path
    sr: Path
    #: Data set bytes (after the file meta) of each file, by SOP Instance UID.
    payload: dict[str, bytes]


def _payload(path: Path) -> bytes:
    _meta, offset = split_dataset(path)
    return path.read_bytes()[offset:]


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox.for_storage_dir(tmp_path / "node")


@pytest.fixture
def results(outbox: Outbox, result_objects: tuple[Dataset, Dataset]) -> Results:
    seg_ds, sr_ds = result_objects
    job_dir = outbox.prepare(1)
    seg, sr = outbox.add(1, seg_ds, "seg"), outbox.add(1, sr_ds, "sr")
    payload = {str(seg_ds.SOPInstanceUID): _payload(seg), str(sr_ds.SOPInstanceUID): _payload(sr)}
    return Results(1, job_dir, seg, sr, payload)


@pytest.fixture
def sender() -> ResultSender:
    return ResultSender(
        SETTINGS,
        OUR_AE,
        connection_timeout_s=2,
        acse_timeout_s=5,
        dimse_timeout_s=5,
        network_timeout_s=5,
        clock=FakeClock(),
        rng=random.Random(7),
    )


# -- peers ----------------------------------------------------------------------------------


def _wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"peer process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex((LOCALHOST, port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {LOCALHOST}:{port} after 10 s")


@dataclass
class StoreScp:
    """A running dcmtk storescp and the folder it writes to."""

    out_dir: Path
    proc: subprocess.Popen[bytes]

    def received(self) -> dict[str, bytes]:
        """Data set bytes of every stored file, by SOP Instance UID."""
        return {
            str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): _payload(p)
            for p in self.out_dir.iterdir()
        }


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., StoreScp]]:
    """Start dcmtk storescp on a port: ``start(port, *extra_options)``."""
    started: list[StoreScp] = []

    def start(port: int, *options: str) -> StoreScp:
        assert STORESCP is not None
        out_dir = tmp_path / f"storescp-{len(started)}"
        out_dir.mkdir()
        log = (tmp_path / f"storescp-{len(started)}.log").open("wb")
        proc = subprocess.Popen(
            [STORESCP, "--aetitle", PEER_AE, "-od", str(out_dir), "+B", *options, str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        log.close()
        peer = StoreScp(out_dir, proc)
        started.append(peer)
        _wait_for_port(port, proc)
        return peer

    yield start
    for peer in started:
        peer.proc.terminate()
        peer.proc.wait(timeout=10)


@dataclass
class ScpPeer:
    """An in-process pynetdicom Storage SCP that answers each C-STORE with ``statuses``."""

    statuses: list[int]
    stored: list[str] = field(default_factory=list)
    calling_ae_titles: list[str] = field(default_factory=list)

    def handle_store(self, event: Event) -> int:
        self.calling_ae_titles.append(event.assoc.requestor.ae_title)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status == SUCCESS or classify_store_status(status) is StatusCategory.WARNING:
            self.stored.append(str(cast(C_STORE, event.request).AffectedSOPInstanceUID))
        return status


@pytest.fixture
def scp() -> Iterator[Callable[..., tuple[ScpPeer, AE]]]:
    """Start a pynetdicom Storage SCP: ``start(port, statuses=[...], sop_classes=..., **ae)``."""
    servers: list[AE] = []

    def start(
        port: int,
        statuses: Sequence[int] = (SUCCESS,),
        sop_classes: Sequence[UID] = (SegmentationStorage, Comprehensive3DSRStorage),
        **ae_options: object,
    ) -> tuple[ScpPeer, AE]:
        peer = ScpPeer(list(statuses))
        ae = AE(ae_title=PEER_AE)
        for name, value in ae_options.items():
            setattr(ae, name, value)
        for sop_class in sop_classes:
            ae.add_supported_context(sop_class, list(UNCOMPRESSED_TRANSFER_SYNTAXES))
        ae.start_server(
            (LOCALHOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, peer.handle_store)]
        )
        servers.append(ae)
        return peer, ae

    yield start
    for ae in servers:
        ae.shutdown()


def _peer(port: int, ae_title: str = PEER_AE) -> Peer:
    return Peer(ae_title=ae_title, host=LOCALHOST, port=port)


# -- pure logic -----------------------------------------------------------------------------


def test_backoff_doubles_up_to_max_with_small_jitter() -> None:
    settings = SenderSection(max_attempts=10, initial_backoff_s=2.0, max_backoff_s=30.0)
    rng = random.Random(1)
    for failed, base in [
        (1, 2.0),
        (2, 4.0),
        (3, 8.0),
        (4, 16.0),
        (5, 30.0),
        (9, 30.0),
        (5000, 30.0),
    ]:
        delays = [backoff_delay(failed, settings, rng) for _ in range(50)]
        assert all(base <= d <= base * (1 + JITTER_FRACTION) for d in delays), (failed, delays)
        assert len(set(delays)) > 1  # jitter spreads retries of many jobs apart
    with pytest.raises(ValueError, match="failed_attempts counts from 1, got 0"):
        backoff_delay(0, settings, rng)


@pytest.mark.parametrize(
    ("code", "category"),
    [
        pytest.param(SUCCESS, StatusCategory.SUCCESS, id="success"),
        pytest.param(WARNING_COERCION_OF_DATA_ELEMENTS, StatusCategory.WARNING, id="coercion"),
        pytest.param(REFUSED_OUT_OF_RESOURCES, StatusCategory.TRANSIENT, id="out-of-resources"),
        pytest.param(
            REFUSED_OUT_OF_RESOURCES + 0x21, StatusCategory.TRANSIENT, id="out-of-resources-range"
        ),
        pytest.param(RESOURCE_LIMITATION, StatusCategory.TRANSIENT, id="resource-limitation"),
        pytest.param(
            ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            StatusCategory.PERMANENT,
            id="data-set-mismatch",
        ),
        pytest.param(
            ERROR_CANNOT_UNDERSTAND + 0x211, StatusCategory.PERMANENT, id="cannot-understand-range"
        ),
        pytest.param(
            REFUSED_SOP_CLASS_NOT_SUPPORTED, StatusCategory.PERMANENT, id="sop-class-not-supported"
        ),
        # A C-STORE response can never be Pending: a peer sending one is broken, not busy.
        pytest.param(PENDING, StatusCategory.PERMANENT, id="pending"),
    ],
)
def test_store_status_classification(code: int, category: StatusCategory) -> None:
    assert classify_store_status(code) is category


def test_peer_status_is_named_like_pynetdicom() -> None:
    assert str(PeerStatus.from_code(REFUSED_OUT_OF_RESOURCES, "disk full")) == (
        "Refused: Out of Resources (0xA700): disk full"
    )
    assert str(PeerStatus.from_code(REFUSED_SOP_CLASS_NOT_SUPPORTED)) == (
        "Refused: SOP Class Not Supported (0x0122)"
    )


def test_contexts_offer_both_uncompressed_syntaxes_and_each_compressed_one_alone() -> None:
    files = [
        OutboxFile(Path("a"), SegmentationStorage, generate_uid(), ExplicitVRLittleEndian),
        OutboxFile(Path("b"), Comprehensive3DSRStorage, generate_uid(), ExplicitVRLittleEndian),
        OutboxFile(Path("c"), SegmentationStorage, generate_uid(), JPEG2000Lossless),
        OutboxFile(Path("d"), SegmentationStorage, generate_uid(), ImplicitVRLittleEndian),
    ]
    contexts = build_presentation_contexts(files)
    assert [(cx.abstract_syntax, cx.transfer_syntax) for cx in contexts] == [
        (SegmentationStorage, list(UNCOMPRESSED_TRANSFER_SYNTAXES)),
        (Comprehensive3DSRStorage, list(UNCOMPRESSED_TRANSFER_SYNTAXES)),
        (SegmentationStorage, [JPEG2000Lossless]),
    ]


# -- delivery to dcmtk storescp -------------------------------------------------------------


@needs_storescp
def test_send_delivers_every_file_byte_equal_and_empties_outbox(
    sender: ResultSender, results: Results, storescp: Callable[..., StoreScp], free_port: int
) -> None:
    peer = storescp(free_port)
    outcome = sender.send(results.job_dir, _peer(free_port))

    assert outcome.kind is SendOutcomeKind.SENT, outcome.reason
    assert outcome.sent_files == (results.seg, results.sr)
    assert pending_files(results.job_dir) == []
    assert peer.received() == results.payload
    assert [r.status.category for r in outcome.results if r.status] == [StatusCategory.SUCCESS] * 2


@needs_storescp
def test_outgoing_association_announces_our_implementation(
    sender: ResultSender,
    results: Results,
    storescp: Callable[..., StoreScp],
    free_port: int,
    tmp_path: Path,
) -> None:
    # storescp -d logs the A-ASSOCIATE-RQ it received, with the requestor's identity.
    storescp(free_port, "-d")
    assert sender.send(results.job_dir, _peer(free_port)).kind is SendOutcomeKind.SENT
    log = (tmp_path / "storescp-0.log").read_text(errors="replace")
    assert f"Their Implementation Class UID:    {IMPLEMENTATION_CLASS_UID}" in log, log
    assert f"Their Implementation Version Name: {IMPLEMENTATION_VERSION_NAME}" in log, log


@needs_storescp
def test_peer_down_is_retried_with_backoff_then_delivered(
    tmp_path: Path,
    results: Results,
    storescp: Callable[..., StoreScp],
    free_port: int,
) -> None:
    clock = FakeClock(5_000.0)
    sender = ResultSender(
        SETTINGS, OUR_AE, connection_timeout_s=2, clock=clock, rng=random.Random(3)
    )
    with JobStore.for_storage_dir(tmp_path / "node", clock=clock) as store:
        job_id = store.record_instance("1.2.3", "1.2.3.4", PEER_AE, now=clock.now)
        store.mark_queued(job_id)
        store.claim_next(now=clock.now)
        store.mark_sending(job_id, results.job_dir, result_version=1)
        assert job_id == results.job_id

        job = store.due_for_sending(clock.now)[0]
        outcome = sender.deliver(store, job, _peer(free_port))  # nothing listens yet
        assert outcome.kind is SendOutcomeKind.RETRY
        assert outcome.reason is not None and "cannot connect to peer PACS" in outcome.reason
        job = store.get(job_id)
        assert (job.state, job.attempts) == (JobState.SENDING, 1)
        assert job.next_attempt_at is not None
        delay = job.next_attempt_at - clock.now
        assert (
            SETTINGS.initial_backoff_s
            <= delay
            <= SETTINGS.initial_backoff_s * (1 + JITTER_FRACTION)
        )
        assert store.due_for_sending(clock.now + SETTINGS.initial_backoff_s - 0.01) == []
        assert len(pending_files(results.job_dir)) == 2

        peer = storescp(free_port)
        clock.now = job.next_attempt_at
        (job,) = store.due_for_sending(clock.now)
        outcome = sender.deliver(store, job, _peer(free_port))
        assert outcome.kind is SendOutcomeKind.SENT, outcome.reason
        job = store.get(job_id)
        assert job.state is JobState.DONE
        assert "send" in job.timings
        assert not results.job_dir.exists()
        assert peer.received() == results.payload


def test_max_attempts_exhausted_fails_with_last_reason(
    tmp_path: Path, results: Results, free_port: int
) -> None:
    clock = FakeClock()
    sender = ResultSender(
        SETTINGS, OUR_AE, connection_timeout_s=2, clock=clock, rng=random.Random(5)
    )
    with JobStore.for_storage_dir(tmp_path / "node", clock=clock) as store:
        job_id = store.record_instance("1.2.3", "1.2.3.4", PEER_AE, now=clock.now)
        store.mark_queued(job_id)
        store.claim_next(now=clock.now)
        store.mark_sending(job_id, results.job_dir, result_version=1)
        delays = []
        for _ in range(SETTINGS.max_attempts):
            (job,) = store.due_for_sending(clock.now)
            outcome = sender.deliver(store, job, _peer(free_port))
            if outcome.kind is SendOutcomeKind.RETRY:
                assert outcome.next_attempt_at is not None
                delays.append(outcome.next_attempt_at - clock.now)
                clock.now = outcome.next_attempt_at
        job = store.get(job_id)
    assert outcome.kind is SendOutcomeKind.FAILED
    assert job.state is JobState.FAILED
    assert job.reason == outcome.reason
    assert job.reason is not None
    assert job.reason.startswith("gave up after 3 attempt(s) (sender.max_attempts); last error: ")
    assert f"cannot connect to peer PACS at 127.0.0.1:{free_port}" in job.reason
    assert 2.0 <= delays[0] <= 2.2 and 4.0 <= delays[1] <= 4.4
    assert len(pending_files(results.job_dir)) == 2  # kept for inspection


def test_by_default_a_peer_outage_of_hours_is_retried_and_only_then_failed(
    tmp_path: Path, results: Results, free_port: int
) -> None:
    # The defaults: no attempt cap, give up 24 h after the job became SENDING. Nothing listens
    # on free_port (a real refused connection); the clock jumps to each next attempt.
    clock = FakeClock()
    settings = SenderSection()
    sender = ResultSender(
        settings, OUR_AE, connection_timeout_s=2, clock=clock, rng=random.Random(1)
    )
    with JobStore.for_storage_dir(tmp_path / "node", clock=clock) as store:
        job_id = store.record_instance("1.2.3", "1.2.3.4", PEER_AE, now=clock.now)
        store.mark_queued(job_id)
        store.claim_next(now=clock.now)
        started = store.mark_sending(job_id, results.job_dir, result_version=1).sending_since
        assert started == clock.now
        attempts = 0
        while True:
            (job,) = store.due_for_sending(clock.now)
            outcome = sender.deliver(store, job, _peer(free_port))
            attempts += 1
            if outcome.kind is not SendOutcomeKind.RETRY:
                break
            assert outcome.next_attempt_at is not None
            clock.now = outcome.next_attempt_at
        job = store.get(job_id)
    hours = (clock.now - started) / 3600.0
    # Before: 8 attempts over about 4 minutes. Now: retried for a day, at most 5.5 min apart.
    assert job.state is JobState.FAILED
    assert 23.8 <= hours <= 24.0, hours
    assert attempts > 24 * 3600 / (settings.max_backoff_s * (1 + JITTER_FRACTION)), attempts
    assert job.reason is not None and "sender.give_up_after_hours 24" in job.reason, job.reason
    assert len(pending_files(results.job_dir)) == 2  # kept for 'jobs resend'


@needs_storescp
def test_association_refused_by_storescp_fails_at_once(
    sender: ResultSender, results: Results, storescp: Callable[..., StoreScp], free_port: int
) -> None:
    storescp(free_port, "--refuse")
    outcome = sender.send(results.job_dir, _peer(free_port))
    assert outcome.kind is SendOutcomeKind.FAILED
    assert outcome.reason is not None
    assert f"peer PACS at 127.0.0.1:{free_port} rejected the association" in outcome.reason
    assert "Rejected (Permanent)" in outcome.reason
    assert len(pending_files(results.job_dir)) == 2


@needs_storescp
def test_peer_aborting_before_its_response_is_retried(
    sender: ResultSender, results: Results, storescp: Callable[..., StoreScp], free_port: int
) -> None:
    storescp(free_port, "--abort-after")  # A-ABORT after the C-STORE-RQ, before the response
    outcome = sender.send(results.job_dir, _peer(free_port))
    assert outcome.kind is SendOutcomeKind.RETRY
    assert outcome.reason is not None
    assert "no C-STORE response from peer PACS" in outcome.reason
    assert "Segmentation Storage" in outcome.reason
    assert pending_files(results.job_dir) == [results.seg, results.sr]


def test_peer_that_does_not_know_our_ae_title_fails_at_once(
    sender: ResultSender, results: Results, scp: Callable[..., tuple[ScpPeer, AE]], free_port: int
) -> None:
    peer, _ = scp(free_port, require_calling_aet=["MODALITY1"])
    outcome = sender.send(results.job_dir, _peer(free_port))
    assert outcome.kind is SendOutcomeKind.FAILED
    assert outcome.reason is not None
    assert "Rejected (Permanent)" in outcome.reason
    assert "Calling AE title not recognised" in outcome.reason
    assert "our AE title 'ICHNET'" in outcome.reason
    assert peer.stored == []


def test_wrong_called_ae_title_fails_at_once(
    sender: ResultSender, results: Results, scp: Callable[..., tuple[ScpPeer, AE]], free_port: int
) -> None:
    scp(free_port, require_called_aet=True)
    outcome = sender.send(results.job_dir, _peer(free_port, ae_title="NOTPACS"))
    assert outcome.kind is SendOutcomeKind.FAILED
    assert outcome.reason is not None
    assert "Called AE title not recognised" in outcome.reason


def test_rejected_transient_is_retried(
    sender: ResultSender, results: Results, scp: Callable[..., tuple[ScpPeer, AE]], free_port: int
) -> None:
    scp(free_port, maximum_associations=1)
    other = AE(ae_title="OTHER")
    other.add_requested_context(SegmentationStorage)
    busy = other.associate(LOCALHOST, free_port, ae_title=PEER_AE)
    assert busy.is_established
    try:
        outcome = sender.send(results.job_dir, _peer(free_port))
    finally:
        busy.release()
    assert outcome.kind is SendOutcomeKind.RETRY
    assert outcome.reason is not None and "Rejected (Transient)" in outcome.reason
    assert "Local limit exceeded" in outcome.reason


# -- C-STORE statuses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "meaning"),
    [
        pytest.param(
            REFUSED_OUT_OF_RESOURCES,
            SendOutcomeKind.RETRY,
            "Refused: Out of Resources (0xA700)",
            id="out-of-resources",
        ),
        pytest.param(
            ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            SendOutcomeKind.FAILED,
            "Data Set Does Not Match SOP Class (0xA900)",
            id="data-set-mismatch",
        ),
        pytest.param(
            ERROR_CANNOT_UNDERSTAND,
            SendOutcomeKind.FAILED,
            "Cannot Understand (0xC000)",
            id="cannot-understand",
        ),
        pytest.param(
            REFUSED_SOP_CLASS_NOT_SUPPORTED,
            SendOutcomeKind.FAILED,
            "Refused: SOP Class Not Supported (0x0122)",
            id="sop-class-not-supported",
        ),
    ],
)
def test_failure_status_is_classified(
    sender: ResultSender,
    results: Results,
    scp: Callable[..., tuple[ScpPeer, AE]],
    free_port: int,
    status: int,
    kind: SendOutcomeKind,
    meaning: str,
) -> None:
    peer, _ = scp(free_port, statuses=[status])
    outcome = sender.send(results.job_dir, _peer(free_port))
    assert outcome.kind is kind
    assert outcome.reason is not None
    assert f"peer PACS at 127.0.0.1:{free_port} returned {meaning}" in outcome.reason
    assert "Segmentation Storage" in outcome.reason
    assert peer.calling_ae_titles[0] == OUR_AE
    # Nothing was stored, so nothing left the outbox.
    assert pending_files(results.job_dir) == [results.seg, results.sr]
    if kind is SendOutcomeKind.RETRY:
        assert outcome.next_attempt_at is not None
        assert len(peer.calling_ae_titles) == 1  # stops at the first "not now"
    else:
        assert len(peer.calling_ae_titles) == 2  # tries the other result too


def test_warning_status_counts_as_stored(
    sender: ResultSender,
    results: Results,
    scp: Callable[..., tuple[ScpPeer, AE]],
    free_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer, _ = scp(free_port, statuses=[WARNING_COERCION_OF_DATA_ELEMENTS, SUCCESS])
    with caplog.at_level(logging.WARNING, logger="dicom_node.sender"):
        outcome = sender.send(results.job_dir, _peer(free_port))
    assert outcome.kind is SendOutcomeKind.SENT
    assert pending_files(results.job_dir) == []
    assert sorted(peer.stored) == sorted(results.payload)
    assert any(
        "with a warning: Coercion of Data Elements (0xB000)" in r.getMessage()
        for r in caplog.records
    )


def test_unsupported_sop_class_fails_but_delivers_the_rest(
    sender: ResultSender, results: Results, scp: Callable[..., tuple[ScpPeer, AE]], free_port: int
) -> None:
    peer, _ = scp(free_port, sop_classes=[Comprehensive3DSRStorage])
    outcome = sender.send(results.job_dir, _peer(free_port))
    assert outcome.kind is SendOutcomeKind.FAILED
    assert outcome.reason is not None
    assert outcome.reason.startswith(
        f"00-seg.dcm: peer PACS at 127.0.0.1:{free_port} cannot take Segmentation Storage"
    )
    assert outcome.sent_files == (results.sr,)
    assert pending_files(results.job_dir) == [results.seg]
    assert len(peer.stored) == 1


def test_no_accepted_presentation_context_fails_at_once(
    sender: ResultSender, results: Results, scp: Callable[..., tuple[ScpPeer, AE]], free_port: int
) -> None:
    scp(free_port, sop_classes=[CTImageStorage])
    outcome = sender.send(results.job_dir, _peer(free_port))
    assert outcome.kind is SendOutcomeKind.FAILED
    assert outcome.reason == (
        f"peer PACS at 127.0.0.1:{free_port} accepted none of the proposed presentation "
        "contexts (Comprehensive 3D SR Storage, Segmentation Storage)"
    )


# -- interrupted sends ----------------------------------------------------------------------

_DYING_PEER = """
import os, sys
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Comprehensive3DSRStorage, SegmentationStorage

stored = 0

def handle_store(event):
    global stored
    if stored == 1:
        os._exit(3)  # the peer process dies while the second C-STORE is in flight
    stored += 1
    return 0x0000

ae = AE(ae_title="PACS")
for sop_class in (SegmentationStorage, Comprehensive3DSRStorage):
    ae.add_supported_context(sop_class)
ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[(evt.EVT_C_STORE, handle_store)])
"""


@needs_storescp
def test_peer_dying_mid_send_resends_only_the_rest(
    sender: ResultSender,
    results: Results,
    storescp: Callable[..., StoreScp],
    free_port: int,
) -> None:
    dying = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_DYING_PEER), str(free_port)])
    try:
        _wait_for_port(free_port, dying)
        outcome = sender.send(results.job_dir, _peer(free_port))
        assert dying.wait(timeout=10) == 3
    finally:
        if dying.poll() is None:
            dying.kill()
            dying.wait()
    assert outcome.kind is SendOutcomeKind.RETRY
    assert outcome.reason is not None and "no C-STORE response from peer PACS" in outcome.reason
    assert outcome.sent_files == (results.seg,)
    assert pending_files(results.job_dir) == [results.sr]

    peer = storescp(free_port)
    outcome = sender.send(results.job_dir, _peer(free_port), previous_attempts=1)
    assert outcome.kind is SendOutcomeKind.SENT
    assert outcome.sent_files == (results.sr,)
    sr_uid = str(dcmread(peer.out_dir / next(iter(os.listdir(peer.out_dir)))).SOPInstanceUID)
    assert peer.received() == {sr_uid: results.payload[sr_uid]}


# -- outbox edge cases ----------------------------------------------------------------------


def test_empty_outbox_is_sent_without_an_association(
    sender: ResultSender, outbox: Outbox, free_port: int
) -> None:
    outcome = sender.send(outbox.prepare(9), _peer(free_port))  # nothing listens: not contacted
    assert (outcome.kind, outcome.sent_files) == (SendOutcomeKind.SENT, ())


def test_missing_outbox_fails(sender: ResultSender, tmp_path: Path, free_port: int) -> None:
    outcome = sender.send(tmp_path / "gone", _peer(free_port))
    assert outcome.kind is SendOutcomeKind.FAILED
    assert outcome.reason is not None and "outbox folder" in outcome.reason


def test_unreadable_outbox_file_fails_after_sending_the_rest(
    sender: ResultSender, results: Results, scp: Callable[..., tuple[ScpPeer, AE]], free_port: int
) -> None:
    broken = results.job_dir / "02-broken.dcm"
    broken.write_bytes(b"not DICOM at all")
    peer, _ = scp(free_port)
    outcome = sender.send(results.job_dir, _peer(free_port))
    assert outcome.kind is SendOutcomeKind.FAILED
    assert outcome.reason == "02-broken.dcm: not a readable DICOM file"
    assert pending_files(results.job_dir) == [broken]
    assert len(peer.stored) == 2


def test_deliver_without_configured_peer_fails_the_job(
    tmp_path: Path, sender: ResultSender, results: Results
) -> None:
    with JobStore.for_storage_dir(tmp_path / "node") as store:
        job_id = store.record_instance("1.2.3", "1.2.3.4", "GONE", now=1.0)
        store.mark_queued(job_id)
        running = store.claim_next(now=2.0)
        assert running is not None
        with pytest.raises(ValueError, match=f"job {job_id} must be SENDING .* found RUNNING"):
            sender.deliver(store, running, None)
        job = store.mark_sending(job_id, results.job_dir, result_version=1)
        outcome = sender.deliver(store, job, None)
        assert outcome.kind is SendOutcomeKind.FAILED
        assert store.get(job_id).reason == (
            "no peer configured for calling AE 'GONE'; nowhere to send results"
        )
