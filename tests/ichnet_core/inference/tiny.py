"""Tiny ICHNet weights and a session-wide engine cache, shared by the export and engine tests.

The weights file is deterministic (seed 0, fixed metadata), so every test module that builds it
gets the same sha256 and therefore the same cached ONNX export: the suite exports once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
import torch

from ichnet_core.models.registry import create_model
from ichnet_core.models.weights import ModelWeights, load_weights, save_weights
from tests.ichnet_core.models.decisive import spread_outputs

TINY_OVERRIDES: Final[dict[str, object]] = {
    "widths": (4, 8, 8, 8),
    "blocks_per_level": (1, 1, 1, 1),
    "input_size": 32,
    "lstm_hidden": 4,
}
#: Name of the engine cache folder under pytest's session temp root.
CACHE_DIR_NAME: Final[str] = "engine-cache"


def make_tiny_weights(
    folder: Path, name: str = "ichnet", *, decisive: bool = False, **flags: bool | float | str
) -> ModelWeights:
    """Random tiny weights of variant ``name`` (32x32 input), saved and verified like real ones.

    ``decisive`` spreads the outputs like a trained model's (:func:`spread_outputs`; needs both
    branches): what precision and parity tests need.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(name, **TINY_OVERRIDES, **flags)
        if decisive:
            spread_outputs(model)
    suffix = "".join(f"-{key}={value}" for key, value in sorted(flags.items()))
    path = folder / f"{name}{'-decisive' if decisive else ''}{suffix}.pt"
    sha256 = save_weights(
        model,
        path,
        name=name,
        metadata={
            "version": "test",
            "trained_on": "nothing",
            "training_data": "none",
            "description": "tiny test weights",
        },
    )
    return load_weights(path, expected_sha256=sha256)


def session_cache_dir(factory: pytest.TempPathFactory) -> Path:
    """One engine cache for the whole test session (exports are reused across modules)."""
    path = factory.getbasetemp() / CACHE_DIR_NAME
    path.mkdir(exist_ok=True)
    return path
