"""--static-kv-cache: concat-style caches become fixed-capacity caches updated in place, and a
decode session over the rewritten module gives the original model's outputs step after step."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from kvattn.lowering.diagnostics import KvattnError, NodeError
from kvattn.rewrites import static_kv_cache
from kvattn.runtime import cli
from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule
from kvattn.runtime.session import DecodeSession

BATCH, Q_HEADS, KV_HEADS, HEAD, CAPACITY = 1, 4, 2, 8, 12


def _model(style: str, mask: bool = False, causal: int | None = None) -> onnx.ModelProto:
    """One decode step with a growing cache of symbolic length: Attention-23 past/present
    (causal: its queries are the last rows), or a Concat of the past cache before Attention-24
    (not causal: without past_key ONNX aligns is_causal to the top-left)."""
    tensor = helper.make_tensor_value_info
    new = lambda name, heads: tensor(name, TensorProto.FLOAT, [BATCH, heads, 1, HEAD])  # noqa: E731
    past = lambda name: tensor(name, TensorProto.FLOAT, [BATCH, KV_HEADS, "past", HEAD])  # noqa: E731
    present = lambda name: tensor(name, TensorProto.FLOAT, [BATCH, KV_HEADS, "total", HEAD])  # noqa: E731
    inputs = [new("query", Q_HEADS), new("key", KV_HEADS), new("value", KV_HEADS), past("past_key"), past("past_value")]
    outputs = [new("output", Q_HEADS), present("present_key"), present("present_value")]
    mask_input = "mask" if mask else ""
    if mask:
        inputs.append(tensor("mask", TensorProto.BOOL, [1, "total"]))
    if style == "attention_past":
        nodes = [helper.make_node("Attention", ["query", "key", "value", mask_input, "past_key", "past_value"],
                                  ["output", "present_key", "present_value"], name="decode",
                                  is_causal=1 if causal is None else causal)]
        opset = 23
    else:
        nodes = [helper.make_node("Concat", ["past_key", "key"], ["present_key"], axis=2),
                 helper.make_node("Concat", ["past_value", "value"], ["present_value"], axis=2),
                 helper.make_node("Attention", ["query", "present_key", "present_value", mask_input], ["output"],
                                  name="decode", is_causal=causal or 0)]
        opset = 24
    model = helper.make_model(helper.make_graph(nodes, "decode_step", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("style, mask, causal", [("attention_past", False, None), ("concat", False, None),
                                                 ("attention_past", True, 1), ("concat", True, 1)])
def test_static_cache_session_matches_the_growing_model(style, mask, causal):
    """Also a causal attention over a Concat cache (top-left aligned in ONNX) and a mask over the
    growing length: every reader of the cache sees the rows it saw before."""
    original = _model(style, mask=mask, causal=causal)
    compiled = compile_model(original, static_kv_cache=CAPACITY)
    module = CompiledModule(compiled.vmfb)
    assert [(c.input, c.output, c.aliased) for c in module.manifest.caches] == [
        ("past_key", "present_key", True), ("past_value", "present_value", True)]
    assert module.manifest.static_cache.capacity == CAPACITY
    reference = ReferenceEvaluator(original)
    rng = np.random.default_rng(0)
    caches = {name: rng.standard_normal((BATCH, KV_HEADS, 3, HEAD)).astype(np.float32)
              for name in ("past_key", "past_value")}
    session = DecodeSession(module, caches)
    assert session.step_inputs == ["query", "key", "value"] + (["mask"] if mask else [])
    for length in range(3, CAPACITY):
        step = {"query": rng.standard_normal((BATCH, Q_HEADS, 1, HEAD)).astype(np.float32),
                "key": rng.standard_normal((BATCH, KV_HEADS, 1, HEAD)).astype(np.float32),
                "value": rng.standard_normal((BATCH, KV_HEADS, 1, HEAD)).astype(np.float32)}
        if mask:
            step["mask"] = rng.random((1, length + 1)) > 0.3
        got = session.step(step)
        want = reference.run(None, {**step, **caches})
        np.testing.assert_allclose(got["output"], want[0], rtol=1e-5, atol=1e-5)
        caches = {"past_key": want[1], "past_value": want[2]}
    for name, array in session.caches().items():
        np.testing.assert_array_equal(array, caches[name], err_msg=name)
    with pytest.raises(KvattnError, match="static KV cache is full: 12 of 12 rows"):
        session.step(step)


def test_rewrite_refuses_what_it_cannot_keep_exact():
    read_elsewhere = _model("concat")
    read_elsewhere.graph.node.append(helper.make_node("ReduceSum", ["past_key"], ["key_sum"], name="sum_of_past"))
    read_elsewhere.graph.output.append(helper.make_tensor_value_info("key_sum", TensorProto.FLOAT, [1, 1, 1, 1]))
    with pytest.raises(NodeError, match="ReduceSum node 'sum_of_past': --static-kv-cache cannot rewrite the cache "
                                        "'past_key': this node reads it"):
        static_kv_cache.rewrite(read_elsewhere, CAPACITY)
    not_returned = _model("concat")
    del not_returned.graph.output[1:]
    with pytest.raises(NodeError, match="the extended cache 'present_key' is not a model output"):
        static_kv_cache.rewrite(not_returned, CAPACITY)
    with_scores = _model("attention_past")
    with_scores.graph.node[0].output.append("scores")
    with_scores.graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, None))
    with pytest.raises(NodeError, match="qk_matmul_output is used"):
        static_kv_cache.rewrite(with_scores, CAPACITY)
    no_cache = helper.make_model(helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])], "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]), opset_imports=[helper.make_opsetid("", 24)])
    with pytest.raises(KvattnError, match="no growing KV cache"):
        static_kv_cache.rewrite(no_cache, CAPACITY)


def test_rewrite_leaves_the_users_model_alone():
    original = _model("attention_past")
    before = original.SerializeToString()
    rewritten = static_kv_cache.rewrite(original, CAPACITY)
    assert original.SerializeToString() == before
    assert rewritten.caches == {"past_key": "present_key", "past_value": "present_value"}
    assert rewritten.rows_per_step == 1
    assert [n.op_type for n in rewritten.model.graph.node].count("TensorScatter") == 2
    assert rewritten.model.graph.input[-1].name == static_kv_cache.PAST_LENGTH


def test_run_steps_with_static_cache_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "decode.onnx"
    onnx.save(_model("concat"), path)
    rng = np.random.default_rng(1)
    steps = 3
    arrays = {"query": rng.standard_normal((steps, BATCH, Q_HEADS, 1, HEAD)).astype(np.float32),
              "key": rng.standard_normal((steps, BATCH, KV_HEADS, 1, HEAD)).astype(np.float32),
              "value": rng.standard_normal((steps, BATCH, KV_HEADS, 1, HEAD)).astype(np.float32)}
    flags = []
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
        flags += ["-i", f"{name}=@{tmp_path / name}.npy"]
    assert cli.main(["run", str(path), *flags, "--steps", str(steps), "--static-kv-cache", "8",
                     "--output-dir", str(tmp_path / "out"), "-q"]) == 0
    reference = ReferenceEvaluator(_model("concat"))
    caches = {name: np.zeros((BATCH, KV_HEADS, 0, HEAD), np.float32) for name in ("past_key", "past_value")}
    for step in range(steps):
        want = reference.run(None, {**{n: a[step] for n, a in arrays.items()}, **caches})
        np.testing.assert_allclose(np.load(tmp_path / "out" / "output.npy")[step], want[0], rtol=1e-5, atol=1e-5)
        caches = {"past_key": want[1], "past_value": want[2]}
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "present_key.npy"), caches["past_key"])
    capsys.readouterr()
    assert cli.main(["inspect", str(path), "--static-kv-cache", "8"]) == 0
    summary = capsys.readouterr().out
    assert "input  past_length: int64[1]" in summary and "cache: aliased: past_key -> present_key" in summary
