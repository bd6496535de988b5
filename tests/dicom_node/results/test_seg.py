"""DICOM SEG writer on the real tilted GE head CT, checked with highdicom and dciodvfy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from dicom_node.results.device import ModelIdentity
from dicom_node.results.seg import (
    BRAIN_RGB,
    BRAIN_SEGMENT_NUMBER,
    HEMORRHAGE_RGB,
    HEMORRHAGE_SEGMENT_NUMBER,
    build_seg,
    segment_masks,
)
from dicom_node.results.uids import ResultUids
from ichnet_core.imaging.volume import Volume
from ichnet_core.prediction import Prediction

if TYPE_CHECKING:
    from tests.dicom_node.results.conftest import WrittenResults

#: Tolerance for comparing decimal-string positions (mm); DS keeps 16 characters.
POSITION_TOLERANCE_MM = 1e-4
#: CIELab round trip through 16-bit DICOM values loses a little; one sRGB step is fine.
RGB_TOLERANCE = 1


def _frames(seg: pydicom.Dataset) -> list[tuple[int, str, np.ndarray]]:
    """(segment number, source SOP Instance UID, ImagePositionPatient) of every frame."""
    frames = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        derivation = item.DerivationImageSequence
        assert len(derivation) == 1 and len(derivation[0].SourceImageSequence) == 1
        source_uid = str(derivation[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        frames.append((segment, source_uid, position))
    return frames


def test_seg_is_binary_with_coded_coloured_automatic_segments(
    positive_results: WrittenResults, model: ModelIdentity
) -> None:
    seg = hd.seg.segread(positive_results.seg_path)

    assert seg.SegmentationType == "BINARY"
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert seg.get_segment_numbers() == [HEMORRHAGE_SEGMENT_NUMBER, BRAIN_SEGMENT_NUMBER]
    hemorrhage = seg.get_segment_description(HEMORRHAGE_SEGMENT_NUMBER)
    brain = seg.get_segment_description(BRAIN_SEGMENT_NUMBER)
    assert hemorrhage.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure
    assert hemorrhage.segmented_property_type == codes.SCT.Hemorrhage
    assert brain.segmented_property_category == codes.SCT.AnatomicalStructure
    assert brain.segmented_property_type == codes.SCT.Brain
    for description, rgb in ((hemorrhage, HEMORRHAGE_RGB), (brain, BRAIN_RGB)):
        assert "RecommendedDisplayCIELabValue" in description
        stored = hd.color.CIELabColor.from_dicom_value(
            tuple(description.RecommendedDisplayCIELabValue)
        )
        np.testing.assert_allclose(stored.to_rgb(), rgb, atol=RGB_TOLERANCE)
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm = description.algorithm_identification[0]
        assert algorithm.AlgorithmName == model.name
        assert algorithm.AlgorithmVersion == model.version
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == (
            codes.DCM.ArtificialIntelligence.value
        )
        assert model.weights_sha256 in algorithm.AlgorithmParameters
    assert seg.DeviceSerialNumber == model.weights_sha256
    assert "synthetic" in seg.ContentDescription
    assert seg.ContentQualification == "RESEARCH"


def test_seg_is_a_new_series_in_the_source_study_with_copied_patient(
    positive_results: WrittenResults, head_volume: Volume
) -> None:
    seg = pydicom.dcmread(positive_results.seg_path)
    source = head_volume.datasets[0]

    assert seg.StudyInstanceUID == head_volume.study_instance_uid
    assert seg.SeriesInstanceUID == positive_results.uids.seg_series_instance_uid
    assert seg.SeriesInstanceUID != head_volume.series_instance_uid
    assert seg.SOPInstanceUID == positive_results.uids.seg_sop_instance_uid
    assert seg.FrameOfReferenceUID == head_volume.frame_of_reference_uid
    for keyword in ("PatientName", "PatientID", "StudyDescription", "PatientIdentityRemoved"):
        assert seg[keyword].value == source[keyword].value
    # The source lacks these Type 2 attributes: present and empty, never invented.
    for keyword in ("PatientBirthDate", "PatientSex"):
        assert keyword not in source
        assert keyword in seg and seg[keyword].value in (None, "")
    assert seg.ContentDate == "20240102" and seg.ContentTime.startswith("030405")


def test_every_frame_references_a_source_slice_at_its_position(
    positive_results: WrittenResults, head_volume: Volume
) -> None:
    seg = pydicom.dcmread(positive_results.seg_path)
    position_of = dict(zip(head_volume.sop_instance_uids, head_volume.positions, strict=True))

    frames = _frames(seg)

    assert len(frames) == int(seg.NumberOfFrames)
    for segment, source_uid, position in frames:
        assert segment in (HEMORRHAGE_SEGMENT_NUMBER, BRAIN_SEGMENT_NUMBER)
        assert source_uid in position_of
        np.testing.assert_allclose(position, position_of[source_uid], atol=POSITION_TOLERANCE_MM)
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == head_volume.series_instance_uid
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == (
        set(head_volume.sop_instance_uids)
    )


def test_empty_frames_are_left_out_when_every_segment_has_content(
    positive_results: WrittenResults,
) -> None:
    seg = pydicom.dcmread(positive_results.seg_path)
    masks = segment_masks(positive_results.prediction)

    non_empty_frames = int(masks.any(axis=(1, 2)).sum())

    assert int(seg.NumberOfFrames) == non_empty_frames
    assert non_empty_frames < masks.shape[0] * masks.shape[-1]


@pytest.mark.parametrize("results_name", ["positive_results", "negative_results"])
def test_mask_read_back_through_highdicom_equals_the_prediction(
    results_name: str, request: pytest.FixtureRequest, head_volume: Volume
) -> None:
    results: WrittenResults = request.getfixturevalue(results_name)
    seg = hd.seg.segread(results.seg_path)

    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(head_volume.sop_instance_uids),
        segment_numbers=[HEMORRHAGE_SEGMENT_NUMBER, BRAIN_SEGMENT_NUMBER],
        assert_missing_frames_are_empty=True,
    )

    np.testing.assert_array_equal(pixels.astype(bool), segment_masks(results.prediction))


def test_negative_scan_keeps_a_described_hemorrhage_segment_with_frames(
    negative_results: WrittenResults, head_volume: Volume
) -> None:
    seg = pydicom.dcmread(negative_results.seg_path)
    frames = _frames(seg)
    hemorrhage_frames = [f for f in frames if f[0] == HEMORRHAGE_SEGMENT_NUMBER]

    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [
        HEMORRHAGE_SEGMENT_NUMBER,
        BRAIN_SEGMENT_NUMBER,
    ]
    assert len(hemorrhage_frames) == head_volume.num_slices
    assert int(seg.NumberOfFrames) == 2 * head_volume.num_slices


@pytest.mark.parametrize("results_name", ["positive_results", "negative_results"])
def test_dciodvfy_finds_no_error_the_source_does_not_have(
    results_name: str,
    request: pytest.FixtureRequest,
    source_baseline_errors: set[str],
    dciodvfy: Callable[[Path], set[str]],
) -> None:
    results: WrittenResults = request.getfixturevalue(results_name)

    new_errors = dciodvfy(results.seg_path) - source_baseline_errors

    assert not new_errors, "\n".join(sorted(new_errors))


def test_build_is_deterministic_and_leaves_the_sources_untouched(
    head_volume: Volume, positive_prediction: Prediction, model: ModelIdentity
) -> None:
    uids = ResultUids.derive(head_volume.series_instance_uid, model)
    kwargs = {
        "series_instance_uid": uids.seg_series_instance_uid,
        "sop_instance_uid": uids.seg_sop_instance_uid,
        "series_number": 42,
        "instance_number": 3,
    }

    first = build_seg(head_volume, positive_prediction, model, **kwargs)
    second = build_seg(head_volume, positive_prediction, model, **kwargs)

    assert first.PixelData == second.PixelData
    assert first.SegmentSequence == second.SegmentSequence
    assert (first.SeriesNumber, first.InstanceNumber) == (42, 3)
    assert "PatientBirthDate" not in head_volume.datasets[0]


def test_prediction_of_another_shape_is_rejected(
    head_volume: Volume, positive_prediction: Prediction, model: ModelIdentity
) -> None:
    cropped = Prediction(
        labels=positive_prediction.labels[:-1],
        slice_probabilities=positive_prediction.slice_probabilities[:-1],
        subject_probabilities=positive_prediction.subject_probabilities,
    )

    with pytest.raises(ValueError, match="labels have shape"):
        build_seg(
            head_volume,
            cropped,
            model,
            series_instance_uid="2.25.1",
            sop_instance_uid="2.25.2",
            series_number=1,
        )
