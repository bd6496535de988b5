"""Held-out evaluation: the paper's Table 2 and Table 3, hemorrhage volume error, ROC curves
(written out by :mod:`training.eval_report`).

Every case is run whole (all slices, no augmentation) on the model's input grid, like the node's
inference pipeline; segmentation probabilities are resized back to the source matrix before the
decision (argmax, or the voxel operating point), so Dice and volumes are measured at source
resolution with the case's own voxel sizes.

* Table 2: subject- and slice-level accuracy, sensitivity, specificity, F1 (at a threshold) and
  AUC for ``any`` and each subtype, over the labels that are known.
* Table 3: Dice of hemorrhage (over cases with labelled hemorrhage), brain and non-brain (over
  cases with complete segmentations) and their mean.
* Volume: mean absolute / signed / relative error of the hemorrhage volume in mL.
* Per compartment: volume errors, the share of its labelled voxels found (as blood of any
  compartment) and named so, and the mean hemorrhage Dice of the cases holding it, which shows
  on which kind of bleed the mean Dice is lost (in 2026-12 on the epidural and subdural ones).
* Operating points: Table 2 at per-output thresholds (``Evaluator(operating_points=...)``),
  chosen on a validation split by :mod:`training.operating_points`.
* Per case (``cases.csv``): truths, scores and volumes of every case, so the cases that set an
  operating point or that a model misses can be named without running the model again.
* Voxel threshold sweep (``evaluate_model(voxel_sweep=...)``): segmented volume and Dice of
  every case at each candidate hemorrhage-probability threshold, from which
  :mod:`training.operating_points` chooses the weights' voxel operating point; with operating
  points that carry one, the labels are decided at it, as the node decides them.

A model without a subject head (2-D ResNet18) gets subject probabilities as the maximum of its
slice probabilities; the report says so (``subject_source``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ichnet_core.imaging.measure import label_volume_ml, mask_volume_ml
from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.inference.pipeline import labels_at_source
from ichnet_core.labels import (
    BRAIN,
    CLASS_NAMES,
    HEMORRHAGE,
    NON_BRAIN,
    SEGMENTATION_CLASSES,
    SUBTYPES,
)
from ichnet_core.models.ichnet import seg_probabilities
from ichnet_core.operating_points import OperatingPoints
from training.bootstrap import Interval, case_bootstrap
from training.data.case import LabelledCase, SegKind
from training.data.dataset import make_sample, prepare_case
from training.data.source import CaseSource
from training.losses import Term, loss_terms
from training.metrics import (
    LEVELS,
    BinaryMetrics,
    binary_metrics,
    dice,
    mean_or_none,
    roc_auc,
    roc_curve,
    volume_errors,
)
from training.step import forward_batch

logger = logging.getLogger(__name__)

SUBJECT_FROM_MODEL: Final[str] = "model"
SUBJECT_FROM_SLICES: Final[str] = "max_of_slices"


@dataclass
class CasePrediction:
    """Model outputs for one case; ``None`` where the model has no such head."""

    case_id: str
    subject_probabilities: np.ndarray | None
    slice_probabilities: np.ndarray | None
    labels: np.ndarray | None
    compartments: np.ndarray | None = None
    subject_source: str = SUBJECT_FROM_MODEL
    loss_terms: dict[str, float] = field(default_factory=dict)
    #: Per swept hemorrhage threshold: segmented hemorrhage mL and Dice (``None`` without a
    #: labelled bleed) at source resolution.
    swept: dict[float, tuple[float, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepCase:
    """One case with a segmentation at one swept hemorrhage threshold."""

    segmented_ml: float
    true_ml: float
    dice: float | None


def predict_case(
    model: nn.Module,
    case: LabelledCase,
    grid: ModelGrid,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    *,
    hemorrhage_threshold: float | None = None,
    voxel_sweep: Sequence[float] = (),
) -> CasePrediction:
    """Run ``model`` on the whole of ``case`` and compute its loss terms on the known labels.

    Segmentation labels come from the node's own post-processing
    (``ichnet_core.inference.pipeline.labels_at_source``): probabilities back onto the source
    matrix, then the decision (at ``hemorrhage_threshold``, the voxel operating point, when
    given). For each of ``voxel_sweep`` the hemorrhage volume and Dice the decision at that
    threshold would give are kept too (cases with a segmentation only).
    """
    prepared = prepare_case(case, grid)
    sample = make_sample(prepared)
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
    ):
        batch = forward_batch(model, [sample], device)
        terms = {term.value: float(value) for term, value in loss_terms(batch).items()}
    slice_probabilities = (
        torch.sigmoid(batch.slice_logits.float()).cpu().numpy()
        if batch.slice_logits is not None
        else None
    )
    subject_source = SUBJECT_FROM_MODEL
    if batch.subject_logits is not None:
        subject_probabilities = torch.sigmoid(batch.subject_logits.float())[0].cpu().numpy()
    elif slice_probabilities is not None:
        subject_probabilities = slice_probabilities.max(axis=0)
        subject_source = SUBJECT_FROM_SLICES
    else:
        subject_probabilities = None
    labels = compartments = None
    swept: dict[float, tuple[float, float | None]] = {}
    if batch.seg_logits is not None:
        probabilities = seg_probabilities(batch.seg_logits.float()).cpu().numpy()
        labels, compartments = labels_at_source(
            probabilities, prepared.mapping, hemorrhage_threshold
        )
        if voxel_sweep and case.seg is not None:
            swept = sweep_hemorrhage_thresholds(
                prepared.mapping.to_source(probabilities[:, HEMORRHAGE]), case, voxel_sweep
            )
    return CasePrediction(
        case_id=case.case_id,
        subject_probabilities=subject_probabilities,
        slice_probabilities=slice_probabilities,
        labels=labels,
        compartments=compartments,
        subject_source=subject_source,
        loss_terms=terms,
        swept=swept,
    )


def sweep_hemorrhage_thresholds(
    hemorrhage: np.ndarray, case: LabelledCase, thresholds: Sequence[float]
) -> dict[float, tuple[float, float | None]]:
    """Segmented hemorrhage mL and Dice of ``case`` at each threshold of the source-resolution
    hemorrhage probabilities ``hemorrhage`` (``[S, rows, columns]``; the decision of
    :func:`ichnet_core.inference.pipeline.decide_classes`)."""
    if case.seg is None:
        raise ValueError(f"case {case.case_id} has no segmentation to sweep thresholds against")
    truth = case.seg == HEMORRHAGE
    voxel_ml = case.voxel_volumes_ml()
    out: dict[float, tuple[float, float | None]] = {}
    for threshold in thresholds:
        predicted = hemorrhage >= threshold
        segmented = mask_volume_ml(predicted, voxel_ml)
        out[float(threshold)] = (segmented, dice(predicted, truth) if truth.any() else None)
    return out


@dataclass
class _Scores:
    truth: list[np.ndarray] = field(default_factory=list)
    score: list[np.ndarray] = field(default_factory=list)

    def add(self, truth: np.ndarray, score: np.ndarray) -> None:
        known = ~np.isnan(truth)
        self.truth.append(truth[known])
        self.score.append(score[known])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.truth:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(self.truth), np.concatenate(self.score)


@dataclass
class EvalResult:
    """Everything the report shows; ``to_dict`` is the JSON written next to the Markdown."""

    n_cases: int
    threshold: float
    table2: dict[str, dict[str, BinaryMetrics | None]]
    table3: dict[str, dict[str, Any]]
    volume: dict[str, Any] | None
    subject_source: str | None
    loss: dict[str, float]
    roc: dict[str, dict[str, tuple[list[float], list[float]]]]
    #: Known truths and scores per level and class (operating-point selection); not in JSON.
    scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    #: Per-output thresholds Table 2 was computed at, when not the single ``threshold``.
    operating_points: OperatingPoints | None = None
    #: Case-bootstrap 95 % intervals of the headline figures (``training.bootstrap``).
    intervals: dict[str, Interval | None] = field(default_factory=dict)
    #: Volume errors per compartment (cases whose truth and prediction have compartments), each
    #: with ``found``: the share of the compartment's labelled voxels, pooled over the cases,
    #: that the model segments as hemorrhage of any compartment (None without such voxels);
    #: ``named``: the share of those found voxels it names this compartment; ``case_dice``: the
    #: mean hemorrhage Dice of the cases holding this compartment (``case_dice_n`` of them). A
    #: mean Dice over all bleeding cases hides which kind of bleed it is lost on.
    compartment_volume: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: One row per case (:meth:`Evaluator.case_row`), in the order evaluated; ``cases.csv``.
    cases: list[dict[str, Any]] = field(default_factory=list)
    #: Per swept hemorrhage threshold, the cases with a segmentation (voxel operating point
    #: selection); not in JSON.
    voxel_sweep: dict[float, list[SweepCase]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_cases": self.n_cases,
            "threshold": self.threshold,
            "operating_points": (
                self.operating_points.to_metadata() if self.operating_points is not None else None
            ),
            "table2": {
                level: {name: m.to_dict() if m is not None else None for name, m in rows.items()}
                for level, rows in self.table2.items()
            },
            "table3": self.table3,
            "hemorrhage_volume": self.volume,
            "compartment_volume": self.compartment_volume,
            "intervals_95": {
                name: interval.to_dict() if interval is not None else None
                for name, interval in self.intervals.items()
            },
            "subject_source": self.subject_source,
            "loss": self.loss,
        }


class Evaluator:
    """Accumulates predictions and truths case by case, then computes the tables."""

    def __init__(
        self, threshold: float = 0.5, operating_points: OperatingPoints | None = None
    ) -> None:
        self.threshold = threshold
        self.operating_points = operating_points
        self.n_cases = 0
        self.scores = {level: [_Scores() for _ in CLASS_NAMES] for level in LEVELS}
        self.dice: dict[str, list[float]] = {name: [] for name in SEGMENTATION_CLASSES}
        self.false_positive_ml: list[float] = []
        self.volumes: list[tuple[float, float]] = []
        self.compartment_volumes: dict[str, list[tuple[float, float]]] = {s: [] for s in SUBTYPES}
        #: Per compartment: labelled voxels segmented as hemorrhage, those of them named this
        #: compartment, and all labelled voxels.
        self.compartment_voxels: dict[str, list[int]] = {s: [0, 0, 0] for s in SUBTYPES}
        #: Per compartment: hemorrhage Dice of each case that holds it.
        self.compartment_dice: dict[str, list[float]] = {s: [] for s in SUBTYPES}
        self.subject_source: str | None = None
        self.terms: dict[str, list[float]] = {}
        self.cases: list[dict[str, Any]] = []
        self.voxel_sweep: dict[float, list[SweepCase]] = {}

    def add(self, case: LabelledCase, prediction: CasePrediction) -> None:
        """Score one case."""
        self.n_cases += 1
        row = self.case_row(case, prediction)
        self.cases.append(row)
        for name, value in prediction.loss_terms.items():
            self.terms.setdefault(name, []).append(value)
        if prediction.subject_probabilities is not None and case.subject_labels is not None:
            self.subject_source = prediction.subject_source
            for column, scores in enumerate(self.scores["subject"]):
                scores.add(
                    case.subject_labels[column : column + 1],
                    prediction.subject_probabilities[column : column + 1],
                )
        if prediction.slice_probabilities is not None and case.slice_labels is not None:
            for column, scores in enumerate(self.scores["slice"]):
                scores.add(case.slice_labels[:, column], prediction.slice_probabilities[:, column])
        if prediction.labels is None or case.seg is None:
            return
        truth_hemorrhage = case.seg == HEMORRHAGE
        predicted_hemorrhage = prediction.labels == HEMORRHAGE
        voxel_ml = case.voxel_volumes_ml()
        true_ml = label_volume_ml(case.seg, HEMORRHAGE, voxel_ml)
        predicted_ml = label_volume_ml(prediction.labels, HEMORRHAGE, voxel_ml)
        self.volumes.append((predicted_ml, true_ml))
        row |= {"true_ml": true_ml, "segmented_ml": predicted_ml}
        for threshold, (swept_ml, swept_dice) in prediction.swept.items():
            self.voxel_sweep.setdefault(threshold, []).append(
                SweepCase(swept_ml, true_ml, swept_dice)
            )
        score = dice(predicted_hemorrhage, truth_hemorrhage)
        if case.compartments is not None and prediction.compartments is not None:
            for index, name in enumerate(SUBTYPES, start=1):
                segmented = label_volume_ml(prediction.compartments, index, voxel_ml)
                labelled_ml = label_volume_ml(case.compartments, index, voxel_ml)
                self.compartment_volumes[name].append((segmented, labelled_ml))
                row |= {f"true_ml_{name}": labelled_ml, f"segmented_ml_{name}": segmented}
                labelled = case.compartments == index
                found = labelled & predicted_hemorrhage
                counts = self.compartment_voxels[name]
                counts[0] += int(np.count_nonzero(found))
                counts[1] += int(np.count_nonzero(found & (prediction.compartments == index)))
                counts[2] += int(np.count_nonzero(labelled))
                if labelled_ml > 0 and score is not None:
                    self.compartment_dice[name].append(score)
        row["dice_hemorrhage"] = score
        if true_ml > 0 and score is not None:  # labelled bleed: Dice is defined
            self.dice["hemorrhage"].append(score)
        else:
            self.false_positive_ml.append(predicted_ml)
        if case.seg_kind is SegKind.FULL:
            for value, name in ((NON_BRAIN, "non-brain"), (BRAIN, "brain")):
                score = dice(prediction.labels == value, case.seg == value)
                if score is not None:
                    self.dice[name].append(score)

    @staticmethod
    def case_row(case: LabelledCase, prediction: CasePrediction) -> dict[str, Any]:
        """Truths and scores of one case as a flat row; ``None`` where unknown.

        ``max_slice_any`` is the highest slice ``any`` probability, the evidence a subject
        decision could also be taken from; :meth:`add` fills in the volumes (mL at source
        resolution; per compartment where truth and prediction have compartments, the
        evidence a subtype decision could be checked against) and the hemorrhage Dice.
        """
        row: dict[str, Any] = {"case_id": case.case_id}
        for column, name in enumerate(CLASS_NAMES):
            truth = None if case.subject_labels is None else case.subject_labels[column]
            row[f"true_{name}"] = None if truth is None or np.isnan(truth) else int(truth)
            scores = prediction.subject_probabilities
            row[f"p_{name}"] = None if scores is None else float(scores[column])
        slices = prediction.slice_probabilities
        row["max_slice_any"] = None if slices is None else float(slices[:, 0].max())
        row |= {"true_ml": None, "segmented_ml": None, "dice_hemorrhage": None}
        for name in SUBTYPES:
            row |= {f"true_ml_{name}": None, f"segmented_ml_{name}": None}
        return row

    def threshold_of(self, level: str, name: str) -> float:
        """Decision threshold of one output: its operating point, else ``threshold``."""
        if self.operating_points is None:
            return self.threshold
        if level == "subject":
            return self.operating_points.subject[name]
        if self.operating_points.slice is not None:
            return self.operating_points.slice[name]
        return self.threshold

    def intervals(self, replicates: int) -> dict[str, Interval | None]:
        """Case-bootstrap 95 % intervals of the headline figures (``training.bootstrap``)."""
        subject = self.scores["subject"]
        slices = self.scores["slice"]

        def auc_of(scores: _Scores) -> Callable[[np.ndarray], float | None]:
            def statistic(idx: np.ndarray) -> float | None:
                return roc_auc(
                    np.concatenate([scores.truth[i] for i in idx]),
                    np.concatenate([scores.score[i] for i in idx]),
                )

            return statistic

        def macro_subtype_auc(idx: np.ndarray) -> float | None:
            values = [auc_of(scores)(idx) for scores in subject[1:]]
            known = [v for v in values if v is not None]
            return float(np.mean(known)) if len(known) == len(values) else None

        dice_values = np.array(self.dice["hemorrhage"])
        errors = np.array([abs(p - t) for p, t in self.volumes if t > 0])
        run = functools.partial(case_bootstrap, replicates=replicates)
        return {
            "subject_auc_any": run(auc_of(subject[0]), len(subject[0].truth)),
            "subject_auc_subtypes_macro": run(macro_subtype_auc, len(subject[0].truth)),
            "slice_auc_any": run(auc_of(slices[0]), len(slices[0].truth)),
            "dice_hemorrhage": run(lambda idx: float(dice_values[idx].mean()), dice_values.size),
            "median_abs_volume_error_ml_positive": run(
                lambda idx: float(np.median(errors[idx])), errors.size
            ),
        }

    def _compartment_shares(self, name: str) -> dict[str, Any]:
        """``found``, ``named`` and ``case_dice`` of one compartment (see
        :attr:`EvalResult.compartment_volume`)."""
        found, named, labelled = self.compartment_voxels[name]
        dices = self.compartment_dice[name]
        return {
            "found": found / labelled if labelled else None,
            "named": named / found if found else None,
            "case_dice": mean_or_none(dices),
            "case_dice_n": len(dices),
        }

    def result(self, bootstrap_replicates: int = 0) -> EvalResult:
        """The tables over all cases added so far (with bootstrap intervals when asked)."""
        table2: dict[str, dict[str, BinaryMetrics | None]] = {}
        roc: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
        arrays: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        for level in LEVELS:
            table2[level], roc[level], arrays[level] = {}, {}, {}
            for name, scores in zip(CLASS_NAMES, self.scores[level], strict=True):
                truth, score = scores.arrays()
                arrays[level][name] = (truth, score)
                table2[level][name] = (
                    binary_metrics(truth, score, self.threshold_of(level, name))
                    if truth.size
                    else None
                )
                if truth.size and 0 < truth.sum() < truth.size:
                    fpr, tpr = roc_curve(truth, score)
                    roc[level][name] = (fpr.tolist(), tpr.tolist())
        table3: dict[str, dict[str, Any]] = {
            name: {"dice": mean_or_none(values), "n": len(values)}
            for name, values in self.dice.items()
        }
        class_means = [table3[name]["dice"] for name in SEGMENTATION_CLASSES]
        table3["mean"] = {
            "dice": float(np.mean(class_means))
            if all(v is not None for v in class_means)
            else None,
            "n": min(table3[name]["n"] for name in SEGMENTATION_CLASSES),
        }
        volume = None
        if self.volumes:
            predicted, true = np.array(self.volumes).T
            volume = volume_errors(predicted, true).to_dict()
            volume["false_positive_ml_in_negative_cases"] = mean_or_none(self.false_positive_ml)
            volume["n_negative_cases"] = len(self.false_positive_ml)
        return EvalResult(
            n_cases=self.n_cases,
            threshold=self.threshold,
            table2=table2,
            table3=table3,
            volume=volume,
            subject_source=self.subject_source,
            loss={name: float(np.mean(values)) for name, values in self.terms.items()},
            roc=roc,
            scores=arrays,
            operating_points=self.operating_points,
            intervals=self.intervals(bootstrap_replicates) if bootstrap_replicates else {},
            compartment_volume={
                name: volume_errors(*np.array(pairs).T).to_dict() | self._compartment_shares(name)
                for name, pairs in self.compartment_volumes.items()
                if pairs
            },
            cases=list(self.cases),
            voxel_sweep={t: list(rows) for t, rows in self.voxel_sweep.items()},
        )


def evaluate_model(
    model: nn.Module,
    cases: CaseSource | Iterable[LabelledCase],
    grid: ModelGrid,
    device: torch.device,
    *,
    threshold: float = 0.5,
    operating_points: OperatingPoints | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = True,
    description: str = "eval",
    bootstrap_replicates: int = 0,
    voxel_sweep: Sequence[float] = (),
) -> EvalResult:
    """Evaluate ``model`` (put in eval mode) on every case of ``cases``.

    Table 2 is computed at ``operating_points`` (per output) when given, else at ``threshold``;
    segmentations are decided at their voxel operating point when they carry one, else by the
    most probable class. ``voxel_sweep``: hemorrhage thresholds to measure volumes and Dice at
    (:attr:`EvalResult.voxel_sweep`).
    """
    was_training = model.training
    model.eval()
    evaluator = Evaluator(threshold, operating_points)
    hemorrhage_threshold = None if operating_points is None else operating_points.hemorrhage_voxel
    total = len(cases) if isinstance(cases, CaseSource) else None
    try:
        for case in tqdm(cases, total=total, desc=description, disable=not progress, leave=False):
            prediction = predict_case(
                model,
                case,
                grid,
                device,
                autocast_dtype,
                hemorrhage_threshold=hemorrhage_threshold,
                voxel_sweep=voxel_sweep,
            )
            evaluator.add(case, prediction)
    finally:
        model.train(was_training)
    return evaluator.result(bootstrap_replicates)


def total_loss(loss: dict[str, float]) -> float | None:
    """Sum of the mean raw loss terms (model selection; independent of learned weights)."""
    known = [loss[term.value] for term in Term if term.value in loss]
    return float(sum(known)) if known else None
