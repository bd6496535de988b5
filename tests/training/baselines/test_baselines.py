"""Baselines: output shapes per task, any series length, gradients through the shared loss."""

from __future__ import annotations

import pytest
import torch

from ichnet_core.labels import NUM_CLASSIFICATION_OUTPUTS, NUM_SEGMENTATION_CLASSES
from training.baselines import BASELINES, create_baseline
from training.baselines.resnet import ResNet18

TINY = {
    "resnet2d": {"width": 4, "input_size": 32},
    "resnet3d": {"width": 4, "input_size": 32},
    "unet3d": {"widths": (4, 8, 8), "input_size": 32},
}


@pytest.mark.parametrize("slices", [1, 5])
def test_output_shapes(slices: int) -> None:
    x = torch.rand(2, slices, 3, 32, 32)
    seg, slice_logits, subject = create_baseline("resnet2d", **TINY["resnet2d"])(x)
    assert seg is None and subject is None
    assert slice_logits.shape == (2, slices, NUM_CLASSIFICATION_OUTPUTS)
    seg, slice_logits, subject = create_baseline("resnet3d", **TINY["resnet3d"])(x)
    assert seg is None and slice_logits is None
    assert subject.shape == (2, NUM_CLASSIFICATION_OUTPUTS)
    seg, slice_logits, subject = create_baseline("unet3d", **TINY["unet3d"])(x)
    assert slice_logits is None and subject is None
    assert seg.shape == (2, slices, NUM_SEGMENTATION_CLASSES, 32, 32)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_parameter_learns(name: str) -> None:
    model = create_baseline(name, **TINY[name])
    # Batch 2: at 32 px the 3-D ResNet's last stage is 1x1x1, and batch norm needs two values.
    outputs = model(torch.rand(2, 3, 3, 32, 32))
    sum(o.float().square().mean() for o in outputs if o is not None).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_resnet18_layout_and_errors() -> None:
    net = ResNet18(2, width=8)
    blocks = [m for m in net.stages.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 8  # 4 stages x 2 blocks
    assert net.fc.in_features == 64  # 8 * 2**3
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        ResNet18(4)
    with pytest.raises(ValueError, match=r"unknown baseline 'vgg'"):
        create_baseline("vgg")
    with pytest.raises(ValueError, match="bad options"):
        create_baseline("unet3d", depth=3)
