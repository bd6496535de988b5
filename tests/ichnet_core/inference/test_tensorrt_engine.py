"""TensorRT engine: profiles and cache keys (pure), availability here, and a real run in a
subprocess where TensorRT and a CUDA device exist (TensorRT objects are created only there)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ichnet_core.export import ExportedModel, Stage
from ichnet_core.inference.base import MAX_SERIES_SLICES, EngineUnavailableError
from ichnet_core.inference.tensorrt_engine import (
    PRECISION,
    TensorRTEngine,
    engine_cache_key,
    stage_profiles,
)
from ichnet_core.models.weights import ModelWeights

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_profiles_cover_chunks_and_series(tiny_export: ExportedModel) -> None:
    profiles = stage_profiles(tiny_export.shapes, chunk_slices=4, max_slices=MAX_SERIES_SLICES)
    (encoder,) = profiles[Stage.ENCODER]
    assert (encoder.name, encoder.min, encoder.opt, encoder.max) == (
        "x",
        (1, 3, 32, 32),
        (4, 3, 32, 32),
        (4, 3, 32, 32),
    )
    (recurrent,) = profiles[Stage.RECURRENT]
    assert recurrent.min == (1, 8, 4, 4) and recurrent.max == (MAX_SERIES_SLICES, 8, 4, 4)
    decoder = {p.name: p for p in profiles[Stage.DECODER]}
    assert set(decoder) == {"skip0", "skip1", "skip2", "seq_out"}
    assert decoder["skip1"].max == (4, 8, 16, 16) and decoder["seq_out"].opt == (4, 8, 4, 4)
    with pytest.raises(ValueError, match="must be >= 1"):
        stage_profiles(tiny_export.shapes, chunk_slices=0, max_slices=10)


def test_engine_cache_key_covers_everything_a_plan_depends_on(tiny_export: ExportedModel) -> None:
    profiles = stage_profiles(tiny_export.shapes, chunk_slices=4, max_slices=64)[Stage.ENCODER]
    base = {
        "onnx_sha256": tiny_export.graph_sha256(Stage.ENCODER),
        "tensorrt_version": "10.1.0",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": (9, 0),
        "precision": PRECISION,
        "profiles": profiles,
    }
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base)
    other_profiles = stage_profiles(tiny_export.shapes, chunk_slices=8, max_slices=64)
    for change in (
        {"onnx_sha256": tiny_export.graph_sha256(Stage.DECODER)},
        {"tensorrt_version": "10.2.0"},
        {"gpu_name": "NVIDIA L4"},
        {"compute_capability": (8, 9)},
        {"precision": "fp32"},
        {"profiles": other_profiles[Stage.ENCODER]},
    ):
        assert engine_cache_key(**{**base, **change}) != key, change


def test_graph_sha256_covers_the_external_data(tiny_export: ExportedModel) -> None:
    digests = {stage: tiny_export.graph_sha256(stage) for stage in Stage}
    assert len(set(digests.values())) == 3 and all(len(d) == 64 for d in digests.values())


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed here")
def test_unavailable_without_tensorrt(tiny_weights: ModelWeights) -> None:
    with pytest.raises(EngineUnavailableError, match="tensorrt is not installed"):
        TensorRTEngine(tiny_weights)


_SUBPROCESS_CHECK = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from ichnet_core.models.weights import load_weights
    from ichnet_core.inference.tensorrt_engine import TensorRTEngine
    from ichnet_core.inference.torch_engine import TorchEngine

    weights = load_weights(Path(sys.argv[1]), sys.argv[2])
    cache = Path(sys.argv[3])
    engine = TensorRTEngine(weights, chunk_slices=4, cache_dir=cache)
    reference = TorchEngine(weights, device="cpu")
    for slices in (2, 8, 33):
        x = np.random.default_rng(slices).random((slices, 3, 32, 32), dtype=np.float32)
        out, ref = engine.run_network(x), reference.run_network(x)
        for a, b in zip(out, ref):
            assert a.shape == b.shape, (a.shape, b.shape)
            assert float(np.abs(a - b).max()) <= 2e-2, float(np.abs(a - b).max())
    plans = sorted(p.name for p in (cache / "tensorrt").glob("*.plan"))
    assert len(plans) == 3, plans
    TensorRTEngine(weights, chunk_slices=4, cache_dir=cache)  # loads the cached plans
    print("tensorrt parity ok")
    """
)


@pytest.mark.skipif(not HAVE_TENSORRT, reason="tensorrt is not installed")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensorrt_parity_in_a_subprocess(decisive_weights: ModelWeights, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _SUBPROCESS_CHECK,
            str(decisive_weights.path),
            decisive_weights.sha256,
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "tensorrt parity ok" in result.stdout
