"""Series selection rules (dicom_node.selection): headers only, one clear reason per skip."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicom_node.config import SelectionSection
from dicom_node.selection import SelectionResult, is_inferable_sop_class, select_series

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
    assert result == SelectionResult(
        accepted=True,
        reason=(
            "accepted: 28 axial CT slices, head per BodyPartExamined 'HEAD', "
            "slice extent 2.54-7.00 mm, tilt 18.5 degrees"
        ),
    )


@pytest.mark.shared_data
def test_real_abdomen_is_skipped_for_its_protocol(shared_data: Path) -> None:
    datasets = _headers(shared_data / "real" / "abdomen_ct_3slice")
    assert all("BodyPartExamined" not in ds for ds in datasets)
    reason = skipped(datasets)
    assert reason.startswith(
        "skipped: no BodyPartExamined, and ProtocolName '6.9 Colonoscopy' names COLONOSCOPY, "
        "not a head (expected one of HEAD, BRAIN"
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
def test_head_ct_labelled_only_by_technique_counts_as_unlabelled(shared_data: Path) -> None:
    # A real head CT whose only label is SeriesDescription '5/5mm Plain' (no anatomy named).
    ds = pydicom.dcmread(
        shared_data / "transfer_syntaxes" / "pydicom_data" / "693_UNCR.dcm",
        stop_before_pixels=True,
    )
    one_slice = SelectionSection(min_slices=1)
    assert select_series([ds], one_slice).accepted
    reason = skipped([ds], SelectionSection(min_slices=1, allow_unlabelled_body_part=False))
    assert "SeriesDescription '5/5mm Plain' name no anatomy" in reason


# --- rules, in order ----------------------------------------------------------------------------


def test_is_inferable_sop_class() -> None:
    assert is_inferable_sop_class(CTImageStorage)
    assert is_inferable_sop_class(str(CTImageStorage))
    assert not is_inferable_sop_class(EnhancedCTImageStorage)
    assert not is_inferable_sop_class(SecondaryCaptureImageStorage)


def test_synthetic_head_series_is_accepted() -> None:
    result = select_series(head_series(), RULES)
    assert result.accepted, result.reason
    assert result.reason == (
        "accepted: 10 axial CT slices, head per BodyPartExamined 'HEAD', "
        "slice extent 5.00-5.00 mm, tilt 0.0 degrees"
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


def test_body_part_abdomen_is_skipped_even_with_a_head_description() -> None:
    reason = skipped(head_series(BodyPartExamined="ABDOMEN", StudyDescription="CT HEAD + ABDOMEN"))
    assert reason.startswith("skipped: BodyPartExamined 'ABDOMEN' is not a head (expected one of")


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
    reason = skipped(series)
    assert reason.startswith(
        "skipped: no BodyPartExamined, and SeriesDescription 'Thorax 5mm' names THORAX, not a head"
    )


def test_unlabelled_series_follows_allow_unlabelled_body_part() -> None:
    series = head_series()
    for ds in series:
        del ds.BodyPartExamined
    accepted = select_series(series, RULES)
    assert accepted.accepted
    assert "no body part named (selection.allow_unlabelled_body_part)" in accepted.reason
    reason = skipped(series, SelectionSection(allow_unlabelled_body_part=False))
    assert reason == (
        "skipped: no body part named (BodyPartExamined empty; no descriptions) and "
        "selection.allow_unlabelled_body_part is false"
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
