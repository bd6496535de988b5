"""Operating points: threshold selection on hand-made scores, and the command that ships them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ichnet_core.labels import CLASS_NAMES, SUBTYPES
from ichnet_core.models.weights import load_weights
from training.cli import EXIT_FAILURE, EXIT_OK, eval_main, train_main
from training.evaluate import SweepCase
from training.metrics import binary_metrics
from training.operating_points import (
    RULE_VOXEL,
    RULE_YOUDEN,
    VOXEL_SWEEP,
    VoxelChoice,
    format_operating_points,
    select_operating_points,
    select_threshold,
    select_voxel_threshold,
)

from .test_trainer import tiny_config

#: Five positives and five negatives whose scores interleave (hand-checked below).
TRUTH = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.65, 0.5, 0.4, 0.2, 0.1])


def test_sensitivity_rule_keeps_every_positive_at_the_highest_specificity() -> None:
    # 95 % of 5 positives means all 5: the cut must include the weakest positive (0.3). Halfway
    # to the next lower score (0.2) leaves 0.2 and 0.1 negative: specificity 2/5.
    choice = select_threshold(TRUTH, SCORES, min_sensitivity=0.95)

    assert choice.threshold == pytest.approx(0.25)
    assert (choice.sensitivity, choice.specificity) == (1.0, pytest.approx(0.4))
    assert (choice.n, choice.positives) == (10, 5)
    assert "sensitivity >= 0.95" in choice.rule


def test_lower_sensitivity_target_gives_a_stricter_threshold() -> None:
    # 0.8 needs 4 of 5 positives: cut at 0.6 (0.65 is the one negative above it), threshold
    # halfway to 0.5.
    choice = select_threshold(TRUTH, SCORES, min_sensitivity=0.8)

    assert choice.threshold == pytest.approx(0.55)
    assert (choice.sensitivity, choice.specificity) == (pytest.approx(0.8), pytest.approx(0.8))


def test_youden_prefers_the_more_sensitive_of_tied_cuts() -> None:
    # J = 0.6 both at the cut 0.7 (sens 0.6, spec 1.0) and at 0.6 (sens 0.8, spec 0.8).
    choice = select_threshold(TRUTH, SCORES)

    assert choice.rule == RULE_YOUDEN
    assert choice.threshold == pytest.approx(0.55)
    assert (choice.sensitivity, choice.specificity) == (pytest.approx(0.8), pytest.approx(0.8))


@pytest.mark.parametrize("min_sensitivity", [None, 0.95, 0.5])
def test_the_threshold_reproduces_the_reported_figures(min_sensitivity: float | None) -> None:
    rng = np.random.default_rng(7)
    truth = rng.random(200) < 0.3
    scores = np.clip(rng.normal(0.35 + 0.3 * truth, 0.15), 0.001, 0.999).round(2)  # with ties

    choice = select_threshold(truth, scores, min_sensitivity=min_sensitivity)
    metrics = binary_metrics(truth, scores, choice.threshold)

    assert metrics.sensitivity == pytest.approx(choice.sensitivity)
    assert metrics.specificity == pytest.approx(choice.specificity)
    if min_sensitivity is not None:
        assert choice.sensitivity >= min_sensitivity
        # No threshold reaching the target is more specific.
        for t in np.unique(scores):
            other = binary_metrics(truth, scores, float(t))
            if other.sensitivity >= min_sensitivity:
                assert other.specificity <= choice.specificity + 1e-12
    else:
        best = max(
            binary_metrics(truth, scores, float(t)).sensitivity
            + binary_metrics(truth, scores, float(t)).specificity
            for t in np.unique(scores)
        )
        assert choice.sensitivity + choice.specificity == pytest.approx(best)


def test_tied_scores_of_both_classes_move_together() -> None:
    truth = np.array([1, 0, 1, 0])
    scores = np.array([0.7, 0.7, 0.2, 0.1])

    choice = select_threshold(truth, scores, min_sensitivity=0.95)

    assert choice.threshold == pytest.approx(0.15)  # both 0.7s and the 0.2 are positive calls
    assert (choice.sensitivity, choice.specificity) == (1.0, 0.5)


@pytest.mark.parametrize(("truth", "missing"), [([0, 0, 0], "positives"), ([1, 1], "negatives")])
def test_one_class_only_falls_back_to_the_default(truth: list[int], missing: str) -> None:
    choice = select_threshold(np.array(truth), np.linspace(0.1, 0.9, len(truth)))

    assert choice.threshold == 0.5
    assert missing in choice.rule


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        select_threshold(np.array([1, 0]), np.array([0.5]))
    with pytest.raises(ValueError, match=r"min_sensitivity must be in \(0, 1\]"):
        select_threshold(TRUTH, SCORES, min_sensitivity=0.0)


def test_selection_uses_the_sensitivity_rule_for_any_and_youden_for_subtypes() -> None:
    subject = {name: (TRUTH, SCORES) for name in CLASS_NAMES}

    selection = select_operating_points({"subject": subject, "slice": {}}, source="hand-made")
    points = selection.operating_points()

    assert set(selection.choices) == {"subject"}  # no slice scores: no slice thresholds
    assert points.subject["any"] == pytest.approx(0.25)
    assert all(points.subject[name] == pytest.approx(0.55) for name in SUBTYPES)
    assert points.slice is None
    assert points.rules["CPH"] == RULE_YOUDEN and "0.95" in points.rules["any"]
    assert points.source == "hand-made" and not points.is_default
    with pytest.raises(ValueError, match="subject-level labels"):
        select_operating_points({"slice": subject}, source="x")


def _sweep_rows(errors: list[float], dice: float, false_ml: float) -> list[SweepCase]:
    """Three bleeding cases of 10 mL with these volume errors, and one negative case."""
    bleeding = [SweepCase(10.0 + e, 10.0, dice) for e in errors]
    return [*bleeding, SweepCase(false_ml, 0.0, None)]


def test_the_voxel_threshold_gives_the_least_biased_volumes() -> None:
    sweep = {
        0.2: _sweep_rows([0.5, 3.0, 4.0], dice=0.7, false_ml=0.4),  # median error +3.0
        0.3: _sweep_rows([-0.5, 0.8, -3.0], dice=0.72, false_ml=0.1),  # -0.5
        0.4: _sweep_rows([-1.5, -2.0, -6.0], dice=0.74, false_ml=0.0),  # -2.0
    }

    choice = select_voxel_threshold(sweep)

    assert choice is not None and choice.threshold == 0.3 and choice.rule == RULE_VOXEL
    assert choice.median_abs_volume_error_ml == pytest.approx(0.8)
    assert choice.median_volume_error_ml == pytest.approx(-0.5)
    assert (choice.mean_dice, choice.false_ml_per_negative) == (pytest.approx(0.72), 0.1)
    assert (choice.bleeding_cases, choice.negative_cases) == (3, 1)
    # A tie on the volume error goes to the higher Dice, then to the higher threshold.
    errors = [0.8, -0.8, 1.0]
    tied = {t: _sweep_rows(errors, dice=d, false_ml=0.0) for t, d in ((0.2, 0.6), (0.3, 0.8))}
    assert _threshold(select_voxel_threshold(tied)) == 0.3
    same = {0.2: sweep[0.3], 0.35: sweep[0.3]}
    assert _threshold(select_voxel_threshold(same)) == 0.35
    # Without a bleeding case there is nothing to calibrate on.
    assert select_voxel_threshold({0.3: [SweepCase(0.2, 0.0, None)]}) is None
    assert select_voxel_threshold({}) is None


def _threshold(choice: VoxelChoice | None) -> float:
    assert choice is not None
    return choice.threshold


def test_the_selection_stores_the_voxel_threshold_with_its_rule() -> None:
    subject = {name: (TRUTH, SCORES) for name in CLASS_NAMES}
    sweep = {0.25: _sweep_rows([0.1, -0.2, 0.3], dice=0.8, false_ml=0.05)}

    selection = select_operating_points({"subject": subject}, source="x", voxel_sweep=sweep)
    points = selection.operating_points()

    assert points.hemorrhage_voxel == 0.25
    assert points.rules["voxel.hemorrhage"] == RULE_VOXEL
    assert selection.to_dict()["voxel"]["hemorrhage"]["threshold"] == 0.25
    assert "Hemorrhage voxels from probability 0.25" in format_operating_points(selection)
    plain = select_operating_points({"subject": subject}, source="x").operating_points()
    assert plain.hemorrhage_voxel is None and "voxel.hemorrhage" not in plain.rules
    assert VOXEL_SWEEP[0] == 0.1 and VOXEL_SWEEP[-1] == 0.5 and len(VOXEL_SWEEP) == 9


@pytest.fixture
def config_file(tmp_path: Path, tiny_overrides: dict[str, Any]) -> Path:
    synthetic = {
        "train_cases": 2,
        "val_cases": 4,
        "test_cases": 1,
        "generator": {"rows": 64, "columns": 64},
    }
    config = tiny_config(tmp_path, tiny_overrides)
    data = config.model_dump(mode="json")
    data["data"]["synthetic"].update(synthetic)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_operating_points_travel_from_the_val_split_into_the_weights(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_main(["--config", str(config_file)]) == EXIT_OK
    checkpoint = json.loads(capsys.readouterr().out)["best_checkpoint"]

    assert train_main(["operating-points", "--config", str(config_file)]) == EXIT_OK
    assert "Operating points from val split" in capsys.readouterr().out
    written = json.loads((tmp_path / "run" / "operating_points.json").read_text())
    assert written["split"] == "val" and written["n_cases"] == 4
    assert written["checkpoint"]["path"] == checkpoint
    subject = written["operating_points"]["subject"]
    assert set(subject) == set(CLASS_NAMES) and all(0 < t <= 1 for t in subject.values())
    assert set(written["selection"]) == {"subject", "slice", "voxel"}
    voxel = written["operating_points"]["voxel"]["hemorrhage"]
    assert voxel in VOXEL_SWEEP

    # More seeds of the val block than the run validates on.
    more = tmp_path / "more_points.json"
    command = ["operating-points", "--config", str(config_file), "--cases", "6", "--out", str(more)]
    assert train_main(command) == EXIT_OK
    assert json.loads(more.read_text())["n_cases"] == 6
    capsys.readouterr()

    weights = tmp_path / "with_points.pt"
    export = ["export", "--checkpoint", checkpoint, "--out", str(weights), "--version", "0.0.2"]
    points_file = str(tmp_path / "run" / "operating_points.json")
    assert train_main([*export, "--operating-points", points_file]) == EXIT_OK
    loaded = load_weights(weights, expected_sha256=json.loads(capsys.readouterr().out)["sha256"])
    assert not loaded.operating_points.is_default
    assert dict(loaded.operating_points.subject) == subject
    assert loaded.operating_points.hemorrhage_voxel == voxel
    assert loaded.operating_points.slice is not None

    # Table 2 at the weights' own thresholds.
    evaluate = ["--config", str(config_file), "--weights", str(weights), "--split", "val"]
    assert eval_main([*evaluate, "--operating-points", "weights"]) == EXIT_OK
    assert "decision thresholds per output: any" in capsys.readouterr().out

    # Thresholds chosen for another network are refused.
    written["checkpoint"]["sha256"] = "0" * 64
    other = tmp_path / "other_points.json"
    other.write_text(json.dumps(written), encoding="utf-8")
    assert train_main([*export, "--operating-points", str(other)]) == EXIT_FAILURE
    assert "not from" in capsys.readouterr().err


def test_export_without_operating_points_falls_back_to_one_half(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_main(["--config", str(config_file), "--max-steps", "1"]) == EXIT_OK
    checkpoint = json.loads(capsys.readouterr().out)["last_checkpoint"]
    weights = tmp_path / "plain.pt"

    export = ["export", "--checkpoint", checkpoint, "--out", str(weights), "--version", "0.0.3"]
    assert train_main(export) == EXIT_OK

    points = load_weights(weights).operating_points
    assert points.is_default
    assert set(points.subject.values()) == {0.5}
