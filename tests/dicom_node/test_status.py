"""Status codes match the standard's tables; errors carry a valid Error Comment."""

from __future__ import annotations

import pytest
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

from dicom_node.status import (
    ERROR_COMMENT_MAX_CHARS,
    CannotUnderstandError,
    DataSetMismatchError,
    DicomNodeError,
    OutOfResourcesError,
    StoreStatus,
    reject_reason_name,
)


@pytest.mark.parametrize(
    ("status", "category", "meaning"),
    [
        (StoreStatus.SUCCESS, "Success", ""),
        (StoreStatus.REFUSED_OUT_OF_RESOURCES, "Failure", "Refused: Out of Resources"),
        (
            StoreStatus.ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            "Failure",
            "Data Set Does Not Match SOP Class",
        ),
        (StoreStatus.ERROR_CANNOT_UNDERSTAND, "Failure", "Cannot Understand"),
        (StoreStatus.ERROR_CANNOT_DECODE, "Failure", "Cannot Understand"),
        (StoreStatus.ERROR_PROCESSING_FAILURE, "Failure", "Cannot Understand"),
        (StoreStatus.GENERAL_PROCESSING_FAILURE, "Failure", "Processing Failure"),
        (StoreStatus.RESOURCE_LIMITATION, "Failure", "Resource Limitation"),
        (StoreStatus.WARNING_COERCION_OF_DATA_ELEMENTS, "Warning", "Coercion of Data Elements"),
        (StoreStatus.WARNING_ELEMENTS_DISCARDED, "Warning", "Element Discarded"),
        (
            StoreStatus.WARNING_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            "Warning",
            "Data Set Does Not Match SOP Class",
        ),
    ],
)
def test_store_status_agrees_with_the_storage_service_class_table(
    status: StoreStatus, category: str, meaning: str
) -> None:
    # pynetdicom's table transcribes PS3.4 B.2.3; a wrong code here would mislead every PACS.
    assert code_to_category(status) == category
    assert STORAGE_SERVICE_CLASS_STATUS[status][1] == meaning


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (OutOfResourcesError, StoreStatus.REFUSED_OUT_OF_RESOURCES),
        (DataSetMismatchError, StoreStatus.ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS),
        (CannotUnderstandError, StoreStatus.ERROR_CANNOT_DECODE),
        (DicomNodeError, StoreStatus.ERROR_PROCESSING_FAILURE),
    ],
)
def test_each_error_answers_with_its_status_and_comment(
    error: type[DicomNodeError], status: StoreStatus
) -> None:
    rsp = error("SOPInstanceUID is missing").to_status_dataset()
    assert rsp.Status == status
    assert rsp.ErrorComment == "SOPInstanceUID is missing"


def test_error_comment_is_cut_to_64_characters_and_made_lo_safe() -> None:
    message = "Pixel Data has 8130 bytes\\but\nRows 64 x Columns 64 x BitsAllocated 16 needs 8192"
    exc = DataSetMismatchError(message)
    assert str(exc) == message  # the log keeps everything
    assert len(exc.error_comment) == ERROR_COMMENT_MAX_CHARS
    assert exc.error_comment.endswith("...")
    assert "\\" not in exc.error_comment and "\n" not in exc.error_comment


def test_separate_error_comment_overrides_the_message() -> None:
    exc = OutOfResourcesError("cannot write /var/x.dcm: No space left", error_comment="disk full")
    assert exc.error_comment == "disk full"
    assert "/var/x.dcm" in str(exc)


@pytest.mark.parametrize(
    ("source", "reason", "name"),
    [
        (1, 3, "calling_ae_title_not_recognized"),
        (1, 7, "called_ae_title_not_recognized"),
        (2, 2, "protocol_version_not_supported"),
        (3, 2, "local_limit_exceeded"),
        (1, 5, "source1_reason5"),  # reserved code: still reported, never raises
        (9, 1, "source9_reason1"),
    ],
)
def test_reject_reason_names(source: int, reason: int, name: str) -> None:
    assert reject_reason_name(source, reason) == name
