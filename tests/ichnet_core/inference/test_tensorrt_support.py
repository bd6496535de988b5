"""The TensorRT readiness checker on small hand-made graphs: each rule can fail."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

from ichnet_core.inference.tensorrt_support import (
    MAX_OPSET,
    SOURCE,
    SUPPORTED_OPERATORS,
    operators,
    tensorrt_problems,
)

FLOAT = TensorProto.FLOAT


def _model(
    nodes: list[onnx.NodeProto], *, opset: int = 17, initializers: Sequence[TensorProto] = ()
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", FLOAT, None)],
        initializer=list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _axes(name: str = "axes") -> TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [1], [0])


def test_list_is_documented_data() -> None:
    assert "onnx-tensorrt" in SOURCE and "96e781103cfc" in SOURCE
    assert {"Conv", "Scan", "Resize", "Softmax"} <= SUPPORTED_OPERATORS
    assert not {op for op in SUPPORTED_OPERATORS if op.startswith("Sequence")}


def test_supported_graph_has_no_problems() -> None:
    model = _model([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])], initializers=[_axes()])
    assert tensorrt_problems(model) == []


def test_sequence_operators_are_rejected() -> None:
    model = _model(
        [
            helper.make_node("SequenceConstruct", ["x"], ["s"]),
            helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0),
        ]
    )
    problems = tensorrt_problems(model)
    assert any("SequenceConstruct is not supported" in p for p in problems)
    assert any("ConcatFromSequence is not supported" in p for p in problems)


def test_opset_and_foreign_domains() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"])], opset=MAX_OPSET + 1)
    assert any(f"opset {MAX_OPSET + 1} is outside" in p for p in tensorrt_problems(model))
    custom = _model([helper.make_node("FusedConv", ["x"], ["y"], domain="com.microsoft")])
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert any("domain 'com.microsoft'" in p for p in tensorrt_problems(custom))


def test_axes_must_be_constant() -> None:
    model = _model([helper.make_node("Unsqueeze", ["x", "x_axes"], ["y"])])
    assert any("axes input 'x_axes' is not a constant" in p for p in tensorrt_problems(model))


def test_resize_restrictions() -> None:
    model = _model(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", antialias=1)],
        opset=18,
    )
    problems = tensorrt_problems(model)
    assert any("Resize mode 'cubic'" in p for p in problems)
    assert any("antialias" in p for p in problems)


def test_unsupported_operator_inside_a_scan_body_is_found() -> None:
    body = helper.make_graph(
        [
            helper.make_node("Add", ["state_in", "x_t"], ["state_out"]),
            helper.make_node("Unique", ["state_out"], ["y_t"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("state_in", FLOAT, [4]),
            helper.make_tensor_value_info("x_t", FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("state_out", FLOAT, [4]),
            helper.make_tensor_value_info("y_t", FLOAT, None),
        ],
    )
    scan = helper.make_node("Scan", ["init", "x"], ["final", "y"], body=body, num_scan_inputs=1)
    model = _model([scan], initializers=[helper.make_tensor("init", FLOAT, [4], [0.0] * 4)])
    assert ("", "Unique") in operators(model)
    assert any(
        "Unique is not supported" in p and "graph body" in p for p in tensorrt_problems(model)
    )
