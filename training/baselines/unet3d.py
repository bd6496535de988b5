"""3-D U-Net (Çiçek et al. 2016), widths configurable: the paper's segmentation baseline.

Encoder levels of two 3x3x3 convolutions with batch norm and ReLU, 2x2x2 max pooling, a mirrored
decoder with transposed-convolution upsampling and skip concatenation, and a 1x1x1 convolution
to the three classes (non-brain, brain, hemorrhage). Series of any length are zero-padded (air)
along the slice and in-plane axes to a multiple of the total pooling factor and cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.labels import NUM_SEGMENTATION_CLASSES
from ichnet_core.models import ICHNetOutput
from training.baselines.resnet import INPUT_CHANNELS


class DoubleConv3d(nn.Module):
    """(3x3x3 conv, batch norm, ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class UNet3D(nn.Module):
    """3-D U-Net returning segmentation logits ``[B, S, 3, H, W]`` only.

    Parameters
    ----------
    widths:
        Channels per level, finest first (the original: 32, 64, 128, 256).
    input_size:
        Square in-plane model input.
    input_spacing_mm:
        Its pixel size (``ModelGrid``), or ``None``: the whole field of view resized to it.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64, 128),
        input_size: int = 256,
        input_spacing_mm: float | None = None,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"UNet3D needs at least two positive widths, got {widths}")
        self.grid = ModelGrid(int(input_size), input_spacing_mm)
        self.factor = 2 ** (len(widths) - 1)
        self.encoders = nn.ModuleList()
        in_channels = INPUT_CHANNELS
        for width in widths:
            self.encoders.append(DoubleConv3d(in_channels, width))
            in_channels = width
        self.pool = nn.MaxPool3d(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(len(widths) - 2, -1, -1):
            self.ups.append(nn.ConvTranspose3d(widths[level + 1], widths[level], 2, stride=2))
            self.decoders.append(DoubleConv3d(2 * widths[level], widths[level]))
        self.head = nn.Conv3d(widths[0], NUM_SEGMENTATION_CLASSES, 1)

    def forward(self, x: Tensor) -> ICHNetOutput:
        volume = x.permute(0, 2, 1, 3, 4)  # [B, 3, S, H, W]
        depth, height, width = volume.shape[-3:]
        pad = [(-size) % self.factor for size in (width, height, depth)]
        volume = F.pad(volume, (0, pad[0], 0, pad[1], 0, pad[2]))
        skips = []
        out = volume
        for index, encoder in enumerate(self.encoders):
            out = encoder(out if index == 0 else self.pool(out))
            skips.append(out)
        skips.pop()
        for up, decoder in zip(self.ups, self.decoders, strict=True):
            out = decoder(torch.cat([up(out), skips.pop()], dim=1))
        logits = self.head(out)[..., :depth, :height, :width]
        return ICHNetOutput(logits.permute(0, 2, 1, 3, 4), None, None)
