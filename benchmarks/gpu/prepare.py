"""Prepare everything the GPU run needs, here, where IREE's compiler is installed.

    python -m benchmarks.gpu.prepare [--target cuda] [--arch sm_80] [--bundle .gpu_bundle]

Writes to the bundle folder (ignored by git, carried to the GPU machine):
  cases/<module>.vmfb, cases/<case>.npz
      every ONNX conformance case of the five ops kvattn handles (Attention, TensorScatter,
      FlexAttention, RotaryEmbedding, RMSNormalization) and every exported decoder fixture of
      tests/models (one vmfb each, serving all its stored cases: prefill with an empty past,
      decode, batch 2 with left padding), each case with its inputs, expected outputs (the
      fixtures': torch's) and tolerances
  models/<name>.vmfb (+ .onnx) and models/benchmarks.json
      the benchmarks: decode at capacities 4096 and 16384 (1025 / 4000 / 16000 valid), fp32 at
      attention precision ieee and fp16; prefill 512 and 2048 causal, fp32 ieee, fp32 at precision
      fp16 (tensor cores), and an fp16 model
  wheels/  iree-base-runtime for Python 3.12 (the GPU machine has no IREE)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import pathlib
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto

from benchmarks import low_precision, models
from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime.compiler import compile_model
from tests.conformance_cases import node_cases
from tests.exported_fixtures import FIXTURES, TOLERANCE, absolute_tolerance, stored_cases

OPS = ("Attention", "TensorScatter", "FlexAttention", "RotaryEmbedding", "RMSNormalization")
FULL = {"decode": {4096: (1025, 4000), 16384: (1025, 16000)}, "prefill": (512, 2048)}
QUICK = {"decode": {256: (65, 200), 512: (65,)}, "prefill": (64,)}  # shapes for a fast dry run on a CPU


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="cuda")
    parser.add_argument("--arch", help="chip for the target (default: the target's)")
    parser.add_argument("--bundle", default=".gpu_bundle", type=pathlib.Path)
    parser.add_argument("--quick", action="store_true", help="small benchmark shapes (for a dry run on a CPU)")
    parser.add_argument("--no-wheels", action="store_true", help="do not download the IREE runtime wheel")
    parser.add_argument("--max-cases", type=int, help="compile only this many cases of each op and fixtures (dry runs)")
    args = parser.parse_args(argv)
    (args.bundle / "cases").mkdir(parents=True, exist_ok=True)
    (args.bundle / "models").mkdir(parents=True, exist_ok=True)
    compiled, unsupported = _prepare_conformance(args)
    print(f"conformance: compiled {compiled} cases, {unsupported} not supported by kvattn yet")
    print(f"exported decoders: {_prepare_fixtures(args)} cases")
    _prepare_benchmarks(args)
    if not args.no_wheels:
        _download_runtime_wheel(args.bundle / "wheels")
    print(f"bundle ready in {args.bundle}")
    return 0


def _prepare_conformance(args) -> tuple[int, int]:
    compiled = unsupported = 0
    for op in OPS:
        for case in node_cases(op)[:args.max_cases]:
            try:
                vmfb = compile_model(case.model, args.target, args.arch).vmfb
            except KvattnError:
                unsupported += 1
                continue
            (args.bundle / "cases" / f"{case.name}.vmfb").write_bytes(vmfb)
            inputs, outputs = case.data_sets[0]
            names = [value.name for value in case.model.graph.input]
            _save_case(args.bundle / "cases" / f"{case.name}.npz", case.name, f"conformance {op}",
                       dict(zip(names, inputs)), outputs, case.rtol, [case.atol] * len(outputs))
            compiled += 1
    return compiled, unsupported


def _prepare_fixtures(args) -> int:
    count = 0
    for path in FIXTURES[:args.max_cases]:
        (args.bundle / "cases" / f"{path.stem}.vmfb").write_bytes(compile_model(path, args.target, args.arch).vmfb)
        for name, inputs, from_torch in stored_cases(path):
            _save_case(args.bundle / "cases" / f"{path.stem}.{name}.npz", path.stem, "exported decoders",
                       inputs, from_torch, TOLERANCE, [absolute_tolerance(out) for out in from_torch])
            count += 1
    return count


def _save_case(path: pathlib.Path, module: str, group: str, inputs: dict, outputs: list, rtol: float,
               atols: list[float]) -> None:
    """One case: the vmfb it runs (`module`), its inputs by name, its expected outputs in order."""
    arrays = {f"in.{name}": np.asarray(value) for name, value in inputs.items()}
    arrays.update({f"out.{i}": np.asarray(value) for i, value in enumerate(outputs)})
    np.savez(path, **_storable(arrays), module=np.array(module), group=np.array(group), rtol=np.array(rtol),
             atol=np.array(atols))


def _storable(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """npz cannot hold bfloat16: store those as uint16 with a name suffix."""
    return {(f"{k}__bf16" if v.dtype.name == "bfloat16" else k): (v.view(np.uint16) if v.dtype.name == "bfloat16" else v)
            for k, v in arrays.items()}


def _prepare_benchmarks(args) -> None:
    """The benchmark models and what run_on_gpu needs to time them; their random inputs are
    drawn again there (`models.*_inputs`, seed 0)."""
    shapes = QUICK if args.quick else FULL
    folder, entries = args.bundle / "models", []

    def add(name: str, model: onnx.ModelProto, precision: str = "ieee", **entry) -> None:
        onnx.save(model, folder / f"{name}.onnx")
        vmfb = compile_model(model, args.target, args.arch, attention_precision=precision).vmfb
        (folder / f"{name}.vmfb").write_bytes(vmfb)
        entries.append({"name": name, "precision": precision, **entry})

    for capacity, valid in shapes["decode"].items():
        for precision in ("ieee", "fp16"):
            add(f"decode_{capacity}_{precision}", models.decode_model(capacity), precision, kind="decode",
                capacity=capacity, valid=list(valid), dtype="float32")
    for length in shapes["prefill"]:
        for precision in ("ieee", "fp16"):
            add(f"prefill_{length}_{precision}", models.prefill_model(length), precision, kind="prefill",
                length=length, dtype="float32")
        add(f"prefill_{length}_fp16_model", low_precision.attention_model(TensorProto.FLOAT16, length, length, True, 1),
            kind="prefill", length=length, dtype="float16")
    (folder / "benchmarks.json").write_text(json.dumps(entries, indent=1))


def _download_runtime_wheel(folder: pathlib.Path) -> None:
    platforms = [arg for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder),
                    f"iree-base-runtime=={importlib.metadata.version('iree-base-runtime')}"],
                   check=True)


if __name__ == "__main__":
    sys.exit(main())
