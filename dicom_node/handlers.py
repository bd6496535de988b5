"""pynetdicom event handlers of the receiving side for DIMSE messages: C-ECHO and C-STORE.

The checks of the received bytes live in :mod:`dicom_node.validation`, the association-level
handlers (host check, per-association counts) in :mod:`dicom_node.associations`. Handlers take
their dependencies as arguments (bound in :mod:`dicom_node.app`), so tests call them with real
objects and no global state. The C-STORE handler is the hot path: it reads the
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

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, cast

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID

from dicom_node.associations import ReceiveMonitor
from dicom_node.audit import AuditEvent, AuditLog
from dicom_node.config import LimitsSection
from dicom_node.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_node.stack import slice_header
from dicom_node.status import (
    DicomNodeError,
    LimitExceededError,
    StoreStatus,
    error_comment_text,
)
from dicom_node.storage import InstanceStore, StoredInstance
from dicom_node.validation import (
    DEFAULT_LIMITS,
    check_image_limits,
    check_matches_request,
    check_native_pixel_data,
    read_header,
    required_uid,
)

if TYPE_CHECKING:
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.events import Event

    from dicom_node.free_space import FreeSpaceGuard

logger = logging.getLogger(__name__)


def build_file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, calling_ae_title: str
) -> FileMetaDataset:
    """File Meta Information for a received instance (PS3.10 7.1).

    Source Application Entity Title records who sent it (PS3.10 7.1: the AE that wrote or
    sent the file's content), so the spool alone tells where results go back after a restart.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
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
    sop_class_uid = required_uid(dataset, "SOPClassUID")
    sop_instance_uid = required_uid(dataset, "SOPInstanceUID")
    check_matches_request(
        sop_class_uid, "SOPClassUID", str(request.AffectedSOPClassUID), "AffectedSOPClassUID"
    )
    check_matches_request(
        sop_instance_uid,
        "SOPInstanceUID",
        str(request.AffectedSOPInstanceUID),
        "AffectedSOPInstanceUID",
    )
    study_instance_uid = required_uid(dataset, "StudyInstanceUID")
    series_instance_uid = required_uid(dataset, "SeriesInstanceUID")
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
        slice_header=slice_header(dataset),
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
    space: FreeSpaceGuard | None = None,
    audit: AuditLog | None = None,
) -> int | Dataset:
    """``evt.EVT_C_STORE`` handler: store the instance durably, then report it.

    Success is returned only after the file is fsync'ed and renamed into place. ``on_stored`` is
    called after that; if it fails the instance is still stored (and success still returned):
    the spool is the source of truth and the startup scan finds the file again. One check
    follows ``on_stored``: the file must still be in place. Retention moves a series' folder
    away before it looks for new jobs of that series (:mod:`dicom_node.retention`), so an
    instance written into a folder retention took meanwhile is refused (0xA700, the peer sends
    it again) instead of acknowledged and lost.

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
    space:
        The free-space watermark (``storage.min_free_bytes``); ``None`` checks none.
    audit:
        Where instance_stored / instance_refused are recorded; ``None`` records nothing.

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
        if space is not None:
            space.check_store(n_bytes)
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
        refusal = str(exc)
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
    except Exception as exc:
        status = StoreStatus.ERROR_PROCESSING_FAILURE
        response = _status_dataset(status, "internal error, see the receiver's log")
        refusal = f"internal error: {type(exc).__name__}: {exc}"
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
        refusal = ""
        try:
            on_stored(instance)
        except Exception:
            logger.exception(
                "on_stored failed for SOP Instance %s; the file is stored at %s and the "
                "startup scan will pick it up",
                instance.sop_instance_uid,
                instance.path,
            )
        if not instance.path.exists():
            status = StoreStatus.REFUSED_OUT_OF_RESOURCES
            refusal = (
                f"{instance.path} was removed while it was stored (retention took its series "
                "folder); the peer must send it again"
            )
            response = _status_dataset(status, "series was being cleaned up, send again")
            logger.warning("refused SOP Instance %s: %s", instance.sop_instance_uid, refusal)
    if audit is not None:
        _audit_store(audit, event, status, refusal, instance if status == 0 else None)
    if monitor is not None:
        monitor.instance_answered(event.assoc, status, n_bytes, time.perf_counter() - started)
    return response


def _audit_store(
    audit: AuditLog,
    event: Event,
    status: StoreStatus,
    reason: str,
    instance: StoredInstance | None,
) -> None:
    requestor = event.assoc.requestor
    request = cast("C_STORE", event.request)
    audit.record(
        AuditEvent.INSTANCE_STORED if instance is not None else AuditEvent.INSTANCE_REFUSED,
        calling_ae=requestor.ae_title.strip(),
        called_ae=event.assoc.acceptor.ae_title.strip(),
        peer_address=f"{requestor.address}:{requestor.port}",
        study_instance_uid=instance.study_instance_uid if instance is not None else None,
        series_instance_uid=instance.series_instance_uid if instance is not None else None,
        sop_instance_uid=(
            instance.sop_instance_uid
            if instance is not None
            else str(request.AffectedSOPInstanceUID or "") or None
        ),
        status=int(status),
        reason=reason or None,
    )


def handle_echo(event: Event) -> int:
    """``evt.EVT_C_ECHO`` handler: Verification always succeeds on an accepted association."""
    requestor = event.assoc.requestor
    logger.debug("C-ECHO from %s (%s:%d)", requestor.ae_title, requestor.address, requestor.port)
    return int(StoreStatus.SUCCESS)
