"""Results of weights with compartments: one SEG segment per compartment, per-compartment SR volumes.

Checked the way a PACS and a viewer would read them: the SEG through highdicom (segread and
Segmentation.from_dataset), the SR through highdicom's TID 1500 parser, both through dciodvfy.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes as pydicom_codes

from dicom_node.results import codes
from dicom_node.results.checks import check_prediction
from dicom_node.results.seg import (
    BRAIN_RGB,
    COMPARTMENT_LABELS,
    COMPARTMENT_RGB,
    HEMORRHAGE_SEGMENT_NUMBER,
    hemorrhage_segments,
    segment_layout,
    segment_masks,
)
from dicom_node.results.sr import VOLUME_DECIMALS, build_sr
from dicom_node.results.volumes import HemorrhageVolumes
from ichnet_core.imaging.measure import label_volume_ml
from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import CLASS_NAMES, HEMORRHAGE, SUBTYPES
from ichnet_core.prediction import Prediction

from .conftest import COMPARTMENTS_PRESENT, OPERATING_POINTS

if TYPE_CHECKING:
    from tests.dicom_node.results.conftest import WrittenResults

#: CIELab round trip through 16-bit DICOM values loses a little; one sRGB step is fine.
RGB_TOLERANCE = 1
FINDINGS = {"any": codes.INTRACRANIAL_HEMORRHAGE, **codes.SUBTYPE_FINDINGS}


def _read_back(results: WrittenResults, volume: Volume) -> tuple[hd.seg.Segmentation, np.ndarray]:
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(results.seg_path))
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(volume.sop_instance_uids),
        segment_numbers=seg.get_segment_numbers(),
        assert_missing_frames_are_empty=True,
    )
    return seg, pixels.astype(bool)


def test_one_coded_coloured_segment_per_present_compartment_then_brain(
    compartment_results: WrittenResults,
) -> None:
    seg = hd.seg.segread(compartment_results.seg_path)

    numbers = seg.get_segment_numbers()
    assert numbers == list(range(1, len(COMPARTMENTS_PRESENT) + 2))
    descriptions = [seg.get_segment_description(n) for n in numbers]
    expected = [*COMPARTMENTS_PRESENT, "brain"]
    colours = []
    for description, key in zip(descriptions, expected, strict=True):
        if key == "brain":
            assert description.segment_label == "Brain"
            assert description.segmented_property_type == pydicom_codes.SCT.Brain
            rgb = BRAIN_RGB
        else:
            assert description.segment_label == COMPARTMENT_LABELS[key]
            assert description.segmented_property_category == (
                pydicom_codes.SCT.MorphologicallyAbnormalStructure
            )
            assert description.segmented_property_type == codes.SUBTYPE_FINDINGS[key]
            rgb = COMPARTMENT_RGB[key]
        stored = hd.color.CIELabColor.from_dicom_value(
            tuple(description.RecommendedDisplayCIELabValue)
        )
        np.testing.assert_allclose(stored.to_rgb(), rgb, atol=RGB_TOLERANCE)
        colours.append(rgb)
    assert len(set(colours)) == len(colours)
    assert len(set(COMPARTMENT_RGB.values()) | {BRAIN_RGB}) == len(SUBTYPES) + 1
    # IVH and EDH carry the local scheme, which the SEG declares.
    schemes = {item.CodingSchemeDesignator for item in seg.CodingSchemeIdentificationSequence}
    assert codes.LOCAL_SCHEME_DESIGNATOR in schemes
    assert hemorrhage_segments(seg) == {name: i for i, name in enumerate(COMPARTMENTS_PRESENT, 1)}


def test_compartment_segments_never_overlap_and_sum_to_the_total(
    compartment_results: WrittenResults, head_volume: Volume
) -> None:
    _, pixels = _read_back(compartment_results, head_volume)
    blood = pixels[..., : len(COMPARTMENTS_PRESENT)]
    voxel_ml = head_volume.voxel_volumes_ml()

    for first, second in combinations(range(blood.shape[-1]), 2):
        assert not np.any(blood[..., first] & blood[..., second])
    assert not np.any(blood.any(axis=-1) & pixels[..., -1])  # nor with brain
    union = blood.any(axis=-1)
    np.testing.assert_array_equal(union, compartment_results.prediction.labels == HEMORRHAGE)
    read_ml = [label_volume_ml(blood[..., i].astype(np.uint8), 1, voxel_ml) for i in range(3)]
    total_ml = compartment_results.volumes.total_ml
    assert total_ml == pytest.approx(compartment_results.volume_ml) and total_ml > 0
    assert sum(read_ml) == pytest.approx(total_ml, rel=1e-12)
    per = compartment_results.volumes.compartments_ml
    assert per is not None
    assert read_ml == pytest.approx([per[name] for name in COMPARTMENTS_PRESENT])
    assert all(per[name] == 0.0 for name in SUBTYPES if name not in COMPARTMENTS_PRESENT)


def test_seg_round_trip_gives_back_the_masks(
    compartment_results: WrittenResults, head_volume: Volume
) -> None:
    _, pixels = _read_back(compartment_results, head_volume)

    np.testing.assert_array_equal(pixels, segment_masks(compartment_results.prediction))


def test_a_negative_scan_keeps_the_single_empty_hemorrhage_segment(
    compartment_negative_results: WrittenResults,
) -> None:
    seg = hd.seg.segread(compartment_negative_results.seg_path)

    assert [spec.key for spec in segment_layout(compartment_negative_results.prediction)] == [
        "hemorrhage",
        "brain",
    ]
    assert seg.get_segment_numbers() == [1, 2]
    assert hemorrhage_segments(seg) == {"hemorrhage": HEMORRHAGE_SEGMENT_NUMBER}
    volumes = compartment_negative_results.volumes
    assert volumes.total_ml == 0.0 and volumes.compartments_ml is not None
    assert set(volumes.compartments_ml.values()) == {0.0}


def _report(results: WrittenResults) -> hd.sr.MeasurementReport:
    sr = hd.sr.srread(results.sr_path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    return hd.sr.MeasurementReport.from_sequence(sr.content)


def test_sr_reports_a_volume_per_compartment_referencing_its_segment(
    compartment_results: WrittenResults, head_volume: Volume
) -> None:
    report = _report(compartment_results)
    seg = pydicom.dcmread(compartment_results.seg_path)
    tracking = {int(s.SegmentNumber): s.TrackingUID for s in seg.SegmentSequence}
    per = compartment_results.volumes.compartments_ml
    assert per is not None

    groups = report.get_volumetric_roi_measurement_groups()

    assert [g.finding_type for g in groups] == [
        codes.SUBTYPE_FINDINGS[name] for name in COMPARTMENTS_PRESENT
    ]
    reported = []
    for number, (name, group) in enumerate(zip(COMPARTMENTS_PRESENT, groups, strict=True), 1):
        image_item, series_item = group.referenced_segment[0], group.referenced_segment[1]
        assert (
            image_item.referenced_sop_instance_uid == compartment_results.uids.seg_sop_instance_uid
        )
        assert image_item.referenced_segment_numbers == [number]
        assert series_item.value == head_volume.series_instance_uid
        assert group.tracking_uid == tracking[number]
        (volume,) = group.get_measurements(name=codes.VOLUME)
        assert volume.unit == codes.MILLILITER
        assert float(volume.value) == pytest.approx(round(per[name], VOLUME_DECIMALS))
        reported.append(float(volume.value))
    # The total, with the probabilities and findings, is one image-level (TID 1501) group.
    (total_group,) = report.get_image_measurement_groups()
    (total,) = total_group.get_measurements(name=codes.VOLUME)
    assert float(total.value) == pytest.approx(
        round(compartment_results.volumes.total_ml, VOLUME_DECIMALS)
    )
    # Rounded to 0.01 mL each, the compartments add up to the total within their rounding.
    assert sum(reported) == pytest.approx(float(total.value), abs=0.005 * (len(reported) + 1))


def test_sr_findings_follow_the_operating_points(compartment_results: WrittenResults) -> None:
    (group,) = _report(compartment_results).get_image_measurement_groups()
    subject = compartment_results.prediction.subject_dict()

    for name in CLASS_NAMES:
        (probability,) = group.get_measurements(name=FINDINGS[name])
        assert float(probability.value) == pytest.approx(subject[name], abs=0.5e-3)
        (evaluation,) = group.get_qualitative_evaluations(name=FINDINGS[name])
        present = subject[name] >= OPERATING_POINTS.subject[name]
        assert evaluation.value == (codes.PRESENT if present else codes.ABSENT)
    # CPH 0.91 < its 0.95 threshold: Absent; SDH 0.40 >= 0.35: Present (0.5 would say otherwise).
    cph, sdh = codes.SUBTYPE_FINDINGS["CPH"], codes.SUBTYPE_FINDINGS["SDH"]
    assert group.get_qualitative_evaluations(name=cph)[0].value == codes.ABSENT
    assert group.get_qualitative_evaluations(name=sdh)[0].value == codes.PRESENT
    sr = pydicom.dcmread(compartment_results.sr_path)
    texts = {str(element.value) for element in sr.iterall() if element.keyword == "TextValue"}
    assert "operating_point_CPH: 0.95" in texts
    assert f"operating_points_source: {OPERATING_POINTS.source}" in texts


@pytest.mark.parametrize("results_name", ["compartment_results", "compartment_negative_results"])
@pytest.mark.parametrize("kind", ["seg_path", "sr_path"])
def test_dciodvfy_finds_no_error_the_source_does_not_have(
    results_name: str,
    kind: str,
    request: pytest.FixtureRequest,
    source_baseline_errors: set[str],
    dciodvfy: Callable[[Path], set[str]],
) -> None:
    results: WrittenResults = request.getfixturevalue(results_name)

    new_errors = dciodvfy(getattr(results, kind)) - source_baseline_errors

    assert not new_errors, "\n".join(sorted(new_errors))


def test_dsrdump_lists_each_compartment_volume(
    compartment_results: WrittenResults,
    dsrdump: Callable[[Path], subprocess.CompletedProcess[str]],
) -> None:
    completed = dsrdump(compartment_results.sr_path)

    assert completed.returncode == 0, completed.stderr
    for name in COMPARTMENTS_PRESENT:
        assert f'"{codes.SUBTYPE_FINDINGS[name].meaning}"' in completed.stdout
    assert completed.stdout.count('"Referenced Segment"') == len(COMPARTMENTS_PRESENT)


def test_sr_refuses_volumes_that_do_not_match_the_seg(
    compartment_results: WrittenResults,
    head_volume: Volume,
    compartment_prediction: Prediction,
    model: object,
) -> None:
    seg = pydicom.dcmread(compartment_results.seg_path)
    per = dict(compartment_results.volumes.compartments_ml or {})
    per["IVH"] = 0.0  # the SEG has an IVH segment
    volumes = HemorrhageVolumes(total_ml=sum(per.values()), compartments_ml=per)

    with pytest.raises(ValueError, match="compartment segments"):
        build_sr(
            head_volume,
            compartment_prediction,
            seg,
            model,  # type: ignore[arg-type]
            volumes=volumes,
            series_instance_uid="2.25.1",
            sop_instance_uid="2.25.2",
            series_number=1,
        )


def test_compartments_outside_the_hemorrhage_are_refused(
    head_volume: Volume, compartment_prediction: Prediction
) -> None:
    assert compartment_prediction.compartments is not None
    compartments = compartment_prediction.compartments.copy()
    compartments[compartment_prediction.labels == 1] = 1 + SUBTYPES.index("SAH")
    stray = Prediction(
        labels=compartment_prediction.labels,
        slice_probabilities=compartment_prediction.slice_probabilities,
        subject_probabilities=compartment_prediction.subject_probabilities,
        compartments=compartments,
    )

    with pytest.raises(ValueError, match="break the compartment rule"):
        check_prediction(head_volume, stray)
