"""The gap-free stack check behind the settle rule: headers of real and made-up series."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicom_node.stack import SliceHeader, slice_header, stack_problem

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _stack(z_mm: list[float], **kwargs: int | None) -> list[SliceHeader | None]:
    return [
        SliceHeader((0.0, 0.0, z), AXIAL, instance_number=index + 1, **kwargs)
        for index, z in enumerate(z_mm)
    ]


def _even(count: int, spacing: float = 5.0) -> list[float]:
    return [index * spacing for index in range(count)]


def test_an_evenly_spaced_stack_is_complete() -> None:
    assert stack_problem(_stack(_even(30))) is None


def test_a_missing_slice_in_the_middle_is_found() -> None:
    z = _even(30)
    del z[12]
    headers = [SliceHeader((0.0, 0.0, v), AXIAL) for v in z]  # no InstanceNumber to tell
    assert "a slice is missing" in (stack_problem(headers) or "")


def test_every_other_slice_is_not_complete_by_its_instance_numbers() -> None:
    headers = _stack(_even(30))[::2]
    assert "InstanceNumbers 1..29 but 15 instances" in (stack_problem(headers) or "")


def test_uneven_spacing_is_not_vouched_for() -> None:
    assert "uneven" in (stack_problem(_stack([0, 5, 10, 13, 20, 25, 31])) or "")


def test_images_in_acquisition_must_match_the_count() -> None:
    assert stack_problem(_stack(_even(20), images_in_acquisition=20)) is None
    problem = stack_problem(_stack(_even(20), images_in_acquisition=40))
    assert problem == "ImagesInAcquisition says 40 for acquisition None, 20 received"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (_stack([0.0, 5.0]), "fewer than 3"),
        ([*_stack(_even(5))[:4], None], "without position/orientation"),
        (_stack([0.0, 5.0, 5.0, 10.0]), "same position"),
        (
            [*_stack(_even(4)), SliceHeader((0.0, 0.0, 20.0), (1.0, 0, 0, 0, 0, -1.0))],
            "different orientations",
        ),
    ],
)
def test_what_is_not_one_stack(headers: list[SliceHeader | None], expected: str) -> None:
    assert expected in (stack_problem(headers) or "")


def test_slice_header_of_a_header_without_geometry_is_none() -> None:
    dataset = Dataset()
    dataset.ImagePositionPatient = [0, 0, 0]
    assert slice_header(dataset) is None
    dataset.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]  # rows parallel to columns
    assert slice_header(dataset) is None


@pytest.mark.parametrize("keyword", ["InstanceNumber", "ImagePositionPatient"])
def test_a_damaged_element_is_read_as_absent_not_raised(keyword: str) -> None:
    """An element whose VR bytes are garbage (``'I '``) makes pydicom raise NotImplementedError;
    the header is then unusable there, not a processing failure of the C-STORE."""
    dataset = Dataset()
    dataset.ImagePositionPatient = [0, 0, 0]
    dataset.ImageOrientationPatient = list(AXIAL)
    dataset.InstanceNumber = 7
    tag = Tag(keyword)
    dataset[tag] = RawDataElement(tag, "I ", 2, b"1 ", 0, False, True)
    header = slice_header(dataset)
    if keyword == "InstanceNumber":
        assert header is not None and header.instance_number is None
    else:
        assert header is None


@pytest.mark.shared_data
def test_the_real_tilted_ge_study_with_two_spacings_is_one_stack(head_ct_dir: Path) -> None:
    """4 mm posterior fossa, one 1.1 mm overlap, 7 mm cerebrum, gantry tilt: complete; without
    one slice of either part it is not."""
    headers = [
        slice_header(pydicom.dcmread(path, stop_before_pixels=True))
        for path in sorted(head_ct_dir.glob("*.dcm"))
    ]
    assert len(headers) == 28
    assert stack_problem(headers) is None
    for missing in (5, 20):
        assert stack_problem(headers[:missing] + headers[missing + 1 :]) is not None
