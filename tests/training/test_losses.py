"""Loss terms, masking of unknown labels, and the learned uncertainty weights."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.labels import HEMORRHAGE, NO_COMPARTMENT, SUBTYPES
from ichnet_core.models import create_model
from training.data.case import SegKind
from training.data.dataset import ModelSample, make_sample, prepare_case
from training.losses import (
    FlatBatch,
    Term,
    UncertaintyWeighting,
    compartment_loss,
    compartment_weight_table,
    generalized_dice_loss,
    loss_terms,
    masked_bce,
    segmentation_loss,
)
from training.step import forward_batch

from .conftest import make_phantom_case


def test_masked_bce_uses_only_known_entries() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 5.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    known = torch.tensor([[True, False], [True, False]])
    # Known: logit 0 with target 1 -> log 2; logit -1 with target 0 -> log(1 + e^-1).
    expected = (math.log(2.0) + math.log1p(math.exp(-1.0))) / 2
    assert masked_bce(logits, targets, known).item() == pytest.approx(expected, rel=1e-6)
    assert masked_bce(logits, targets, torch.zeros_like(known)) is None


def test_generalized_dice_is_zero_for_a_perfect_prediction_and_matches_hand_value() -> None:
    target = torch.zeros(1, 2, 2, 2)
    target[0, 0] = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    target[0, 1] = 1.0 - target[0, 0]
    assert generalized_dice_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)

    # Predict 0.5 everywhere: class 0 has G=3, I=1.5, P=2; class 1 has G=1, I=0.5, P=2.
    half = torch.full_like(target, 0.5)
    numerator = 2 * (1.5 / 3 + 0.5 / 1)
    denominator = (2 + 3) / 3 + (2 + 1) / 1
    expected = 1 - numerator / denominator
    assert generalized_dice_loss(half, target).item() == pytest.approx(expected, rel=1e-5)


def test_hemorrhage_only_dice_ignores_the_brain_versus_non_brain_split() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 3, 8, 8)
    targets = torch.zeros(3, 8, 8, dtype=torch.long)
    targets[1, 2:5, 2:5] = HEMORRHAGE
    sample = torch.zeros(3, dtype=torch.long)
    swapped = logits[:, [1, 0, 2]]  # brain and non-brain exchanged, hemorrhage unchanged
    loss = segmentation_loss(logits, targets, sample, [SegKind.HEMORRHAGE])
    assert loss is not None
    assert loss.item() == pytest.approx(
        segmentation_loss(swapped, targets, sample, [SegKind.HEMORRHAGE]).item(), rel=1e-6
    )
    # A complete segmentation does see the split.
    full = segmentation_loss(logits, targets, sample, [SegKind.FULL])
    full_swapped = segmentation_loss(swapped, targets, sample, [SegKind.FULL])
    assert full is not None and full_swapped is not None
    assert full.item() != pytest.approx(full_swapped.item(), rel=1e-4)


def _blank(sample: ModelSample, setting: str) -> ModelSample:
    """Keep only the labels of ``setting`` in a batch sample (the rest unknown)."""
    no_slices = {"slice_known": torch.zeros_like(sample.slice_known)}
    no_subject = {"subject_known": torch.zeros_like(sample.subject_known)}
    no_seg = {"seg_kind": SegKind.NONE, "seg": torch.zeros_like(sample.seg)}
    if setting == "subject":
        return dataclasses.replace(sample, **no_slices, **no_seg)
    if setting == "slice":
        return dataclasses.replace(sample, **no_subject, **no_seg)
    if setting == "masks":
        return dataclasses.replace(sample, **no_slices, **no_subject)
    if setting == "hemorrhage_masks":
        seg = torch.where(sample.seg == HEMORRHAGE, HEMORRHAGE, 0)
        return dataclasses.replace(
            sample, seg=seg, seg_kind=SegKind.HEMORRHAGE, **no_slices, **no_subject
        )
    assert setting == "all"
    return sample


def _gradients(setting: str, tiny_overrides: dict[str, Any]) -> tuple[dict[str, bool], dict]:
    model = create_model("ichnet", **tiny_overrides)
    weighting = UncertaintyWeighting()
    cases = [make_phantom_case(f"toy/{i}", bleed_slices=(1,) if i else ()) for i in range(2)]
    samples = [
        _blank(make_sample(prepare_case(case, ModelGrid(tiny_overrides["input_size"]))), setting)
        for case in cases
    ]
    batch = forward_batch(model, samples, torch.device("cpu"))
    terms = loss_terms(batch)
    weighting(terms).backward()

    def has_gradient(module: torch.nn.Module) -> bool:
        return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())

    assert model.decoder is not None and model.classifier is not None
    heads = {
        "seg": has_gradient(model.decoder),
        "slice": has_gradient(model.classifier.slice_fc),
        "subject": has_gradient(model.classifier.subject_fc),
    }
    assert weighting.log_variances.grad is not None
    term_grads = {
        term: float(weighting.log_variances.grad[index]) for index, term in enumerate(Term)
    }
    return heads, {"terms": set(terms), "grads": term_grads}


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("subject", {"seg": False, "slice": False, "subject": True}),
        ("slice", {"seg": False, "slice": True, "subject": False}),
        ("masks", {"seg": True, "slice": False, "subject": False}),
        ("hemorrhage_masks", {"seg": True, "slice": False, "subject": False}),
        ("all", {"seg": True, "slice": True, "subject": True}),
    ],
)
def test_only_heads_with_labels_receive_gradients(
    setting: str, expected: dict[str, bool], tiny_overrides: dict[str, Any]
) -> None:
    heads, info = _gradients(setting, tiny_overrides)
    assert heads == expected
    # Uncertainty parameters of absent terms get exactly no gradient; present ones do.
    for term, grad in info["grads"].items():
        if term in info["terms"]:
            assert grad != 0.0, term
        else:
            assert grad == 0.0, term


def test_subject_only_batch_has_exactly_the_subject_terms(tiny_overrides: dict[str, Any]) -> None:
    _, info = _gradients("subject", tiny_overrides)
    assert info["terms"] == {Term.SUBJECT_ANY, Term.SUBJECT_SUBTYPES}
    _, info = _gradients("all", tiny_overrides)
    assert info["terms"] == set(Term) - {Term.COMPARTMENT}  # the tiny model has no compartments


def test_uncertainty_weights_are_learned() -> None:
    weighting = UncertaintyWeighting()
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.1)
    terms = {Term.SEG: torch.tensor(0.1), Term.SUBJECT_ANY: torch.tensor(2.0)}
    for _ in range(200):
        optimizer.zero_grad()
        weighting(terms).backward()
        optimizer.step()
    weights = weighting.weights()
    # The optimum of exp(-s) L + s/2 is exp(-s) = 1 / (2 L).
    assert weights[Term.SEG] == pytest.approx(5.0, rel=0.05)
    assert weights[Term.SUBJECT_ANY] == pytest.approx(0.25, rel=0.05)
    assert weights[Term.SLICE_ANY] == pytest.approx(1.0)  # never present: unchanged


def test_frozen_weighting_is_a_plain_sum() -> None:
    weighting = UncertaintyWeighting(learned=False)
    total = weighting({Term.SEG: torch.tensor(0.5), Term.SLICE_ANY: torch.tensor(0.25)})
    assert total.item() == pytest.approx(0.75)
    assert not weighting.log_variances.requires_grad


def test_empty_batch_terms_give_zero_total() -> None:
    batch = FlatBatch(
        seg_logits=None,
        slice_logits=torch.zeros(2, 6),
        subject_logits=torch.zeros(1, 6),
        seg_targets=torch.zeros(2, 4, 4, dtype=torch.long),
        slice_sample=torch.zeros(2, dtype=torch.long),
        seg_kinds=[SegKind.NONE],
        slice_targets=torch.zeros(2, 6),
        slice_known=torch.zeros(2, 6, dtype=torch.bool),
        subject_targets=torch.zeros(1, 6),
        subject_known=torch.zeros(1, 6, dtype=torch.bool),
    )
    assert loss_terms(batch) == {}
    assert UncertaintyWeighting()({}).item() == 0.0


def test_generalized_dice_gives_a_class_absent_from_the_batch_no_weight() -> None:
    # One 4x4 slice of brain only; the prediction puts 0.1 on hemorrhage everywhere.
    target = torch.zeros(1, 3, 4, 4)
    target[0, 1] = 1.0
    prediction = torch.zeros(1, 3, 4, 4)
    prediction[0, 1] = 0.9
    prediction[0, 2] = 0.1
    # Only brain is present: 1 - 2 * (0.9 * 16) / (0.9 * 16 + 16) = 1 - 1.8 / 1.9.
    assert generalized_dice_loss(prediction, target).item() == pytest.approx(
        1 - 1.8 / 1.9, rel=1e-5
    )


def test_segmentation_cross_entropy_is_added_only_when_weighted() -> None:
    torch.manual_seed(3)
    logits = torch.randn(2, 3, 6, 6)
    targets = torch.randint(0, 3, (2, 6, 6))
    samples = torch.zeros(2, dtype=torch.long)
    kinds = [SegKind.FULL]
    dice_only = segmentation_loss(logits, targets, samples, kinds)
    with_ce = segmentation_loss(logits, targets, samples, kinds, ce_weight=0.5)
    expected = dice_only + 0.5 * torch.nn.functional.cross_entropy(logits, targets)
    assert with_ce.item() == pytest.approx(expected.item(), rel=1e-6)


def test_hemorrhage_weight_scales_blood_voxels_in_the_cross_entropy() -> None:
    torch.manual_seed(4)
    logits = torch.randn(2, 3, 6, 6)
    targets = torch.randint(0, 2, (2, 6, 6))
    targets[0, 1:3, 1:3] = HEMORRHAGE
    samples = torch.zeros(2, dtype=torch.long)
    kinds = [SegKind.FULL]
    dice_only = segmentation_loss(logits, targets, samples, kinds)
    weighted = segmentation_loss(
        logits, targets, samples, kinds, ce_weight=1.0, ce_hemorrhage_weight=10.0
    )
    # Hand computation: per-voxel CE, blood voxels weighted 10, weighted mean.
    per_voxel = -torch.log_softmax(logits, dim=1).gather(1, targets[:, None])[:, 0]
    weights = torch.where(targets == HEMORRHAGE, 10.0, 1.0)
    expected = dice_only + (weights * per_voxel).sum() / weights.sum()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)


def test_hemorrhage_weight_applies_to_hemorrhage_only_labels() -> None:
    torch.manual_seed(5)
    logits = torch.randn(1, 3, 4, 4)
    targets = torch.zeros(1, 4, 4, dtype=torch.long)
    targets[0, 0, :2] = HEMORRHAGE
    samples = torch.zeros(1, dtype=torch.long)
    kinds = [SegKind.HEMORRHAGE]
    dice_only = segmentation_loss(logits, targets, samples, kinds)
    weighted = segmentation_loss(
        logits, targets, samples, kinds, ce_weight=1.0, ce_hemorrhage_weight=3.0
    )
    p = torch.softmax(logits, dim=1)[:, HEMORRHAGE]
    blood = targets == HEMORRHAGE
    per_voxel = torch.where(blood, -torch.log(p), -torch.log1p(-p))
    weights = torch.where(blood, 3.0, 1.0)
    expected = dice_only + (weights * per_voxel).sum() / weights.sum()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)


def test_compartment_weights_scale_the_blood_of_their_compartment_only() -> None:
    torch.manual_seed(6)
    logits = torch.randn(2, 3, 6, 6)
    targets = torch.randint(0, 2, (2, 6, 6))
    targets[0, 1:3, 1:3] = HEMORRHAGE
    targets[1, 4:6, 0:3] = HEMORRHAGE
    compartments = torch.zeros_like(targets)
    compartments[0, 1:3, 1:3] = 1 + SUBTYPES.index("SDH")
    compartments[1, 4:6, 0:3] = 1 + SUBTYPES.index("CPH")
    samples = torch.tensor([0, 1])
    kinds = [SegKind.FULL, SegKind.FULL]
    table = compartment_weight_table({"SDH": 4.0})
    weighted = segmentation_loss(
        logits,
        targets,
        samples,
        kinds,
        ce_weight=1.0,
        ce_hemorrhage_weight=10.0,
        compartments=compartments,
        ce_compartment_weights=table,
    )
    dice_only = segmentation_loss(logits, targets, samples, kinds)
    per_voxel = -torch.log_softmax(logits, dim=1).gather(1, targets[:, None])[:, 0]
    weights = torch.where(targets == HEMORRHAGE, 10.0, 1.0)
    weights[0, 1:3, 1:3] = 40.0  # subdural blood: 10 x 4; intraparenchymal keeps 10
    expected = dice_only + (weights * per_voxel).sum() / weights.sum()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)
    unweighted = segmentation_loss(
        logits, targets, samples, kinds, ce_weight=1.0, ce_hemorrhage_weight=10.0
    )
    assert weighted.item() != pytest.approx(unweighted.item(), rel=1e-3)


def test_compartment_weight_table_is_one_where_not_named() -> None:
    table = compartment_weight_table({"EDH": 2.0, "SAH": 3.0})
    assert table[NO_COMPARTMENT].item() == 1.0
    by_name = {name: table[1 + i].item() for i, name in enumerate(SUBTYPES)}
    assert by_name == {"CPH": 1.0, "IVH": 1.0, "EDH": 2.0, "SDH": 1.0, "SAH": 3.0}


def test_compartment_loss_is_the_cross_entropy_of_known_blood_voxels() -> None:
    logits = torch.zeros((1, 5, 2, 2))
    logits[0, 3, 0, 0] = 2.0  # SDH favoured at (0, 0)
    targets = torch.tensor([[[4, 1], [0, 0]]])  # (0,0) SDH, (0,1) CPH, the rest no blood
    expected_sdh = -math.log(math.exp(2.0) / (math.exp(2.0) + 4))
    expected_cph = -math.log(1 / (math.exp(0.0) * 5))
    loss = compartment_loss(logits, targets)
    assert loss is not None
    assert float(loss) == pytest.approx((expected_sdh + expected_cph) / 2, rel=1e-5)
    assert compartment_loss(logits, torch.zeros_like(targets)) is None


def test_compartment_term_trains_only_the_compartment_channels(
    tiny_overrides: dict[str, Any],
) -> None:
    model = create_model("ichnet", **{**tiny_overrides, "compartments": True})
    case = make_phantom_case(size=40)
    case = dataclasses.replace(
        case,
        compartments=(case.seg == HEMORRHAGE).astype("uint8") * 2,  # IVH
    )
    sample = make_sample(prepare_case(case, ModelGrid(tiny_overrides["input_size"])))
    assert int(sample.compartments.max()) == 2
    batch = forward_batch(model, [sample], torch.device("cpu"))
    assert batch.seg_logits is not None and batch.seg_logits.shape[1] == 8
    terms = loss_terms(batch)
    assert Term.COMPARTMENT in terms
    terms[Term.COMPARTMENT].backward()
    head = model.decoder.head.classifier  # type: ignore[union-attr]
    assert head.weight.grad is not None
    assert float(head.weight.grad[:3].abs().sum()) == 0.0
    assert float(head.weight.grad[3:].abs().sum()) > 0.0
