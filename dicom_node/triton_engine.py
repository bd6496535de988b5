"""``engine: triton``: the network runs on a Triton Inference Server, shared by several nodes.

The node keeps everything that belongs to the study: reading the series, the window stack and
resampling onto the model grid before, and labels, volumes and result objects after
(``ichnet_core.inference.pipeline``). Only the prepared ``[S, 3, H, W]`` array goes to Triton
over gRPC (``tritonclient``), to the Python-backend model that ``ichnet-node triton-repo`` wrote;
what comes back is exactly what ``engine: onnxruntime`` computes locally.

Failures and what they mean for the job:

* server unreachable, restarting, model not (yet) loaded, overloaded, or ``triton.timeout_s``
  exceeded: :class:`~ichnet_core.inference.base.EngineTransientError`. The node keeps the job
  and retries it with backoff, and ``/healthz`` reports inference as failing meanwhile;
* the server serves other weights than the node's (``weights_sha256`` of the model's
  config.pbtxt): transient too. Nothing is computed with the wrong model; the job waits until
  the repository is redeployed;
* the model refuses the input (a bug, not an outage): ``RuntimeError``, the job fails.

The channel is created lazily: a node starts even while its Triton server is down.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from dicom_node.config import NodeConfig, TritonSection, engine_cache_dir
from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.inference.base import (
    EngineName,
    EngineTransientError,
    EngineUnavailableError,
    NetworkEngine,
)
from ichnet_core.inference.pipeline import PipelineEngine
from ichnet_core.inference.staged import ChunkSink, NetworkOutput, check_input, to_sink
from ichnet_core.serving.triton_model import INPUT_NAME, OUTPUT_NAMES

if TYPE_CHECKING:
    from ichnet_core.models.weights import ModelWeights

logger = logging.getLogger(__name__)

#: gRPC status codes after which the same request may succeed later.
TRANSIENT_STATUSES: Final[frozenset[str]] = frozenset(
    {
        "StatusCode.UNAVAILABLE",
        "StatusCode.DEADLINE_EXCEEDED",
        "StatusCode.RESOURCE_EXHAUSTED",
        "StatusCode.CANCELLED",
        "StatusCode.ABORTED",
        "StatusCode.NOT_FOUND",  # model not loaded (yet): a server restarting its repository
    }
)
#: gRPC's message size limit (tritonclient's channel maximum): a series' input and output
#: must each fit in one message.
MAX_MESSAGE_BYTES: Final[int] = 2**31 - 1
_FLOAT32_BYTES: Final[int] = 4


def _tritonclient() -> tuple[Any, type[Exception]]:
    try:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
    except ImportError as exc:
        raise EngineUnavailableError(
            f"engine triton needs tritonclient (pip install 'tritonclient[grpc]'): {exc}"
        ) from exc
    return grpcclient, InferenceServerException


class TritonEngine(PipelineEngine):
    """Runs the network on the Triton model ``settings.model`` at ``settings.url``.

    Parameters
    ----------
    weights:
        The node's weights: their grid prepares the input, their sha256 must be what the
        server's model was written with.
    settings:
        The ``triton:`` section.
    """

    name: str = EngineName.TRITON.value

    def __init__(self, weights: ModelWeights, settings: TritonSection) -> None:
        self._grpc, self._server_error = _tritonclient()
        self.settings = settings
        self.weights_sha256 = weights.sha256
        self.hemorrhage_threshold = weights.operating_points.hemorrhage_voxel
        self._grid = weights.config.grid
        self._seg_channels = weights.config.seg_channels
        self._client = self._grpc.InferenceServerClient(settings.url)
        self._verified = False

    @property
    def grid(self) -> ModelGrid:
        return self._grid

    @property
    def description(self) -> str:
        return f"triton {self.settings.model}@{self.settings.url}"

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)``; server errors sorted into transient and not."""
        try:
            return function(*args, **kwargs)
        except self._server_error as exc:
            self._verified = False
            status = str(exc.status())  # type: ignore[attr-defined]
            message = f"Triton {self.settings.url} {what}: {status}: {exc.message()}"  # type: ignore[attr-defined]
            if status in TRANSIENT_STATUSES:
                raise EngineTransientError(message) from exc
            raise RuntimeError(message) from exc

    def _verify_model(self) -> None:
        """The served model must hold the node's weights (checked again after any failure)."""
        if self._verified:
            return
        config = self._call(
            f"model {self.settings.model}",
            self._client.get_model_config,
            self.settings.model,
            as_json=True,
            client_timeout=self.settings.timeout_s,
        )
        parameters = config.get("config", {}).get("parameters", {})
        served = parameters.get("weights_sha256", {}).get("string_value")
        if served != self.weights_sha256:
            raise EngineTransientError(
                f"Triton {self.settings.url} serves model {self.settings.model} with weights "
                f"{str(served)[:12]}, the node has {self.weights_sha256[:12]}: redeploy the "
                "repository of `ichnet-node triton-repo` (jobs wait meanwhile)"
            )
        self._verified = True

    def run_network(self, x: np.ndarray, sink: ChunkSink | None = None) -> NetworkOutput:
        """Send ``x [S, 3, H, W]`` to Triton; the three outputs of the staged network (the
        probabilities come in one message; ``sink`` gets them in one call, see ``to_sink``).

        Raises
        ------
        ValueError
            ``x`` is not ``[S, 3, H, W]``, or the series is too large for one gRPC message.
        EngineTransientError
            Triton cannot answer now (see the module docstring).
        """
        check_input(x)
        slices, _, height, width = x.shape
        output_bytes = slices * self._seg_channels * height * width * _FLOAT32_BYTES
        if max(x.nbytes, output_bytes) > MAX_MESSAGE_BYTES:
            raise ValueError(
                f"{slices} slices at {height}x{width} need {max(x.nbytes, output_bytes)} bytes in "
                f"one gRPC message, more than its {MAX_MESSAGE_BYTES}; analyse this series with a "
                "local engine"
            )
        self._verify_model()
        request = self._grpc.InferInput(INPUT_NAME, list(x.shape), "FP32")
        request.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        result = self._call(
            f"inference on {slices} slices",
            self._client.infer,
            self.settings.model,
            [request],
            outputs=[self._grpc.InferRequestedOutput(name) for name in OUTPUT_NAMES],
            client_timeout=self.settings.timeout_s,
        )
        seg_probs, slice_logits, subject_logits = (result.as_numpy(n) for n in OUTPUT_NAMES)
        return to_sink(NetworkOutput(seg_probs, slice_logits, subject_logits), sink)


def node_engine(
    config: NodeConfig, weights: ModelWeights, name: str | None = None, *, warm: bool = True
) -> NetworkEngine:
    """The engine ``name`` (default: ``config.engine``) for the node: Triton's client for
    ``triton``, otherwise :func:`ichnet_core.inference.engine.create_engine` (``warm``: see
    there).

    Triton's client lives here, not in ichnet_core, which does no networking.
    """
    from ichnet_core.inference.engine import create_engine

    engine_name = EngineName(name or config.engine)
    if engine_name is EngineName.TRITON:
        engine = TritonEngine(weights, config.triton)
        logger.info("engine %s (weights %s)", engine.description, weights.sha256[:12])
        return engine
    return create_engine(
        engine_name,
        weights,
        chunk_slices=config.model.chunk_slices,
        cache_dir=engine_cache_dir(config),
        warm=warm,
    )
