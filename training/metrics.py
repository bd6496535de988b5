"""Evaluation metrics in numpy: binary classification, ROC/AUC, Dice, volume error.

A metric that is undefined on the data (sensitivity without positives, AUC with one class,
Dice of two empty masks) is ``None``, never a made-up 0 or 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np

#: The two levels a classification is measured at: per subject (series) and per slice.
LEVELS: Final[tuple[str, str]] = ("subject", "slice")


def format_metric(value: float | None, digits: int = 3) -> str:
    """A metric for a report table; ``n/a`` when it is undefined on the data."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator > 0 else None


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    # Boundaries of runs of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + 1 + end) / 2.0
    return ranks


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    """Area under the ROC curve by the Mann-Whitney rank statistic (ties count one half).

    ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with ``R_pos`` the rank sum of the
    positives: the probability that a random positive scores above a random negative.
    ``None`` without both classes.
    """
    y_true = np.asarray(y_true).astype(bool)
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = average_ranks(np.asarray(y_score, dtype=np.float64))
    rank_sum = float(ranks[y_true].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def roc_curve(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score threshold, from (0, 0) to (1, 1)."""
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    order = np.argsort(-y_score, kind="mergesort")
    scores, truth = y_score[order], y_true[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    tps = np.cumsum(truth)[last_of_tie]
    fps = np.cumsum(~truth)[last_of_tie]
    positives, negatives = max(int(truth.sum()), 1), max(int((~truth).sum()), 1)
    return np.r_[0.0, fps / negatives], np.r_[0.0, tps / positives]


@dataclass(frozen=True)
class BinaryMetrics:
    """Table 2 metrics of one class at one level."""

    n: int
    positives: int
    accuracy: float | None
    sensitivity: float | None
    specificity: float | None
    f1: float | None
    auc: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def binary_metrics(
    y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5
) -> BinaryMetrics:
    """Accuracy, sensitivity, specificity, F1 at ``threshold`` and the threshold-free AUC.

    Parameters
    ----------
    y_true:
        0/1 labels.
    y_score:
        Probabilities; a score ``>= threshold`` is a positive call.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape:
        raise ValueError(f"labels {y_true.shape} and scores {y_score.shape} differ in shape")
    predicted = y_score >= threshold
    tp = int(np.sum(predicted & y_true))
    tn = int(np.sum(~predicted & ~y_true))
    fp = int(np.sum(predicted & ~y_true))
    fn = int(np.sum(~predicted & y_true))
    return BinaryMetrics(
        n=int(y_true.size),
        positives=int(y_true.sum()),
        accuracy=_ratio(tp + tn, y_true.size),
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        auc=roc_auc(y_true, y_score),
    )


def dice(prediction: np.ndarray, truth: np.ndarray) -> float | None:
    """Dice of two boolean masks; ``None`` when both are empty."""
    prediction, truth = np.asarray(prediction, dtype=bool), np.asarray(truth, dtype=bool)
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return None
    return 2.0 * int(np.sum(prediction & truth)) / total


def mean_or_none(values: list[float]) -> float | None:
    """Mean of ``values``, ``None`` for an empty list."""
    return float(np.mean(values)) if values else None


@dataclass(frozen=True)
class VolumeErrors:
    """Hemorrhage volume agreement over the cases with a hemorrhage segmentation."""

    n: int
    mean_absolute_error_ml: float | None
    mean_error_ml: float | None
    #: Mean of |predicted - true| / true over cases with true volume > 0.
    mean_relative_error: float | None
    n_relative: int
    #: Median |predicted - true| over all cases, and over the cases with true volume > 0.
    median_absolute_error_ml: float | None = None
    median_absolute_error_ml_positive: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def volume_errors(predicted_ml: np.ndarray, true_ml: np.ndarray) -> VolumeErrors:
    """Absolute, signed and relative volume errors."""
    predicted_ml = np.asarray(predicted_ml, dtype=np.float64)
    true_ml = np.asarray(true_ml, dtype=np.float64)
    error = predicted_ml - true_ml
    bleeding = true_ml > 0
    relative = np.abs(error[bleeding]) / true_ml[bleeding]
    return VolumeErrors(
        n=int(true_ml.size),
        mean_absolute_error_ml=float(np.mean(np.abs(error))) if error.size else None,
        mean_error_ml=float(np.mean(error)) if error.size else None,
        mean_relative_error=float(np.mean(relative)) if relative.size else None,
        n_relative=int(relative.size),
        median_absolute_error_ml=float(np.median(np.abs(error))) if error.size else None,
        median_absolute_error_ml_positive=(
            float(np.median(np.abs(error[bleeding]))) if bleeding.any() else None
        ),
    )
