"""A small convolutional ONNX graph run by PyTorch: CenterFace on the GPU, which OpenCV's pip wheels cannot do.

`graph_from_onnx` reads the file with the onnx package into plain data (nodes in order, their attributes, the
initialisers as tensors); `OnnxGraph` executes that list. Only the ops such detectors are made of are known;
anything else is refused rather than mis-run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OPS = ("Conv", "ConvTranspose", "BatchNormalization", "Relu", "Add", "Sigmoid")


def graph_from_onnx(data: bytes) -> dict:
    """{"input": name, "outputs": [names], "nodes": [{op, inputs, outputs, attrs}], "tensors": {name: tensor}}."""
    import onnx
    from onnx import helper, numpy_helper

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ValueError(f"not an ONNX model ({type(exc).__name__})") from None
    graph = model.graph
    if not graph.node:  # protobuf parses many byte strings into an empty message
        raise ValueError("not an ONNX model (no graph)")
    tensors = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in tensors]
    if len(inputs) != 1:
        raise ValueError(f"expected one input, found {len(inputs)}")
    nodes = []
    for node in graph.node:
        if node.op_type not in OPS:
            raise ValueError(f"op {node.op_type} is not supported (known: {', '.join(OPS)})")
        attrs = {}
        for attribute in node.attribute:
            value = helper.get_attribute_value(attribute)
            attrs[attribute.name] = value.decode() if isinstance(value, bytes) else value
        if attrs.get("auto_pad", "NOTSET") != "NOTSET":
            raise ValueError(f"{node.op_type} with auto_pad={attrs['auto_pad']} is not supported")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if node.op_type == "ConvTranspose" and pads[:2] != pads[2:]:
            raise ValueError("ConvTranspose with uneven padding is not supported")
        nodes.append({"op": node.op_type, "inputs": list(node.input), "outputs": list(node.output), "attrs": attrs})
    return {"input": inputs[0], "outputs": [o.name for o in graph.output], "nodes": nodes, "tensors": tensors}


class OnnxGraph(nn.Module):
    def __init__(self, graph: dict):
        super().__init__()
        self.input, self.outputs, self.nodes = graph["input"], list(graph["outputs"]), list(graph["nodes"])
        # Buffers, not a dict of tensors, so that .to(device) moves them with the module.
        self._buffer_of = {}
        for i, (name, tensor) in enumerate(graph["tensors"].items()):
            self.register_buffer(f"t{i}", tensor.float() if tensor.is_floating_point() else tensor)
            self._buffer_of[name] = f"t{i}"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = {self.input: x}
        for node in self.nodes:
            args = [values[n] if n in values else getattr(self, self._buffer_of[n]) for n in node["inputs"] if n]
            values[node["outputs"][0]] = _run(node["op"], args, node["attrs"])
        return tuple(values[name] for name in self.outputs)


def _run(op: str, args: list[torch.Tensor], attrs: dict) -> torch.Tensor:
    if op == "Relu":
        return F.relu(args[0])
    if op == "Sigmoid":
        return torch.sigmoid(args[0])
    if op == "Add":
        return args[0] + args[1]
    if op == "BatchNormalization":
        x, scale, bias, mean, var = args
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, attrs.get("epsilon", 1e-5))
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:  # Conv only (checked on reading): torch's padding= is symmetric, ONNX's need not be
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0, 0, 0]
    common = {"stride": list(attrs.get("strides", [1, 1])), "padding": pads[:2],
              "dilation": list(attrs.get("dilations", [1, 1])), "groups": attrs.get("group", 1)}
    if op == "Conv":
        return F.conv2d(x, weight, bias, **common)
    return F.conv_transpose2d(x, weight, bias, output_padding=list(attrs.get("output_padding", [0, 0])), **common)
