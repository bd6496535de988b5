"""Triton model repository: every config.pbtxt parses as Triton's ModelConfig and matches its graph.

The ONNX stage models cannot be loaded by the tritonserver available here (its bundle has only the
Python backend), so their configs are checked against the exported ONNX graphs themselves: the
same tensor names, FP32, and the same dimensions (Triton's batch axis = the graph's dynamic
slice axis for the per-slice stages).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format

from ichnet_core.export import ExportedModel, Stage
from ichnet_core.models.weights import ModelWeights
from ichnet_core.serving import triton_model
from ichnet_core.serving.triton_repo import TritonRepoError, write_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")


def _config(folder: Path) -> model_config_pb2.ModelConfig:  # type: ignore[name-defined]
    """Parse config.pbtxt with Triton's own schema (unknown fields or enums raise)."""
    return text_format.Parse(
        (folder / "config.pbtxt").read_text(encoding="utf-8"), model_config_pb2.ModelConfig()
    )


def _graph_tensors(values: list[onnx.ValueInfoProto]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """name -> (ONNX element type, dims with -1 for a symbolic dimension)."""
    out = {}
    for value in values:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        out[value.name] = (tensor.elem_type, dims)
    return out


def _config_tensors(config, fields) -> dict[str, tuple[int, tuple[int, ...]]]:  # type: ignore[no-untyped-def]
    """name -> (data type, dims) as the graph sees them (batch axis put back in front)."""
    batch = (-1,) if config.max_batch_size > 0 else ()
    return {t.name: (t.data_type, (*batch, *t.dims)) for t in fields}


@pytest.fixture(scope="module")
def repository(
    tmp_path_factory: pytest.TempPathFactory, tiny_weights: ModelWeights, tiny_export: ExportedModel
) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(tiny_weights, tiny_export, out, chunk_slices=4)
    return out


def test_stage_configs_match_the_onnx_graphs(repository: Path) -> None:
    fp32 = model_config_pb2.DataType.Value("TYPE_FP32")
    for stage in Stage:
        folder = repository / f"ichnet_{stage.value}"
        config = _config(folder)
        assert config.name == folder.name and config.platform == "onnxruntime_onnx"
        graph_file = folder / "1" / config.default_model_filename
        graph = onnx.load(str(graph_file), load_external_data=False).graph
        assert (graph_file.parent / f"{graph_file.name}.data").is_file()
        for fields, values in ((config.input, graph.input), (config.output, graph.output)):
            expected = {
                name: (fp32 if elem == onnx.TensorProto.FLOAT else elem, dims)
                for name, (elem, dims) in _graph_tensors(list(values)).items()
            }
            assert _config_tensors(config, fields) == expected, (stage, fields)
        per_slice = stage is not Stage.RECURRENT
        assert (config.max_batch_size > 0) == per_slice
        assert config.HasField("dynamic_batching") == per_slice


def test_python_model_config_and_files(
    repository: Path, tiny_weights: ModelWeights, tiny_export: ExportedModel
) -> None:
    config = _config(repository / "ichnet")
    assert config.backend == "python" and config.max_batch_size == 0
    assert [t.name for t in config.input] == [triton_model.INPUT_NAME]
    assert list(config.input[0].dims) == [-1, 3, 32, 32]
    assert [t.name for t in config.output] == list(triton_model.OUTPUT_NAMES)
    assert list(config.output[0].dims) == [-1, tiny_export.shapes.seg_channels, 32, 32]
    assert config.parameters["weights_sha256"].string_value == tiny_weights.sha256
    assert config.parameters["chunk_slices"].string_value == "4"
    version = repository / "ichnet" / "1"
    assert (version / "weights.pt").read_bytes() == tiny_weights.path.read_bytes()
    assert ExportedModel.load(version / "onnx").weights_sha256 == tiny_weights.sha256
    assert (version / "model.py").read_text() == Path(triton_model.__file__).read_text()


def test_python_model_runs_the_onnx_engine_on_its_files(repository: Path) -> None:
    """The model's initialize() as Triton's Python backend calls it (config as JSON with the
    proto's field names); execute() needs the backend's stub: tests/integration/test_triton.py."""
    model = triton_model.TritonPythonModel()
    config = (repository / "ichnet" / "config.pbtxt").read_text()
    as_json = text_format.Parse(config, model_config_pb2.ModelConfig())
    from google.protobuf.json_format import MessageToJson

    model.initialize(
        {
            "model_config": MessageToJson(as_json, preserving_proto_field_name=True),
            "model_repository": str(repository / "ichnet"),
            "model_version": "1",
        }
    )
    output = model.engine.run_network(np.random.default_rng(0).random((5, 3, 32, 32), np.float32))
    assert output.seg_probs.shape == (5, 3, 32, 32) and output.subject_logits.shape == (6,)


def test_refuses_a_non_empty_folder_and_other_weights(
    tmp_path: Path, tiny_weights: ModelWeights, tiny_export: ExportedModel, decisive_weights
) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(TritonRepoError, match="not empty"):
        write_repository(tiny_weights, tiny_export, tmp_path / "used")
    with pytest.raises(TritonRepoError, match="holds weights"):
        write_repository(decisive_weights, tiny_export, tmp_path / "new")


def test_cli_writes_the_repository_of_the_configured_weights(
    tmp_path: Path,
    tiny_weights: ModelWeights,
    engine_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dicom_node.cli import main

    config = tmp_path / "node.yaml"
    config.write_text(
        f"model:\n  weights: {tiny_weights.path}\n  weights_sha256: {tiny_weights.sha256}\n"
        f"  cache_dir: {engine_cache}\ntriton:\n  model: ich\n",
        encoding="utf-8",
    )
    out = tmp_path / "repo"
    assert main(["triton-repo", "--config", str(config), "--out", str(out), "--kind", "gpu"]) == 0
    assert "ich, ich_encoder, ich_recurrent, ich_decoder" in capsys.readouterr().out
    assert (
        _config(out / "ich").instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    )
    assert main(["triton-repo", "--config", str(config), "--out", str(out)]) == 1  # not empty
    assert "not empty" in capsys.readouterr().err
