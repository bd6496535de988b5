"""Engine factory: names, auto selection with its logged reasons, unavailable engines."""

from __future__ import annotations

import logging

import pytest

from ichnet_core.inference import (
    EngineName,
    EngineUnavailableError,
    InferenceEngine,
    create_engine,
)
from ichnet_core.inference.torch_engine import TorchEngine
from ichnet_core.models.weights import ModelWeights


def test_torch_engine_by_name(tiny_weights: ModelWeights) -> None:
    engine = create_engine("torch", tiny_weights, chunk_slices=3)
    assert isinstance(engine, TorchEngine) and isinstance(engine, InferenceEngine)
    assert engine.name == "torch" and engine.chunk_slices == 3


def test_auto_picks_torch_and_says_why(
    tiny_weights: ModelWeights, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ichnet_core.inference.engine"):
        engine = create_engine(EngineName.AUTO.value, tiny_weights)
    assert engine.name == "torch"
    assert "tensorrt unavailable" in caplog.text and "onnxruntime unavailable" in caplog.text
    assert "using torch" in caplog.text


@pytest.mark.parametrize("name", ["onnxruntime", "tensorrt"])
def test_not_yet_implemented_engines_are_unavailable(tiny_weights: ModelWeights, name: str) -> None:
    with pytest.raises(EngineUnavailableError, match=f"the {name} engine is not implemented"):
        create_engine(name, tiny_weights)


def test_invalid_arguments(tiny_weights: ModelWeights) -> None:
    with pytest.raises(ValueError, match="unknown engine 'openvino'; choose one of auto, torch"):
        create_engine("openvino", tiny_weights)
    with pytest.raises(ValueError, match="chunk_slices must be >= 1, got 0"):
        create_engine("torch", tiny_weights, chunk_slices=0)
