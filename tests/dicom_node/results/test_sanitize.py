"""Source-header preparation: empty Type 2 values on copies, never invented data."""

from __future__ import annotations

import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from dicom_node.results.sanitize import (
    TYPE2_PATIENT_STUDY_KEYWORDS,
    header_copy,
    prepare_source_headers,
)


def _dataset(**attributes: object) -> Dataset:
    dataset = Dataset()
    dataset.SOPInstanceUID = "2.25.10"
    dataset.SeriesInstanceUID = "2.25.11"
    dataset.PixelData = b"\x00\x01" * 8
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    return dataset


def test_missing_type2_attributes_are_added_empty_on_copies_only() -> None:
    original = _dataset(PatientName="Doe^Jane", PatientID="ID-1")

    (header,) = prepare_source_headers([original])

    for keyword in TYPE2_PATIENT_STUDY_KEYWORDS:
        assert keyword in header
    assert header.PatientName == "Doe^Jane" and header.PatientID == "ID-1"
    assert header.PatientBirthDate in (None, "") and header.PatientSex in (None, "")
    assert "PatientBirthDate" not in original and "PatientSex" not in original
    assert "PixelData" not in header and "PixelData" in original


def test_present_values_are_kept_and_invalid_sex_is_emptied() -> None:
    valid, invalid = _dataset(PatientSex="F", PatientBirthDate="19700101"), _dataset(PatientSex="X")

    kept, emptied = prepare_source_headers([valid, invalid])

    assert (kept.PatientSex, kept.PatientBirthDate) == ("F", "19700101")
    assert emptied.PatientSex in (None, "")
    assert invalid.PatientSex == "X"


def test_real_source_header_gains_exactly_the_missing_attributes(head_ct_dir) -> None:
    original = pydicom.dcmread(sorted(head_ct_dir.glob("*.dcm"))[0])

    (header,) = prepare_source_headers([original])

    added = {element.keyword for element in header} - {element.keyword for element in original}
    assert added == {"PatientBirthDate", "PatientSex"}
    assert header.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID


def _undecoded(dataset: Dataset) -> set[int]:
    return {
        int(tag)
        for tag in sorted(dataset.keys())
        if isinstance(dataset.get_item(tag), RawDataElement)
    }


def test_real_header_copies_equal_the_source_without_decoding_it(head_ct_dir) -> None:
    """Undecoded elements are copied as read: the copy equals the source element for element
    (pixel data aside) and the source stays undecoded."""
    original = pydicom.dcmread(sorted(head_ct_dir.glob("*.dcm"))[0])
    raw_before = _undecoded(original)

    copy = header_copy(original)

    assert raw_before, "a freshly read file keeps most elements undecoded"
    assert _undecoded(original) == raw_before
    pixel_data = Tag("PixelData")
    assert sorted(copy.keys()) == [tag for tag in sorted(original.keys()) if tag != pixel_data]
    for tag in sorted(copy.keys()):
        assert copy[tag] == original[tag]


def test_no_source_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one source dataset"):
        prepare_source_headers([])
