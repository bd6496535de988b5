"""The inference-engine interface and the factory that picks an implementation.

Every engine turns a :class:`~ichnet_core.imaging.volume.Volume` into a
:class:`~ichnet_core.prediction.Prediction` with the same pre/post-processing
(``inference/pipeline.py``); they differ only in how the network runs. ``engine: auto`` in the
node config tries the fastest kind first and falls back, logging why each was skipped.

Adding an engine: write ``<kind>_engine.py`` with a class that satisfies :class:`InferenceEngine`
and point its entry in ``_BUILDERS`` at a builder that imports it (imports stay lazy, so a
missing optional runtime only makes that one engine unavailable).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from ichnet_core.imaging.volume import Volume
from ichnet_core.prediction import Prediction

if TYPE_CHECKING:
    from ichnet_core.models.weights import ModelWeights

logger = logging.getLogger(__name__)

#: Slices per encode/decode chunk: bounds activation memory regardless of the series length.
DEFAULT_CHUNK_SLICES: Final[int] = 16


class EngineName(str, Enum):
    """Engine names accepted by the node config (``engine:``) and ``--engine``."""

    AUTO = "auto"
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


#: ``auto`` tries these in order, fastest first.
AUTO_PREFERENCE: Final[tuple[EngineName, ...]] = (
    EngineName.TENSORRT,
    EngineName.ONNXRUNTIME,
    EngineName.TORCH,
)


class EngineUnavailableError(RuntimeError):
    """The requested engine cannot run here; the message says why."""


@runtime_checkable
class InferenceEngine(Protocol):
    """Runs ICHNet on one series."""

    name: str

    def predict(self, volume: Volume, *, keep_probabilities: bool = False) -> Prediction:
        """Segmentation and classification of ``volume``.

        ``keep_probabilities`` keeps the model-resolution softmax in the prediction (parity tests).
        """
        ...


@dataclass(frozen=True)
class EngineOptions:
    """Settings every engine builder receives.

    Attributes
    ----------
    chunk_slices:
        Slices per encode/decode chunk.
    cache_dir:
        Where engines that compile (TensorRT) keep their artefacts; ``None``: no cache.
    """

    chunk_slices: int = DEFAULT_CHUNK_SLICES
    cache_dir: Path | None = None


EngineBuilder = Callable[["ModelWeights", EngineOptions], InferenceEngine]


def _build_torch(weights: ModelWeights, options: EngineOptions) -> InferenceEngine:
    from ichnet_core.inference.torch_engine import TorchEngine

    return TorchEngine(weights, chunk_slices=options.chunk_slices)


def _build_onnxruntime(weights: ModelWeights, options: EngineOptions) -> InferenceEngine:
    raise EngineUnavailableError(
        "the onnxruntime engine is not implemented in this version (it needs the staged ONNX "
        "export of ICHNet, which is planned); use engine 'torch'"
    )


def _build_tensorrt(weights: ModelWeights, options: EngineOptions) -> InferenceEngine:
    raise EngineUnavailableError(
        "the tensorrt engine is not implemented in this version (it builds on the planned ONNX "
        "export); use engine 'torch'"
    )


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
) -> InferenceEngine:
    """Build the engine called ``name`` (``auto``, ``torch``, ``onnxruntime``, ``tensorrt``).

    Parameters
    ----------
    name:
        Engine name; ``auto`` takes the first available of :data:`AUTO_PREFERENCE`.
    weights:
        Verified weights (:func:`ichnet_core.models.weights.load_weights`).
    chunk_slices:
        Slices per encode/decode chunk (>= 1).
    cache_dir:
        Artefact cache for compiling engines.

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
    options = EngineOptions(chunk_slices=chunk_slices, cache_dir=cache_dir)
    if engine_name is not EngineName.AUTO:
        return _BUILDERS[engine_name](weights, options)
    skipped: list[str] = []
    for candidate in AUTO_PREFERENCE:
        try:
            engine = _BUILDERS[candidate](weights, options)
        except EngineUnavailableError as exc:
            logger.info("engine auto: %s unavailable: %s", candidate.value, exc)
            skipped.append(f"{candidate.value}: {exc}")
            continue
        logger.info(
            "engine auto: using %s (faster engines unavailable: %s)",
            candidate.value,
            "; ".join(skipped) or "none",
        )
        return engine
    raise EngineUnavailableError("no inference engine can run here: " + "; ".join(skipped))
