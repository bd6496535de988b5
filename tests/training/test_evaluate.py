"""Table 2 / Table 3 / volume errors on toy predictions with hand-computed answers; the report."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.labels import BRAIN, HEMORRHAGE, NON_BRAIN
from ichnet_core.models import create_model
from training.baselines import create_baseline
from training.data.case import SegKind
from training.eval_report import format_markdown, write_report
from training.evaluate import (
    SUBJECT_FROM_SLICES,
    CasePrediction,
    Evaluator,
    predict_case,
)

from .conftest import make_phantom_case


def _toy() -> tuple[Evaluator, list]:
    """Two cases: A bleeds (CPH) on slices 1-2, B is negative."""
    a = make_phantom_case("toy/a", slices=4, bleed_slices=(1, 2), subtype=0)
    b = make_phantom_case("toy/b", slices=4, bleed_slices=())
    evaluator = Evaluator(threshold=0.5)
    # Case A: subject any 0.8 (TP), CPH 0.3 (FN); slices any [0.1, 0.9, 0.4, 0.6].
    slices_a = np.zeros((4, 6), np.float32)
    slices_a[:, 0] = [0.1, 0.9, 0.4, 0.6]
    labels_a = a.seg.copy()
    labels_a[2][labels_a[2] == HEMORRHAGE] = BRAIN  # misses the bleed on slice 2
    prediction_a = CasePrediction(
        "toy/a", np.array([0.8, 0.3, 0, 0, 0, 0], np.float32), slices_a, labels_a
    )
    # Case B: subject any 0.7 (FP); slices any [0.2, 0.2, 0.7, 0.1]; predicts 3 bleed pixels.
    slices_b = np.zeros((4, 6), np.float32)
    slices_b[:, 0] = [0.2, 0.2, 0.7, 0.1]
    labels_b = b.seg.copy()
    labels_b[0, 20, 20:23] = HEMORRHAGE
    prediction_b = CasePrediction(
        "toy/b", np.array([0.7, 0.1, 0, 0, 0, 0], np.float32), slices_b, labels_b
    )
    evaluator.add(a, prediction_a)
    evaluator.add(b, prediction_b)
    return evaluator, [a, b]


def test_tables_match_hand_computed_values() -> None:
    evaluator, (a, _) = _toy()
    result = evaluator.result()
    subject = result.table2["subject"]["any"]
    assert subject is not None
    # Subject any: A positive scored 0.8, B negative scored 0.7: TP 1, FP 1.
    assert (subject.n, subject.positives) == (2, 1)
    assert subject.accuracy == pytest.approx(0.5)
    assert subject.sensitivity == pytest.approx(1.0)
    assert subject.specificity == pytest.approx(0.0)
    assert subject.f1 == pytest.approx(2 / 3)
    assert subject.auc == pytest.approx(1.0)
    # Subject CPH: only A positive, scored 0.3 (< 0.5): sensitivity 0, AUC 1 (0.3 > 0.1).
    cph = result.table2["subject"]["CPH"]
    assert cph is not None and cph.sensitivity == 0.0 and cph.auc == pytest.approx(1.0)
    # Slice any over 8 slices: positives A1, A2 (0.9, 0.4); calls >= 0.5: A1, A3, B2.
    # TP 1 (A1), FN 1 (A2), FP 2 (A3, B2), TN 4.
    slices = result.table2["slice"]["any"]
    assert slices is not None
    assert slices.accuracy == pytest.approx(5 / 8)
    assert slices.sensitivity == pytest.approx(0.5)
    assert slices.specificity == pytest.approx(4 / 6)
    assert slices.f1 == pytest.approx(2 / (2 + 2 + 1))
    # AUC: 0.9 beats all 6 negatives; 0.4 beats 0.1, 0.2, 0.2, 0.1 (4 of 6): 10 / 12.
    assert slices.auc == pytest.approx(10 / 12)
    # Subtype without any positive: AUC undefined, specificity defined.
    ivh = result.table2["slice"]["IVH"]
    assert ivh is not None and ivh.auc is None and ivh.specificity == pytest.approx(1.0)

    # Dice: hemorrhage over A only (half the bleed found: 2 I / (P + T) = 2/3).
    bleed = int(np.count_nonzero(a.seg == HEMORRHAGE))
    assert result.table3["hemorrhage"]["dice"] == pytest.approx(
        2 * (bleed / 2) / (bleed / 2 + bleed)
    )
    assert result.table3["hemorrhage"]["n"] == 1
    assert result.table3["brain"]["n"] == 2 and result.table3["non-brain"]["n"] == 2
    assert result.table3["brain"]["dice"] < 1.0  # B's 3 false bleed pixels came from brain
    assert result.table3["mean"]["dice"] == pytest.approx(
        np.mean([result.table3[k]["dice"] for k in ("non-brain", "brain", "hemorrhage")])
    )
    # Volumes: voxel 0.8 x 0.8 x 5 mm = 3.2 uL.
    voxel_ml = 0.8 * 0.8 * 5.0 / 1000
    volume = result.volume
    assert volume is not None
    assert volume["mean_absolute_error_ml"] == pytest.approx((bleed / 2 + 3) * voxel_ml / 2)
    assert volume["mean_relative_error"] == pytest.approx(0.5)
    assert volume["false_positive_ml_in_negative_cases"] == pytest.approx(3 * voxel_ml)


def test_hemorrhage_only_truth_scores_only_hemorrhage() -> None:
    case = make_phantom_case("toy/h", bleed_slices=(1,))
    only_bleed = np.where(case.seg == HEMORRHAGE, HEMORRHAGE, NON_BRAIN).astype(np.uint8)
    case = dataclasses.replace(case, seg=only_bleed, seg_kind=SegKind.HEMORRHAGE)
    evaluator = Evaluator()
    perfect = make_phantom_case("toy/h", bleed_slices=(1,)).seg  # predicts brain too
    evaluator.add(case, CasePrediction("toy/h", None, None, perfect))
    result = evaluator.result()
    assert result.table3["hemorrhage"]["dice"] == pytest.approx(1.0)
    assert result.table3["brain"]["n"] == 0 and result.table3["mean"]["dice"] is None


def test_report_files_have_the_expected_keys(tmp_path: Path) -> None:
    evaluator, _ = _toy()
    result = evaluator.result()
    paths = write_report(result, tmp_path, title="toy")
    data = json.loads(paths["json"].read_text())
    assert set(data) >= {"n_cases", "threshold", "table2", "table3", "hemorrhage_volume"}
    assert set(data["table2"]) == {"subject", "slice"}
    assert set(data["table2"]["subject"]) == {"any", "CPH", "IVH", "EDH", "SDH", "SAH"}
    assert set(data["table2"]["slice"]["any"]) == {
        "n",
        "positives",
        "accuracy",
        "sensitivity",
        "specificity",
        "f1",
        "auc",
    }
    assert set(data["table3"]) == {"non-brain", "brain", "hemorrhage", "mean"}
    markdown = paths["markdown"].read_text()
    assert "| slice | any | 8 | 2 | 0.625 | 0.500 | 0.667 | 0.400 | 0.833 |" in markdown
    assert "| hemorrhage | 0.667 | 1 |" in markdown
    assert paths["roc_subject"].stat().st_size > 0 and paths["roc_slice"].stat().st_size > 0
    assert format_markdown(result, "toy") == markdown


def test_cases_csv_names_each_case_with_its_scores_and_volumes(tmp_path: Path) -> None:
    """The per-case rows: what a missed bleed or a false alarm is looked up by."""
    evaluator, (a, _) = _toy()
    paths = write_report(evaluator.result(), tmp_path, title="toy")
    with paths["cases"].open(newline="") as handle:
        rows = {row["case_id"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"toy/a", "toy/b"}
    voxel_ml = 0.8 * 0.8 * 5.0 / 1000
    bleed = int(np.count_nonzero(a.seg == HEMORRHAGE))
    row_a, row_b = rows["toy/a"], rows["toy/b"]
    assert (row_a["true_any"], row_a["true_CPH"], row_b["true_any"]) == ("1", "1", "0")
    assert float(row_a["p_any"]) == pytest.approx(0.8)
    assert float(row_b["p_CPH"]) == pytest.approx(0.1)
    assert float(row_a["max_slice_any"]) == pytest.approx(0.9)
    assert float(row_b["max_slice_any"]) == pytest.approx(0.7)
    assert float(row_a["true_ml"]) == pytest.approx(bleed * voxel_ml, rel=1e-5)
    assert float(row_a["segmented_ml"]) == pytest.approx(bleed / 2 * voxel_ml, rel=1e-5)
    assert float(row_a["dice_hemorrhage"]) == pytest.approx(2 / 3, rel=1e-5)
    assert float(row_b["segmented_ml"]) == pytest.approx(3 * voxel_ml, rel=1e-5)
    assert row_b["dice_hemorrhage"] == "0"  # 3 false pixels, no truth: Dice 0


def test_cases_csv_leaves_unknown_cells_empty(tmp_path: Path) -> None:
    """A case without segmentation output or subject head: empty cells, not zeros."""
    case = make_phantom_case("toy/c", slices=2, bleed_slices=())
    evaluator = Evaluator()
    evaluator.add(case, CasePrediction("toy/c", None, None, None))
    paths = write_report(evaluator.result(), tmp_path, title="toy")
    with paths["cases"].open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["true_any"] == "0"
    assert row["p_any"] == row["max_slice_any"] == row["segmented_ml"] == ""


def test_predict_case_runs_models_with_and_without_heads(tiny_overrides: dict[str, Any]) -> None:
    case = make_phantom_case(size=40)
    model = create_model("ichnet", **tiny_overrides).eval()
    prediction = predict_case(model, case, ModelGrid(32), torch.device("cpu"))
    assert prediction.labels is not None and prediction.labels.shape == case.hu.shape
    assert prediction.slice_probabilities is not None
    assert prediction.slice_probabilities.shape == (4, 6)
    assert set(prediction.loss_terms) == {
        "seg",
        "slice_any",
        "slice_subtypes",
        "subject_any",
        "subject_subtypes",
    }
    slices_only = create_baseline("resnet2d", width=4, input_size=32).eval()
    derived = predict_case(slices_only, case, ModelGrid(32), torch.device("cpu"))
    assert derived.subject_source == SUBJECT_FROM_SLICES and derived.labels is None
    assert derived.subject_probabilities is not None and derived.slice_probabilities is not None
    np.testing.assert_allclose(
        derived.subject_probabilities, derived.slice_probabilities.max(axis=0)
    )


def test_compartment_volumes_and_bootstrap_intervals() -> None:
    # Two SDH cases; the prediction finds the bleed but calls half of it SAH.
    evaluator = Evaluator()
    for index in range(2):
        case = make_phantom_case(f"toy/c{index}", slices=3, bleed_slices=(1,), subtype=3)
        truth = np.where(case.seg == HEMORRHAGE, 4, 0).astype(np.uint8)  # SDH = 1 + 3
        case = dataclasses.replace(case, compartments=truth)
        predicted = truth.copy()
        rows = np.nonzero(predicted[1].any(axis=1))[0]
        predicted[1, rows[: len(rows) // 2]] = np.where(
            predicted[1, rows[: len(rows) // 2]] > 0, 5, 0
        )
        subject = np.array([0.9 - 0.5 * index, 0, 0, 0.8, 0, 0], np.float32)
        evaluator.add(
            case,
            CasePrediction(case.case_id, subject, None, case.seg, compartments=predicted),
        )
    negative = make_phantom_case("toy/n", slices=3, bleed_slices=())
    evaluator.add(
        negative, CasePrediction("toy/n", np.full(6, 0.2, np.float32), None, negative.seg)
    )
    result = evaluator.result(bootstrap_replicates=200)
    sdh, sah = result.compartment_volume["SDH"], result.compartment_volume["SAH"]
    assert sdh["n"] == sah["n"] == 2
    # What SDH lost, SAH gained: equal and opposite mean errors, the total volume is right.
    assert sah["mean_error_ml"] > 0
    assert sdh["mean_error_ml"] == pytest.approx(-sah["mean_error_ml"])
    assert result.compartment_volume["CPH"]["mean_absolute_error_ml"] == 0.0
    assert result.volume is not None and result.volume["median_absolute_error_ml_positive"] == 0.0
    dice_interval = result.intervals["dice_hemorrhage"]
    assert dice_interval is not None and dice_interval.low == dice_interval.high == 1.0
    auc = result.intervals["subject_auc_any"]
    assert auc is not None and auc.low == 1.0  # both positives outscore the negative
    data = result.to_dict()
    assert set(data["intervals_95"]) >= {"subject_auc_any", "slice_auc_any", "dice_hemorrhage"}
    assert "95 % intervals" in format_markdown(result)
    assert "| SDH | 2 |" in format_markdown(result)
    # Per case: each compartment's labelled and segmented mL (empty where unknown).
    first, _, unknown = result.cases
    assert first["true_ml_SDH"] == pytest.approx(first["true_ml"])
    assert first["segmented_ml_SDH"] + first["segmented_ml_SAH"] == pytest.approx(
        first["segmented_ml"]
    )
    assert 0 < first["segmented_ml_SAH"] < first["true_ml"] and first["true_ml_SAH"] == 0.0
    assert unknown["true_ml_SDH"] is None and unknown["segmented_ml_SDH"] is None


def test_found_is_the_share_of_each_compartments_voxels_segmented_as_blood() -> None:
    # One SDH case; the prediction segments the upper half of the bleed's rows (calling them
    # SAH: found counts blood of any compartment) and misses the rest.
    case = make_phantom_case("toy/c", slices=3, bleed_slices=(1,), subtype=3)
    truth = np.where(case.seg == HEMORRHAGE, 4, 0).astype(np.uint8)
    case = dataclasses.replace(case, compartments=truth)
    labels = case.seg.copy()
    rows = np.nonzero((labels[1] == HEMORRHAGE).any(axis=1))[0]
    missed = rows[len(rows) // 2 :]
    labels[1, missed] = np.where(labels[1, missed] == HEMORRHAGE, 1, labels[1, missed])
    predicted = np.where(labels == HEMORRHAGE, 5, 0).astype(np.uint8)
    evaluator = Evaluator()
    subject = np.array([0.9, 0, 0, 0.8, 0, 0], np.float32)
    evaluator.add(case, CasePrediction("toy/c", subject, None, labels, compartments=predicted))
    result = evaluator.result()
    expected = np.count_nonzero(labels == HEMORRHAGE) / np.count_nonzero(truth == 4)
    assert 0.0 < expected < 1.0
    sdh = result.compartment_volume["SDH"]
    assert sdh["found"] == pytest.approx(expected)
    assert result.compartment_volume["CPH"]["found"] is None
    # Found, but every found voxel named SAH; the case's Dice is the SDH cases' Dice.
    assert sdh["named"] == 0.0
    assert sdh["case_dice"] == pytest.approx(result.cases[0]["dice_hemorrhage"])
    assert sdh["case_dice_n"] == 1 and 0.0 < sdh["case_dice"] < 1.0
    assert result.compartment_volume["CPH"]["case_dice"] is None
    table = format_markdown(result)
    assert "labelled voxels found" in table
    assert f"| {sdh['found']:.3f} | 0.000 | {sdh['case_dice']:.3f} (1) |" in table


def test_named_and_case_dice_separate_the_compartments_of_a_mixed_series() -> None:
    # One SDH series found whole and named so, one SAH series missed but for a few voxels that
    # are named CPH: each compartment's figures come from its own series only.
    evaluator = Evaluator()
    subject = np.array([0.9, 0, 0, 0.8, 0, 0], np.float32)
    for name, subtype in (("sdh", 3), ("sah", 4)):
        case = make_phantom_case(f"toy/{name}", slices=3, bleed_slices=(1,), subtype=subtype)
        truth = np.where(case.seg == HEMORRHAGE, subtype + 1, 0).astype(np.uint8)
        case = dataclasses.replace(case, compartments=truth)
        labels = case.seg.copy()
        predicted = truth.copy()
        if name == "sah":
            kept = np.zeros_like(labels, bool)
            kept[1, np.nonzero((labels[1] == HEMORRHAGE).any(axis=1))[0][:1]] = True
            labels[(labels == HEMORRHAGE) & ~kept] = 1
            predicted = np.where(labels == HEMORRHAGE, 1, 0).astype(np.uint8)
        evaluator.add(
            case, CasePrediction(case.case_id, subject, None, labels, compartments=predicted)
        )
    result = evaluator.result()
    sdh, sah = result.compartment_volume["SDH"], result.compartment_volume["SAH"]
    assert (sdh["found"], sdh["named"], sdh["case_dice"]) == (1.0, 1.0, 1.0)
    assert 0.0 < sah["found"] < 0.5 and sah["named"] == 0.0
    assert (
        sah["case_dice"] == pytest.approx(result.cases[1]["dice_hemorrhage"])
        and sah["case_dice"] < 0.5
    )
    assert result.compartment_volume["CPH"]["named"] is None  # nothing labelled CPH was found


def test_the_voxel_sweep_measures_what_deciding_at_each_threshold_gives(
    tiny_overrides: dict[str, Any],
) -> None:
    """Each swept volume and Dice is the one the labels decided at that threshold have, and a
    higher threshold never segments more."""
    case = make_phantom_case(size=40, bleed_slices=(1, 2))
    model = create_model("ichnet", **tiny_overrides).eval()
    sweep = (0.2, 0.34, 0.5)
    swept = predict_case(model, case, ModelGrid(32), torch.device("cpu"), voxel_sweep=sweep).swept
    assert list(swept) == list(sweep)
    volumes = [swept[t][0] for t in sweep]
    assert volumes == sorted(volumes, reverse=True) and volumes[0] > 0
    evaluator = Evaluator()
    for threshold in sweep:
        decided = predict_case(
            model, case, ModelGrid(32), torch.device("cpu"), hemorrhage_threshold=threshold
        )
        evaluator.add(case, decided)
        assert decided.labels is not None
        row = evaluator.cases[-1]
        assert row["segmented_ml"] == pytest.approx(swept[threshold][0])
        assert row["dice_hemorrhage"] == pytest.approx(swept[threshold][1])
    plain = predict_case(model, case, ModelGrid(32), torch.device("cpu"))
    assert plain.swept == {}
