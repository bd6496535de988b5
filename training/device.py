"""Where and how a run computes: the device, mixed precision, and seeding for determinism.

Shared by the trainer, ``ichnet-train``'s evaluation and the comparison runs, so a run and its
evaluation resolve ``device:`` and ``optim.amp`` the same way.
"""

from __future__ import annotations

import logging
import os
import random
from functools import partial
from typing import Final

import numpy as np
import torch
from torch import Tensor, nn

from ichnet_core.inference.torch_engine import cpu_supports_bf16

#: cuBLAS needs this workspace setting for deterministic results (CUDA docs, "Reproducibility").
_CUBLAS_WORKSPACE: Final[str] = ":4096:8"

_log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but no CUDA device is available")
    return torch.device(name)


def autocast_dtype(amp: str, device: torch.device, *, cpu_bf16: bool = False) -> torch.dtype | None:
    """Mixed precision on CUDA: bfloat16 where supported (no loss scaling), else float16. On a
    CPU: bfloat16 with ``cpu_bf16`` (the trainer's step, ``optim.cpu_bf16``), else none, which
    is also what every evaluation on a CPU gets (the node's precision).

    ``cpu_bf16`` travels with a run's config from machine to machine, so it is honoured only
    where the CPU has bfloat16 instructions: on an AVX2-only EPYC (2026-12-07) the cpu_diag
    training step took 19 s under bfloat16 autocast on one thread, 2-3 s in float32.
    """
    if amp == "off":
        return None
    if device.type != "cuda":
        if cpu_bf16 and not cpu_supports_bf16():
            _log.warning(
                "optim.cpu_bf16 ignored: this CPU has no AVX512_BF16/AMX, so torch would "
                "emulate bfloat16 (7-9x slower per step); training in float32"
            )
            return None
        return torch.bfloat16 if cpu_bf16 else None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; ask torch for deterministic kernels, or allow fast ones.

    With ``deterministic`` an operation without a deterministic kernel warns instead of failing
    (measured on an H100: bit-identical kernels cost about 2.3x per step for ICHNet).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = deterministic


def use_channels_last(model: nn.Module) -> None:
    """Put ``model``'s convolutions in channels-last layout for a CPU training step, in place.

    Why: oneDNN's channels-last kernels run the cpu_diag training step (2 x 8 slices of 128 px
    crops, bfloat16) at 1.30x the steps per hour of the default layout on an idle core (``python
    bench/train_step.py``). But its backward pass of a 1x1 convolution with stride 2 over
    channels-last input with fewer channels than its register block (the 12 -> 24 projection
    shortcut of ICHNet's second level) writes past its workspace and kills the process (torch
    2.13 on this AVX-512 EPYC; the pattern of oneDNN issue 6035). A 1x1 convolution without
    padding at stride ``s`` is the same convolution at stride 1 of the input subsampled by
    ``s``, so each such convolution is given stride 1 and a forward pre-hook that subsamples:
    the same function, the same parameters and state dict, on the kernel that works.
    """
    for module in model.modules():
        if (
            isinstance(module, nn.Conv2d)
            and module.kernel_size == (1, 1)
            and module.stride != (1, 1)
            and module.padding in ((0, 0), "valid")
        ):
            stride = module.stride
            module.stride = (1, 1)
            module.register_forward_pre_hook(partial(_subsample, stride))
        if isinstance(module, nn.Conv2d):
            # Per layer, not model.to(...): a 3-D baseline's Conv3d weights have no such layout.
            module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def _subsample(
    stride: tuple[int, ...], _module: nn.Module, args: tuple[Tensor, ...]
) -> tuple[Tensor, ...]:
    """Forward pre-hook of :func:`use_channels_last`: every ``stride``-th row and column."""
    return (args[0][:, :, :: stride[0], :: stride[1]], *args[1:])
