"""Token generation with a realistic decoder: kvattn vs onnxruntime vs OpenVINO on the same ONNX file.

The model: a Llama-style decoder exported from transformers by torch.onnx.export(dynamo=True) as
the test fixtures are (benchmarks/export_generate_model.py: hidden 1024, 8 layers, 16 query / 4 KV
heads, head 64, vocab 32000, fp32, 623 MB of random weights; concat KV caches past_key_<l> ->
present_key_<l>, attention_mask over past + new). Export it once (needs torch, in its own venv):

    /tmp/exportenv/bin/python -m benchmarks.export_generate_model     # -> ~/.cache/kvattn-bench/llama-1024x8
    python -m benchmarks.generate_speed [--model DIR] [--plot benchmarks/generate_speed.png] [--quick]
                                        [--engines kvattn,ort,...] [--no-diag]

Engines, each measured in its own subprocess (so its peak RSS, VmHWM, is its own):
  kvattn                 kvattn.runtime.generate.Generator on the compiled module (caches on the
                         device, a DecodeSession; concat caches: each present is a new buffer)
  kvattn static          the same compiled with --static-kv-cache CAPACITY (fixed-capacity caches
                         updated in place); CAPACITY covers the largest context
  kvattn seq=1 (diag.)   compiled with --dim batch=1 --dim seq=1: a decode-only module, to tell what
                         the symbolic query length costs a decode step (no prefill column)
  kvattn + data tiling   kvattn and kvattn static compiled with iree-compile's --iree-opt-data-tiling
    (diag.)              added to kvattn's llvm-cpu flags (not kvattn's default): IREE packs the
                         weights once, at load, and runs its mmt4d matmuls
  onnxruntime            InferenceSession.run, each step's presents fed back as the next pasts
  onnxruntime IO binding outputs bound to ORT-allocated CPU OrtValues, bound as the next step's pasts
  OpenVINO               core.read_model(model.onnx), INFERENCE_PRECISION_HINT=f32, latency hint,
                         presents fed back as pasts (share_inputs=True)
  OpenVINO stateful      the same after openvino's make_stateful transformation (the caches become
                         internal state variables, as optimum-intel exports them)

Measured, per engine:
  generate   prompt 512 tokens (one prefill from an empty cache) then 128 new tokens, greedy: prefill
             ms (the first call, to the first token) and decode tokens/s over the other 127 steps
             (context 512..639). A warm-up generation of 2 tokens runs first.
  context C  for C in 1024, 4096: the caches start with C rows of random K/V (the same arrays for
             every engine: filling them by a C-token prefill would cost minutes per engine here and
             the step's cost does not depend on the values), then 2 untimed + N timed greedy
             decode steps; tokens/s = 1000 / median step ms.
  peak RSS   VmHWM of the engine's process at the end (weights, caches, runtime, Python).
  lm_head    (diagnostic, skip with --no-diag) the lm_head MatMul alone, [1, 1, 1024] x [1024, 32000],
             in kvattn with a symbolic and a unit seq dim, onnxruntime and numpy.
Check: the greedy ids of every engine against torch's (reference.npz, from the export) and against
onnxruntime's at each context, and the first logits' max |difference|.
Floors (measured here, as benchmarks/decode_speed.py derives its own, but from the best of 10 runs and
with a read bandwidth, as decode reads): decode = bytes read per token (every weight but the embedding
table, one embedding row, the valid K/V rows) at the rate numpy's GEMV streams a 256 MiB matrix;
prefill = FLOPs (2 x weights x tokens + causal attention) at numpy's fp32 matmul rate.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import export_generate_model as spec
from benchmarks.timing import machine

ENGINES = {  # name -> (label, kvattn compile options or None)
    "kvattn": ("kvattn", {}),
    "kvattn-static": ("kvattn --static-kv-cache", {"static": True}),
    "kvattn-seq1": ("kvattn --dim seq=1 *", {"dims": {"batch": 1, "seq": 1}}),
    "kvattn-dt": ("kvattn + IREE data tiling *", {"flags": ["--iree-opt-data-tiling"]}),
    "kvattn-static-dt": ("kvattn --static-kv-cache + IREE data tiling *",
                         {"static": True, "flags": ["--iree-opt-data-tiling"]}),
    "ort": ("onnxruntime", None),
    "ort-iobinding": ("onnxruntime IO binding", None),
    "openvino": ("OpenVINO", None),
    "openvino-stateful": ("OpenVINO stateful", None),
}
OTHERS = ("ort", "ort-iobinding", "openvino", "openvino-stateful")
LAYERS, KV_HEADS, HEAD = (spec.CONFIG[k] for k in ("num_hidden_layers", "num_key_value_heads", "head_dim"))
VOCAB, HIDDEN = spec.CONFIG["vocab_size"], spec.CONFIG["hidden_size"]
WARM_STEPS = 2
THREADS = os.cpu_count() or 2


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all processes have used since boot (/proc/stat), those of this process and its waited-for
    children): their difference over a run is what other processes took from it."""
    import resource

    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in stat.readline().split()[1:8])
    mine = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), mine


def random_pasts(context: int, seed: int) -> dict[str, np.ndarray]:
    """C rows of K/V per layer, roughly the scale of the model's own (std 0.6)."""
    rng = np.random.default_rng(seed)
    return {name: (0.6 * rng.standard_normal((1, KV_HEADS, context, HEAD), dtype=np.float32))
            for name in spec.cache_names("past")}


def empty_pasts() -> dict[str, np.ndarray]:
    return {name: np.zeros((1, KV_HEADS, 0, HEAD), np.float32) for name in spec.cache_names("past")}


# --------------------------------------------------------------------------- engines (one per subprocess)

class Engine:
    """start(pasts) resets the caches; step(ids [1, n], total) -> the last logits row [vocab]."""

    prefill = True  # takes a whole prompt in one call

    def start(self, pasts: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def step(self, ids: np.ndarray, total: int) -> np.ndarray:
        raise NotImplementedError

    def generate(self, prompt: np.ndarray, new_tokens: int) -> dict:
        """Greedy generation from an empty cache: ids, prefill ms, decode tokens/s."""
        self.start(empty_pasts())
        started = time.perf_counter()
        logits = self.step(prompt, prompt.shape[1])
        first_logits = logits
        ids = [int(np.argmax(logits))]
        prefill_ms = (time.perf_counter() - started) * 1e3
        decode_started = time.perf_counter()
        while len(ids) < new_tokens:
            logits = self.step(np.array([[ids[-1]]], np.int64), prompt.shape[1] + len(ids))
            ids.append(int(np.argmax(logits)))
        seconds = time.perf_counter() - decode_started
        return {"ids": ids, "first_logits": first_logits, "prefill_ms": prefill_ms,
                "tokens_per_s": (new_tokens - 1) / seconds if new_tokens > 1 else None}

    def decode_at(self, context: int, steps: int, seed: int) -> dict:
        """`steps` timed greedy steps (after WARM_STEPS) on caches holding `context` random rows."""
        self.start(random_pasts(context, seed))
        token, ids, times, first_logits = 1, [], [], None
        for index in range(WARM_STEPS + steps):
            started = time.perf_counter()
            logits = self.step(np.array([[token]], np.int64), context + index + 1)
            token = int(np.argmax(logits))
            times.append((time.perf_counter() - started) * 1e3)
            ids.append(token)
            if first_logits is None:
                first_logits = logits
        timed = times[WARM_STEPS:]
        return {"ids": ids, "first_logits": first_logits, "step_ms": float(np.median(timed)),
                "step_ms_min": float(np.min(timed)), "tokens_per_s": 1e3 / float(np.median(timed))}


class KvattnEngine(Engine):
    def __init__(self, vmfb: str):
        from kvattn.runtime.generate import Generator

        self.generator = Generator(vmfb)
        self.module = self.generator.module
        self.prefill = self.generator.rows is None
        self.session = None

    def generate(self, prompt, new_tokens):
        """Through kvattn's own Generator (what `kvattn generate` runs)."""
        if not self.prefill:
            return None
        result = self.generator(prompt, new_tokens)
        return {"ids": result.new_ids[0].tolist(), "first_logits": None, "prefill_ms": result.prefill_ms,
                "tokens_per_s": result.decode_tokens_per_s}

    def start(self, pasts):
        from kvattn.runtime.session import DecodeSession

        self.session = DecodeSession(self.module, pasts, self.generator.links)
        unknown = set(self.session.step_inputs) - {"input_ids", "attention_mask"}
        if unknown:
            raise SystemExit(f"the kvattn module takes inputs this benchmark does not feed: {sorted(unknown)}")

    def step(self, ids, total):
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64)}
        outputs = self.session.step({name: feeds[name] for name in self.session.step_inputs})
        return outputs[self.generator.logits_output][0, -1]


def _ort_session(model: str | bytes):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OrtEngine(Engine):
    def __init__(self, model: str):
        self.session = _ort_session(model)
        self.outputs = [output.name for output in self.session.get_outputs()]

    def start(self, pasts):
        self.pasts = dict(pasts)

    def step(self, ids, total):
        results = self.session.run(None, {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64),
                                          **self.pasts})
        named = dict(zip(self.outputs, results))
        self.pasts = {name: named[name.replace("past", "present")] for name in self.pasts}
        return named["logits"][0, -1]


class OrtBoundEngine(OrtEngine):
    """Presents in ORT-allocated OrtValues (never copied to numpy), bound as the next pasts."""

    def start(self, pasts):
        import onnxruntime

        self.pasts = {name: onnxruntime.OrtValue.ortvalue_from_numpy(array) for name, array in pasts.items()}

    def step(self, ids, total):
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", np.ones((1, total), np.int64))
        for name, value in self.pasts.items():
            binding.bind_ortvalue_input(name, value)
        for name in self.outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        named = dict(zip(self.outputs, binding.get_outputs()))
        self.pasts = {name: named[name.replace("past", "present")] for name in self.pasts}
        return named["logits"].numpy()[0, -1]


class OpenVinoEngine(Engine):
    def __init__(self, model: str, stateful: bool):
        import openvino

        self.openvino = openvino
        core = openvino.Core()
        self.default_precision = str(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
        graph = core.read_model(model)
        self.stateful = stateful
        if stateful:
            from openvino._offline_transformations import apply_make_stateful_transformation

            apply_make_stateful_transformation(graph, {name: name.replace("past", "present")
                                                       for name in spec.cache_names("past")})
        self.compiled = core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                          "PERFORMANCE_HINT": "LATENCY"})
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.request = self.compiled.create_infer_request()
        self.logits = self.compiled.output("logits")

    def start(self, pasts):
        if self.stateful:
            for state in self.request.query_state():  # named <past><present> by make_stateful
                name = next(past for past in pasts if state.name == past + past.replace("past", "present"))
                state.state = self.openvino.Tensor(np.ascontiguousarray(pasts[name]))
            self.pasts = {}
        else:
            self.pasts = dict(pasts)

    def step(self, ids, total):
        results = self.request.infer({"input_ids": ids, "attention_mask": np.ones((1, total), np.int64),
                                      **self.pasts}, share_inputs=True)
        if not self.stateful:
            self.pasts = {name: results[self.compiled.output(name.replace("past", "present"))] for name in self.pasts}
        return results[self.logits][0, -1]


def run_engine(args) -> dict:
    """In the engine's own process: load, generate, decode at each context; results as JSON + npz."""
    model = str(args.model / "model.onnx")
    loaded = time.perf_counter()
    info = {}
    if args.engine.startswith("kvattn"):
        engine = KvattnEngine(args.vmfb)
    elif args.engine == "ort":
        engine = OrtEngine(model)
    elif args.engine == "ort-iobinding":
        engine = OrtBoundEngine(model)
    else:
        engine = OpenVinoEngine(model, stateful=args.engine == "openvino-stateful")
        info["precision"] = f"{engine.precision} (CPU default {engine.default_precision})"
    info["load_s"] = time.perf_counter() - loaded
    prompt = spec.prompt_ids(args.prompt)
    arrays = {}
    if engine.prefill:
        engine.generate(prompt, 2)  # warm-up: first-call costs, weights paged in
        generated = engine.generate(prompt, args.new)
        arrays["generate.ids"] = np.array(generated.pop("ids"))
        first = generated.pop("first_logits")
        if first is not None:
            arrays["generate.first_logits"] = first
        info["generate"] = generated
    for context in args.contexts:
        steps = args.steps if context <= 1024 else args.steps_long
        result = engine.decode_at(context, steps, seed=context)
        arrays[f"c{context}.ids"] = np.array(result.pop("ids"))
        arrays[f"c{context}.first_logits"] = result.pop("first_logits")
        info[f"c{context}"] = result
    np.savez(args.work / f"{args.engine}.npz", **arrays)
    info["peak_rss_mb"] = _rss_mb()
    return info


def matvec_diag() -> dict:
    """Where a decode step's time goes: the lm_head MatMul alone (x [1, seq, 1024] @ W [1024, 32000], 131 MB
    of fp32 weights, an IREE parameter as in the model), with seq symbolic (as exported) and bound to 1,
    against onnxruntime and numpy on the same arrays; median ms of 20 calls."""
    from onnx import TensorProto, helper, numpy_helper

    from benchmarks.timing import median_ms
    from kvattn.runtime.compiler import compile_model
    from kvattn.runtime.module import CompiledModule

    rng = np.random.default_rng(0)
    weight = 0.02 * rng.standard_normal((HIDDEN, VOCAB), dtype=np.float32)
    x = rng.standard_normal((1, 1, HIDDEN), dtype=np.float32)

    def model(seq):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "lm_head",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, HIDDEN])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, VOCAB])],
            [numpy_helper.from_array(weight, "w")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])

    def kvattn_ms(seq) -> float:
        compiled = compile_model(model(seq), inline_weights=False)
        module = CompiledModule(compiled.vmfb, params=compiled.params)
        views = module.upload({"x": x})
        ms = median_ms(lambda: module.invoke(views), 20)
        os.unlink(compiled.params)
        return ms

    result = {"weight_mb": weight.nbytes / 1e6, "kvattn_symbolic_seq": kvattn_ms("seq"), "kvattn_seq1": kvattn_ms(1)}
    session = _ort_session(model("seq").SerializeToString())
    result["onnxruntime"] = median_ms(lambda: session.run(None, {"x": x}), 20)
    result["numpy"] = median_ms(lambda: x @ weight, 20)
    return result


def compile_engine(args) -> dict:
    """In its own process: compile (or find in kvattn's cache) the module for one kvattn engine."""
    from kvattn.lowering.diagnostics import KvattnError
    from kvattn.runtime import compiler

    options = ENGINES[args.engine][1]
    if options.get("flags"):  # extra iree-compile flags (diagnostics; part of the compile cache's key)
        import dataclasses

        from kvattn.runtime import targets

        cpu = targets.TARGETS["llvm-cpu"]
        targets.TARGETS["llvm-cpu"] = dataclasses.replace(cpu, base_flags=cpu.base_flags + tuple(options["flags"]))
    started = time.perf_counter()
    try:
        vmfb = compiler.compile_cached(args.model / "model.onnx", static_kv_cache=args.capacity if options.get(
            "static") else None, dims=options.get("dims"))
    except KvattnError as exc:
        return {"error": str(exc).splitlines()[0][:300]}
    return {"vmfb": str(vmfb), "seconds": time.perf_counter() - started, "peak_rss_mb": _rss_mb()}


# --------------------------------------------------------------------------- the run

def _subprocess(args, engine: str, what: str, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "benchmarks.generate_speed", f"--{what}", *([engine] if engine else []),
               "--model", str(args.model),
               "--work", str(args.work), "--prompt", str(args.prompt), "--new", str(args.new),
               "--contexts", ",".join(map(str, args.contexts)), "--steps", str(args.steps),
               "--steps-long", str(args.steps_long), "--capacity", str(args.capacity), *extra]
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode != 0:
        lines = (process.stderr.strip() or process.stdout.strip() or "?").splitlines()
        return {"error": lines[-1][:300]}
    return json.loads(process.stdout.strip().splitlines()[-1])


def _versions() -> str:
    from importlib import metadata

    names = ("iree-base-runtime", "onnxruntime", "openvino", "onnx", "numpy")
    return ", ".join(f"{name} {metadata.version(name)}" for name in names)


def _agreement(want: np.ndarray | None, got: np.ndarray | None) -> str:
    """How many leading greedy ids agree."""
    if want is None or got is None:
        return ""
    same = int(np.argmin(np.append(want[:len(got)] == got[:len(want)], False)))
    return f"{same}/{len(want)}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=pathlib.Path, default=spec.DEFAULT_OUT,
                        help="directory with model.onnx (+ .data, reference.npz) from export_generate_model")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated, of: " + ", ".join(ENGINES))
    parser.add_argument("--prompt", type=int, default=spec.PROMPT_LENGTH)
    parser.add_argument("--new", type=int, default=spec.NEW_TOKENS)
    parser.add_argument("--contexts", default="1024,4096")
    parser.add_argument("--steps", type=int, default=48, help="timed decode steps at contexts up to 1024")
    parser.add_argument("--steps-long", type=int, default=24, help="timed decode steps at longer contexts")
    parser.add_argument("--capacity", type=int, help="--static-kv-cache capacity (default: largest context + 64)")
    parser.add_argument("--plot", metavar="PNG", help="write the plot here")
    parser.add_argument("--quick", action="store_true", help="prompt 32, 8 new tokens, contexts 64,256, 4 steps")
    parser.add_argument("--work", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one engine in this process
    parser.add_argument("--compile", help=argparse.SUPPRESS)  # internal: compile one kvattn engine
    parser.add_argument("--vmfb", help=argparse.SUPPRESS)
    parser.add_argument("--no-diag", action="store_true", help="skip the lm_head MatMul diagnostic")
    parser.add_argument("--diag", action="store_true", help=argparse.SUPPRESS)  # internal: run it here
    args = parser.parse_args(argv)
    if args.quick:
        args.prompt, args.new, args.contexts, args.steps, args.steps_long = 32, 8, "64,256", 4, 4
    args.contexts = [int(c) for c in str(args.contexts).split(",")]
    args.capacity = args.capacity or max(args.contexts) + 64
    if args.engine:
        print(json.dumps(run_engine(args)))
        return 0
    if args.diag:
        print(json.dumps(matvec_diag()))
        return 0
    if args.compile:
        args.engine = args.compile
        print(json.dumps(compile_engine(args)))
        return 0
    if not (args.model / "model.onnx").is_file():
        print(f"no model at {args.model}: export it first with\n  <a venv with torch, transformers, onnxscript>"
              f"/bin/python -m benchmarks.export_generate_model --out {args.model}", file=sys.stderr)
        return 1
    if args.capacity < max(args.prompt + args.new, max(args.contexts) + WARM_STEPS + max(args.steps, args.steps_long)):
        print("--capacity is below the largest context + the decode steps", file=sys.stderr)
        return 1
    engines = args.engines.split(",")
    started, cpu = time.perf_counter(), _cpu_seconds()

    gbps, gflops = read_gbps(), matmul_gflops()
    print(f"# {datetime.date.today()}, {machine()}; {_versions()}")
    print(f"# model {args.model}: {spec.weight_bytes() / 1e6:.0f} MB fp32 weights; prompt {args.prompt}, "
          f"{args.new} new tokens; contexts {args.contexts} ({args.steps} / {args.steps_long} timed steps); "
          f"static capacity {args.capacity}")
    print(f"floors: weights streamed by numpy's GEMV {gbps:.1f} GB/s, fp32 matmul {gflops:.0f} GFLOP/s "
          f"(the best of 10 / 8 runs)", flush=True)

    work = tempfile.TemporaryDirectory(prefix="kvattn-generate-")
    args.work = pathlib.Path(work.name)
    results, compiled = {}, {}
    for engine in engines:
        extra = []
        if ENGINES[engine][1] is not None:
            compiled[engine] = _subprocess(args, engine, "compile", [])
            if "error" in compiled[engine]:
                results[engine] = compiled[engine]
                print(f"{engine}: compile: {compiled[engine]['error']}", flush=True)
                continue
            print(f"{engine}: compiled in {compiled[engine]['seconds']:.1f} s "
                  f"(peak RSS {compiled[engine]['peak_rss_mb']:.0f} MB; 0 s = kvattn's compile cache)", flush=True)
            extra = ["--vmfb", compiled[engine]["vmfb"]]
        engine_started = time.perf_counter()
        results[engine] = _subprocess(args, engine, "engine", extra)
        print(f"{engine}: {json.dumps(results[engine])} ({time.perf_counter() - engine_started:.0f} s)", flush=True)

    diag = None if args.no_diag else _subprocess(args, "", "diag", [])
    arrays = {engine: dict(np.load(args.work / f"{engine}.npz")) for engine in engines
              if (args.work / f"{engine}.npz").is_file()}
    report(args, engines, results, arrays, gbps, gflops)
    if diag:
        floor = diag.get("weight_mb", 0) * 1e6 / (gbps * 1e9) * 1e3
        print(f"\nlm_head MatMul alone, [1, 1, {HIDDEN}] x [{HIDDEN}, {VOCAB}] ({diag.get('weight_mb', 0):.0f} MB), "
              f"median ms (floor {floor:.2f} ms): "
              + (diag["error"] if "error" in diag else
                 "; ".join(f"{name} {ms:.2f}" for name, ms in diag.items() if name != "weight_mb")))
    if args.plot:
        plot(args.plot, args, engines, results, gbps, gflops)
    work.cleanup()
    seconds, (all_cpu, mine) = time.perf_counter() - started, _cpu_seconds()
    others = (all_cpu - cpu[0]) - (mine - cpu[1])
    print(f"# total {seconds:.0f} s; other processes used {others:.0f} CPU-s meanwhile "
          f"({others / (seconds * THREADS):.0%} of the {THREADS} cores)")
    return 0


def read_gbps() -> float:
    """Bytes read per second by numpy's (BLAS) matrix-vector product over a 256 MiB fp32 matrix: a decode
    step's main work, streaming the weights once. The best of 10 runs (a floor takes the best rate seen)."""
    from benchmarks.timing import samples_ms

    matrix = np.ones((8192, 8192), np.float32)
    vector = np.ones(8192, np.float32)
    return matrix.nbytes / (min(samples_ms(lambda: vector @ matrix, 10, warmup=2)) * 1e-3) / 1e9


def matmul_gflops(size: int = 3072) -> float:
    """numpy's fp32 matmul rate on size² (the best of 8 runs)."""
    from benchmarks.timing import samples_ms

    a = np.ones((size, size), np.float32)
    return 2 * size**3 / (min(samples_ms(lambda: a @ a, 8, warmup=2)) * 1e-3) / 1e9


def decode_floor_ms(context: int, gbps: float) -> float:
    """Every weight but the embedding table (one row of it), and the valid K/V rows, read once."""
    weights = spec.weight_bytes() - 4 * VOCAB * HIDDEN + 4 * HIDDEN
    kv = 2 * LAYERS * KV_HEADS * context * HEAD * 4
    return (weights + kv) / (gbps * 1e9) * 1e3


def prefill_floor_ms(length: int, gflops: float) -> float:
    """2 FLOPs per weight (but the embedding) per token, and causal attention (QKᵀ, PV: half of 4·S²·D·H)."""
    weights = spec.weight_bytes() / 4 - VOCAB * HIDDEN
    attention = 2 * spec.CONFIG["num_attention_heads"] * length * length * HEAD * LAYERS
    return (2 * weights * length + attention) / (gflops * 1e9) * 1e3


def _contexts(args) -> list[tuple[str, str, int]]:
    """(column label, result key, context used for the floor)."""
    generate = (f"decode tok/s, context {args.prompt}–{args.prompt + args.new}", "generate",
                args.prompt + args.new // 2)
    return [generate] + [(f"decode tok/s, context {c}", f"c{c}", c) for c in args.contexts]


def report(args, engines, results, arrays, gbps, gflops) -> None:
    reference = np.load(args.model / "reference.npz") if (args.model / "reference.npz").is_file() else None
    use_reference = reference is not None and args.prompt == spec.PROMPT_LENGTH and args.new <= len(
        reference["new_ids"])
    columns = _contexts(args)
    header = ["engine", "prefill ms"] + [label for label, _, _ in columns] + ["peak RSS MB", "greedy ids agree"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for engine in engines:
        r = results.get(engine, {})
        if "error" in r:
            print(f"| {ENGINES[engine][0]} | {r['error']} |" + " |" * (len(header) - 2))
            continue
        cells = [ENGINES[engine][0], f"{r['generate']['prefill_ms']:.0f}" if "generate" in r else "n/a"]
        for _, key, _ in columns:
            cells.append(f"{r[key]['tokens_per_s']:.1f}" if key in r and r[key].get("tokens_per_s") else "n/a")
        cells.append(f"{r['peak_rss_mb']:,.0f}")
        agree = []
        got = arrays.get(engine, {})
        if use_reference and "generate.ids" in got:
            agree.append(f"torch {_agreement(reference['new_ids'][:args.new], got['generate.ids'])}")
        base = arrays.get("ort", {})
        for context in args.contexts:
            key = f"c{context}.ids"
            if engine != "ort" and key in got and key in base:
                diff = float(np.abs(got[f"c{context}.first_logits"] - base[f"c{context}.first_logits"]).max())
                agree.append(f"ORT@{context} {_agreement(base[key], got[key])} (logits ±{diff:.0e})")
        cells.append("; ".join(agree))
        print("| " + " | ".join(cells) + " |")
    floor_cells = ["floor", f"{prefill_floor_ms(args.prompt, gflops):.0f}"] + [
        f"{1e3 / decode_floor_ms(context, gbps):.1f}" for _, _, context in columns] + ["", ""]
    print("| " + " | ".join(floor_cells) + " |")
    print("(* a diagnostic build, not kvattn's default: --dim batch=1 --dim seq=1 is a decode-only module; "
          "data tiling adds iree-compile's --iree-opt-data-tiling)")

    ok = lambda engine: engine in results and "error" not in results[engine]  # noqa: E731
    others = [engine for engine in OTHERS if ok(engine)]
    for mine in (engine for engine in ENGINES if engine.startswith("kvattn")):
        if not ok(mine) or not others:
            continue
        print(f"\n{ENGINES[mine][0]} vs the best of the others:")
        if "generate" in results[mine]:
            best = min((e for e in others if "generate" in results[e]), key=lambda e: results[e]["generate"]["prefill_ms"])
            ort_ms = results["ort"]["generate"]["prefill_ms"] if ok("ort") else None
            print(f"  prefill {results[mine]['generate']['prefill_ms']:.0f} ms: {ENGINES[best][0]} "
                  f"{results[best]['generate']['prefill_ms']:.0f} ms -> "
                  f"{results[best]['generate']['prefill_ms'] / results[mine]['generate']['prefill_ms']:.2f}x"
                  + (f"; vs onnxruntime {ort_ms / results[mine]['generate']['prefill_ms']:.2f}x (goal >= 1)"
                     if ort_ms else ""))
        for label, key, context in columns:
            if key not in results[mine] or not results[mine][key].get("tokens_per_s"):
                continue
            best = max((e for e in others if key in results[e]), key=lambda e: results[e][key]["tokens_per_s"])
            mine_rate, best_rate = results[mine][key]["tokens_per_s"], results[best][key]["tokens_per_s"]
            floor_rate = 1e3 / decode_floor_ms(context, gbps)
            print(f"  {label}: {mine_rate:.1f} vs {ENGINES[best][0]} {best_rate:.1f} -> {mine_rate / best_rate:.2f}x "
                  f"(goal >= 1.3); {mine_rate / floor_rate:.0%} of the floor's {floor_rate:.1f}")


SHORT = {"kvattn": "kvattn", "kvattn-static": "kvattn static", "kvattn-seq1": "kvattn seq=1 *",
         "kvattn-dt": "kvattn + data tiling *", "kvattn-static-dt": "kvattn static + data tiling *",
         "ort": "onnxruntime", "ort-iobinding": "onnxruntime IO binding", "openvino": "OpenVINO",
         "openvino-stateful": "OpenVINO stateful"}


def plot(path: str, args, engines, results, gbps, gflops) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    shown = [engine for engine in engines if "error" not in results.get(engine, {"error": 1})]
    colors = {engine: f"C{index}" for index, engine in enumerate(shown)}
    columns = _contexts(args)
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 2.2]})
    with_prefill = [engine for engine in shown if "generate" in results[engine]]
    left.bar(range(len(with_prefill)), [results[e]["generate"]["prefill_ms"] for e in with_prefill],
             color=[colors[e] for e in with_prefill])
    left.axhline(prefill_floor_ms(args.prompt, gflops), color="k", linestyle="--", linewidth=1)
    left.set_xticks(range(len(with_prefill)), [SHORT.get(e, e) for e in with_prefill], rotation=35, ha="right",
                    fontsize=8)
    left.set(title=f"prefill, {args.prompt} tokens", ylabel="ms (lower is better)")
    width = 0.8 / len(shown)
    for index, engine in enumerate(shown):
        rates = [results[engine][key]["tokens_per_s"] if key in results[engine] and results[engine][key].get(
            "tokens_per_s") else 0 for _, key, _ in columns]
        right.bar(np.arange(len(columns)) + (index - (len(shown) - 1) / 2) * width, rates, width,
                  label=SHORT.get(engine, engine), color=colors[engine])
    for position, (_, _, context) in enumerate(columns):
        right.hlines(1e3 / decode_floor_ms(context, gbps), position - 0.45, position + 0.45, colors="k",
                     linestyles="--", linewidth=1, label="floor" if position == 0 else None)
    right.set_xticks(range(len(columns)), [label.replace("decode tok/s, ", "") for label, _, _ in columns])
    right.set(title="decode, batch 1 (floor: bytes read per token at numpy's GEMV bandwidth)",
              ylabel="tokens/s (higher is better)")
    for axes in (left, right):
        axes.grid(alpha=0.3, axis="y")
    handles, labels = right.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    figure.suptitle(f"Llama-style decoder (hidden 1024, 8 layers, 16/4 heads, vocab 32000, fp32, 623 MB); "
                    f"* = diagnostic build; {machine()}, {datetime.date.today()}", fontsize=9)
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
