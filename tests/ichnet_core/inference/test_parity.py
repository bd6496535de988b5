"""Every engine available here agrees with the torch float32 reference at 2, 8 and 33 slices.

Tolerances (the issue's acceptance criteria): segmentation labels identical on at least 99.9 % of
voxels; probabilities (segmentation softmax, slice and subject sigmoids) within 1e-3 for float32
engines and 2e-2 for bfloat16/float16 ones. The chunk size (4) makes every count above 4 span
several chunks with a shorter last one, and a small skip budget makes the longer series re-encode
some chunks, so the staging itself is under test too. The weights are "decisive" (outputs spread
over [0, 1] like a trained model's): with a fresh random network every probability is close to
uniform and precision errors would vanish in the softmax.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pytest
import torch

from ichnet_core.export import ExportedModel, cached_export
from ichnet_core.imaging.volume import Volume
from ichnet_core.inference.base import NetworkEngine
from ichnet_core.inference.onnx_engine import OnnxRuntimeEngine
from ichnet_core.inference.torch_engine import (
    Precision,
    TorchEngine,
    TorchSettings,
    cpu_supports_bf16,
)
from ichnet_core.models.weights import ModelWeights
from ichnet_core.prediction import Prediction
from tests.ichnet_core.inference.tiny import make_tiny_weights

SLICE_COUNTS: Final[tuple[int, ...]] = (2, 8, 33)
CHUNK_SLICES: Final[int] = 4
#: Enough for the skips of two 4-slice chunks of the tiny model: later chunks are re-encoded.
SKIP_BUDGET_BYTES: Final[int] = 2 * 4 * (4 * 32 * 32 + 8 * 16 * 16 + 8 * 8 * 8) * 4
MIN_LABEL_AGREEMENT: Final[float] = 0.999
FP32_ATOL: Final[float] = 1e-3
REDUCED_ATOL: Final[float] = 2e-2


@dataclass(frozen=True)
class Candidate:
    """An engine configuration under test and the tolerance its arithmetic allows."""

    label: str
    build: Callable[[ModelWeights, ExportedModel, Path], NetworkEngine]
    atol: float
    skip_reason: str | None = None


def _torch(settings: TorchSettings, device: str = "cpu") -> Callable[..., NetworkEngine]:
    def build(weights: ModelWeights, _exported: ExportedModel, _cache: Path) -> NetworkEngine:
        return TorchEngine(
            weights,
            chunk_slices=CHUNK_SLICES,
            device=device,
            skip_cache_bytes=SKIP_BUDGET_BYTES,
            settings=settings,
        )

    return build


def _onnxruntime(weights: ModelWeights, exported: ExportedModel, _cache: Path) -> NetworkEngine:
    return OnnxRuntimeEngine(
        weights, chunk_slices=CHUNK_SLICES, exported=exported, skip_cache_bytes=SKIP_BUDGET_BYTES
    )


def _tensorrt(weights: ModelWeights, exported: ExportedModel, cache: Path) -> NetworkEngine:
    from ichnet_core.inference.tensorrt_engine import TensorRTEngine

    return TensorRTEngine(weights, chunk_slices=CHUNK_SLICES, cache_dir=cache, exported=exported)


_NO_CUDA = None if torch.cuda.is_available() else "needs a CUDA device"
_NO_TRT = "tensorrt is not installed" if importlib.util.find_spec("tensorrt") is None else _NO_CUDA

CANDIDATES: Final[tuple[Candidate, ...]] = (
    Candidate(
        "torch-cpu-fp32-channels_last-fold_bn",
        _torch(TorchSettings(Precision.FP32, channels_last=True, fold_batch_norm=True)),
        FP32_ATOL,
    ),
    Candidate(
        "torch-cpu-bf16-channels_last-fold_bn",
        _torch(TorchSettings(Precision.BF16, channels_last=True, fold_batch_norm=True)),
        REDUCED_ATOL,
        None if cpu_supports_bf16() else "this CPU has no AVX512_BF16/AMX (engine not used here)",
    ),
    Candidate("onnxruntime-cpu-fp32", _onnxruntime, FP32_ATOL),
    Candidate(
        "torch-cuda-fp16-cuda_graphs",
        _torch(
            TorchSettings(
                Precision.FP16, channels_last=True, fold_batch_norm=True, cuda_graphs=True
            ),
            "cuda",
        ),
        REDUCED_ATOL,
        _NO_CUDA,
    ),
    Candidate("tensorrt-fp16", _tensorrt, REDUCED_ATOL, _NO_TRT),
)


@pytest.fixture(scope="module")
def reference(decisive_weights: ModelWeights) -> TorchEngine:
    return TorchEngine(decisive_weights, chunk_slices=64, device="cpu")


@pytest.fixture(scope="module", params=CANDIDATES, ids=lambda c: c.label)
def candidate(
    request: pytest.FixtureRequest,
    decisive_weights: ModelWeights,
    decisive_export: ExportedModel,
    engine_cache: Path,
) -> Iterator[tuple[Candidate, NetworkEngine]]:
    spec: Candidate = request.param
    if spec.skip_reason:
        pytest.skip(spec.skip_reason)
    yield spec, spec.build(decisive_weights, decisive_export, engine_cache)


def _assert_close(name: str, actual: np.ndarray, expected: np.ndarray, atol: float) -> None:
    assert actual.shape == expected.shape, name
    error = float(np.abs(actual - expected).max())
    assert error <= atol, f"{name}: max abs error {error:.2e} > {atol:.0e}"


@pytest.mark.parametrize("slices", SLICE_COUNTS)
def test_engine_matches_reference(
    candidate: tuple[Candidate, NetworkEngine],
    reference: TorchEngine,
    make_volume: Callable[..., Volume],
    slices: int,
) -> None:
    spec, engine = candidate
    volume = make_volume(slices=slices)
    expected: Prediction = reference.predict(volume, keep_probabilities=True)
    assert expected.segmentation_probabilities is not None
    assert float(expected.segmentation_probabilities.std()) > 0.3, "outputs are not decisive"
    actual: Prediction = engine.predict(volume, keep_probabilities=True)
    assert expected.segmentation_probabilities is not None
    assert actual.segmentation_probabilities is not None
    _assert_close(
        "segmentation",
        actual.segmentation_probabilities,
        expected.segmentation_probabilities,
        spec.atol,
    )
    _assert_close("slice", actual.slice_probabilities, expected.slice_probabilities, spec.atol)
    _assert_close(
        "subject", actual.subject_probabilities, expected.subject_probabilities, spec.atol
    )
    assert actual.labels.shape == expected.labels.shape
    agreement = float(np.mean(actual.labels == expected.labels))
    assert agreement >= MIN_LABEL_AGREEMENT, f"labels agree on {agreement:.4%} of voxels"


def test_compartment_model_on_a_millimetre_grid_agrees_across_engines(
    tmp_path_factory: pytest.TempPathFactory,
    engine_cache: Path,
    make_volume: Callable[..., Volume],
) -> None:
    """Weights as the diagnostic-resolution run trains them (compartments, a fixed pixel size,
    the classification embedding, the subject maximum over slices): ONNX Runtime equals torch
    float32."""
    weights = make_tiny_weights(
        tmp_path_factory.mktemp("weights_compartments"),
        decisive=True,
        compartments=True,
        input_spacing_mm=1.5,
        cls_embedding=True,
        subject_pooling="max",
    )
    volume = make_volume(slices=5)
    expected = TorchEngine(weights, chunk_slices=64, device="cpu").predict(
        volume, keep_probabilities=True
    )
    engine = OnnxRuntimeEngine(
        weights, chunk_slices=CHUNK_SLICES, exported=cached_export(weights, engine_cache)
    )
    actual = engine.predict(volume, keep_probabilities=True)
    assert engine.grid.spacing_mm == 1.5
    assert expected.segmentation_probabilities is not None
    assert actual.segmentation_probabilities is not None
    assert expected.segmentation_probabilities.shape[1] == 8
    _assert_close(
        "segmentation",
        actual.segmentation_probabilities,
        expected.segmentation_probabilities,
        FP32_ATOL,
    )
    _assert_close(
        "subject", actual.subject_probabilities, expected.subject_probabilities, FP32_ATOL
    )
    assert expected.compartments is not None and actual.compartments is not None
    assert float(np.mean(actual.compartments == expected.compartments)) >= MIN_LABEL_AGREEMENT
    assert float(np.mean(actual.labels == expected.labels)) >= MIN_LABEL_AGREEMENT
