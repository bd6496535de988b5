"""The PyTorch engine: the float32 reference, and the optimised settings for CPUs and GPUs.

The reference (:meth:`TorchSettings.reference`) is the network exactly as trained: float32, eager,
eval mode. Every other engine and setting is checked against it (tests/.../test_parity.py).

:meth:`TorchSettings.optimized` is what ``engine: torch`` runs:

* CPU with AVX512_BF16 or AMX (``/proc/cpuinfo`` flags ``avx512_bf16``/``amx_bf16``): batch norms
  folded into the convolutions, channels-last tensors and bfloat16 autocast for the encoder and
  decoder (oneDNN then uses the bf16 dot-product/AMX instructions);
* other CPUs: the same in float32 (folding and channels-last still help);
* CUDA: float16 encoder/decoder with folded batch norms and channels-last, captured as CUDA graphs
  for a fixed chunk shape (the last, shorter chunk is padded: both stages are per slice, so padding
  slices change nothing for the others); ``compile=True`` uses ``torch.compile`` instead.

The recurrent stage (ConvLSTM + heads) always runs in float32: its cell state accumulates over
hundreds of slices, and it costs little next to the encoder and decoder.

Execution is staged like every engine (``inference/staged.py``): encoder and decoder on chunks of
``chunk_slices`` slices, the recurrence once over the series.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.inference.base import DEFAULT_CHUNK_SLICES, EngineName
from ichnet_core.inference.pipeline import PipelineEngine
from ichnet_core.inference.staged import (
    DEFAULT_SKIP_CACHE_BYTES,
    ChunkSink,
    NetworkOutput,
    check_input,
    run_staged,
)
from ichnet_core.models.ichnet import ICHNet, seg_probabilities
from ichnet_core.models.layers.blocks import ResidualBlock
from ichnet_core.models.weights import ModelWeights, build_model

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_SKIP_CACHE_BYTES",
    "NetworkOutput",
    "Precision",
    "TorchEngine",
    "TorchSettings",
    "cpu_supports_bf16",
    "fold_batch_norms",
]

logger = logging.getLogger(__name__)

#: Class axis of the segmentation logits ``[N, 3, H, W]``.
_CLASS_DIM: Final[int] = 1
#: Eager runs before a CUDA graph is captured (lets cuDNN pick and allocate its workspaces).
CUDA_GRAPH_WARMUP_RUNS: Final[int] = 3
#: /proc/cpuinfo flags that make bfloat16 convolutions fast in oneDNN.
BF16_CPU_FLAGS: Final[frozenset[str]] = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO_PATH: Final[Path] = Path("/proc/cpuinfo")


class Precision(str, Enum):
    """Arithmetic of the encoder and decoder."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


_DTYPES: Final[dict[Precision, torch.dtype]] = {
    Precision.FP32: torch.float32,
    Precision.BF16: torch.bfloat16,
    Precision.FP16: torch.float16,
}


def cpu_supports_bf16(cpuinfo: Path = CPUINFO_PATH) -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512_BF16 or AMX-BF16).

    Reads the kernel's CPU flags; where they cannot be read, asks torch's own probe.
    """
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        return bool(probe()) if callable(probe) else False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(BF16_CPU_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


@dataclass(frozen=True)
class TorchSettings:
    """How the torch engine runs the encoder and decoder.

    Attributes
    ----------
    precision:
        fp32, bf16 (autocast on CPU and GPU) or fp16 (CUDA only: half-precision weights).
    channels_last:
        NHWC memory layout (what oneDNN and cuDNN convolutions prefer).
    fold_batch_norm:
        Fold each eval-mode BatchNorm into the preceding convolution (same function, fewer passes
        over memory).
    cuda_graphs:
        Capture encoder/decoder chunks as CUDA graphs (CUDA only).
    compile:
        ``torch.compile`` the encoder and decoder (fixed chunk shape, so one compilation each).
    """

    precision: Precision = Precision.FP32
    channels_last: bool = False
    fold_batch_norm: bool = False
    cuda_graphs: bool = False
    compile: bool = False

    @classmethod
    def reference(cls) -> TorchSettings:
        """Float32 eager: the network exactly as trained."""
        return cls()

    @classmethod
    def optimized(cls, device: torch.device | str) -> TorchSettings:
        """The fastest settings for ``device`` that stay within the parity tolerances."""
        device = torch.device(device)
        if device.type == "cuda":
            return cls(Precision.FP16, channels_last=True, fold_batch_norm=True, cuda_graphs=True)
        precision = Precision.BF16 if cpu_supports_bf16() else Precision.FP32
        return cls(precision, channels_last=True, fold_batch_norm=True)

    def check(self, device: torch.device) -> None:
        """Raise ``ValueError`` for a combination ``device`` cannot run."""
        if device.type != "cuda" and (self.cuda_graphs or self.precision is Precision.FP16):
            raise ValueError(
                f"{self.describe()} needs a CUDA device (fp16 and CUDA graphs), got {device}"
            )
        if self.cuda_graphs and self.compile:
            raise ValueError("choose cuda_graphs or compile, not both")

    def describe(self) -> str:
        """Short label, e.g. ``bf16+channels_last+fold_bn``."""
        parts = [self.precision.value]
        for flag in ("channels_last", "fold_batch_norm", "cuda_graphs", "compile"):
            if getattr(self, flag):
                parts.append(flag.replace("fold_batch_norm", "fold_bn"))
        return "+".join(parts)


def _fold_pairs(sequential: nn.Sequential) -> None:
    for index in range(len(sequential) - 1):
        conv, norm = sequential[index], sequential[index + 1]
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
            sequential[index] = fuse_conv_bn_eval(conv, norm)
            sequential[index + 1] = nn.Identity()


def fold_batch_norms(model: ICHNet) -> ICHNet:
    """A copy of ``model`` (eval mode) with every BatchNorm folded into its convolution.

    Covers the two places ICHNet pairs them: ``Sequential(conv, bn, ...)`` (stem, conv blocks,
    projection shortcuts) and :class:`ResidualBlock`'s ``conv1/bn1`` and ``conv2/bn2``.

    Raises
    ------
    RuntimeError
        When a BatchNorm is left over (a block this function does not know).
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        if isinstance(module, ResidualBlock):
            # A block of a fresh copy still has its BatchNorms; folding replaces them.
            module.conv1 = fuse_conv_bn_eval(module.conv1, cast(nn.BatchNorm2d, module.bn1))
            module.bn1 = nn.Identity()
            module.conv2 = fuse_conv_bn_eval(module.conv2, cast(nn.BatchNorm2d, module.bn2))
            module.bn2 = nn.Identity()
        elif isinstance(module, nn.Sequential):
            _fold_pairs(module)
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise RuntimeError(f"fold_batch_norms left BatchNorm layers it cannot fold: {left}")
    return folded


class _GraphedCall:
    """``fn`` captured as one CUDA graph for fixed input shapes; outputs are reused buffers."""

    def __init__(self, fn: Callable[..., tuple[Tensor, ...]], example: Sequence[Tensor]) -> None:
        self.inputs = [t.clone() for t in example]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(CUDA_GRAPH_WARMUP_RUNS):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*self.inputs)

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        for static, value in zip(self.inputs, inputs, strict=True):
            static.copy_(value)
        self.graph.replay()
        return self.outputs


def _pad_slices(tensor: Tensor, slices: int) -> Tensor:
    """Pad dim 0 with zeros up to ``slices`` (per-slice stages ignore the padding)."""
    missing = slices - tensor.shape[0]
    if missing <= 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((missing, *tensor.shape[1:]))])


class _TorchRunner:
    """:class:`~ichnet_core.inference.staged.StageRunner` on torch tensors."""

    def __init__(
        self, model: ICHNet, device: torch.device, settings: TorchSettings, chunk_slices: int
    ) -> None:
        self.device = device
        self.settings = settings
        self.chunk_slices = chunk_slices
        self.recurrent_model = model  # float32 always
        # A separate copy whenever the stages change layout or weights: the reference stays as is.
        if settings.fold_batch_norm:
            stage_model = fold_batch_norms(model)
        elif settings.channels_last or settings.precision is Precision.FP16:
            stage_model = copy.deepcopy(model)
        else:
            stage_model = model
        self.memory_format = (
            torch.channels_last if settings.channels_last else torch.contiguous_format
        )
        if settings.precision is Precision.FP16:
            stage_model = stage_model.half()
        # Module.to takes memory_format (torch docs, "Module.to"); torch's overloads omit it.
        self.stage_model = stage_model.to(  # type: ignore[call-overload]
            device=device, memory_format=self.memory_format
        ).eval()
        self.input_dtype = torch.float16 if settings.precision is Precision.FP16 else torch.float32
        self.autocast_dtype = (
            _DTYPES[settings.precision] if settings.precision is Precision.BF16 else None
        )
        self.fixed_chunk = settings.cuda_graphs or settings.compile
        self._encode: Callable[..., tuple[Tensor, ...]] = self._encode_eager
        self._decode: Callable[..., tuple[Tensor, ...]] = self._decode_eager
        if settings.compile:
            self._encode = torch.compile(self._encode_eager, dynamic=False)
            self._decode = torch.compile(self._decode_eager, dynamic=False)
        self._graphs: dict[str, _GraphedCall] = {}

    def _autocast(self) -> AbstractContextManager[object]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _encode_eager(self, x: Tensor) -> tuple[Tensor, ...]:
        with self._autocast():
            return tuple(self.stage_model.encode(x))

    def _decode_eager(self, s0: Tensor, s1: Tensor, s2: Tensor, seq: Tensor) -> tuple[Tensor, ...]:
        with self._autocast():
            logits = self.stage_model.decode((s0, s1, s2), seq)
        return (seg_probabilities(logits.float(), dim=_CLASS_DIM),)

    def _call(
        self, stage: str, fn: Callable[..., tuple[Tensor, ...]], *inputs: Tensor
    ) -> tuple[Tensor, ...]:
        if not self.settings.cuda_graphs:
            return fn(*inputs)
        graphed = self._graphs.get(stage)
        if graphed is None:
            graphed = self._graphs[stage] = _GraphedCall(fn, inputs)
        return graphed(*inputs)

    def _to_device(self, tensor: Tensor) -> Tensor:
        return tensor.to(self.device, dtype=self.input_dtype).contiguous(
            memory_format=self.memory_format
        )

    def encode(self, x: np.ndarray) -> tuple[Tensor, ...]:
        count = x.shape[0]
        inputs = self._to_device(torch.from_numpy(x))
        if self.fixed_chunk:
            inputs = _pad_slices(inputs, self.chunk_slices)
        features = self._call("encode", self._encode, inputs)
        # Graph outputs are reused buffers and padding is not ours: keep copies of real slices.
        return tuple(f[:count].clone() if self.fixed_chunk else f for f in features)

    def recur(self, bottlenecks: Sequence[Tensor]) -> tuple[Tensor, np.ndarray, np.ndarray]:
        sequence = torch.cat([b.float() for b in bottlenecks]).contiguous()
        seq_out, slice_logits, subject_logits = self.recurrent_model.recur(sequence[None])
        assert slice_logits is not None and subject_logits is not None  # checked by the engine
        return seq_out[0], slice_logits[0].cpu().numpy(), subject_logits[0].cpu().numpy()

    def decode(
        self, skips: tuple[Tensor, ...], seq_out: Tensor, start: int, stop: int
    ) -> np.ndarray:
        count = stop - start
        seq = self._to_device(seq_out[start:stop])
        inputs = [*skips, seq]
        if self.fixed_chunk:
            inputs = [_pad_slices(t, self.chunk_slices) for t in inputs]
        (probs,) = self._call("decode", self._decode, *inputs)
        return probs[:count].float().cpu().numpy()

    def nbytes(self, features: tuple[Tensor, ...]) -> int:
        return sum(t.numel() * t.element_size() for t in features)


class TorchEngine(PipelineEngine):
    """Runs ICHNet with PyTorch.

    Parameters
    ----------
    weights:
        Verified weights of a model with both branches (the node needs labels and probabilities).
    chunk_slices:
        Slices per encode/decode chunk.
    device:
        Torch device; ``None`` picks CUDA when available, else the CPU.
    skip_cache_bytes:
        Memory for skip features kept between the passes (0: always re-encode).
    settings:
        How to run; ``None`` is the float32 reference (:meth:`TorchSettings.reference`).

    Raises
    ------
    ValueError
        A model without the segmentation or classification branch, ``chunk_slices < 1``, or
        settings the device cannot run.
    """

    name: str = EngineName.TORCH.value

    def __init__(
        self,
        weights: ModelWeights,
        *,
        chunk_slices: int = DEFAULT_CHUNK_SLICES,
        device: str | torch.device | None = None,
        skip_cache_bytes: int = DEFAULT_SKIP_CACHE_BYTES,
        settings: TorchSettings | None = None,
    ) -> None:
        config = weights.config
        if not (config.seg_branch and config.cls_branch):
            raise ValueError(
                f"the node needs both branches; weights {weights.path} ({weights.model_name}) have "
                f"seg_branch={config.seg_branch}, cls_branch={config.cls_branch}"
            )
        if chunk_slices < 1:
            raise ValueError(f"chunk_slices must be >= 1, got {chunk_slices}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.settings = settings if settings is not None else TorchSettings.reference()
        self.settings.check(self.device)
        self.chunk_slices = chunk_slices
        self.skip_cache_bytes = skip_cache_bytes
        self.weights = weights
        self.hemorrhage_threshold = weights.operating_points.hemorrhage_voxel
        #: The float32 reference network (the recurrent stage always runs on it).
        self.model = build_model(weights).to(self.device)
        self._runner = _TorchRunner(self.model, self.device, self.settings, chunk_slices)
        logger.info(
            "torch engine: model %s (sha256 %s) on %s, %s, %d slices per chunk",
            weights.model_name,
            weights.sha256[:12],
            self.device,
            self.settings.describe(),
            chunk_slices,
        )

    @classmethod
    def optimized(
        cls,
        weights: ModelWeights,
        *,
        chunk_slices: int = DEFAULT_CHUNK_SLICES,
        device: str | torch.device | None = None,
        skip_cache_bytes: int = DEFAULT_SKIP_CACHE_BYTES,
        **overrides: Any,
    ) -> TorchEngine:
        """The engine with :meth:`TorchSettings.optimized` for its device (``overrides`` replace
        single settings, e.g. ``compile=True, cuda_graphs=False``)."""
        resolved = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        settings = replace(TorchSettings.optimized(resolved), **overrides)
        return cls(
            weights,
            chunk_slices=chunk_slices,
            device=resolved,
            skip_cache_bytes=skip_cache_bytes,
            settings=settings,
        )

    @property
    def grid(self) -> ModelGrid:
        """Where the model input lies on a source slice."""
        return self.model.config.grid

    @property
    def description(self) -> str:
        """Engine, device and settings, for logs and benchmark tables."""
        return f"torch {self.device.type} {self.settings.describe()}"

    def run_network(self, x: np.ndarray, sink: ChunkSink | None = None) -> NetworkOutput:
        """Run the network on a prepared input ``[S, 3, H, W]`` (one series); ``sink`` as in
        :func:`~ichnet_core.inference.staged.run_staged`.

        Raises
        ------
        ValueError
            When ``x`` is not ``[S >= 1, 3, H, W]``.
        """
        check_input(x)
        with torch.inference_mode():
            return run_staged(
                self._runner,
                x,
                chunk_slices=self.chunk_slices,
                skip_cache_bytes=self.skip_cache_bytes,
                sink=sink,
            )
