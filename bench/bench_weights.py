"""Weights and inputs for benchmarks: the default ICHNet architecture at a chosen input size.

No trained weights exist yet, so benchmarks use randomly initialised ones. Speed does not depend
on the values; parity does: a fresh random network gives nearly uniform probabilities and hides
precision errors, so parity checks use "decisive" weights (random batch-norm statistics, larger
output heads) whose outputs spread over [0, 1] like a trained model's. The same idea, with the
same function, is used by the test suite (tests/ichnet_core/models/decisive.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import numpy as np
import torch

from ichnet_core.models.registry import DEFAULT_MODEL, create_model
from ichnet_core.models.weights import ModelWeights, load_weights, save_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/
from tests.ichnet_core.models.decisive import spread_outputs

SEED: Final[int] = 0


def make_weights(
    folder: Path,
    input_size: int,
    *,
    decisive: bool = True,
    model_name: str = DEFAULT_MODEL,
    **overrides: object,
) -> ModelWeights:
    """Random weights of ``model_name`` at ``input_size`` (saved to ``folder`` and verified)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = create_model(model_name, input_size=input_size, **overrides)
        if decisive:
            spread_outputs(model)
    tag = "decisive" if decisive else "random"
    path = Path(folder) / f"{model_name}-{input_size}-{tag}.pt"
    sha256 = save_weights(
        model,
        path,
        name=model_name,
        metadata={
            "version": f"bench-{tag}",
            "trained_on": "nothing: random initialisation for benchmarks",
            "training_data": "none",
            "description": f"benchmark weights ({tag}), not for any use",
        },
    )
    return load_weights(path, expected_sha256=sha256)


#: Phantom Hounsfield units: air, scalp, skull, brain, a hyperdense bleed.
_AIR_HU: Final[float] = -1000.0
_SCALP_HU: Final[float] = 40.0
_SKULL_HU: Final[float] = 900.0
_BRAIN_HU: Final[float] = 32.0
_BLEED_HU: Final[float] = 70.0
_NOISE_HU: Final[float] = 4.0


def phantom_input(slices: int, size: int, *, seed: int = 0) -> np.ndarray:
    """A smooth head-like model input ``[slices, 3, size, size]`` in [0, 1].

    Uniform noise would make every pixel a class boundary and exaggerate label flips between
    precisions; a phantom (elliptical head, skull ring, brain, a bleed that moves with the slice)
    has label maps with realistic boundaries. Windowed like the real pipeline.
    """
    from ichnet_core.imaging.windowing import window_stack

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1.0 : 1.0 : size * 1j, -1.0 : 1.0 : size * 1j]
    hu = np.empty((slices, size, size), dtype=np.float32)
    for index in range(slices):
        z = 2.0 * index / max(slices - 1, 1) - 1.0
        scale = np.sqrt(max(1.0 - 0.7 * z * z, 0.05))
        radius = np.sqrt((xx / (0.8 * scale)) ** 2 + (yy / (0.9 * scale)) ** 2)
        plane = np.full((size, size), _AIR_HU, dtype=np.float32)
        plane[radius < 1.0] = _SCALP_HU
        plane[radius < 0.95] = _SKULL_HU
        plane[radius < 0.88] = _BRAIN_HU
        bleed = np.hypot(xx - 0.3 * z, yy + 0.2) < 0.15 * scale
        plane[bleed & (radius < 0.88)] = _BLEED_HU
        hu[index] = plane + rng.normal(0.0, _NOISE_HU, plane.shape).astype(np.float32)
    return window_stack(hu)
