"""onnxruntime's com.microsoft MatMulNBits (rewrites/matmul_nbits.py): one module holding a node per
packing — 2, 4 and 8 bits, no / packed uint8 / float zero points, K not a multiple of the block,
bias, rank-2 and rank-3 A with symbolic dims — run at several shapes against onnxruntime's CPU
kernel (at accuracy_level 0, its dequantize-then-multiply; the builder's level 4 lets it quantize A
to int8 first). What it cannot compute is refused naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule

# name: (K, N, bits, block_size, zero points: None | "packed" | "float", bias, rank of A)
NODES = {"int4_symmetric": (64, 48, 4, 32, None, False, 3),
         "int4_packed_zp_padded_k": (40, 24, 4, 16, "packed", True, 3),
         "int4_float_zp": (32, 16, 4, 32, "float", False, 2),
         "int8_packed_zp": (64, 16, 8, 32, "packed", False, 2),
         "int2_packed_zp": (48, 8, 2, 16, "packed", True, 3)}


def _packed(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes [..., m] packed low bits first: [..., m * bits / 8]."""
    per_byte = 8 // bits
    grouped = codes.reshape(*codes.shape[:-1], -1, per_byte).astype(np.uint8)
    return sum(grouped[..., j] << (j * bits) for j in range(per_byte)).astype(np.uint8)


def _node(name: str, k: int, n: int, bits: int, block: int, zero_points, bias: bool, rng, initializers):
    blocks = -(-k // block)
    codes = rng.integers(0, 2 ** bits, size=(n, blocks, block))
    tensors = {"B": _packed(codes, bits), "scales": rng.uniform(0.01, 0.1, (n, blocks)).astype(np.float32)}
    if zero_points == "packed":
        width = -(-blocks * bits // 8) * 8 // bits
        tensors["zp"] = _packed(np.pad(rng.integers(0, 2 ** bits, (n, blocks)), [(0, 0), (0, width - blocks)]), bits)
    elif zero_points == "float":
        tensors["zp"] = rng.uniform(0, 2 ** bits - 1, (n, blocks)).astype(np.float32)
    if bias:
        tensors["bias"] = rng.normal(size=n).astype(np.float32)
    initializers += [numpy_helper.from_array(value, f"{name}_{key}") for key, value in tensors.items()]
    inputs = [f"{name}_A", f"{name}_B", f"{name}_scales", f"{name}_zp" if zero_points else "",
              "", f"{name}_bias" if bias else ""]
    while not inputs[-1]:
        inputs.pop()
    return helper.make_node("MatMulNBits", inputs, [f"{name}_Y"], name=name, domain="com.microsoft", K=k, N=n,
                            bits=bits, block_size=block, accuracy_level=0)


def nbits_model(nodes: dict, g_idx: np.ndarray | None = None) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    graph_nodes, initializers, inputs, outputs = [], [], [], []
    for name, (k, n, bits, block, zero_points, bias, rank) in nodes.items():
        node = _node(name, k, n, bits, block, zero_points, bias, rng, initializers)
        if g_idx is not None:
            initializers.append(numpy_helper.from_array(g_idx, f"{name}_g_idx"))
            node.input[3:] = [node.input[3] if len(node.input) > 3 else "", f"{name}_g_idx"]
        graph_nodes.append(node)
        leading = ["batch", "seq"][:rank - 1]
        inputs.append(helper.make_tensor_value_info(f"{name}_A", TensorProto.FLOAT, [*leading, k]))
        outputs.append(helper.make_tensor_value_info(f"{name}_Y", TensorProto.FLOAT, [*leading, n]))
    graph = helper.make_graph(graph_nodes, "nbits", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])


def test_one_module_matches_onnxruntime_at_every_shape():
    model = nbits_model(NODES)
    module = CompiledModule(compile_model(model).vmfb)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch, seq in ((1, 1), (2, 5), (3, 17)):
        feeds = {value.name: rng.normal(size=[batch, seq][:len(value.type.tensor_type.shape.dim) - 1]
                                        + [value.type.tensor_type.shape.dim[-1].dim_value]).astype(np.float32)
                 for value in model.graph.input}
        got = module.run(feeds)
        for (output, value), expected in zip(got.items(), session.run(None, feeds), strict=True):
            assert value.shape == expected.shape, output
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5, err_msg=f"{output} at {batch}x{seq}")


@pytest.mark.parametrize("change, message", [
    (dict(bits=3), "bits=3 .* is not supported yet"),
    (dict(g_idx=np.arange(64)[::-1] // 32), "a g_idx that reorders the blocks .* is not supported yet"),
    (dict(block_size=24), "block_size must be a power of 2"),
])
def test_what_it_cannot_compute_is_refused_naming_the_node(change, message):
    g_idx = change.pop("g_idx", None)
    model = nbits_model({"int4_symmetric": NODES["int4_symmetric"]}, g_idx=None if g_idx is None
                        else g_idx.astype(np.int32))
    for key, value in change.items():
        attribute = next(a for a in model.graph.node[0].attribute if a.name == key)
        attribute.i = value
    with pytest.raises(KvattnError, match=f"MatMulNBits node 'int4_symmetric': {message}"):
        compile_model(model)
