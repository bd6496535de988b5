"""Inference engines: one interface, several runtimes, shared pre/post-processing.

Engine implementations (``torch_engine``, ``onnx_engine``, ``tensorrt_engine``) are imported only
when :func:`create_engine` builds them. Nothing here imports pydicom, so the engines also run on
machines that only have the model stack (the GPU benchmark).
"""

from ichnet_core.inference.base import (
    AUTO_PREFERENCE,
    DEFAULT_CHUNK_SLICES,
    MAX_SERIES_SLICES,
    EngineName,
    EngineOptions,
    EngineUnavailableError,
    InferenceEngine,
    NetworkEngine,
)
from ichnet_core.inference.engine import create_engine
from ichnet_core.inference.pipeline import (
    finalize,
    hemorrhage_volume_ml,
    prepare_input,
    run_pipeline,
)
from ichnet_core.inference.staged import NetworkOutput, run_staged

__all__ = [
    "AUTO_PREFERENCE",
    "DEFAULT_CHUNK_SLICES",
    "MAX_SERIES_SLICES",
    "EngineName",
    "EngineOptions",
    "EngineUnavailableError",
    "InferenceEngine",
    "NetworkEngine",
    "NetworkOutput",
    "create_engine",
    "finalize",
    "hemorrhage_volume_ml",
    "prepare_input",
    "run_pipeline",
    "run_staged",
]
