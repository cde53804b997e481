"""The `kvattn` command line: compile, run, generate, inspect, demo.

No command prints a Python traceback unless asked (`--debug` or KVATTN_DEBUG=1): the user's
mistakes (KvattnError, and file-system errors naming a path) are `kvattn: error: ...` with exit
code 1; failures inside kvattn or IREE are `kvattn: internal error ...` with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import traceback

import numpy as np

from kvattn.lowering import onnx_params
from kvattn.lowering.diagnostics import InternalError, KvattnError
from kvattn.runtime import compiler, parameters, targets

_STAGES = ("imported", "raised", "lowered", "input") + compiler.IREE_STAGES
_DEBUG_HELP = "show the Python traceback of a failure (also KVATTN_DEBUG=1)"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("KVATTN_DEBUG") == "1"
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        print("kvattn: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure becomes a message; the traceback only with --debug
        if debug:
            traceback.print_exc()
        if isinstance(exc, KvattnError):
            print(f"kvattn: error: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, OSError) and exc.filename is not None:
            print(f"kvattn: error: '{exc.filename}': {exc.strerror or exc}", file=sys.stderr)
            return 1
        if isinstance(exc, InternalError):
            print(f"kvattn: {exc}", file=sys.stderr)
        else:
            first_line = (str(exc).strip().splitlines() or ["(no message)"])[0]
            print(f"kvattn: internal error: {type(exc).__name__}: {first_line}", file=sys.stderr)
        if not debug:
            print("kvattn: rerun with --debug for the traceback", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvattn",
        description="Compile ONNX models that use Attention / TensorScatter to IREE modules, run them, "
                    "and show the IR at every stage.",
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    # Each subcommand takes --debug too (after its name); SUPPRESS keeps a flag given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("compile", help="compile an .onnx model to a .vmfb", parents=[common],
                       description="Compile an ONNX model to an IREE .vmfb module.")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("-o", "--output", required=True, help="where to write the .vmfb")
    p.add_argument("--params-out", metavar="FILE.irpa",
                   help="where to write the parameter archive of externalized weights (default: beside the "
                        "vmfb, model.vmfb -> model.irpa); implies externalized weights")
    _add_target_options(p)
    p.add_argument("--dump-ir", metavar="DIR",
                   help="write the IR after each kvattn stage (and iree-compile's phases under DIR/iree)")
    _add_model_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.set_defaults(handler=_compile)

    p = sub.add_parser("run", help="run a .vmfb (or an .onnx, compiled and cached first)", parents=[common],
                       description="Run a compiled module with inputs from .npy files and print or save its outputs. "
                                   "An .onnx argument is compiled first; the vmfb is cached by content and flags "
                                   f"(in $KVATTN_CACHE_DIR, default {compiler.cache_dir()}).")
    p.add_argument("model", help="a .vmfb made by kvattn, or an .onnx file")
    p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=@FILE.npy",
                   help="one model input from a .npy file; repeat for each input")
    p.add_argument("--output-dir", metavar="DIR", help="save each output as DIR/<name>.npy instead of printing it")
    p.add_argument("--params", metavar="FILE.irpa",
                   help="the parameter archive of a vmfb compiled with externalized weights (default: the .irpa "
                        "beside the vmfb, model.vmfb -> model.irpa)")
    p.add_argument("--steps", type=int, metavar="N",
                   help="run N decode steps in a session that keeps the model's KV caches on the device "
                        "(caches: inputs whose update is an output, e.g. past_key -> present_key; they start "
                        "from their -i files, or zeros). Each other input's file holds one array used every "
                        "step, or N arrays stacked on a new leading axis. Outputs are stacked per step; the "
                        "caches are written once, after the last step")
    _add_target_options(p, "when compiling an .onnx argument")
    _add_model_options(p, "when compiling an .onnx argument")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.set_defaults(handler=_run)

    p = sub.add_parser("generate", help="token generation with a decoder (.onnx, .vmfb or a model directory)",
                       parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=_GENERATE_DESCRIPTION, epilog=_GENERATE_EPILOG)
    p.add_argument("model", help="a .vmfb made by kvattn, an .onnx file, or a model directory (onnxruntime-genai's "
                                 "genai_config.json naming the decoder, or one .onnx; tokenizer.json beside it)")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", action="append", metavar="TEXT",
                        help="the prompt as text, encoded with the tokenizer.json beside the model (the tokenizers "
                             "package); the new text is printed as it is generated. Repeat for a batch")
    prompt.add_argument("--prompt-ids", action="append", metavar="ID,ID,...",
                        help="the prompt's token ids, comma-separated; repeat for a batch of prompts (shorter ones "
                             "are left-padded and masked)")
    p.add_argument("--max-new-tokens", type=int, required=True, metavar="N", help="how many tokens to generate")
    p.add_argument("--eos-id", type=int, action="append", metavar="ID",
                   help="end a prompt's generation at this token (it is kept, and the prompt's later positions "
                        "repeat it); repeat for several; generation stops when every prompt has ended (default: "
                        "the eos ids of genai_config.json, generation_config.json or config.json beside the model)")
    p.add_argument("--pad-id", type=int, metavar="ID",
                   help="the token id put at the left padding of shorter prompts (it is masked out; default: "
                        "genai_config.json's pad_token_id, else 0)")
    search = p.add_argument_group("search (default: genai_config.json's, else greedy)")
    search.add_argument("--do-sample", action=argparse.BooleanOptionalAction, default=None,
                        help="draw each token from the softmax (with the options below) instead of the argmax")
    search.add_argument("--temperature", type=float, metavar="T", help="divide the logits by T before sampling")
    search.add_argument("--top-k", type=int, metavar="K", help="sample among the K most probable tokens (0: all)")
    search.add_argument("--top-p", type=float, metavar="P",
                        help="sample among the fewest most probable tokens whose probabilities add up to P")
    search.add_argument("--repetition-penalty", type=float, metavar="R",
                        help="divide (multiply, if negative) the logit of every token already in the sequence by R; "
                             "greedy too")
    search.add_argument("--seed", type=int, metavar="N", help="the sampler's seed: the same seed gives the same ids")
    p.add_argument("--output-ids", metavar="FILE.npy",
                   help="save the prompts and the new tokens, int64 [batch, prompt + new], to FILE.npy")
    p.add_argument("--cache", action="append", default=[], metavar="PAST=PRESENT",
                   help="feed output PRESENT back as input PAST at each step (a KV cache the compiler and the "
                        "names do not pair); repeat for each")
    p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=@FILE.npy",
                   help="a model input generate does not feed, the same array every step (or the first value "
                        "of a fixed-size input fed back, such as _sliding_window_tensor); repeat for each")
    p.add_argument("--params", metavar="FILE.irpa",
                   help="the parameter archive of a vmfb compiled with externalized weights (default: the .irpa "
                        "beside the vmfb)")
    _add_target_options(p, "when compiling an .onnx argument")
    _add_model_options(p, "when compiling an .onnx argument")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.set_defaults(handler=_generate)

    p = sub.add_parser("inspect", help="show the IR at a stage, or a summary of the compilation", parents=[common],
                       description="Without --stage: which ONNX nodes became which kvattn ops, what each lowered "
                                   "to, and how many dispatches the module has. With --stage: the IR at that stage "
                                   "(kvattn stages: imported, raised, lowered, input; IREE stages via --compile-to).")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--stage", choices=_STAGES, help="print the IR at this stage")
    _add_target_options(p, "for IREE stages")
    _add_model_options(p)
    p.set_defaults(handler=_inspect)

    p = sub.add_parser("demo", help="compile and run a built-in decode-step model, checked against onnx.reference",
                       parents=[common], description="Build a decode step (two TensorScatter cache updates + Attention-24 with GQA and "
                                   "nonpad_kv_seqlen), compile it, run 8 decode steps in a decode session (the "
                                   "caches stay on the device, updated in place), and check every step against "
                                   "onnx.reference.")
    p.add_argument("--steps", type=int, default=8, help="decode steps to run (default 8)")
    p.set_defaults(handler=_demo)
    return parser


_GENERATE_DESCRIPTION = """\
Generate tokens with an exported decoder step, greedily (the argmax of the last logits row) or
sampled: the prompt runs as one prefill, then each new token as one decode step, the KV caches
kept on the device between steps. An .onnx argument is compiled first (cached by content and
flags, as `run` does). Prints the new text (with --prompt) and ids, the prefill time and the
decode rate."""
_GENERATE_EPILOG = """\
The model's inputs are fed by exporters' names: input_ids; attention_mask (0 at the left padding
of shorter prompts); position_ids and cache_position from it; past_length; the KV caches (inputs
whose update is an output: the compiler's cache links, else paired by name, past_key_0 ->
present_key_0, past_key_values.0.key -> present.0.key, input.cache.layers.0.keys ->
output.cache.layers.0.keys), starting empty. A model without a cache runs the whole sequence
again at every step. Any other input needs --input, or --cache when it is a cache the names do
not pair. With --static-kv-cache MAX_LEN the prompt and the new tokens but the last must fit in
MAX_LEN rows.

examples:
  kvattn generate llama.onnx --prompt-ids 1,450,4996 --max-new-tokens 32 --eos-id 2 --output-ids ids.npy
  kvattn generate phi3-int4/ --prompt "The capital of France is" --max-new-tokens 32
  kvattn generate phi3-int4/ --prompt "Once upon a time" --max-new-tokens 64 --do-sample --top-p 0.9 --seed 1"""

# Per-target chip options, as users of each toolchain know them.
_ARCH_OPTIONS = {"llvm-cpu": "--cpu", "vulkan": "--vulkan-target", "cuda": "--cuda-arch", "hip": "--rocm-arch"}


def _add_target_options(parser: argparse.ArgumentParser, when: str = "") -> None:
    group = parser.add_argument_group("target" + (f" ({when})" if when else ""))
    group.add_argument("--target", default="llvm-cpu", choices=sorted(targets.TARGETS),
                       help="; ".join(f"{t.name}: {t.description}" for t in targets.TARGETS.values()))
    for name, option in _ARCH_OPTIONS.items():
        target = targets.get(name)
        group.add_argument(option, dest=f"arch_{name.replace('-', '_')}", metavar="ARCH",
                           help=f"{name} chip (default {target.default_arch})")
    group.add_argument("--attention-precision", choices=list(targets.ATTENTION_PRECISIONS), default="ieee",
                       help="what an f32 model's fused attention rounds Q, K, V and the probabilities to for its "
                            "two matmuls: ieee (default) keeps f32 and is exact; fp16 or bf16 run them on the tensor "
                            "cores of cuda and hip GPUs, with the softmax and the sums in f32 (an error of ~1e-3 "
                            "relative; fp16 turns values beyond 65504 into inf, bf16 keeps f32's range). On llvm-cpu "
                            "it only rounds (and is slower). Attention whose scores are materialized (qk_matmul_output, "
                            "position-reading FlexAttention mods) stays exact")


def _add_model_options(parser: argparse.ArgumentParser, when: str = "") -> None:
    group = parser.add_argument_group("model rewrites" + (f" ({when})" if when else ""))
    group.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE",
                       help="bind the model's symbolic dim NAME (an ONNX dim_param of its inputs/outputs, e.g. "
                            "batch or past_seq) to the size VALUE before compiling; repeat for each dim. The sizes "
                            "computed from it are folded, and the module takes only that size")
    group.add_argument("--static-kv-cache", type=int, metavar="MAX_LEN",
                       help="rewrite concat-style KV caches (Attention past_key/past_value -> present_*, or a "
                            "Concat of a past cache before Attention) into caches of MAX_LEN rows updated in "
                            "place, with a new 'past_length' input; `run --steps` feeds it for you")
    weights = group.add_mutually_exclusive_group()
    weights.add_argument("--inline-weights", dest="inline_weights", action="store_const", const=True,
                         help="keep the weights in the vmfb (default: only when they total less than "
                              f"{onnx_params.AUTO_BYTES >> 20} MiB; otherwise they go to a parameter archive, .irpa)")
    weights.add_argument("--external-weights", dest="inline_weights", action="store_const", const=False,
                         help="put the weights in a parameter archive (.irpa) whatever their size")


def _dims(specs: list[str]) -> dict[str, int]:
    dims = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not (name and sep and value.strip().isdigit()):
            raise KvattnError(f"--dim '{spec}' must look like NAME=VALUE with VALUE a non-negative integer")
        dims[name] = int(value)
    return dims


def _arch(args) -> str | None:
    return getattr(args, f"arch_{args.target.replace('-', '_')}")


def _progress(args):
    if args.quiet:
        return None
    return lambda message: print(f"kvattn: {message}", file=sys.stderr, flush=True)


def _compile(args) -> int:
    output = pathlib.Path(args.output)
    if output.is_dir():
        raise KvattnError(f"-o '{output}' is a directory; give the path of the .vmfb to write")
    if not output.parent.is_dir():
        raise KvattnError(f"-o '{output}': the directory '{output.parent}' does not exist")
    inline_weights = args.inline_weights
    if args.params_out is not None:
        if inline_weights:
            raise KvattnError("--params-out and --inline-weights: inline weights have no parameter archive")
        inline_weights = False
    compiled = compiler.compile_model(args.model, args.target, _arch(args), args.dump_ir, progress=_progress(args),
                                      static_kv_cache=args.static_kv_cache, dims=_dims(args.dim),
                                      inline_weights=inline_weights,
                                      params_out=args.params_out or parameters.beside(output),
                                      attention_precision=args.attention_precision)
    output.write_bytes(compiled.vmfb)
    if not args.quiet:
        archive = (f" and {compiled.params} ({compiled.params.stat().st_size} bytes, "
                   f"{len(compiled.manifest.parameters.keys)} parameters)") if compiled.params else ""
        print(f"kvattn: wrote {args.output} ({len(compiled.vmfb)} bytes){archive}", file=sys.stderr)
    return 0


def _run(args) -> int:
    from kvattn.runtime.module import CompiledModule

    path = pathlib.Path(args.model)
    if not path.is_file():
        raise KvattnError(f"'{path}': no such file")
    inputs = _read_inputs(args.input)
    if args.output_dir and pathlib.Path(args.output_dir).exists() and not pathlib.Path(args.output_dir).is_dir():
        raise KvattnError(f"--output-dir '{args.output_dir}' is a file, not a directory")
    if path.suffix == ".onnx":
        if args.params is not None:
            raise KvattnError(f"--params is for a compiled .vmfb; '{path}' is compiled (with its archive) first")
        module = CompiledModule(compiler.compile_cached(path, args.target, _arch(args), _progress(args),
                                                        args.static_kv_cache, _dims(args.dim), args.inline_weights,
                                                        args.attention_precision))
    elif args.dim or args.static_kv_cache is not None or args.inline_weights is not None or \
            args.attention_precision != "ieee":
        raise KvattnError(f"--dim, --static-kv-cache, --attention-precision and --inline-weights/--external-weights "
                          f"apply when compiling; '{path}' is already compiled")
    else:
        module = CompiledModule.load(path, params=args.params)
    outputs = module.run(inputs) if args.steps is None else _run_steps(module, inputs, args.steps, _progress(args))
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        for name, array in outputs.items():
            np.save(pathlib.Path(args.output_dir) / f"{_file_name(name)}.npy", array)
        if not args.quiet:
            print(f"kvattn: saved {len(outputs)} output(s) in {args.output_dir}", file=sys.stderr)
    else:
        with np.printoptions(threshold=20, edgeitems=3, precision=5):
            for name, array in outputs.items():
                print(f"{name}: {array.dtype}{list(array.shape)}\n{array}")
    return 0


def _run_steps(module, inputs: dict[str, np.ndarray], steps: int, progress) -> dict[str, np.ndarray]:
    import time

    from kvattn.runtime.session import DecodeSession

    if steps < 1:
        raise KvattnError(f"--steps must be at least 1, got {steps}")
    session = DecodeSession(module)
    given = [name for name in session.cache_names if name in inputs]
    if given and len(given) != len(session.cache_names):
        missing = ", ".join(name for name in session.cache_names if name not in inputs)
        raise KvattnError(f"give every cache input or none (they start as zeros); missing {missing}")
    if given:
        session.reset({name: inputs.pop(name) for name in given})  # static caches may be shorter
    shapes = {spec.name: spec.shape for spec in module.manifest.inputs}
    per_step = [name for name, array in inputs.items()
                if name in shapes and array.ndim == len(shapes[name]) + 1 and array.shape[0] == steps]
    stacked = {name: [] for name in session.step_outputs}
    for step in range(steps):
        started = time.perf_counter()
        outputs = session.step({name: array[step] if name in per_step else array for name, array in inputs.items()})
        if progress:
            progress(f"step {step + 1}/{steps}: {(time.perf_counter() - started) * 1e3:.2f} ms")
        for name, array in outputs.items():
            stacked[name].append(array)
    results = {name: np.stack(arrays) for name, arrays in stacked.items()}
    caches = session.caches()
    results.update({link.output: caches[name] for name, link in session.links.items()})
    return results


def _generate(args) -> int:
    from kvattn.runtime import generate, model_dir, sampling

    found = model_dir.locate(args.model)
    tokenizer = found.load_tokenizer() if args.prompt else None
    prompts = ([tokenizer.encode(text).ids for text in args.prompt] if tokenizer
               else [_prompt_ids(spec) for spec in args.prompt_ids])
    if not all(prompts):
        raise KvattnError("--prompt: a prompt encodes to no tokens")
    eos = args.eos_id or list(found.eos_ids) or None
    pad_id = args.pad_id if args.pad_id is not None else found.pad_id or 0
    given = {key: getattr(args, key) for key in model_dir.SEARCH_OPTIONS if getattr(args, key) is not None}
    search = sampling.Search(**{**found.search, **given}, seed=args.seed)
    unused = [f"--{key.replace('_', '-')}" for key in ("temperature", "top_k", "top_p") if key in given]
    if unused and not search.do_sample and not args.quiet:
        print(f"kvattn: note: {', '.join(unused)} only apply with --do-sample", file=sys.stderr)
    ids, mask = generate.prompt_arrays(prompts, pad_id=pad_id)
    generate.check_max_new_tokens(args.max_new_tokens)
    if args.static_kv_cache is not None:  # before compiling
        generate.check_capacity(ids.shape[1], args.max_new_tokens, args.static_kv_cache,
                                f"the static KV cache (--static-kv-cache {args.static_kv_cache}) holds")
    output = pathlib.Path(args.output_ids) if args.output_ids else None
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        raise KvattnError(f"--output-ids '{output}': " + ("is a directory" if output.is_dir() else
                                                          f"the directory '{output.parent}' does not exist"))
    pairs = {}
    for spec in args.cache:
        past, sep, present = spec.partition("=")
        if not (past and sep and present):
            raise KvattnError(f"--cache '{spec}' must look like PAST=PRESENT (an input name and an output name)")
        pairs[past] = present
    progress = _progress(args)
    generator = generate.Generator(found.model, cache_pairs=pairs, inputs=_read_inputs(args.input), progress=progress,
                                   target=args.target, arch=_arch(args), dims=_dims(args.dim),
                                   static_kv_cache=args.static_kv_cache, inline_weights=args.inline_weights,
                                   params=args.params, attention_precision=args.attention_precision)
    stream = _TextStream(tokenizer, eos or ()) if tokenizer and len(prompts) == 1 else None
    result = generator(ids, args.max_new_tokens, eos_id=eos, attention_mask=mask, pad_id=pad_id,
                       progress=progress, search=search, on_token=stream)
    if stream:
        stream.end()
    elif tokenizer:
        for row, new_ids in enumerate(result.new_ids):
            print(f"text [{row}]: {_text(tokenizer, new_ids, eos or ())}")
    for row, new_ids in enumerate(result.new_ids):
        label = "new ids" if len(prompts) == 1 else f"new ids [{row}]"
        print(f"{label}: {','.join(str(int(i)) for i in new_ids)}")
    rate = (f"{result.decode_tokens_per_s:.1f} tokens/s ({result.decode_steps} step(s)"
            f"{f' x {len(prompts)} prompts' if len(prompts) > 1 else ''})"
            if result.decode_tokens_per_s is not None else "no decode step (one new token)")
    print(f"prefill: {result.prefill_ms:.2f} ms ({len(prompts)} x {result.prompt_length} tokens); decode: {rate}")
    if output is not None:
        np.save(output, result.ids)
        if not args.quiet:
            print(f"kvattn: saved ids int64{list(result.ids.shape)} in {output}", file=sys.stderr)
    return 0


def _text(tokenizer, ids, eos) -> str:
    """The text of new ids, up to the first eos."""
    ids = [int(i) for i in ids]
    end = next((k for k, i in enumerate(ids) if i in eos), len(ids))
    return tokenizer.decode(ids[:end], skip_special_tokens=True)


class _TextStream:
    """Prints one prompt's new text as its tokens come (`on_token`)."""

    def __init__(self, tokenizer, eos):
        self.tokenizer, self.eos, self.ids, self.printed = tokenizer, eos, [], ""
        print("text: ", end="", flush=True)

    def __call__(self, row: int, token: int) -> None:
        self.ids.append(token)
        text = _text(self.tokenizer, self.ids, self.eos)
        if text.startswith(self.printed):  # else a token changed earlier text: wait for the end
            print(text[len(self.printed):], end="", flush=True)
            self.printed = text

    def end(self) -> None:
        text = _text(self.tokenizer, self.ids, self.eos)
        print(text[len(self.printed):] if text.startswith(self.printed) else "\n" + text)


def _prompt_ids(spec: str) -> list[int]:
    values = [value.strip() for value in spec.split(",")]
    if not all(value.isdigit() for value in values):
        raise KvattnError(f"--prompt-ids '{spec}' must be comma-separated non-negative integers (token ids), "
                          f"e.g. 5,17,42")
    return [int(value) for value in values]


def _read_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    inputs = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not value.startswith("@"):
            raise KvattnError(f"--input '{spec}' must look like NAME=@FILE.npy")
        if name in inputs:
            raise KvattnError(f"--input {name} is given twice")
        try:
            inputs[name] = np.load(value[1:], allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise KvattnError(f"--input {name}: cannot read '{value[1:]}' as .npy: {exc}") from None
    return inputs


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _inspect(args) -> int:
    from kvattn.runtime import inspect

    dims = _dims(args.dim)
    if args.stage:
        text, _ = compiler.compile_to_stage(args.model, args.stage, args.target, _arch(args), args.static_kv_cache, dims,
                                            args.inline_weights, args.attention_precision)
        print(text)
    else:
        print(inspect.summary(args.model, args.target, _arch(args), args.static_kv_cache, dims, args.inline_weights,
                              args.attention_precision))
    return 0


def _demo(args) -> int:
    from kvattn.runtime import demo

    if args.steps < 1:
        raise KvattnError(f"--steps must be at least 1, got {args.steps}")
    return demo.main(args.steps)


if __name__ == "__main__":
    sys.exit(main())
