"""``limits:`` against a real SCP on loopback: oversized PDUs, messages, inflation and frames.

Each test sends what an attacker (or a broken modality) would: a PDU header announcing 512 MiB
before any association, a data set larger than ``max_instance_bytes``, a deflate bomb, frames
far beyond ``max_frame_pixels``. The node must refuse each one at the documented point (abort on
the wire, or a C-STORE status with an Error Comment), allocate nothing large, log the limit and
keep answering C-ECHO.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
)
from pynetdicom import AE, _config
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.config import LimitsSection
from dicom_node.handlers import build_file_meta, receive_instance
from dicom_node.status import LimitExceededError, StoreStatus
from dicom_node.storage import InstanceStore, encode_file_meta
from dicom_node.validation import inflate_capped
from tests.dicom_node.conftest import NODE_AE, PEER_AE, NodeFactory, RunningNode
from tests.dicom_node.instances import ct_slice, encode_dataset

pytestmark = pytest.mark.integration

MIB: Final[int] = 1024 * 1024
#: The A-ABORT the node sends: PDU type 7, length 4, source 2 (service provider), reason 6
#: (invalid-PDU-parameter value), PS3.8 9.3.8.
A_ABORT_INVALID_PARAMETER: Final[bytes] = bytes.fromhex("07000000000400000206")


def _echo(port: int) -> int:
    ae = AE(ae_title=PEER_AE)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def _read_until_closed(sock: socket.socket, timeout_s: float = 10.0) -> bytes:
    sock.settimeout(timeout_s)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _send_until_refused(sock: socket.socket, total: int, chunk: int = MIB) -> int:
    """Send up to ``total`` bytes; returns how many went out before the node closed the
    connection (the kernel buffers a few MB)."""
    sock.settimeout(10)
    block = b"\x00" * chunk
    sent = 0
    try:
        while sent < total:
            sock.sendall(block)
            sent += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def _refusals(node: RunningNode, reason: str) -> float:
    value = node.metrics.registry.get_sample_value(
        "ichnet_transport_refusals_total", {"reason": reason}
    )
    return value or 0.0


def test_a_512_mib_pdu_before_any_association_is_aborted_without_reading_it(
    node: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="dicom_node.transport"),
        socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock,
    ):
        sock.sendall(struct.pack(">BBL", 0x01, 0, 512 * MIB))  # A-ASSOCIATE-RQ, 512 MiB
        sent = _send_until_refused(sock, 256 * MIB)
        answer = _read_until_closed(sock)
    assert sent < 64 * MIB, f"the node went on reading: {sent} bytes accepted"
    assert answer in (A_ABORT_INVALID_PARAMETER, b""), answer  # b"": reset before it was read
    assert "A_ASSOCIATE_RQ PDU announces 536870912 bytes, above limits.max_pdu_bytes 16777216" in (
        caplog.text
    )
    assert _refusals(node, "pdu_too_large") == 1
    assert _echo(node.port) == StoreStatus.SUCCESS


def test_the_abort_reaches_a_peer_that_stops_sending(node: RunningNode) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 16 * MIB + 1))  # one byte above the limit
        assert _read_until_closed(sock) == A_ABORT_INVALID_PARAMETER


def test_a_pdu_at_the_limit_is_read(start_node: NodeFactory) -> None:
    # The limit is on the PDU length field: exactly max_pdu_bytes is allowed. A P-DATA-TF
    # before association is a protocol error pynetdicom's state machine answers itself
    # (A-ABORT, reason unexpected PDU), after reading the whole body.
    limit = 65536
    node = start_node(config={"limits": {"max_pdu_bytes": limit}})
    pdv = struct.pack(">LBB", limit - 4, 1, 0x02) + b"\x00" * (limit - 6)  # one last fragment
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(struct.pack(">BBL", 0x04, 0, limit) + pdv)
        answer = _read_until_closed(sock)
    assert answer.startswith(b"\x07") and answer != A_ABORT_INVALID_PARAMETER, answer
    assert _refusals(node, "pdu_too_large") == 0
    assert _refusals(node, "malformed_p_data") == 0


def test_a_peer_stalling_inside_a_pdu_loses_its_connection_and_slot(
    start_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    node = start_node(config={"node": {"network_timeout_s": 1, "max_associations": 1}})
    with (
        caplog.at_level(logging.WARNING, logger="dicom_node.transport"),
        socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock,
    ):
        sock.sendall(struct.pack(">BBL", 0x01, 0, 1000) + b"\x00" * 10)  # 990 bytes missing
        started = time.monotonic()
        answer = _read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert answer == A_ABORT_INVALID_PARAMETER
    assert elapsed < 5, f"the stalled connection was held {elapsed:.1f} s"
    assert "no data for 1 s in the middle of a PDU" in caplog.text
    assert _refusals(node, "stalled_pdu") == 1
    deadline = time.monotonic() + 10
    while node.server.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _echo(node.port) == StoreStatus.SUCCESS  # the only slot is free again


def _association(port: int, *syntaxes: str) -> AE:
    ae = AE(ae_title=PEER_AE)
    ae.add_requested_context(CTImageStorage, list(syntaxes) or [ExplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    return ae


def test_a_data_set_above_max_instance_bytes_is_aborted_while_it_arrives(
    start_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    node = start_node(config={"limits": {"max_instance_bytes": 2 * MIB}})
    ds = ct_slice(rows=1024, columns=1536)  # 3 MiB of pixel data
    ae = _association(node.port)
    ae.maximum_pdu_size = 65536  # many PDUs: the node must stop counting at 2 MiB
    with caplog.at_level(logging.WARNING, logger="dicom_node.transport"):
        assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AE)
        assert assoc.is_established
        rsp = assoc.send_c_store(ds)
        assoc.release()
    assert "Status" not in rsp, "a response came although the association was aborted"
    assert assoc.is_aborted
    assert "above limits.max_instance_bytes 2097152" in caplog.text
    assert _refusals(node, "data_set_too_large") == 1
    assert node.stored == []
    assert _echo(node.port) == StoreStatus.SUCCESS


def test_a_data_set_within_max_instance_bytes_is_stored_across_many_pdus(
    start_node: NodeFactory,
) -> None:
    node = start_node(config={"limits": {"max_instance_bytes": 4 * MIB}})
    ae = _association(node.port)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        for _ in range(3):  # the per-message count starts again with each data set
            rsp = assoc.send_c_store(ct_slice(rows=1024, columns=1536))
            assert rsp.Status == StoreStatus.SUCCESS
    finally:
        assoc.release()
    assert len(node.stored) == 3


def _deflate_bomb(inflated_bytes: int) -> tuple[bytes, str]:
    """A CT slice in Deflated Explicit VR LE whose Pixel Data inflates to ``inflated_bytes``.

    The header claims a frame size that fits the pixel data, so only the inflated size is
    wrong for the node; built in 1 MiB steps, never holding the inflated bytes.
    """
    ds = ct_slice()
    del ds.PixelData
    header = encode_dataset(ds, ExplicitVRLittleEndian)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflater.compress(header + b"\xe0\x7f\x10\x00OW\x00\x00")]
    parts.append(deflater.compress(struct.pack("<L", inflated_bytes)))
    zeros = b"\x00" * MIB
    for _ in range(inflated_bytes // MIB):
        parts.append(deflater.compress(zeros))
    parts.append(deflater.flush())
    return b"".join(parts), str(ds.SOPInstanceUID)


def _peak_allocation(function: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_deflate_bomb_stops_inflating_at_the_limit() -> None:
    bomb, _ = _deflate_bomb(600 * MIB)
    assert len(bomb) < 1 * MIB  # 600 MiB of zeros deflate to about 0.6 MB

    def refuse() -> None:
        with pytest.raises(LimitExceededError, match="inflates to more than"):
            inflate_capped(bomb, 256 * MIB)

    peak = _peak_allocation(refuse)
    assert peak < 8 * MIB, f"{peak / MIB:.0f} MiB allocated while refusing a deflate bomb"


def test_a_deflated_data_set_within_the_limit_is_inflated_once_into_its_size() -> None:
    deflated, _ = _deflate_bomb(24 * MIB)
    inflated: list[bytes] = []
    peak = _peak_allocation(lambda: inflated.append(inflate_capped(deflated, 32 * MIB)))
    assert 24 * MIB < len(inflated[0]) < 25 * MIB
    assert peak < 24 * MIB + 8 * MIB, f"{peak / MIB:.0f} MiB allocated for 24 MiB"


def test_a_truncated_deflate_stream_cannot_be_understood() -> None:
    bomb, _ = _deflate_bomb(4 * MIB)
    with pytest.raises(Exception, match="deflate stream ends early"):
        inflate_capped(bomb[: len(bomb) // 2], 64 * MIB)


def _store_raw(
    node: RunningNode, encoded: bytes, sop_instance_uid: str, syntax: str, work_dir: Path
) -> Dataset:
    """C-STORE already encoded data set bytes as they are (a PACS forwarding what it received):
    written behind File Meta into a Part 10 file that pynetdicom sends without decoding."""
    path = work_dir / f"{sop_instance_uid}.dcm"
    meta = build_file_meta(CTImageStorage, sop_instance_uid, syntax, PEER_AE)
    path.write_bytes(encode_file_meta(meta) + encoded)
    ae = AE(ae_title=PEER_AE)
    ae.add_requested_context(CTImageStorage, [syntax])
    assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()
        path.unlink()


@pytest.fixture
def send_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let pynetdicom send files without decoding them (a test-local switch)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


@pytest.mark.usefixtures("send_raw")
def test_a_deflate_bomb_over_the_network_is_refused_with_a_status_and_comment(
    node: RunningNode, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    bomb, sop_instance_uid = _deflate_bomb(600 * MIB)
    with caplog.at_level(logging.WARNING, logger="dicom_node.handlers"):
        rsp = _store_raw(node, bomb, sop_instance_uid, DeflatedExplicitVRLittleEndian, tmp_path)
    assert rsp.Status == StoreStatus.REFUSED_OUT_OF_RESOURCES
    assert rsp.ErrorComment == "inflates beyond max_instance_bytes 268435456"
    assert "inflates to more than limits.max_instance_bytes 268435456" in caplog.text
    assert node.stored == []
    assert _echo(node.port) == StoreStatus.SUCCESS


@pytest.mark.usefixtures("send_raw")
def test_frames_above_max_frame_pixels_are_refused_from_the_header(
    node: RunningNode, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Five deflated 4096 x 4096 slices are about 170 kB on the wire; each would be a 32 MiB
    # array (and far more as float volumes) if it got in.
    refused = []
    with caplog.at_level(logging.WARNING, logger="dicom_node.handlers"):
        for _ in range(5):
            ds = ct_slice(rows=4096, columns=4096)
            ds.PixelData = bytes(4096 * 4096 * 2)  # air: deflates to almost nothing
            encoded = encode_dataset(ds, DeflatedExplicitVRLittleEndian)
            assert len(encoded) < 100_000
            refused.append(
                _store_raw(
                    node,
                    encoded,
                    str(ds.SOPInstanceUID),
                    DeflatedExplicitVRLittleEndian,
                    tmp_path,
                )
            )
    assert {int(r.Status) for r in refused} == {StoreStatus.REFUSED_OUT_OF_RESOURCES}
    assert {r.ErrorComment for r in refused} == {"4096x4096 frame above max_frame_pixels"}
    assert "Rows 4096 x Columns 4096 = 16777216 pixels is above limits.max_frame_pixels" in (
        caplog.text
    )
    assert node.stored == []


def _request(sop_instance_uid: str) -> C_STORE:
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = sop_instance_uid
    return request


def test_compressed_pixel_data_that_would_decode_beyond_the_limit_is_refused(
    tmp_path: Path,
) -> None:
    # 2000 frames of 1024 x 1024 x 16 bits = 4 GiB decoded, a few bytes encoded.
    ds = ct_slice(rows=1024, columns=1024)
    ds.NumberOfFrames = 2000
    del ds.PixelData
    header = encode_dataset(ds, ExplicitVRLittleEndian)
    fragments = b"\xfe\xff\x00\xe0" + struct.pack("<L", 0)
    fragments += b"\xfe\xff\x00\xe0" + struct.pack("<L", 4) + b"\x00" * 4
    fragments += b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    encoded = header + b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff" + fragments
    with pytest.raises(LimitExceededError, match=r"decodes to 4194304000 bytes, above"):
        receive_instance(
            encoded,
            _request(str(ds.SOPInstanceUID)),
            UID("1.2.840.10008.1.2.4.90"),  # JPEG 2000 Lossless
            PEER_AE,
            "127.0.0.1",
            40000,
            InstanceStore(tmp_path),
            LimitsSection(),
        )
    assert not (tmp_path / "incoming").exists()


@pytest.mark.usefixtures("send_raw")
def test_limits_leave_ordinary_ct_alone(node: RunningNode, tmp_path: Path) -> None:
    ds = ct_slice(rows=512, columns=512)
    ds.PixelData = np.zeros((512, 512), np.int16).tobytes()
    started = time.monotonic()
    rsp = _store_raw(
        node,
        encode_dataset(ds, DeflatedExplicitVRLittleEndian),
        str(ds.SOPInstanceUID),
        DeflatedExplicitVRLittleEndian,
        tmp_path,
    )
    assert rsp.Status == StoreStatus.SUCCESS
    assert time.monotonic() - started < 10
    assert len(node.stored) == 1
