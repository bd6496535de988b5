"""The ONNX Runtime engine: the staged ONNX export run by ONNX Runtime (CPU, or CUDA when present).

The three graphs come from :func:`ichnet_core.export.cached_export` (exported once into the
engine cache and reused by later starts). ONNX Runtime folds the batch norms, fuses
convolution + activation and runs its own kernels; on CPUs without bfloat16 instructions it is
usually the fastest engine (see docs/benchmarks.md). The CUDA execution provider is used when the
installed ONNX Runtime build has it (``onnxruntime-gpu``, the ``gpu`` extra).

Execution is staged like every engine (``inference/staged.py``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ichnet_core.export import (
    DECODER_INPUTS,
    ENCODER_INPUT,
    RECURRENT_INPUT,
    ExportedModel,
    Stage,
    cached_export,
)
from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.inference.base import DEFAULT_CHUNK_SLICES, EngineName, EngineUnavailableError
from ichnet_core.inference.pipeline import PipelineEngine
from ichnet_core.inference.staged import (
    DEFAULT_SKIP_CACHE_BYTES,
    ChunkSink,
    NetworkOutput,
    check_input,
    run_staged,
)

if TYPE_CHECKING:
    from ichnet_core.models.weights import ModelWeights

logger = logging.getLogger(__name__)

CPU_PROVIDER: Final[str] = "CPUExecutionProvider"
CUDA_PROVIDER: Final[str] = "CUDAExecutionProvider"
#: ONNX Runtime log severity: 3 = errors only (it warns about every unused initializer).
_ORT_LOG_ERRORS: Final[int] = 3


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineUnavailableError(f"onnxruntime is not installed ({exc})") from exc
    return onnxruntime


def default_providers() -> list[str]:
    """CUDA then CPU when this ONNX Runtime build has the CUDA provider, else the CPU alone."""
    available = _import_onnxruntime().get_available_providers()
    return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]


def _session_options(ort: Any, threads: int | None) -> Any:
    """Session options of every stage.

    No stage uses ONNX Runtime's CPU memory arena or memory patterns: the arena keeps the
    largest allocation it ever made for the life of the process, on top of what the job holds.
    The recurrent stage's tensors grow with the slice count (about 2 GB more for 150 slices at
    256 input); the encoder and decoder arenas alone kept a 300-slice 512x512 job of the
    256 px diagnostic model at 4.2 GB peak RSS, 2.65 GB without them
    (bench/memory_budget.py), against the job budget of 2 GB.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = _ORT_LOG_ERRORS
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


class _OrtRunner:
    """:class:`~ichnet_core.inference.staged.StageRunner` on NumPy arrays."""

    def __init__(self, sessions: dict[Stage, Any]) -> None:
        self.sessions = sessions

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.sessions[Stage.ENCODER].run(None, {ENCODER_INPUT: x}))

    def recur(self, bottlenecks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sequence = np.ascontiguousarray(np.concatenate(bottlenecks))
        seq_out, slice_logits, subject_logits = self.sessions[Stage.RECURRENT].run(
            None, {RECURRENT_INPUT: sequence}
        )
        return seq_out, slice_logits, subject_logits

    def decode(
        self, skips: tuple[np.ndarray, ...], seq_out: np.ndarray, start: int, stop: int
    ) -> np.ndarray:
        feeds = dict(zip(DECODER_INPUTS, (*skips, seq_out[start:stop]), strict=True))
        (probs,) = self.sessions[Stage.DECODER].run(None, feeds)
        return probs

    def nbytes(self, features: tuple[np.ndarray, ...]) -> int:
        return sum(f.nbytes for f in features)


class OnnxRuntimeEngine(PipelineEngine):
    """Runs the staged ONNX export of ICHNet with ONNX Runtime.

    Parameters
    ----------
    weights:
        Verified weights (both branches).
    chunk_slices:
        Slices per encoder/decoder call.
    cache_dir:
        Engine cache; the export is read from / written to ``cache_dir/onnx``. ``None`` exports
        into a temporary folder that lives as long as the engine.
    exported:
        Use this export instead (it must hold ``weights``).
    providers:
        ONNX Runtime execution providers; default :func:`default_providers`.
    threads:
        Intra-op threads; ``None`` lets ONNX Runtime use every core.
    skip_cache_bytes:
        Memory for skip features kept between the passes.

    Raises
    ------
    EngineUnavailableError
        onnxruntime is missing, or the export cannot be made or loaded.
    ValueError
        ``exported`` holds other weights, or ``chunk_slices < 1``.
    """

    name: str = EngineName.ONNXRUNTIME.value

    def __init__(
        self,
        weights: ModelWeights,
        *,
        chunk_slices: int = DEFAULT_CHUNK_SLICES,
        cache_dir: Path | None = None,
        exported: ExportedModel | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        skip_cache_bytes: int = DEFAULT_SKIP_CACHE_BYTES,
    ) -> None:
        ort = _import_onnxruntime()
        if chunk_slices < 1:
            raise ValueError(f"chunk_slices must be >= 1, got {chunk_slices}")
        config = weights.config
        if not (config.seg_branch and config.cls_branch):
            raise ValueError(
                f"the node needs both branches; weights {weights.path} have "
                f"seg_branch={config.seg_branch}, cls_branch={config.cls_branch}"
            )
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if exported is None:
            if cache_dir is None:
                self._scratch = tempfile.TemporaryDirectory(prefix="ichnet-onnx-")
                cache_dir = Path(self._scratch.name)
            exported = cached_export(weights, cache_dir)
        if exported.weights_sha256 != weights.sha256:
            raise ValueError(
                f"export {exported.directory} holds weights {exported.weights_sha256[:12]}, "
                f"not {weights.sha256[:12]}"
            )
        self.exported = exported
        self.weights = weights
        self.hemorrhage_threshold = weights.operating_points.hemorrhage_voxel
        self.chunk_slices = chunk_slices
        self.skip_cache_bytes = skip_cache_bytes
        self.providers = list(providers) if providers is not None else default_providers()
        try:
            sessions = {
                stage: ort.InferenceSession(
                    str(exported.path(stage)),
                    _session_options(ort, threads),
                    providers=self.providers,
                )
                for stage in Stage
            }
        except Exception as exc:  # ORT raises its own exception types for bad graphs/providers
            raise EngineUnavailableError(
                f"onnxruntime cannot load the export {exported.directory}: {exc}"
            ) from exc
        self.active_providers = sessions[Stage.ENCODER].get_providers()
        self._runner = _OrtRunner(sessions)
        logger.info(
            "onnxruntime engine: model %s (sha256 %s), providers %s, %d slices per chunk",
            weights.model_name,
            weights.sha256[:12],
            ",".join(self.active_providers),
            chunk_slices,
        )

    @property
    def grid(self) -> ModelGrid:
        """Where the model input lies on a source slice (from the export manifest)."""
        return self.exported.shapes.grid

    @property
    def description(self) -> str:
        device = "cuda" if CUDA_PROVIDER in self.active_providers else "cpu"
        return f"onnxruntime {device} fp32"

    def run_network(self, x: np.ndarray, sink: ChunkSink | None = None) -> NetworkOutput:
        """Run the three graphs on a prepared input ``[S, 3, H, W]``; ``sink`` as in
        :func:`~ichnet_core.inference.staged.run_staged`.

        Raises
        ------
        ValueError
            When ``x`` is not ``[S >= 1, 3, H, W]``.
        """
        check_input(x)
        return run_staged(
            self._runner,
            x,
            chunk_slices=self.chunk_slices,
            skip_cache_bytes=self.skip_cache_bytes,
            sink=sink,
        )
