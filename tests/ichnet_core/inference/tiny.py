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

TINY_OVERRIDES: Final[dict[str, object]] = {
    "widths": (4, 8, 8, 8),
    "blocks_per_level": (1, 1, 1, 1),
    "input_size": 32,
    "lstm_hidden": 4,
}
#: Name of the engine cache folder under pytest's session temp root.
CACHE_DIR_NAME: Final[str] = "engine-cache"
#: Output-head gains of the "decisive" weights (see :func:`make_tiny_weights`).
SEG_HEAD_GAIN: Final[float] = 40.0
CLS_HEAD_GAIN: Final[float] = 20.0


def _make_decisive(model: torch.nn.Module) -> None:
    """Give a random network a trained-like output range.

    A freshly initialised ICHNet outputs nearly uniform class probabilities (standard deviation
    about 0.01), so any arithmetic error shrinks to nothing after the softmax and a parity test
    would pass whatever the precision. Random batch-norm statistics and larger output heads
    spread the probabilities over [0, 1] (standard deviation about 0.44), like a trained model.
    """
    with torch.no_grad():
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            norm.running_mean.uniform_(-0.2, 0.2)
            norm.running_var.uniform_(0.5, 2.0)
        heads = [(model.decoder.head.classifier, SEG_HEAD_GAIN)]
        heads += [(model.classifier.slice_fc, CLS_HEAD_GAIN)]
        heads += [(model.classifier.subject_fc, CLS_HEAD_GAIN)]
        for layer, gain in heads:
            layer.weight.mul_(gain)
            layer.bias.mul_(gain)


def make_tiny_weights(
    folder: Path, name: str = "ichnet", *, decisive: bool = False, **flags: bool
) -> ModelWeights:
    """Random tiny weights of variant ``name`` (32x32 input), saved and verified like real ones.

    ``decisive`` spreads the outputs like a trained model's (:func:`_make_decisive`; needs both
    branches): what precision and parity tests need.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(name, **TINY_OVERRIDES, **flags)
        if decisive:
            _make_decisive(model)
    path = folder / f"{name}{'-decisive' if decisive else ''}.pt"
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
