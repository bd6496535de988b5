"""Staged ONNX export: files, TensorRT readiness, a truly dynamic slice axis, external data, cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ichnet_core.export import (
    DECODER_INPUTS,
    DECODER_OUTPUT,
    DEFAULT_OPSET,
    ENCODER_OUTPUTS,
    EXAMPLE_SLICES,
    EXPORT_FORMAT,
    MANIFEST_NAME,
    RECURRENT_OUTPUTS,
    ExportedModel,
    ExportError,
    Stage,
    cache_key,
    cached_export,
    export_staged,
)
from ichnet_core.inference.tensorrt_support import operators, tensorrt_problems
from ichnet_core.models.weights import ModelWeights, build_model
from tests.ichnet_core.inference.tiny import make_tiny_weights, session_cache_dir

#: fp32 agreement between the ONNX graphs and the torch stages.
STAGE_ATOL = 1e-4
#: Slice counts other than the export example's: the axis must really be dynamic.
SLICE_COUNTS = (2, 8, 33)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> ModelWeights:
    return make_tiny_weights(tmp_path_factory.mktemp("export_weights"))


@pytest.fixture(scope="module")
def exported(weights: ModelWeights, tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    return cached_export(weights, session_cache_dir(tmp_path_factory))


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_stages(exported: ExportedModel, x: np.ndarray) -> dict[str, np.ndarray]:
    encoder = _session(exported.path(Stage.ENCODER)).run(None, {"x": x})
    recurrent = _session(exported.path(Stage.RECURRENT)).run(None, {"bottleneck": encoder[-1]})
    decoder = _session(exported.path(Stage.DECODER)).run(
        None, dict(zip(DECODER_INPUTS, (*encoder[:-1], recurrent[0]), strict=True))
    )
    return {
        **dict(zip(ENCODER_OUTPUTS, encoder, strict=True)),
        **dict(zip(RECURRENT_OUTPUTS, recurrent, strict=True)),
        DECODER_OUTPUT: decoder[0],
    }


def test_export_folder_and_manifest(exported: ExportedModel, weights: ModelWeights) -> None:
    names = {p.name for p in exported.directory.iterdir()}
    for stage in Stage:
        assert f"{stage.value}.onnx" in names and f"{stage.value}.onnx.data" in names
    manifest = json.loads((exported.directory / MANIFEST_NAME).read_text())
    assert manifest["format"] == EXPORT_FORMAT
    assert manifest["weights_sha256"] == weights.sha256
    assert manifest["opset"] == DEFAULT_OPSET
    assert manifest["exporter"]["torch"] == torch.__version__
    assert exported.shapes.input_size == 32 and exported.shapes.seq_channels == 8


@pytest.mark.parametrize("stage", list(Stage))
def test_graphs_are_tensorrt_ready(exported: ExportedModel, stage: Stage) -> None:
    model = onnx.load(str(exported.path(stage)), load_external_data=False)
    assert tensorrt_problems(model) == []
    used = {op for _, op in operators(model)}
    assert not {op for op in used if op.startswith("Sequence") or "ToSequence" in op}
    assert model.opset_import[0].version == DEFAULT_OPSET


def test_recurrence_is_one_scan_per_direction(exported: ExportedModel) -> None:
    model = onnx.load(str(exported.path(Stage.RECURRENT)), load_external_data=False)
    scans = [node for node in model.graph.node if node.op_type == "Scan"]
    assert len(scans) == 4  # 2 layers x 2 directions
    # Inside each Scan only the hidden-state convolution; the input convolution of every cell
    # runs outside, on all slices at once.
    for scan in scans:
        (body,) = [a.g for a in scan.attribute if a.name == "body"]
        assert sum(node.op_type == "Conv" for node in body.node) == 1
    assert sum(node.op_type == "Conv" for node in model.graph.node) == 4


@pytest.mark.parametrize("stage", list(Stage))
def test_slice_axis_is_symbolic(exported: ExportedModel, stage: Stage) -> None:
    model = onnx.load(str(exported.path(stage)), load_external_data=False)
    for value in [*model.graph.input, *model.graph.output]:
        if value.name == "subject_logits":
            continue  # one row per series: no slice axis
        first = value.type.tensor_type.shape.dim[0]
        assert first.dim_param and not first.HasField("dim_value"), value.name


@pytest.mark.parametrize("slices", SLICE_COUNTS)
def test_graphs_match_torch_at_other_slice_counts(
    exported: ExportedModel, weights: ModelWeights, slices: int
) -> None:
    assert slices != EXAMPLE_SLICES
    model = build_model(weights)
    x = torch.rand(slices, 3, 32, 32, generator=torch.Generator().manual_seed(slices))
    with torch.no_grad():
        features = model.encode(x)
        seq_out, slice_logits, subject_logits = model.recur(features[-1][None])
        probs = torch.softmax(model.decode(features, seq_out[0]), dim=1)
    expected = {
        **dict(zip(ENCODER_OUTPUTS, features, strict=True)),
        "seq_out": seq_out[0],
        "slice_logits": slice_logits[0],
        "subject_logits": subject_logits[0],
        DECODER_OUTPUT: probs,
    }
    outputs = _run_stages(exported, x.numpy())
    for name, reference in expected.items():
        assert outputs[name].shape == tuple(reference.shape), name
        np.testing.assert_allclose(outputs[name], reference.numpy(), atol=STAGE_ATOL, err_msg=name)
    assert outputs["slice_logits"].shape == (slices, 6)


def test_external_data_loads_back_and_relocates(exported: ExportedModel, tmp_path: Path) -> None:
    path = exported.path(Stage.ENCODER)
    header_only = onnx.load(str(path), load_external_data=False)
    external = [
        t for t in header_only.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    assert external, "weights should live in the external data file"
    model = onnx.load(str(path))  # resolves encoder.onnx.data next to the graph
    onnx.checker.check_model(model, full_check=True)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    moved = tmp_path / "moved.onnx"
    onnx.save_model(model, str(moved), save_as_external_data=True, location="moved.onnx.data")
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    original = _session(path).run(None, {"x": x})
    again = _session(moved).run(None, {"x": x})
    for a, b in zip(original, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_cached_export_is_reused(
    exported: ExportedModel, weights: ModelWeights, caplog: pytest.LogCaptureFixture
) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in exported.files()}
    with caplog.at_level(logging.INFO, logger="ichnet_core.export"):
        again = cached_export(weights, exported.directory.parent.parent)
    assert again.directory == exported.directory
    assert "using cached ONNX export" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in again.files()} == stamps
    assert exported.directory.name == cache_key(weights)


def test_cache_key_depends_on_weights_and_opset(weights: ModelWeights, tmp_path: Path) -> None:
    other = make_tiny_weights(tmp_path, "ichnet_no_att")
    assert cache_key(weights) != cache_key(other)
    assert cache_key(weights, opset=18) != cache_key(weights)
    assert cache_key(weights) == cache_key(weights, opset=DEFAULT_OPSET)


def test_load_rejects_incomplete_folders(exported: ExportedModel, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"holds no readable manifest\.json"):
        ExportedModel.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(ExportError, match="is not an 'ichnet-staged-onnx/1' export"):
        ExportedModel.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(dict(exported.manifest)))
    with pytest.raises(ExportError, match=r"lacks .*encoder.onnx"):
        ExportedModel.load(tmp_path)


def test_export_needs_both_branches(tmp_path: Path) -> None:
    cls_only = make_tiny_weights(tmp_path, "ichnet_cls")
    with pytest.raises(ExportError, match="needs both branches; ichnet_cls has seg_branch=False"):
        export_staged(cls_only, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.export-")]


def test_invalid_opset(weights: ModelWeights, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opset must be a positive integer, got 0"):
        export_staged(weights, tmp_path / "out", opset=0)
