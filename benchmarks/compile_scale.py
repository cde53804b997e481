"""Compile cost vs model size: kvattn with externalized weights, and stock IREE, on the same file.

For each synthetic Llama-style decoder (benchmarks/decoder_model.py: 50M, 500M, 1B parameters;
fp32 and fp16; weights in ONNX external data), in two forms — `genai` (RMSNormalization,
RotaryEmbedding, Attention-23 with KV caches) and `plain` (the same weights without those
operators, which stock IREE cannot compile) — each step runs in its own subprocess and reports
its seconds and peak RSS: its own (VmHWM) and the largest of its children's (ru_maxrss of
RUSAGE_CHILDREN: iree-compile; on Linux a child's ru_maxrss starts from its parent's RSS when
it was spawned, so it is never below the kvattn process's RSS at that moment):

  kvattn   `kvattn compile model.onnx -o k.vmfb` (weights → k.irpa)
  stock    `iree-import-onnx model.onnx --externalize-params --save-params-to s.irpa -o s.mlir`,
           then `iree-compile s.mlir` with kvattn's llvm-cpu flags (on `genai`: fails to legalize)
  run      (genai) load k.vmfb with k.irpa memory-mapped and run one decode step

    python -m benchmarks.compile_scale [--sizes 50M,500M,1B] [--dtypes fp32,fp16] [--dir /tmp/kvattn-scale]
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

from benchmarks.decoder_model import SIZES, decode_inputs, write_decoder
from benchmarks.timing import machine

DTYPES = {"fp32": np.float32, "fp16": np.float16}


def _peaks() -> dict:
    with open("/proc/self/status") as status:
        self_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self_mb": self_mb, "children_mb": children_mb}


def _iree_compile(mlir: pathlib.Path, vmfb: pathlib.Path) -> None:
    from kvattn.runtime import targets

    subprocess.run(["iree-compile", str(mlir), *targets.get("llvm-cpu").flags(), "-o", str(vmfb)], check=True,
                   capture_output=True, text=True)


def _step(step: str, work: pathlib.Path, size: str, dtype: str) -> dict:
    """One measured step, in this (fresh) process."""
    model = work / "model.onnx"
    started = time.perf_counter()
    result = {}
    if step in ("write-genai", "write-plain"):
        write_decoder(SIZES[size], DTYPES[dtype], model, plain=step == "write-plain")
    elif step == "kvattn":
        from kvattn.runtime import cli

        assert cli.main(["compile", str(model), "-o", str(work / "k.vmfb"), "-q"]) == 0
        result["files"] = {"vmfb": (work / "k.vmfb").stat().st_size, "irpa": (work / "k.irpa").stat().st_size}
    elif step == "stock":
        command = ["iree-import-onnx", str(model), "--externalize-params", "--save-params-to", str(work / "s.irpa"),
                   "-o", str(work / "s.mlir")]
        if (work / "model.onnx.data").stat().st_size >= 2 << 30:  # without it, it fails on models over 2 GB
            command.append("--large-model")
            result["large_model"] = True
        subprocess.run(command, check=True, capture_output=True)
        result["import_s"] = time.perf_counter() - started
        result["files"] = {"mlir": (work / "s.mlir").stat().st_size, "irpa": (work / "s.irpa").stat().st_size}
        try:
            _iree_compile(work / "s.mlir", work / "s.vmfb")
        except subprocess.CalledProcessError as exc:
            failure = next((line for line in exc.stderr.splitlines() if "error:" in line), exc.stderr[:200])
            result["failed"] = failure.split("error:", 1)[-1].strip()[:90]
        else:
            result["files"]["vmfb"] = (work / "s.vmfb").stat().st_size
    elif step == "run":
        from kvattn.runtime.module import CompiledModule

        inputs = decode_inputs(SIZES[size], DTYPES[dtype])
        module = CompiledModule.load(work / "k.vmfb")
        loaded = time.perf_counter()
        logits = module.run(inputs)["logits"]
        result["step_s"] = time.perf_counter() - loaded
        result["finite"] = bool(np.isfinite(logits).all())
    result["seconds"] = time.perf_counter() - started
    return {**result, **_peaks()}


def measure(step: str, work: pathlib.Path, size: str, dtype: str) -> dict:
    process = subprocess.run([sys.executable, "-m", "benchmarks.compile_scale", "--step", step, "--dir", str(work),
                              "--sizes", size, "--dtypes", dtype], capture_output=True, text=True)
    if process.returncode != 0:
        return {"error": (process.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return json.loads(process.stdout.strip().splitlines()[-1])


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.1f} MB" if nbytes < 1e9 else f"{nbytes / 1e9:.2f} GB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50M,500M,1B")
    parser.add_argument("--dtypes", default="fp32,fp16")
    parser.add_argument("--dir", default="/tmp/kvattn-scale", help="scratch space (a 1B fp32 model needs ~13 GB)")
    parser.add_argument("--steps", default="kvattn,run,stock", help="the steps to run (of kvattn, run, stock)")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # run one step in this process (internal)
    args = parser.parse_args(argv)
    root = pathlib.Path(args.dir)
    if args.step:
        print(json.dumps(_step(args.step, root, args.sizes, args.dtypes)))
        return 0
    print(f"{datetime.date.today()}, {machine()}, llvm-cpu\n")
    print("| model | weights | step | seconds | peak RSS (process / children) | vmfb | archive | note |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        for dtype in args.dtypes.split(","):
            for kind, steps in (("genai", ("kvattn", "run", "stock")), ("plain", ("kvattn", "stock"))):
                work = root / f"{size}-{dtype}-{kind}"
                work.mkdir(parents=True, exist_ok=True)
                written = measure(f"write-{kind}", work, size, dtype)
                if "error" in written:
                    print(f"| {size} {dtype} {kind} | | write | | | | | {written['error']} |")
                    continue
                weights = (work / "model.onnx.data").stat().st_size
                for step in (step for step in steps if step in args.steps.split(",")):
                    r = measure(step, work, size, dtype)
                    files = r.get("files", {})
                    peak = f"{r['self_mb']:,.0f} / {r['children_mb']:,.0f} MB" if "self_mb" in r else ""
                    note = r.get("error") or (f"iree-compile failed: {r['failed']}" if "failed" in r else "")
                    if "import_s" in r:
                        note = f"import {r['import_s']:.1f} s; " + note
                    if r.get("large_model"):
                        note = "--large-model; " + note
                    if step == "run" and "self_mb" in r:
                        note = (f"decode step {r['step_s']:.2f} s, finite: {r['finite']}; "
                                f"RSS / weights {r['self_mb'] * 2**20 / weights:.2f}")
                    print(f"| {size} {dtype} {kind} | {_mb(weights)} | {step} | {r.get('seconds', 0):.1f} | {peak} | "
                          f"{_mb(files['vmfb']) if 'vmfb' in files else ''} | "
                          f"{_mb(files['irpa']) if 'irpa' in files else ''} | {note} |", flush=True)
                shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
