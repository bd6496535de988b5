"""Metrics against values computed by hand on toy examples."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import average_ranks, binary_metrics, dice, roc_auc, roc_curve, volume_errors


def test_binary_metrics_match_hand_counts() -> None:
    # Threshold 0.5 -> calls [1, 0, 0, 0]: TP 1, FN 1, TN 2, FP 0.
    metrics = binary_metrics(np.array([1, 0, 1, 0]), np.array([0.9, 0.4, 0.35, 0.1]))
    assert metrics.n == 4 and metrics.positives == 2
    assert metrics.accuracy == pytest.approx(0.75)
    assert metrics.sensitivity == pytest.approx(0.5)
    assert metrics.specificity == pytest.approx(1.0)
    assert metrics.f1 == pytest.approx(2 / 3)
    # Pairs (pos, neg): (.9,.4) (.9,.1) (.35,.1) ranked right, (.35,.4) wrong -> 3/4.
    assert metrics.auc == pytest.approx(0.75)


def test_auc_counts_ties_as_one_half_and_is_undefined_for_one_class() -> None:
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([1, 1, 0]), np.array([0.7, 0.2, 0.2])) == pytest.approx(0.75)
    assert roc_auc(np.array([1, 1]), np.array([0.1, 0.9])) is None
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0])), [2.5, 1.0, 2.5])


def test_auc_agrees_with_the_area_under_the_roc_curve() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(200) < 0.3
    score = np.round(rng.random(200) + truth * 0.5, 1)  # many ties
    fpr, tpr = roc_curve(truth, score)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert roc_auc(truth, score) == pytest.approx(area)


def test_undefined_rates_are_none_not_zero() -> None:
    metrics = binary_metrics(np.zeros(3), np.array([0.1, 0.7, 0.2]))
    assert metrics.sensitivity is None and metrics.auc is None
    assert metrics.specificity == pytest.approx(2 / 3)
    assert metrics.f1 == pytest.approx(0.0)  # a false positive and nothing found


def test_dice_and_volume_errors() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 pixels
    b[:2, :1] = True  # 2 pixels, both inside a
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) is None
    errors = volume_errors(np.array([12.0, 3.0, 1.0]), np.array([10.0, 4.0, 0.0]))
    assert errors.mean_absolute_error_ml == pytest.approx((2 + 1 + 1) / 3)
    assert errors.mean_error_ml == pytest.approx((2 - 1 + 1) / 3)
    assert errors.mean_relative_error == pytest.approx((0.2 + 0.25) / 2)
    assert errors.n_relative == 2
