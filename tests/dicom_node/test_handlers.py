"""Header parsing and validation of received data sets, without the network.

The C-STORE path end to end (real peers, real associations) is in test_app.py; here each rule
gets exact inputs: encoded data sets in every transfer-syntax family and real pynetdicom
C-STORE request primitives.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
)
from pynetdicom.dimse_primitives import C_STORE

from dicom_node.handlers import receive_instance
from dicom_node.identity import IMPLEMENTATION_CLASS_UID
from dicom_node.status import (
    CannotUnderstandError,
    DataSetMismatchError,
    OutOfResourcesError,
    StoreStatus,
)
from dicom_node.storage import InstanceStore
from dicom_node.validation import check_native_pixel_data, read_header
from tests.dicom_node.instances import (
    SERIES_UID,
    STUDY_UID,
    ct_slice,
    dataset_bytes,
    encode_dataset,
)

NATIVE_SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
]
ITEM = b"\xfe\xff\x00\xe0"
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _request(sop_class_uid: str, sop_instance_uid: str) -> C_STORE:
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = sop_class_uid
    request.AffectedSOPInstanceUID = sop_instance_uid
    return request


def _receive(encoded: bytes, request: C_STORE, syntax: str, store: InstanceStore) -> Path:
    return receive_instance(encoded, request, UID(syntax), "PACS", "127.0.0.1", 40000, store).path


def _encapsulated(fragments: list[bytes], terminated: bool = True) -> bytes:
    """Encapsulated Pixel Data value (PS3.5 A.4): empty offset table, fragments, delimiter."""
    value = ITEM + struct.pack("<L", 0)
    for fragment in fragments:
        value += ITEM + struct.pack("<L", len(fragment)) + fragment
    return value + (SEQUENCE_DELIMITER if terminated else b"")


def _encapsulated_slice(pixel_value: bytes) -> bytes:
    """A slice in JPEG 2000 Lossless whose Pixel Data value is ``pixel_value`` as given."""
    ds = ct_slice(transfer_syntax=JPEG2000Lossless)
    del ds.PixelData
    header = encode_dataset(ds, ExplicitVRLittleEndian)
    pixel_header = b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<L", 0xFFFFFFFF)
    return header + pixel_header + pixel_value


@pytest.mark.parametrize("syntax", NATIVE_SYNTAXES)
def test_read_header_decodes_every_native_syntax_up_to_pixel_data(syntax: str) -> None:
    ds = ct_slice()
    header = read_header(encode_dataset(ds, syntax), UID(syntax))
    assert header.dataset.SOPInstanceUID == ds.SOPInstanceUID
    assert header.dataset.Rows == ds.Rows
    assert "PixelData" not in header.dataset
    assert header.pixel_data is not None
    assert header.pixel_data.length == len(ds.PixelData)
    assert header.pixel_data.available == len(ds.PixelData)


def test_read_header_without_pixel_data() -> None:
    ds = ct_slice()
    del ds.PixelData
    header = read_header(encode_dataset(ds, ExplicitVRLittleEndian), UID(ExplicitVRLittleEndian))
    assert header.pixel_data is None
    assert header.dataset.StudyInstanceUID == STUDY_UID


def test_read_header_walks_encapsulated_fragments() -> None:
    # The second fragment contains delimiter-like bytes: only the item lengths count.
    value = _encapsulated([b"\x00" * 10, SEQUENCE_DELIMITER + b"\x01\x02"])
    header = read_header(_encapsulated_slice(value), UID(JPEG2000Lossless))
    assert header.pixel_data is not None
    assert header.pixel_data.length == 0xFFFFFFFF


@pytest.mark.parametrize(
    ("pixel_value", "message"),
    [
        (_encapsulated([b"\x00" * 10], terminated=False), r"ends inside encapsulated Pixel Data"),
        (_encapsulated([b"\x00" * 10])[:-12], r"ends inside encapsulated Pixel Data"),
        (b"\x08\x00\x16\x00" + b"\x00" * 8, r"holds \(0008,0016\) .* where an Item belongs"),
    ],
)
def test_broken_encapsulated_pixel_data_cannot_be_understood(
    pixel_value: bytes, message: str
) -> None:
    with pytest.raises(CannotUnderstandError, match=message) as caught:
        read_header(_encapsulated_slice(pixel_value), UID(JPEG2000Lossless))
    assert caught.value.status == StoreStatus.ERROR_CANNOT_DECODE


def test_stream_cut_inside_the_last_element_cannot_be_understood() -> None:
    ds = ct_slice()
    del ds.PixelData
    ds.RequestedProcedureDescription = "x" * 40  # (0032,1060), now the last element
    encoded = encode_dataset(ds, ExplicitVRLittleEndian)
    with pytest.raises(CannotUnderstandError, match=r"ends inside \(0032,1060\): 30 of 40 bytes"):
        read_header(encoded[:-10], UID(ExplicitVRLittleEndian))


def test_garbage_that_will_not_inflate_cannot_be_understood() -> None:
    with pytest.raises(CannotUnderstandError, match=r"cannot be inflated"):
        read_header(b"\xff" * 64, UID(DeflatedExplicitVRLittleEndian))


def test_native_pixel_data_of_the_right_size_passes() -> None:
    ds = ct_slice(rows=8, columns=6)
    header = read_header(encode_dataset(ds, ExplicitVRLittleEndian), UID(ExplicitVRLittleEndian))
    assert header.pixel_data is not None
    check_native_pixel_data(header.dataset, header.pixel_data)  # 8 x 6 x 2 bytes


def test_short_native_pixel_data_does_not_match_the_sop_class() -> None:
    ds = ct_slice(rows=8, columns=6)
    ds.PixelData = ds.PixelData[:-10]  # a complete element, too short for the image
    header = read_header(encode_dataset(ds, ExplicitVRLittleEndian), UID(ExplicitVRLittleEndian))
    assert header.pixel_data is not None
    with pytest.raises(
        DataSetMismatchError, match=r"Pixel Data has 86 bytes .* needs 96"
    ) as caught:
        check_native_pixel_data(header.dataset, header.pixel_data)
    assert caught.value.error_comment == "Pixel Data truncated: 86 of 96 bytes"


def test_stream_cut_inside_native_pixel_data_cannot_be_understood() -> None:
    ds = ct_slice(rows=8, columns=6)
    encoded = encode_dataset(ds, ImplicitVRLittleEndian)[:-10]
    header = read_header(encoded, UID(ImplicitVRLittleEndian))
    assert header.pixel_data is not None
    with pytest.raises(CannotUnderstandError, match=r"ends inside Pixel Data: 86 of 96 bytes"):
        check_native_pixel_data(header.dataset, header.pixel_data)


def test_multi_frame_and_sub_byte_pixel_data_sizes() -> None:
    ds = ct_slice(rows=4, columns=4)
    ds.NumberOfFrames = 3
    ds.PixelData = b"\x00" * (4 * 4 * 2 * 3)
    header = read_header(encode_dataset(ds, ExplicitVRLittleEndian), UID(ExplicitVRLittleEndian))
    assert header.pixel_data is not None
    check_native_pixel_data(header.dataset, header.pixel_data)
    # 1-bit data (e.g. a binary SEG): 3 x 3 x 3 bits = 27 bits -> 4 bytes, padded to 4
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 3, 1, 1, 0
    ds.PixelData = b"\x00" * 4
    header = read_header(encode_dataset(ds, ExplicitVRLittleEndian), UID(ExplicitVRLittleEndian))
    assert header.pixel_data is not None
    check_native_pixel_data(header.dataset, header.pixel_data)


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        # Rows (0028,0010) US 8 -> removed by renaming the tag to an unused private one
        ((b"\x28\x00\x10\x00US", b"\x29\x00\x10\x00US"), r"Rows is missing but Pixel"),
        # BitsAllocated (0028,0100) US 16 -> 0
        (
            (b"\x28\x00\x00\x01US\x02\x00\x10\x00", b"\x28\x00\x00\x01US\x02\x00\x00\x00"),
            r"BitsAllocated '0' is not a positive integer",
        ),
        # NumberOfFrames (0028,0008) IS "1 " -> "1A", as the broken sender of badVR.dcm wrote it
        ((b"IS\x02\x001 ", b"IS\x02\x001A"), r"NumberOfFrames '1A' is not a positive integer"),
    ],
)
def test_unusable_image_attributes_do_not_match_the_sop_class(
    replace: tuple[bytes, bytes], message: str
) -> None:
    ds = ct_slice()
    ds.NumberOfFrames = 1
    encoded = encode_dataset(ds, ExplicitVRLittleEndian)
    assert encoded.count(replace[0]) == 1
    header = read_header(encoded.replace(*replace), UID(ExplicitVRLittleEndian))
    assert header.pixel_data is not None
    with pytest.raises(DataSetMismatchError, match=message):
        check_native_pixel_data(header.dataset, header.pixel_data)


@pytest.mark.parametrize("syntax", NATIVE_SYNTAXES)
def test_receive_instance_stores_the_bytes_as_received(tmp_path: Path, syntax: str) -> None:
    ds = ct_slice()
    encoded = encode_dataset(ds, syntax)
    store = InstanceStore(tmp_path)
    instance = receive_instance(
        encoded,
        _request(CTImageStorage, ds.SOPInstanceUID),
        UID(syntax),
        "PACS",
        "127.0.0.1",
        40000,
        store,
    )
    assert instance.path == store.path_for(STUDY_UID, SERIES_UID, ds.SOPInstanceUID)
    assert (instance.sop_class_uid, instance.transfer_syntax_uid) == (CTImageStorage, syntax)
    assert (instance.calling_ae_title, instance.peer_address, instance.peer_port) == (
        "PACS",
        "127.0.0.1",
        40000,
    )
    assert instance.received_at.tzinfo is not None
    assert dataset_bytes(instance.path) == encoded
    stored = dcmread(instance.path)
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert stored.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert stored.file_meta.SourceApplicationEntityTitle == "PACS"
    assert stored.PixelData == ds.PixelData


def test_encapsulated_pixel_data_is_not_size_checked(tmp_path: Path) -> None:
    encoded = _encapsulated_slice(_encapsulated([b"\x00" * 4]))  # far too small, but compressed
    sop_instance_uid = read_header(encoded, UID(RLELossless)).dataset.SOPInstanceUID
    path = _receive(
        encoded, _request(CTImageStorage, sop_instance_uid), RLELossless, InstanceStore(tmp_path)
    )
    assert dataset_bytes(path) == encoded


@pytest.mark.parametrize(
    ("request_class", "request_instance", "message"),
    [
        (MRImageStorage, None, r"SOPClassUID 1.2.840.10008.5.1.4.1.1.2 differs from the request"),
        (CTImageStorage, "1.2.3.4", r"SOPInstanceUID .* differs from the request's Affected"),
    ],
)
def test_data_set_contradicting_the_request_is_refused(
    tmp_path: Path, request_class: str, request_instance: str | None, message: str
) -> None:
    ds = ct_slice()
    request = _request(request_class, request_instance or ds.SOPInstanceUID)
    with pytest.raises(DataSetMismatchError, match=message):
        _receive(
            encode_dataset(ds, ExplicitVRLittleEndian),
            request,
            ExplicitVRLittleEndian,
            InstanceStore(tmp_path),
        )
    assert not (tmp_path / "incoming").exists()


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("SOPInstanceUID", None, r"SOPInstanceUID is missing"),
        ("SOPClassUID", None, r"SOPClassUID is missing"),
        ("StudyInstanceUID", None, r"StudyInstanceUID is missing"),
        ("SeriesInstanceUID", "", r"SeriesInstanceUID is missing"),
        ("StudyInstanceUID", "../../etc", r"StudyInstanceUID '../../etc' is not a valid UID"),
    ],
)
def test_missing_or_unsafe_uids_are_refused(
    tmp_path: Path, keyword: str, value: str | None, message: str
) -> None:
    ds = ct_slice()
    request = _request(CTImageStorage, ds.SOPInstanceUID)
    if value is None:
        delattr(ds, keyword)
    else:
        ds[keyword].value = value
    with pytest.raises(DataSetMismatchError, match=message):
        _receive(
            encode_dataset(ds, ExplicitVRLittleEndian),
            request,
            ExplicitVRLittleEndian,
            InstanceStore(tmp_path),
        )
    assert not (tmp_path / "incoming").exists()


def test_write_failure_is_out_of_resources(tmp_path: Path) -> None:
    (tmp_path / "incoming").write_text("a file where the spool directory belongs")
    ds = ct_slice()
    with pytest.raises(OutOfResourcesError):
        _receive(
            encode_dataset(ds, ExplicitVRLittleEndian),
            _request(CTImageStorage, ds.SOPInstanceUID),
            ExplicitVRLittleEndian,
            InstanceStore(tmp_path),
        )
