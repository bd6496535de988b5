"""Follow-up comparison numbers (DESIGN.md) and the SR that reports them."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import Dataset

from dicom_node.results.comparison import PatientKey, PriorResult, compare, study_datetime
from dicom_node.results.sr import build_sr
from dicom_node.results.volumes import HemorrhageVolumes
from ichnet_core.imaging.volume import Volume
from tests.dicom_node.results.conftest import MODEL, OPERATING_POINTS, WrittenResults

NOW = datetime.datetime(2026, 12, 4, 14, 0)


def _prior(volume_ml: float, compartments: dict[str, float] | None = None) -> PriorResult:
    return PriorResult(
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        study_datetime=datetime.datetime(2026, 12, 4, 8, 0),
        volume_ml=volume_ml,
        compartments_ml=compartments,
        sr_series_instance_uid="1.2.3.5",
        sr_sop_instance_uid="1.2.3.5.1",
    )


@pytest.mark.parametrize(
    ("prior_ml", "now_ml", "percent", "expansion"),
    [
        (10.0, 16.5, 65.0, True),  # > 6 mL and > 33 %
        (30.0, 35.9, 19.67, False),  # 5.9 mL, 19.7 %: neither
        (3.0, 4.5, 50.0, True),  # 1.5 mL but 50 %
        (0.0, 5.0, None, False),  # percent undefined for a prior of 0; 5 mL is not > 6
        (0.0, 6.5, None, True),  # ... but 6.5 mL is
        (20.0, 8.0, -60.0, False),  # shrinking
    ],
)
def test_change_and_expansion_follow_the_design_rule(
    prior_ml: float, now_ml: float, percent: float | None, expansion: bool
) -> None:
    comparison = compare(HemorrhageVolumes(now_ml, None), NOW, _prior(prior_ml))
    assert comparison["interval_hours"] == 6.0
    assert comparison["change_ml"] == pytest.approx(now_ml - prior_ml)
    assert comparison["change_percent"] == percent
    assert comparison["expansion"] is expansion
    assert "compartments" not in comparison


def test_per_compartment_changes_for_compartments_either_result_has() -> None:
    now = HemorrhageVolumes(9.0, {"CPH": 0.0, "IVH": 0.0, "EDH": 0.0, "SDH": 6.1, "SAH": 2.9})
    before = {"CPH": 1.0, "IVH": 0.0, "EDH": 0.0, "SDH": 2.0, "SAH": 0.0}
    comparison = compare(now, NOW, _prior(3.0, before))
    assert comparison["compartments"] == {
        "CPH": {"prior_ml": 1.0, "change_ml": -1.0},
        "SDH": {"prior_ml": 2.0, "change_ml": 4.1},
        "SAH": {"prior_ml": 0.0, "change_ml": 2.9},
    }


def test_patient_key_and_study_datetime_from_headers() -> None:
    source = Dataset()
    assert PatientKey.of(source) is None  # anonymous: never compared
    source.PatientID = "P1"
    assert PatientKey.of(source) == PatientKey("P1", "")
    source.IssuerOfPatientID = "HOSP"
    assert PatientKey.of(source) == PatientKey("P1", "HOSP")
    assert study_datetime(source) is None
    source.StudyDate = "20261204"
    assert study_datetime(source) == datetime.datetime(2026, 12, 4)
    source.StudyTime = "0815"
    assert study_datetime(source) == datetime.datetime(2026, 12, 4, 8, 15)
    source.StudyTime = "081530.25"
    assert study_datetime(source) == datetime.datetime(2026, 12, 4, 8, 15, 30, 250000)


def test_sr_with_a_comparison_passes_dciodvfy_without_new_errors(
    head_volume: Volume,
    compartment_results: WrittenResults,
    tmp_path: Path,
    dciodvfy: Callable[[Path], set[str]],
    source_baseline_errors: set[str],
) -> None:
    seg = hd.seg.segread(compartment_results.seg_path)
    prior = _prior(2.0, {"CPH": 0.0, "IVH": 0.5, "EDH": 1.0, "SDH": 0.5, "SAH": 0.0})
    comparison = compare(compartment_results.volumes, NOW, prior)
    sr = build_sr(
        head_volume,
        compartment_results.prediction,
        seg,
        MODEL,
        volumes=compartment_results.volumes,
        operating_points=OPERATING_POINTS,
        series_instance_uid=compartment_results.uids.sr_series_instance_uid,
        sop_instance_uid=compartment_results.uids.sr_sop_instance_uid,
        series_number=9002,
        comparison=comparison,
        prior=prior,
    )
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    new = dciodvfy(path) - source_baseline_errors
    assert not new, new
    assert sr.PertinentOtherEvidenceSequence[0].StudyInstanceUID == prior.study_instance_uid
