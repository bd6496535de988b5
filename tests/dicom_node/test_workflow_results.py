"""analyse_series with weights that have compartments and operating points: what the node writes
follows the weights (result.json present/operating_points/volumes_ml, SEG segments, SR groups)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest
import torch

from dicom_node.config import SelectionSection
from dicom_node.results import codes, hemorrhage_segments
from dicom_node.workflow import SeriesAnalysis, analyse_series, read_datasets
from ichnet_core.inference.engine import create_engine
from ichnet_core.labels import CLASS_NAMES, NUM_SEGMENTATION_CLASSES, SUBTYPES
from ichnet_core.models.registry import create_model
from ichnet_core.models.weights import ModelWeights, load_weights, save_weights
from ichnet_core.operating_points import METADATA_KEY, OperatingPoints
from tests.ichnet_core.inference.tiny import TINY_OVERRIDES
from tests.ichnet_core.models.decisive import spread_outputs

pytestmark = pytest.mark.shared_data

#: Thresholds far from 0.5 so a decision at 0.5 would differ somewhere.
POINTS = OperatingPoints(
    subject={"any": 0.05, "CPH": 0.9, "IVH": 0.02, "EDH": 0.6, "SDH": 0.15, "SAH": 0.97},
    source="hand-made for this test",
)


def make_compartment_weights(folder: Path) -> ModelWeights:
    """Tiny random weights with compartments and :data:`POINTS`, outputs spread like a
    trained model's so that blood and several compartments appear (deterministic)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = create_model("ichnet", **TINY_OVERRIDES, compartments=True)
        spread_outputs(model)
    with torch.no_grad():  # no compartment favoured by its bias: seed 3 then gives EDH and SAH
        model.decoder.head.classifier.bias[NUM_SEGMENTATION_CLASSES:] = 0.0
    path = folder / "compartments.pt"
    metadata = {
        "version": "test-compartments",
        "trained_on": "nothing",
        "training_data": "none",
        "description": "tiny test weights with compartments and operating points",
        METADATA_KEY: POINTS.to_metadata(),
    }
    return load_weights(
        path, expected_sha256=save_weights(model, path, name="ichnet", metadata=metadata)
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> ModelWeights:
    return make_compartment_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def analysis(head_ct_dir: Path, weights: ModelWeights) -> SeriesAnalysis:
    datasets, problems = read_datasets(head_ct_dir.glob("*.dcm"))
    assert problems == []
    engine = create_engine("torch", weights)
    return analyse_series(datasets, engine=engine, weights=weights, rules=SelectionSection())


def test_result_json_decides_at_the_weights_operating_points(analysis: SeriesAnalysis) -> None:
    result = analysis.result

    assert result["operating_points"] == dict(POINTS.subject)
    assert result["operating_points_source"] == POINTS.source
    assert result["present"] == {
        name: result["subject"][name] >= POINTS.subject[name] for name in CLASS_NAMES
    }


def test_compartment_volumes_add_up_and_match_the_seg(analysis: SeriesAnalysis) -> None:
    volumes_ml = analysis.result["volumes_ml"]
    assert analysis.prediction.compartments is not None
    assert volumes_ml["hemorrhage"] == analysis.result["hemorrhage_volume_ml"] > 0.0
    assert sum(volumes_ml[name] for name in SUBTYPES) == pytest.approx(volumes_ml["hemorrhage"])

    present = [name for name in SUBTYPES if volumes_ml[name] > 0.0]
    assert len(present) >= 2, present  # the weights are made to give several compartments
    seg = hd.seg.Segmentation.from_dataset(analysis.seg)
    assert hemorrhage_segments(seg) == {name: i for i, name in enumerate(present, start=1)}
    assert len(seg.get_segment_numbers()) == len(present) + 1  # and brain

    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.Dataset(analysis.sr))
    report = hd.sr.MeasurementReport.from_sequence(sr.content)
    groups = report.get_volumetric_roi_measurement_groups()
    assert [g.finding_type for g in groups] == [codes.SUBTYPE_FINDINGS[n] for n in present]
    for name, group in zip(present, groups, strict=True):
        (volume,) = group.get_measurements(name=codes.VOLUME)
        assert float(volume.value) == pytest.approx(volumes_ml[name], abs=0.005)
    (total_group,) = report.get_image_measurement_groups()
    for name in CLASS_NAMES:
        finding = codes.INTRACRANIAL_HEMORRHAGE if name == "any" else codes.SUBTYPE_FINDINGS[name]
        (evaluation,) = total_group.get_qualitative_evaluations(name=finding)
        expected = codes.PRESENT if analysis.result["present"][name] else codes.ABSENT
        assert evaluation.value == expected
