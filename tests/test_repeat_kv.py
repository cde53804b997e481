"""kvattn.rewrites.repeat_kv: a 4D Attention fed K/V repeated per query head (transformers'
repeat_kv: Unsqueeze → Expand → Reshape) reads them unrepeated instead (ONNX Attention is
grouped-query: query head h reads kv head h // G); any other Expand/Reshape is left alone.
The fixtures' numerics through kvattn are tests/test_exported_models.py's."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnxscript.rewriter import MatchingTracer, MatchStatus

from kvattn import rewrites
from kvattn.rewrites import model_form
from kvattn.rewrites import repeat_kv
from kvattn.runtime import inspect
from kvattn.runtime.compiler import compile_cached
from kvattn.runtime.module import CompiledModule
from tests.exported_fixtures import FIXTURES, stored_cases

def _repeated(model: onnx.ModelProto, name: str) -> bool:
    """Whether `name` is a Reshape of an Expand (a repeat) in the model."""
    producers = {output: node for node in model.graph.node for output in node.output}
    node = producers.get(name)
    grown = producers.get(node.input[0]) if node is not None and node.op_type == "Reshape" else None
    return grown is not None and grown.op_type == "Expand"


def _repeats_kv(path: pathlib.Path) -> bool:
    model = onnx.load(path)
    return any(n.op_type == "Attention" and _repeated(model, n.input[1]) for n in model.graph.node)


# The fixtures whose exporter repeats K/V for the query heads (transformers' SDPA without enable_gqa);
# mobius and GPT-2 (MHA) feed the cache straight to the Attention.
REPEATING = [path for path in FIXTURES if _repeats_kv(path)]


def test_the_repeating_exports_are_there():
    assert {"llama_opset24_decode", "qwen2_opset24_decode", "llama_opset24_hf"} <= {p.stem for p in REPEATING}


@pytest.mark.parametrize("path", REPEATING, ids=[p.stem for p in REPEATING])
def test_exported_repeat_kv_is_read_once(path: pathlib.Path):
    """Every Attention of every exported fixture that repeats K/V reads them unrepeated, and the
    rewritten model computes exactly what the original does (onnx.reference, every stored case)."""
    model = model_form.normalize(onnx.load(path))[0]  # as kvattn reads it (onnx.reference needs sorted nodes)
    rewritten, decisions = rewrites.apply(model)
    attentions = [node for node in model.graph.node if node.op_type == "Attention"]
    assert all(_repeated(model, node.input[1]) and _repeated(model, node.input[2]) for node in attentions)
    assert [line.split("'")[1] for line in decisions if line.startswith("Attention")] == [n.name for n in attentions]
    after = [node for node in rewritten.graph.node if node.op_type == "Attention"]
    assert [node.name for node in after] == [node.name for node in attentions]
    assert not any(_repeated(rewritten, node.input[1]) or _repeated(rewritten, node.input[2]) for node in after)
    expands = [node for node in rewritten.graph.node if node.op_type == "Expand"]
    assert all(node.input[0] not in {n.input[1] for n in after} for node in expands)
    for _, inputs, _ in stored_cases(path):
        for before, now in zip(ReferenceEvaluator(model).run(None, inputs),
                               ReferenceEvaluator(rewritten).run(None, inputs), strict=True):
            np.testing.assert_array_equal(before, now)


HKV, GROUPS, HEAD = 2, 3, 8


def _repeat_model(variant: str = "repeat") -> onnx.ModelProto:
    """Attention(query [b, 6, s, 8], repeat(Concat(past, new)) for K and V, float mask), K/V
    repeated as transformers exports it (variant "repeat") or as a near miss:
    "broadcast batch" (a batch-1 cache whose Expand also grows the batch), "tile" (Unsqueeze at
    axis 1: head h ← h % Hkv), "merge time" (the Reshape merges the group into the keys), "past"
    (only the new rows repeated, the cache given to the Attention as past_key/past_value)."""
    info = helper.make_tensor_value_info
    batch = 1 if variant == "broadcast batch" else "batch"
    heads = HKV * GROUPS
    cache_heads = heads if variant == "past" else HKV
    const = {"zero_axis": [0], "minus_one": [-1], "kv_heads": [HKV], "groups": [GROUPS], "head": [HEAD],
             "heads": [heads], "axis_1": [1], "axis_2": [2]}
    initializers = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in const.items()]
    nodes = [helper.make_node("Shape", ["query"], ["batch"], start=0, end=1)]
    if variant == "past":
        keys, values = "key", "value"
        nodes.append(helper.make_node("Shape", ["key"], ["total"], start=2, end=3))
    else:
        keys, values = "present_key", "present_value"
        nodes += [helper.make_node("Concat", ["past_key", "key"], ["present_key"], axis=-2),
                  helper.make_node("Concat", ["past_value", "value"], ["present_value"], axis=-2),
                  helper.make_node("Shape", ["past_key"], ["past_len"], start=2, end=3),
                  helper.make_node("Shape", ["key"], ["new_len"], start=2, end=3),
                  helper.make_node("Squeeze", ["past_len"], ["past_scalar"]),
                  helper.make_node("Squeeze", ["new_len"], ["new_scalar"]),
                  helper.make_node("Add", ["past_scalar", "new_scalar"], ["total_scalar"]),
                  helper.make_node("Reshape", ["total_scalar", "minus_one"], ["total"])]
    axes, grown = ("axis_1", ["batch", "groups", "kv_heads", "total", "head"]) if variant == "tile" else \
        ("axis_2", ["batch", "kv_heads", "groups", "total", "head"])
    merged = ["batch", "kv_heads", "minus_one", "head"] if variant == "merge time" else ["batch", "heads", "total", "head"]
    nodes += [helper.make_node("Concat", grown, ["expand_shape"], axis=0),
              helper.make_node("Concat", merged, ["reshape_shape"], axis=0)]
    for role, source in (("k", keys), ("v", values)):
        nodes += [helper.make_node("Unsqueeze", [source, axes], [f"{role}_5d"]),
                  helper.make_node("Expand", [f"{role}_5d", "expand_shape"], [f"{role}_grown"]),
                  helper.make_node("Reshape", [f"{role}_grown", "reshape_shape"], [f"{role}_repeated"], allowzero=1)]
    cache = ["past_key", "past_value"] if variant == "past" else []
    outputs = ["y"] + (["present_key", "present_value"] if variant == "past" else [])
    nodes.append(helper.make_node("Attention", ["query", "k_repeated", "v_repeated", "mask"] + cache, outputs,
                                  name="attn", scale=0.3))
    total = "past + seq"
    graph = helper.make_graph(
        nodes, "repeat_kv",
        [info("query", TensorProto.FLOAT, ["batch", heads, "seq", HEAD]),
         info("past_key", TensorProto.FLOAT, [batch, cache_heads, "past", HEAD]),
         info("past_value", TensorProto.FLOAT, [batch, cache_heads, "past", HEAD]),
         info("key", TensorProto.FLOAT, [batch, HKV, "seq", HEAD]),
         info("value", TensorProto.FLOAT, [batch, HKV, "seq", HEAD]),
         info("mask", TensorProto.FLOAT, ["batch", 1, "seq", "total"])],
        [info("y", TensorProto.FLOAT, ["batch", heads, "seq", HEAD])]
        + [info(name, TensorProto.FLOAT, ["batch", heads, total, HEAD]) for name in outputs[1:]]
        + ([] if variant == "past" else [info(name, TensorProto.FLOAT, [batch, HKV, total, HEAD])
                                          for name in ("present_key", "present_value")]),
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])


def _inputs(variant: str, batch: int, past: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cache_batch = 1 if variant == "broadcast batch" else batch
    cache_heads = HKV * GROUPS if variant == "past" else HKV
    keys = (past + seq) * (GROUPS if variant == "merge time" else 1) if variant != "past" else past + seq

    def normal(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return {"query": normal(batch, HKV * GROUPS, seq, HEAD), "past_key": normal(cache_batch, cache_heads, past, HEAD),
            "past_value": normal(cache_batch, cache_heads, past, HEAD), "key": normal(cache_batch, HKV, seq, HEAD),
            "value": normal(cache_batch, HKV, seq, HEAD),
            "mask": np.where(rng.random((batch, 1, seq, keys)) < 0.2, -2.0, 0.0).astype(np.float32)}


CASES = ((1, 0, 4), (2, 5, 1), (2, 7, 3))  # (batch, past, seq): prefill with an empty past, decode, chunk


def _reference(model: onnx.ModelProto, inputs: dict) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, inputs)


def test_repeat_is_read_once_and_computes_the_same(tmp_path):
    """The exporter's repeat: rewritten (Attention reads the concatenated caches, no Expand left),
    equal to the original under onnx.reference, and compiled by kvattn equal to it too."""
    model = _repeat_model()
    rewritten, decisions = rewrites.apply(model)
    assert decisions == [f"Attention 'attn' read K and V repeated ×{GROUPS} per kv head (Unsqueeze → Expand → "
                         f"Reshape of present_key, present_value): reads them once, {HKV} kv head(s) for "
                         f"{HKV * GROUPS} query heads (grouped-query)"]
    attention, = (node for node in rewritten.graph.node if node.op_type == "Attention")
    assert list(attention.input) == ["query", "present_key", "present_value", "mask"]
    assert not any(node.op_type in ("Expand", "Unsqueeze") for node in rewritten.graph.node)
    for case in CASES:
        inputs = _inputs("repeat", *case)
        for before, after in zip(_reference(model, inputs), _reference(rewritten, inputs), strict=True):
            np.testing.assert_array_equal(before, after)
    onnx.save(model, tmp_path / "repeat_kv.onnx")
    module = CompiledModule(compile_cached(tmp_path / "repeat_kv.onnx"))
    for case in CASES:
        inputs = _inputs("repeat", *case, seed=1)
        for got, expected in zip(module.run(inputs).values(), _reference(model, inputs), strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert f"ONNX rewrite: {decisions[0]}" in inspect.summary(tmp_path / "repeat_kv.onnx")


@pytest.mark.parametrize("variant, reason", [
    ("broadcast batch", "the Expand's axis 0 is batch, neither 1 nor present_key's axis 0 (1)"),
    ("tile", "the Unsqueeze does not insert axis 2"),
    ("merge time", "the Reshape's axis 1 is 2, not 6"),
    ("past", "has past_key and past_value"),
])
def test_other_repeats_are_left_alone(variant, reason):
    """Near misses keep their Expand/Reshape (and compute what they did); the tile would give
    other numbers if it were read as grouped-query heads."""
    model = _repeat_model(variant)
    rewritten, decisions = rewrites.apply(model)
    assert not decisions
    assert [n.op_type for n in rewritten.graph.node] == [n.op_type for n in model.graph.node]
    assert reason in _refusal(model)
    inputs = _inputs(variant, 2, 5, 2)
    expected = _reference(model, inputs)
    for before, after in zip(expected, _reference(rewritten, inputs), strict=True):
        np.testing.assert_array_equal(before, after)
    if variant == "tile":  # head h of the tiled K/V is kv head h % Hkv, not h // G
        grouped = helper.make_graph([helper.make_node("Concat", ["past_key", "key"], ["k"], axis=-2),
                                     helper.make_node("Concat", ["past_value", "value"], ["v"], axis=-2),
                                     helper.make_node("Attention", ["query", "k", "v", "mask"], ["y"], scale=0.3)],
                                    "gqa", model.graph.input, model.graph.output[:1])
        gqa = helper.make_model(grouped, opset_imports=[helper.make_opsetid("", 24)])
        assert not np.allclose(_reference(gqa, inputs)[0], expected[0])


def _refusal(model: onnx.ModelProto) -> str:
    """Why the repeat_kv rule refused the model's Attention (the rule's own check reason)."""
    tracer = MatchingTracer()
    repeat_kv.rules(lambda _: None).apply_to_model(ir.serde.deserialize_model(model), tracer=tracer)
    reasons = [str(info.match_result.reason) for infos in tracer.best_matches_map.values() for info in infos
               if info.status == MatchStatus.CONDITION_FAILED]
    return "\n".join(reasons)
