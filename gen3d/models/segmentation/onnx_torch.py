"""Run a rembg ONNX segmentation graph with torch ops, so the background stage can use a CUDA device.

Why torch and not onnxruntime's CUDA provider: the stages already run on torch's CUDA build, and
onnxruntime-gpu is a second ~250 MB CUDA stack that must match the driver's CUDA major version.
Here the graph's weights live in torch's caching allocator (so ``gpu_memory_gib`` caps them like
the other stages) and the forward can be replayed as one CUDA graph.

The graph is interpreted node by node. rembg feeds each model one fixed input size, so at
construction one pass over meta tensors evaluates every value that depends only on shapes and
constants (the ``Shape -> Slice -> Concat`` chains that size each ``Resize``); ``forward`` then
runs only tensor ops, with no host synchronisation. Floating precision is the module's: every
float ``Cast`` casts to the dtype of the module's weights, so an fp16 graph can run in fp32.
Unsupported operators or attributes fail at construction with a ``ValueError`` naming them.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

#: ONNX element types a ``Cast`` may target.
CAST_TARGETS: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32, TensorProto.FLOAT16: torch.float16, TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.DOUBLE: torch.float64, TensorProto.INT64: torch.int64, TensorProto.INT32: torch.int32,
    TensorProto.BOOL: torch.bool,
}
#: A value as ops see it: a tensor, or None for an omitted optional input.
Value = torch.Tensor | None
#: Signature of an op: (inputs, attributes, float dtype or None for exact constant folding).
Op = Callable[[list[Value], dict[str, Any], torch.dtype | None], torch.Tensor]


@dataclass(frozen=True)
class _Node:
    """One ONNX node with decoded attributes (``inputs`` keeps ``''`` for omitted inputs)."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(hash=False)


def _ints(value: Value) -> list[int]:
    """A static (CPU) integer tensor as a Python list."""
    return [int(v) for v in value.reshape(-1).tolist()]


def _pads_2d(pads: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int, int, int] | None]:
    """ONNX ``[top, left, bottom, right]`` -> (symmetric padding, or (0, 0) and an F.pad tuple)."""
    top, left, bottom, right = pads
    if (top, left) == (bottom, right):
        return (top, left), None
    return (0, 0), (left, right, top, bottom)


def _conv(inputs: list[Value], attrs: dict[str, Any], _: torch.dtype | None) -> torch.Tensor:
    x, weight, bias = (inputs + [None])[:3]
    padding, explicit = _pads_2d(attrs.get("pads", [0, 0, 0, 0]))
    if explicit is not None:
        x = F.pad(x, explicit)
    return F.conv2d(
        x, weight, bias, stride=tuple(attrs.get("strides", [1, 1])), padding=padding,
        dilation=tuple(attrs.get("dilations", [1, 1])), groups=attrs.get("group", 1),
    )


def _max_pool(inputs: list[Value], attrs: dict[str, Any], _: torch.dtype | None) -> torch.Tensor:
    x = inputs[0]
    padding, explicit = _pads_2d(attrs.get("pads", [0, 0, 0, 0]))
    if explicit is not None:
        x = F.pad(x, explicit, value=float("-inf"))
    kernel = tuple(attrs["kernel_shape"])
    return F.max_pool2d(
        x, kernel, stride=tuple(attrs.get("strides", [1, 1])), padding=padding,
        dilation=tuple(attrs.get("dilations", [1, 1])), ceil_mode=bool(attrs.get("ceil_mode", 0)),
    )


def _resize(inputs: list[Value], attrs: dict[str, Any], _: torch.dtype | None) -> torch.Tensor:
    """ONNX Resize (opset 11+) of an NCHW tensor; only the modes torch reproduces exactly."""
    x, _roi, scales, sizes = (inputs + [None] * 4)[:4]
    if sizes is not None and sizes.numel():
        target = _ints(sizes)
    else:
        target = [int(np.floor(dim * s)) for dim, s in zip(x.shape, scales.tolist())]
    if target[:2] != list(x.shape[:2]):
        raise ValueError(f"Resize: only spatial resizing is supported, got {list(x.shape)} -> {target}")
    mode = attrs.get("mode", b"nearest").decode()
    transform = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
    if mode == "linear" and transform in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        return F.interpolate(x, size=target[2:], mode="bilinear", align_corners=transform == "align_corners")
    if mode == "nearest" and transform == "asymmetric" and attrs.get("nearest_mode", b"round_prefer_floor") == b"floor":
        return F.interpolate(x, size=target[2:], mode="nearest")
    raise ValueError(f"Resize: mode {mode!r} with coordinate_transformation_mode {transform!r} is not supported")


def _slice(inputs: list[Value], attrs: dict[str, Any], _: torch.dtype | None) -> torch.Tensor:
    data, starts, ends, axes, steps = (inputs + [None] * 5)[:5]
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    if any(step < 1 for step in steps):
        raise ValueError(f"Slice: only positive steps are supported, got {steps}")
    index = [slice(None)] * data.dim()
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis % data.dim()] = slice(start, end, step)  # Python clamps like ONNX for positive steps
    return data[tuple(index)]


def _cast(inputs: list[Value], attrs: dict[str, Any], float_dtype: torch.dtype | None) -> torch.Tensor:
    if attrs["to"] not in CAST_TARGETS:
        raise ValueError(f"Cast: target type {helper.tensor_dtype_to_string(attrs['to'])} is not supported")
    target = CAST_TARGETS[attrs["to"]]
    if float_dtype is not None and target.is_floating_point and inputs[0].is_floating_point():
        target = float_dtype  # the module's precision, not the graph's
    return inputs[0].to(target)


def _axes(inputs: list[Value], attrs: dict[str, Any]) -> list[int] | None:
    """Axes from the ``axes`` attribute (older opsets) or the second input (newer ones)."""
    if "axes" in attrs:
        return list(attrs["axes"])
    return _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else None


def _reduce_mean(inputs: list[Value], attrs: dict[str, Any], _: torch.dtype | None) -> torch.Tensor:
    axes = _axes(inputs, attrs)
    axes = axes if axes is not None else list(range(inputs[0].dim()))
    return inputs[0].mean(dim=axes, keepdim=bool(attrs.get("keepdims", 1)))


def _unsqueeze(inputs: list[Value], attrs: dict[str, Any], _: torch.dtype | None) -> torch.Tensor:
    x = inputs[0]
    rank = x.dim() + len(_axes(inputs, attrs))
    for axis in sorted(a % rank for a in _axes(inputs, attrs)):
        x = x.unsqueeze(axis)
    return x


def _gather(inputs: list[Value], attrs: dict[str, Any], _: torch.dtype | None) -> torch.Tensor:
    data, indices = inputs
    axis = attrs.get("axis", 0) % data.dim()
    picked = data.index_select(axis, indices.reshape(-1) % data.shape[axis])
    return picked.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1 :])


def _batch_norm(inputs: list[Value], attrs: dict[str, Any], _: torch.dtype | None) -> torch.Tensor:
    x, scale, bias, mean, var = inputs[:5]
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=attrs.get("epsilon", 1e-5))


def _divide(inputs: list[Value], attrs: dict[str, Any], _: torch.dtype | None) -> torch.Tensor:
    a, b = inputs
    exact = a.is_floating_point() or b.is_floating_point()
    return torch.div(a, b) if exact else torch.div(a, b, rounding_mode="trunc")  # ONNX integer division truncates


def _elementwise(fn: Callable[..., torch.Tensor]) -> Op:
    return lambda inputs, attrs, dtype: fn(*inputs)


OPS: dict[str, Op] = {
    "Conv": _conv,
    "MaxPool": _max_pool,
    "Resize": _resize,
    "Slice": _slice,
    "Cast": _cast,
    "ReduceMean": _reduce_mean,
    "Unsqueeze": _unsqueeze,
    "Gather": _gather,
    "BatchNormalization": _batch_norm,
    "Div": _divide,
    "Concat": lambda inputs, attrs, dtype: torch.cat(inputs, dim=attrs["axis"]),
    "Sum": lambda inputs, attrs, dtype: torch.stack(torch.broadcast_tensors(*inputs)).sum(0),
    "Relu": _elementwise(torch.relu),
    "Sigmoid": _elementwise(torch.sigmoid),
    "Add": _elementwise(torch.add),
    "Sub": _elementwise(torch.sub),
    "Mul": _elementwise(torch.mul),
    "Floor": _elementwise(torch.floor),
    "Identity": _elementwise(lambda x: x),
}
#: Ops that only read their input's shape, so their output is static even for a dynamic input.
SHAPE_OPS = frozenset({"Shape"})
#: Attributes whose non-default values change results in ways the ops above do not reproduce.
REFUSED_ATTRIBUTES = {"auto_pad": (b"NOTSET",), "antialias": (0,), "storage_order": (0,), "exclude_outside": (0,)}


def _decode(node: onnx.NodeProto) -> _Node:
    """Decode a node, refusing unknown ops and attribute values the ops above would get wrong."""
    if node.domain not in ("", "ai.onnx") or (node.op_type not in OPS and node.op_type not in SHAPE_OPS | {"Constant"}):
        raise ValueError(f"onnx_torch: operator {node.domain or 'ai.onnx'}::{node.op_type} is not supported")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for name, allowed in REFUSED_ATTRIBUTES.items():
        if name in attrs and attrs[name] not in allowed:
            raise ValueError(f"onnx_torch: {node.op_type} attribute {name}={attrs[name]!r} is not supported")
    return _Node(node.op_type, tuple(node.input), tuple(node.output), attrs)


def _constant(node: _Node) -> torch.Tensor:
    """The value of a ``Constant`` node as a CPU tensor."""
    if "value" in node.attrs:
        return torch.from_numpy(numpy_helper.to_array(node.attrs["value"]).copy())
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in node.attrs:
            return torch.tensor(node.attrs[key], dtype=dtype)
    raise ValueError(f"onnx_torch: Constant {node.outputs[0]!r} has no supported value attribute")


def _shape(node: _Node, x: torch.Tensor) -> torch.Tensor:
    dims = list(x.shape)[node.attrs.get("start", 0) : node.attrs.get("end", None)]
    return torch.tensor(dims, dtype=torch.int64)


def _needed_nodes(graph: onnx.GraphProto, output: str) -> list[onnx.NodeProto]:
    """The nodes ``output`` depends on, producers first (exporters do not always store them so)."""
    nodes = list(graph.node)
    producer = {name: index for index, node in enumerate(nodes) for name in node.output}
    order: list[int] = []
    state: dict[int, bool] = {}  # False: being visited, True: placed
    stack = [(producer[output], False)] if output in producer else []
    while stack:
        index, expanded = stack.pop()
        if expanded:
            state[index] = True
            order.append(index)
        elif index not in state:
            state[index] = False
            stack.append((index, True))
            stack.extend((producer[name], False) for name in nodes[index].input if name in producer)
        elif not state[index]:
            raise ValueError(f"onnx_torch: the graph has a cycle through {nodes[index].op_type} {nodes[index].name!r}")
    return [nodes[index] for index in order]


def _check_single_outputs(nodes: list[_Node], output: str) -> None:
    """Refuse graphs that read a node's second output (MaxPool indices and the like)."""
    consumed = {name for node in nodes for name in node.inputs} | {output}
    for node in nodes:
        extra = [name for name in node.outputs[1:] if name in consumed]
        if extra:
            raise ValueError(f"onnx_torch: {node.op} output(s) {extra} are read, only first outputs are supported")


@dataclass(frozen=True)
class _Step:
    """One node of the runtime plan: its op and where each input comes from."""

    node: _Node
    #: Per input: ("value", name) computed at run time, ("buffer", attr) a float tensor on the
    #: module's device, ("static", tensor) a folded CPU tensor, or ("none", None).
    sources: tuple[tuple[str, Any], ...]
    #: Run-time values no later step reads, dropped after this step to bound peak memory.
    release: tuple[str, ...]


class OnnxTorchModule(torch.nn.Module):
    """One output of an ONNX graph as a torch module for a fixed input shape.

    Args:
        model: the ONNX model (one graph input).
        input_shape: the shape every call uses, e.g. (1, 3, 1024, 1024).
        output_index: which graph output to compute (rembg reads output 0); nodes that only feed
            other outputs are never run.

    Raises:
        ValueError: more than one graph input, or an unsupported operator or attribute.
    """

    def __init__(self, model: onnx.ModelProto, input_shape: Sequence[int], output_index: int = 0) -> None:
        super().__init__()
        graph = model.graph
        initializer_names = {init.name for init in graph.initializer}
        inputs = [value.name for value in graph.input if value.name not in initializer_names]
        if len(inputs) != 1:
            raise ValueError(f"onnx_torch: expected a graph with one input, got {inputs}")
        self.input_name = inputs[0]
        self.input_shape = tuple(int(d) for d in input_shape)
        self.output_name = graph.output[output_index].name
        nodes = [_decode(node) for node in _needed_nodes(graph, self.output_name)]
        _check_single_outputs(nodes, self.output_name)
        self._buffer_names: dict[str, str] = {}
        statics: dict[str, torch.Tensor] = {}
        used = {name for node in nodes for name in node.inputs}
        for init in graph.initializer:
            if init.name not in used:  # weights of pruned side outputs
                continue
            array = numpy_helper.to_array(init)
            if np.issubdtype(array.dtype, np.floating):
                self._add_buffer(init.name, torch.from_numpy(array.astype(np.float32)))
            else:
                statics[init.name] = torch.from_numpy(array.copy())
        self._steps = self._fold(nodes, statics)

    def _add_buffer(self, name: str, tensor: torch.Tensor) -> None:
        attr = f"w{len(self._buffer_names)}"
        self.register_buffer(attr, tensor)
        self._buffer_names[name] = attr

    def _fold(self, nodes: list[_Node], statics: dict[str, torch.Tensor]) -> tuple[_Step, ...]:
        """Evaluate shape-only values once (on meta tensors) and plan the remaining nodes."""
        meta: dict[str, torch.Tensor] = {self.input_name: torch.empty(self.input_shape, device="meta")}
        dynamic: list[_Node] = []
        for node in nodes:
            if node.op == "Constant":
                statics[node.outputs[0]] = _constant(node)
            elif node.op in SHAPE_OPS:
                source = meta.get(node.inputs[0], statics.get(node.inputs[0]))
                statics[node.outputs[0]] = _shape(node, source)
            elif all(not name or name in statics for name in node.inputs):
                statics[node.outputs[0]] = OPS[node.op]([statics[n] if n else None for n in node.inputs], node.attrs, None)
            else:
                args = [self._meta_input(name, meta, statics) for name in node.inputs]
                meta[node.outputs[0]] = OPS[node.op](args, node.attrs, torch.float32)
                dynamic.append(node)
        if self.output_name not in meta:
            raise ValueError(f"onnx_torch: output {self.output_name!r} does not depend on the input")
        return self._plan(dynamic, statics)

    def _meta_input(self, name: str, meta: dict[str, torch.Tensor], statics: dict[str, torch.Tensor]) -> Value:
        if not name:
            return None
        if name in meta:
            return meta[name]
        if name in self._buffer_names:
            return torch.empty_like(getattr(self, self._buffer_names[name]), device="meta")
        value = statics[name]
        return value.to("meta") if value.is_floating_point() else value

    def _plan(self, dynamic: list[_Node], statics: dict[str, torch.Tensor]) -> tuple[_Step, ...]:
        """Bind each dynamic node's inputs; float constants become buffers so ``.to()`` moves them."""
        last_use = {name: index for index, node in enumerate(dynamic) for name in node.inputs if name}
        steps = []
        for index, node in enumerate(dynamic):
            sources = []
            for name in node.inputs:
                if not name:
                    sources.append(("none", None))
                elif name in statics and statics[name].is_floating_point():
                    self._add_buffer(name, statics.pop(name).float())
                    sources.append(("buffer", self._buffer_names[name]))
                elif name in self._buffer_names:
                    sources.append(("buffer", self._buffer_names[name]))
                elif name in statics:
                    sources.append(("static", statics[name]))
                else:
                    sources.append(("value", name))
            release = tuple(
                name for kind, name in dict.fromkeys(sources)
                if kind == "value" and last_use[name] == index and name != self.output_name
            )
            steps.append(_Step(node, tuple(sources), release))
        return tuple(steps)

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype: that of the weights (float32 until ``.to(dtype)``)."""
        return next(iter(self.buffers()), torch.empty(0)).dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the graph on ``x`` of shape ``input_shape``; returns the output in the module's dtype."""
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"onnx_torch: expected input of shape {self.input_shape}, got {tuple(x.shape)}")
        dtype = self.dtype
        values: dict[str, torch.Tensor] = {self.input_name: x.to(dtype)}
        for step in self._steps:
            args = [
                values[ref] if kind == "value" else getattr(self, ref) if kind == "buffer" else ref
                for kind, ref in step.sources
            ]
            values[step.node.outputs[0]] = OPS[step.node.op](args, step.node.attrs, dtype)
            for name in step.release:
                del values[name]
        return values[self.output_name]
