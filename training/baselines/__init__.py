"""The paper's baselines: 2-D ResNet18 (slices), 3-D ResNet18 (subjects), 3-D U-Net (segmentation).

Each takes ICHNet's input ``[B, S, 3, H, W]`` and returns an ``ICHNetOutput`` with only the
field of its task, so one training loop, loss and evaluation serve all models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from torch import nn

from training.baselines.resnet import SliceResNet2D, SubjectResNet3D
from training.baselines.unet3d import UNet3D

#: Baseline name -> constructor (keyword options: ``width``/``widths``, ``input_size``,
#: ``input_spacing_mm``: the input grid as for ICHNet, so a comparison runs at one resolution).
BASELINES: Final[Mapping[str, Callable[..., nn.Module]]] = MappingProxyType(
    {"resnet2d": SliceResNet2D, "resnet3d": SubjectResNet3D, "unet3d": UNet3D}
)


def create_baseline(name: str, **options: Any) -> nn.Module:
    """Build baseline ``name`` with ``options``.

    Raises
    ------
    ValueError
        Unknown name, or an option the baseline does not take.
    """
    try:
        factory = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; baselines: {sorted(BASELINES)}") from None
    try:
        return factory(**options)
    except TypeError as exc:
        raise ValueError(f"baseline {name!r}: bad options {sorted(options)} ({exc})") from None


__all__ = ["BASELINES", "SliceResNet2D", "SubjectResNet3D", "UNet3D", "create_baseline"]
