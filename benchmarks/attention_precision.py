"""The error of --attention-precision on the official ONNX conformance cases: every f32
Attention and FlexAttention node test compiled for llvm-cpu at each precision (the rounding is
the same on every target: Q/K/V and the probabilities rounded, softmax and sums in f32), its
outputs compared with the expected ones. Prints, per op and precision, how many cases pass at
the case's own tolerance and the largest errors, absolute and relative to the largest |output|.

    python -m benchmarks.attention_precision [--max-cases N]
"""

from __future__ import annotations

import argparse
import datetime
import sys

import numpy as np
import onnx

from benchmarks.timing import machine
from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule
from kvattn.runtime.targets import ATTENTION_PRECISIONS
from tests.conformance_cases import node_cases


def case_errors(case, precision: str) -> tuple[bool, float, float]:
    """(passes at the case's tolerance, max |error|, max |error| / max |expected|) over its outputs."""
    module = CompiledModule(compile_model(case.model, "llvm-cpu", attention_precision=precision).vmfb, "local-task")
    inputs, expected = case.data_sets[0]
    got = module.run(dict(zip(module.input_names, inputs)))
    passes, absolute, relative = True, 0.0, 0.0
    for name, want in zip(module.output_names, expected):
        value, want = got[name].astype(np.float64), np.asarray(want, np.float64)
        same = (value == want) | (np.isnan(value) & np.isnan(want))  # equal infinities count as exact
        with np.errstate(invalid="ignore"):  # inf - inf where both are inf: masked by `same`
            error = np.where(same, 0.0, np.abs(value - want))
        passes &= bool(np.allclose(value, want, rtol=case.rtol, atol=case.atol, equal_nan=True))
        absolute = max(absolute, float(error.max(initial=0)))
        largest = np.abs(want[np.isfinite(want)]).max(initial=0)
        relative = max(relative, float(error.max(initial=0) / max(largest, 1e-30)))
    return passes, absolute, relative


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-cases", type=int, help="only this many cases per op (a dry run)")
    args = parser.parse_args(argv)
    print(f"# {datetime.date.today()}, {machine()}, llvm-cpu")
    print(f"{'op':<14} {'precision':<9} {'cases':>5} {'pass':>5} {'max abs err':>12} {'median abs':>11} "
          f"{'max rel err':>12}")
    for op in ("Attention", "FlexAttention"):
        cases = [c for c in node_cases(op) if c.model.graph.input[0].type.tensor_type.elem_type
                 == onnx.TensorProto.FLOAT][:args.max_cases]
        for precision in ATTENTION_PRECISIONS:
            results = [case_errors(case, precision) for case in cases]
            absolute = [r[1] for r in results]
            print(f"{op:<14} {precision:<9} {len(results):>5} {sum(r[0] for r in results):>5} "
                  f"{max(absolute):>12.2e} {float(np.median(absolute)):>11.2e} {max(r[2] for r in results):>12.2e}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
