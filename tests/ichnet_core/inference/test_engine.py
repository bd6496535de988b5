"""Engine factory: names, the optimised torch engine, auto selection by measurement and its log."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ichnet_core.inference import auto
from ichnet_core.inference.auto import AUTO_DECISION_FILE, BUSY_SHARE, OtherCpuUse
from ichnet_core.inference.base import (
    EngineName,
    EngineUnavailableError,
    InferenceEngine,
    NetworkEngine,
)
from ichnet_core.inference.engine import create_engine
from ichnet_core.inference.onnx_engine import OnnxRuntimeEngine
from ichnet_core.inference.torch_engine import TorchEngine, TorchSettings
from ichnet_core.models.weights import ModelWeights

ENGINE_LOGGER = "ichnet_core.inference"  # the factory and the auto choice (auto.py) log under it


@pytest.fixture(autouse=True)
def other_cpu_use(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """What other processes use of the CPUs, as the auto choice sees it: none unless a test
    sets a share, so whatever else runs beside the suite never makes a decision provisional."""
    shares: list[float] = []
    monkeypatch.setattr(OtherCpuUse, "share", lambda self: shares[0] if shares else 0.0)
    monkeypatch.setattr(auto, "QUIET_SAMPLE_S", 0.0)
    return shares


def _own_cache(engine_cache: Path, tmp_path: Path) -> Path:
    """A cache of its own for the decision file; the ONNX export comes from the session cache
    where an earlier test made it."""
    cache = tmp_path / "cache"
    (cache / "onnx").mkdir(parents=True)
    exports = engine_cache / "onnx"
    for export in exports.iterdir() if exports.is_dir() else ():
        (cache / "onnx" / export.name).symlink_to(export)
    return cache


def test_torch_engine_by_name_is_the_optimised_one(
    tiny_weights: ModelWeights, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=ENGINE_LOGGER):
        engine = create_engine("torch", tiny_weights, chunk_slices=3)
    assert f"{engine.description} warmed up in" in caplog.text
    assert isinstance(engine, TorchEngine) and isinstance(engine, InferenceEngine)
    assert isinstance(engine, NetworkEngine)
    assert engine.name == "torch" and engine.chunk_slices == 3
    assert engine.settings == TorchSettings.optimized(engine.device)


def test_a_one_shot_engine_skips_the_warm_up_and_still_runs(
    tiny_weights: ModelWeights, caplog: pytest.LogCaptureFixture
) -> None:
    """``warm=False`` (``ichnet-node infer``): no blank run first, the real one still works."""
    with caplog.at_level(logging.INFO, logger=ENGINE_LOGGER):
        engine = create_engine("torch", tiny_weights, chunk_slices=2, warm=False)
    assert "warmed up" not in caplog.text
    size = engine.input_size
    output = engine.run_network(np.zeros((3, 3, size, size), dtype=np.float32))
    assert output.seg_probs.shape[0] == 3


def test_onnxruntime_by_name_exports_into_the_cache(
    tiny_weights: ModelWeights, engine_cache: Path
) -> None:
    engine = create_engine("onnxruntime", tiny_weights, chunk_slices=2, cache_dir=engine_cache)
    assert isinstance(engine, OnnxRuntimeEngine) and engine.name == "onnxruntime"
    assert engine.exported.directory.parent == engine_cache / "onnx"


def test_auto_measures_then_reuses_its_decision(
    tiny_weights: ModelWeights,
    engine_cache: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = _own_cache(engine_cache, tmp_path)
    with caplog.at_level(logging.INFO, logger=ENGINE_LOGGER):
        engine = create_engine(EngineName.AUTO.value, tiny_weights, cache_dir=cache)
    decision = json.loads((cache / AUTO_DECISION_FILE).read_text())
    assert decision["provisional"] is False and decision["other_cpu_share"] == 0.0
    timings = decision["timings_s"]
    assert set(timings) == {"torch", "onnxruntime"}
    assert engine.name == decision["choice"] == min(timings, key=timings.__getitem__)
    assert "tensorrt unavailable" in caplog.text
    assert f"using {engine.name}" in caplog.text and "probe" in caplog.text
    assert decision["context"]["weights_sha256"] == tiny_weights.sha256

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ENGINE_LOGGER):
        again = create_engine(EngineName.AUTO.value, tiny_weights, cache_dir=cache)
    assert again.name == engine.name
    assert "measured earlier on this machine" in caplog.text


def test_auto_measures_again_once_the_busy_cpus_it_was_measured_on_are_quiet(
    tiny_weights: ModelWeights,
    engine_cache: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    other_cpu_use: list[float],
) -> None:
    """Measured while others used 60 % of the CPUs: provisional. A start while they are still
    busy keeps it; the first start on quiet CPUs measures again and makes it final."""
    cache = _own_cache(engine_cache, tmp_path)
    other_cpu_use[:] = [0.6]
    with caplog.at_level(logging.INFO, logger=ENGINE_LOGGER):
        create_engine(EngineName.AUTO.value, tiny_weights, cache_dir=cache)
    decision = json.loads((cache / AUTO_DECISION_FILE).read_text())
    assert decision["provisional"] is True and decision["other_cpu_share"] == 0.6
    assert "provisional: other processes used 60 % of the CPUs" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ENGINE_LOGGER):
        create_engine(EngineName.AUTO.value, tiny_weights, cache_dir=cache)
    assert "measured earlier on this machine" in caplog.text

    caplog.clear()
    other_cpu_use[:] = [0.0]
    with caplog.at_level(logging.INFO, logger=ENGINE_LOGGER):
        create_engine(EngineName.AUTO.value, tiny_weights, cache_dir=cache)
    assert "measuring again now that they are quiet" in caplog.text
    assert "fastest on a" in caplog.text
    assert json.loads((cache / AUTO_DECISION_FILE).read_text())["provisional"] is False


def test_other_processes_busy_on_every_cpu_count_as_other_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real measurement (the fixture's stand-in undone): one busy process per CPU while
    this one sleeps."""
    monkeypatch.undo()
    sample = OtherCpuUse()
    spin = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 0.6: pass"
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 1)]
    for process in busy:
        process.wait()
    share = sample.share()
    if share is None:
        pytest.skip(
            "no /proc/stat on this system: the auto choice never calls a decision provisional"
        )
    assert share > BUSY_SHARE


def test_auto_decision_for_other_weights_is_not_reused(
    tiny_weights: ModelWeights, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = {
        "format": "ichnet-auto-engine/1",
        "context": {"weights_sha256": "0" * 64},
        "choice": "torch",
        "timings_s": {"torch": 0.0},
    }
    (cache / AUTO_DECISION_FILE).write_text(json.dumps(stale))
    with caplog.at_level(logging.INFO, logger=ENGINE_LOGGER):
        create_engine("auto", tiny_weights, cache_dir=cache)
    assert "measured earlier" not in caplog.text
    assert json.loads((cache / AUTO_DECISION_FILE).read_text())["context"]["weights_sha256"] == (
        tiny_weights.sha256
    )


def test_tensorrt_unavailable_says_why(tiny_weights: ModelWeights) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(EngineUnavailableError, match="tensorrt is not installed"):
            create_engine("tensorrt", tiny_weights)
    else:
        pytest.skip("tensorrt is installed here; tests/.../test_tensorrt_engine.py covers it")


def test_invalid_arguments(tiny_weights: ModelWeights) -> None:
    with pytest.raises(
        ValueError,
        match="unknown engine 'openvino'; choose one of auto, tensorrt, onnxruntime, torch",
    ):
        create_engine("openvino", tiny_weights)
    with pytest.raises(ValueError, match="chunk_slices must be >= 1, got 0"):
        create_engine("torch", tiny_weights, chunk_slices=0)
