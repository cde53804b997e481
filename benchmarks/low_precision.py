"""fp16/bf16 attention: the reference-rounding route against softmax_precision=1 (f32 inside), and
onnxruntime, side by side in one run (ratios, not asserts). 32/8 heads, head 128:

  decode   one query over 1025 keys (plain Attention, no cache update)
  prefill  512 tokens, causal

kvattn takes the unfused route that rounds like the ONNX reference when softmax_precision is
absent (ONNX then computes the softmax in fp16/bf16), and computes in f32 with
softmax_precision=1 (FLOAT): on llvm-cpu at these sizes the materialized scores, else the fused
op. onnxruntime runs the model without softmax_precision.

    python -m benchmarks.low_precision [--repeats 20] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import sys

import ml_dtypes
import numpy as np
from onnx import TensorProto, helper

from benchmarks import models
from benchmarks.qdq_decode import kvattn_ms, onnxruntime_ms
from benchmarks.timing import machine

ELEMENTS = {"fp16": (np.float16, TensorProto.FLOAT16), "bf16": (ml_dtypes.bfloat16, TensorProto.BFLOAT16)}


def attention_model(element: int, query_len: int, key_len: int, causal: bool, softmax_precision: int | None):
    shapes = {"query": (models.Q_HEADS, query_len), "key": (models.KV_HEADS, key_len),
              "value": (models.KV_HEADS, key_len)}
    inputs = [helper.make_tensor_value_info(name, element, [1, heads, length, models.HEAD_SIZE])
              for name, (heads, length) in shapes.items()]
    output = helper.make_tensor_value_info("output", element, [1, models.Q_HEADS, query_len, models.HEAD_SIZE])
    attributes = {"is_causal": int(causal)}
    if softmax_precision is not None:
        attributes["softmax_precision"] = softmax_precision
    node = helper.make_node("Attention", list(shapes), ["output"], name="attention", **attributes)
    return helper.make_model(helper.make_graph([node], "low_precision_attention", inputs, [output]),
                             opset_imports=[helper.make_opsetid("", 23)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small shapes, for a dry run")
    args = parser.parse_args(argv)
    keys, length = (65, 64) if args.quick else (1025, 512)
    rng = np.random.default_rng(0)
    print(f"# {datetime.date.today()}, {machine()}, decode over {keys} keys, prefill {length}")
    for label, (dtype, element) in ELEMENTS.items():
        for shape_name, query_len, key_len, causal, repeats in (
                ("decode", 1, keys, False, args.repeats), ("prefill", length, length, True, max(2, args.repeats // 5))):
            inputs = {name: rng.standard_normal((1, heads, n, models.HEAD_SIZE)).astype(dtype)
                      for name, heads, n in (("query", models.Q_HEADS, query_len), ("key", models.KV_HEADS, key_len),
                                             ("value", models.KV_HEADS, key_len))}
            reference_route = kvattn_ms(attention_model(element, query_len, key_len, causal, None), inputs, repeats)
            fused = kvattn_ms(attention_model(element, query_len, key_len, causal, 1), inputs, repeats)
            try:
                baseline_ms = onnxruntime_ms(attention_model(element, query_len, key_len, causal, None), inputs, repeats)
                baseline = f"{baseline_ms:.3f} ms"
            except Exception as exc:  # onnxruntime has no kernel for some element types
                baseline = f"n/a ({str(exc).splitlines()[0][:60]})"
            print(f"{label} {shape_name:<8} kvattn reference rounding {reference_route:9.3f} ms   "
                  f"kvattn softmax_precision=1 {fused:9.3f} ms   ratio {reference_route / fused:5.2f}   onnxruntime {baseline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
