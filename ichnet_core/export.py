"""Staged ONNX export of ICHNet: encoder, recurrent stage and decoder as three graphs.

Why three graphs and not one: a whole 512x512 series through one graph needs more than 24 GB of
activations, and the encoder/decoder are per-slice while the ConvLSTM needs every slice. Every
engine therefore runs the same staging (``ichnet_core.inference.staged``): the encoder on bounded
chunks of slices, the recurrent stage once over the whole series, the decoder on chunks again.

* ``encoder.onnx``: ``x [N, 3, H, W]`` -> ``skip0, skip1, skip2, bottleneck`` (``N`` dynamic);
* ``recurrent.onnx``: ``bottleneck [S, C, h, w]`` -> ``seq_out [S, 2*hidden, h, w]``,
  ``slice_logits [S, 6]``, ``subject_logits [6]`` (``S`` dynamic);
* ``decoder.onnx``: ``skip0, skip1, skip2, seq_out`` (``N`` slices each) -> ``seg_probs [N, 3, H, W]``
  (softmax inside the graph).

The ConvLSTM recurrence is exported through torch's ``scan`` operator with the dynamo exporter
(``torch.onnx.export(..., dynamo=True)``), which becomes an ONNX ``Scan`` whose length is the
runtime slice count. The TorchScript exporter must not be used: it traces the Python loop of
:func:`~ichnet_core.models.layers.conv_lstm.scan_sequence`, bakes the example's slice count into
the graph and later returns wrong-length results without an error. The ConvLSTM input
convolution runs once for all slices, before the ``Scan`` (``ConvLSTMCell.project_inputs``).

Graphs are written with external data (weights in ``<graph>.onnx.data`` next to the graph), so
models past protobuf's 2 GB limit export the same way as the small ones.

:func:`export_staged` is the API behind ``ichnet-node export``; :func:`cached_export` is what the
engines call: it exports once into a cache folder keyed by the weights and the exporter versions,
and later starts reuse the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Final

import torch
from torch import Tensor, nn

from ichnet_core.durable import fsync_directory, fsync_file
from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.labels import NUM_SEGMENTATION_CLASSES
from ichnet_core.models.ichnet import (
    INPUT_CHANNELS,
    NUM_LEVELS,
    SIZE_DIVISOR,
    ICHNet,
    seg_probabilities,
)
from ichnet_core.models.layers.conv_lstm import ConvLSTMCell
from ichnet_core.models.weights import ModelWeights, build_model

logger = logging.getLogger(__name__)

#: ONNX opset of the exported graphs. TensorRT 10.0/10.1's ONNX parser reads opsets 9 to 20
#: (onnx-tensorrt docs/operators.md), so newer opsets would shut TensorRT out.
DEFAULT_OPSET: Final[int] = 20
#: Tag of the export folder layout (manifest + three graphs); bump it when the layout changes.
EXPORT_FORMAT: Final[str] = "ichnet-staged-onnx/1"
MANIFEST_NAME: Final[str] = "manifest.json"
#: Largest slice count the exported graphs accept (export-time bound of the dynamic axis; the
#: node's selection rules allow at most 1200 slices by default).
MAX_EXPORT_SLICES: Final[int] = 4096
#: Slices of the example inputs the graphs are traced with. Any count other than 1 works (1 would
#: let the exporter specialise the axis); the graphs are checked at other counts in the tests.
EXAMPLE_SLICES: Final[int] = 3
#: Names of the graph inputs and outputs (the engines bind tensors by these names).
SKIP_NAMES: Final[tuple[str, ...]] = tuple(f"skip{level}" for level in range(NUM_LEVELS - 1))
ENCODER_INPUT: Final[str] = "x"
ENCODER_OUTPUTS: Final[tuple[str, ...]] = (*SKIP_NAMES, "bottleneck")
RECURRENT_INPUT: Final[str] = "bottleneck"
RECURRENT_OUTPUTS: Final[tuple[str, ...]] = ("seq_out", "slice_logits", "subject_logits")
DECODER_INPUTS: Final[tuple[str, ...]] = (*SKIP_NAMES, "seq_out")
DECODER_OUTPUT: Final[str] = "seg_probs"
#: Softmax axis of the decoder output ``[N, 3, H, W]``.
_CLASS_DIM: Final[int] = 1
#: Time-major scan layout ``[S, B=1, C, h, w]``: the batch axis the scan steps carry.
_SCAN_BATCH_DIM: Final[int] = 1


class Stage(str, Enum):
    """The three exported graphs; the value is the file stem."""

    ENCODER = "encoder"
    RECURRENT = "recurrent"
    DECODER = "decoder"


class ExportError(RuntimeError):
    """An export failed or an export folder is not a usable staged export; the message says why."""


class EncoderStage(nn.Module):
    """Per-slice encoder: ``[N, 3, H, W]`` -> the three skip levels and the bottleneck."""

    def __init__(self, model: ICHNet) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.encoder(x)


def _scan_cell(cell: ConvLSTMCell, sequence: Tensor, *, reverse: bool) -> Tensor:
    """One ConvLSTM direction over ``[S, C, h, w]`` with torch's scan operator.

    The input convolution runs once for all slices; only ``cell.step`` is inside the scan.
    """
    from torch._higher_order_ops.scan import scan  # the operator the dynamo exporter maps to Scan

    projected = cell.project_inputs(sequence).unsqueeze(_SCAN_BATCH_DIM)
    init = cell.initial_carry(projected[0])
    _, outputs = scan(cell.step, init, projected, dim=0, reverse=reverse)
    return outputs.squeeze(_SCAN_BATCH_DIM)


class RecurrentStage(nn.Module):
    """Bidirectional ConvLSTM + slice/subject heads over one series ``[S, C, h, w]``.

    Same computation as :meth:`ICHNet.recur` on a batch of one, with the Python loop replaced by
    torch's ``scan`` operator so the exported graph has a dynamic slice axis.
    """

    def __init__(self, model: ICHNet) -> None:
        super().__init__()
        if model.classifier is None:
            raise ExportError("the staged export needs the classification branch (cls_branch)")
        self.conv_lstm = model.conv_lstm
        self.classifier = model.classifier

    def forward(self, bottleneck: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lstm = self.conv_lstm
        out = bottleneck
        for forward_cell, backward_cell in lstm.layers():
            passes = [_scan_cell(forward_cell, out, reverse=False)]
            if backward_cell is not None:
                passes.append(_scan_cell(backward_cell, out, reverse=True))
            out = torch.cat(passes, dim=1)
        slice_logits, subject_logits = self.classifier(out.unsqueeze(0))
        return out, slice_logits[0], subject_logits[0]


class DecoderStage(nn.Module):
    """Per-slice decoder: skips + ConvLSTM output -> class probabilities ``[N, 3, H, W]``."""

    def __init__(self, model: ICHNet) -> None:
        super().__init__()
        if model.decoder is None:
            raise ExportError("the staged export needs the segmentation branch (seg_branch)")
        self.decoder = model.decoder

    def forward(self, skip0: Tensor, skip1: Tensor, skip2: Tensor, seq_out: Tensor) -> Tensor:
        return seg_probabilities(self.decoder((skip0, skip1, skip2), seq_out), dim=_CLASS_DIM)


@dataclass(frozen=True)
class StageShapes:
    """Per-slice shapes of the stage tensors, from the model config (for engines and profiles).

    Attributes
    ----------
    input_size:
        Square input size ``H = W``.
    skip_channels:
        Channels of the three skip levels (finest first).
    bottleneck_channels:
        Encoder output channels at 1/8 resolution.
    seq_channels:
        ConvLSTM output channels (``2 * lstm_hidden``).
    input_spacing_mm:
        Physical input pixel size (``ICHNetConfig.input_spacing_mm``; ``None`` = legacy resize).
    seg_channels:
        Channels of the decoder output (3 classes, + 5 compartments when the model has them).
    """

    input_size: int
    skip_channels: tuple[int, ...]
    bottleneck_channels: int
    seq_channels: int
    input_spacing_mm: float | None = None
    seg_channels: int = NUM_SEGMENTATION_CLASSES

    @property
    def grid(self) -> ModelGrid:
        return ModelGrid(self.input_size, self.input_spacing_mm)

    @classmethod
    def of(cls, model: ICHNet) -> StageShapes:
        cfg = model.config
        return cls(
            input_size=cfg.input_size,
            skip_channels=tuple(cfg.widths[: NUM_LEVELS - 1]),
            bottleneck_channels=cfg.widths[-1],
            seq_channels=model.conv_lstm.out_channels,
            input_spacing_mm=cfg.input_spacing_mm,
            seg_channels=cfg.seg_channels,
        )

    def level_size(self, level: int) -> int:
        """Square size of encoder level ``level`` (0 = full resolution)."""
        return self.input_size // 2**level

    @property
    def bottleneck_size(self) -> int:
        return self.input_size // SIZE_DIVISOR

    def encoder_input(self, slices: int) -> tuple[int, ...]:
        return (slices, INPUT_CHANNELS, self.input_size, self.input_size)

    def skip(self, level: int, slices: int) -> tuple[int, ...]:
        size = self.level_size(level)
        return (slices, self.skip_channels[level], size, size)

    def bottleneck(self, slices: int) -> tuple[int, ...]:
        return (slices, self.bottleneck_channels, self.bottleneck_size, self.bottleneck_size)

    def seq_out(self, slices: int) -> tuple[int, ...]:
        return (slices, self.seq_channels, self.bottleneck_size, self.bottleneck_size)


@dataclass(frozen=True)
class ExportedModel:
    """A staged export on disk: three ONNX graphs (external data) and their manifest.

    Attributes
    ----------
    directory:
        The export folder.
    manifest:
        What was exported and with what: weights sha256, model name and config, opset, torch /
        onnx / onnxscript versions, tensor names, per-slice shapes.
    """

    directory: Path
    manifest: Mapping[str, Any]

    def path(self, stage: Stage | str) -> Path:
        """Path of one stage's ``.onnx`` graph."""
        return self.directory / f"{Stage(stage).value}.onnx"

    @property
    def paths(self) -> dict[Stage, Path]:
        return {stage: self.path(stage) for stage in Stage}

    @property
    def weights_sha256(self) -> str:
        return str(self.manifest["weights_sha256"])

    @property
    def opset(self) -> int:
        return int(self.manifest["opset"])

    @property
    def shapes(self) -> StageShapes:
        data = self.manifest["shapes"]
        return StageShapes(
            input_size=int(data["input_size"]),
            skip_channels=tuple(int(c) for c in data["skip_channels"]),
            bottleneck_channels=int(data["bottleneck_channels"]),
            seq_channels=int(data["seq_channels"]),
            input_spacing_mm=data.get("input_spacing_mm"),
            seg_channels=int(data.get("seg_channels", NUM_SEGMENTATION_CLASSES)),
        )

    def files(self) -> list[Path]:
        """Every file of the export (graphs and their external data), sorted."""
        return sorted(
            p for p in self.directory.iterdir() if p.is_file() and p.name != MANIFEST_NAME
        )

    def graph_sha256(self, stage: Stage | str) -> str:
        """sha256 over one stage's graph file and its external data file (TensorRT cache key)."""
        digest = hashlib.sha256()
        graph = self.path(stage)
        for path in sorted(graph.parent.glob(f"{graph.name}*")):
            digest.update(path.name.encode("utf-8"))
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()

    @classmethod
    def load(cls, directory: Path) -> ExportedModel:
        """Open an export folder written by :func:`export_staged`.

        Raises
        ------
        ExportError
            No manifest, another format, or a graph file missing.
        """
        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ExportError(f"{directory} holds no readable {MANIFEST_NAME}: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else None
            raise ExportError(f"{directory} is not an {EXPORT_FORMAT!r} export (format={found!r})")
        exported = cls(directory, manifest)
        missing = [str(p) for p in exported.paths.values() if not p.is_file()]
        if missing:
            raise ExportError(f"export {directory} lacks {missing}")
        return exported


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def exporter_versions() -> dict[str, str]:
    """Versions of everything that shapes the exported bytes (part of the cache key)."""
    return {
        "torch": torch.__version__,
        "onnx": _package_version("onnx"),
        "onnxscript": _package_version("onnxscript"),
    }


def _resolve_opset(opset: int | None) -> int:
    value = DEFAULT_OPSET if opset is None else int(opset)
    if value < 1:
        raise ValueError(f"opset must be a positive integer, got {opset!r}")
    return value


def cache_key(weights: ModelWeights, *, opset: int | None = None) -> str:
    """Name of the cache folder of an export: weights sha256 + exporter versions + opset."""
    parts = {
        "format": EXPORT_FORMAT,
        "weights_sha256": weights.sha256,
        "opset": _resolve_opset(opset),
        **exporter_versions(),
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()
    return f"{weights.model_name}-{weights.sha256[:12]}-{digest[:16]}"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the dynamo exporter's progress lines and known-harmless warnings out of the log."""
    noisy = [
        logging.getLogger(name)
        for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir", "torch.__trace")
    ]
    levels = [log.level for log in noisy]
    for log in noisy:
        log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
            yield
    finally:
        for log, level in zip(noisy, levels, strict=True):
            log.setLevel(level)


def _export_graph(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    *,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    opset: int,
) -> None:
    slices = torch.export.Dim("slices", min=1, max=MAX_EXPORT_SLICES)
    dynamic_shapes = {name: {0: slices} for name in input_names}
    # forward's parameter names differ from the graph input names; map them by position.
    dynamic = tuple(dynamic_shapes[name] for name in input_names)
    with torch.inference_mode(False), torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            module.eval(),
            args,
            str(path),
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            external_data=True,
            verbose=False,
        )
    if program is None or not path.is_file():
        raise ExportError(f"torch.onnx.export wrote no graph to {path}")


def export_staged(
    weights: ModelWeights, out_dir: Path | str, *, opset: int | None = None
) -> ExportedModel:
    """Export ``weights`` as three ONNX graphs into ``out_dir`` (``ichnet-node export``).

    The folder is assembled next to ``out_dir`` and moved into place at the end, so an
    interrupted export never leaves a folder that looks complete. An existing export in
    ``out_dir`` is replaced.

    Parameters
    ----------
    weights:
        Verified weights of a model with both branches.
    out_dir:
        Destination folder (created; its parent must be writable).
    opset:
        ONNX opset; default :data:`DEFAULT_OPSET` (the newest TensorRT's parser reads).

    Returns
    -------
    ExportedModel

    Raises
    ------
    ExportError
        The model lacks a branch, or the exporter failed.
    ValueError
        ``opset`` is not a positive integer.
    """
    opset = _resolve_opset(opset)
    config = weights.config
    if not (config.seg_branch and config.cls_branch):
        raise ExportError(
            f"the staged export needs both branches; {weights.model_name} has "
            f"seg_branch={config.seg_branch}, cls_branch={config.cls_branch}"
        )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model = build_model(weights)
    shapes = StageShapes.of(model)
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.export-"))
    try:
        with torch.no_grad():
            x = torch.rand(shapes.encoder_input(EXAMPLE_SLICES))
            features = model.encode(x)
            seq_out = torch.rand(shapes.seq_out(EXAMPLE_SLICES))
        _export_graph(
            EncoderStage(model),
            (x,),
            staging / f"{Stage.ENCODER.value}.onnx",
            input_names=(ENCODER_INPUT,),
            output_names=ENCODER_OUTPUTS,
            opset=opset,
        )
        _export_graph(
            RecurrentStage(model),
            (features[-1],),
            staging / f"{Stage.RECURRENT.value}.onnx",
            input_names=(RECURRENT_INPUT,),
            output_names=RECURRENT_OUTPUTS,
            opset=opset,
        )
        _export_graph(
            DecoderStage(model),
            (*features[:-1], seq_out),
            staging / f"{Stage.DECODER.value}.onnx",
            input_names=DECODER_INPUTS,
            output_names=(DECODER_OUTPUT,),
            opset=opset,
        )
        manifest = {
            "format": EXPORT_FORMAT,
            "model_name": weights.model_name,
            "model_version": weights.version,
            "weights_sha256": weights.sha256,
            "config": weights.config.to_dict(),
            "opset": opset,
            "exporter": exporter_versions(),
            "max_slices": MAX_EXPORT_SLICES,
            "shapes": {
                "input_size": shapes.input_size,
                "skip_channels": list(shapes.skip_channels),
                "bottleneck_channels": shapes.bottleneck_channels,
                "seq_channels": shapes.seq_channels,
                "input_spacing_mm": shapes.input_spacing_mm,
                "seg_channels": shapes.seg_channels,
            },
            "tensors": {
                Stage.ENCODER.value: {"inputs": [ENCODER_INPUT], "outputs": list(ENCODER_OUTPUTS)},
                Stage.RECURRENT.value: {
                    "inputs": [RECURRENT_INPUT],
                    "outputs": list(RECURRENT_OUTPUTS),
                },
                Stage.DECODER.value: {"inputs": list(DECODER_INPUTS), "outputs": [DECODER_OUTPUT]},
            },
        }
        (staging / MANIFEST_NAME).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        for path in staging.iterdir():
            fsync_file(path)
        fsync_directory(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
        fsync_directory(out_dir.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "exported %s (sha256 %s) as staged ONNX opset %d to %s in %.1f s",
        weights.model_name,
        weights.sha256[:12],
        opset,
        out_dir,
        time.perf_counter() - started,
    )
    return ExportedModel.load(out_dir)


def cached_export(
    weights: ModelWeights, cache_dir: Path | str, *, opset: int | None = None
) -> ExportedModel:
    """The staged export of ``weights`` from ``cache_dir/onnx/<key>``, exporting it on a miss.

    The key (:func:`cache_key`) covers the weights sha256, the exporter versions and the opset,
    so new weights or a new torch give a new export instead of a stale one. Two processes that
    miss at once both export; the first finished folder wins and the other is discarded.

    Raises
    ------
    ExportError
        The export failed.
    """
    root = Path(cache_dir) / "onnx"
    target = root / cache_key(weights, opset=opset)
    if target.is_dir():
        try:
            exported = ExportedModel.load(target)
        except ExportError as exc:
            logger.warning("discarding unusable cached export %s: %s", target, exc)
            shutil.rmtree(target, ignore_errors=True)
        else:
            if exported.weights_sha256 == weights.sha256:
                logger.info("using cached ONNX export %s", target)
                return exported
            logger.warning("cached export %s holds other weights; exporting again", target)
            shutil.rmtree(target, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=".pending-"))
    try:
        fresh = export_staged(weights, scratch / "export", opset=opset)
        try:
            fresh.directory.rename(target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise
            logger.info("another process exported %s first; using its files", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportedModel.load(target)
