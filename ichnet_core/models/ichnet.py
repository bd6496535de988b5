"""ICHNet: joint hemorrhage segmentation and classification over the slices of a head CT.

Architecture (../shared/DESIGN.md, "Model"; the ICHNet paper: "Simultaneous Classification and
Segmentation of Intracranial Hemorrhage Using a Fully Convolutional Neural Network", 2020):

1. per slice, the 3-channel window stack goes through a residual encoder with four resolution
   levels (full, 1/2, 1/4, 1/8);
2. the bottleneck (1/8) feature maps of all slices, in slice order, go through a 2-layer
   bidirectional ConvLSTM, so each slice sees the whole series;
3. segmentation: a decoder of Conv Blocks climbs back through attention-gated skip connections;
   the maps of its four levels form a hypercolumn that a 1x1 convolution turns into the three
   classes (non-brain, brain, hemorrhage);
4. classification: slice-level logits from each ConvLSTM output (spatial pooling + linear), and
   subject-level logits from the ConvLSTM outputs averaged over slices (or their maximum,
   ``ICHNetConfig.subject_pooling``); ``any`` + 5 subtypes.

The network is staged for export (ONNX/TensorRT run the per-slice stages on bounded chunks of
slices and the recurrence over the whole series):

* :meth:`ICHNet.encode`: ``[N, 3, H, W]`` slices -> four feature levels (batch = slices);
* :meth:`ICHNet.recur`: ``[B, S, C, h, w]`` bottleneck sequence -> ConvLSTM outputs + logits;
* :meth:`ICHNet.decode`: features + ConvLSTM output per slice -> ``[N, 3, H, W]`` seg logits;
* :meth:`ICHNet.forward`: all three on ``[B, S, 3, H, W]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Final, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.labels import (
    NUM_CLASSIFICATION_OUTPUTS,
    NUM_COMPARTMENTS,
    NUM_SEGMENTATION_CLASSES,
    WINDOWS_HU,
)
from ichnet_core.models.layers.blocks import (
    AttentionGate,
    ConvBlock,
    ResidualBlock,
    conv_bn_relu,
)
from ichnet_core.models.layers.conv_lstm import ConvLSTM

#: Encoder/decoder resolution levels: full, 1/2, 1/4, 1/8 of the input size.
NUM_LEVELS: Final[int] = 4
#: Input sizes must be divisible by this so every level has an integral size.
SIZE_DIVISOR: Final[int] = 2 ** (NUM_LEVELS - 1)
#: One input channel per CT window (ichnet_core.imaging.windowing).
INPUT_CHANNELS: Final[int] = len(WINDOWS_HU)
#: The attention gate's joint embedding has this fraction of the skip's channels (Oktay et al.).
ATTENTION_REDUCTION: Final[int] = 2
#: Spatial pooling for classification concatenates average and max pooling (2 features per
#: channel): the average sees diffuse findings, the max small focal bleeds.
POOLED_FEATURES_PER_CHANNEL: Final[int] = 2
#: How the subject head may gather the slices (``ICHNetConfig.subject_pooling``).
SUBJECT_POOLINGS: Final[tuple[str, ...]] = ("mean", "max")
#: Settings beyond the paper: ``ICHNetConfig.to_dict`` leaves them out at their defaults.
_BEYOND_PAPER: Final[frozenset[str]] = frozenset({"cls_embedding", "subject_pooling"})


@dataclass(frozen=True)
class ICHNetConfig:
    """Everything that shapes an ICHNet; stored in every weights file.

    Attributes
    ----------
    widths:
        Channels of the four encoder levels (the decoder mirrors them).
    blocks_per_level:
        Residual blocks at each encoder level.
    input_size:
        Square in-plane size the slices are resized to (divisible by 8).
    lstm_hidden:
        Hidden channels of each ConvLSTM direction; the ConvLSTM output has twice as many.
    lstm_layers:
        Stacked bidirectional ConvLSTM layers.
    lstm_kernel_size:
        Odd kernel size of the ConvLSTM convolutions.
    seg_branch, cls_branch:
        Build the segmentation decoder / the classification heads (ablations; at least one).
    attention:
        Attention gates on the skip connections (ablation: plain U-Net skips).
    input_spacing_mm:
        Physical pixel size of the input (``ichnet_core.imaging.model_grid``); ``None`` = the
        whole field of view resized to ``input_size`` (weights up to 0.3.0).
    compartments:
        Also predict the compartment (CPH, IVH, EDH, SDH, SAH) of every pixel: the segmentation
        logits then carry ``NUM_COMPARTMENTS`` more channels after the paper's three
        (:func:`split_seg_channels`). Beyond the paper; the three classes are unchanged.
    cls_embedding:
        A 3x3 Conv + BatchNorm + ReLU on the ConvLSTM outputs before the classification pooling.
        Without it the pooled ConvLSTM outputs (tanh-bounded, shaped by the segmentation loss)
        varied by ~0.05 around ~0.5 between slices, so the linear heads' logits barely moved
        and their gradient hardly reached the ConvLSTM: after 5043 steps at 1.0 mm the heads
        gave 0.12-0.15 for every case while the hemorrhage maps separated them (subject AUC
        0.50 vs 0.88-0.92, slice 0.70 vs 0.89; ``bench/heads_vs_maps.py``). BatchNorm makes
        each channel's variation unit-sized. Weights up to
        0.3.0 and the first diagnostic-resolution run have none (``False``).
    subject_pooling:
        How the subject head gathers the slices' (embedded) ConvLSTM maps: ``"mean"`` (the
        paper) or ``"max"`` (beyond the paper). Training shows the network runs of 8 slices
        placed on the bleed, the node whole series of 28-40 slices: a mean over slices dilutes
        a bleed seen on 3 of 40 slices to a fraction of what training showed, and the subject
        head of the second 1.0 mm run reached AUC 0.69 on 32 validation series while the
        highest of its own slice-head outputs reached 0.87. The maximum answers "is there blood
        on any slice", whatever the series' length.
    """

    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks_per_level: tuple[int, ...] = (1, 1, 1, 1)
    input_size: int = 256
    lstm_hidden: int = 32
    lstm_layers: int = 2
    lstm_kernel_size: int = 3
    seg_branch: bool = True
    cls_branch: bool = True
    attention: bool = True
    input_spacing_mm: float | None = None
    compartments: bool = False
    cls_embedding: bool = False
    subject_pooling: str = "mean"

    def __post_init__(self) -> None:
        # Configs come from YAML/JSON/weights files as lists; store tuples so the config hashes.
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "blocks_per_level", tuple(int(b) for b in self.blocks_per_level))
        for name in ("widths", "blocks_per_level"):
            value = getattr(self, name)
            if len(value) != NUM_LEVELS or min(value) < 1:
                raise ValueError(
                    f"ICHNetConfig.{name} needs {NUM_LEVELS} positive integers, found {value}"
                )
        if self.input_size < SIZE_DIVISOR or self.input_size % SIZE_DIVISOR:
            raise ValueError(
                f"ICHNetConfig.input_size must be a positive multiple of {SIZE_DIVISOR}, "
                f"found {self.input_size}"
            )
        for name in ("lstm_hidden", "lstm_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"ICHNetConfig.{name} must be >= 1, found {getattr(self, name)}")
        if self.lstm_kernel_size < 1 or self.lstm_kernel_size % 2 != 1:
            raise ValueError(
                f"ICHNetConfig.lstm_kernel_size must be odd and positive, found {self.lstm_kernel_size}"
            )
        if not (self.seg_branch or self.cls_branch):
            raise ValueError("ICHNetConfig needs seg_branch or cls_branch; both are False")
        if self.input_spacing_mm is not None and not 0.1 <= self.input_spacing_mm <= 10.0:
            raise ValueError(
                f"ICHNetConfig.input_spacing_mm must be in [0.1, 10] mm or null, found "
                f"{self.input_spacing_mm}"
            )
        if self.subject_pooling not in SUBJECT_POOLINGS:
            raise ValueError(
                f"ICHNetConfig.subject_pooling must be one of {SUBJECT_POOLINGS}, found "
                f"{self.subject_pooling!r}"
            )
        if self.compartments and not self.seg_branch:
            raise ValueError("ICHNetConfig.compartments needs the segmentation branch")

    @property
    def grid(self) -> ModelGrid:
        """Where the input lies on a source slice (``ichnet_core.imaging.model_grid``)."""
        return ModelGrid(self.input_size, self.input_spacing_mm)

    @property
    def seg_channels(self) -> int:
        """Channels of the segmentation logits: 3 classes (+ the compartments)."""
        return NUM_SEGMENTATION_CLASSES + (NUM_COMPARTMENTS if self.compartments else 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (tuples as lists).

        ``cls_embedding`` and ``subject_pooling`` are written only when they differ from the
        paper: weights without them stay byte for byte what earlier versions wrote, and
        readable by nodes that do not know the keys.
        """
        defaults = {f.name: f.default for f in fields(self) if f.name in _BEYOND_PAPER}
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
            if not (key in defaults and value == defaults[key])
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ICHNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they would be silently lost)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ICHNetConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**dict(data))


class ICHNetOutput(NamedTuple):
    """Logits of one forward pass; a branch the config leaves out gives ``None``.

    Attributes
    ----------
    seg_logits:
        ``[B, S, 3, H, W]`` per-pixel class logits (softmax over dim 2); with compartments
        ``[B, S, 3 + 5, H, W]`` (:func:`split_seg_channels`).
    slice_logits:
        ``[B, S, 6]`` per-slice logits, ``CLASS_NAMES`` order (sigmoid each).
    subject_logits:
        ``[B, 6]`` per-series logits, ``CLASS_NAMES`` order (sigmoid each).
    """

    seg_logits: Tensor | None
    slice_logits: Tensor | None
    subject_logits: Tensor | None


class ResidualEncoder(nn.Module):
    """Shared per-slice encoder: a 3x3 stem then residual blocks at four resolution levels."""

    def __init__(self, widths: Sequence[int], blocks_per_level: Sequence[int]) -> None:
        super().__init__()
        self.stem = conv_bn_relu(INPUT_CHANNELS, widths[0])
        self.levels = nn.ModuleList()
        in_channels = widths[0]
        for level, (width, blocks) in enumerate(zip(widths, blocks_per_level, strict=True)):
            stride = 1 if level == 0 else 2
            layers = [ResidualBlock(in_channels, width, stride=stride)]
            layers += [ResidualBlock(width, width) for _ in range(blocks - 1)]
            self.levels.append(nn.Sequential(*layers))
            in_channels = width

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        features = []
        out = self.stem(x)
        for level in self.levels:
            out = level(out)
            features.append(out)
        return tuple(features)


class HypercolumnHead(nn.Module):
    """Hypercolumn classifier: upsample every decoder level to full size, concatenate, 1x1 conv.

    The parameters are exactly one 1x1 convolution over the concatenated hypercolumn
    (``sum(widths)`` channels). Because bilinear upsampling and a 1x1 convolution are both linear
    and act on different axes, they commute; the forward pass therefore applies each level's slice
    of the 1x1 weights at that level's own resolution and upsamples only the 3-channel result.
    The output is the same as concatenating first, but the full-resolution tensor has 3 channels
    instead of ``sum(widths)`` (about 1 GB less per 512x512 slice for the large model).
    """

    def __init__(self, level_channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.level_channels = tuple(level_channels)
        self.classifier = nn.Conv2d(sum(self.level_channels), num_classes, 1)

    def forward(self, levels: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        """``levels`` finest first, channels as ``level_channels``; returns logits at ``size``."""
        level_weights = torch.split(self.classifier.weight, list(self.level_channels), dim=1)
        logits = cast(Tensor, self.classifier.bias).view(1, -1, 1, 1)  # Conv2d with a bias
        for features, weight in zip(levels, level_weights, strict=True):
            level_logits = F.conv2d(features, weight)
            if tuple(level_logits.shape[-2:]) != tuple(size):
                level_logits = F.interpolate(
                    level_logits, size=size, mode="bilinear", align_corners=False
                )
            logits = logits + level_logits
        return logits


class AttentionDecoder(nn.Module):
    """Decoder of Conv Blocks with (optionally) attention-gated skips and a hypercolumn head."""

    def __init__(
        self,
        widths: Sequence[int],
        bottleneck_channels: int,
        *,
        attention: bool,
        out_channels: int = NUM_SEGMENTATION_CLASSES,
    ) -> None:
        super().__init__()
        self.bottleneck_block = ConvBlock(bottleneck_channels, widths[-1])
        # Built coarse to fine: level NUM_LEVELS-2 down to 0.
        levels = range(NUM_LEVELS - 2, -1, -1)
        self.blocks = nn.ModuleList(
            ConvBlock(widths[level + 1] + widths[level], widths[level]) for level in levels
        )
        self.gates: nn.ModuleList | None = None
        if attention:
            self.gates = nn.ModuleList(
                AttentionGate(
                    widths[level], widths[level + 1], max(widths[level] // ATTENTION_REDUCTION, 1)
                )
                for level in levels
            )
        self.head = HypercolumnHead(widths, out_channels)

    def forward(self, skips: Sequence[Tensor], bottleneck: Tensor) -> Tensor:
        """``skips`` = encoder levels 0..2 (finest first); ``bottleneck`` = ConvLSTM output."""
        out = self.bottleneck_block(bottleneck)
        decoded = [out]
        for index, (block, skip) in enumerate(zip(self.blocks, reversed(skips), strict=True)):
            gated = skip if self.gates is None else self.gates[index](skip, out)
            up = F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            out = block(torch.cat([up, gated], dim=1))
            decoded.append(out)
        decoded.reverse()  # finest first, matching widths
        return self.head(decoded, (skips[0].shape[-2], skips[0].shape[-1]))


class ClassificationHeads(nn.Module):
    """Slice- and subject-level logits from the ConvLSTM outputs (optionally embedded first)."""

    def __init__(
        self,
        channels: int,
        num_outputs: int,
        *,
        embedding: bool = False,
        subject_pooling: str = "mean",
    ) -> None:
        super().__init__()
        self.embedding = conv_bn_relu(channels, channels) if embedding else None
        self.subject_max = subject_pooling == "max"
        pooled = POOLED_FEATURES_PER_CHANNEL * channels
        self.slice_fc = nn.Linear(pooled, num_outputs)
        self.subject_fc = nn.Linear(pooled, num_outputs)

    @staticmethod
    def pool(maps: Tensor) -> Tensor:
        """Spatial average and max pooling, concatenated: ``[..., C, h, w] -> [..., 2C]``."""
        return torch.cat([maps.mean(dim=(-2, -1)), maps.amax(dim=(-2, -1))], dim=-1)

    def forward(self, seq_out: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, S, C, h, w] -> ([B, S, 6], [B, 6])``; the subject averages the slices' maps (or
        takes their maximum, ``subject_pooling``)."""
        if self.embedding is not None:
            seq_out = self.embedding(seq_out.flatten(0, 1)).unflatten(0, seq_out.shape[:2])
        slice_logits = self.slice_fc(self.pool(seq_out))
        gathered = seq_out.amax(dim=1) if self.subject_max else seq_out.mean(dim=1)
        subject_logits = self.subject_fc(self.pool(gathered))
        return slice_logits, subject_logits


class ICHNet(nn.Module):
    """ICHNet, configured by :class:`ICHNetConfig`; see the module docstring for the stages.

    Parameters
    ----------
    config:
        Widths, depth, input size and ablation flags.
    """

    def __init__(self, config: ICHNetConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ICHNetConfig()
        cfg = self.config
        self.encoder = ResidualEncoder(cfg.widths, cfg.blocks_per_level)
        self.conv_lstm = ConvLSTM(
            cfg.widths[-1], cfg.lstm_hidden, cfg.lstm_layers, cfg.lstm_kernel_size
        )
        self.decoder: AttentionDecoder | None = None
        if cfg.seg_branch:
            self.decoder = AttentionDecoder(
                cfg.widths,
                self.conv_lstm.out_channels,
                attention=cfg.attention,
                out_channels=cfg.seg_channels,
            )
        self.classifier: ClassificationHeads | None = None
        if cfg.cls_branch:
            self.classifier = ClassificationHeads(
                self.conv_lstm.out_channels,
                NUM_CLASSIFICATION_OUTPUTS,
                embedding=cfg.cls_embedding,
                subject_pooling=cfg.subject_pooling,
            )

    @staticmethod
    def _check_spatial(shape: torch.Size, what: str) -> None:
        height, width = shape[-2], shape[-1]
        if shape[-3] != INPUT_CHANNELS or height % SIZE_DIVISOR or width % SIZE_DIVISOR:
            raise ValueError(
                f"{what} needs {INPUT_CHANNELS} channels and height/width divisible by "
                f"{SIZE_DIVISOR}, got shape {tuple(shape)}"
            )

    def encode(self, x: Tensor) -> tuple[Tensor, ...]:
        """Encode slices independently: ``[N, 3, H, W]`` -> four levels, finest first.

        Level ``l`` is ``[N, widths[l], H / 2**l, W / 2**l]``; the last one is the bottleneck.
        """
        if x.dim() != 4:
            raise ValueError(f"encode expects [N, 3, H, W], got shape {tuple(x.shape)}")
        self._check_spatial(x.shape, "encode")
        return self.encoder(x)

    def recur(self, bottleneck: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Run the ConvLSTM over the slices and the classification heads on its outputs.

        Parameters
        ----------
        bottleneck:
            ``[B, S, widths[-1], h, w]`` bottleneck features in slice order, ``S >= 1``.

        Returns
        -------
        tuple
            ``seq_out [B, S, 2*lstm_hidden, h, w]``, ``slice_logits [B, S, 6]`` and
            ``subject_logits [B, 6]`` (both ``None`` without the classification branch).
        """
        seq_out = self.conv_lstm(bottleneck)
        if self.classifier is None:
            return seq_out, None, None
        slice_logits, subject_logits = self.classifier(seq_out)
        return seq_out, slice_logits, subject_logits

    def decode(self, features: Sequence[Tensor], seq_out_flat: Tensor) -> Tensor:
        """Decode slices independently into segmentation logits ``[N, seg_channels, H, W]``.

        Parameters
        ----------
        features:
            :meth:`encode`'s output for the same ``N`` slices. Only the three skip levels are
            read (the ConvLSTM output replaces the bottleneck), so passing just those works too.
        seq_out_flat:
            ``[N, 2*lstm_hidden, h, w]`` ConvLSTM outputs of those slices.
        """
        if self.decoder is None:
            raise RuntimeError("this ICHNet was built with seg_branch=False; it cannot decode")
        if len(features) not in (NUM_LEVELS - 1, NUM_LEVELS):
            raise ValueError(
                f"decode needs the {NUM_LEVELS - 1} skip levels (or all {NUM_LEVELS} encoder "
                f"levels), got {len(features)} tensors"
            )
        return self.decoder(tuple(features[: NUM_LEVELS - 1]), seq_out_flat)

    def forward(self, x: Tensor) -> ICHNetOutput:
        """Whole network on ``[B, S, 3, H, W]`` window stacks (``S >= 1`` slices in order)."""
        if x.dim() != 5 or x.shape[1] < 1:
            raise ValueError(f"ICHNet expects [B, S>=1, 3, H, W], got shape {tuple(x.shape)}")
        batch, slices = x.shape[:2]
        features = self.encode(x.flatten(0, 1))
        seq_out, slice_logits, subject_logits = self.recur(
            features[-1].unflatten(0, (batch, slices))
        )
        seg_logits = None
        if self.decoder is not None:
            seg_logits = self.decode(features, seq_out.flatten(0, 1)).unflatten(0, (batch, slices))
        return ICHNetOutput(seg_logits, slice_logits, subject_logits)


def split_seg_channels(logits: Tensor, dim: int = 1) -> tuple[Tensor, Tensor | None]:
    """The paper's 3 class logits and the compartment logits (``None`` without) along ``dim``."""
    classes = logits.narrow(dim, 0, NUM_SEGMENTATION_CLASSES)
    extra = logits.shape[dim] - NUM_SEGMENTATION_CLASSES
    if extra == 0:
        return classes, None
    if extra != NUM_COMPARTMENTS:
        raise ValueError(
            f"segmentation logits have {logits.shape[dim]} channels along dim {dim}; expected "
            f"{NUM_SEGMENTATION_CLASSES} or {NUM_SEGMENTATION_CLASSES + NUM_COMPARTMENTS}"
        )
    return classes, logits.narrow(dim, NUM_SEGMENTATION_CLASSES, NUM_COMPARTMENTS)


def seg_probabilities(logits: Tensor, dim: int = 1) -> Tensor:
    """Softmax of the 3 classes and, separately, of the compartments, concatenated along ``dim``.

    The compartment probabilities are conditional ("which compartment, if this pixel bleeds");
    every engine turns decoder logits into probabilities with this one function.
    """
    classes, compartments = split_seg_channels(logits, dim)
    probabilities = torch.softmax(classes, dim=dim)
    if compartments is None:
        return probabilities
    return torch.cat([probabilities, torch.softmax(compartments, dim=dim)], dim=dim)
