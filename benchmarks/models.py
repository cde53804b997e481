"""The benchmark models (fp32, batch 1, 32 query heads, 8 KV heads, head size 128), built with
onnx.helper, and random inputs for them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from kvattn.runtime.demo import decode_step_model

Q_HEADS, KV_HEADS, HEAD_SIZE = 32, 8, 128


def decode_model(capacity: int) -> onnx.ModelProto:
    """Two TensorScatter cache updates + Attention-24 with nonpad_kv_seqlen, one new token."""
    return decode_step_model(batch=1, q_heads=Q_HEADS, kv_heads=KV_HEADS, head_size=HEAD_SIZE, capacity=capacity)


def decode_inputs(capacity: int, valid: int, rng) -> dict[str, np.ndarray]:
    """Inputs for a step that writes token `valid - 1` and attends over `valid` tokens."""
    normal = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    return {
        "query": normal(1, Q_HEADS, 1, HEAD_SIZE),
        "new_key": normal(1, KV_HEADS, 1, HEAD_SIZE), "new_value": normal(1, KV_HEADS, 1, HEAD_SIZE),
        "past_key": normal(1, KV_HEADS, capacity, HEAD_SIZE), "past_value": normal(1, KV_HEADS, capacity, HEAD_SIZE),
        "write_indices": np.array([valid - 1], np.int64), "nonpad_kv_seqlen": np.array([valid], np.int64),
    }


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
