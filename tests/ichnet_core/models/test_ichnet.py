"""ICHNet: shapes, staging, gradient flow to each head, ablations, hypercolumn, config checks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.labels import (
    NUM_CLASSIFICATION_OUTPUTS,
    NUM_COMPARTMENTS,
    NUM_SEGMENTATION_CLASSES,
)
from ichnet_core.models.ichnet import (
    HypercolumnHead,
    ICHNet,
    ICHNetConfig,
    seg_probabilities,
    split_seg_channels,
)
from ichnet_core.models.layers.blocks import AttentionGate

SIZE = 32


def _model(overrides: dict[str, Any], **flags: Any) -> ICHNet:
    return ICHNet(ICHNetConfig(**{**overrides, **flags}))


@pytest.mark.parametrize(("batch", "slices"), [(1, 1), (2, 7), (1, 40)])
def test_forward_shapes(tiny_overrides: dict[str, Any], batch: int, slices: int) -> None:
    model = _model(tiny_overrides).eval()
    with torch.inference_mode():
        out = model(torch.rand(batch, slices, 3, SIZE, SIZE))
    assert out.seg_logits is not None and out.slice_logits is not None
    assert out.subject_logits is not None
    assert out.seg_logits.shape == (batch, slices, NUM_SEGMENTATION_CLASSES, SIZE, SIZE)
    assert out.slice_logits.shape == (batch, slices, NUM_CLASSIFICATION_OUTPUTS)
    assert out.subject_logits.shape == (batch, NUM_CLASSIFICATION_OUTPUTS)


def test_stage_shapes(tiny_overrides: dict[str, Any]) -> None:
    model = _model(tiny_overrides).eval()
    widths = model.config.widths
    with torch.inference_mode():
        features = model.encode(torch.rand(5, 3, SIZE, SIZE))
        assert [tuple(f.shape) for f in features] == [
            (5, widths[level], SIZE >> level, SIZE >> level) for level in range(4)
        ]
        seq_out, slice_logits, subject_logits = model.recur(features[-1].unflatten(0, (1, 5)))
        assert seq_out.shape == (1, 5, 2 * model.config.lstm_hidden, SIZE // 8, SIZE // 8)
        assert slice_logits is not None and slice_logits.shape == (1, 5, 6)
        assert subject_logits is not None and subject_logits.shape == (1, 6)
        seg = model.decode(features, seq_out[0])
        assert seg.shape == (5, 3, SIZE, SIZE)
        # The skip levels alone are enough (the exported decoder takes no bottleneck input).
        torch.testing.assert_close(model.decode(features[:3], seq_out[0]), seg)


@pytest.mark.parametrize(
    ("cls_embedding", "subject_pooling"), [(False, "mean"), (True, "mean"), (True, "max")]
)
def test_staged_stages_equal_forward(
    tiny_overrides: dict[str, Any], cls_embedding: bool, subject_pooling: str
) -> None:
    model = _model(
        tiny_overrides, cls_embedding=cls_embedding, subject_pooling=subject_pooling
    ).eval()
    x = torch.rand(2, 4, 3, SIZE, SIZE)
    with torch.inference_mode():
        out = model(x)
        for b in range(2):
            features = model.encode(x[b])
            seq_out, slice_logits, subject_logits = model.recur(features[-1][None])
            seg = model.decode(features, seq_out[0])
            torch.testing.assert_close(seg, out.seg_logits[b])
            torch.testing.assert_close(slice_logits[0], out.slice_logits[b])
            torch.testing.assert_close(subject_logits[0], out.subject_logits[b])


@pytest.mark.parametrize("cls_embedding", [False, True])
def test_subject_logits_pool_over_slices(
    tiny_overrides: dict[str, Any], cls_embedding: bool
) -> None:
    model = _model(tiny_overrides, cls_embedding=cls_embedding).eval()
    with torch.inference_mode():
        seq_out = torch.rand(1, 6, 2 * model.config.lstm_hidden, 4, 4)
        _, subject = model.classifier(seq_out)
        # Reordering slices changes nothing for the subject head: it sees the slice average.
        _, shuffled = model.classifier(seq_out[:, torch.randperm(6)])
    torch.testing.assert_close(subject, shuffled)


def test_subject_max_pooling_does_not_dilute_a_focal_finding(
    tiny_overrides: dict[str, Any],
) -> None:
    """``subject_pooling: max``: a series of 40 slices with the same 3 "bleeding" slices as an
    8-slice training run gives the subject head the same input; the mean dilutes it."""
    torch.manual_seed(0)
    channels = 2 * tiny_overrides["lstm_hidden"]
    quiet = torch.rand(1, 1, channels, 4, 4)
    finding = quiet + 2.0 * torch.rand(1, 3, channels, 4, 4)
    short = torch.cat([quiet.expand(1, 5, -1, -1, -1), finding], dim=1)
    long = torch.cat([quiet.expand(1, 37, -1, -1, -1), finding], dim=1)
    logits = {}
    for pooling in ("mean", "max"):
        model = _model(tiny_overrides, subject_pooling=pooling).eval()
        with torch.inference_mode():
            logits[pooling] = [model.classifier(x)[1] for x in (short, long)]
    torch.testing.assert_close(logits["max"][0], logits["max"][1])
    assert not torch.allclose(logits["mean"][0], logits["mean"][1], atol=1e-3)


def test_subject_pooling_is_checked_and_written_only_when_not_the_papers() -> None:
    with pytest.raises(ValueError, match="subject_pooling"):
        ICHNetConfig(subject_pooling="median")
    assert "subject_pooling" not in ICHNetConfig().to_dict()
    config = ICHNetConfig(subject_pooling="max")
    assert config.to_dict()["subject_pooling"] == "max"
    assert ICHNetConfig.from_dict(config.to_dict()) == config


def _losses(out: Any) -> tuple[Tensor, Tensor]:
    seg_target = torch.randint(
        0, NUM_SEGMENTATION_CLASSES, out.seg_logits.shape[:2] + out.seg_logits.shape[3:]
    )
    seg_loss = F.cross_entropy(out.seg_logits.flatten(0, 1), seg_target.flatten(0, 1))
    cls_loss = F.binary_cross_entropy_with_logits(
        out.slice_logits, torch.randint(0, 2, out.slice_logits.shape).float()
    ) + F.binary_cross_entropy_with_logits(
        out.subject_logits, torch.randint(0, 2, out.subject_logits.shape).float()
    )
    return seg_loss, cls_loss


def _grad_norms(module: nn.Module) -> dict[str, float]:
    return {
        name: (0.0 if p.grad is None else float(p.grad.abs().sum()))
        for name, p in module.named_parameters()
    }


def _reached(model: ICHNet, part: str) -> bool:
    norms = _grad_norms(getattr(model, part))
    return all(value > 0 for value in norms.values())


def _untouched(model: ICHNet, part: str) -> bool:
    return all(p.grad is None for p in getattr(model, part).parameters())


@pytest.mark.parametrize(
    ("attention", "cls_embedding"), [(True, False), (False, False), (True, True)]
)
def test_total_loss_reaches_every_parameter(
    tiny_overrides: dict[str, Any], attention: bool, cls_embedding: bool
) -> None:
    model = _model(tiny_overrides, attention=attention, cls_embedding=cls_embedding).train()
    seg_loss, cls_loss = _losses(model(torch.rand(2, 3, 3, SIZE, SIZE)))
    (seg_loss + cls_loss).backward()
    zero = [name for name, value in _grad_norms(model).items() if value == 0]
    assert zero == []


def test_segmentation_loss_reaches_encoder_lstm_decoder_only(
    tiny_overrides: dict[str, Any],
) -> None:
    model = _model(tiny_overrides).train()
    seg_loss, _ = _losses(model(torch.rand(1, 3, 3, SIZE, SIZE)))
    seg_loss.backward()
    assert (
        _reached(model, "encoder") and _reached(model, "conv_lstm") and _reached(model, "decoder")
    )
    assert _untouched(model, "classifier")


def test_classification_loss_reaches_encoder_lstm_heads_only(
    tiny_overrides: dict[str, Any],
) -> None:
    model = _model(tiny_overrides).train()
    _, cls_loss = _losses(model(torch.rand(1, 3, 3, SIZE, SIZE)))
    cls_loss.backward()
    assert _reached(model, "encoder") and _reached(model, "conv_lstm")
    assert _reached(model, "classifier")
    assert _untouched(model, "decoder")


def test_without_segmentation_branch(tiny_overrides: dict[str, Any]) -> None:
    model = _model(tiny_overrides, seg_branch=False).eval()
    assert model.decoder is None
    assert not any(name.startswith("decoder.") for name in model.state_dict())
    with torch.inference_mode():
        out = model(torch.rand(1, 2, 3, SIZE, SIZE))
        features = model.encode(torch.rand(2, 3, SIZE, SIZE))
        seq_out = model.recur(features[-1][None])[0]
        with pytest.raises(RuntimeError, match="seg_branch=False"):
            model.decode(features, seq_out[0])
    assert out.seg_logits is None and out.slice_logits is not None


def test_without_classification_branch(tiny_overrides: dict[str, Any]) -> None:
    model = _model(tiny_overrides, cls_branch=False).eval()
    assert model.classifier is None
    assert not any(name.startswith("classifier.") for name in model.state_dict())
    with torch.inference_mode():
        out = model(torch.rand(1, 2, 3, SIZE, SIZE))
    assert out.seg_logits is not None
    assert out.slice_logits is None and out.subject_logits is None


def test_attention_flag_removes_gates(tiny_overrides: dict[str, Any]) -> None:
    gated = _model(tiny_overrides)
    plain = _model(tiny_overrides, attention=False)
    assert sum(isinstance(m, AttentionGate) for m in gated.modules()) == 3
    assert not any(isinstance(m, AttentionGate) for m in plain.modules())
    assert not any(".gates." in name for name in plain.state_dict())


def test_attention_gate_scales_skip_by_coefficients() -> None:
    gate = AttentionGate(4, 8, 2)
    x, g = torch.rand(2, 4, 8, 8), torch.rand(2, 8, 4, 4)
    with torch.no_grad():
        alpha = gate.coefficients(x, g)
        gated = gate(x, g)
    assert alpha.shape == (2, 1, 8, 8)
    assert float(alpha.min()) > 0 and float(alpha.max()) < 1
    torch.testing.assert_close(gated, x * alpha)


def test_hypercolumn_equals_concatenate_then_1x1() -> None:
    head = HypercolumnHead((4, 6, 8, 10), 3)
    levels = [torch.randn(2, c, 32 >> i, 32 >> i) for i, c in enumerate((4, 6, 8, 10))]
    upsampled = [
        F.interpolate(f, size=(32, 32), mode="bilinear", align_corners=False) for f in levels
    ]
    expected = head.classifier(torch.cat(upsampled, dim=1))
    torch.testing.assert_close(head(levels, (32, 32)), expected, atol=1e-5, rtol=1e-5)


def test_input_checks(tiny_overrides: dict[str, Any]) -> None:
    model = _model(tiny_overrides)
    with pytest.raises(ValueError, match="divisible by 8"):
        model.encode(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match="3 channels"):
        model.encode(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, S>=1, 3, H, W\]"):
        model(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"widths": (8, 16, 32)}, "widths needs 4 positive"),
        ({"blocks_per_level": (1, 0, 1, 1)}, "blocks_per_level needs 4 positive"),
        ({"input_size": 60}, "multiple of 8"),
        ({"lstm_hidden": 0}, "lstm_hidden must be >= 1"),
        ({"lstm_kernel_size": 2}, "lstm_kernel_size must be odd"),
        ({"seg_branch": False, "cls_branch": False}, "needs seg_branch or cls_branch"),
        ({"input_spacing_mm": 0.0}, "input_spacing_mm must be in"),
        ({"compartments": True, "seg_branch": False}, "compartments needs the segmentation"),
    ],
)
def test_config_rejects_invalid_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ICHNetConfig(**overrides)


def test_config_dict_round_trip() -> None:
    config = ICHNetConfig(widths=[8, 16, 32, 64], input_size=64, attention=False)  # type: ignore[arg-type]
    assert config.widths == (8, 16, 32, 64)
    data = config.to_dict()
    assert data["widths"] == [8, 16, 32, 64]
    assert ICHNetConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown ICHNetConfig keys"):
        ICHNetConfig.from_dict({**data, "depth": 3})


def test_compartment_channels_follow_the_three_classes(tiny_overrides: dict[str, Any]) -> None:
    model = _model(tiny_overrides, compartments=True, input_spacing_mm=1.0)
    assert model.config.seg_channels == NUM_SEGMENTATION_CLASSES + NUM_COMPARTMENTS
    assert model.config.grid == ModelGrid(tiny_overrides["input_size"], 1.0)
    out = model(torch.rand(1, 3, 3, SIZE, SIZE))
    assert out.seg_logits is not None and out.seg_logits.shape == (1, 3, 8, SIZE, SIZE)
    classes, compartments = split_seg_channels(out.seg_logits, dim=2)
    assert classes.shape[2] == 3 and compartments is not None and compartments.shape[2] == 5
    probabilities = seg_probabilities(out.seg_logits, dim=2)
    torch.testing.assert_close(probabilities[:, :, :3].sum(dim=2), torch.ones(1, 3, SIZE, SIZE))
    torch.testing.assert_close(probabilities[:, :, 3:].sum(dim=2), torch.ones(1, 3, SIZE, SIZE))
    plain = _model(tiny_overrides)
    assert split_seg_channels(plain(torch.rand(1, 2, 3, SIZE, SIZE)).seg_logits, dim=2)[1] is None
    with pytest.raises(ValueError, match="expected 3 or 8"):
        split_seg_channels(torch.zeros(1, 4, 2, 2))
    data = model.config.to_dict()
    assert data["compartments"] is True and ICHNetConfig.from_dict(data) == model.config


def test_classification_embedding_makes_small_variations_count(
    tiny_overrides: dict[str, Any],
) -> None:
    """Why ``cls_embedding`` exists: ConvLSTM outputs that vary by ~0.05 around 0.5 (as in the
    first 1.0 mm run) reach the linear heads unit-sized through BatchNorm, so the heads' logits
    and the gradient back into the ConvLSTM are no longer scaled down by that spread (measured
    here: logit spread over slices 0.013 -> 0.071, gradient 0.031 -> 0.27)."""
    torch.manual_seed(0)
    seq_out = 0.5 + 0.05 * torch.randn(2, 6, 2 * tiny_overrides["lstm_hidden"], 4, 4)
    spread = {}
    for flag in (False, True):
        model = _model(tiny_overrides, cls_embedding=flag).train()
        inputs = seq_out.clone().requires_grad_(True)
        slice_logits, _ = model.classifier(inputs)
        slice_logits.sum().backward()
        assert inputs.grad is not None
        spread[flag] = (
            float(slice_logits.detach().std(dim=(0, 1)).mean()),
            float(inputs.grad.abs().mean()),
        )
    assert spread[True][0] > 4 * spread[False][0]
    assert spread[True][1] > 4 * spread[False][1]
