"""Convolutional building blocks of ICHNet: residual block, conv block, attention gate.

Kept apart from the model assembly (``models/ichnet.py``) so each block can be read and tested
on its own, as in timm's ``layers/`` vs ``models/`` split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(in_channels: int, out_channels: int, *, stride: int = 1) -> nn.Sequential:
    """3x3 convolution + BatchNorm + ReLU; no conv bias because BatchNorm adds its own shift."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """ResNet "basic" block: two 3x3 conv + BN, identity (or 1x1 projection) shortcut, ReLU.

    Parameters
    ----------
    in_channels, out_channels:
        Channels in and out.
    stride:
        2 halves the resolution (first block of a new encoder level), 1 keeps it.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        # nn.Module, not BatchNorm2d: the optimised engine folds them into the convolutions.
        self.bn1: nn.Module = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2: nn.Module = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class ConvBlock(nn.Sequential):
    """The decoder's Conv Block: two (3x3 conv + BN + ReLU)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels)
        )


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al. 2018, "Attention U-Net").

    The coarser decoder signal ``g`` decides, per pixel, how much of the skip features ``x`` to
    pass on: ``alpha = sigmoid(psi(relu(theta(x) + phi(g))))``, computed at ``g``'s resolution
    (``theta`` is a strided conv) and upsampled bilinearly to ``x``; the output is ``x * alpha``.

    Parameters
    ----------
    skip_channels:
        Channels of ``x`` (encoder skip).
    gate_channels:
        Channels of ``g`` (decoder signal, half ``x``'s resolution).
    inter_channels:
        Channels of the joint embedding.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(skip_channels, inter_channels, 2, stride=2, bias=False)
        self.phi = nn.Conv2d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)

    def coefficients(self, x: Tensor, g: Tensor) -> Tensor:
        """Attention coefficients ``[N, 1, H, W]`` in (0, 1) at ``x``'s resolution."""
        joint = F.relu(self.theta(x) + self.phi(g), inplace=True)
        alpha = torch.sigmoid(self.psi(joint))
        return F.interpolate(alpha, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        return x * self.coefficients(x, g)
