"""ONNX Runtime engine: built from the cached export, checks what it is given, runs the staging."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ichnet_core.export import ExportedModel
from ichnet_core.imaging.volume import Volume
from ichnet_core.inference.onnx_engine import CPU_PROVIDER, OnnxRuntimeEngine
from ichnet_core.inference.torch_engine import TorchEngine
from ichnet_core.models.weights import ModelWeights


@pytest.fixture(scope="module")
def engine(tiny_weights: ModelWeights, tiny_export: ExportedModel) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(
        tiny_weights, chunk_slices=3, exported=tiny_export, providers=[CPU_PROVIDER], threads=1
    )


def test_engine_identity(engine: OnnxRuntimeEngine) -> None:
    assert engine.name == "onnxruntime" and engine.input_size == 32
    assert engine.active_providers == [CPU_PROVIDER]
    assert engine.description == "onnxruntime cpu fp32"


def test_single_slice_and_shapes(
    engine: OnnxRuntimeEngine, make_volume: Callable[..., Volume]
) -> None:
    prediction = engine.predict(make_volume(slices=1), keep_probabilities=True)
    assert prediction.labels.shape == (1, 40, 48)
    assert prediction.slice_probabilities.shape == (1, 6)
    assert prediction.segmentation_probabilities is not None
    np.testing.assert_allclose(prediction.segmentation_probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_skip_budget_does_not_change_results(
    tiny_weights: ModelWeights, tiny_export: ExportedModel
) -> None:
    x = np.random.default_rng(1).random((7, 3, 32, 32), dtype=np.float32)
    kept = OnnxRuntimeEngine(tiny_weights, chunk_slices=2, exported=tiny_export)
    recomputed = OnnxRuntimeEngine(
        tiny_weights, chunk_slices=2, exported=tiny_export, skip_cache_bytes=0
    )
    reference = TorchEngine(tiny_weights, device="cpu").run_network(x)
    for output in (kept.run_network(x), recomputed.run_network(x)):
        for actual, expected in zip(output, reference, strict=True):
            np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_reuses_the_cached_export(tiny_weights: ModelWeights, engine_cache: Path) -> None:
    first = OnnxRuntimeEngine(tiny_weights, cache_dir=engine_cache)
    second = OnnxRuntimeEngine(tiny_weights, cache_dir=engine_cache)
    assert first.exported.directory == second.exported.directory


def test_rejects_an_export_of_other_weights(
    decisive_weights: ModelWeights, tiny_export: ExportedModel
) -> None:
    with pytest.raises(ValueError, match=r"holds weights .* not "):
        OnnxRuntimeEngine(decisive_weights, exported=tiny_export)


def test_rejects_bad_arguments(
    engine: OnnxRuntimeEngine, tiny_weights: ModelWeights, tiny_cls_weights: ModelWeights
) -> None:
    with pytest.raises(ValueError, match=r"expects \[S>=1, 3, H, W\]"):
        engine.run_network(np.zeros((0, 3, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="chunk_slices must be >= 1"):
        OnnxRuntimeEngine(tiny_weights, chunk_slices=0)
    with pytest.raises(ValueError, match="needs both branches"):
        OnnxRuntimeEngine(tiny_cls_weights)
