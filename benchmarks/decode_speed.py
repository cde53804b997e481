"""Decode and prefill speed, kvattn side by side with onnxruntime and stock IREE, in one run.

Config: fp32, batch 1, 32 query heads, 8 KV heads, head size 128 (benchmarks.models).

  floors      large-copy bandwidth (numpy) and fp32 matmul GFLOP/s (numpy/BLAS), measured here
  update      the two TensorScatter cache updates alone, capacity 128 vs 8192 (kvattn)
  decode      2 TensorScatter + Attention-24 with nonpad_kv_seqlen, one new token:
                kvattn (device-resident caches, updated in place)
                onnxruntime Attention-24 + TensorScatter (InferenceSession.run: copies the cache)
                onnxruntime same graph with IO binding (present bound to the past buffer)
                onnxruntime GroupQueryAttention contrib op, present bound to the past buffer
                stock IREE (ONNX function expansion) on the Attention alone: it has no TensorScatter
              at capacity 4096 with 1025 and 4000 valid tokens, and capacity 8192 with 1025
  long        decode at capacities 4096 / 16384 / 32768 with 1025 / 4000 / 16000 / 32000 valid,
              batch 1 and 4: kvattn, kvattn with its fused attention op (the llvm-cpu route before
              small scores were materialized), onnxruntime IO binding and GroupQueryAttention
  prefill     512 and 2048 tokens causal Attention-23: kvattn, kvattn's fused attention op,
              onnxruntime, stock IREE
  sweep       decode time vs valid length and vs capacity, kvattn and onnxruntime (PNG plot)

Every time is printed as median, min and p90 in ms (a stall shows as a median or p90 far above the
min), with the median's multiple of the floor (bytes of K/V read at the copy bandwidth, or FLOPs
at the matmul rate); speed-ups compare medians.

    python -m benchmarks.decode_speed [--repeats 30] [--quick] [--plot benchmarks/decode_speed.png]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import numpy as np
import onnx
import onnxruntime

from benchmarks import models
from benchmarks.timing import Spread, machine, median_ms, spread_ms
from kvattn.lowering import onnx_import
from kvattn.passes import iree_input
from kvattn.runtime import targets
from kvattn.runtime.compiler import iree_compile, compile_model
from kvattn.runtime.module import CompiledModule

FLOAT_BYTES = 4


# --------------------------------------------------------------------------- floors

def copy_gbps() -> float:
    """Bytes read + written per second by a large numpy copy (beyond the caches)."""
    source = np.ones(64 * 2**20, np.float32)  # 256 MiB
    target = np.empty_like(source)
    ms = median_ms(lambda: np.copyto(target, source), 5, warmup=1)
    return 2 * source.nbytes / (ms * 1e-3) / 1e9


def matmul_gflops() -> float:
    a = np.ones((2048, 2048), np.float32)
    ms = median_ms(lambda: a @ a, 5, warmup=1)
    return 2 * 2048**3 / (ms * 1e-3) / 1e9


def decode_floor_ms(valid: int, gbps: float, batch: int = 1) -> float:
    """Reading the valid K and V rows once."""
    return 2 * batch * models.KV_HEADS * valid * models.HEAD_SIZE * FLOAT_BYTES / (gbps * 1e9) * 1e3


def prefill_floor_ms(length: int, gflops: float) -> float:
    """Causal attention: QKᵀ and PV over the lower triangle (half of the full 4·S²·D·H FLOPs)."""
    flops = 2 * models.Q_HEADS * length * length * models.HEAD_SIZE
    return flops / (gflops * 1e9) * 1e3


# --------------------------------------------------------------------------- runners

def kvattn_ms(model: onnx.ModelProto, inputs: dict, repeats: int, fused_op: bool = False) -> Spread:
    """The call on device-resident inputs; tied caches are updated in place call after call.
    With `fused_op`, compiled with llvm-cpu's fused attention op wherever it applies."""
    module = CompiledModule(kvattn_compile(model, fused_op).vmfb)
    views = module.upload(inputs)
    return spread_ms(lambda: module.invoke(views), repeats)


def kvattn_compile(model: onnx.ModelProto, fused_op: bool = False):
    """compile_model for llvm-cpu; with `fused_op`, every attention the fused iree_linalg_ext.attention
    can take is that op (the route before small scores were materialized: targets.fused_attention_only)."""
    cpu = targets.TARGETS["llvm-cpu"]
    if fused_op:
        targets.TARGETS["llvm-cpu"] = targets.fused_attention_only(cpu)
    try:
        return compile_model(model)
    finally:
        targets.TARGETS["llvm-cpu"] = cpu


def _ort_session(model: onnx.ModelProto) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3  # TensorScatter warns on every copy
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def onnxruntime_ms(model: onnx.ModelProto, inputs: dict, repeats: int) -> Spread:
    session = _ort_session(model)
    return spread_ms(lambda: session.run(None, inputs), repeats)


def onnxruntime_bound_ms(model: onnx.ModelProto, inputs: dict, repeats: int) -> Spread:
    """IO binding with each present cache bound to its past cache's buffer (in place)."""
    session = _ort_session(model)
    binding = session.io_binding()
    caches = {name: onnxruntime.OrtValue.ortvalue_from_numpy(inputs[name].copy()) for name in ("past_key", "past_value")}
    for name, array in inputs.items():
        if name in caches:
            binding.bind_ortvalue_input(name, caches[name])
        else:
            binding.bind_cpu_input(name, array)
    for output in session.get_outputs():
        if output.name.startswith("present_"):
            binding.bind_ortvalue_output(output.name, caches[output.name.replace("present_", "past_")])
        else:
            binding.bind_output(output.name)
    return spread_ms(lambda: session.run_with_iobinding(binding), repeats)


def gqa_inputs(inputs: dict) -> dict:
    """The decode inputs in GroupQueryAttention's layout ([B, S, H·D], int32 lengths)."""
    batch = inputs["query"].shape[0]
    packed = {name: inputs[name].transpose(0, 2, 1, 3).reshape(batch, 1, -1) for name in ("query", "new_key", "new_value")}
    valid = inputs["nonpad_kv_seqlen"].astype(np.int32)
    return {**packed, "past_key": inputs["past_key"], "past_value": inputs["past_value"],
            "seqlens_k": valid - 1, "total_sequence_length": np.array(valid.max(), np.int32)}


def stock_iree_ms(model: onnx.ModelProto, inputs: dict, repeats: int) -> Spread:
    """IREE's own ONNX path with every ONNX function expanded (what
    `torch-mlir-import-onnx --disable-function-expansion-allowlist` does)."""
    from iree.compiler import ir
    from iree.compiler.extras import onnx_importer

    config = onnx_importer.Config(function_expansion_allowlists_by_domain=None)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    context = onnx_import.make_context()
    with context, ir.Location.unknown():
        info = onnx_importer.ModelInfo(inferred, config=config)
        module = info.create_module(context=context)
        onnx_importer.NodeImporter.define_function(info.main_graph, module.operation).import_all()
        iree_input.lower_torch_to_iree_input(module)
        vmfb = iree_compile(str(module), targets.get("llvm-cpu").flags())
    import iree.runtime as ireert

    config = ireert.Config("local-task")
    context = ireert.SystemContext(config=config)
    context.add_vm_module(ireert.VmModule.copy_buffer(context.instance, vmfb))
    function = context.modules.module[model.graph.name]
    arrays = [ireert.asdevicearray(config.device, inputs[value.name]) for value in model.graph.input]
    return spread_ms(lambda: function(*arrays), repeats)


# --------------------------------------------------------------------------- the run

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="small shapes and few repeats, for a dry run")
    parser.add_argument("--plot", metavar="PNG", help="write the decode sweep plot here")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    capacity, big_capacity, lengths = (256, 512, (64,)) if args.quick else (4096, 8192, (512, 2048))
    valid_counts = (65, 250) if args.quick else (1025, 4000)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    gbps, gflops = copy_gbps(), matmul_gflops()
    print(f"# {datetime.date.today()}, {machine()}, "
          f"onnxruntime {onnxruntime.__version__}")
    print(f"floors: copy {gbps:.1f} GB/s (read+write), fp32 matmul {gflops:.0f} GFLOP/s")

    def row(name: str, spread: Spread, floor_ms: float | None = None) -> float:
        floor = f"  {spread.median / floor_ms:6.1f}x floor" if floor_ms else ""
        print(f"{name:<58} {spread}{floor}", flush=True)
        return spread.median

    small, large = (128, 8192) if not args.quick else (128, 512)
    update = {cap: row(f"cache update alone, capacity {cap}, kvattn",
                       kvattn_ms(models.cache_update_model(cap),
                                 {k: v for k, v in models.decode_inputs(cap, 65, rng).items()
                                  if k not in ("query", "nonpad_kv_seqlen")}, repeats))
              for cap in (small, large)}
    print(f"  ratio capacity {large} / {small}: {update[large] / update[small]:.2f} (goal <= 1.2)")

    decode = {}
    for cap, valid in [(capacity, valid_counts[0]), (capacity, valid_counts[1]), (big_capacity, valid_counts[0])]:
        inputs = models.decode_inputs(cap, valid, rng)
        floor = decode_floor_ms(valid, gbps)
        label = f"decode capacity {cap}, {valid} valid"
        results = {
            "kvattn": kvattn_ms(models.decode_model(cap), inputs, repeats),
            "onnxruntime Attention-24 + TensorScatter": onnxruntime_ms(models.decode_model(cap), inputs, repeats),
            "onnxruntime same, IO binding in place": onnxruntime_bound_ms(models.decode_model(cap), inputs, repeats),
            "onnxruntime GroupQueryAttention, shared buffer": onnxruntime_bound_ms(
                models.group_query_attention_model(cap), gqa_inputs(inputs), repeats),
            "stock IREE (function expansion), attention only": stock_iree_ms(
                models.decode_attention_model(cap),
                {k: inputs[k] for k in ("query", "past_key", "past_value", "nonpad_kv_seqlen")}, repeats),
        }
        print(f"{label} (floor {floor:.3f} ms: {valid} K/V rows at the copy bandwidth)")
        results = {name: row(f"  {name}", spread, floor) for name, spread in results.items()}
        for name, ms in results.items():
            if name != "kvattn":
                print(f"  kvattn speed-up over {name}: {ms / results['kvattn']:.2f}x")
        decode[(cap, valid)] = results
    print(f"kvattn capacity {big_capacity} / {capacity} at {valid_counts[0]} valid: "
          f"{decode[(big_capacity, valid_counts[0])]['kvattn'] / decode[(capacity, valid_counts[0])]['kvattn']:.2f} "
          f"(goal <= 1.15)")

    for length in lengths:
        prefill_inputs = models.prefill_inputs(length, rng)
        prefill_repeats = max(3, repeats // 5)
        floor = prefill_floor_ms(length, gflops)
        print(f"prefill {length} causal (floor {floor:.2f} ms: causal FLOPs at the matmul rate)")
        prefill = {
            "kvattn": kvattn_ms(models.prefill_model(length), prefill_inputs, prefill_repeats),
            "kvattn, fused attention op": kvattn_ms(models.prefill_model(length), prefill_inputs, prefill_repeats,
                                                    fused_op=True),
            "onnxruntime": onnxruntime_ms(models.prefill_model(length), prefill_inputs, prefill_repeats),
            "stock IREE (function expansion)": stock_iree_ms(models.prefill_model(length), prefill_inputs,
                                                             prefill_repeats),
        }
        prefill = {name: row(f"  {name}", spread, floor) for name, spread in prefill.items()}
        print(f"  kvattn speed-up over onnxruntime: {prefill['onnxruntime'] / prefill['kvattn']:.2f}x (goal >= 1.5)")

    long_context(repeats, rng, gbps, args.quick)
    if args.plot:
        plot_sweep(args.plot, capacity, valid_counts[0], repeats, rng, args.quick)
    print(f"# total {time.perf_counter() - started:.0f} s")
    return 0


def long_context(repeats: int, rng, gbps: float, quick: bool) -> None:
    """Decode at the long-context capacities and valid lengths of issue #13, batch 1 and 4:
    kvattn, onnxruntime with IO binding, and its GroupQueryAttention (the fastest peers)."""
    capacities, valid_counts = ((256, 1024), (65, 250, 1000)) if quick else ((4096, 16384, 32768),
                                                                            (1025, 4000, 16000, 32000))
    print("long context: median (min, p90) ms; floor = valid K/V rows of every batch row at the copy bandwidth")
    for batch in (1, 4):
        for cap in capacities:
            module, fused = (CompiledModule(kvattn_compile(models.decode_model(cap, batch), op).vmfb)
                             for op in (False, True))
            times = repeats if cap <= capacities[0] else max(5, repeats // 3)
            for valid in (v for v in valid_counts if v < cap):
                inputs = models.decode_inputs(cap, valid, rng, batch)
                views = module.upload(inputs)
                kvattn = spread_ms(lambda: module.invoke(views), times)
                fused_views = fused.upload(inputs)
                fused_op = spread_ms(lambda: fused.invoke(fused_views), times)
                bound = onnxruntime_bound_ms(models.decode_model(cap, batch), inputs, times)
                gqa = onnxruntime_bound_ms(models.group_query_attention_model(cap, batch), gqa_inputs(inputs), times)
                floor = decode_floor_ms(valid, gbps, batch)
                print(f"  batch {batch} capacity {cap:6d} valid {valid:6d}: kvattn {kvattn}  kvattn fused op {fused_op}  "
                      f"ORT IO binding {bound}  "
                      f"ORT GQA {gqa}  floor {floor:.3f} ms; kvattn {gqa.median / kvattn.median:.2f}x GQA, "
                      f"{kvattn.median / floor:.1f}x floor", flush=True)


def plot_sweep(path: str, capacity: int, valid: int, repeats: int, rng, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    lengths = (16, 65, 200, 256) if quick else (128, 512, 1025, 2048, 3072, 4000)
    capacities = (128, 256, 512) if quick else (1536, 2048, 4096, 8192)
    module = CompiledModule(compile_model(models.decode_model(capacity)).vmfb)
    by_length = {"kvattn": [], "onnxruntime": [], "onnxruntime GQA (shared buffer)": []}
    for count in lengths:
        inputs = models.decode_inputs(capacity, count, rng)
        views = module.upload(inputs)
        by_length["kvattn"].append(median_ms(lambda: module.invoke(views), repeats))
        by_length["onnxruntime"].append(onnxruntime_ms(models.decode_model(capacity), inputs, repeats).median)
        by_length["onnxruntime GQA (shared buffer)"].append(
            onnxruntime_bound_ms(models.group_query_attention_model(capacity), gqa_inputs(inputs), repeats).median)
    by_capacity = {name: [] for name in by_length}
    for cap in capacities:
        inputs = models.decode_inputs(cap, valid, rng)
        by_capacity["kvattn"].append(kvattn_ms(models.decode_model(cap), inputs, repeats).median)
        by_capacity["onnxruntime"].append(onnxruntime_ms(models.decode_model(cap), inputs, repeats).median)
        by_capacity["onnxruntime GQA (shared buffer)"].append(
            onnxruntime_bound_ms(models.group_query_attention_model(cap), gqa_inputs(inputs), repeats).median)
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4))
    for name in by_length:
        left.plot(lengths, by_length[name], marker="o", label=name)
        right.plot(capacities, by_capacity[name], marker="o", label=name)
    left.set(title=f"decode step, capacity {capacity}", xlabel="valid tokens", ylabel="ms (median)")
    right.set(title=f"decode step, {valid} valid tokens", xlabel="cache capacity", ylabel="ms (median)")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.set_ylim(bottom=0)
    left.legend()
    figure.suptitle(f"fp32, 32 query / 8 KV heads, head 128; {machine()}, "
                    f"{datetime.date.today()}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
