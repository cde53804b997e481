"""Quantized attention benchmarks, side by side in one run (ratios, not asserts):

  decode  capacity 4096 with 1025 and 4000 valid tokens, capacity 16384 with 16000, 32/8 heads,
          head 128: kvattn int8 and float8 KV caches vs kvattn's fp32 cache, and onnxruntime on
          the same Q/DQ graph; median (min, p90)
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

from benchmarks import decode_speed, models
from benchmarks.timing import machine, median_ms


def kvattn_ms(model, inputs, repeats: int) -> float:
    return decode_speed.kvattn_ms(model, inputs, repeats).median


def onnxruntime_ms(model, inputs, repeats: int) -> float:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3  # TensorScatter warns on every copy
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
    shapes, length = ([(256, 65), (256, 250)], 64) if args.quick else ([(4096, 1025), (4096, 4000), (16384, 16000)], 512)
    rng = np.random.default_rng(0)
    print(f"# {datetime.date.today()}, {machine()}, prefill {length}")
    for capacity, valid in shapes:
        fp32_inputs = models.decode_inputs(capacity, valid, rng)
        caches = {"fp32": (models.decode_model(capacity), fp32_inputs)}
        for label, dtype in (("int8", np.int8), ("float8e4m3fn", models.F8)):
            caches[label] = (models.quantized_decode_model(dtype, capacity=capacity),
                             models.quantized_caches(fp32_inputs, dtype, rng))
        times = {label: decode_speed.kvattn_ms(model, inputs, args.repeats) for label, (model, inputs) in caches.items()}
        peer = {label: onnxruntime_ms(*caches[label], args.repeats) for label in ("fp32", "int8")}
        print(f"decode capacity {capacity}, {valid} valid:")
        for label, spread in times.items():
            print(f"  {label:<13} cache, kvattn {spread}   {times['fp32'].median / spread.median:5.2f}x the fp32 cache"
                  + (f"   onnxruntime {peer[label]:8.3f} ms" if label in peer else ""))
    rows = {}
    prefill_inputs = models.prefill_inputs(length, rng)
    int8_prefill = {f"{k}_q": rng.integers(-100, 100, v.shape).astype(np.int8) for k, v in prefill_inputs.items()}
    prefill_repeats = max(2, args.repeats // 5)
    rows["prefill fp32, kvattn"] = kvattn_ms(models.prefill_model(length), prefill_inputs, prefill_repeats)
    rows["prefill int8 Q/K/V + int8 out, kvattn"] = kvattn_ms(quantized_prefill_model(length), int8_prefill,
                                                              prefill_repeats)
    rows["prefill int8 Q/DQ graph, onnxruntime"] = onnxruntime_ms(quantized_prefill_model(length), int8_prefill,
                                                                  prefill_repeats)
    for name, ms in rows.items():
        print(f"{name:<46} {ms:10.3f} ms")
    print(f"int8 vs fp32 prefill (kvattn):            "
          f"{rows['prefill fp32, kvattn'] / rows['prefill int8 Q/K/V + int8 out, kvattn']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
