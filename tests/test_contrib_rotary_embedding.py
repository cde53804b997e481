"""onnxruntime's com.microsoft RotaryEmbedding (rewrites/contrib_rotary_embedding.py): one module
holding a node per form — 3-D with num_heads, 3-D with the heads told by the cos cache, 4-D,
position_ids as one offset, partial interleaved rotary — with symbolic batch and sequence dims,
run at several shapes against onnxruntime's CPU kernel; a model at opset 17 is converted first.
Packed batching is refused naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule

HEADS, HEAD, POSITIONS = 2, 8, 32
# name: (input dims, position_ids: "rows" [batch, seq] | "offset" [1], attributes, rotary dim)
NODES = {"hidden_num_heads": (["batch", "seq", HEADS * HEAD], "rows", dict(num_heads=HEADS), HEAD),
         "hidden_heads_from_cache": (["batch", "seq", HEADS * HEAD], "rows", {}, HEAD),
         "bnsh": (["batch", HEADS, "seq", HEAD], "rows", dict(interleaved=1), HEAD),
         "offset": (["batch", "seq", HEADS * HEAD], "offset", dict(num_heads=HEADS), HEAD),
         "partial_interleaved": (["batch", "seq", HEADS * HEAD], "rows",
                                 dict(num_heads=HEADS, interleaved=1, rotary_embedding_dim=HEAD // 2), HEAD // 2)}


def rotary_model(nodes: dict, opset: int = 23, **extra) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    graph_nodes, initializers, inputs, outputs = [], [], [], []
    for name, (dims, positions, attrs, rotary) in nodes.items():
        for part in ("cos", "sin"):
            initializers.append(numpy_helper.from_array(rng.normal(size=(POSITIONS, rotary // 2)).astype(np.float32),
                                                        f"{name}_{part}"))
        inputs += [helper.make_tensor_value_info(f"{name}_x", TensorProto.FLOAT, dims),
                   helper.make_tensor_value_info(f"{name}_pos", TensorProto.INT64,
                                                 ["batch", "seq"] if positions == "rows" else [1])]
        outputs.append(helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, dims))
        graph_nodes.append(helper.make_node("RotaryEmbedding", [f"{name}_x", f"{name}_pos", f"{name}_cos",
                                                                f"{name}_sin"], [f"{name}_y"], name=name,
                                            domain="com.microsoft", **attrs, **extra))
    graph = helper.make_graph(graph_nodes, "rotary", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid("com.microsoft", 1)])


def _feeds(model: onnx.ModelProto, batch: int, seq: int, rng) -> dict:
    feeds = {}
    for value in model.graph.input:
        dims = [batch if d.dim_param == "batch" else seq if d.dim_param == "seq" else d.dim_value
                for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = (rng.integers(0, POSITIONS - seq, dims) if value.name.endswith("_pos")
                             else rng.normal(size=dims).astype(np.float32))
    return feeds


@pytest.mark.parametrize("opset", [23, 17])
def test_one_module_matches_onnxruntime_at_every_shape(opset):
    model = rotary_model(NODES, opset)
    module = CompiledModule(compile_model(model).vmfb)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch, seq in ((1, 1), (2, 5), (3, 12)):
        feeds = _feeds(model, batch, seq, rng)
        for (output, value), expected in zip(module.run(feeds).items(), session.run(None, feeds), strict=True):
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5, err_msg=f"{output} at {batch}x{seq}")


def test_packed_batching_is_refused_naming_the_node():
    with pytest.raises(KvattnError, match="RotaryEmbedding node 'bnsh': packed batching .* is not supported yet"):
        compile_model(rotary_model({"bnsh": NODES["bnsh"]}, is_packed_batching=1))
