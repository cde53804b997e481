"""`kvattn generate` / `kvattn.runtime.generate`: greedy generation gives exactly the ids of a greedy
loop over the same ONNX file in onnxruntime (presents fed back as pasts), on every exported decoder
fixture, batches of prompts of different lengths (left padding), eos, --static-kv-cache, the CLI,
and what users get wrong (each in a subprocess: `kvattn: error:`, exit 1, no traceback).

Suite time: each fixture is compiled once with default flags through compile_cached, the same
vmfb tests/test_exported_models.py uses (same xdist group); the --static-kv-cache rewrite is checked
with onnx.reference on every fixture with growing caches and compiled on one of each kind."""

from __future__ import annotations

import pathlib
import re
import subprocess

import numpy as np
import onnx
import onnxruntime
import pytest
import tokenizers
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from kvattn import rewrites
from kvattn.lowering.diagnostics import KvattnError
from kvattn.rewrites import static_kv_cache
from kvattn.runtime import cli
from kvattn.runtime.compiler import compile_cached, compile_model, compile_to_stage
from kvattn.runtime.generate import Generator, generate
from kvattn.runtime.module import CompiledModule
from tests.exported_fixtures import FIXTURES, by_fixture, onnxruntime_session

BY_STEM = {path.stem: path for path in FIXTURES}
PROMPT = [5, 17, 42, 9]
BATCH = [[5, 17, 42, 9], [8, 9]]
NEW = 5
# How the fixtures' producers name a cache's update (torch.onnx, mobius, transformers' exporter, mobius --static-cache).
PRESENT_NAMES = (("past_key_values.", "present."), ("past", "present"), ("input.cache", "output.cache"),
                 ("key_cache", "updated_key_cache"), ("value_cache", "updated_value_cache"))


def ort_greedy(session: onnxruntime.InferenceSession, prompts, max_new: int, state: dict, present: dict,
               eos_id: int | None = None, mask_slots: int | None = None, pad_id: int = 0,
               recompute: bool = False, one_token_calls: bool = False, constant: dict | None = None) -> np.ndarray:
    """A plain greedy loop: left-padded prompts, mask over past + new (zero-padded to `mask_slots` with
    a past_length input), `state` {input: first value} fed back from `present` {input: output},
    `constant` inputs. `recompute` (and a model without state): the whole sequence at every step."""
    outputs = [o.name for o in session.get_outputs()]
    longest = max(map(len, prompts))
    ids = np.array([[pad_id] * (longest - len(p)) + list(p) for p in prompts], np.int64)
    mask = (np.arange(longest)[None] >= np.array([longest - len(p) for p in prompts])[:, None]).astype(np.int64)
    first, past = dict(state), 0
    finished = np.zeros(len(prompts), bool)
    while ids.shape[1] - longest < max_new and not finished.all():
        if recompute or not state:
            state, past = dict(first), 0
        for begin in (range(past, ids.shape[1]) if one_token_calls else [past]):
            end = begin + 1 if one_token_calls else ids.shape[1]
            step_mask = mask[:, :end]
            feeds = {"input_ids": ids[:, begin:end], **state, **(constant or {})}
            inputs = [i.name for i in session.get_inputs()]
            if "position_ids" in inputs:  # as transformers' generate: 1 at the padding
                feeds["position_ids"] = np.where(mask[:, :end] == 0, 1, np.cumsum(mask[:, :end], -1) - 1)[:, begin:]
            if "write_indices" in inputs:  # a fixed-capacity cache (mobius --static-cache): rows begin..end
                feeds["write_indices"] = np.full(len(prompts), begin, np.int64)
                feeds["nonpad_kv_seqlen"] = np.full(len(prompts), end, np.int64)
            if mask_slots is not None:
                if "past_length" in inputs:
                    feeds["past_length"] = np.array(begin, np.int64)
                step_mask = np.pad(step_mask, [(0, 0), (0, mask_slots - end)])
            if "attention_mask" in inputs:
                feeds["attention_mask"] = step_mask
            result = dict(zip(outputs, session.run(None, feeds)))
            state = {name: result[present[name]] for name in state}
        past = ids.shape[1]
        token = result["logits"][:, -1].argmax(-1)
        if eos_id is not None:
            token[finished] = eos_id
            finished |= token == eos_id
        ids = np.concatenate([ids, token[:, None]], 1)
        mask = np.concatenate([mask, np.ones((len(prompts), 1), np.int64)], 1)
    return ids


def fixture_reference(path: pathlib.Path, prompts, max_new: int, **options) -> np.ndarray:
    """ort_greedy on a fixture: its first stored case (the prefill) gives each cache's empty or zero
    first value (and the rank-0 `_sliding_window_tensor`), resized to the batch."""
    session = onnxruntime_session(path)
    data = np.load(path.with_suffix(".npz"))
    stored = {key.removeprefix("case0.in."): data[key] for key in data.files if key.startswith("case0.in.")}
    outputs = [o.name for o in session.get_outputs()]
    right_padded = any(node.op_type == "GroupQueryAttention" for node in onnx.load(path).graph.node)
    if ("attention_mask" not in stored or right_padded) and len(set(map(len, prompts))) > 1:
        # Nothing masks left padding (or the attention reads the mask as right padding: onnxruntime's
        # GroupQueryAttention): each row is its prompt generated alone (generate's lockstep).
        rows = [fixture_reference(path, [prompt], max_new, **options)[0] for prompt in prompts]
        longest = max(map(len, rows))
        return np.array([np.pad(row, (longest - len(row), 0)) for row in rows])
    fed = ("input_ids", "attention_mask", "past_length", "position_ids", "write_indices", "nonpad_kv_seqlen")
    state = {name: value if value.ndim == 0 else np.zeros((len(prompts),) + value.shape[1:], value.dtype)
             for name, value in stored.items() if name not in fed}
    present = {name: next(name.replace(old, new) for old, new in PRESENT_NAMES if name.replace(old, new) in outputs)
               for name in state}
    fixed_size = "past_length" in stored or any(name.endswith("cumulative_length") for name in stored)
    slots = stored["attention_mask"].shape[1] if fixed_size else None
    return ort_greedy(session, prompts, max_new, state, present, mask_slots=slots, **options)


@pytest.fixture(scope="module")
def modules():
    """One loaded module per fixture, compiled as tests/test_exported_models.py compiles it."""
    loaded = {}

    def get(stem: str) -> CompiledModule:
        if stem not in loaded:
            loaded[stem] = CompiledModule.load(compile_cached(BY_STEM[stem]))
        return loaded[stem]
    return get


@pytest.mark.parametrize("path", by_fixture(FIXTURES))
def test_greedy_ids_match_onnxruntime(path):
    """One prompt, and a batch of two of different lengths (left padding), on every fixture: decode
    (concat caches, found by name), hf (transformers' exporter names, its rank-0 pass-through field),
    static (a StaticCache in the ONNX: past_length and a mask over every slot), nocache (the whole
    sequence every step), mobius (position_ids; --static-cache: write_indices / nonpad_kv_seqlen, no mask)."""
    generator = Generator(path)  # the .onnx: compile_cached, default flags
    for prompts in ([PROMPT], BATCH):
        result = generator(prompts, NEW)
        np.testing.assert_array_equal(result.ids, fixture_reference(path, prompts, NEW), err_msg=path.stem)
        assert result.ids.dtype == np.int64 and result.ids.shape == (len(prompts), len(PROMPT) + NEW)
        assert result.prompt_length == len(PROMPT) and result.new_ids.shape == (len(prompts), NEW)
        # Without a mask, prompts of different lengths share the calls in lockstep (no padding): the
        # shortest prompt first, then one token per call, so the longer prompt's rest adds calls.
        lockstep = (max(map(len, prompts)) - min(map(len, prompts))
                    if "attention_mask" not in generator.module.input_names or generator.right_padded else 0)
        assert result.prefill_ms > 0 and result.decode_steps == NEW - 1 + lockstep and result.decode_tokens_per_s > 0
    cached = {link.input for link in generator.links}
    if "nocache" in path.stem:
        assert not cached
    else:
        assert cached and all("key" in name or "value" in name or "_sliding_window" in name or "cumulative_length" in name
                              for name in cached)


def test_caches_give_what_rerunning_the_whole_sequence_gives(modules):
    """The cache loop is the model's own: an onnxruntime loop that recomputes every step from an empty
    past agrees with kvattn's cached generation (and generate() returns just the ids)."""
    path = BY_STEM["llama_opset24_decode"]
    ids = generate(modules("llama_opset24_decode"), BATCH, NEW)
    np.testing.assert_array_equal(ids, fixture_reference(path, BATCH, NEW, recompute=True))


def test_eos_stops_early(modules):
    path = BY_STEM["llama_opset24_decode"]
    generator = Generator(modules(path.stem))
    full = generator(BATCH, NEW).new_ids
    eos = int(full[0, 1])  # row 0 ends at its second new token, row 1 (if ever) where it produces it
    first = int(np.flatnonzero(full[0] == eos)[0])
    result = generator(BATCH, NEW, eos_id=eos)
    np.testing.assert_array_equal(result.ids, fixture_reference(path, BATCH, NEW, eos_id=eos))
    assert result.new_ids[0, first] == eos and (result.new_ids[0, first:] == eos).all()
    single = generator([PROMPT], NEW, eos_id=eos)
    assert single.ids.shape == (1, len(PROMPT) + first + 1) and single.new_ids[0, -1] == eos
    np.testing.assert_array_equal(single.new_ids[0], full[0, :first + 1])


def test_explicit_mask_pairs_and_inputs(modules):
    """attention_mask given with a rectangular batch, cache pairs by hand, and a fixed-size input that
    needs its value (a vmfb has no ONNX to show it is passed through unchanged)."""
    module = modules("llama_opset24_decode")
    ids = np.array([[0, 0, 8, 9], PROMPT])
    mask = (ids != 0).astype(np.int64)
    by_hand = {f"past_{kind}_{layer}": f"present_{kind}_{layer}" for kind in ("key", "value") for layer in (0, 1)}
    np.testing.assert_array_equal(Generator(module, cache_pairs=by_hand)(ids, NEW, attention_mask=mask).ids,
                                  generate(module, [[8, 9], PROMPT], NEW))
    with pytest.raises(KvattnError, match="past_key_0=logits: they differ in dtype or shape"):
        Generator(module, cache_pairs={"past_key_0": "logits"})
    with pytest.raises(KvattnError, match="attention_mask must be left padding"):
        generate(module, ids, 2, attention_mask=mask[:, ::-1])
    with pytest.raises(KvattnError, match="prompt id 64 is not a token id of this model's vocabulary of 64"):
        generate(module, [1, 64], 2)
    hf = modules("gemma2_opset25_hf_eager")
    with pytest.raises(KvattnError, match=r"cannot tell the first value of input\.cache\.layers\.0\._sliding_window"):
        Generator(hf)
    window = {"input.cache.layers.0._sliding_window_tensor": np.array(4, np.int64)}
    np.testing.assert_array_equal(generate(hf, BATCH, NEW, inputs=window),
                                  fixture_reference(BY_STEM["gemma2_opset25_hf_eager"], BATCH, NEW))
    static = modules("llama_opset25_static")
    with pytest.raises(KvattnError, match=r"need 19 cache rows .* fixed-size attention_mask .* holds 16"):
        generate(static, list(range(3, 18)), 5)


GROWING = [stem for stem in BY_STEM if "_decode" in stem or stem.endswith(("_hf", "_hf_eager"))]


@pytest.mark.parametrize("stem", GROWING)
def test_static_kv_cache_rewrite_is_exact_on_every_export(stem):
    """onnx.reference on the rewritten model (fixed buffers, past_length) and on the original, step
    after step (a left-padded batch of 2: prefill 4 rows, then 1, then 2): the same logits, bit for
    bit, and the same valid cache rows."""
    path = BY_STEM[stem]
    original = onnx.load(path)
    rewritten = static_kv_cache.rewrite(rewrites.apply(original)[0], 16)
    data = np.load(path.with_suffix(".npz"))
    stored = {key.removeprefix("case0.in."): data[key] for key in data.files if key.startswith("case0.in.")}
    growing = {name: np.zeros((2,) + stored[name].shape[1:2] + (0,) + stored[name].shape[3:], np.float32)
               for name in rewritten.caches}
    buffers = {name: np.zeros(array.shape[:2] + (16,) + array.shape[3:], np.float32) for name, array in growing.items()}
    other = {name: value for name, value in stored.items() if value.ndim == 0}  # _sliding_window_tensor
    old, new = ReferenceEvaluator(original), ReferenceEvaluator(rewritten.model)
    rng, mask, length = np.random.default_rng(0), np.zeros((2, 0), np.int64), 0
    for rows in (4, 1, 2):
        ids = rng.integers(0, 64, (2, rows)).astype(np.int64)
        mask = np.concatenate([mask, np.ones((2, rows), np.int64)], 1)
        mask[1, :2] = 0  # row 1 is left-padded
        feeds = {"input_ids": ids, "attention_mask": mask, **other}
        want = dict(zip([o.name for o in original.graph.output], old.run(None, {**feeds, **growing})))
        got = dict(zip([o.name for o in rewritten.model.graph.output],
                       new.run(None, {**feeds, **buffers, "past_length": np.full(2, length, np.int64)})))
        np.testing.assert_array_equal(got["logits"], want["logits"])
        for past, present in rewritten.caches.items():
            np.testing.assert_array_equal(got[present][:, :, :length + rows], want[present], err_msg=present)
            growing[past], buffers[past] = want[present], got[present]
        length += rows


# Compiled and generated on one fixture of each kind (the rewrite is checked on all of them above).
COMPILED_STATIC = ["llama_opset23_decode", "gemma3_opset24_decode", "phi3_opset25_decode", "gemma2_opset25_hf_eager"]


@pytest.mark.parametrize("stem", COMPILED_STATIC)
def test_static_kv_cache_on_exported_decoders(stem):
    """--static-kv-cache on exports with growing caches (torch DynamicCache Concat at opsets 23-25,
    one kv head, eager attention, transformers' own exporter; an attention_mask subgraph): every
    cache is updated in place (tied to its present), the session takes the original steps
    (prefill rows, then one) and generation gives the original model's ids."""
    path = BY_STEM[stem]
    window = {"input.cache.layers.0._sliding_window_tensor": np.array(4, np.int64)} if "hf_eager" in stem else None
    generator = Generator(path, static_kv_cache=16, inputs=window)
    manifest = generator.module.manifest
    assert manifest.static_cache.capacity == 16
    growing = [i.name for i in onnx.load(path).graph.input if i.name.startswith(("past_", "input.cache")) and
               not i.name.endswith("_sliding_window_tensor")]
    assert sorted(c.input for c in manifest.caches if c.aliased) == sorted(growing)
    for prompts in ([PROMPT], BATCH):
        np.testing.assert_array_equal(generator(prompts, NEW).ids, fixture_reference(path, prompts, NEW))
    with pytest.raises(KvattnError, match=r"need 17 cache rows .* static KV cache \(--static-kv-cache 16\) holds 16"):
        generator(list(range(3, 16)), 5)


def test_static_kv_cache_copies_no_cache():
    """The in-place variant of a torch export moves no cache: the presents are the pasts' own
    buffers (the call exports only the logits; growing caches export 4 new presents too), and the
    call's only copies are scalar readbacks (1 and 8 bytes: range checks, the valid length)."""
    stream, _ = compile_to_stage(BY_STEM["llama_opset24_decode"], "stream", static_kv_cache=16)
    assert stream.count("stream.tensor.export") == 1
    sizes = re.findall(r"stream\.cmd\.copy [^,]+, [^,]+, (%\w+) :", stream)
    assert set(sizes) <= {"%c1", "%c8"}, sizes


VOCAB, HIDDEN, Q_HEADS, KV_HEADS, HEAD = 32, 16, 2, 1, 8


def tiny_decoder() -> onnx.ModelProto:
    """A one-layer LM step on one token ([1, 1] ids: the static rewrite needs a fixed number of new
    rows) with an Attention-23 past/present cache and an input generate cannot guess (`logit_scale`)."""
    rng = np.random.default_rng(0)
    weight = lambda name, *shape: onnx.numpy_helper.from_array(  # noqa: E731
        rng.standard_normal(shape).astype(np.float32), name)
    shape = lambda name, *dims: onnx.numpy_helper.from_array(np.array(dims, np.int64), name)  # noqa: E731
    tensor = helper.make_tensor_value_info
    cache = lambda name, length: tensor(name, TensorProto.FLOAT, [1, KV_HEADS, length, HEAD])  # noqa: E731
    nodes = [helper.make_node("Gather", ["embedding", "input_ids"], ["x"])]
    for name, heads in (("q", Q_HEADS), ("k", KV_HEADS), ("v", KV_HEADS)):
        nodes += [helper.make_node("MatMul", ["x", f"w{name}"], [f"{name}_flat"]),
                  helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [f"{name}_4d"]),
                  helper.make_node("Transpose", [f"{name}_4d"], [name], perm=[0, 2, 1, 3])]
    nodes += [helper.make_node("Attention", ["q", "k", "v", "", "past_key", "past_value"],
                               ["y", "present_key", "present_value"], name="attention", is_causal=1),
              helper.make_node("Transpose", ["y"], ["y_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["y_t", "y_shape"], ["y_flat"]),
              helper.make_node("MatMul", ["y_flat", "wo"], ["raw_logits"]),
              helper.make_node("Mul", ["raw_logits", "logit_scale"], ["logits"])]
    initializers = [weight("embedding", VOCAB, HIDDEN), weight("wq", HIDDEN, Q_HEADS * HEAD),
                    weight("wk", HIDDEN, KV_HEADS * HEAD), weight("wv", HIDDEN, KV_HEADS * HEAD),
                    weight("wo", Q_HEADS * HEAD, VOCAB), shape("q_shape", 1, 1, Q_HEADS, HEAD),
                    shape("k_shape", 1, 1, KV_HEADS, HEAD), shape("v_shape", 1, 1, KV_HEADS, HEAD),
                    shape("y_shape", 1, 1, Q_HEADS * HEAD)]
    graph = helper.make_graph(
        nodes, "tiny_decoder",
        [tensor("input_ids", TensorProto.INT64, [1, 1]), cache("past_key", "past"), cache("past_value", "past"),
         tensor("logit_scale", TensorProto.FLOAT, [1])],
        [tensor("logits", TensorProto.FLOAT, [1, 1, VOCAB]), cache("present_key", "total"),
         cache("present_value", "total")], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("static", [False, True], ids=["growing", "static_kv_cache"])
def test_one_token_per_call_and_static_kv_cache(static):
    """A module that takes one token per call gets the prompt token by token; with --static-kv-cache
    its session hides the capacity and past_length. Same ids as onnxruntime on the original."""
    model = tiny_decoder()
    module = CompiledModule(compile_model(model, static_kv_cache=8 if static else None).vmfb)
    assert bool(module.manifest.static_cache) == static
    with pytest.raises(KvattnError, match=r"does not know how to feed the input\(s\) logit_scale: float32\[1\]"):
        Generator(module)
    scale = {"logit_scale": np.array([1.5], np.float32)}
    generator = Generator(module, inputs=scale)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    empty = {name: np.zeros((1, KV_HEADS, 0, HEAD), np.float32) for name in ("past_key", "past_value")}
    result = generator([3, 7, 1], 6)
    want = ort_greedy(session, [[3, 7, 1]], 6, empty, {"past_key": "present_key", "past_value": "present_value"},
                      one_token_calls=True, constant=scale)
    np.testing.assert_array_equal(result.ids, want)
    if static:
        with pytest.raises(KvattnError, match=r"need 9 cache rows .*--static-kv-cache 8\) holds 8"):
            generator([3, 7, 1], 7)


def _kvattn(*args):
    return subprocess.run(["kvattn", *map(str, args)], capture_output=True, text=True, timeout=600)


def test_command_line_end_to_end(tmp_path, capsys, modules):
    path = BY_STEM["qwen3_opset25_decode"]
    modules(path.stem)  # compiled (cached) once
    out = tmp_path / "ids.npy"
    assert cli.main(["generate", str(path), "--prompt-ids", "5,17,42,9", "--max-new-tokens", str(NEW),
                     "--output-ids", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    ids = np.load(out)
    assert ids.dtype == np.int64 and ids.shape == (1, len(PROMPT) + NEW)
    np.testing.assert_array_equal(ids, fixture_reference(path, [PROMPT], NEW))
    assert f"new ids: {','.join(map(str, ids[0, len(PROMPT):]))}\n" in printed
    assert "prefill: " in printed and " ms " in printed and "tokens/s" in printed
    assert cli.main(["generate", str(path), "--prompt-ids", "5,17,42,9", "--prompt-ids", "8,9",
                     "--max-new-tokens", str(NEW), "--output-ids", str(out), "-q"]) == 0
    np.testing.assert_array_equal(np.load(out), fixture_reference(path, BATCH, NEW))
    assert "new ids [1]: " in capsys.readouterr().out
    result = _kvattn("generate", "--help")
    assert result.returncode == 0 and "--max-new-tokens N" in result.stdout and "past_key_0 ->" in result.stdout


def test_command_line_errors(modules, tmp_path):
    path = BY_STEM["llama_opset24_decode"]
    modules(path.stem)  # the subprocess finds it in the compile cache
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "genai_config.json").write_text("{model:")
    cases = {
        "text without a tokenizer": ([path, "--prompt", "hello", "--max-new-tokens", "3"],
                                     f"no tokenizer.json beside '{path}': give token ids (--prompt-ids)"),
        "a temperature of 0": ([path, "--prompt-ids", "5", "--max-new-tokens", "3", "--do-sample", "--temperature",
                                "0"], "temperature must be > 0 (got 0.0)"),
        "a directory without a model": ([tmp_path / "empty", "--prompt-ids", "5", "--max-new-tokens", "3"],
                                        f"'{tmp_path / 'empty'}' must hold one .onnx (or .vmfb) model"),
        "a genai_config.json that is not JSON": ([tmp_path / "broken", "--prompt-ids", "5", "--max-new-tokens", "3"],
                                                 f"cannot read '{tmp_path / 'broken' / 'genai_config.json'}' as JSON"),
        "unknown cache pair": ([path, "--prompt-ids", "5,17", "--max-new-tokens", "3", "--cache", "nope=present_key_0"],
                               "--cache nope=present_key_0: the module has no input 'nope'"),
        "prompt longer than the static capacity": (
            [path, "--prompt-ids", "1,2,3,4,5", "--max-new-tokens", "2", "--static-kv-cache", "4"],
            "a prompt of 5 token(s) and 2 new token(s) need 6 cache rows (every token fed to the model), but the "
            "static KV cache (--static-kv-cache 4) holds 4"),
        "non-integer prompt ids": ([path, "--prompt-ids", "5,x,7", "--max-new-tokens", "3"],
                                   "--prompt-ids '5,x,7' must be comma-separated non-negative integers"),
    }
    for name, (args, message) in cases.items():
        result = _kvattn("generate", *args)
        assert result.returncode == 1, (name, result.stderr)
        assert f"kvattn: error: {message}" in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout, name


SHIPPED_GENAI = pathlib.Path(__file__).parent / "models" / "genai_llama_int4"


@pytest.mark.xdist_group("genai_llama_int4")
def test_text_in_text_out_from_a_genai_model_directory(capsys):
    """onnxruntime-genai's int4 build as it writes it (external data, genai_config.json naming the
    decoder and eos 2, tokenizer.json): `kvattn generate DIR --prompt TEXT` gives the text of
    onnxruntime's greedy ids (on the same model inline: the fixture), streamed; a batch too."""
    tokenizer = tokenizers.Tokenizer.from_file(str(SHIPPED_GENAI / "tokenizer.json"))
    prompts = ["<s> t5 t17 t42 t9", "<s> t8 t9"]
    encoded = [tokenizer.encode(text).ids for text in prompts]
    assert encoded[0] == [1, *PROMPT]
    path = BY_STEM["genai_llama_int4"]
    expected = fixture_reference(path, encoded, 12, eos_id=2)
    texts = [tokenizer.decode([int(i) for i in row[len(encoded[0]):] if i != 2]) for row in expected]
    assert cli.main(["generate", str(SHIPPED_GENAI), "--prompt", prompts[0], "--max-new-tokens", "12", "-q"]) == 0
    printed = capsys.readouterr().out
    assert f"text: {texts[0]}\n" in printed, printed
    assert cli.main(["generate", str(SHIPPED_GENAI), *sum((["--prompt", p] for p in prompts), []),
                     "--max-new-tokens", "12", "-q"]) == 0
    printed = capsys.readouterr().out
    assert f"text [0]: {texts[0]}\n" in printed and f"text [1]: {texts[1]}\n" in printed, printed


@pytest.mark.xdist_group("genai_llama_int4")
def test_sampling_is_seeded_and_top_k_1_is_greedy(modules):
    from kvattn.runtime.sampling import Search

    path = BY_STEM["genai_llama_int4"]
    generator = Generator(modules(path.stem))
    greedy = generator(BATCH, 8).ids
    np.testing.assert_array_equal(generator(BATCH, 8, search=Search(do_sample=True, top_k=1, seed=5)).ids, greedy)
    sampled = [generator(BATCH, 8, search=Search(do_sample=True, temperature=1.5, seed=seed)).ids
               for seed in (1, 1, 2)]
    np.testing.assert_array_equal(sampled[0], sampled[1])
    assert not np.array_equal(sampled[0], greedy) and not np.array_equal(sampled[0], sampled[2])
    streamed = []
    generator([PROMPT], 6, on_token=lambda row, token: streamed.append((row, token)))
    assert streamed == [(0, int(t)) for t in generator([PROMPT], 6).new_ids[0]]
