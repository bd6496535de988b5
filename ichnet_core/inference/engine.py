"""The factory that builds an inference engine by name (``auto``: ``inference/auto.py``).

Every engine turns a :class:`~ichnet_core.imaging.volume.Volume` into a
:class:`~ichnet_core.prediction.Prediction` with the same pre/post-processing
(``inference/pipeline.py``) and the same staged execution (``inference/staged.py``); they differ
only in the runtime that executes the three stages.

Adding an engine: write ``<kind>_engine.py`` with a class that satisfies :class:`~ichnet_core.inference.base.InferenceEngine`
and point its entry in ``_BUILDERS`` at a builder that imports it (imports stay lazy, so a
missing optional runtime only makes that one engine unavailable).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from ichnet_core.inference.auto import auto_engine
from ichnet_core.inference.base import (
    DEFAULT_CHUNK_SLICES,
    MAX_SERIES_SLICES,
    EngineBuilder,
    EngineName,
    EngineOptions,
    EngineUnavailableError,
    InferenceEngine,
    NetworkEngine,
)

if TYPE_CHECKING:
    from ichnet_core.models.weights import ModelWeights

#: The public API of the inference package: the factory and what callers need with it.
__all__ = [
    "DEFAULT_CHUNK_SLICES",
    "MAX_SERIES_SLICES",
    "EngineName",
    "EngineUnavailableError",
    "InferenceEngine",
    "NetworkEngine",
    "create_engine",
    "warm_up",
]

logger = logging.getLogger(__name__)


def _build_torch(weights: ModelWeights, options: EngineOptions) -> NetworkEngine:
    from ichnet_core.inference.torch_engine import TorchEngine

    return TorchEngine.optimized(weights, chunk_slices=options.chunk_slices)


def _build_onnxruntime(weights: ModelWeights, options: EngineOptions) -> NetworkEngine:
    from ichnet_core.inference.onnx_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(
        weights, chunk_slices=options.chunk_slices, cache_dir=options.cache_dir
    )


def _build_tensorrt(weights: ModelWeights, options: EngineOptions) -> NetworkEngine:
    from ichnet_core.inference.tensorrt_engine import TensorRTEngine

    return TensorRTEngine(weights, chunk_slices=options.chunk_slices, cache_dir=options.cache_dir)


_BUILDERS: Final[Mapping[EngineName, EngineBuilder]] = {
    EngineName.TORCH: _build_torch,
    EngineName.ONNXRUNTIME: _build_onnxruntime,
    EngineName.TENSORRT: _build_tensorrt,
}


def create_engine(
    name: str,
    weights: ModelWeights,
    *,
    chunk_slices: int = DEFAULT_CHUNK_SLICES,
    cache_dir: Path | None = None,
    warm: bool = True,
) -> NetworkEngine:
    """Build the engine called ``name`` (``auto``, ``torch``, ``onnxruntime``, ``tensorrt``).

    ``torch`` is the optimised PyTorch engine for the device
    (:meth:`~ichnet_core.inference.torch_engine.TorchSettings.optimized`); the float32 reference
    is ``TorchEngine(weights)``.

    Parameters
    ----------
    name:
        Engine name; ``auto`` picks the fastest available (module docstring).
    weights:
        Verified weights (:func:`ichnet_core.models.weights.load_weights`).
    chunk_slices:
        Slices per encode/decode chunk (>= 1).
    cache_dir:
        Artefact cache (ONNX export, TensorRT plans, auto decision); ``None``: temporary.
    warm:
        Run :func:`warm_up` before returning: right for a node, which takes the kernel
        selection off its first study; a one-shot command (``ichnet-node infer``) analyses a
        single series, so warming up would run the network twice for nothing.

    Raises
    ------
    ValueError
        Unknown name or ``chunk_slices < 1``.
    EngineUnavailableError
        The named engine (or, for ``auto``, every engine) cannot run here.
    """
    try:
        engine_name = EngineName(name)
    except ValueError:
        choices = ", ".join(e.value for e in EngineName)
        raise ValueError(f"unknown engine {name!r}; choose one of {choices}") from None
    if chunk_slices < 1:
        raise ValueError(f"chunk_slices must be >= 1, got {chunk_slices}")
    options = EngineOptions(
        chunk_slices=chunk_slices, cache_dir=Path(cache_dir) if cache_dir is not None else None
    )
    if engine_name is EngineName.AUTO:
        return auto_engine(weights, options, _BUILDERS)  # its probe has warmed the engine up
    if engine_name is EngineName.TRITON:  # a remote server: its client is networking
        raise EngineUnavailableError(
            "engine triton is a Triton server's client; the node builds it from its triton: "
            "section (dicom_node.triton_engine.node_engine)"
        )
    engine = _BUILDERS[engine_name](weights, options)
    if warm:
        warm_up(engine, slices=chunk_slices)
    return engine


def warm_up(engine: NetworkEngine, *, slices: int) -> float:
    """Run one chunk of blank slices so the first series does not pay for kernel selection.

    oneDNN, cuDNN and ONNX Runtime pick and compile kernels on the first call with each shape
    (seconds on a CPU); doing it at start-up takes that off the first study's latency.
    Returns the seconds it took.
    """
    started = time.perf_counter()
    size = engine.input_size
    engine.run_network(np.zeros((slices, 3, size, size), dtype=np.float32))
    elapsed = time.perf_counter() - started
    logger.info("%s warmed up in %.2f s", engine.description, elapsed)
    return elapsed
