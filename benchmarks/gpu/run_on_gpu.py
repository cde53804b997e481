"""The GPU run: conformance and the exported decoders on the device, and the decode/prefill
benchmarks against baselines, from a bundle made by `benchmarks.gpu.prepare` (no IREE compiler
needed here).

    python -m benchmarks.gpu.run_on_gpu --bundle .gpu_bundle --device cuda

Baselines on cuda: PyTorch SDPA on the GPU (decode: plus the index_copy_ cache update) and
onnxruntime's CUDA provider with IO binding, each where the machine has it. Prints one table at
the end; times are medians with min and p90.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import pathlib
import sys

import numpy as np

from benchmarks import models
from benchmarks.timing import spread_ms
from kvattn.runtime.module import CompiledModule


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=".gpu_bundle", type=pathlib.Path)
    parser.add_argument("--device", default="cuda", help="IREE HAL driver (cuda, hip, vulkan, local-task)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    rows = _cases(args.bundle / "cases", args.device)
    rows += _benchmarks(args.bundle / "models", args.device, args.repeats)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'what':<{width}}  result")
    for name, result in rows:
        print(f"{name:<{width}}  {result}")
    return 0 if all("FAIL" not in r[1] for r in rows) else 1


def _cases(folder: pathlib.Path, device: str) -> list[tuple[str, str]]:
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    # One module loaded at a time: the cases of a module sort next to each other.
    load = functools.lru_cache(maxsize=1)(lambda name: CompiledModule((folder / f"{name}.vmfb").read_bytes(), device))
    for path in sorted(folder.glob("*.npz")):
        data = _load_npz(path)
        passed = counts[str(data["group"])]
        passed[1] += 1
        try:
            module = load(str(data["module"]))
            outputs = module.run({key.removeprefix("in."): value for key, value in data.items() if key.startswith("in.")})
            for i, (output, atol) in enumerate(zip(module.output_names, data["atol"], strict=True)):
                np.testing.assert_allclose(outputs[output].astype(np.float64), data[f"out.{i}"].astype(np.float64),
                                           rtol=float(data["rtol"]), atol=float(atol), err_msg=output)
            passed[0] += 1
        except Exception as exc:  # report every case, keep going
            print(f"FAIL {path.stem}: {' '.join(str(exc).split())[:200]}", flush=True)
    return [(f"{group} on {device}", f"{p}/{n} passed" + ("" if p == n else " (FAIL)"))
            for group, (p, n) in sorted(counts.items())]


def _load_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
    import ml_dtypes

    with np.load(path) as data:
        return {k.removesuffix("__bf16"): (data[k].view(ml_dtypes.bfloat16) if k.endswith("__bf16") else data[k])
                for k in data.files}


def _benchmarks(folder: pathlib.Path, device: str, repeats: int) -> list[tuple[str, str]]:
    baselines = _baselines(device)
    rows = []
    for entry in json.loads((folder / "benchmarks.json").read_text()):
        module = CompiledModule((folder / f"{entry['name']}.vmfb").read_bytes(), device)
        for valid in entry.get("valid", [None]):
            rng = np.random.default_rng(0)
            if entry["kind"] == "decode":
                inputs = models.decode_inputs(entry["capacity"], valid, rng)
                label = f"decode capacity {entry['capacity']}, {valid} valid"
            else:
                inputs = {k: v.astype(entry["dtype"]) for k, v in models.prefill_inputs(entry["length"], rng).items()}
                label = f"prefill {entry['length']} causal"
            label += f", {entry['dtype']}" + ("" if entry["precision"] == "ieee" else f" at precision {entry['precision']}")
            views = module.upload(inputs)  # device-resident inputs: time the step itself
            kvattn = spread_ms(lambda: module.invoke(views), repeats)
            result = f"kvattn {kvattn}"
            for baseline_name, baseline in baselines:
                other = spread_ms(baseline(entry["kind"], folder / f"{entry['name']}.onnx", inputs), repeats)
                result += f"; {baseline_name} {other}, speedup {other.median / kvattn.median:.2f}x"
            rows.append((label, result))
    return rows


def _baselines(device: str) -> list[tuple[str, object]]:
    """[('name', factory(kind, onnx path, inputs) -> step function)] for this device."""
    if device != "cuda":
        return []
    found = []
    try:
        import torch

        if torch.cuda.is_available():
            found.append(("torch-sdpa", _torch_sdpa))
    except ImportError:
        pass
    try:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            found.append(("onnxruntime-cuda", _onnxruntime_cuda))
    except ImportError:
        pass
    return found


def _onnxruntime_cuda(kind, onnx_path, inputs):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CUDAExecutionProvider"])
    binding = session.io_binding()
    for key, value in inputs.items():
        binding.bind_ortvalue_input(key, onnxruntime.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
    for output in session.get_outputs():
        binding.bind_output(output.name, "cuda")
    return lambda: session.run_with_iobinding(binding)


def _torch_sdpa(kind, onnx_path, inputs):
    import torch
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v).cuda() for k, v in inputs.items()}
    if kind == "prefill":
        def step():
            F.scaled_dot_product_attention(t["query"], t["key"], t["value"], is_causal=True, enable_gqa=True)
            torch.cuda.synchronize()
        return step
    valid = int(t["nonpad_kv_seqlen"][0])
    position = torch.tensor([valid - 1], device="cuda")
    mask = (torch.arange(t["past_key"].shape[2], device="cuda") < valid).view(1, 1, 1, -1)

    def step():
        t["past_key"].index_copy_(2, position, t["new_key"])
        t["past_value"].index_copy_(2, position, t["new_value"])
        F.scaled_dot_product_attention(t["query"], t["past_key"], t["past_value"], attn_mask=mask, enable_gqa=True)
        torch.cuda.synchronize()
    return step


if __name__ == "__main__":
    sys.exit(main())
