"""Where and how a run computes: the device, mixed precision, and seeding for determinism.

Shared by the trainer, ``ichnet-train``'s evaluation and the comparison runs, so a run and its
evaluation resolve ``device:`` and ``optim.amp`` the same way.
"""

from __future__ import annotations

import os
import random
from typing import Final

import numpy as np
import torch

#: cuBLAS needs this workspace setting for deterministic results (CUDA docs, "Reproducibility").
_CUBLAS_WORKSPACE: Final[str] = ":4096:8"


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
    is also what every evaluation on a CPU gets (the node's precision)."""
    if amp == "off":
        return None
    if device.type != "cuda":
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
