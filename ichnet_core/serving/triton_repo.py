"""A Triton Inference Server model repository for the current weights (``ichnet-node triton-repo``).

Layout written (``<name>`` = ``ichnet`` by default)::

    <name>/config.pbtxt                 Python backend: the whole network, what ``engine: triton``
    <name>/1/model.py                   calls (ichnet_core/serving/triton_model.py)
    <name>/1/weights.pt                 the weights file, its sha256 in config.pbtxt
    <name>/1/onnx/                      the staged ONNX export (manifest + three graphs)
    <name>_encoder/config.pbtxt         ONNX Runtime backend: per-slice encoder, slices = batch
    <name>_encoder/1/encoder.onnx(.data)
    <name>_recurrent/...                ConvLSTM + classification heads over a whole series
    <name>_decoder/...                  per-slice decoder, slices = batch

The Python model is what the node uses: it needs only Triton's Python backend. The three stage
models are the building blocks for servers with the ONNX Runtime (or, converted, TensorRT)
backend: the encoder and decoder treat slices as Triton's batch dimension, so Triton's dynamic
batcher can put slices of several series (several node front ends) into one GPU call; the
recurrent stage sees one whole series per request.

The ``config.pbtxt`` files are built as Triton's ``ModelConfig`` protobuf message (from
tritonclient's copy of model_config.proto) and written in protobuf text format, so every field
name and enum is checked by Triton's own schema when the file is written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

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
)
from ichnet_core.labels import NUM_CLASSIFICATION_OUTPUTS
from ichnet_core.models.ichnet import INPUT_CHANNELS
from ichnet_core.models.weights import ModelWeights
from ichnet_core.serving import triton_model

DEFAULT_MODEL_NAME: Final[str] = "ichnet"
#: Largest number of slices one encoder/decoder call of the stage models takes (Triton batch).
DEFAULT_MAX_BATCH: Final[int] = 64
#: How long the dynamic batcher of the stage models waits to fill a batch.
BATCH_DELAY_US: Final[int] = 2000
InstanceKind = Literal["cpu", "gpu"]


class TritonRepoError(RuntimeError):
    """The repository cannot be written (tritonclient missing, target not empty, ...)."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as config.pbtxt states it (dims without the batch axis)."""

    name: str
    dims: tuple[int, ...]


def _model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise TritonRepoError(
            f"writing a Triton repository needs tritonclient (pip install 'tritonclient[grpc]'): "
            f"{exc}"
        ) from exc
    return model_config_pb2


def stage_tensors(shapes: StageShapes) -> dict[Stage, tuple[list[TensorSpec], list[TensorSpec]]]:
    """Inputs and outputs of each stage graph per slice (``-1`` = the whole series' slices)."""
    skips = [
        TensorSpec(name, shapes.skip(level, 1)[1:])
        for level, name in enumerate(ENCODER_OUTPUTS[:-1])
    ]
    seq = TensorSpec("seq_out", shapes.seq_out(1)[1:])
    bottleneck = TensorSpec(ENCODER_OUTPUTS[-1], shapes.bottleneck(1)[1:])
    seg = (shapes.seg_channels, shapes.input_size, shapes.input_size)
    return {
        Stage.ENCODER: (
            [TensorSpec(ENCODER_INPUT, shapes.encoder_input(1)[1:])],
            [*skips, bottleneck],
        ),
        Stage.RECURRENT: (
            [TensorSpec(RECURRENT_INPUT, (-1, *bottleneck.dims))],
            [
                TensorSpec(RECURRENT_OUTPUTS[0], (-1, *seq.dims)),
                TensorSpec(RECURRENT_OUTPUTS[1], (-1, NUM_CLASSIFICATION_OUTPUTS)),
                TensorSpec(RECURRENT_OUTPUTS[2], (NUM_CLASSIFICATION_OUTPUTS,)),
            ],
        ),
        Stage.DECODER: (
            [*[TensorSpec(n, s.dims) for n, s in zip(DECODER_INPUTS, [*skips, seq], strict=True)]],
            [TensorSpec(DECODER_OUTPUT, seg)],
        ),
    }


def _tensors(pb: Any, field: Any, specs: list[TensorSpec]) -> None:
    for spec in specs:
        field.add(name=spec.name, data_type=pb.TYPE_FP32, dims=list(spec.dims))


def _base_config(pb: Any, name: str, kind: InstanceKind) -> Any:
    config = pb.ModelConfig(name=name)
    group = config.instance_group.add(count=1)
    group.kind = pb.ModelInstanceGroup.KIND_GPU if kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU
    return config


def python_model_config(
    name: str,
    weights: ModelWeights,
    shapes: StageShapes,
    *,
    kind: InstanceKind,
    chunk_slices: int,
) -> Any:
    """The ``ModelConfig`` of the Python-backend model (one whole series per request)."""
    pb = _model_config_pb2()
    config = _base_config(pb, name, kind)
    config.backend = "python"
    config.max_batch_size = 0
    size = shapes.input_size
    _tensors(
        pb, config.input, [TensorSpec(triton_model.INPUT_NAME, (-1, INPUT_CHANNELS, size, size))]
    )
    seg, slices, subject = triton_model.OUTPUT_NAMES
    outputs = [
        TensorSpec(seg, (-1, shapes.seg_channels, size, size)),
        TensorSpec(slices, (-1, NUM_CLASSIFICATION_OUTPUTS)),
        TensorSpec(subject, (NUM_CLASSIFICATION_OUTPUTS,)),
    ]
    _tensors(pb, config.output, outputs)
    for key, value in {
        "weights_sha256": weights.sha256,
        "weights_version": weights.version,
        "chunk_slices": str(chunk_slices),
    }.items():
        config.parameters[key].string_value = value
    return config


def stage_model_config(
    name: str, stage: Stage, shapes: StageShapes, *, kind: InstanceKind, max_batch: int
) -> Any:
    """The ``ModelConfig`` of one ONNX stage graph (ONNX Runtime backend)."""
    pb = _model_config_pb2()
    config = _base_config(pb, name, kind)
    config.platform = "onnxruntime_onnx"
    config.default_model_filename = f"{stage.value}.onnx"  # its external data keeps its name
    inputs, outputs = stage_tensors(shapes)[stage]
    if stage is not Stage.RECURRENT:  # per-slice stages: slices are Triton's batch axis
        config.max_batch_size = max_batch
        config.dynamic_batching.max_queue_delay_microseconds = BATCH_DELAY_US
    _tensors(pb, config.input, inputs)
    _tensors(pb, config.output, outputs)
    return config


def _write_config(folder: Path, config: Any) -> Path:
    from google.protobuf import text_format

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.pbtxt"
    path.write_text(text_format.MessageToString(config), encoding="utf-8")
    return path


def write_repository(
    weights: ModelWeights,
    exported: ExportedModel,
    out_dir: Path,
    *,
    name: str = DEFAULT_MODEL_NAME,
    kind: InstanceKind = "cpu",
    chunk_slices: int = 16,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> list[Path]:
    """Write the repository into ``out_dir`` (created; must be empty); returns the model folders.

    Raises
    ------
    TritonRepoError
        ``out_dir`` is not empty, ``exported`` holds other weights, or tritonclient is missing.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise TritonRepoError(f"{out_dir} is not empty; choose a new folder")
    if exported.weights_sha256 != weights.sha256:
        raise TritonRepoError(
            f"export {exported.directory} holds weights {exported.weights_sha256[:12]}, "
            f"not {weights.sha256[:12]}"
        )
    shapes = exported.shapes
    python_dir = out_dir / name
    version = python_dir / "1"
    _write_config(
        python_dir,
        python_model_config(name, weights, shapes, kind=kind, chunk_slices=chunk_slices),
    )
    version.mkdir(parents=True)
    shutil.copyfile(Path(triton_model.__file__), version / "model.py")
    shutil.copyfile(weights.path, version / triton_model.WEIGHTS_FILE)
    shutil.copytree(exported.directory, version / triton_model.EXPORT_DIR)
    folders = [python_dir]
    for stage in Stage:
        folder = out_dir / f"{name}_{stage.value}"
        _write_config(
            folder, stage_model_config(folder.name, stage, shapes, kind=kind, max_batch=max_batch)
        )
        (folder / "1").mkdir()
        graph = exported.path(stage)
        for path in sorted(graph.parent.glob(f"{graph.name}*")):  # graph + external data
            shutil.copyfile(path, folder / "1" / path.name)
        folders.append(folder)
    return folders
