"""Operating points: per-output decision thresholds chosen on a validation split.

``any``: the highest specificity with sensitivity >= :data:`ANY_MIN_SENSITIVITY` (a missed bleed
costs more than a second look); each subtype: Youden's J. The voxel threshold of hemorrhage
(:func:`select_voxel_threshold`): the swept threshold whose hemorrhage volumes are unbiased, the
median signed volume error over the bleeding cases closest to zero, so the volume a radiologist
reads off the SR is neither systematically low nor high. The thresholds are
stored with the weights (:class:`ichnet_core.operating_points.OperatingPoints`) and used by the
node and by ``Evaluator(operating_points=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np

from ichnet_core.labels import CLASS_NAMES
from ichnet_core.operating_points import (
    DEFAULT_THRESHOLD,
    VOXEL_CLASS,
    VOXEL_KEY,
    OperatingPoints,
)
from training.evaluate import SweepCase
from training.metrics import LEVELS, binary_metrics, format_metric

#: Sensitivity the ``any`` operating point must reach on the validation split.
ANY_MIN_SENSITIVITY: Final[float] = 0.95
RULE_MIN_SENSITIVITY: Final[str] = "max specificity with sensitivity >= {target:g}"
RULE_YOUDEN: Final[str] = "max Youden J (sensitivity + specificity - 1)"
RULE_DEFAULT: Final[str] = "default {threshold:g}: the validation split lacks {missing}"
RULE_VOXEL: Final[str] = (
    "median signed volume error over bleeding cases closest to 0 mL (ties: higher mean Dice, "
    "then higher threshold)"
)
#: Hemorrhage-probability thresholds ``ichnet-train operating-points`` measures volumes at.
VOXEL_SWEEP: Final[tuple[float, ...]] = tuple(round(0.05 * k, 2) for k in range(2, 11))


@dataclass(frozen=True)
class ThresholdChoice:
    """One chosen threshold and what it achieves on the data it was chosen on."""

    threshold: float
    rule: str
    sensitivity: float | None
    specificity: float | None
    n: int
    positives: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cut_points(
    y_true: np.ndarray, y_score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every decision the scores allow, as (threshold, sensitivity, specificity) arrays.

    Cut ``k`` calls positive exactly the samples whose score is at least the ``k``-th highest
    distinct score. Its threshold is halfway to the next lower distinct score (the lowest
    score itself for the last cut), so the decision on these data is the same as at the score
    itself while a slightly lower score on new data is not flipped by a hair.
    """
    order = np.argsort(-y_score, kind="mergesort")
    scores, truth = y_score[order], y_true[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    distinct = scores[last_of_tie]
    tps = np.cumsum(truth)[last_of_tie]
    fps = np.cumsum(~truth)[last_of_tie]
    positives, negatives = int(truth.sum()), int((~truth).sum())
    thresholds = np.r_[(distinct[:-1] + distinct[1:]) / 2.0, distinct[-1]]
    return thresholds, tps / positives, 1.0 - fps / negatives


def select_threshold(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    min_sensitivity: float | None = None,
) -> ThresholdChoice:
    """The decision threshold of one output on validation labels and scores.

    With ``min_sensitivity``: the highest specificity among the thresholds whose sensitivity
    reaches it. Without: the highest Youden J. Ties go to the higher sensitivity (the lower
    threshold): a missed bleed costs more than a second look. A score ``>=`` the threshold is a
    positive call. Without both classes no threshold can be chosen: :data:`DEFAULT_THRESHOLD`,
    and the rule says why.

    Parameters
    ----------
    y_true:
        0/1 labels.
    y_score:
        Probabilities in [0, 1].
    min_sensitivity:
        Required sensitivity in (0, 1], or ``None`` for Youden's J.

    Raises
    ------
    ValueError
        When labels and scores differ in shape or ``min_sensitivity`` is out of range.
    """
    y_true = np.asarray(y_true).astype(bool).reshape(-1)
    y_score = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y_true.shape != y_score.shape:
        raise ValueError(f"labels {y_true.shape} and scores {y_score.shape} differ in shape")
    if min_sensitivity is not None and not 0.0 < min_sensitivity <= 1.0:
        raise ValueError(f"min_sensitivity must be in (0, 1], found {min_sensitivity}")
    positives = int(y_true.sum())
    negatives = int(y_true.size - positives)
    if positives == 0 or negatives == 0:
        missing = "positives" if positives == 0 else "negatives"
        metrics = binary_metrics(y_true, y_score, DEFAULT_THRESHOLD)
        return ThresholdChoice(
            threshold=DEFAULT_THRESHOLD,
            rule=RULE_DEFAULT.format(threshold=DEFAULT_THRESHOLD, missing=missing),
            sensitivity=metrics.sensitivity,
            specificity=metrics.specificity,
            n=int(y_true.size),
            positives=positives,
        )
    thresholds, sensitivity, specificity = _cut_points(y_true, y_score)
    if min_sensitivity is None:
        objective = sensitivity + specificity - 1.0
        rule = RULE_YOUDEN
    else:
        # Sensitivity grows with every cut, so the last cut always qualifies.
        objective = np.where(sensitivity >= min_sensitivity - 1e-12, specificity, -np.inf)
        rule = RULE_MIN_SENSITIVITY.format(target=min_sensitivity)
    best = np.flatnonzero(objective >= objective.max() - 1e-12)
    index = int(best[-1])  # the latest cut among ties: the highest sensitivity
    return ThresholdChoice(
        threshold=float(thresholds[index]),
        rule=rule,
        sensitivity=float(sensitivity[index]),
        specificity=float(specificity[index]),
        n=int(y_true.size),
        positives=positives,
    )


@dataclass(frozen=True)
class VoxelChoice:
    """The chosen hemorrhage voxel threshold and what it gives on the validation cases."""

    threshold: float
    rule: str
    median_abs_volume_error_ml: float
    median_volume_error_ml: float
    mean_dice: float | None
    false_ml_per_negative: float | None
    bleeding_cases: int
    negative_cases: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _voxel_figures(threshold: float, rows: list[SweepCase]) -> VoxelChoice | None:
    bleeding = [r for r in rows if r.true_ml > 0]
    if not bleeding:
        return None
    errors = np.array([r.segmented_ml - r.true_ml for r in bleeding])
    dices = [r.dice for r in bleeding if r.dice is not None]
    negatives = [r.segmented_ml for r in rows if r.true_ml <= 0]
    return VoxelChoice(
        threshold=threshold,
        rule=RULE_VOXEL,
        median_abs_volume_error_ml=float(np.median(np.abs(errors))),
        median_volume_error_ml=float(np.median(errors)),
        mean_dice=float(np.mean(dices)) if dices else None,
        false_ml_per_negative=float(np.mean(negatives)) if negatives else None,
        bleeding_cases=len(bleeding),
        negative_cases=len(negatives),
    )


def select_voxel_threshold(sweep: Mapping[float, list[SweepCase]]) -> VoxelChoice | None:
    """The hemorrhage voxel threshold among the swept ones (:data:`RULE_VOXEL`).

    The median signed volume error over the bleeding cases closest to zero; ties go to the
    higher mean Dice, then to the higher threshold (less false blood). ``None`` without bleeding
    cases: the weights then keep the most-probable-class decision.

    Why the signed error and not the median absolute error the evaluation reports: the signed
    median falls steadily as the threshold rises, so the choice is stable on a validation split
    of a few dozen bleeds, while the absolute error is flat within its noise over a wide range
    (run 11 step 10080, 22 bleeding validation cases: 1.71 to 2.20 mL at every threshold).
    """
    figures = [f for t, rows in sweep.items() if (f := _voxel_figures(float(t), rows))]
    if not figures:
        return None
    return min(
        figures,
        key=lambda f: (
            round(abs(f.median_volume_error_ml), 6),
            -(f.mean_dice or 0.0),
            -f.threshold,
        ),
    )


@dataclass(frozen=True)
class OperatingPointSelection:
    """Thresholds per level and output, with what each reached on the validation split."""

    choices: dict[str, dict[str, ThresholdChoice]]
    source: str
    #: The hemorrhage voxel threshold, when a sweep was measured.
    voxel: VoxelChoice | None = None

    def operating_points(self) -> OperatingPoints:
        """The thresholds as stored with the weights."""
        subject = self.choices["subject"]
        slices = self.choices.get("slice")
        rules = {name: subject[name].rule for name in CLASS_NAMES}
        if self.voxel is not None:
            rules[f"{VOXEL_KEY}.{VOXEL_CLASS}"] = self.voxel.rule
        return OperatingPoints(
            subject={name: subject[name].threshold for name in CLASS_NAMES},
            slice={name: slices[name].threshold for name in CLASS_NAMES} if slices else None,
            source=self.source,
            rules=rules,
            hemorrhage_voxel=None if self.voxel is None else self.voxel.threshold,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            level: {name: choice.to_dict() for name, choice in rows.items()}
            for level, rows in self.choices.items()
        }
        if self.voxel is not None:
            out[VOXEL_KEY] = {VOXEL_CLASS: self.voxel.to_dict()}
        return out


def select_operating_points(
    scores: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    *,
    source: str,
    any_min_sensitivity: float = ANY_MIN_SENSITIVITY,
    voxel_sweep: Mapping[float, list[SweepCase]] | None = None,
) -> OperatingPointSelection:
    """Operating points of every output from validation truths and scores.

    ``any``: the highest specificity with sensitivity >= ``any_min_sensitivity``; each subtype:
    Youden's J (:func:`select_threshold`). Levels without scores (a model without a slice head)
    are left out; the subject level is required.

    Parameters
    ----------
    scores:
        ``{level: {class name: (truth, score)}}``, e.g. :attr:`EvalResult.scores`.
    source:
        Where the scores come from (split, cases, checkpoint), stored with the thresholds.
    voxel_sweep:
        :attr:`EvalResult.voxel_sweep`, to choose the hemorrhage voxel threshold from
        (:func:`select_voxel_threshold`); ``None``: no voxel threshold.

    Raises
    ------
    ValueError
        When the subject level has no scores for some output.
    """
    choices: dict[str, dict[str, ThresholdChoice]] = {}
    for level in LEVELS:
        rows = scores.get(level, {})
        if not all(name in rows and np.size(rows[name][0]) for name in CLASS_NAMES):
            if level == "subject":
                raise ValueError("operating points need subject-level labels and scores")
            continue
        choices[level] = {
            name: select_threshold(
                *rows[name], min_sensitivity=any_min_sensitivity if name == "any" else None
            )
            for name in CLASS_NAMES
        }
    voxel = select_voxel_threshold(voxel_sweep) if voxel_sweep else None
    return OperatingPointSelection(choices=choices, source=source, voxel=voxel)


def format_operating_points(selection: OperatingPointSelection) -> str:
    """The chosen thresholds and their validation sensitivity/specificity as Markdown."""
    lines = [f"Operating points from {selection.source}", ""]
    lines += ["| level | class | threshold | rule | sensitivity | specificity | n | positives |"]
    lines += ["|" + "---|" * 8]
    for level, rows in selection.choices.items():
        for name, c in rows.items():
            lines.append(
                f"| {level} | {name} | {c.threshold:.4f} | {c.rule} | {format_metric(c.sensitivity)} | "
                f"{format_metric(c.specificity)} | {c.n} | {c.positives} |"
            )
    if (v := selection.voxel) is not None:
        lines += [
            "",
            f"Hemorrhage voxels from probability {v.threshold:.2f} ({v.rule}): median |volume "
            f"error| {v.median_abs_volume_error_ml:.2f} mL (signed {v.median_volume_error_ml:+.2f})"
            f" over {v.bleeding_cases} bleeding cases, mean Dice {format_metric(v.mean_dice)}, "
            f"{format_metric(v.false_ml_per_negative)} mL per negative case "
            f"({v.negative_cases}).",
        ]
    return "\n".join(lines) + "\n"
