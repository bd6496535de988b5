"""Series selection rules (dicom_node.selection): one clear reason per skip, header words as
evidence, the image check when headers do not decide, localizers never analysed, overrides."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicom_node.config import SelectionSection
from dicom_node.header_evidence import KernelClass
from dicom_node.selection import is_inferable_sop_class, select_series

RULES = SelectionSection()


def _headers(folder: Path) -> list[Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]


def make_header(z: float, tilt_deg: float = 0.0, **attributes: object) -> Dataset:
    """Header of one axial head CT slice (no pixel data: selection never decodes)."""
    t = math.radians(tilt_deg)
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.FrameOfReferenceUID = "1.2.3.9"
    ds.Modality = "CT"
    ds.BodyPartExamined = "HEAD"
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, math.cos(t), -math.sin(t)]
    ds.ImagePositionPatient = [-100.0, -100.0, z]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 5.0
    ds.Rows = ds.Columns = 512
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def head_series(count: int = 10, spacing: float = 5.0, **attributes: object) -> list[Dataset]:
    return [make_header(i * spacing, **attributes) for i in range(count)]  # type: ignore[arg-type]


def skipped(datasets: Sequence[Dataset], rules: SelectionSection = RULES) -> str:
    result = select_series(datasets, rules)
    assert not result.accepted, result.reason
    assert result.reason.startswith("skipped: ")
    assert "\n" not in result.reason
    return result.reason


# --- real files ---------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_tilted_head_ct_is_accepted(head_ct_dir: Path) -> None:
    result = select_series(_headers(head_ct_dir), RULES)
    assert result.accepted
    assert result.reason == (
        "accepted: head per BodyPartExamined 'HEAD'; 28 axial CT slices of 5.5 mm, "
        "slice extent 2.54-7.00 mm, tilt 18.5 degrees; soft-tissue kernel 'STD+'"
    )
    assert result.profile is not None
    assert result.profile.kernel is KernelClass.SOFT
    assert result.profile.summary() == "soft-tissue kernel, 5.5 mm"
    assert result.profile.coverage_mm == pytest.approx(149.6, abs=0.1)
    assert result.profile.original


@pytest.mark.shared_data
def test_real_abdomen_is_skipped_for_its_protocol(shared_data: Path) -> None:
    datasets = _headers(shared_data / "real" / "abdomen_ct_3slice")
    assert all("BodyPartExamined" not in ds for ds in datasets)
    assert skipped(datasets) == (
        "skipped: ProtocolName '6.9 Colonoscopy' names COLONOSCOPY, not a head "
        "(another region: abdomen)"
    )


@pytest.mark.shared_data
def test_rgb_screen_captures_are_skipped_as_not_grey_scale(shared_data: Path) -> None:
    reason = skipped(_headers(shared_data / "malformed" / "rgb_screenshot_ct"))
    assert "Secondary Capture Image Storage" in reason
    assert "PhotometricInterpretation 'YBR_FULL_422' with SamplesPerPixel 3" in reason
    assert reason.endswith("not grey-scale HU data")


@pytest.mark.shared_data
def test_enhanced_ct_is_skipped_naming_its_sop_class(shared_data: Path) -> None:
    ds = pydicom.dcmread(
        shared_data / "transfer_syntaxes" / "pydicom_data" / "eCT_Supplemental.dcm",
        stop_before_pixels=True,
    )
    reason = skipped([ds])
    assert f"SOP Class Enhanced CT Image Storage ({EnhancedCTImageStorage})" in reason
    assert "not supported for inference" in reason


@pytest.mark.shared_data
def test_head_ct_labelled_only_by_technique_is_decided_by_the_image(shared_data: Path) -> None:
    # A real head CT whose only label is SeriesDescription '5/5mm Plain' (no anatomy named).
    ds = pydicom.dcmread(
        shared_data / "transfer_syntaxes" / "pydicom_data" / "693_UNCR.dcm",
        stop_before_pixels=True,
    )
    one_slice = SelectionSection(min_slices=1)
    result = select_series([ds], one_slice)
    assert result.accepted, result.reason
    assert (
        "headers name no body region (SeriesDescription '5/5mm Plain'); image check: skull ring"
        in result.reason
    )
    assert "on 1/1 sampled slices" in result.reason
    reason = skipped([ds], SelectionSection(min_slices=1, allow_unlabelled_body_part=False))
    assert reason == (
        "skipped: headers name no body region (SeriesDescription '5/5mm Plain'), and "
        "selection.allow_unlabelled_body_part is false"
    )


# --- rules, in order ----------------------------------------------------------------------------


def test_is_inferable_sop_class() -> None:
    assert is_inferable_sop_class(CTImageStorage)
    assert is_inferable_sop_class(str(CTImageStorage))
    assert not is_inferable_sop_class(EnhancedCTImageStorage)
    assert not is_inferable_sop_class(SecondaryCaptureImageStorage)


def test_head_series_is_accepted_from_its_headers() -> None:
    result = select_series(head_series(ConvolutionKernel="H30s"), RULES)
    assert result.accepted, result.reason
    assert result.reason == (
        "accepted: head per BodyPartExamined 'HEAD'; 10 axial CT slices of 5 mm, "
        "slice extent 5.00-5.00 mm, tilt 0.0 degrees; soft-tissue kernel 'H30s'"
    )


def test_empty_series_is_skipped() -> None:
    assert skipped([]) == "skipped: the series has no instances"


def test_mr_sop_class_is_skipped() -> None:
    reason = skipped(head_series(SOPClassUID=MRImageStorage))
    assert reason == (
        f"skipped: SOP Class MR Image Storage ({MRImageStorage}) is stored but not inferred on "
        "(only CT Image Storage is)"
    )


def test_modality_is_checked_after_sop_class() -> None:
    assert skipped(head_series(Modality="PT")) == "skipped: Modality 'PT' is not one of CT"


def test_rgb_ct_image_is_skipped_as_not_grey_scale() -> None:
    reason = skipped(head_series(PhotometricInterpretation="RGB", SamplesPerPixel=3))
    assert reason == (
        "skipped: PhotometricInterpretation 'RGB' with SamplesPerPixel 3: not grey-scale HU data"
    )


def test_monochrome1_is_grey_scale() -> None:
    assert select_series(head_series(PhotometricInterpretation="MONOCHROME1"), RULES).accepted


def test_body_part_abdomen_is_skipped_even_with_a_head_study_description() -> None:
    # The series-level attribute is the more specific: a trauma study "CT HEAD + ABDOMEN"
    # holds an abdomen series.
    reason = skipped(head_series(BodyPartExamined="ABDOMEN", StudyDescription="CT HEAD + ABDOMEN"))
    assert reason == (
        "skipped: BodyPartExamined 'ABDOMEN' names ABDOMEN, not a head (another region: abdomen)"
    )


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("StudyDescription", "CT Head w/o contrast"),
        ("SeriesDescription", "Cerebral 5mm"),
        ("ProtocolName", "CCT Schädel nativ"),
        ("StudyDescription", "CTHEADWO"),
    ],
)
def test_head_keyword_in_a_description_is_accepted(keyword: str, value: str) -> None:
    series = head_series()
    for ds in series:
        del ds.BodyPartExamined
        setattr(ds, keyword, value)
    result = select_series(series, RULES)
    assert result.accepted, result.reason
    assert f"head per {keyword} {value!r}" in result.reason


def test_description_naming_another_region_is_skipped() -> None:
    series = head_series()
    for ds in series:
        del ds.BodyPartExamined
        ds.SeriesDescription = "Thorax 5mm"
        ds.StudyDescription = "CT"
    assert skipped(series) == (
        "skipped: SeriesDescription 'Thorax 5mm' names THORAX, not a head (another region: chest)"
    )


def test_unlabelled_series_without_pixels_is_skipped_naming_what_the_image_check_missed() -> None:
    series = head_series()
    for ds in series:
        del ds.BodyPartExamined
    reason = skipped(series)
    assert reason.startswith(
        "skipped: no body part in headers; image check: cannot read a sampled slice: instance "
    )
    assert reason.endswith("no Pixel Data and no file to read it from")
    assert skipped(series, SelectionSection(allow_unlabelled_body_part=False)) == (
        "skipped: no body part in headers, and selection.allow_unlabelled_body_part is false"
    )


def test_sagittal_series_is_skipped() -> None:
    series = head_series(ImageOrientationPatient=[0.0, 1.0, 0.0, 0.0, 0.0, -1.0])
    reason = skipped(series)
    assert reason.startswith(
        "skipped: slice normal is 90.0 degrees from the patient's foot-head axis (max 35): "
        "not an axial series"
    )


def test_gantry_tilt_within_the_limit_is_accepted_beyond_it_skipped() -> None:
    assert select_series(head_series(tilt_deg=30.0), RULES).accepted
    assert "40.0 degrees" in skipped(head_series(tilt_deg=40.0))


def test_missing_orientation_is_skipped() -> None:
    series = head_series()
    del series[3].ImageOrientationPatient
    assert "ImageOrientationPatient None missing or invalid" in skipped(series)


def test_slice_count_limits() -> None:
    assert skipped(head_series(3)) == "skipped: 3 slice(s), fewer than selection.min_slices 5"
    assert skipped(head_series(12), SelectionSection(max_slices=11)) == (
        "skipped: 12 slices, more than selection.max_slices 11"
    )


def test_slice_thickness_limit() -> None:
    reason = skipped(head_series(SliceThickness=12.0, spacing=12.0))
    assert reason == ("skipped: SliceThickness 12 mm is above selection.max_slice_thickness_mm 10")


def test_inconsistent_geometry_is_skipped() -> None:
    series = head_series()
    series[4].Rows = 256
    assert skipped(series).startswith("skipped: inconsistent geometry: mixed image sizes")


def test_duplicate_positions_are_skipped() -> None:
    series = head_series()
    series[5].ImagePositionPatient = series[4].ImagePositionPatient
    assert "same position along the normal" in skipped(series)


def test_mixed_series_are_skipped() -> None:
    series = head_series()
    series[0].SeriesInstanceUID = "1.2.3.5"
    assert skipped(series).startswith("skipped: inconsistent geometry: mixed series")


def test_gap_larger_than_the_thickness_limit_is_skipped() -> None:
    series = [make_header(z) for z in (0.0, 5.0, 10.0, 25.0, 30.0)]
    assert skipped(series) == (
        "skipped: 15.00 mm between neighbouring slices is above "
        "selection.max_slice_thickness_mm 10 (missing slices?)"
    )


def test_first_failing_rule_wins() -> None:
    # Wrong modality, not a head, sagittal and too few slices: the modality is reported.
    series = head_series(
        3,
        Modality="MR",
        BodyPartExamined="KNEE",
        ImageOrientationPatient=[0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
    )
    assert skipped(series) == "skipped: Modality 'MR' is not one of CT"


@pytest.mark.parametrize(
    "keyword", ["ImageOrientationPatient", "SliceThickness", "BodyPartExamined", "ImageType"]
)
def test_an_undecodable_element_skips_the_series_with_its_tag(keyword: str) -> None:
    """pydicom raises NotImplementedError for an element with unknown VR bytes ('I '); the
    series is skipped with the element named instead of its job failing (and with it the
    study's other series, which rank this one as a competitor)."""
    series = head_series(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    tag = Tag(keyword)
    series[3][tag] = RawDataElement(tag, "I ", 2, b"1 ", 0, False, True)
    reason = skipped(series)
    assert "cannot be decoded" in reason
    assert f"({tag.group:04X},{tag.element:04X})" in reason
