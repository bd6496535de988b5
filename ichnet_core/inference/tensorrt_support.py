"""ONNX operators TensorRT can run: the onnx-tensorrt support matrix as data, and a checker.

TensorRT cannot be installed on the machines that build and test this project, so its readiness
is checked without it: every node of the exported graphs (including the bodies of ``Scan`` and
other control-flow subgraphs) must be an operator the ONNX-TensorRT parser supports, the opset
must be one it reads, and the documented restrictions that can be read off a graph must hold.
ONNX sequence operators (``SequenceConstruct``, ``SequenceAt``, ...) are not supported by TensorRT
and are therefore absent from the list; exporters emit them for Python lists, which is why the
recurrence is exported through torch's ``scan`` operator instead.

Source of the data: ``docs/operators.md`` of https://github.com/onnx/onnx-tensorrt at commit
96e781103cfc4adf4a6bb557e94bac8e693f6f4c ("ONNX-TensorRT 10.1 GA release", 2024-06-17): every
operator whose "Supported" column is ``Y``. It states that TensorRT 10.0 reads opsets 9 to 20.
Update this module when a newer TensorRT is targeted, with the new commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import onnx

#: Where :data:`SUPPORTED_OPERATORS` was copied from.
SOURCE: Final[str] = (
    "onnx/onnx-tensorrt docs/operators.md @ 96e781103cfc4adf4a6bb557e94bac8e693f6f4c "
    "(ONNX-TensorRT 10.1 GA, 2024-06-17)"
)
#: Opsets of the default ONNX domain the parser reads (inclusive).
MIN_OPSET: Final[int] = 9
MAX_OPSET: Final[int] = 20
#: The default ONNX domain ("" and "ai.onnx" are the same domain).
_DEFAULT_DOMAINS: Final[frozenset[str]] = frozenset({"", "ai.onnx"})

#: Operators of the default domain with "Supported: Y" in the source matrix.
SUPPORTED_OPERATORS: Final[frozenset[str]] = frozenset(
    {
        "Abs",
        "Acos",
        "Acosh",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "Asin",
        "Asinh",
        "Atan",
        "Atanh",
        "AveragePool",
        "BatchNormalization",
        "Cast",
        "CastLike",
        "Ceil",
        "Celu",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "Cos",
        "Cosh",
        "CumSum",
        "DeformConv",
        "DepthToSpace",
        "DequantizeLinear",
        "Div",
        "Dropout",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "EyeLike",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gelu",
        "Gemm",
        "GlobalAveragePool",
        "GlobalLpPool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "GridSample",
        "GroupNormalization",
        "GRU",
        "HardSigmoid",
        "HardSwish",
        "Hardmax",
        "Identity",
        "If",
        "ImageScaler",
        "InstanceNormalization",
        "IsInf",
        "IsNaN",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "LogSoftmax",
        "Loop",
        "LRN",
        "LSTM",
        "LpNormalization",
        "LpPool",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "MeanVarianceNormalization",
        "Min",
        "Mish",
        "Mod",
        "Mul",
        "Neg",
        "NonMaxSuppression",
        "NonZero",
        "Not",
        "OneHot",
        "Or",
        "Pad",
        "ParametricSoftplus",
        "Pow",
        "PRelu",
        "QuantizeLinear",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Range",
        "Reciprocal",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "ReduceSumSquare",
        "Relu",
        "Reshape",
        "Resize",
        "ReverseSequence",
        "RNN",
        "RoiAlign",
        "Round",
        "ScaledTanh",
        "Scan",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Selu",
        "Shape",
        "Shrink",
        "Sigmoid",
        "Sign",
        "Sin",
        "Sinh",
        "Size",
        "Slice",
        "Softmax",
        "Softplus",
        "Softsign",
        "SpaceToDepth",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tan",
        "Tanh",
        "ThresholdedRelu",
        "Tile",
        "TopK",
        "Transpose",
        "Trilu",
        "Unsqueeze",
        "Upsample",
        "Where",
        "Xor",
    }
)

#: Restriction "``axes`` must be an initializer / a constant tensor": operator -> input index of
#: ``axes`` (opset-13+ layouts: axes moved from an attribute to an input).
CONSTANT_AXES_INPUT: Final[dict[str, int]] = {
    "Slice": 3,
    "Squeeze": 1,
    "Unsqueeze": 1,
    "Pad": 3,
    "CumSum": 1,
    **{
        name: 1
        for name in (
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceMax",
            "ReduceMean",
            "ReduceMin",
            "ReduceProd",
            "ReduceSum",
            "ReduceSumSquare",
        )
    },
}
#: Resize restrictions: supported ``mode`` and ``coordinate_transformation_mode`` values, and no
#: antialiasing.
RESIZE_MODES: Final[frozenset[str]] = frozenset({"nearest", "linear"})
RESIZE_COORDINATE_MODES: Final[frozenset[str]] = frozenset(
    {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph nested in its nodes' attributes (Scan/Loop/If bodies)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graphs(subgraph)


def operators(model: onnx.ModelProto) -> set[tuple[str, str]]:
    """Every ``(domain, op_type)`` used in ``model``, subgraphs included."""
    return {(node.domain, node.op_type) for graph in _graphs(model.graph) for node in graph.node}


def _attribute(node: onnx.NodeProto, name: str, default: object) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            value = onnx.helper.get_attribute_value(attribute)
            return value.decode("utf-8") if isinstance(value, bytes) else value
    return default


def _constant_names(model: onnx.ModelProto) -> set[str]:
    names: set[str] = set()
    for graph in _graphs(model.graph):
        names.update(init.name for init in graph.initializer)
        names.update(
            output for node in graph.node if node.op_type == "Constant" for output in node.output
        )
    return names


def tensorrt_problems(model: onnx.ModelProto) -> list[str]:
    """Why TensorRT's ONNX parser would reject ``model``; empty when nothing was found.

    Checks the opset, that every operator (subgraphs included) is in
    :data:`SUPPORTED_OPERATORS` of the default domain, the constant-``axes`` restrictions and the
    Resize restrictions. Data-type restrictions are not checked (the graphs are float32).

    Parameters
    ----------
    model:
        The graph; external data need not be loaded.
    """
    problems: list[str] = []
    for opset in model.opset_import:
        if opset.domain in _DEFAULT_DOMAINS and not MIN_OPSET <= opset.version <= MAX_OPSET:
            problems.append(
                f"opset {opset.version} is outside the {MIN_OPSET}-{MAX_OPSET} range TensorRT reads"
            )
    if model.functions:
        names = sorted(f.name for f in model.functions)
        problems.append(f"model-local functions {names} (TensorRT parses no ONNX functions)")
    constants = _constant_names(model)
    for graph in _graphs(model.graph):
        for node in graph.node:
            label = f"{node.op_type} node {node.name or '<unnamed>'} (graph {graph.name})"
            if node.domain not in _DEFAULT_DOMAINS:
                problems.append(f"{label} is in domain {node.domain!r}, not the ONNX domain")
                continue
            if node.op_type not in SUPPORTED_OPERATORS:
                problems.append(f"{label}: operator {node.op_type} is not supported by TensorRT")
                continue
            axes_index = CONSTANT_AXES_INPUT.get(node.op_type)
            if axes_index is not None and len(node.input) > axes_index:
                axes = node.input[axes_index]
                if axes and axes not in constants:
                    problems.append(f"{label}: axes input {axes!r} is not a constant")
            if node.op_type == "Resize":
                mode = _attribute(node, "mode", "nearest")
                coordinates = _attribute(node, "coordinate_transformation_mode", "half_pixel")
                if mode not in RESIZE_MODES:
                    problems.append(f"{label}: Resize mode {mode!r} is not supported")
                if coordinates not in RESIZE_COORDINATE_MODES:
                    problems.append(f"{label}: Resize coordinates {coordinates!r} not supported")
                if _attribute(node, "antialias", 0):
                    problems.append(f"{label}: Resize with antialias is not supported")
    return problems
