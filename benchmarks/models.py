"""The benchmark models (fp32, 32 query heads, 8 KV heads, head size 128, batch 1 unless given),
built with onnx.helper, and random inputs for them."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Q_HEADS, KV_HEADS, HEAD_SIZE = 32, 8, 128
F8 = np.dtype(ml_dtypes.float8_e4m3fn)
ELEMENT = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8,
           F8: TensorProto.FLOAT8E4M3FN, np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}


def decode_model(capacity: int, batch: int = 1) -> onnx.ModelProto:
    """Two TensorScatter cache updates + Attention-24 with nonpad_kv_seqlen, one new token."""
    # Imported here: the demo needs IREE's compiler, which the GPU run's machine lacks (it only
    # draws these inputs there).
    from kvattn.runtime.demo import decode_step_model

    return decode_step_model(batch=batch, q_heads=Q_HEADS, kv_heads=KV_HEADS, head_size=HEAD_SIZE, capacity=capacity)


def decode_inputs(capacity: int, valid: int, rng, batch: int = 1) -> dict[str, np.ndarray]:
    """Inputs for a step that writes token `valid - 1` and attends over `valid` tokens (every row)."""
    normal = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    return {
        "query": normal(batch, Q_HEADS, 1, HEAD_SIZE),
        "new_key": normal(batch, KV_HEADS, 1, HEAD_SIZE), "new_value": normal(batch, KV_HEADS, 1, HEAD_SIZE),
        "past_key": normal(batch, KV_HEADS, capacity, HEAD_SIZE),
        "past_value": normal(batch, KV_HEADS, capacity, HEAD_SIZE),
        "write_indices": np.full(batch, valid - 1, np.int64), "nonpad_kv_seqlen": np.full(batch, valid, np.int64),
    }


def quantized_caches(inputs: dict[str, np.ndarray], dtype, rng) -> dict[str, np.ndarray]:
    """`inputs` of decode_inputs with past_key / past_value as `dtype` caches (int8: random values
    in [-100, 100); float8: the float values rounded), for quantized_decode_model."""
    dtype = np.dtype(dtype)
    quantized = dict(inputs)
    for name in ("past_key", "past_value"):
        values = rng.integers(-100, 100, inputs[name].shape) if dtype == np.int8 else inputs[name]
        quantized[name] = values.astype(dtype)
    return quantized


def cache_update_model(capacity: int) -> onnx.ModelProto:
    """The decode step's two TensorScatter cache updates alone (one new row per cache)."""
    tensor = helper.make_tensor_value_info
    cache, new_rows = (1, KV_HEADS, capacity, HEAD_SIZE), (1, KV_HEADS, 1, HEAD_SIZE)
    nodes = [helper.make_node("TensorScatter", [f"past_{kind}", f"new_{kind}", "write_indices"], [f"present_{kind}"],
                              axis=2) for kind in ("key", "value")]
    graph = helper.make_graph(
        nodes, "cache_update",
        [tensor("new_key", TensorProto.FLOAT, new_rows), tensor("new_value", TensorProto.FLOAT, new_rows),
         tensor("past_key", TensorProto.FLOAT, cache), tensor("past_value", TensorProto.FLOAT, cache),
         tensor("write_indices", TensorProto.INT64, (1,))],
        [tensor("present_key", TensorProto.FLOAT, cache), tensor("present_value", TensorProto.FLOAT, cache)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])


def decode_attention_model(capacity: int, batch: int = 1) -> onnx.ModelProto:
    """The decode step without its cache updates: Attention-24 over the caches with
    nonpad_kv_seqlen (what stock IREE can compile: it has no TensorScatter)."""
    tensor = helper.make_tensor_value_info
    cache = (batch, KV_HEADS, capacity, HEAD_SIZE)
    node = helper.make_node("Attention", ["query", "past_key", "past_value", "", "", "", "nonpad_kv_seqlen"],
                            ["output"], is_causal=1)
    graph = helper.make_graph(
        [node], "decode_attention",
        [tensor("query", TensorProto.FLOAT, (batch, Q_HEADS, 1, HEAD_SIZE)),
         tensor("past_key", TensorProto.FLOAT, cache), tensor("past_value", TensorProto.FLOAT, cache),
         tensor("nonpad_kv_seqlen", TensorProto.INT64, (batch,))],
        [tensor("output", TensorProto.FLOAT, (batch, Q_HEADS, 1, HEAD_SIZE))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])


def group_query_attention_model(capacity: int, batch: int = 1) -> onnx.ModelProto:
    """onnxruntime's GroupQueryAttention contrib op for the same decode step; with its present
    caches bound to the past buffers (IO binding) it updates them in place."""
    tensor = helper.make_tensor_value_info
    cache = (batch, KV_HEADS, capacity, HEAD_SIZE)
    node = helper.make_node(
        "GroupQueryAttention",
        ["query", "new_key", "new_value", "past_key", "past_value", "seqlens_k", "total_sequence_length"],
        ["output", "present_key", "present_value"], domain="com.microsoft", num_heads=Q_HEADS, kv_num_heads=KV_HEADS)
    graph = helper.make_graph(
        [node], "gqa_decode",
        [tensor("query", TensorProto.FLOAT, (batch, 1, Q_HEADS * HEAD_SIZE)),
         tensor("new_key", TensorProto.FLOAT, (batch, 1, KV_HEADS * HEAD_SIZE)),
         tensor("new_value", TensorProto.FLOAT, (batch, 1, KV_HEADS * HEAD_SIZE)),
         tensor("past_key", TensorProto.FLOAT, cache), tensor("past_value", TensorProto.FLOAT, cache),
         tensor("seqlens_k", TensorProto.INT32, (batch,)), tensor("total_sequence_length", TensorProto.INT32, ())],
        [tensor("output", TensorProto.FLOAT, (batch, 1, Q_HEADS * HEAD_SIZE)),
         tensor("present_key", TensorProto.FLOAT, cache), tensor("present_value", TensorProto.FLOAT, cache)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24), helper.make_opsetid("com.microsoft", 1)])


def prefill_model(length: int) -> onnx.ModelProto:
    """Causal Attention-23 over a prompt of `length` tokens, GQA 32/8."""
    q = helper.make_tensor_value_info("query", TensorProto.FLOAT, [1, Q_HEADS, length, HEAD_SIZE])
    k = helper.make_tensor_value_info("key", TensorProto.FLOAT, [1, KV_HEADS, length, HEAD_SIZE])
    v = helper.make_tensor_value_info("value", TensorProto.FLOAT, [1, KV_HEADS, length, HEAD_SIZE])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, Q_HEADS, length, HEAD_SIZE])
    node = helper.make_node("Attention", ["query", "key", "value"], ["output"], name="prefill_attention", is_causal=1)
    graph = helper.make_graph([node], "prefill", [q, k, v], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def prefill_inputs(length: int, rng) -> dict[str, np.ndarray]:
    return {"query": rng.standard_normal((1, Q_HEADS, length, HEAD_SIZE), dtype=np.float32),
            "key": rng.standard_normal((1, KV_HEADS, length, HEAD_SIZE), dtype=np.float32),
            "value": rng.standard_normal((1, KV_HEADS, length, HEAD_SIZE), dtype=np.float32)}


def quantization_parameters(name: str, dtype, per_axis: int | None, base: float) -> list[onnx.TensorProto]:
    """Initializers <name>_scale and <name>_zero: per-tensor, or per-axis with `per_axis` entries."""
    dtype = np.dtype(dtype)
    count = per_axis or 1
    scale = (base * (1 + 0.25 * np.arange(count))).astype(np.float32).reshape((count,) if per_axis else ())
    zero = np.zeros(scale.shape, dtype)
    if dtype == np.int8:
        zero += 3
    elif dtype == np.uint8:
        zero += 128
    return [numpy_helper.from_array(scale, f"{name}_scale"), numpy_helper.from_array(zero, f"{name}_zero")]


def quantized_decode_model(dtype, batch: int = 1, q_heads: int = Q_HEADS, kv_heads: int = KV_HEADS,
                           head_size: int = HEAD_SIZE, capacity: int = 4096) -> onnx.ModelProto:
    """One decode step over quantized KV caches: QuantizeLinear the new rows, TensorScatter them
    into the int8/fp8 caches, DequantizeLinear the present caches into Attention-24."""
    dtype = np.dtype(dtype)
    nodes, inits = [], []
    for kind in ("key", "value"):
        inits += quantization_parameters(kind, dtype, None, 0.03)
        nodes += [
            helper.make_node("QuantizeLinear", [f"new_{kind}", f"{kind}_scale", f"{kind}_zero"], [f"new_{kind}_q"]),
            helper.make_node("TensorScatter", [f"past_{kind}", f"new_{kind}_q", "write_indices"], [f"present_{kind}"],
                             axis=2),
            helper.make_node("DequantizeLinear", [f"present_{kind}", f"{kind}_scale", f"{kind}_zero"], [f"{kind}_f"]),
        ]
    nodes.append(helper.make_node("Attention", ["query", "key_f", "value_f", "", "", "", "nonpad_kv_seqlen"],
                                  ["output"], name="decode", is_causal=1))
    cache = (batch, kv_heads, capacity, head_size)
    tensor = helper.make_tensor_value_info
    new_rows = (batch, kv_heads, 1, head_size)
    graph = helper.make_graph(
        nodes, "quantized_cache_decode",
        [tensor("query", TensorProto.FLOAT, (batch, q_heads, 1, head_size)),
         tensor("new_key", TensorProto.FLOAT, new_rows), tensor("new_value", TensorProto.FLOAT, new_rows),
         tensor("past_key", ELEMENT[dtype], cache), tensor("past_value", ELEMENT[dtype], cache),
         tensor("write_indices", TensorProto.INT64, (batch,)), tensor("nonpad_kv_seqlen", TensorProto.INT64, (batch,))],
        [tensor("output", TensorProto.FLOAT, (batch, q_heads, 1, head_size)),
         tensor("present_key", ELEMENT[dtype], cache), tensor("present_value", ELEMENT[dtype], cache)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])
    onnx.checker.check_model(model, full_check=True)
    return model
