"""The node's SCP against real DICOM peers on loopback: dcmtk's echoscu/storescu and pynetdicom.

Nothing here is mocked: each test starts the node built by :func:`dicom_node.app.start` on a
free port and talks DICOM to it over TCP. Peers: dcmtk (what most PACS are tested against) and,
for data sets dcmtk will not send, a pynetdicom SCU that streams a file's bytes as they are
(``STORE_SEND_CHUNKED_DATASET``), the way a PACS forwards what it once received.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    MPEG2MPML,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, _config, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.app import ACCEPTED_TRANSFER_SYNTAXES, NoPeersConfiguredError, build_ae
from dicom_node.config import parse_config
from dicom_node.status import (
    RejectResult,
    RejectSource,
    ServiceUserRejectReason,
    StoreStatus,
)
from dicom_node.storage import InstanceStore, StoredInstance
from tests.dicom_node.conftest import NODE_AE, PEER_AE, NodeFactory, RunningNode
from tests.dicom_node.dcmtk import ToolRun, echoscu, storescu, write_exact_profile
from tests.dicom_node.instances import ct_slice, dataset_bytes, file_meta

pytestmark = pytest.mark.integration

_DIMSE_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")
_ERROR_COMMENT = re.compile(r"\[(.*)\]\s*#\s*\d+, 1 ErrorComment")
#: storescu's verdict when it cannot even read a file (it then sends nothing).
_STORESCU_CANNOT_SEND = re.compile(
    r"(No SOP Class or Instance UID in file|Bad DICOM file: .*)", re.MULTILINE
)


@dataclass(frozen=True)
class Outcome:
    """What must happen to a file: the node's status and reason, and whether dcmtk sends it.

    Attributes
    ----------
    status:
        The node's C-STORE status; ``None`` when no peer can even address the file.
    reason:
        Regex for the node's logged reason (or, with ``status`` None, the sender's error).
    storescu_refuses:
        Regex for storescu's own error when it will not send the file at all; the file then
        goes out through pynetdicom, bytes as they are.
    """

    status: StoreStatus | None
    reason: str = ""
    storescu_refuses: str | None = None


STORED = Outcome(StoreStatus.SUCCESS)


def _sop_class_and_syntax(path: Path) -> tuple[str, str] | None:
    """The file's SOP Class and transfer syntax (guessed from its encoding without meta)."""
    ds = dcmread(path, stop_before_pixels=True, force=True)
    sop_class = ds.get("SOPClassUID")
    syntax = ds.file_meta.get("TransferSyntaxUID") if "TransferSyntaxUID" in ds.file_meta else None
    if syntax is None:
        syntax = {
            (True, True): ImplicitVRLittleEndian,
            (False, True): ExplicitVRLittleEndian,
            (False, False): ExplicitVRBigEndian,
        }.get(ds.original_encoding)
    if not sop_class or syntax is None:
        return None
    return str(sop_class), str(syntax)


def _storescu_exact(node: RunningNode, source: Path, work_dir: Path) -> ToolRun:
    """storescu offering only the file's own (SOP Class, transfer syntax), verbose enough to
    show the response's Status and Error Comment."""
    options: list[str] = ["-d"]
    identity = _sop_class_and_syntax(source)
    if identity is not None:
        profile = work_dir / "exact.cfg"
        write_exact_profile(profile, [identity])
        options += ["-xf", str(profile), "Exact"]
    return storescu(node.port, [source], PEER_AE, NODE_AE, *options)


def _response(run: ToolRun) -> tuple[int, str]:
    """Status and Error Comment of the one C-STORE response in storescu's debug output."""
    statuses = _DIMSE_STATUS.findall(run.output)
    assert len(statuses) == 1, f"expected one C-STORE response\n{run}"
    comment = _ERROR_COMMENT.search(run.output)
    return int(statuses[0], 16), comment[1].strip() if comment else ""


def _send_as_is(port: int, source: Path) -> Dataset:
    """C-STORE the file's data set bytes exactly as stored, with pynetdicom.

    Raises
    ------
    AttributeError
        If the file lacks the File Meta elements pynetdicom needs to address the request.
    InvalidDicomError
        If the file has no File Meta Information at all.
    """
    meta, _ = split_dataset(source)
    ae = AE(ae_title=PEER_AE)
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established, f"association for {source.name} was not accepted"
    try:
        return assoc.send_c_store(source)
    finally:
        assoc.release()


@pytest.fixture
def send_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let pynetdicom send files without decoding them (a test-local switch)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def test_echo_from_a_known_peer(node: RunningNode, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dicom_node"):
        run = echoscu(node.port, PEER_AE, NODE_AE, "-v")
    assert run.returncode == 0, run
    assert "Received Echo Response (Success)" in run.output
    assert node.metrics.registry.get_sample_value("ichnet_associations_accepted_total") == 1


@pytest.mark.parametrize(
    ("calling", "called", "reason", "dcmtk_reason"),
    [
        (
            "UNKNOWN",
            NODE_AE,
            ServiceUserRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED,
            "Calling AE Title Not Recognized",
        ),
        (
            PEER_AE,
            "NOT_ICHNET",
            ServiceUserRejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED,
            "Called AE Title Not Recognized",
        ),
    ],
)
def test_unknown_ae_titles_are_rejected_with_the_standard_reason(
    node: RunningNode,
    caplog: pytest.LogCaptureFixture,
    calling: str,
    called: str,
    reason: ServiceUserRejectReason,
    dcmtk_reason: str,
) -> None:
    def rejections() -> list[str]:
        return [r.getMessage() for r in caplog.records if "rejected association" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="dicom_node.associations"):
        run = echoscu(node.port, calling, called)
        # EVT_REJECTED runs on the node's association thread after the A-ASSOCIATE-RJ is on
        # the wire, so echoscu may exit before the node has logged and counted it.
        _wait_until(lambda: bool(rejections()))
    assert run.returncode != 0, run
    assert "Result: Rejected Permanent, Source: Service User" in run.output, run
    assert f"Reason: {dcmtk_reason}" in run.output, run
    [line] = rejections()
    assert f"calling AE {calling!r}" in line and f"called AE {called!r}" in line
    assert "127.0.0.1:" in line and reason.name.lower() in line
    rejected = node.metrics.registry.get_sample_value(
        "ichnet_associations_rejected_total", {"reason": reason.name.lower()}
    )
    assert rejected == 1


def test_reject_pdu_on_the_wire(node: RunningNode) -> None:
    """The A-ASSOCIATE-RJ bytes (PS3.8 9.3.4): type 03, length 4, result 1, source 1, reason 3."""
    received: list[bytes] = []

    def keep(event: Event) -> None:
        received.append(event.data)

    ae = AE(ae_title="UNKNOWN")
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", node.port, ae_title=NODE_AE, evt_handlers=[(evt.EVT_DATA_RECV, keep)]
    )
    assert assoc.is_rejected
    reject = assoc.acceptor.primitive
    assert (reject.result, reject.result_source, reject.diagnostic) == (
        RejectResult.REJECTED_PERMANENT,
        RejectSource.SERVICE_USER,
        ServiceUserRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED,
    )
    assert b"".join(received) == bytes([0x03, 0, 0, 0, 0, 4, 0, 0x01, 0x01, 0x03])


def test_known_peer_title_with_trailing_spaces_is_accepted(node: RunningNode) -> None:
    run = echoscu(node.port, f"{PEER_AE}   ", f"{NODE_AE}  ")
    assert run.returncode == 0, run


@pytest.mark.parametrize(
    "sop_class",
    [
        CTImageStorage,
        EnhancedCTImageStorage,
        MRImageStorage,
        SecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
    ],
)
def test_storage_contexts_accept_every_listed_transfer_syntax(
    node: RunningNode, sop_class: str
) -> None:
    ae = AE(ae_title=PEER_AE)
    for syntax in (*ACCEPTED_TRANSFER_SYNTAXES, MPEG2MPML):  # one context per syntax
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AE)
    try:
        assert assoc.is_established
        accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
        assert accepted == set(ACCEPTED_TRANSFER_SYNTAXES)  # MPEG2 video: refused
    finally:
        assoc.release()


def test_a_node_without_peers_refuses_to_start(tmp_path: Path) -> None:
    config = parse_config({"node": {"storage_dir": str(tmp_path)}})
    with pytest.raises(NoPeersConfiguredError, match=r"peers: no peer is configured"):
        build_ae(config)


def _content_differences(sent: Dataset, stored: Dataset, where: str = "") -> list[str]:
    """Elements whose values differ, ignoring Group Length (gggg,0000), which dcmtk recomputes."""
    differences = []
    for tag in sorted(set(sent.keys()) | set(stored.keys())):
        if tag.element == 0x0000:
            continue
        if tag not in sent or tag not in stored:
            differences.append(f"{where}{tag} only in {'stored' if tag in stored else 'sent'}")
        elif sent[tag].VR == "SQ" and stored[tag].VR == "SQ":
            for index, (a, b) in enumerate(zip(sent[tag].value, stored[tag].value, strict=True)):
                differences += _content_differences(a, b, f"{where}{tag}[{index}].")
        elif sent[tag].value != stored[tag].value:
            differences.append(f"{where}{tag} differs")
    return differences


@pytest.mark.shared_data
@pytest.mark.usefixtures("send_raw")
@pytest.mark.parametrize("folder", ["mr_one_slice_9_syntaxes", "pydicom_data"])
def test_every_transfer_syntax_is_stored_as_sent(
    node: RunningNode, shared_data: Path, tmp_path: Path, folder: str
) -> None:
    """dcmtk offers only each file's own transfer syntax: stored in it, same content. dcmtk
    re-encodes while sending (recomputed group lengths, OB for encapsulated pixels), so byte
    identity is checked with a sender that transmits the file's bytes unchanged."""
    sources = sorted((shared_data / "transfer_syntaxes" / folder).glob("*.dcm"))
    assert sources, f"no test files in {folder}"
    for source in sources:
        syntax = file_meta(source).TransferSyntaxUID
        run = _storescu_exact(node, source, tmp_path)
        cannot_send = _STORESCU_CANNOT_SEND.search(run.output)
        if cannot_send:
            # dcmtk does not map VR UN to the dictionary VR, so it finds no SOP Class UID.
            assert source.name == "explicit_VR-UN.dcm", f"{source.name}: {cannot_send[0]}"
        else:
            assert _response(run) == (StoreStatus.SUCCESS, ""), run
            stored = node.stored[-1]
            assert stored.transfer_syntax_uid == syntax, source.name
            assert file_meta(stored.path).TransferSyntaxUID == syntax, source.name
            assert file_meta(stored.path).SourceApplicationEntityTitle == PEER_AE
            assert _content_differences(dcmread(source), dcmread(stored.path)) == []

        before = len(node.stored)
        assert _send_as_is(node.port, source).Status == StoreStatus.SUCCESS, source.name
        assert len(node.stored) == before + 1, f"{source.name} not reported as stored"
        stored = node.stored[-1]
        assert file_meta(stored.path).TransferSyntaxUID == syntax, source.name
        assert dataset_bytes(stored.path) == dataset_bytes(source), source.name


#: Every file of ../shared/data/malformed and what the node must answer (None: nobody sends it).
_MISMATCH = StoreStatus.ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS
_UNDECODABLE = StoreStatus.ERROR_CANNOT_DECODE
_NO_SOP_UIDS = r"No SOP Class or Instance UID in file"
MALFORMED: dict[str, Outcome] = {
    "CT_small.dcm": STORED,
    "ExplVR_BigEndNoMeta.dcm": STORED,  # no File Meta in the file; on the wire it is valid
    "ExplVR_LitEndNoMeta.dcm": STORED,
    "J2K_pixelrep_mismatch.dcm": STORED,  # a decoding matter, not a storage one
    "JPEG-lossy.dcm": STORED,
    "JPEG2000-embedded-sequence-delimiter.dcm": STORED,
    "image_dfl.dcm": STORED,  # Deflated Explicit VR Little Endian
    "ctbrain1.dcm": STORED,  # RGB screen captures: valid Secondary Capture, selection skips them
    "ctbrain2.dcm": STORED,  # (same SOP Instance UID as ctbrain1: replaces it)
    "badVR.dcm": Outcome(_MISMATCH, r"NumberOfFrames '1A' is not a positive integer"),
    "bad_sequence.dcm": Outcome(_MISMATCH, r"SOPInstanceUID 'dccc.*' is not a valid UID"),
    "MR_truncated.dcm": Outcome(
        _UNDECODABLE,
        r"ends inside Pixel Data: 8130 of 8192 bytes",
        storescu_refuses=r"PixelData \(7fe0,0010\) larger \(8192\) than remaining bytes",
    ),
    "emri_small_jpeg_2k_lossless_too_short.dcm": Outcome(
        _UNDECODABLE,
        r"ends inside encapsulated Pixel Data",
        storescu_refuses=r"Sequence Delimitation Item missing",
    ),
    "rtplan_truncated.dcm": Outcome(
        _UNDECODABLE,
        r"ends inside \(300A,00B0\): 711 of 976 bytes",
        storescu_refuses=r"IsocenterPosition \(300a,012c\) larger \(50\) than remaining",
    ),
    "UN_sequence.dcm": Outcome(_MISMATCH, r"SOPClassUID is missing", storescu_refuses=_NO_SOP_UIDS),
    "no_meta_group_length.dcm": Outcome(
        _MISMATCH, r"SOPClassUID is missing", storescu_refuses=_NO_SOP_UIDS
    ),
    "empty_charset_LEI.dcm": Outcome(
        None, r"no attribute 'MediaStorageSOPClassUID'", storescu_refuses=_NO_SOP_UIDS
    ),
    "meta_missing_tsyntax.dcm": Outcome(
        None, r"no attribute 'TransferSyntaxUID'", storescu_refuses=_NO_SOP_UIDS
    ),
    "no_meta.dcm": Outcome(
        None,
        r"missing DICOM File Meta Information header",
        storescu_refuses=r"premature end of stream",
    ),
}


@pytest.mark.shared_data
@pytest.mark.usefixtures("send_raw")
@pytest.mark.parametrize("folder", ["pydicom", "rgb_screenshot_ct"])
def test_malformed_files_are_stored_or_refused_with_a_reason(
    node: RunningNode,
    shared_data: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    folder: str,
) -> None:
    """storescu first; if storescu will not send a file, pynetdicom sends its bytes as they are."""
    sources = sorted((shared_data / "malformed" / folder).glob("*.dcm"))
    unknown = [s.name for s in sources if s.name not in MALFORMED]
    assert not unknown, f"new test files without an expected outcome: {unknown}"
    for source in sources:
        expected = MALFORMED[source.name]
        before = len(node.stored)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dicom_node.handlers"):
            run = _storescu_exact(node, source, tmp_path)
            if expected.storescu_refuses is None:
                assert not _STORESCU_CANNOT_SEND.search(run.output), run
                status, comment = _response(run)
            else:
                # dcmtk reads the file before sending and will not send this one
                assert re.search(expected.storescu_refuses, run.output), run
                assert not _DIMSE_STATUS.search(run.output), run
                try:
                    rsp = _send_as_is(node.port, source)
                except (AttributeError, InvalidDicomError) as exc:  # nothing to address it with
                    assert expected.status is None, f"{source.name}: {exc}"
                    assert re.search(expected.reason, str(exc)), f"{source.name}: {exc}"
                    continue
                status, comment = rsp.Status, rsp.get("ErrorComment", "")
        assert expected.status is not None, f"{source.name} was sent, expected no sender"
        assert status == expected.status, f"{source.name}: 0x{status:04X} ({comment})\n{run}"
        if expected is STORED:
            assert len(node.stored) == before + 1
            assert node.stored[-1].path.is_file()
            continue
        assert len(node.stored) == before, f"{source.name} refused yet reported as stored"
        assert comment, f"{source.name}: refusal without an Error Comment"
        [logged] = [
            r.getMessage() for r in caplog.records if "refused SOP Instance" in r.getMessage()
        ]
        assert re.search(expected.reason, logged), f"{source.name}: {logged}"
    # The node is still fine after all that.
    assert echoscu(node.port, PEER_AE, NODE_AE).returncode == 0


@pytest.mark.shared_data
def test_file_is_durable_before_success_is_returned(
    start_node: NodeFactory, head_ct_dir: Path
) -> None:
    sources = sorted(head_ct_dir.glob("*.dcm"))[:3]
    expected = {dcmread(s, stop_before_pixels=True).SOPInstanceUID: s for s in sources}
    checked: list[str] = []

    def on_stored(instance: StoredInstance) -> None:
        # Runs before the handler returns, i.e. before the peer gets its success.
        assert instance.path.is_file()
        assert dataset_bytes(instance.path) == dataset_bytes(expected[instance.sop_instance_uid])
        assert [p.name for p in instance.path.parent.iterdir() if p.suffix != ".dcm"] == []
        checked.append(instance.sop_instance_uid)

    node = start_node(on_stored=on_stored)
    run = storescu(node.port, sources, PEER_AE, NODE_AE, "-v")
    assert run.output.count("Received Store Response (Success)") == len(sources), run
    assert sorted(checked) == sorted(expected)


def test_write_failure_is_out_of_resources_and_nothing_is_reported(
    start_node: NodeFactory, tmp_path: Path
) -> None:
    # A real failure: the spool's 'incoming' is a file, so no directory can be made in it.
    spool = tmp_path / "broken-spool"
    spool.mkdir()
    (spool / "incoming").write_text("not a directory")
    node = start_node(store=InstanceStore(spool))
    source = tmp_path / "slice.dcm"
    _write_ct_slice(source)
    run = storescu(node.port, [source], PEER_AE, NODE_AE, "-d")
    assert _response(run) == (
        StoreStatus.REFUSED_OUT_OF_RESOURCES,
        "cannot store instance: Not a directory",
    ), run
    assert node.stored == []
    refused = node.metrics.registry.get_sample_value(
        "ichnet_instances_received_total", {"status": "refused_out_of_resources"}
    )
    assert refused == 1


def test_on_stored_failure_still_answers_success(
    start_node: NodeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(instance: StoredInstance) -> None:
        raise RuntimeError("job queue unavailable")

    node = start_node(on_stored=broken)
    source = tmp_path / "slice.dcm"
    _write_ct_slice(source)
    with caplog.at_level(logging.ERROR, logger="dicom_node.handlers"):
        run = storescu(node.port, [source], PEER_AE, NODE_AE, "-v")
    assert "Received Store Response (Success)" in run.output, run
    assert len(node.stored) == 1 and node.stored[0].path.is_file()
    assert "startup scan will pick it up" in caplog.text
    assert "job queue unavailable" in caplog.text  # the traceback is logged


class ExplodingStore(InstanceStore):
    """A spool with a bug: the handler must answer 0xC211, not crash the association."""

    def store(self, *args: object, **kwargs: object) -> Path:
        raise KeyError("bug in the spool")


def test_unexpected_exception_is_a_processing_failure(
    start_node: NodeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = start_node(store=ExplodingStore(tmp_path / "spool"))
    source = tmp_path / "slice.dcm"
    _write_ct_slice(source)
    with caplog.at_level(logging.ERROR, logger="dicom_node.handlers"):
        run = storescu(node.port, [source, source], PEER_AE, NODE_AE, "-d")
    statuses = [int(m, 16) for m in _DIMSE_STATUS.findall(run.output)]
    assert statuses == [StoreStatus.ERROR_PROCESSING_FAILURE] * 2, run  # association survived
    assert "bug in the spool" in caplog.text
    assert node.stored == []


@pytest.mark.shared_data
def test_association_summary_and_metrics(
    node: RunningNode, head_ct_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sources = sorted(head_ct_dir.glob("*.dcm"))[:4]
    with caplog.at_level(logging.INFO, logger="dicom_node.associations"):
        run = storescu(node.port, sources, PEER_AE, NODE_AE)
        assert run.returncode == 0, run
        # storescu may exit before the node's thread has logged the release it just answered
        _wait_until(lambda: not node.server.active_associations)
    summaries = [
        r for r in caplog.records if r.levelno == logging.INFO and "released" in r.getMessage()
    ]
    assert len(summaries) == 1
    assert f"association from {PEER_AE} (127.0.0.1:" in summaries[0].getMessage()
    assert "4 instance(s) stored" in summaries[0].getMessage()
    registry = node.metrics.registry
    assert registry.get_sample_value("ichnet_instances_received_total", {"status": "success"}) == 4
    total = sum(len(dataset_bytes(s)) for s in sources)
    assert registry.get_sample_value("ichnet_received_bytes_total") == total
    assert registry.get_sample_value("ichnet_store_duration_seconds_count") == 4


def test_aborted_association_is_summed_up_too(
    node: RunningNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "slice.dcm"
    _write_ct_slice(source)
    with caplog.at_level(logging.INFO, logger="dicom_node.associations"):
        run = storescu(node.port, [source], PEER_AE, NODE_AE, "--abort")
        _wait_until(lambda: not node.server.active_associations)
    assert "Aborting Association" in run.output or run.returncode == 0, run
    [summary] = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "aborted after" in summary and "1 instance(s) stored" in summary


def _write_ct_slice(path: Path) -> None:
    ct_slice().save_as(path, enforce_file_format=True)


def _wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` (work finishing on the node's own threads) until true or time out."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout_s} s"
        time.sleep(0.01)
