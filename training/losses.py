"""ICHNet's multi-task loss with masking of unknown labels.

Five terms, as in the paper:

* ``seg``: class-weighted soft Dice (generalised Dice, Sudre et al. 2017, with weights = inverse
  class volume) on the softmax of the segmentation logits;
* ``slice_any``, ``slice_subtypes``, ``subject_any``, ``subject_subtypes``: binary cross-entropy
  on the classification logits (``any`` column / the 5 subtype columns).

They are combined with learned homoscedastic-uncertainty weights (Kendall, Gal & Cipolla, CVPR
2018): ``total = sum_t exp(-s_t) * L_t + s_t / 2`` with one learned ``s_t = log sigma_t^2`` per
term (the form for classification likelihoods).

Masking: a label that is unknown contributes nothing. A term with no known label in the batch is
*absent*: neither it nor its uncertainty regulariser enters the total, so heads without
supervision get no gradient at all, and ``s_t`` does not drift while its term is missing.

Segmentation labels come in two kinds (:class:`training.data.case.SegKind`): complete
(non-brain / brain / hemorrhage) and hemorrhage-only (PhysioNet, BHSD, INSTANCE). For the latter
the Dice runs on the two classes that are known, hemorrhage and "not hemorrhage" (the summed
non-brain + brain probability), so the loss is blind to how the model splits brain from
non-brain there and never learns from an invented brain mask.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ichnet_core.labels import (
    HEMORRHAGE,
    NO_COMPARTMENT,
    NUM_COMPARTMENTS,
    NUM_SEGMENTATION_CLASSES,
    SUBTYPES,
)
from ichnet_core.models.ichnet import split_seg_channels
from training.data.case import ANY_COLUMN, SUBTYPE_COLUMNS, SegKind

#: Keeps the Dice ratio finite for an empty prediction and target.
DICE_EPSILON: Final[float] = 1e-6


class Term(enum.Enum):
    """The loss terms, in a fixed order (uncertainty parameters follow it)."""

    SEG = "seg"
    SLICE_ANY = "slice_any"
    SLICE_SUBTYPES = "slice_subtypes"
    SUBJECT_ANY = "subject_any"
    SUBJECT_SUBTYPES = "subject_subtypes"
    #: Beyond the paper: cross-entropy of the compartment of hemorrhage voxels whose
    #: compartment is known (models built with ``compartments``).
    COMPARTMENT = "compartment"


@dataclass
class FlatBatch:
    """Outputs and targets of a batch, flattened over its series (which differ in length).

    Attributes
    ----------
    seg_logits:
        ``[N, 3, H, W]`` for the ``N`` slices of the batch, or ``None`` (no seg branch).
    slice_logits:
        ``[N, 6]`` or ``None``.
    subject_logits:
        ``[B, 6]`` or ``None``.
    seg_targets:
        ``[N, H, W]`` int64 classes.
    slice_sample:
        ``[N]`` int64: the sample each slice belongs to.
    seg_kinds:
        Per sample, which segmentation classes are known.
    slice_targets, slice_known:
        ``[N, 6]``.
    subject_targets, subject_known:
        ``[B, 6]``.
    compartment_targets:
        ``[N, H, W]`` int64, 0 = no hemorrhage or compartment unknown, else ``1 +`` SUBTYPES index.
    """

    seg_logits: Tensor | None
    slice_logits: Tensor | None
    subject_logits: Tensor | None
    seg_targets: Tensor
    slice_sample: Tensor
    seg_kinds: Sequence[SegKind]
    slice_targets: Tensor
    slice_known: Tensor
    subject_targets: Tensor
    subject_known: Tensor
    compartment_targets: Tensor | None = None


def masked_bce(logits: Tensor, targets: Tensor, known: Tensor) -> Tensor | None:
    """Mean BCE-with-logits over the known entries; ``None`` when none is known."""
    if not bool(known.any()):
        return None
    return F.binary_cross_entropy_with_logits(logits[known].float(), targets[known].float())


def generalized_dice_loss(probabilities: Tensor, targets: Tensor) -> Tensor:
    """Generalised Dice loss over a whole batch, weights = inverse class volume in the batch.

    Parameters
    ----------
    probabilities, targets:
        ``[n, K, H, W]`` class probabilities and one-hot targets of the batch's ``n`` slices.

    Returns
    -------
    Tensor
        Scalar in [0, 1]: ``1 - 2 sum_k w_k I_k / sum_k w_k (P_k + G_k)`` over all voxels of the
        batch, with ``w_k = 1 / G_k`` for the classes present in the batch and ``w_k = 0`` for
        absent ones.

    Notes
    -----
    Volumes are pooled over the batch (Sudre et al. 2017 weight over the batch too). Weighting
    per sample with a large finite weight for a class a sample lacks made every hemorrhage-free
    run of slices (most of them) punish any hemorrhage probability about a hundred times more
    than a small bleed rewarded finding it, and the model learned never to predict blood. With
    pooled volumes a false-positive hemorrhage still costs, in every batch that holds blood,
    exactly as much as a missed one of the same size.
    """
    dims = (0, 2, 3)
    intersection = (probabilities * targets).sum(dim=dims)
    predicted = probabilities.sum(dim=dims)
    target = targets.sum(dim=dims)
    present = target > 0
    weights = torch.where(present, 1.0 / target.clamp(min=1.0), torch.zeros_like(target))
    numerator = 2.0 * (weights * intersection).sum()
    denominator = (weights * (predicted + target)).sum()
    return 1.0 - numerator / (denominator + DICE_EPSILON)


def segmentation_loss(
    seg_logits: Tensor,
    seg_targets: Tensor,
    slice_sample: Tensor,
    seg_kinds: Sequence[SegKind],
    ce_weight: float = 0.0,
    ce_hemorrhage_weight: float = 1.0,
    compartments: Tensor | None = None,
    ce_compartment_weights: Tensor | None = None,
) -> Tensor | None:
    """Generalised Dice over the slices with segmentation labels; ``None`` if none has.

    Samples with full 3-class labels and samples with hemorrhage-only labels form separate
    pools (their classes differ); the loss is the mean of the pools present. ``ce_weight`` > 0
    adds that much voxel-wise cross-entropy over the same known classes (3-class softmax CE, or
    binary CE on the hemorrhage probability for hemorrhage-only labels); in it a hemorrhage voxel
    counts ``ce_hemorrhage_weight`` times as much as any other (weighted mean), and also
    ``ce_compartment_weights[c]`` times where ``compartments`` (``[n, H, W]``, as the
    compartment targets) says it is blood of compartment ``c`` (a ``[1 + NUM_COMPARTMENTS]``
    tensor, 1 at :data:`NO_COMPARTMENT`).
    """
    kinds = list(seg_kinds)
    kind_of_slice = [kinds[int(i)] for i in slice_sample.tolist()]
    probabilities = torch.softmax(seg_logits.float(), dim=1)
    losses: list[Tensor] = []
    for kind in (SegKind.FULL, SegKind.HEMORRHAGE):
        rows = torch.tensor(
            [k is kind for k in kind_of_slice], dtype=torch.bool, device=seg_logits.device
        )
        if not bool(rows.any()):
            continue
        probs, targets = probabilities[rows], seg_targets[rows]
        if kind is SegKind.FULL:
            one_hot = F.one_hot(targets, NUM_SEGMENTATION_CLASSES).permute(0, 3, 1, 2).float()
            per_voxel = (
                F.cross_entropy(seg_logits[rows].float(), targets, reduction="none")
                if ce_weight
                else None
            )
        else:
            hemorrhage = (targets == HEMORRHAGE).float()
            one_hot = torch.stack([1.0 - hemorrhage, hemorrhage], dim=1)
            per_voxel = (
                F.binary_cross_entropy(
                    probs[:, HEMORRHAGE].clamp(1e-6, 1 - 1e-6), hemorrhage, reduction="none"
                )
                if ce_weight
                else None
            )
            probs = torch.stack([1.0 - probs[:, HEMORRHAGE], probs[:, HEMORRHAGE]], dim=1)
        ce = None
        if per_voxel is not None:
            weights = torch.where(targets == HEMORRHAGE, ce_hemorrhage_weight, 1.0)
            if compartments is not None and ce_compartment_weights is not None:
                weights = weights * ce_compartment_weights.to(weights)[compartments[rows]]
            ce = (weights * per_voxel).sum() / weights.sum()
        loss = generalized_dice_loss(probs, one_hot)
        losses.append(loss if ce is None else loss + ce_weight * ce)
    if not losses:
        return None
    return torch.stack(losses).mean()


def compartment_loss(compartment_logits: Tensor, targets: Tensor) -> Tensor | None:
    """Mean cross-entropy over the voxels with a known compartment; ``None`` when none has.

    Only blood voxels carry a compartment, so the term teaches "which compartment, if this
    bleeds" and never competes with the paper's hemorrhage / brain / non-brain decision.
    """
    known = targets > NO_COMPARTMENT
    if not bool(known.any()):
        return None
    logits = compartment_logits.float().permute(0, 2, 3, 1)[known]
    return F.cross_entropy(logits, targets[known] - 1)


def compartment_weight_table(weights: Mapping[str, float]) -> Tensor:
    """``{subtype: factor}`` as the ``[1 + NUM_COMPARTMENTS]`` lookup :func:`segmentation_loss`
    takes (index = compartment label, 1 where not named)."""
    table = torch.ones(1 + NUM_COMPARTMENTS)
    for name, factor in weights.items():
        table[1 + SUBTYPES.index(name)] = factor
    return table


def loss_terms(
    batch: FlatBatch,
    *,
    seg_ce_weight: float = 0.0,
    seg_ce_hemorrhage_weight: float = 1.0,
    seg_ce_compartment_weights: Tensor | None = None,
) -> dict[Term, Tensor]:
    """Every term the batch has labels and outputs for (absent terms are left out)."""
    terms: dict[Term, Tensor | None] = {}
    if batch.seg_logits is not None:
        class_logits, compartment_logits = split_seg_channels(batch.seg_logits)
        if compartment_logits is not None and batch.compartment_targets is not None:
            terms[Term.COMPARTMENT] = compartment_loss(
                compartment_logits, batch.compartment_targets
            )
        terms[Term.SEG] = segmentation_loss(
            class_logits,
            batch.seg_targets,
            batch.slice_sample,
            batch.seg_kinds,
            ce_weight=seg_ce_weight,
            ce_hemorrhage_weight=seg_ce_hemorrhage_weight,
            compartments=batch.compartment_targets,
            ce_compartment_weights=seg_ce_compartment_weights,
        )
    for logits, targets, known, any_term, subtype_term in (
        (
            batch.slice_logits,
            batch.slice_targets,
            batch.slice_known,
            Term.SLICE_ANY,
            Term.SLICE_SUBTYPES,
        ),
        (
            batch.subject_logits,
            batch.subject_targets,
            batch.subject_known,
            Term.SUBJECT_ANY,
            Term.SUBJECT_SUBTYPES,
        ),
    ):
        if logits is None:
            continue
        terms[any_term] = masked_bce(
            logits[..., ANY_COLUMN], targets[..., ANY_COLUMN], known[..., ANY_COLUMN]
        )
        terms[subtype_term] = masked_bce(
            logits[..., SUBTYPE_COLUMNS],
            targets[..., SUBTYPE_COLUMNS],
            known[..., SUBTYPE_COLUMNS],
        )
    return {term: value for term, value in terms.items() if value is not None}


class UncertaintyWeighting(nn.Module):
    """Learned homoscedastic-uncertainty weights, one ``s_t = log sigma_t^2`` per :class:`Term`.

    Parameters
    ----------
    learned:
        ``False`` freezes ``s_t = 0`` (plain sum of the terms), for ablations.
    """

    def __init__(self, learned: bool = True) -> None:
        super().__init__()
        self.learned = learned
        self.log_variances = nn.Parameter(torch.zeros(len(Term)), requires_grad=learned)

    def forward(self, terms: Mapping[Term, Tensor]) -> Tensor:
        """``sum_t exp(-s_t) L_t + s_t / 2`` over the present terms (0 when none is)."""
        if not terms:
            return self.log_variances.new_zeros(())
        total = self.log_variances.new_zeros(())
        order = list(Term)
        for term, value in terms.items():
            log_variance = self.log_variances[order.index(term)]
            total = total + torch.exp(-log_variance) * value + 0.5 * log_variance
        return total

    def weights(self) -> dict[Term, float]:
        """Current effective weights ``exp(-s_t)`` (for logs)."""
        values = torch.exp(-self.log_variances.detach()).tolist()
        return {term: float(value) for term, value in zip(Term, values, strict=True)}
