"""Wire-level validation of a received C-STORE data set: header, inflation, pixel data, limits.

Everything here looks at the bytes as the peer sent them, before anything is stored: the data
set header is decoded up to the top-level Pixel Data (never the pixels), a Deflate data set is
inflated under a cap, encapsulated Pixel Data is walked item by item, and the image size is
judged from the header against ``limits:``. Each problem is a :class:`~dicom_node.status.
DicomNodeError` carrying the status to answer; :mod:`dicom_node.handlers` decides nothing
beyond turning it into the C-STORE response.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final

from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from dicom_node.config import LimitsSection
from dicom_node.status import CannotUnderstandError, DataSetMismatchError, LimitExceededError
from dicom_node.storage import check_uid

logger = logging.getLogger(__name__)

PIXEL_DATA_TAG: Final[int] = 0x7FE00010
_UNDEFINED_LENGTH: Final[int] = 0xFFFFFFFF
# Data element header sizes (PS3.5 7.1): tag 4 + length 4, or tag 4 + VR 2 + reserved 2 + length 4.
_SHORT_HEADER_BYTES: Final[int] = 8
_LONG_HEADER_BYTES: Final[int] = 12
_BITS_PER_BYTE: Final[int] = 8
_ITEM_TAG: Final[int] = 0xFFFEE000
_SEQUENCE_DELIMITATION_TAG: Final[int] = 0xFFFEE0DD
_ITEM_HEADER: Final[struct.Struct] = struct.Struct("<HHL")
#: Output step of the first, counting pass of :func:`inflate_capped`.
INFLATE_CHUNK_BYTES: Final[int] = 1024 * 1024
#: The limits of ../shared/DESIGN.md at their defaults, for callers that pass none.
DEFAULT_LIMITS: Final[LimitsSection] = LimitsSection()


@dataclass(frozen=True)
class PixelDataElement:
    """Where the top-level Pixel Data (7FE0,0010) sits in a received data set.

    Attributes
    ----------
    length:
        The element's Value Length (``0xFFFFFFFF`` = undefined, i.e. encapsulated).
    available:
        Bytes that actually follow the element header in the stream.
    """

    length: int
    available: int


@dataclass(frozen=True)
class ReceivedHeader:
    """The decoded header of a received data set (everything before the top-level Pixel Data)."""

    dataset: Dataset
    pixel_data: PixelDataElement | None


def inflate_capped(deflated: bytes, max_bytes: int) -> bytes:
    """Inflate a Deflate data set (PS3.5 A.5: raw deflate, no zlib header), at most ``max_bytes``.

    A first pass inflates in :data:`INFLATE_CHUNK_BYTES` pieces and keeps only their count, and
    stops as soon as the total passes ``max_bytes``: a few hundred kB that inflate to gigabytes
    (a "deflate bomb") cost one chunk of memory and the time to inflate ``max_bytes``. Only a
    data set within the limit is then inflated for real, into a buffer of its exact size.

    Raises
    ------
    LimitExceededError
        The data set inflates to more than ``max_bytes``.
    CannotUnderstandError
        The stream is not valid deflate data, or it ends before the deflate stream does.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    pending = deflated
    try:
        while pending and not inflater.eof:
            total += len(inflater.decompress(pending, INFLATE_CHUNK_BYTES))
            pending = inflater.unconsumed_tail
            if total > max_bytes:
                raise LimitExceededError(
                    f"deflated data set of {len(deflated)} bytes inflates to more than "
                    f"limits.max_instance_bytes {max_bytes}; inflation stopped there",
                    error_comment=f"inflates beyond max_instance_bytes {max_bytes}",
                )
        if not inflater.eof:
            raise CannotUnderstandError(
                f"data set cannot be inflated: the deflate stream ends early after {total} "
                "inflated bytes",
                error_comment="deflated data set cannot be inflated",
            )
        return zlib.decompress(deflated, -zlib.MAX_WBITS, max(total, 1))
    except zlib.error as exc:
        raise CannotUnderstandError(
            f"data set cannot be inflated ({exc})",
            error_comment="deflated data set cannot be inflated",
        ) from exc


def read_header(
    encoded_dataset: bytes,
    transfer_syntax: UID,
    *,
    max_inflated_bytes: int = DEFAULT_LIMITS.max_instance_bytes,
) -> ReceivedHeader:
    """Decode a received data set up to its top-level Pixel Data, without touching the pixels.

    Parameters
    ----------
    encoded_dataset:
        The C-STORE Data Set as received.
    transfer_syntax:
        The presentation context's transfer syntax.
    max_inflated_bytes:
        Largest inflated size of a Deflate data set (``limits.max_instance_bytes``).

    Returns
    -------
    ReceivedHeader
        The header elements (decoded lazily by pydicom) and the Pixel Data element's length.

    Raises
    ------
    CannotUnderstandError
        If the stream cannot be inflated or parsed in ``transfer_syntax``, or it ends inside
        an element (the last one before Pixel Data, or encapsulated Pixel Data).
    LimitExceededError
        If a Deflate data set inflates to more than ``max_inflated_bytes``.
    """
    stream = encoded_dataset
    if transfer_syntax.is_deflated:
        stream = inflate_capped(encoded_dataset, max_inflated_bytes)
    fp = BytesIO(stream)
    found: list[tuple[str | None, int]] = []
    # (tag, Value Length, offset of the value) of the latest top-level element seen
    latest: list[tuple[int, int, int]] = []

    def at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag == PIXEL_DATA_TAG:
            found.append((vr, length))
            return True
        latest[:] = [(tag, length, fp.tell())]
        return False

    try:
        dataset = read_dataset(
            fp,
            transfer_syntax.is_implicit_VR,
            transfer_syntax.is_little_endian,
            stop_when=at_pixel_data,
        )
    except Exception as exc:  # pydicom raises many types for broken streams
        raise CannotUnderstandError(
            f"data set cannot be decoded as {transfer_syntax.name}: {exc}",
            error_comment=f"cannot decode data set as {transfer_syntax.name}",
        ) from exc
    if not found:
        # pydicom keeps a short last value without complaint; only the last can be cut short.
        if latest:
            tag, length, offset = latest[0]
            if length != _UNDEFINED_LENGTH and offset + length > len(stream):
                raise CannotUnderstandError(
                    f"data set ends inside ({tag >> 16:04X},{tag & 0xFFFF:04X}): "
                    f"{len(stream) - offset} of {length} bytes present",
                    error_comment=f"data set ends inside ({tag >> 16:04X},{tag & 0xFFFF:04X})",
                )
        return ReceivedHeader(dataset=dataset, pixel_data=None)
    vr, length = found[0]
    header_bytes = (
        _LONG_HEADER_BYTES
        if not transfer_syntax.is_implicit_VR and vr in EXPLICIT_VR_LENGTH_32
        else _SHORT_HEADER_BYTES
    )
    value_offset = fp.tell() + header_bytes
    if length == _UNDEFINED_LENGTH:
        _check_fragment_items(stream, value_offset)
    return ReceivedHeader(
        dataset=dataset,
        pixel_data=PixelDataElement(length=length, available=len(stream) - value_offset),
    )


def _check_fragment_items(stream: bytes, offset: int) -> None:
    """Walk the Items of encapsulated Pixel Data (PS3.5 A.4) without reading their contents.

    The item headers carry the lengths, so this is a handful of unpacks per frame; it catches
    a stream that ends inside the pixel data, which would otherwise only fail at decode time.
    Encapsulated transfer syntaxes are always little endian (PS3.5 A.4).
    """
    position = offset
    while position + _SHORT_HEADER_BYTES <= len(stream):
        group, element, length = _ITEM_HEADER.unpack_from(stream, position)
        position += _SHORT_HEADER_BYTES
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITATION_TAG:
            return
        if tag != _ITEM_TAG or length == _UNDEFINED_LENGTH:
            raise CannotUnderstandError(
                f"encapsulated Pixel Data holds ({group:04X},{element:04X}) with length "
                f"{length:#x} at byte {position - _SHORT_HEADER_BYTES} where an Item belongs",
                error_comment="encapsulated Pixel Data is malformed",
            )
        position += length
    raise CannotUnderstandError(
        "data set ends inside encapsulated Pixel Data (no Sequence Delimitation Item)",
        error_comment="data set ends inside Pixel Data",
    )


def _get(dataset: Dataset, keyword: str) -> Any:
    # Elements are decoded on first access; a broken value surfaces here, not in read_header.
    try:
        return dataset.get(keyword)
    except Exception as exc:
        raise CannotUnderstandError(
            f"{keyword} cannot be decoded: {exc}", error_comment=f"cannot decode {keyword}"
        ) from exc


def required_uid(dataset: Dataset, keyword: str) -> str:
    value = _get(dataset, keyword)
    if value is None or value == "":
        raise DataSetMismatchError(f"{keyword} is missing", error_comment=f"{keyword} missing")
    return check_uid(value, keyword)


def _positive_int(dataset: Dataset, keyword: str, default: int | None = None) -> int:
    value = _get(dataset, keyword)
    if value is None or value == "":
        if default is not None:
            return default
        raise DataSetMismatchError(
            f"{keyword} is missing but Pixel Data is present",
            error_comment=f"{keyword} missing (Image Pixel Module)",
        )
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise DataSetMismatchError(
            f"{keyword} {str(value)[:32]!r} is not a positive integer",
            error_comment=f"{keyword} is not a positive integer",
        )
    return number


def check_native_pixel_data(dataset: Dataset, pixel_data: PixelDataElement) -> None:
    """Refuse native (uncompressed) Pixel Data that cannot hold the image it describes.

    Raises
    ------
    DataSetMismatchError
        Undefined length in a native transfer syntax, or fewer bytes than Rows x Columns x
        Samples per Pixel x Number of Frames x Bits Allocated / 8 (PS3.5 8.1.1, PS3.3 C.7.6.3).
    CannotUnderstandError
        The stream ends before the element's declared length.
    """
    if pixel_data.length == _UNDEFINED_LENGTH:
        raise DataSetMismatchError(
            "Pixel Data has undefined length (encapsulated) in a native transfer syntax",
            error_comment="Pixel Data encapsulated in native transfer syntax",
        )
    if pixel_data.available < pixel_data.length:
        raise CannotUnderstandError(
            f"data set ends inside Pixel Data: {pixel_data.available} of "
            f"{pixel_data.length} bytes present",
            error_comment="data set ends inside Pixel Data",
        )
    rows = _positive_int(dataset, "Rows")
    columns = _positive_int(dataset, "Columns")
    samples = _positive_int(dataset, "SamplesPerPixel")
    bits = _positive_int(dataset, "BitsAllocated")
    frames = _positive_int(dataset, "NumberOfFrames", default=1)
    needed = -(-rows * columns * samples * frames * bits // _BITS_PER_BYTE)  # ceiling division
    if pixel_data.length < needed:
        raise DataSetMismatchError(
            f"Pixel Data has {pixel_data.length} bytes but Rows {rows} x Columns {columns} x "
            f"SamplesPerPixel {samples} x NumberOfFrames {frames} x BitsAllocated {bits} "
            f"needs {needed}",
            error_comment=f"Pixel Data truncated: {pixel_data.length} of {needed} bytes",
        )
    if pixel_data.length > needed + 1:  # one byte of padding to even length is normal
        logger.warning(
            "Pixel Data of SOP Instance %s has %d bytes, the image needs %d: extra bytes kept",
            dataset.get("SOPInstanceUID"),
            pixel_data.length,
            needed,
        )


def _header_int(dataset: Dataset, keyword: str) -> int | None:
    """A positive integer attribute of the header, or ``None`` when absent or unusable (other
    checks report those; a limit can only be judged from a usable value)."""
    try:
        value = dataset.get(keyword)
        number = int(str(value).strip()) if value not in (None, "") else None
    except Exception:  # undecodable or not a number: not this check's business
        return None
    return number if number is not None and number >= 1 else None


def check_image_limits(dataset: Dataset, limits: LimitsSection) -> None:
    """Refuse an image too large to handle, from its header alone (the pixels stay untouched).

    Raises
    ------
    LimitExceededError
        Rows x Columns above ``limits.max_frame_pixels``, or Rows x Columns x Samples per
        Pixel x Number of Frames x Bits Allocated / 8 (the decompressed pixel data, PS3.3
        C.7.6.3) above ``limits.max_instance_bytes``.
    """
    rows = _header_int(dataset, "Rows")
    columns = _header_int(dataset, "Columns")
    if rows is None or columns is None:
        return
    if rows * columns > limits.max_frame_pixels:
        raise LimitExceededError(
            f"frame of Rows {rows} x Columns {columns} = {rows * columns} pixels is above "
            f"limits.max_frame_pixels {limits.max_frame_pixels}",
            error_comment=f"{rows}x{columns} frame above max_frame_pixels",
        )
    samples = _header_int(dataset, "SamplesPerPixel") or 1
    frames = _header_int(dataset, "NumberOfFrames") or 1
    bits = _header_int(dataset, "BitsAllocated") or _BITS_PER_BYTE
    decoded = -(-rows * columns * samples * frames * bits // _BITS_PER_BYTE)
    if decoded > limits.max_instance_bytes:
        raise LimitExceededError(
            f"pixel data of {frames} frame(s) of {rows} x {columns} x {samples} sample(s) x "
            f"{bits} bits decodes to {decoded} bytes, above limits.max_instance_bytes "
            f"{limits.max_instance_bytes}",
            error_comment=f"pixel data above max_instance_bytes {limits.max_instance_bytes}",
        )


def check_matches_request(value: str, keyword: str, requested: str, request_keyword: str) -> None:
    """Refuse a data set whose ``keyword`` differs from the C-STORE request's ``request_keyword``."""
    if value != requested:
        raise DataSetMismatchError(
            f"{keyword} {value} differs from the request's {request_keyword} {requested}",
            error_comment=f"{keyword} differs from {request_keyword}",
        )
