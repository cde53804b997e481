"""Dynamic-shape models against the same models made static, in one run: does speed survive
symbolic dims? (The lowering takes its tiles from the static dims, the decode/prefill choice
from the query length where it is known, or from `--dim`.)

  decode   TensorScatter ×2 + Attention-24 with nonpad_kv_seqlen, one new token, capacity 4096
           with 1025 valid: static; batch / query length / capacity symbolic; the same with
           the query length bound by dims={"seq": 1}
  prefill  512 tokens causal Attention-23: static; batch and sequence symbolic

    python -m benchmarks.dynamic_shapes [--repeats N]
"""

from __future__ import annotations

import argparse
import datetime

import numpy as np
import onnx

from benchmarks import models
from benchmarks.timing import machine, samples_ms
from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule

CAPACITY, VALID, PREFILL = 4096, 1025, 512
DECODE_DIMS = {"query": {0: "batch", 2: "seq"}, "new_key": {0: "batch", 2: "seq"}, "new_value": {0: "batch", 2: "seq"},
               "past_key": {0: "batch", 2: "capacity"}, "past_value": {0: "batch", 2: "capacity"},
               "write_indices": {0: "batch"}, "nonpad_kv_seqlen": {0: "batch"},
               "output": {0: "batch", 2: "seq"}, "present_key": {0: "batch", 2: "capacity"},
               "present_value": {0: "batch", 2: "capacity"}}
PREFILL_DIMS = {name: {0: "batch", 2: "seq"} for name in ("query", "key", "value", "output")}


def symbolic(model: onnx.ModelProto, dims: dict[str, dict[int, str]]) -> onnx.ModelProto:
    """A copy of the model whose named inputs/outputs get the symbolic dims {axis: name}."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in list(copy.graph.input) + list(copy.graph.output):
        for axis, name in dims.get(value.name, {}).items():
            value.type.tensor_type.shape.dim[axis].dim_param = name
    return copy


def stats(module: CompiledModule, inputs: dict, repeats: int) -> tuple[float, float, float]:
    """min, median and p90 milliseconds of one call."""
    views = module.upload(inputs)
    samples = np.array(samples_ms(lambda: module.invoke(views), repeats))
    return float(samples.min()), float(np.median(samples)), float(np.percentile(samples, 90))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{machine()}, {datetime.date.today()}; min / median / p90 ms of one call")
    decode, decode_inputs = models.decode_model(CAPACITY), models.decode_inputs(CAPACITY, VALID, rng)
    prefill, prefill_inputs = models.prefill_model(PREFILL), models.prefill_inputs(PREFILL, rng)
    cases = [
        (f"decode capacity {CAPACITY}, {VALID} valid", decode_inputs, args.repeats, {
            "static": (decode, None),
            "dynamic (batch, seq, capacity)": (symbolic(decode, DECODE_DIMS), None),
            "dynamic, --dim seq=1": (symbolic(decode, DECODE_DIMS), {"seq": 1}),
        }),
        (f"prefill {PREFILL} causal", prefill_inputs, max(3, args.repeats // 5), {
            "static": (prefill, None),
            "dynamic (batch, seq)": (symbolic(prefill, PREFILL_DIMS), None),
        }),
    ]
    for title, inputs, repeats, variants in cases:
        print(title)
        static_median = None
        for name, (model, dims) in variants.items():
            low, median, p90 = stats(CompiledModule(compile_model(model, dims=dims).vmfb), inputs, repeats)
            static_median = static_median or median
            print(f"  {name:<32} {low:8.3f} {median:8.3f} {p90:8.3f}   {median / static_median:.2f}x static")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
