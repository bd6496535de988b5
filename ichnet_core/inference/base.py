"""What every inference engine is: its name, its errors, the protocols, the builder options.

Kept apart from the factory (``engine.py``) and the engines themselves, so that the engine
modules import only this and the factory imports the engines: no import circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # imaging.volume imports pydicom; engines must import without it (GPU bench)
    from ichnet_core.imaging.volume import Volume
    from ichnet_core.inference.staged import ChunkSink, NetworkOutput
    from ichnet_core.models.weights import ModelWeights
    from ichnet_core.prediction import Prediction

#: Slices per encode/decode chunk: bounds activation memory regardless of the series length.
DEFAULT_CHUNK_SLICES: Final[int] = 16
#: Longest series the engines are prepared for (TensorRT profile maximum), and the default of
#: the node's ``selection.max_slices``, which refuses longer series before reading pixel data.
MAX_SERIES_SLICES: Final[int] = 1200


class EngineName(str, Enum):
    """The engine names: the node config's ``engine:``, ``--engine`` and :func:`create_engine`."""

    AUTO = "auto"
    TENSORRT = "tensorrt"
    ONNXRUNTIME = "onnxruntime"
    TORCH = "torch"
    #: A Triton Inference Server that serves the model (the node's ``triton:`` section;
    #: ``ichnet-node triton-repo`` writes its model repository). Never chosen by ``auto``.
    TRITON = "triton"

    def __str__(self) -> str:
        return self.value


#: Every engine ``auto`` considers, in order of preference when timings tie.
AUTO_PREFERENCE: Final[tuple[EngineName, ...]] = (
    EngineName.TENSORRT,
    EngineName.ONNXRUNTIME,
    EngineName.TORCH,
)


class EngineUnavailableError(RuntimeError):
    """The requested engine cannot run here; the message says why."""


class EngineTransientError(RuntimeError):
    """The engine's inference service cannot answer now (unreachable, timed out, not ready).

    The same series may well succeed later, so a caller keeps the job and retries it instead of
    failing it: a model server being restarted must not cost a study its result.
    """


@runtime_checkable
class InferenceEngine(Protocol):
    """Runs ICHNet on one series."""

    name: str

    def predict(self, volume: Volume, *, keep_probabilities: bool = False) -> Prediction:
        """Segmentation and classification of ``volume``.

        ``keep_probabilities`` keeps the model-resolution softmax in the prediction (parity tests).
        """
        ...


@runtime_checkable
class NetworkEngine(InferenceEngine, Protocol):
    """An engine that also runs the network on a prepared array (benchmarks, parity, auto)."""

    @property
    def input_size(self) -> int: ...

    @property
    def description(self) -> str: ...

    def run_network(self, x: np.ndarray, sink: ChunkSink | None = None) -> NetworkOutput: ...


@dataclass(frozen=True)
class EngineOptions:
    """Settings every engine builder receives.

    Attributes
    ----------
    chunk_slices:
        Slices per encode/decode chunk.
    cache_dir:
        Where engines keep their artefacts (ONNX export, TensorRT plans, the auto decision);
        ``None``: a temporary folder per engine.
    """

    chunk_slices: int = DEFAULT_CHUNK_SLICES
    cache_dir: Path | None = None


EngineBuilder = Callable[["ModelWeights", EngineOptions], NetworkEngine]
