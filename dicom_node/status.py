"""Named DIMSE statuses, association results and reasons, and the errors that carry them.

Every status or reason code the node sends or interprets lives here, by name: C-STORE
statuses (ours and the peers'), A-ASSOCIATE-RJ results/sources/reasons, A-ABORT
sources/reasons.

The Storage Service Class defines its statuses in PS3.4 B.2.3 (Table B.2-1); the general codes
come from PS3.7 Annex C. A code is only ever written here, by name: a handler that refuses an
instance raises a :class:`DicomNodeError` subclass, and the C-STORE handler turns it into the
response (Status plus an Error Comment the sending PACS shows its operator).

Where the standard leaves a range open (``Cxxx`` "Cannot understand") we follow pynetdicom's
conventions so that logs from both sides of an association agree: ``0xC210`` for a data set that
cannot be decoded and ``0xC211`` for an unexpected failure inside the handler.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import ClassVar, Final

from pydicom import Dataset

#: Error Comment (0000,0902) is LO: at most 64 characters (PS3.5 6.2, PS3.7 Annex C).
ERROR_COMMENT_MAX_CHARS: Final[int] = 64
_ELLIPSIS: Final[str] = "..."
# LO excludes backslash and control characters (PS3.5 6.2).
_LO_FORBIDDEN: Final[re.Pattern[str]] = re.compile(r"[\\\x00-\x1f\x7f]")


class StoreStatus(IntEnum):
    """C-STORE response statuses (PS3.4 B.2.3, PS3.7 Annex C)."""

    #: The instance is stored (for us: durable on disk).
    SUCCESS = 0x0000
    #: Warning: the SCP changed some element values (PS3.4 B.2.3).
    WARNING_COERCION_OF_DATA_ELEMENTS = 0xB000
    #: Warning: the SCP discarded some elements (PS3.4 B.2.3).
    WARNING_ELEMENTS_DISCARDED = 0xB006
    #: Warning: stored, although the data set does not match the SOP Class (PS3.4 B.2.3).
    WARNING_DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xB007
    #: Refused: the SCP could not store the instance (disk full, permissions), first of A7xx.
    REFUSED_OUT_OF_RESOURCES = 0xA700
    #: Error: the data set violates its SOP Class (missing or contradictory attributes), first of A9xx.
    ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: Error: the SCP cannot understand the data set, first of the Cxxx range.
    ERROR_CANNOT_UNDERSTAND = 0xC000
    #: Cannot understand: the data set could not be decoded (pynetdicom's convention in Cxxx).
    ERROR_CANNOT_DECODE = 0xC210
    #: Cannot understand: an unexpected failure while processing it (pynetdicom's handler-exception code).
    ERROR_PROCESSING_FAILURE = 0xC211
    #: Processing Failure (PS3.7 C.4.2), a general failure status a peer may answer.
    GENERAL_PROCESSING_FAILURE = 0x0110
    #: Resource Limitation (PS3.7 C.5.17): the SCP is temporarily short of something.
    RESOURCE_LIMITATION = 0x0213


#: Refused: Out of Resources is a range (A7xx, PS3.4 Table B.2-1), not one code.
REFUSED_OUT_OF_RESOURCES_CODES: Final[range] = range(0xA700, 0xA800)


def error_comment_text(message: str) -> str:
    """``message`` made into a valid Error Comment: LO characters only, at most 64 of them.

    Parameters
    ----------
    message:
        Any explanation; the full text still goes to our log.

    Returns
    -------
    str
        The text with backslashes and control characters replaced by spaces and, when too long,
        cut to 61 characters plus ``...``.
    """
    text = _LO_FORBIDDEN.sub(" ", message).strip()
    if len(text) > ERROR_COMMENT_MAX_CHARS:
        text = text[: ERROR_COMMENT_MAX_CHARS - len(_ELLIPSIS)].rstrip() + _ELLIPSIS
    return text


class DicomNodeError(Exception):
    """An instance the node refuses, with the status and Error Comment to send back.

    Subclasses fix the status; the message is logged in full and, shortened to 64 characters,
    becomes the Error Comment unless a separate ``error_comment`` is given.

    Parameters
    ----------
    message:
        What was wrong, naming the attribute/value and what was found.
    error_comment:
        Text for the peer if it should differ from ``message`` (cut to 64 characters either way).
    """

    status: ClassVar[StoreStatus] = StoreStatus.ERROR_PROCESSING_FAILURE

    def __init__(self, message: str, *, error_comment: str | None = None) -> None:
        super().__init__(message)
        self.error_comment: str = error_comment_text(
            message if error_comment is None else error_comment
        )

    def to_status_dataset(self) -> Dataset:
        """The C-STORE response status: Status (0000,0900) and Error Comment (0000,0902)."""
        rsp = Dataset()
        rsp.Status = int(self.status)
        rsp.ErrorComment = self.error_comment
        return rsp


class OutOfResourcesError(DicomNodeError):
    """The instance could not be written durably (disk full, permission, I/O error)."""

    status = StoreStatus.REFUSED_OUT_OF_RESOURCES


class LimitExceededError(DicomNodeError):
    """The instance is larger than a configured limit (``limits:``), found from its header or
    while inflating it, before the large part was allocated.

    Answered as Refused: Out of Resources (PS3.4 B.2.3): the node declines the work for lack
    of the resources it grants one instance, and the Error Comment names the limit.
    """

    status = StoreStatus.REFUSED_OUT_OF_RESOURCES


class DataSetMismatchError(DicomNodeError):
    """The data set decodes but contradicts its SOP Class or the C-STORE request.

    Examples: a missing SOP Instance UID, a SOP Instance UID that differs from the request's
    Affected SOP Instance UID, a UID that is not a UID, Pixel Data shorter than the image needs.
    """

    status = StoreStatus.ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS


class CannotUnderstandError(DicomNodeError):
    """The data set cannot be decoded in the negotiated transfer syntax."""

    status = StoreStatus.ERROR_CANNOT_DECODE


#: A-ASSOCIATE-AC Result value of an accepted association (PS3.8 7.1.1.7).
ASSOCIATION_ACCEPTED: Final[int] = 0


class RejectResult(IntEnum):
    """A-ASSOCIATE-RJ Result (PS3.8 7.1.1.9, Table 9-21)."""

    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class RejectSource(IntEnum):
    """A-ASSOCIATE-RJ Source (PS3.8 7.1.1.9, Table 9-21)."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


class ServiceUserRejectReason(IntEnum):
    """A-ASSOCIATE-RJ Reason/Diag. when the Source is the service user (PS3.8 Table 9-21)."""

    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    CALLING_AE_TITLE_NOT_RECOGNIZED = 3
    CALLED_AE_TITLE_NOT_RECOGNIZED = 7


class AcseProviderRejectReason(IntEnum):
    """A-ASSOCIATE-RJ Reason/Diag. when the Source is the ACSE service provider."""

    NO_REASON_GIVEN = 1
    PROTOCOL_VERSION_NOT_SUPPORTED = 2


class PresentationProviderRejectReason(IntEnum):
    """A-ASSOCIATE-RJ Reason/Diag. when the Source is the presentation service provider."""

    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2


class AbortSource(IntEnum):
    """A-ABORT Source (PS3.8 9.3.8, Table 9-26)."""

    SERVICE_USER = 0
    SERVICE_PROVIDER = 2


class AbortReason(IntEnum):
    """A-ABORT Reason/Diag. when the Source is the service provider (PS3.8 Table 9-26)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


_REASONS_BY_SOURCE: Final[dict[RejectSource, type[IntEnum]]] = {
    RejectSource.SERVICE_USER: ServiceUserRejectReason,
    RejectSource.SERVICE_PROVIDER_ACSE: AcseProviderRejectReason,
    RejectSource.SERVICE_PROVIDER_PRESENTATION: PresentationProviderRejectReason,
}


def reject_reason_name(source: int, reason: int) -> str:
    """Lower-case name of an A-ASSOCIATE-RJ reason, e.g. ``calling_ae_title_not_recognized``.

    Codes outside PS3.8 Table 9-21 come back as ``source<s>_reason<r>`` so that a peer's odd
    value still shows up in logs and metrics instead of raising.
    """
    try:
        return _REASONS_BY_SOURCE[RejectSource(source)](reason).name.lower()
    except (KeyError, ValueError):
        return f"source{source}_reason{reason}"
