"""The TensorRT engine (optional extra ``tensorrt``): FP16 engines built from the staged ONNX export.

Status: written against the documented TensorRT 10 Python API (``Builder``, explicit-batch
``INetworkDefinition``, ``OnnxParser``, ``IBuilderConfig`` with ``BuilderFlag.FP16``,
optimisation profiles, timing cache, ``build_serialized_network``, ``Runtime``
``deserialize_cuda_engine``, ``IExecutionContext.set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3``). TensorRT could not be installed where this project is developed and
tested, so this module has not run against a real TensorRT; the export's TensorRT readiness is
checked without it (``inference/tensorrt_support.py``) and docs/benchmarks.md says what ran.

Design:

* one engine per stage (encoder, recurrent, decoder), each with one optimisation profile: the
  encoder/decoder batch axis from 1 to ``chunk_slices`` (optimum at ``chunk_slices``), the
  recurrent slice axis from 1 to ``max_slices``;
* engines are cached in ``cache_dir/tensorrt/`` under a key made of the ONNX graph's sha256, the
  TensorRT version, the GPU name and compute capability, the precision and the profiles
  (:func:`engine_cache_key`), so a driver/GPU/TensorRT change never loads a stale plan;
* the builder's timing cache is kept next to them (``timing-<trt>-<gpu>.cache``) and reused, so
  rebuilding after a change of profile or weights skips most tactic timing;
* no TensorRT object is created before a CUDA device is confirmed (``torch.cuda``);
* device buffers are torch CUDA tensors (no pycuda); TensorRT runs on torch's current stream.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from torch import Tensor

from ichnet_core.durable import write_atomic
from ichnet_core.export import (
    DECODER_INPUTS,
    DECODER_OUTPUT,
    ENCODER_INPUT,
    ENCODER_OUTPUTS,
    RECURRENT_INPUT,
    RECURRENT_OUTPUTS,
    ExportedModel,
    Stage,
    StageShapes,
    cached_export,
)
from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.inference.base import (
    DEFAULT_CHUNK_SLICES,
    MAX_SERIES_SLICES,
    EngineName,
    EngineUnavailableError,
)
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

#: Precision of the engines (TensorRT picks FP16 kernels where they are faster; I/O stays FP32).
PRECISION: Final[str] = "fp16"
#: Builder workspace limit.
DEFAULT_WORKSPACE_BYTES: Final[int] = 4 * 2**30
#: Optimum of the recurrent profile: a typical thin-slice head CT.
RECURRENT_OPT_SLICES: Final[int] = 64
#: Tag of the plan cache layout (part of the key).
PLAN_FORMAT: Final[str] = "ichnet-tensorrt-plan/1"
PLAN_DIR_NAME: Final[str] = "tensorrt"


@dataclass(frozen=True)
class ProfileShape:
    """One input's range in an optimisation profile."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def stage_profiles(
    shapes: StageShapes, *, chunk_slices: int, max_slices: int
) -> dict[Stage, tuple[ProfileShape, ...]]:
    """Optimisation profiles of the three engines (see the module docstring).

    Raises
    ------
    ValueError
        ``chunk_slices`` or ``max_slices`` below 1.
    """
    if chunk_slices < 1 or max_slices < 1:
        raise ValueError(
            f"chunk_slices and max_slices must be >= 1, got {chunk_slices} and {max_slices}"
        )

    def ranged(name: str, shape_of: Any, opt: int, high: int) -> ProfileShape:
        return ProfileShape(name, tuple(shape_of(1)), tuple(shape_of(opt)), tuple(shape_of(high)))

    skips = [
        ranged(name, lambda n, level=level: shapes.skip(level, n), chunk_slices, chunk_slices)
        for level, name in enumerate(DECODER_INPUTS[:-1])
    ]
    return {
        Stage.ENCODER: (ranged(ENCODER_INPUT, shapes.encoder_input, chunk_slices, chunk_slices),),
        Stage.RECURRENT: (
            ranged(
                RECURRENT_INPUT,
                shapes.bottleneck,
                min(RECURRENT_OPT_SLICES, max_slices),
                max_slices,
            ),
        ),
        Stage.DECODER: (
            *skips,
            ranged(DECODER_INPUTS[-1], shapes.seq_out, chunk_slices, chunk_slices),
        ),
    }


def engine_cache_key(
    *,
    onnx_sha256: str,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    precision: str,
    profiles: Sequence[ProfileShape],
) -> str:
    """Cache key of one serialized engine: everything a plan depends on.

    A plan only runs on the TensorRT version and GPU it was built for, and only for the graph,
    precision and shape ranges it was built with; any change gives a new key.
    """
    parts = {
        "format": PLAN_FORMAT,
        "onnx_sha256": onnx_sha256,
        "tensorrt": tensorrt_version,
        "gpu": gpu_name,
        "compute_capability": list(compute_capability),
        "precision": precision,
        "profiles": [asdict(p) for p in profiles],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineUnavailableError(
            f"tensorrt is not installed (pip install 'ichnet-node[tensorrt]'): {exc}"
        ) from exc
    return tensorrt


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)


_TORCH_DTYPES: Final[dict[str, torch.dtype]] = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
}


class _StageEngine:
    """One deserialized engine with its execution context, run on torch CUDA tensors."""

    def __init__(self, trt: Any, engine: Any, outputs: Sequence[str], device: torch.device) -> None:
        self.trt = trt
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineUnavailableError("TensorRT could not create an execution context")
        self.outputs = tuple(outputs)
        self.device = device

    def __call__(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        context = self.context
        bound = {name: t.contiguous() for name, t in inputs.items()}  # alive until enqueued
        for name, tensor in bound.items():
            if not context.set_input_shape(name, tuple(tensor.shape)):
                raise RuntimeError(f"TensorRT rejected shape {tuple(tensor.shape)} for {name}")
            context.set_tensor_address(name, tensor.data_ptr())
        results: dict[str, Tensor] = {}
        for name in self.outputs:
            shape = tuple(context.get_tensor_shape(name))
            dtype = _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]
            out = torch.empty(shape, dtype=dtype, device=self.device)
            context.set_tensor_address(name, out.data_ptr())
            results[name] = out
        stream = torch.cuda.current_stream(self.device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return results


class _TrtRunner:
    """:class:`~ichnet_core.inference.staged.StageRunner` on TensorRT, features on the GPU."""

    def __init__(self, engines: Mapping[Stage, _StageEngine], device: torch.device) -> None:
        self.engines = engines
        self.device = device

    def encode(self, x: np.ndarray) -> tuple[Tensor, ...]:
        inputs = {ENCODER_INPUT: torch.from_numpy(x).to(self.device)}
        out = self.engines[Stage.ENCODER](inputs)
        return tuple(out[name] for name in ENCODER_OUTPUTS)

    def recur(self, bottlenecks: Sequence[Tensor]) -> tuple[Tensor, np.ndarray, np.ndarray]:
        out = self.engines[Stage.RECURRENT]({RECURRENT_INPUT: torch.cat(list(bottlenecks))})
        seq_out, slice_logits, subject_logits = (out[name] for name in RECURRENT_OUTPUTS)
        return seq_out, slice_logits.float().cpu().numpy(), subject_logits.float().cpu().numpy()

    def decode(
        self, skips: tuple[Tensor, ...], seq_out: Tensor, start: int, stop: int
    ) -> np.ndarray:
        inputs = dict(zip(DECODER_INPUTS, (*skips, seq_out[start:stop]), strict=True))
        out = self.engines[Stage.DECODER](inputs)
        return out[DECODER_OUTPUT].float().cpu().numpy()

    def nbytes(self, features: tuple[Tensor, ...]) -> int:
        return sum(t.numel() * t.element_size() for t in features)


class TensorRTEngine(PipelineEngine):
    """Runs ICHNet as three TensorRT FP16 engines (see the module docstring).

    Parameters
    ----------
    weights:
        Verified weights (both branches).
    chunk_slices:
        Slices per encoder/decoder call (the maximum of their profiles).
    cache_dir:
        Engine cache (ONNX export, plans, timing cache); ``None``: a temporary folder.
    exported:
        Use this export instead of the cached one.
    max_slices:
        Longest series the recurrent engine accepts.
    workspace_bytes:
        Builder workspace limit.
    skip_cache_bytes:
        GPU memory for skip features kept between the passes.

    Raises
    ------
    EngineUnavailableError
        TensorRT is not installed, no CUDA device, or an engine cannot be built or loaded.
    """

    name: str = EngineName.TENSORRT.value

    def __init__(
        self,
        weights: ModelWeights,
        *,
        chunk_slices: int = DEFAULT_CHUNK_SLICES,
        cache_dir: Path | None = None,
        exported: ExportedModel | None = None,
        max_slices: int = MAX_SERIES_SLICES,
        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
        skip_cache_bytes: int = DEFAULT_SKIP_CACHE_BYTES,
    ) -> None:
        trt = _import_tensorrt()
        if not torch.cuda.is_available():  # before any TensorRT object exists
            raise EngineUnavailableError("tensorrt needs a CUDA device; torch.cuda finds none")
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if cache_dir is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="ichnet-trt-")
            cache_dir = Path(self._scratch.name)
        self.cache_dir = Path(cache_dir)
        self.exported = exported if exported is not None else cached_export(weights, self.cache_dir)
        self.weights = weights
        self.hemorrhage_threshold = weights.operating_points.hemorrhage_voxel
        self.chunk_slices = chunk_slices
        self.max_slices = max_slices
        self.skip_cache_bytes = skip_cache_bytes
        self.device = torch.device("cuda", torch.cuda.current_device())
        properties = torch.cuda.get_device_properties(self.device)
        self.gpu_name = str(properties.name)
        self.compute_capability = (int(properties.major), int(properties.minor))
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._workspace_bytes = workspace_bytes
        profiles = stage_profiles(
            self.exported.shapes, chunk_slices=chunk_slices, max_slices=max_slices
        )
        outputs = {
            Stage.ENCODER: ENCODER_OUTPUTS,
            Stage.RECURRENT: RECURRENT_OUTPUTS,
            Stage.DECODER: (DECODER_OUTPUT,),
        }
        engines = {
            stage: _StageEngine(
                trt, self._load_or_build(stage, profiles[stage]), outputs[stage], self.device
            )
            for stage in Stage
        }
        self._runner = _TrtRunner(engines, self.device)
        logger.info(
            "tensorrt engine %s: model %s (sha256 %s) on %s (sm %d.%d), %s, %d slices per chunk",
            trt.__version__,
            weights.model_name,
            weights.sha256[:12],
            self.gpu_name,
            *self.compute_capability,
            PRECISION,
            chunk_slices,
        )

    @property
    def plan_dir(self) -> Path:
        return self.cache_dir / PLAN_DIR_NAME

    @property
    def timing_cache_path(self) -> Path:
        return self.plan_dir / f"timing-{_slug(self._trt.__version__)}-{_slug(self.gpu_name)}.cache"

    def _load_or_build(self, stage: Stage, profiles: Sequence[ProfileShape]) -> Any:
        key = engine_cache_key(
            onnx_sha256=self.exported.graph_sha256(stage),
            tensorrt_version=self._trt.__version__,
            gpu_name=self.gpu_name,
            compute_capability=self.compute_capability,
            precision=PRECISION,
            profiles=profiles,
        )
        plan_path = self.plan_dir / f"{stage.value}-{key}.plan"
        runtime = self._trt.Runtime(self._logger)
        if plan_path.is_file():
            engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
            if engine is not None:
                logger.info("tensorrt: loaded cached %s engine %s", stage.value, plan_path.name)
                return engine
            logger.warning("tensorrt: cached plan %s does not load; rebuilding", plan_path)
        plan = self._build(stage, profiles)
        write_atomic(plan_path, plan)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineUnavailableError(
                f"tensorrt cannot deserialize the {stage.value} plan it built"
            )
        return engine

    def _build(self, stage: Stage, profiles: Sequence[ProfileShape]) -> bytes:
        trt = self._trt
        started = time.perf_counter()
        builder = trt.Builder(self._logger)
        # TensorRT 10 networks are always explicit-batch; older versions need the flag.
        flags = 0
        if (
            hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
            and int(trt.__version__.split(".")[0]) < 10
        ):
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        graph = self.exported.path(stage)
        if not parser.parse_from_file(str(graph)):  # resolves external data next to the graph
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineUnavailableError(f"tensorrt cannot parse {graph}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self._workspace_bytes)
        config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for shape in profiles:
            profile.set_shape(shape.name, shape.min, shape.opt, shape.max)
        config.add_optimization_profile(profile)
        cached_timings = (
            self.timing_cache_path.read_bytes() if self.timing_cache_path.is_file() else b""
        )
        timing_cache = config.create_timing_cache(cached_timings)
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineUnavailableError(f"tensorrt failed to build the {stage.value} engine")
        write_atomic(self.timing_cache_path, bytes(config.get_timing_cache().serialize()))
        logger.info(
            "tensorrt: built %s engine in %.1f s", stage.value, time.perf_counter() - started
        )
        return bytes(serialized)

    @property
    def grid(self) -> ModelGrid:
        """Where the model input lies on a source slice (from the export manifest)."""
        return self.exported.shapes.grid

    @property
    def description(self) -> str:
        return f"tensorrt {self._trt.__version__} {self.gpu_name} {PRECISION}"

    def run_network(self, x: np.ndarray, sink: ChunkSink | None = None) -> NetworkOutput:
        """Run the three engines on a prepared input ``[S, 3, H, W]``; ``sink`` as in
        :func:`~ichnet_core.inference.staged.run_staged`.

        Raises
        ------
        ValueError
            ``x`` is not ``[S >= 1, 3, H, W]`` or has more than ``max_slices`` slices.
        """
        check_input(x)
        if x.shape[0] > self.max_slices:
            raise ValueError(
                f"series of {x.shape[0]} slices exceeds the tensorrt profile maximum {self.max_slices}"
            )
        with torch.inference_mode():
            return run_staged(
                self._runner,
                x,
                chunk_slices=self.chunk_slices,
                skip_cache_bytes=self.skip_cache_bytes,
                sink=sink,
            )
