"""analyse_series on the real head study: one series in, SEG + SR + result.json out, in memory.

The model weights are untrained placeholders, so these tests check structure and bookkeeping
(slice order, UIDs, references, series numbers), never what the model finds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import UID

from dicom_node.config import SelectionSection
from dicom_node.results import ResultUids
from dicom_node.workflow import (
    SEG_SERIES_NUMBER_BASE,
    SR_SERIES_NUMBER_BASE,
    SeriesAnalysis,
    SeriesSkipped,
    analyse_series,
    model_identity,
    read_datasets,
)
from ichnet_core.inference.engine import InferenceEngine, create_engine
from ichnet_core.models.weights import ModelWeights, load_weights

pytestmark = pytest.mark.shared_data

#: Result series numbers wrap the source's number into a span of 500 above their base.
_SERIES_NUMBER_SPAN = 500


@pytest.fixture(scope="module")
def weights() -> ModelWeights:
    return load_weights()


@pytest.fixture(scope="module")
def engine(weights: ModelWeights) -> InferenceEngine:
    """The PyTorch reference engine: available everywhere, nothing to export first."""
    return create_engine("torch", weights)


@pytest.fixture(scope="module")
def head_datasets(head_ct_dir: Path) -> list[pydicom.Dataset]:
    datasets, problems = read_datasets(head_ct_dir.glob("*.dcm"))
    assert problems == []
    return datasets


@pytest.fixture(scope="module")
def head_analysis(
    head_datasets: list[pydicom.Dataset], engine: InferenceEngine, weights: ModelWeights
) -> SeriesAnalysis:
    """The one inference of this module."""
    return analyse_series(head_datasets, engine=engine, weights=weights, rules=SelectionSection())


def test_read_datasets_reports_each_unreadable_file(head_ct_dir: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not DICOM")
    datasets, problems = read_datasets([head_ct_dir / "01.dcm", notes])
    assert [ds.SOPInstanceUID for ds in datasets] == [
        pydicom.dcmread(head_ct_dir / "01.dcm", stop_before_pixels=True).SOPInstanceUID
    ]
    assert len(problems) == 1 and problems[0].startswith("notes.txt: not readable as DICOM")


@pytest.mark.parametrize(
    ("folder", "reason"),
    [
        ("real/abdomen_ct_3slice", "names COLONOSCOPY, not a head"),
        ("malformed/rgb_screenshot_ct", "not grey-scale HU data"),
    ],
)
def test_unsuitable_series_are_skipped_with_the_selection_reason(
    shared_data: Path,
    engine: InferenceEngine,
    weights: ModelWeights,
    folder: str,
    reason: str,
) -> None:
    datasets, _ = read_datasets((shared_data / folder).glob("*.dcm"))
    with pytest.raises(SeriesSkipped) as skipped:
        analyse_series(datasets, engine=engine, weights=weights, rules=SelectionSection())
    assert skipped.value.reason.startswith("skipped: ")
    assert reason in skipped.value.reason


def test_a_series_whose_pixels_cannot_be_decoded_is_skipped(
    head_ct_dir: Path, engine: InferenceEngine, weights: ModelWeights
) -> None:
    """Headers pass selection; the volume cannot be built, so the model never runs."""
    datasets, _ = read_datasets(head_ct_dir.glob("*.dcm"))
    broken = datasets[5]
    broken.PixelData = broken.PixelData[:1000]
    with pytest.raises(SeriesSkipped) as skipped:
        analyse_series(datasets, engine=engine, weights=weights, rules=SelectionSection())
    assert skipped.value.reason.startswith("volume cannot be built: ")
    assert broken.SOPInstanceUID in skipped.value.reason


def test_results_get_new_uids_and_series_numbers_above_the_source(
    head_analysis: SeriesAnalysis, head_datasets: list[pydicom.Dataset], weights: ModelWeights
) -> None:
    source = head_datasets[0]
    seg, sr = head_analysis.seg, head_analysis.sr
    # Not the UIDs the series, the weights and the version alone determine (main derived those,
    # so a second analysis reused them for other content): a random part makes them new.
    derived = ResultUids.derive(source.SeriesInstanceUID, model_identity(weights))
    made = {seg.SeriesInstanceUID, seg.SOPInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID}
    assert len(made) == 4
    assert made.isdisjoint(dataclasses.asdict(derived).values())
    assert all(UID(uid).is_valid for uid in made)
    assert head_analysis.result["result_version"] == 1
    offset = int(source.SeriesNumber) % _SERIES_NUMBER_SPAN
    assert seg.SeriesNumber == SEG_SERIES_NUMBER_BASE + offset
    assert sr.SeriesNumber == SR_SERIES_NUMBER_BASE + offset
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == source.StudyInstanceUID


def test_analysis_parts_agree_with_each_other(
    head_analysis: SeriesAnalysis, engine: InferenceEngine, weights: ModelWeights
) -> None:
    volume, prediction, result = (
        head_analysis.volume,
        head_analysis.prediction,
        head_analysis.result,
    )
    assert prediction.labels.shape == volume.hu.shape
    assert [s["sop_instance_uid"] for s in result["slices"]] == list(volume.sop_instance_uids)
    assert result["hemorrhage_volume_ml"] == pytest.approx(head_analysis.hemorrhage_volume_ml)
    assert result["engine"] == engine.name
    assert result["model"]["weights_sha256"] == weights.sha256
    timings = head_analysis.timings
    assert result["timings_s"] == {
        "volume": timings.volume,
        "inference": timings.inference,
        "results": timings.results,
    }
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in head_analysis.sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert head_analysis.seg.SOPInstanceUID in evidence
    assert set(volume.sop_instance_uids) <= evidence
