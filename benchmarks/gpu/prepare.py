"""Prepare everything the GPU run needs, here, where IREE's compiler is installed.

    python -m benchmarks.gpu.prepare [--target cuda] [--arch sm_80] [--bundle .gpu_bundle]

Writes to the bundle folder (ignored by git, carried to the GPU machine):
  cases/<name>.vmfb + <name>.npz   every supported ONNX conformance case (Attention,
                                   TensorScatter) compiled for the target, with inputs and
                                   expected outputs and tolerances
  models/decode.* prefill.*        the benchmark models (.onnx for the baselines, .vmfb) and shapes
  wheels/                          iree-base-runtime for Python 3.12 (the GPU machine has no IREE)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import onnx

from benchmarks import models
from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime.compiler import compile_model

DECODE_CAPACITY, DECODE_VALID, PREFILL_LENGTH = 4096, 1025, 512
QUICK = {"capacity": 256, "valid": 65, "length": 64}  # shapes for a fast dry run on a CPU


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="cuda")
    parser.add_argument("--arch", help="chip for the target (default: the target's)")
    parser.add_argument("--bundle", default=".gpu_bundle", type=pathlib.Path)
    parser.add_argument("--quick", action="store_true", help="small benchmark shapes (for a dry run on a CPU)")
    parser.add_argument("--no-wheels", action="store_true", help="do not download the IREE runtime wheel")
    parser.add_argument("--max-cases", type=int, help="compile only this many conformance cases (dry runs)")
    args = parser.parse_args(argv)
    (args.bundle / "cases").mkdir(parents=True, exist_ok=True)
    (args.bundle / "models").mkdir(parents=True, exist_ok=True)
    compiled, unsupported = _prepare_cases(args)
    print(f"conformance: compiled {compiled} cases, {unsupported} not supported by kvattn yet")
    _prepare_models(args)
    if not args.no_wheels:
        _download_runtime_wheel(args.bundle / "wheels")
    print(f"bundle ready in {args.bundle}")
    return 0


def _prepare_cases(args) -> tuple[int, int]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in collect_testcases() if "expanded" not in c.name
                 and c.model.graph.node[0].op_type in ("Attention", "TensorScatter")][:args.max_cases]
    compiled = unsupported = 0
    for case in cases:
        try:
            vmfb = compile_model(case.model, args.target, args.arch).vmfb
        except KvattnError:
            unsupported += 1
            continue
        (args.bundle / "cases" / f"{case.name}.vmfb").write_bytes(vmfb)
        inputs, outputs = case.data_sets[0]
        arrays = {f"input_{i}": np.asarray(x) for i, x in enumerate(inputs)}
        arrays.update({f"output_{i}": np.asarray(x) for i, x in enumerate(outputs)})
        np.savez(args.bundle / "cases" / f"{case.name}.npz", **_storable(arrays),
                 tolerance=np.array([case.rtol, case.atol]), op=np.array(case.model.graph.node[0].op_type))
        compiled += 1
    return compiled, unsupported


def _storable(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """npz cannot hold bfloat16: store those as uint16 with a name suffix."""
    return {(f"{k}__bf16" if v.dtype.name == "bfloat16" else k): (v.view(np.uint16) if v.dtype.name == "bfloat16" else v)
            for k, v in arrays.items()}


def _prepare_models(args) -> None:
    """The benchmark models; their random inputs are drawn again there (`models.*_inputs`, seed 0)."""
    shapes = QUICK if args.quick else {"capacity": DECODE_CAPACITY, "valid": DECODE_VALID, "length": PREFILL_LENGTH}
    for name, model in (("decode", models.decode_model(shapes["capacity"])),
                        ("prefill", models.prefill_model(shapes["length"]))):
        folder = args.bundle / "models"
        onnx.save(model, folder / f"{name}.onnx")
        (folder / f"{name}.vmfb").write_bytes(compile_model(model, args.target, args.arch).vmfb)
    (args.bundle / "models" / "shapes.json").write_text(json.dumps(shapes))


def _download_runtime_wheel(folder: pathlib.Path) -> None:
    platforms = [arg for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder),
                    f"iree-base-runtime=={importlib.metadata.version('iree-base-runtime')}"],
                   check=True)


if __name__ == "__main__":
    sys.exit(main())
