"""The project's own TFLite -> ONNX converter (set-up time only; no TensorFlow).

``tflite`` (the flatbuffer schema as pure Python) reads the model; ``onnx`` writes the graph.
It covers the operators of MediaPipe's face models (BlazeFace short range, the 468- and
478-point face meshes, the iris model): CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, ADD, MUL,
RELU, PRELU, PAD, RESHAPE, CONCATENATION, STRIDED_SLICE and DEQUANTIZE (fp16 or int8
weights become float32 constants), and the attention mesh's three MediaPipe custom operators
as standard ONNX subgraphs (:mod:`fitter_backend.model_setup.mediapipe_ops`). Anything else
raises :class:`ModelSetupError` naming the operator.

Layout: the ONNX model keeps TFLite's NHWC inputs and outputs, names and batch (made
dynamic: dim 0 is ``batch``). Inside, 4-D activations run as NCHW for ONNX's Conv and
MaxPool; each tensor remembers its layout and is transposed only where an operator needs
the other one (RESHAPE, CONCATENATION, STRIDED_SLICE, graph outputs).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper
from tflite.BuiltinOperator import BuiltinOperator

from fitter_backend.model_setup.errors import ModelSetupError
from fitter_backend.model_setup.mediapipe_ops import CUSTOM_CONVERTERS

OPSET = 17
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)
#: TFLite TensorType -> numpy dtype, for constant buffers.
TENSOR_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
OPERATOR_NAMES = {code: name for name, code in vars(BuiltinOperator).items() if not name.startswith("_")}


def _activation(code: int) -> tuple[str, dict] | None:
    """TFLite fused activation -> (ONNX op, Clip bounds); None for no activation."""
    if code == 0:
        return None
    if code == 1:
        return "Relu", {}
    if code == 2:
        return "Clip", {"min": -1.0, "max": 1.0}
    if code == 3:
        return "Clip", {"min": 0.0, "max": 6.0}
    raise ModelSetupError(f"unsupported fused activation function {code}")


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite SAME padding along one axis: (before, after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Graph:
    """Builds the ONNX graph of one TFLite subgraph; tensors are named ``t<index>``."""

    def __init__(self, model: tflite.Model, path: Path):
        self.model, self.path = model, path
        self.subgraph = model.Subgraphs(0)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.constants: dict[int, np.ndarray] = {}
        self.layout: dict[int, str] = {}  # activation index -> "nchw" | "nhwc"
        self.transposed: dict[tuple[int, str], str] = {}
        self.counter = 0

    # tensors -----------------------------------------------------------------------------
    def tensor(self, index: int) -> tflite.Tensor:
        return self.subgraph.Tensors(index)

    def shape(self, index: int) -> list[int]:
        return [int(d) for d in self.tensor(index).ShapeAsNumpy()] if self.tensor(index).ShapeLength() else []

    def read_constant(self, index: int) -> np.ndarray | None:
        tensor = self.tensor(index)
        buffer = self.model.Buffers(tensor.Buffer())
        if buffer is None or buffer.DataLength() == 0:
            return None
        dtype = TENSOR_DTYPES.get(tensor.Type())
        if dtype is None:
            raise ModelSetupError(f"{self.path}: tensor {tensor.Name().decode()} has unsupported type {tensor.Type()}")
        return np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=dtype).reshape(self.shape(index))

    def constant(self, index: int) -> np.ndarray:
        if index not in self.constants:
            raise ModelSetupError(f"{self.path}: operator input {self.tensor(index).Name().decode()} must be a constant")
        return self.constants[index]

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"

    def initializer(self, array: np.ndarray, stem: str = "const") -> str:
        name = self.fresh(stem)
        self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], **attributes) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=self.fresh(op), **attributes))

    def value(self, index: int, layout: str) -> str:
        """The ONNX name of tensor ``index`` in ``layout`` ("nchw", "nhwc"; constants as stored)."""
        if index in self.constants:
            array = self.constants[index]
            if layout == "nchw" and array.ndim == 4:
                array = array.transpose(TO_NCHW)
            return self.initializer(array.astype(np.float32) if array.dtype == np.float16 else array)
        have = self.layout[index]
        if have == layout or len(self.shape(index)) != 4:
            return f"t{index}"
        key = (index, layout)
        if key not in self.transposed:
            name = f"t{index}_{layout}"
            self.node("Transpose", [f"t{index}"], [name], perm=list(TO_NCHW if layout == "nchw" else TO_NHWC))
            self.transposed[key] = name
        return self.transposed[key]

    def broadcast_constant(self, index: int, layout: str) -> str:
        """A constant operand of an element-wise op, shaped to broadcast against ``layout``."""
        array = self.constant(index).astype(np.float32)
        if layout == "nchw" and array.ndim >= 1 and array.size > 1:
            array = array.reshape((1,) * (4 - array.ndim) + array.shape).transpose(TO_NCHW)
        return self.initializer(array)

    def finish(self, op: str, inputs: list[str], output: int, activation: int, layout: str, **attributes) -> None:
        """Emit ``op`` into tensor ``output``, followed by its fused activation."""
        fused = _activation(activation)
        target = f"t{output}"
        self.node(op, inputs, [target if fused is None else f"t{output}_pre"], **attributes)
        if fused is not None:
            name, bounds = fused
            extra = [self.initializer(np.float32(bounds["min"])), self.initializer(np.float32(bounds["max"]))] \
                if bounds else []
            self.node(name, [f"t{output}_pre", *extra], [target])
        self.layout[output] = layout


def _options(operator: tflite.Operator, cls):
    table = operator.BuiltinOptions()
    options = cls()
    options.Init(table.Bytes, table.Pos)
    return options


def _convolution(graph: _Graph, operator: tflite.Operator, depthwise: bool) -> None:
    x, weights, *rest = [int(i) for i in operator.InputsAsNumpy()]
    (out,) = operator.OutputsAsNumpy()
    options = _options(operator, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
    kernel = graph.constant(weights).astype(np.float32)  # conv: O,KH,KW,I; depthwise: 1,KH,KW,C*M
    _, height, width, channels = graph.shape(x)
    if depthwise:
        kernel = kernel.transpose(3, 0, 1, 2)  # C*M,1,KH,KW
        group = channels
    else:
        kernel = kernel.transpose(0, 3, 1, 2)  # O,I,KH,KW
        group = 1
    strides = [options.StrideH(), options.StrideW()]
    dilations = [options.DilationHFactor(), options.DilationWFactor()]
    pads = [0, 0, 0, 0]
    if options.Padding() == 0:  # SAME
        top, bottom = _same_pads(height, kernel.shape[2], strides[0], dilations[0])
        left, right = _same_pads(width, kernel.shape[3], strides[1], dilations[1])
        pads = [top, left, bottom, right]
    inputs = [graph.value(x, "nchw"), graph.initializer(kernel, "weights")]
    if rest and rest[0] >= 0:
        inputs.append(graph.initializer(graph.constant(rest[0]).astype(np.float32), "bias"))
    graph.finish("Conv", inputs, int(out), options.FusedActivationFunction(), "nchw", group=group,
                 kernel_shape=list(kernel.shape[2:]), strides=strides, dilations=dilations, pads=pads)


def _max_pool(graph: _Graph, operator: tflite.Operator) -> None:
    (x,), (out,) = operator.InputsAsNumpy(), operator.OutputsAsNumpy()
    options = _options(operator, tflite.Pool2DOptions)
    kernel = [options.FilterHeight(), options.FilterWidth()]
    strides = [options.StrideH(), options.StrideW()]
    _, height, width, _ = graph.shape(int(x))
    pads = [0, 0, 0, 0]
    if options.Padding() == 0:
        top, bottom = _same_pads(height, kernel[0], strides[0])
        left, right = _same_pads(width, kernel[1], strides[1])
        pads = [top, left, bottom, right]
    graph.finish("MaxPool", [graph.value(int(x), "nchw")], int(out), options.FusedActivationFunction(), "nchw",
                 kernel_shape=kernel, strides=strides, pads=pads)


def _elementwise(graph: _Graph, operator: tflite.Operator, op: str, options_class) -> None:
    a, b = [int(i) for i in operator.InputsAsNumpy()]
    (out,) = operator.OutputsAsNumpy()
    activations = [i for i in (a, b) if i not in graph.constants]
    layout = "nchw" if any(graph.layout[i] == "nchw" for i in activations) else "nhwc"
    inputs = [graph.broadcast_constant(i, layout) if i in graph.constants else graph.value(i, layout) for i in (a, b)]
    graph.finish(op, inputs, int(out), _options(operator, options_class).FusedActivationFunction(), layout)


def _prelu(graph: _Graph, operator: tflite.Operator) -> None:
    x, alpha = [int(i) for i in operator.InputsAsNumpy()]
    (out,) = operator.OutputsAsNumpy()
    layout = graph.layout[x]
    graph.finish("PRelu", [graph.value(x, layout), graph.broadcast_constant(alpha, layout)], int(out), 0, layout)


def _relu(graph: _Graph, operator: tflite.Operator) -> None:
    (x,), (out,) = operator.InputsAsNumpy(), operator.OutputsAsNumpy()
    layout = graph.layout[int(x)]
    graph.finish("Relu", [graph.value(int(x), layout)], int(out), 0, layout)


def _pad(graph: _Graph, operator: tflite.Operator) -> None:
    x, paddings = [int(i) for i in operator.InputsAsNumpy()]
    (out,) = operator.OutputsAsNumpy()
    widths = graph.constant(paddings).astype(np.int64)  # rank x (before, after), NHWC axes
    layout = graph.layout[x] if len(graph.shape(x)) == 4 else "nhwc"
    if layout == "nchw":
        widths = widths[list(TO_NCHW)]
    pads = graph.initializer(np.concatenate([widths[:, 0], widths[:, 1]]), "pads")
    graph.finish("Pad", [graph.value(x, layout), pads], int(out), 0, layout)


def _reshape(graph: _Graph, operator: tflite.Operator) -> None:
    inputs = [int(i) for i in operator.InputsAsNumpy()]
    (out,) = operator.OutputsAsNumpy()
    shape = np.array(graph.shape(int(out)), dtype=np.int64)
    shape[0] = 0  # copy the (dynamic) batch from the input
    graph.finish("Reshape", [graph.value(inputs[0], "nhwc"), graph.initializer(shape, "shape")], int(out), 0, "nhwc")


def _concatenation(graph: _Graph, operator: tflite.Operator) -> None:
    inputs = [int(i) for i in operator.InputsAsNumpy()]
    (out,) = operator.OutputsAsNumpy()
    options = _options(operator, tflite.ConcatenationOptions)
    axis = options.Axis() % len(graph.shape(int(out)))
    graph.finish("Concat", [graph.value(i, "nhwc") for i in inputs], int(out), options.FusedActivationFunction(),
                 "nhwc", axis=axis)


def _strided_slice(graph: _Graph, operator: tflite.Operator) -> None:
    x, begin, end, strides = [int(i) for i in operator.InputsAsNumpy()]
    (out,) = operator.OutputsAsNumpy()
    options = _options(operator, tflite.StridedSliceOptions)
    if options.EllipsisMask() or options.NewAxisMask() or options.ShrinkAxisMask():
        raise ModelSetupError(f"{graph.path}: STRIDED_SLICE with ellipsis, new-axis or shrink masks is not supported")
    starts = graph.constant(begin).astype(np.int64).copy()
    ends = graph.constant(end).astype(np.int64).copy()
    rank = len(starts)
    big = np.iinfo(np.int64).max
    for axis in range(rank):
        if options.BeginMask() >> axis & 1:
            starts[axis] = 0
        if options.EndMask() >> axis & 1:
            ends[axis] = big
    starts[0], ends[0] = 0, big  # keep the whole (dynamic) batch
    inputs = [graph.value(x, "nhwc"), graph.initializer(starts, "starts"), graph.initializer(ends, "ends"),
              graph.initializer(np.arange(rank, dtype=np.int64), "axes"),
              graph.initializer(graph.constant(strides).astype(np.int64), "steps")]
    graph.finish("Slice", inputs, int(out), 0, "nhwc")


def _dequantize(graph: _Graph, operator: tflite.Operator) -> None:
    (x,), (out,) = operator.InputsAsNumpy(), operator.OutputsAsNumpy()
    array = graph.constant(int(x))
    quantization = graph.tensor(int(x)).Quantization()
    if array.dtype in (np.int8, np.uint8):
        scale = quantization.ScaleAsNumpy().astype(np.float32)
        zero = quantization.ZeroPointAsNumpy().astype(np.float32)
        axis = quantization.QuantizedDimension()
        shape = [1] * array.ndim
        shape[axis] = -1
        if scale.size > 1:
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        graph.constants[int(out)] = ((array.astype(np.float32) - zero) * scale).astype(np.float32)
    else:
        graph.constants[int(out)] = array.astype(np.float32)


CONVERTERS = {
    "CONV_2D": lambda g, o: _convolution(g, o, depthwise=False),
    "DEPTHWISE_CONV_2D": lambda g, o: _convolution(g, o, depthwise=True),
    "MAX_POOL_2D": _max_pool,
    "ADD": lambda g, o: _elementwise(g, o, "Add", tflite.AddOptions),
    "MUL": lambda g, o: _elementwise(g, o, "Mul", tflite.MulOptions),
    "RELU": _relu,
    "PRELU": _prelu,
    "PAD": _pad,
    "RESHAPE": _reshape,
    "CONCATENATION": _concatenation,
    "STRIDED_SLICE": _strided_slice,
    "DEQUANTIZE": _dequantize,
    **CUSTOM_CONVERTERS,
}


def _operator_name(model: tflite.Model, operator: tflite.Operator) -> str:
    code = model.OperatorCodes(operator.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = OPERATOR_NAMES.get(builtin, str(builtin))
    return f"CUSTOM:{code.CustomCode().decode()}" if name == "CUSTOM" else name


def unsupported_operators(tflite_bytes: bytes) -> list[str]:
    """The operators of a TFLite model this converter cannot translate (empty: convertible)."""
    model = tflite.Model.GetRootAs(tflite_bytes, 0)
    subgraph = model.Subgraphs(0)
    names = {_operator_name(model, subgraph.Operators(i)) for i in range(subgraph.OperatorsLength())}
    return sorted(names - set(CONVERTERS))


def convert(tflite_bytes: bytes, source: Path) -> onnx.ModelProto:
    """TFLite flatbuffer -> ONNX model (opset 17) with TFLite's input/output names, NHWC
    layout and a dynamic batch; raise ModelSetupError naming ``source`` on what it cannot do."""
    if tflite_bytes[4:8] != b"TFL3":
        raise ModelSetupError(f"{source} is not a readable TFLite model (no TFL3 identifier)")
    try:
        missing = unsupported_operators(tflite_bytes)
        if missing:
            raise ModelSetupError(f"{source}: the TFLite to ONNX converter does not support {', '.join(missing)}")
        return _convert(tflite.Model.GetRootAs(tflite_bytes, 0), source)
    except (IndexError, ValueError, TypeError, AttributeError, struct.error) as error:  # truncated flatbuffer
        raise ModelSetupError(f"{source} is not a readable TFLite model ({type(error).__name__}: {error})") from None


def _convert(model: tflite.Model, source: Path) -> onnx.ModelProto:
    if model.SubgraphsLength() != 1:
        raise ModelSetupError(f"{source}: expected one subgraph, found {model.SubgraphsLength()}")
    graph = _Graph(model, source)
    subgraph = graph.subgraph
    inputs = [int(i) for i in subgraph.InputsAsNumpy()]
    for index in range(subgraph.TensorsLength()):
        if index not in inputs:
            array = graph.read_constant(index)
            if array is not None:
                graph.constants[index] = array
    for index in inputs:
        graph.layout[index] = "nhwc"
    for position in range(subgraph.OperatorsLength()):
        operator = subgraph.Operators(position)
        CONVERTERS[_operator_name(model, operator)](graph, operator)

    def value_info(index: int) -> onnx.ValueInfoProto:
        tensor = graph.tensor(index)
        return helper.make_tensor_value_info(tensor.Name().decode(), TensorProto.FLOAT,
                                             ["batch", *graph.shape(index)[1:]])

    for index in inputs:
        graph.nodes.insert(0, helper.make_node("Identity", [graph.tensor(index).Name().decode()], [f"t{index}"]))
    outputs = [int(i) for i in subgraph.OutputsAsNumpy()]
    for index in outputs:
        graph.node("Identity", [graph.value(index, "nhwc")], [graph.tensor(index).Name().decode()])
    onnx_graph = helper.make_graph(graph.nodes, source.stem, [value_info(i) for i in inputs],
                                   [value_info(i) for i in outputs], list(graph.initializers.values()))
    onnx_model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="facecap tflite_to_onnx")
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    return onnx_model
