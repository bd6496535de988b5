"""pynetdicom event handlers of the receiving side: C-ECHO, C-STORE and association bookkeeping.

Handlers take their dependencies as arguments (bound in :mod:`dicom_node.app`), so tests call
them with real objects and no global state. The C-STORE handler is the hot path: it reads the
data set header only (never the pixels), writes the bytes exactly as received and returns as
soon as the file is durable; everything slow happens later, on other threads.

Which C-STORE gets which status (PS3.4 B.2.3):

* ``0xA900`` Data Set does not match SOP Class: the data set decodes but contradicts its IOD or
  the request. SOP Class/Instance UID missing or different from the request's Affected SOP
  Class/Instance UID; a Study/Series Instance UID missing (Type 1 in the General Study/Series
  modules of every composite IOD, and our spool path); a UID that is not a UID; native Pixel
  Data of undefined length, or a complete Pixel Data element shorter than Rows x Columns x
  Samples per Pixel x Bits Allocated x Number of Frames (PS3.3 C.7.6.3, PS3.5 8.1.1: the
  element parses, its content cannot be the image the header describes).
* ``0xC210`` Cannot understand: the bytes cannot be parsed in the negotiated transfer syntax,
  including a stream that ends inside an element (Pixel Data whose Value Length runs past the
  end, encapsulated Pixel Data without its Sequence Delimitation Item): the encoding itself is
  broken, so this is not a statement about the IOD.
* ``0xA700`` Refused: Out of Resources: the file could not be made durable, or the instance
  exceeds a configured limit (``limits:``), found before the large part is allocated: a data
  set longer than ``max_instance_bytes`` as received, a Deflate data set that inflates beyond
  it (inflation stops at the limit), a frame of more than ``max_frame_pixels`` Rows x Columns
  or pixel data that would decompress to more than ``max_instance_bytes`` (both from the
  header). The Error Comment names the limit.
* ``0xC211`` an unexpected exception (logged with its traceback).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from io import BytesIO
from typing import TYPE_CHECKING, Any, Final, cast

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from dicom_node import __version__
from dicom_node.config import LimitsSection, Peer
from dicom_node.metrics import NodeMetrics
from dicom_node.status import (
    CannotUnderstandError,
    DataSetMismatchError,
    DicomNodeError,
    LimitExceededError,
    RejectResult,
    RejectSource,
    ServiceUserRejectReason,
    StoreStatus,
    error_comment_text,
    reject_reason_name,
)
from dicom_node.storage import InstanceStore, StoredInstance, check_uid

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.events import Event
    from pynetdicom.pdu_primitives import A_ASSOCIATE

logger = logging.getLogger(__name__)

#: Our Implementation Class UID (PS3.7 D.3.3.2), in File Meta and association negotiation.
#: A UUID-derived UID (PS3.5 B.2), fixed once for this implementation.
IMPLEMENTATION_CLASS_UID: Final[str] = "2.25.29882931960475163817570692207701671063"
#: Implementation Version Name (SH, at most 16 characters).
IMPLEMENTATION_VERSION_NAME: Final[str] = f"ICHNET_{__version__}"[:16]

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


def _required_uid(dataset: Dataset, keyword: str) -> str:
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


def _check_matches_request(value: str, keyword: str, requested: str, request_keyword: str) -> None:
    if value != requested:
        raise DataSetMismatchError(
            f"{keyword} {value} differs from the request's {request_keyword} {requested}",
            error_comment=f"{keyword} differs from {request_keyword}",
        )


def build_file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, calling_ae_title: str
) -> FileMetaDataset:
    """File Meta Information for a received instance (PS3.10 7.1).

    Source Application Entity Title records who sent it (PS3.10 7.1: the AE that wrote or
    sent the file's content), so the spool alone tells where results go back after a restart.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    meta.SourceApplicationEntityTitle = calling_ae_title
    return meta


def receive_instance(
    encoded_dataset: bytes,
    request: C_STORE,
    transfer_syntax: UID,
    calling_ae_title: str,
    peer_address: str,
    peer_port: int,
    store: InstanceStore,
    limits: LimitsSection = DEFAULT_LIMITS,
) -> StoredInstance:
    """Validate one received data set and store it durably; the C-STORE handler minus pynetdicom.

    Raises
    ------
    DicomNodeError
        With the status to answer (see the module docstring for which is which).
    """
    if len(encoded_dataset) > limits.max_instance_bytes:
        raise LimitExceededError(
            f"data set of {len(encoded_dataset)} bytes is above limits.max_instance_bytes "
            f"{limits.max_instance_bytes}",
            error_comment=f"data set above max_instance_bytes {limits.max_instance_bytes}",
        )
    header = read_header(
        encoded_dataset, transfer_syntax, max_inflated_bytes=limits.max_instance_bytes
    )
    dataset = header.dataset
    if header.pixel_data is not None:
        check_image_limits(dataset, limits)
    sop_class_uid = _required_uid(dataset, "SOPClassUID")
    sop_instance_uid = _required_uid(dataset, "SOPInstanceUID")
    _check_matches_request(
        sop_class_uid, "SOPClassUID", str(request.AffectedSOPClassUID), "AffectedSOPClassUID"
    )
    _check_matches_request(
        sop_instance_uid,
        "SOPInstanceUID",
        str(request.AffectedSOPInstanceUID),
        "AffectedSOPInstanceUID",
    )
    study_instance_uid = _required_uid(dataset, "StudyInstanceUID")
    series_instance_uid = _required_uid(dataset, "SeriesInstanceUID")
    if header.pixel_data is not None and not transfer_syntax.is_encapsulated:
        check_native_pixel_data(dataset, header.pixel_data)
    file_meta = build_file_meta(sop_class_uid, sop_instance_uid, transfer_syntax, calling_ae_title)
    path = store.store(encoded_dataset, file_meta, study_instance_uid, series_instance_uid)
    return StoredInstance(
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=sop_class_uid,
        path=path,
        calling_ae_title=calling_ae_title,
        peer_address=peer_address,
        peer_port=peer_port,
        transfer_syntax_uid=str(transfer_syntax),
        received_at=datetime.now(timezone.utc),
    )


def _status_dataset(status: StoreStatus, comment: str) -> Dataset:
    rsp = Dataset()
    rsp.Status = int(status)
    rsp.ErrorComment = error_comment_text(comment)
    return rsp


def handle_store(
    event: Event,
    store: InstanceStore,
    on_stored: Callable[[StoredInstance], None],
    monitor: ReceiveMonitor | None = None,
    limits: LimitsSection = DEFAULT_LIMITS,
) -> int | Dataset:
    """``evt.EVT_C_STORE`` handler: store the instance durably, then report it.

    Success is returned only after the file is fsync'ed and renamed into place. ``on_stored`` is
    called after that; if it fails the instance is still stored (and success still returned):
    the spool is the source of truth and the startup scan finds the file again.

    Parameters
    ----------
    event:
        The C-STORE event (request, presentation context, association).
    store:
        The spool.
    on_stored:
        Called with each durable instance (e.g. the series tracker and job queue feed).
    monitor:
        Per-association counts and metrics; ``None`` records nothing.
    limits:
        ``limits:`` of the config (instance size after inflation, frame size).

    Returns
    -------
    int | Dataset
        ``StoreStatus.SUCCESS``, or a status Dataset with Status and Error Comment.
    """
    started = time.perf_counter()
    request = cast("C_STORE", event.request)
    requestor = event.assoc.requestor
    n_bytes = 0
    response: int | Dataset
    try:
        encoded_dataset = event.encoded_dataset(include_meta=False)
        n_bytes = len(encoded_dataset)
        instance = receive_instance(
            encoded_dataset,
            request,
            UID(event.context.transfer_syntax),
            requestor.ae_title,
            requestor.address,
            requestor.port,
            store,
            limits,
        )
    except DicomNodeError as exc:
        status = exc.status
        response = exc.to_status_dataset()
        logger.warning(
            "refused SOP Instance %s from %s (%s:%d): %s [status 0x%04X %s]",
            request.AffectedSOPInstanceUID,
            requestor.ae_title,
            requestor.address,
            requestor.port,
            exc,
            status,
            status.name,
        )
    except Exception:
        status = StoreStatus.ERROR_PROCESSING_FAILURE
        response = _status_dataset(status, "internal error, see the receiver's log")
        logger.exception(
            "failed to process SOP Instance %s from %s (%s:%d)",
            request.AffectedSOPInstanceUID,
            requestor.ae_title,
            requestor.address,
            requestor.port,
        )
    else:
        status = StoreStatus.SUCCESS
        response = int(status)
        logger.debug(
            "stored SOP Instance %s of series %s from %s (%s) at %s",
            instance.sop_instance_uid,
            instance.series_instance_uid,
            instance.calling_ae_title,
            UID(instance.transfer_syntax_uid).name,
            instance.path,
        )
        try:
            on_stored(instance)
        except Exception:
            logger.exception(
                "on_stored failed for SOP Instance %s; the file is stored at %s and the "
                "startup scan will pick it up",
                instance.sop_instance_uid,
                instance.path,
            )
    if monitor is not None:
        monitor.instance_answered(event.assoc, status, n_bytes, time.perf_counter() - started)
    return response


def handle_echo(event: Event) -> int:
    """``evt.EVT_C_ECHO`` handler: Verification always succeeds on an accepted association."""
    requestor = event.assoc.requestor
    logger.debug("C-ECHO from %s (%s:%d)", requestor.ae_title, requestor.address, requestor.port)
    return int(StoreStatus.SUCCESS)


@dataclass
class _AssociationCounts:
    calling_ae_title: str
    address: str
    port: int
    started: float
    stored: int = 0
    refused: int = 0
    bytes_stored: int = 0


class ReceiveMonitor:
    """Per-association counts for one INFO summary line each, plus the Prometheus metrics.

    Individual instances are logged at DEBUG only: at hundreds of slices per study an INFO line
    each would drown the log and cost time on the hot path.

    Parameters
    ----------
    metrics:
        Where to count; ``None`` keeps the log summaries only.
    clock:
        Monotonic seconds, for association durations.
    """

    def __init__(
        self, metrics: NodeMetrics | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[Association, _AssociationCounts] = {}

    def on_accepted(self, event: Event) -> None:
        """``evt.EVT_ACCEPTED``: start counting for this association."""
        requestor = event.assoc.requestor
        with self._lock:
            self._counts[event.assoc] = _AssociationCounts(
                requestor.ae_title, requestor.address, requestor.port, self._clock()
            )
        if self._metrics is not None:
            self._metrics.associations_accepted.inc()
        logger.debug(
            "accepted association from %s (%s:%d)",
            requestor.ae_title,
            requestor.address,
            requestor.port,
        )

    def on_rejected(self, event: Event) -> None:
        """``evt.EVT_REJECTED``: log who was refused and why (the A-ASSOCIATE-RJ we sent)."""
        requestor = event.assoc.requestor
        request = cast("A_ASSOCIATE", requestor.primitive)
        reject = cast("A_ASSOCIATE", event.assoc.acceptor.primitive)
        source = int(reject.result_source or 0)
        diagnostic = int(reject.diagnostic or 0)
        reason = reject_reason_name(source, diagnostic)
        try:
            result = RejectResult(reject.result).name.lower()
        except ValueError:
            result = f"result{reject.result}"
        if self._metrics is not None:
            self._metrics.associations_rejected.labels(reason=reason).inc()
        logger.warning(
            "rejected association from calling AE %r to called AE %r at %s:%d: %s, %s "
            "(result %s, source %d, reason %d)",
            request.calling_ae_title,
            request.called_ae_title,
            requestor.address,
            requestor.port,
            result,
            reason,
            reject.result,
            source,
            diagnostic,
        )

    def on_ended(self, event: Event) -> None:
        """``evt.EVT_RELEASED`` / ``evt.EVT_ABORTED``: one line summing up the association."""
        with self._lock:
            counts = self._counts.pop(event.assoc, None)
        if counts is None:  # already summed up (abort after release) or never accepted
            return
        how = "released" if event.event.name == "EVT_RELEASED" else "aborted"
        # Echo-only associations (monitoring pings) stay out of the INFO log.
        level = logging.INFO if counts.stored or counts.refused else logging.DEBUG
        logger.log(
            level,
            "association from %s (%s:%d) %s after %.2f s: %d instance(s) stored "
            "(%.1f MB), %d refused",
            counts.calling_ae_title,
            counts.address,
            counts.port,
            how,
            self._clock() - counts.started,
            counts.stored,
            counts.bytes_stored / 1e6,
            counts.refused,
        )

    def instance_answered(
        self, assoc: Association, status: StoreStatus, n_bytes: int, duration_s: float
    ) -> None:
        """Count one answered C-STORE (called by :func:`handle_store`)."""
        with self._lock:
            counts = self._counts.get(assoc)
            if counts is not None:
                if status == StoreStatus.SUCCESS:
                    counts.stored += 1
                    counts.bytes_stored += n_bytes
                else:
                    counts.refused += 1
        if self._metrics is not None:
            self._metrics.instance_answered(status, n_bytes, duration_s)


#: Metrics label of associations refused because the calling AE title came from another host.
HOST_MISMATCH_REASON: Final[str] = "calling_ae_host_mismatch"

Resolver = Callable[[str], set[ipaddress.IPv4Address | ipaddress.IPv6Address]]


def _normalised_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address without IPv6 scope, IPv4-mapped IPv6 (``::ffff:a.b.c.d``) as IPv4."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def resolve_host(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address ``host`` (a name or an IP address) resolves to now.

    Raises
    ------
    OSError
        If the name cannot be resolved (``socket.gaierror``).
    """
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return {_normalised_address(str(info[4][0])) for info in infos}


class PeerHostCheck:
    """``evt.EVT_REQUESTED``: a configured calling AE title is accepted only from its ``host``.

    AE titles are not secrets; a peer's configured ``host`` is what ties the title to a
    machine. For a peer with ``check_host: true`` the connecting address must be one of the
    addresses its ``host`` resolves to (resolved at each association, so DNS changes apply);
    otherwise the association is rejected as pynetdicom rejects an unknown calling AE title
    (rejected-permanent, service-user, calling AE title not recognized; PS3.8 7.1.1.9), with a
    log line naming the title, the expected host and the actual address. Unknown titles are
    left to pynetdicom's own check. If the check itself fails unexpectedly it rejects: an
    error must not open the door.

    Parameters
    ----------
    peers:
        The configured peers.
    metrics:
        Counts rejections under :data:`HOST_MISMATCH_REASON`; ``None`` counts nothing.
    resolve:
        Host name -> addresses (:func:`resolve_host`; tests may pass a fixed table).
    """

    def __init__(
        self,
        peers: Sequence[Peer],
        metrics: NodeMetrics | None = None,
        resolve: Resolver = resolve_host,
    ) -> None:
        self._peers = {peer.ae_title: peer for peer in peers}
        self._metrics = metrics
        self._resolve = resolve

    def on_requested(self, event: Event) -> None:
        """Reject the association now if its calling AE title came from the wrong host."""
        assoc = event.assoc
        try:
            problem = self._problem(assoc)
        except Exception:
            logger.exception("host check failed; rejecting the association to be safe")
            problem = "the host check failed (see the traceback above)"
        if problem is None:
            return
        logger.warning("rejected association: %s", problem)
        if self._metrics is not None:
            self._metrics.associations_rejected.labels(reason=HOST_MISMATCH_REASON).inc()
        assoc.acse.send_reject(
            RejectResult.REJECTED_PERMANENT,
            RejectSource.SERVICE_USER,
            ServiceUserRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED,
        )
        assoc.kill()  # as pynetdicom does after its own rejections

    def _problem(self, assoc: Association) -> str | None:
        """Why this association must be refused, or ``None`` if the host check passes."""
        request = cast("A_ASSOCIATE", assoc.requestor.primitive)
        calling = str(request.calling_ae_title).strip()
        peer = self._peers.get(calling)
        if peer is None or not peer.check_host:
            return None
        actual = assoc.requestor.address
        try:
            expected = self._resolve(peer.host)
        except OSError as exc:
            return (
                f"calling AE {calling!r} from {actual}: its configured host {peer.host!r} "
                f"cannot be resolved ({exc})"
            )
        if _normalised_address(actual) in expected:
            return None
        shown = ", ".join(sorted(str(a) for a in expected))
        return (
            f"calling AE {calling!r} connected from {actual}, but peers lists it at host "
            f"{peer.host!r} ({shown}); set check_host: false for that peer only if it may "
            "connect from anywhere"
        )
