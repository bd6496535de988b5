"""OperatingPoints: decisions, the 0.5 fallback, metadata round trip, and weights that carry them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from ichnet_core.inference.torch_engine import TorchEngine
from ichnet_core.labels import CLASS_NAMES
from ichnet_core.models.registry import create_model
from ichnet_core.models.weights import WeightsError, load_weights, save_weights
from ichnet_core.operating_points import (
    DEFAULT_THRESHOLD,
    METADATA_KEY,
    OperatingPoints,
    OperatingPointsError,
)

THRESHOLDS = {"any": 0.31, "CPH": 0.4, "IVH": 0.35, "EDH": 0.2, "SDH": 0.3, "SAH": 0.25}
METADATA = {
    "version": "test",
    "trained_on": "nothing",
    "training_data": "none",
    "description": "tiny test weights",
}


def test_present_compares_each_output_with_its_own_threshold() -> None:
    points = OperatingPoints(subject=THRESHOLDS, source="hand-made")
    probabilities = np.array([0.31, 0.39, 0.5, 0.19, 0.3, 0.0], dtype=np.float32)

    present = points.present(probabilities)

    assert present == {
        "any": True,  # equal to the threshold counts as present
        "CPH": False,
        "IVH": True,
        "EDH": False,
        "SDH": True,
        "SAH": False,
    }
    assert points.present(dict(zip(CLASS_NAMES, probabilities, strict=True))) == present


def test_weights_metadata_without_points_fall_back_to_one_half() -> None:
    points = OperatingPoints.from_metadata(METADATA)

    assert points.is_default
    assert dict(points.subject) == dict.fromkeys(CLASS_NAMES, DEFAULT_THRESHOLD)
    assert "carry no operating points" in points.source


def test_metadata_round_trip_keeps_levels_rules_and_source() -> None:
    points = OperatingPoints(
        subject=THRESHOLDS, slice=THRESHOLDS, source="val split", rules={"any": "r"}
    )

    again = OperatingPoints.from_metadata({METADATA_KEY: points.to_metadata()})

    assert again == points and not again.is_default
    assert "any 0.31" in again.describe() and "(val split)" in again.describe()
    assert again.hemorrhage_voxel is None and "voxel" not in points.to_metadata()


def test_the_voxel_threshold_round_trips_and_is_described() -> None:
    points = OperatingPoints(subject=THRESHOLDS, source="val split", hemorrhage_voxel=0.3)

    entry = points.to_metadata()
    again = OperatingPoints.from_metadata({METADATA_KEY: entry})

    assert entry["voxel"] == {"hemorrhage": 0.3}
    assert again == points and again.hemorrhage_voxel == 0.3
    assert "hemorrhage voxels from 0.3" in again.describe()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"subject": {**THRESHOLDS, "any": 0.0}}, r"any must be in \(0, 1\]"),
        ({"subject": {**THRESHOLDS, "SAH": float("nan")}}, r"SAH must be in \(0, 1\]"),
        ({"subject": {k: v for k, v in THRESHOLDS.items() if k != "IVH"}}, "missing.*IVH"),
        ({"subject": {**THRESHOLDS, "ICH": 0.5}}, "unknown outputs.*ICH"),
        ({"subject": {**THRESHOLDS, "any": "0.3"}}, "must be a number"),
        ({"slice": THRESHOLDS}, "lacks the subject-level"),
        ({"subject": THRESHOLDS, "colour": 1}, "unknown keys"),
        ({"subject": THRESHOLDS, "voxel": {"hemorrhage": 1.5}}, r"hemorrhage must be in \(0, 1\]"),
        ({"subject": THRESHOLDS, "voxel": {"brain": 0.5}}, "at most 'hemorrhage'"),
        ({"subject": THRESHOLDS, "voxel": 0.3}, "voxel must be a mapping"),
    ],
)
def test_malformed_points_are_refused(entry: dict[str, object], message: str) -> None:
    with pytest.raises(OperatingPointsError, match=message):
        OperatingPoints.from_metadata({METADATA_KEY: entry})


def _tiny_model() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model(
            "ichnet", widths=(4, 8, 8, 8), blocks_per_level=(1, 1, 1, 1), input_size=32
        )


def test_weights_carry_their_points_and_refuse_malformed_ones(tmp_path: Path) -> None:
    model = _tiny_model()
    points = OperatingPoints(
        subject=THRESHOLDS, source="val split of a test", hemorrhage_voxel=0.35
    )
    path = tmp_path / "with.pt"
    sha = save_weights(
        model, path, name="ichnet", metadata={**METADATA, METADATA_KEY: points.to_metadata()}
    )

    weights = load_weights(path, expected_sha256=sha)
    assert weights.operating_points == points
    assert TorchEngine(weights, device="cpu").hemorrhage_threshold == 0.35

    bad = tmp_path / "bad.pt"
    save_weights(
        model, bad, name="ichnet", metadata={**METADATA, METADATA_KEY: {"subject": {"any": 2}}}
    )
    with pytest.raises(WeightsError, match="invalid operating points"):
        load_weights(bad)


def test_weights_without_points_load_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "plain.pt"
    sha = save_weights(_tiny_model(), path, name="ichnet", metadata=METADATA)

    with caplog.at_level(logging.WARNING, logger="ichnet_core.models.weights"):
        weights = load_weights(path, expected_sha256=sha)

    assert weights.operating_points.is_default
    assert any("carry no operating points" in r.getMessage() for r in caplog.records)
