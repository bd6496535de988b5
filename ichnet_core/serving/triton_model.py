"""Triton Python-backend model: ICHNet run by the project's ONNX Runtime engine inside Triton.

``ichnet-node triton-repo`` copies this file to ``<repository>/ichnet/1/model.py`` next to the
weights file and the staged ONNX export. Triton's Python backend imports it in its stub process
and calls :class:`TritonPythonModel`; the Python environment of that stub needs ``ichnet_core``
(``pip install ichnet-node``), ``onnxruntime`` and ``torch`` (the weights file is a torch file).

Why a Python model besides the plain ONNX stage models: the staged execution (chunked encoder,
one recurrence over the whole series, chunked decoder with the skip-memory budget) is this
engine's own loop; here it runs unchanged on any Triton server, including ones without the
ONNX Runtime or TensorRT backends, and the node gets exactly what ``engine: onnxruntime``
computes.

Request: ``x [S, 3, H, W]`` FP32 (the prepared window stack, ``ichnet_core.inference.pipeline``).
Response: ``seg_probs [S, C, H, W]``, ``slice_logits [S, 6]``, ``subject_logits [6]`` (FP32).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Final

#: Files of the model's version folder (written by ichnet_core.serving.triton_repo).
WEIGHTS_FILE: Final[str] = "weights.pt"
EXPORT_DIR: Final[str] = "onnx"
INPUT_NAME: Final[str] = "x"
OUTPUT_NAMES: Final[tuple[str, ...]] = ("seg_probs", "slice_logits", "subject_logits")

logger = logging.getLogger(__name__)


def _parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """``parameters`` of config.pbtxt as plain strings."""
    return {
        key: str(value.get("string_value", ""))
        for key, value in model_config.get("parameters", {}).items()
    }


class TritonPythonModel:
    """The interface Triton's Python backend calls: initialize, execute, finalize."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the weights (sha256 checked against config.pbtxt) and the ONNX Runtime engine."""
        from ichnet_core.export import ExportedModel
        from ichnet_core.inference.onnx_engine import OnnxRuntimeEngine
        from ichnet_core.models.weights import load_weights

        parameters = _parameters(json.loads(args["model_config"]))
        version_dir = Path(args["model_repository"]) / args["model_version"]
        weights = load_weights(version_dir / WEIGHTS_FILE, parameters["weights_sha256"])
        threads = int(parameters.get("intra_op_threads") or 0) or None
        self.engine = OnnxRuntimeEngine(
            weights,
            chunk_slices=int(parameters["chunk_slices"]),
            exported=ExportedModel.load(version_dir / EXPORT_DIR),
            threads=threads,
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request (one series each); a bad input fails only its request."""
        import triton_python_backend_utils as pb_utils  # provided by the backend's stub

        responses = []
        for request in requests:
            try:
                x = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy()
                output = self.engine.run_network(x)
            except ValueError as exc:  # run_network's check of the input shape
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            tensors = [
                pb_utils.Tensor(name, value)
                for name, value in zip(OUTPUT_NAMES, output, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        """Nothing to release beyond what the process exit frees."""
