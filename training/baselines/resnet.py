"""ResNet18 in 2-D and 3-D (He et al. 2016; 3-D as in Hara et al. 2018), widths configurable.

Written here because torchvision does not import beside this torch build. The layout is the
standard ResNet18: a 7x7 stride-2 stem with 3x3 max pooling, four stages of two basic blocks with
widths ``w, 2w, 4w, 8w`` (``w = 64`` in the original; smaller for CPU runs), global average
pooling and one linear layer. The 3-D stem does not stride along the slice axis (slices are thick
and few), like Hara et al.

The wrappers map ICHNet's input ``[B, S, 3, H, W]`` to each baseline's task and return an
:class:`ichnet_core.models.ICHNetOutput` with the other fields ``None``:

* :class:`SliceResNet2D` classifies every slice on its own (paper's 2-D ResNet18 baseline);
* :class:`SubjectResNet3D` classifies the whole series (paper's 3-D ResNet18 baseline).
"""

from __future__ import annotations

from typing import Final

from torch import Tensor, nn

from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.labels import NUM_CLASSIFICATION_OUTPUTS
from ichnet_core.models import ICHNetOutput

#: Basic blocks per stage in ResNet18.
RESNET18_BLOCKS: Final[tuple[int, ...]] = (2, 2, 2, 2)
INPUT_CHANNELS: Final[int] = 3
_STEM_KERNEL: Final[int] = 7


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _norm(dims: int) -> type[nn.Module]:
    return nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        conv, norm = _conv(dims), _norm(dims)
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride, bias=False), norm(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 for ``dims``-dimensional input with ``num_outputs`` logits.

    Parameters
    ----------
    dims:
        2 (images ``[N, 3, H, W]``) or 3 (volumes ``[N, 3, S, H, W]``).
    width:
        Channels of the first stage (64 in the original).
    num_outputs:
        Logits (6: any + 5 subtypes).
    """

    def __init__(
        self, dims: int, width: int = 64, num_outputs: int = NUM_CLASSIFICATION_OUTPUTS
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"ResNet18 dims must be 2 or 3, got {dims}")
        if width < 1:
            raise ValueError(f"ResNet18 width must be >= 1, got {width}")
        conv, norm = _conv(dims), _norm(dims)
        stem_stride = 2 if dims == 2 else (1, 2, 2)
        padding = _STEM_KERNEL // 2
        pool = nn.MaxPool2d(3, 2, 1) if dims == 2 else nn.MaxPool3d(3, (1, 2, 2), 1)
        self.stem = nn.Sequential(
            conv(
                INPUT_CHANNELS, width, _STEM_KERNEL, stride=stem_stride, padding=padding, bias=False
            ),
            norm(width),
            nn.ReLU(inplace=True),
            pool,
        )
        stages = []
        in_channels = width
        for stage, blocks in enumerate(RESNET18_BLOCKS):
            out_channels = width * 2**stage
            layers = [BasicBlock(dims, in_channels, out_channels, stride=1 if stage == 0 else 2)]
            layers += [BasicBlock(dims, out_channels, out_channels) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(in_channels, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


class SliceResNet2D(nn.Module):
    """2-D ResNet18 on each slice: slice-level logits ``[B, S, 6]`` only."""

    def __init__(
        self, width: int = 64, input_size: int = 256, input_spacing_mm: float | None = None
    ) -> None:
        super().__init__()
        self.grid = ModelGrid(int(input_size), input_spacing_mm)
        self.net = ResNet18(2, width)

    def forward(self, x: Tensor) -> ICHNetOutput:
        batch, slices = x.shape[:2]
        logits = self.net(x.flatten(0, 1)).unflatten(0, (batch, slices))
        return ICHNetOutput(None, logits, None)


class SubjectResNet3D(nn.Module):
    """3-D ResNet18 on the whole series: subject-level logits ``[B, 6]`` only."""

    def __init__(
        self, width: int = 64, input_size: int = 256, input_spacing_mm: float | None = None
    ) -> None:
        super().__init__()
        self.grid = ModelGrid(int(input_size), input_spacing_mm)
        self.net = ResNet18(3, width)

    def forward(self, x: Tensor) -> ICHNetOutput:
        return ICHNetOutput(None, None, self.net(x.permute(0, 2, 1, 3, 4)))
