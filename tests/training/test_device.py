"""``use_channels_last``: the CPU training layout computes the network's function, in place;
``autocast_dtype``: a run's ``optim.cpu_bf16`` holds only on a CPU with bfloat16 instructions."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
import torch
from torch import nn

from ichnet_core.models.registry import create_model
from training import device
from training.device import autocast_dtype, use_channels_last


def test_a_strided_1x1_convolution_keeps_its_function_at_unit_stride() -> None:
    """The work-around for oneDNN's strided 1x1 backward: stride 1 on the subsampled input
    gives the strided convolution's output and the same gradients (float64, exact sums)."""
    conv = nn.Conv2d(12, 24, 1, stride=2, bias=False).double()
    rewritten = copy.deepcopy(conv)
    use_channels_last(rewritten)
    assert rewritten.stride == (1, 1)
    x = torch.rand(2, 12, 9, 10, dtype=torch.float64)  # odd size: the last row is kept
    expected, got = conv(x), rewritten(x)
    assert got.shape == expected.shape == (2, 24, 5, 5)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    expected.square().sum().backward()
    got.square().sum().backward()
    assert conv.weight.grad is not None and rewritten.weight.grad is not None
    torch.testing.assert_close(rewritten.weight.grad, conv.weight.grad, rtol=1e-12, atol=1e-12)


def test_padded_or_larger_kernels_are_left_alone() -> None:
    """A padded 1x1 convolution reads the padding at its strided positions: another function."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 1, stride=2, padding=1)
    )
    use_channels_last(model)
    strides = [m.stride for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert strides == [(2, 2), (2, 2)]
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_ichnet_in_channels_last_keeps_weights_and_outputs(tiny_overrides: dict[str, Any]) -> None:
    """Same state dict (names and values), weights stored channels-last, no strided 1x1 left,
    and the outputs of the default layout (float32; channels-last kernels sum in another order).
    """
    model = create_model("ichnet", **tiny_overrides).eval()
    converted = copy.deepcopy(model)
    use_channels_last(converted)
    before, after = model.state_dict(), converted.state_dict()
    assert list(before) == list(after)
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor, rtol=0, atol=0, msg=name)
    convs = [m for m in converted.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not [m for m in convs if m.kernel_size == (1, 1) and m.stride != (1, 1)]
    x = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = model(x), converted(x)
    for name, a, b in zip(expected._fields, expected, got, strict=True):
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_volumetric_layers_are_left_alone() -> None:
    """The 3-D baselines' Conv3d weights have no 2-D channels-last layout; they stay as they are."""
    model = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1, stride=2))
    use_channels_last(model)
    assert all(m.weight.is_contiguous() for m in model.modules() if isinstance(m, nn.Conv3d))
    assert model(torch.rand(1, 3, 4, 8, 8)).shape == (1, 2, 2, 4, 4)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_cpu_bf16_only_where_the_cpu_has_bfloat16_instructions(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, has_bf16: bool
) -> None:
    """A run carries ``cpu_bf16`` to other machines: on one without AVX512_BF16/AMX (emulated
    bfloat16, 7-9x slower) its step runs in float32 and the log says why."""
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda: has_bf16)
    cpu = torch.device("cpu")
    with caplog.at_level(logging.WARNING, logger="training.device"):
        assert autocast_dtype("auto", cpu, cpu_bf16=True) is (torch.bfloat16 if has_bf16 else None)
    assert ("optim.cpu_bf16 ignored" in caplog.text) is not has_bf16
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.device"):
        assert autocast_dtype("auto", cpu) is None  # evaluation: float32 on every CPU
        assert autocast_dtype("off", cpu, cpu_bf16=True) is None
    assert not caplog.text
