"""Quantized attention benchmarks, side by side in one run (ratios, not asserts):

  decode  capacity 4096, 1025 valid tokens, 32/8 heads, head 128:
          kvattn int8 KV cache vs kvattn fp32 cache, and onnxruntime on the same Q/DQ graph
  prefill 512 tokens causal: kvattn with int8 Q/K/V and int8 output vs the fp32 graph

    python -m benchmarks.qdq_decode [--repeats 20] [--quick]

kvattn is timed on device-resident inputs (the call itself); onnxruntime through
InferenceSession.run with numpy inputs, its usual API.
"""

from __future__ import annotations

import argparse
import datetime
import sys

import numpy as np
import onnxruntime
from onnx import TensorProto, helper

from benchmarks import models
from benchmarks.timing import machine, median_ms
from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule


def kvattn_ms(model, inputs, repeats: int) -> float:
    module = CompiledModule(compile_model(model).vmfb)
    views = module.upload(inputs)
    return median_ms(lambda: module.invoke(views), repeats)


def onnxruntime_ms(model, inputs, repeats: int) -> float:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return median_ms(lambda: session.run(None, inputs), repeats)


def quantized_prefill_model(length: int):
    """Causal prefill with int8 Q/K/V dequantized into Attention and its output quantized."""
    nodes, inits, inputs = [], [], []
    for name, heads in (("query", models.Q_HEADS), ("key", models.KV_HEADS), ("value", models.KV_HEADS)):
        inits += models.quantization_parameters(name, np.int8, None, 0.02)
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zero"], [name]))
        inputs.append(helper.make_tensor_value_info(f"{name}_q", TensorProto.INT8, [1, heads, length, models.HEAD_SIZE]))
    inits += models.quantization_parameters("output", np.int8, None, 0.01)
    nodes += [helper.make_node("Attention", ["query", "key", "value"], ["output_f"], is_causal=1),
              helper.make_node("QuantizeLinear", ["output_f", "output_scale", "output_zero"], ["output"])]
    output = helper.make_tensor_value_info("output", TensorProto.INT8, [1, models.Q_HEADS, length, models.HEAD_SIZE])
    return helper.make_model(helper.make_graph(nodes, "quantized_prefill", inputs, [output], inits),
                             opset_imports=[helper.make_opsetid("", 24)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small shapes, for a dry run")
    args = parser.parse_args(argv)
    capacity, valid, length = (256, 65, 64) if args.quick else (4096, 1025, 512)
    rng = np.random.default_rng(0)
    fp32_inputs = models.decode_inputs(capacity, valid, rng)
    int8_inputs = dict(fp32_inputs)
    for name in ("past_key", "past_value"):
        int8_inputs[name] = rng.integers(-100, 100, fp32_inputs[name].shape).astype(np.int8)
    fp32_decode, int8_decode = models.decode_model(capacity), models.quantized_decode_model(np.int8, capacity=capacity)
    rows = {
        "decode fp32 cache, kvattn": kvattn_ms(fp32_decode, fp32_inputs, args.repeats),
        "decode int8 cache, kvattn": kvattn_ms(int8_decode, int8_inputs, args.repeats),
        "decode fp32 cache, onnxruntime": onnxruntime_ms(fp32_decode, fp32_inputs, args.repeats),
        "decode int8 cache (Q/DQ graph), onnxruntime": onnxruntime_ms(int8_decode, int8_inputs, args.repeats),
    }
    prefill_inputs = models.prefill_inputs(length, rng)
    int8_prefill = {f"{k}_q": rng.integers(-100, 100, v.shape).astype(np.int8) for k, v in prefill_inputs.items()}
    prefill_repeats = max(2, args.repeats // 5)
    rows["prefill fp32, kvattn"] = kvattn_ms(models.prefill_model(length), prefill_inputs, prefill_repeats)
    rows["prefill int8 Q/K/V + int8 out, kvattn"] = kvattn_ms(quantized_prefill_model(length), int8_prefill,
                                                              prefill_repeats)
    rows["prefill int8 Q/DQ graph, onnxruntime"] = onnxruntime_ms(quantized_prefill_model(length), int8_prefill,
                                                                  prefill_repeats)
    print(f"# {datetime.date.today()}, {machine()}, "
          f"capacity {capacity}, {valid} valid, prefill {length}")
    for name, ms in rows.items():
        print(f"{name:<46} {ms:10.3f} ms")
    print(f"int8 cache vs fp32 cache (kvattn):        {rows['decode fp32 cache, kvattn'] / rows['decode int8 cache, kvattn']:.2f}x")
    print(f"kvattn int8 vs onnxruntime int8 (decode): "
          f"{rows['decode int8 cache (Q/DQ graph), onnxruntime'] / rows['decode int8 cache, kvattn']:.2f}x")
    print(f"int8 vs fp32 prefill (kvattn):            "
          f"{rows['prefill fp32, kvattn'] / rows['prefill int8 Q/K/V + int8 out, kvattn']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
