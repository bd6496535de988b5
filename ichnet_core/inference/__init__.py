"""Inference engines: one interface, several runtimes, shared pre/post-processing.

Engine implementations (``inference.torch_engine``, later ONNX Runtime and TensorRT) are imported
only when :func:`create_engine` builds them.
"""

from ichnet_core.inference.engine import (
    AUTO_PREFERENCE,
    DEFAULT_CHUNK_SLICES,
    EngineName,
    EngineOptions,
    EngineUnavailableError,
    InferenceEngine,
    create_engine,
)
from ichnet_core.inference.pipeline import finalize, hemorrhage_volume_ml, prepare_input

__all__ = [
    "AUTO_PREFERENCE",
    "DEFAULT_CHUNK_SLICES",
    "EngineName",
    "EngineOptions",
    "EngineUnavailableError",
    "InferenceEngine",
    "create_engine",
    "finalize",
    "hemorrhage_volume_ml",
    "prepare_input",
]
