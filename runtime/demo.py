"""`kvattn demo`: a decode step built in memory, compiled, run step by step, checked.

The model: two TensorScatter (linear) write this step's K/V rows into fixed-capacity caches at
per-batch positions, then Attention-24 (GQA 8 query heads over 2 KV heads, causal, with
nonpad_kv_seqlen) reads the updated caches. A DecodeSession keeps the caches on the device and
the module updates them in place; onnx.reference runs the same steps on host copies.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from kvattn.runtime import inspect
from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule
from kvattn.runtime.session import DecodeSession

BATCH, Q_HEADS, KV_HEADS, HEAD_SIZE, CAPACITY = 2, 8, 2, 16, 32
TOLERANCE = 1e-4


def decode_step_model(batch: int = BATCH, q_heads: int = Q_HEADS, kv_heads: int = KV_HEADS,
                      head_size: int = HEAD_SIZE, capacity: int = CAPACITY) -> onnx.ModelProto:
    """One decode step over fixed-capacity caches (the demo's shapes by default)."""
    def tensor(name, elem, shape):
        return helper.make_tensor_value_info(name, elem, shape)

    cache = [batch, kv_heads, capacity, head_size]
    new_rows = [batch, kv_heads, 1, head_size]
    nodes = [
        helper.make_node("TensorScatter", ["past_key", "new_key", "write_indices"], ["present_key"],
                         name="update_key_cache", mode="linear", axis=2),
        helper.make_node("TensorScatter", ["past_value", "new_value", "write_indices"], ["present_value"],
                         name="update_value_cache", mode="linear", axis=2),
        helper.make_node("Attention", ["query", "present_key", "present_value", "", "", "", "nonpad_kv_seqlen"],
                         ["output"], name="decode_attention", is_causal=1),
    ]
    graph = helper.make_graph(
        nodes, "decode_step",
        [tensor("query", TensorProto.FLOAT, [batch, q_heads, 1, head_size]),
         tensor("new_key", TensorProto.FLOAT, new_rows), tensor("new_value", TensorProto.FLOAT, new_rows),
         tensor("past_key", TensorProto.FLOAT, cache), tensor("past_value", TensorProto.FLOAT, cache),
         tensor("write_indices", TensorProto.INT64, [batch]), tensor("nonpad_kv_seqlen", TensorProto.INT64, [batch])],
        [tensor("output", TensorProto.FLOAT, [batch, q_heads, 1, head_size]),
         tensor("present_key", TensorProto.FLOAT, cache), tensor("present_value", TensorProto.FLOAT, cache)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])
    onnx.checker.check_model(model, full_check=True)
    return model


def main(steps: int = 8) -> int:
    model = decode_step_model()
    started = time.perf_counter()
    module = CompiledModule(compile_model(model).vmfb)
    print(f"compiled decode_step for llvm-cpu in {time.perf_counter() - started:.1f} s")
    reference = ReferenceEvaluator(model)
    rng = np.random.default_rng(0)
    lengths = np.array([3, 7], dtype=np.int64)  # tokens already in each sequence's cache
    key_cache = np.zeros((BATCH, KV_HEADS, CAPACITY, HEAD_SIZE), np.float32)
    value_cache = np.zeros_like(key_cache)
    for b, length in enumerate(lengths):
        key_cache[b, :, :length] = rng.standard_normal((KV_HEADS, length, HEAD_SIZE))
        value_cache[b, :, :length] = rng.standard_normal((KV_HEADS, length, HEAD_SIZE))
    session = DecodeSession(module, {"past_key": key_cache, "past_value": value_cache})
    worst = 0.0
    for step in range(steps):
        step_inputs = {
            "query": rng.standard_normal((BATCH, Q_HEADS, 1, HEAD_SIZE), dtype=np.float32),
            "new_key": rng.standard_normal((BATCH, KV_HEADS, 1, HEAD_SIZE), dtype=np.float32),
            "new_value": rng.standard_normal((BATCH, KV_HEADS, 1, HEAD_SIZE), dtype=np.float32),
            "write_indices": lengths, "nonpad_kv_seqlen": lengths + 1,
        }
        got = session.step(step_inputs)
        expected = dict(zip(module.output_names, reference.run(
            None, {**step_inputs, "past_key": key_cache, "past_value": value_cache})))
        key_cache, value_cache = expected["present_key"], expected["present_value"]
        error = float(np.max(np.abs(got["output"] - expected["output"])))
        worst = max(worst, error)
        print(f"step {step}: lengths {lengths.tolist()} -> {(lengths + 1).tolist()}, max |error| output {error:.1e}")
        lengths = lengths + 1
    device_caches = session.caches()
    for name, expected_cache in (("past_key", key_cache), ("past_value", value_cache)):
        error = float(np.max(np.abs(device_caches[name] - expected_cache)))
        worst = max(worst, error)
        print(f"{name} cache after {steps} steps (kept on the device): max |error| {error:.1e}")
    print()
    print(inspect.summary(model))
    ok = worst <= TOLERANCE
    print(f"\n{'PASS' if ok else 'FAIL'}: {steps} decode steps match onnx.reference "
          f"(max |error| {worst:.1e}, tolerance {TOLERANCE:.0e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
