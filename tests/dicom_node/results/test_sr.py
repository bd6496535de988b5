"""TID 1500 SR writer on the real head CT: content read back with highdicom, dciodvfy, dsrdump."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes as pydicom_codes
from pydicom.uid import SegmentationStorage

from dicom_node.results import codes
from dicom_node.results.device import MANUFACTURER, ModelIdentity
from dicom_node.results.seg import HEMORRHAGE_SEGMENT_NUMBER
from dicom_node.results.sr import (
    PROBABILITY_DECIMALS,
    VOLUME_DECIMALS,
    build_sr,
    presence,
)
from dicom_node.results.volumes import HemorrhageVolumes
from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import CLASS_NAMES, SUBTYPES
from ichnet_core.operating_points import DEFAULT_THRESHOLD
from ichnet_core.prediction import Prediction

if TYPE_CHECKING:
    from tests.dicom_node.results.conftest import WrittenResults

#: Finding concept per class name, as the SR names them.
FINDINGS = {"any": codes.INTRACRANIAL_HEMORRHAGE, **codes.SUBTYPE_FINDINGS}


def _group(results: WrittenResults) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    sr = hd.sr.srread(results.sr_path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    report = hd.sr.MeasurementReport.from_sequence(sr.content)
    groups = report.get_volumetric_roi_measurement_groups()
    assert len(groups) == 1
    return groups[0]


def _single_value(group: hd.sr.MeasurementReport, concept: hd.sr.CodedConcept) -> float:
    measurements = group.get_measurements(name=concept)
    assert len(measurements) == 1, f"expected one NUM {concept.meaning!r}"
    return float(measurements[0].value)


@pytest.mark.parametrize("results_name", ["positive_results", "negative_results"])
def test_volume_probabilities_and_findings_are_reported(
    results_name: str, request: pytest.FixtureRequest
) -> None:
    results: WrittenResults = request.getfixturevalue(results_name)
    group = _group(results)
    subject = results.prediction.subject_dict()

    volume = group.get_measurements(name=codes.VOLUME)
    assert len(volume) == 1
    assert float(volume[0].value) == pytest.approx(round(results.volume_ml, VOLUME_DECIMALS))
    assert volume[0].unit == codes.MILLILITER
    assert volume[0].method == codes.SUM_OF_SEGMENTED_VOXELS
    assert group.finding_type == codes.INTRACRANIAL_HEMORRHAGE
    for name in CLASS_NAMES:
        finding = FINDINGS[name]
        measurement = group.get_measurements(name=finding)[0]
        assert measurement.unit == codes.PROBABILITY_UNIT
        assert float(measurement.value) == pytest.approx(subject[name], abs=0.5e-3)
        evaluations = group.get_qualitative_evaluations(name=finding)
        assert len(evaluations) == 1
        expected = codes.PRESENT if subject[name] >= DEFAULT_THRESHOLD else codes.ABSENT
        assert evaluations[0].value == expected


def test_positive_and_negative_scans_read_differently(
    positive_results: WrittenResults, negative_results: WrittenResults
) -> None:
    positive, negative = _group(positive_results), _group(negative_results)
    ich = codes.INTRACRANIAL_HEMORRHAGE

    assert _single_value(positive, codes.VOLUME) > 0.0
    assert _single_value(negative, codes.VOLUME) == 0.0
    assert positive.get_qualitative_evaluations(name=ich)[0].value == codes.PRESENT
    assert negative.get_qualitative_evaluations(name=ich)[0].value == codes.ABSENT
    cph = codes.SUBTYPE_FINDINGS["CPH"]
    assert positive.get_qualitative_evaluations(name=cph)[0].value == codes.PRESENT
    # SDH at 0.40 is reported with its probability but Absent at the 0.5 threshold (these
    # results were written without operating points: the fallback).
    sdh = codes.SUBTYPE_FINDINGS["SDH"]
    assert _single_value(positive, sdh) == pytest.approx(0.4, abs=1e-3)
    assert positive.get_qualitative_evaluations(name=sdh)[0].value == codes.ABSENT


@pytest.mark.parametrize("results_name", ["positive_results", "negative_results"])
def test_measurement_group_references_the_seg_hemorrhage_segment(
    results_name: str, request: pytest.FixtureRequest, head_volume: Volume
) -> None:
    results: WrittenResults = request.getfixturevalue(results_name)
    group = _group(results)
    seg = pydicom.dcmread(results.seg_path)
    segment_item = next(
        s for s in seg.SegmentSequence if int(s.SegmentNumber) == HEMORRHAGE_SEGMENT_NUMBER
    )

    referenced = group.referenced_segment
    image_item, series_item = referenced[0], referenced[1]

    assert image_item.referenced_sop_class_uid == SegmentationStorage
    assert image_item.referenced_sop_instance_uid == results.uids.seg_sop_instance_uid
    assert image_item.referenced_segment_numbers == [HEMORRHAGE_SEGMENT_NUMBER]
    assert series_item.value == head_volume.series_instance_uid
    assert group.tracking_uid == segment_item.TrackingUID


def test_observer_is_the_model_as_a_device(
    positive_results: WrittenResults, model: ModelIdentity
) -> None:
    sr = hd.sr.srread(positive_results.sr_path)
    report = hd.sr.MeasurementReport.from_sequence(sr.content)

    observers = report.get_observer_contexts(observer_type=pydicom_codes.DCM.Device)

    assert len(observers) == 1
    device = observers[0].observer_identifying_attributes
    assert device.uid == model.device_uid
    assert device.name == model.name
    assert device.manufacturer_name == MANUFACTURER
    assert device.serial_number == model.weights_sha256
    assert not report.get_observer_contexts(observer_type=pydicom_codes.DCM.Person)


def test_sr_is_a_new_series_in_the_source_study_listing_its_evidence(
    positive_results: WrittenResults, head_volume: Volume
) -> None:
    sr = pydicom.dcmread(positive_results.sr_path)
    evidence = {
        series.SeriesInstanceUID: {
            item.ReferencedSOPInstanceUID for item in series.ReferencedSOPSequence
        }
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
    }

    assert sr.StudyInstanceUID == head_volume.study_instance_uid
    assert sr.SeriesInstanceUID == positive_results.uids.sr_series_instance_uid
    assert sr.SOPInstanceUID == positive_results.uids.sr_sop_instance_uid
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == (
        "COMPLETE",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    assert evidence == {
        head_volume.series_instance_uid: set(head_volume.sop_instance_uids),
        positive_results.uids.seg_series_instance_uid: {positive_results.uids.seg_sop_instance_uid},
    }
    assert "PatientBirthDate" in sr and not sr.PatientBirthDate
    assert sr.ContentQualification == "RESEARCH"
    schemes = {item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence}
    assert codes.LOCAL_SCHEME_DESIGNATOR in schemes


@pytest.mark.parametrize("results_name", ["positive_results", "negative_results"])
def test_dciodvfy_finds_no_error_the_source_does_not_have(
    results_name: str,
    request: pytest.FixtureRequest,
    source_baseline_errors: set[str],
    dciodvfy: Callable[[Path], set[str]],
) -> None:
    results: WrittenResults = request.getfixturevalue(results_name)

    new_errors = dciodvfy(results.sr_path) - source_baseline_errors

    assert not new_errors, "\n".join(sorted(new_errors))


def test_dsrdump_reads_the_report_as_a_radiologist_would(
    positive_results: WrittenResults,
    dsrdump: Callable[[Path], subprocess.CompletedProcess[str]],
) -> None:
    completed = dsrdump(positive_results.sr_path)
    text = completed.stdout

    assert completed.returncode == 0, completed.stderr
    assert "Imaging Measurement Report" in text
    assert '(121007,DCM,"Device")' in text
    assert f'NUM:(,,"Volume")="{round(positive_results.volume_ml, VOLUME_DECIMALS):g}"' in text
    assert 'CODE:(,,"Intracranial hemorrhage")=(52101004,SCT,"Present")' in text
    for name in SUBTYPES:
        assert f'NUM:(,,"{codes.SUBTYPE_FINDINGS[name].meaning}")' in text
    assert '"Referenced Segment"' in text


def test_presence_uses_an_inclusive_threshold() -> None:
    assert presence(DEFAULT_THRESHOLD) == codes.PRESENT
    assert presence(DEFAULT_THRESHOLD - 10**-PROBABILITY_DECIMALS) == codes.ABSENT
    assert presence(0.3, threshold=0.25) == codes.PRESENT


def test_inputs_out_of_range_are_rejected(
    positive_results: WrittenResults,
    head_volume: Volume,
    positive_prediction: Prediction,
    model: ModelIdentity,
) -> None:
    seg = pydicom.dcmread(positive_results.seg_path)
    kwargs = {
        "series_instance_uid": "2.25.1",
        "sop_instance_uid": "2.25.2",
        "series_number": 1,
    }

    with pytest.raises(ValueError, match="finite number of mL"):
        build_sr(
            head_volume,
            positive_prediction,
            seg,
            model,
            volumes=HemorrhageVolumes(total_ml=-1.0, compartments_ml=None),
            **kwargs,
        )
    seg.StudyInstanceUID = "2.25.3"
    with pytest.raises(ValueError, match="not to the analysed study"):
        build_sr(
            head_volume,
            positive_prediction,
            seg,
            model,
            volumes=HemorrhageVolumes(total_ml=1.0, compartments_ml=None),
            **kwargs,
        )
