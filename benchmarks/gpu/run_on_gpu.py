"""The GPU run: conformance on the device and decode/prefill benchmarks against a baseline,
from a bundle made by `benchmarks.gpu.prepare` (no IREE compiler needed here).

    python -m benchmarks.gpu.run_on_gpu --bundle .gpu_bundle --device cuda

Baseline: onnxruntime's CUDA provider when it is installed, else PyTorch SDPA on the GPU.
Prints one table at the end.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from benchmarks import models
from benchmarks.timing import median_ms
from kvattn.runtime.module import CompiledModule


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=".gpu_bundle", type=pathlib.Path)
    parser.add_argument("--device", default="cuda", help="IREE HAL driver (cuda, hip, vulkan, local-task)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    rows = _conformance(args.bundle / "cases", args.device)
    rows += _benchmarks(args.bundle / "models", args.device, args.repeats)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'what':<{width}}  result")
    for name, result in rows:
        print(f"{name:<{width}}  {result}")
    return 0 if all("FAIL" not in r[1] for r in rows) else 1


def _conformance(folder: pathlib.Path, device: str) -> list[tuple[str, str]]:
    counts: dict[str, list[int]] = {}
    for vmfb in sorted(folder.glob("*.vmfb")):
        data = _load_npz(vmfb.with_suffix(".npz"))
        passed = counts.setdefault(str(data["op"]), [0, 0])
        passed[1] += 1
        try:
            module = CompiledModule(vmfb.read_bytes(), device)
            inputs = [data[f"input_{i}"] for i in range(len(module.input_names))]
            outputs = module.run(dict(zip(module.input_names, inputs)))
            rtol, atol = data["tolerance"]
            for i, name in enumerate(module.output_names):
                np.testing.assert_allclose(outputs[name].astype(np.float64), data[f"output_{i}"].astype(np.float64),
                                           rtol=rtol, atol=atol)
            passed[0] += 1
        except Exception as exc:  # report every case, keep going
            print(f"FAIL {vmfb.stem}: {str(exc).strip().splitlines()[0][:160]}", flush=True)
    return [(f"conformance {op} on {device}", f"{p}/{n} passed" + ("" if p == n else " (FAIL)"))
            for op, (p, n) in sorted(counts.items())]


def _load_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
    import ml_dtypes

    with np.load(path) as data:
        return {k.removesuffix("__bf16"): (data[k].view(ml_dtypes.bfloat16) if k.endswith("__bf16") else data[k])
                for k in data.files}


def _benchmarks(folder: pathlib.Path, device: str, repeats: int) -> list[tuple[str, str]]:
    shapes = json.loads((folder / "shapes.json").read_text())
    baseline_name, baseline = _baseline(device)
    rows = []
    for name in ("decode", "prefill"):
        module = CompiledModule((folder / f"{name}.vmfb").read_bytes(), device)
        rng = np.random.default_rng(0)
        inputs = (models.decode_inputs(shapes["capacity"], shapes["valid"], rng) if name == "decode"
                  else models.prefill_inputs(shapes["length"], rng))
        views = module.upload(inputs)  # device-resident inputs: time the step itself
        kvattn_ms = median_ms(lambda: module.invoke(views), repeats)
        label = (f"decode (capacity {shapes['capacity']}, {shapes['valid']} valid)" if name == "decode"
                 else f"prefill {shapes['length']} causal")
        result = f"kvattn {kvattn_ms:.3f} ms"
        if baseline is not None:
            baseline_ms = median_ms(baseline(name, folder / f"{name}.onnx", inputs), repeats)
            result += f", {baseline_name} {baseline_ms:.3f} ms, speedup {baseline_ms / kvattn_ms:.2f}x"
        rows.append((label, result))
    return rows


def _baseline(device: str):
    """('name', factory(model name, onnx path, inputs) -> step function) for this device, or None."""
    if device != "cuda":
        return "none", None
    try:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return "onnxruntime-cuda", _onnxruntime_cuda
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return "torch-sdpa", _torch_sdpa
    except ImportError:
        pass
    return "none", None


def _onnxruntime_cuda(name, onnx_path, inputs):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CUDAExecutionProvider"])
    binding = session.io_binding()
    for key, value in inputs.items():
        binding.bind_ortvalue_input(key, onnxruntime.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
    for output in session.get_outputs():
        binding.bind_output(output.name, "cuda")
    return lambda: session.run_with_iobinding(binding)


def _torch_sdpa(name, onnx_path, inputs):
    import torch
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v).cuda() for k, v in inputs.items()}
    if name == "prefill":
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
