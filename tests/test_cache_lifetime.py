"""KV-cache lifetimes end to end: an aliased cache is updated in its own buffer (no copy), models
where aliasing would be wrong stay correct, functional calls never mutate the caller's arrays,
and decode sessions (API and `kvattn run --steps`) keep the caches on the device step after step."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from kvattn.lowering.diagnostics import KvattnError
from kvattn.passes import pipeline
from kvattn.runtime import cli, demo
from kvattn.runtime.compiler import compile_model, compile_to_stage
from kvattn.runtime.module import CompiledModule
from kvattn.runtime.session import DecodeSession
from tests.onnx_models import decode_inputs

CACHE = (1, 2, 8, 4)
NEW_ROWS = (1, 2, 1, 4)


@pytest.fixture(scope="module")
def decode_module():
    return CompiledModule(compile_model(demo.decode_step_model()).vmfb, driver="local-task")


def test_aliased_cache_is_updated_in_its_own_buffer(decode_module):
    assert [(c.input, c.output, c.aliased) for c in decode_module.manifest.caches] == [
        ("past_key", "present_key", True), ("past_value", "present_value", True)]
    inputs = decode_inputs(np.random.default_rng(0))
    views = decode_module.upload(inputs)
    results = dict(zip(decode_module.output_names, decode_module.invoke(views)))
    expected = dict(zip(decode_module.output_names, ReferenceEvaluator(demo.decode_step_model()).run(None, inputs)))
    for index, name in enumerate(decode_module.input_names):
        if name.startswith("past_"):
            present = name.replace("past_", "present_")
            # The argument's device buffer now holds the present cache: the rows were written in place.
            np.testing.assert_array_equal(decode_module.download(views[index], name), expected[present])
            np.testing.assert_array_equal(decode_module.download(results[present], present), expected[present])


def test_aliased_module_copies_no_cache():
    stream, _ = compile_to_stage(demo.decode_step_model(), "stream")
    entry = stream[stream.index("@decode_step$async("):]
    copies = [line for line in entry.splitlines() if "stream.cmd.copy" in line]
    # The only copies are readbacks into one staging buffer: the i1 of the write_indices range
    # check (1 byte; one for both scatters, which share their write_indices) and
    # max(nonpad_kv_seqlen) (8 bytes), which sizes the attention's key slice.
    assert all("-> !stream.resource<staging>" in line for line in copies), copies
    assert sorted(line.split(" : ")[0].split(", ")[-1] for line in copies) == ["%c1", "%c8"], copies
    assert entry.count(" rw %") == 2  # each scatter reads and writes its cache argument, nothing else


@pytest.mark.parametrize("hoisted, waits", [(True, 1), (False, 2)])
def test_decode_step_waits_for_the_device_once(hoisted, waits, monkeypatch):
    """Both readbacks (the range check, max(nonpad_kv_seqlen)) come from one execution and one
    wait (kvattn-hoist-valid-lengths); without the pass the call waits twice."""
    if not hoisted:
        monkeypatch.setitem(pipeline.STAGE_PASSES, "input", ("iree-torch-to-input",))
    stream, _ = compile_to_stage(demo.decode_step_model(), "stream")
    entry = stream[stream.index("@decode_step$async("):stream.index("util.func public @decode_step(")]
    assert entry.count("stream.timepoint.await") == waits


def test_functional_run_leaves_caller_arrays_alone_even_when_aliased(decode_module):
    inputs = decode_inputs(np.random.default_rng(1))
    before = {name: array.copy() for name, array in inputs.items()}
    first, second = decode_module.run(inputs), decode_module.run(inputs)
    for name in inputs:
        np.testing.assert_array_equal(inputs[name], before[name], err_msg=name)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def _cache_model(name: str) -> onnx.ModelProto:
    """Models where the present may not take the past's buffer, each for a different reason, and
    one where it may although the present is also read (copied by an Identity)."""
    tensor = helper.make_tensor_value_info
    past, new = tensor("past", TensorProto.FLOAT, CACHE), tensor("new", TensorProto.FLOAT, NEW_ROWS)
    position = tensor("position", TensorProto.INT64, (1,))
    scatter = lambda out, name: helper.make_node(  # noqa: E731
        "TensorScatter", ["past", "new", "position"], [out], name=name, axis=2)
    present, other = tensor("present", TensorProto.FLOAT, CACHE), tensor("other", TensorProto.FLOAT, CACHE)
    nodes = {
        "read_later": [scatter("present", "update"), helper.make_node("Neg", ["past"], ["other"], name="reader")],
        "returned_unchanged": [scatter("present", "update"), helper.make_node("Identity", ["past"], ["other"])],
        "two_updates": [scatter("present", "update"),
                        helper.make_node("TensorScatter", ["past", "past_rows", "position"], ["other"],
                                         name="second_update", axis=2)],
        "present_also_copied": [scatter("present", "update"), helper.make_node("Identity", ["present"], ["other"])],
        "internal_past": [helper.make_node("Neg", ["past"], ["negated"]),
                          helper.make_node("TensorScatter", ["negated", "new", "position"], ["present"],
                                           name="update", axis=2),
                          helper.make_node("Identity", ["negated"], ["other"])],
    }[name]
    inputs = [past, new, position] + ([tensor("past_rows", TensorProto.FLOAT, NEW_ROWS)] if name == "two_updates" else [])
    graph = helper.make_graph(nodes, name, inputs, [present, other])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("name, decision", [
    ("read_later", "copied: past is also read by node 'reader'"),
    ("returned_unchanged", "copied: past is also read by node 'Identity_1'"),
    ("two_updates", "copied: past is also updated by node 'second_update'"),
    ("present_also_copied", "aliased: past -> present"),
    ("internal_past", "copied: past_cache is computed inside the model, not a model input"),
])
def test_aliasing_decisions_keep_results_correct(name, decision):
    model = _cache_model(name)
    module = CompiledModule(compile_model(model).vmfb)
    assert decision in [node["cache"] for node in module.manifest.nodes]
    # A past updated twice, or not updated itself, is no session cache.
    expected_links = [] if name in ("two_updates", "internal_past") else [decision.startswith("aliased")]
    assert [link.aliased for link in module.manifest.caches] == expected_links
    rng = np.random.default_rng(2)
    inputs = {value.name: rng.standard_normal([d.dim_value for d in value.type.tensor_type.shape.dim]).astype(np.float32)
              for value in model.graph.input if value.name != "position"}
    inputs["position"] = np.array([5], np.int64)
    before = {key: value.copy() for key, value in inputs.items()}
    got = module.run(inputs)
    for output, want in zip(module.output_names, ReferenceEvaluator(model).run(None, inputs)):
        np.testing.assert_array_equal(got[output], want, err_msg=output)
    for key in inputs:
        np.testing.assert_array_equal(inputs[key], before[key], err_msg=key)


def test_session_keeps_caches_on_the_device(decode_module):
    reference = ReferenceEvaluator(demo.decode_step_model())
    rng = np.random.default_rng(3)
    start = decode_inputs(rng)
    caches = {"past_key": start["past_key"], "past_value": start["past_value"]}
    session = DecodeSession(decode_module, caches)
    assert session.step_inputs == ["query", "new_key", "new_value", "write_indices", "nonpad_kv_seqlen"]
    lengths = np.array([3, 7], np.int64)
    for _ in range(4):
        step = {name: value for name, value in decode_inputs(rng, lengths).items() if name not in caches}
        got = session.step(step)
        want = dict(zip(decode_module.output_names, reference.run(None, {**step, **caches})))
        np.testing.assert_allclose(got["output"], want["output"], rtol=1e-5, atol=1e-5)
        assert set(got) == {"output"}
        caches = {"past_key": want["present_key"], "past_value": want["present_value"]}
        lengths += 1
    for name, array in session.caches().items():
        np.testing.assert_array_equal(array, caches[name], err_msg=name)
    session.reset()
    assert session.steps == 0
    assert all(not array.any() for array in session.caches().values())


def test_session_works_when_the_cache_is_copied():
    model = _cache_model("read_later")
    session = DecodeSession(CompiledModule(compile_model(model).vmfb))
    rng = np.random.default_rng(4)
    cache = np.zeros(CACHE, np.float32)
    for position in range(3):
        new = rng.standard_normal(NEW_ROWS).astype(np.float32)
        got = session.step({"new": new, "position": np.array([position], np.int64)})
        want = ReferenceEvaluator(model).run(None, {"past": cache, "new": new, "position": np.array([position], np.int64)})
        np.testing.assert_array_equal(got["other"], want[1])
        cache = want[0]
    np.testing.assert_array_equal(session.caches()["past"], cache)


def test_session_needs_a_model_with_caches():
    model = _cache_model("read_later")
    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "no_cache",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2,))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2,))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])
    with pytest.raises(KvattnError, match="no KV caches"):
        DecodeSession(CompiledModule(compile_model(model).vmfb))


def test_run_steps_on_the_command_line(tmp_path, capsys):
    model_path = tmp_path / "decode.onnx"
    onnx.save(demo.decode_step_model(), model_path)
    rng = np.random.default_rng(5)
    steps = 3
    first = decode_inputs(rng, lengths=(0, 0))
    per_step = {name: np.stack([decode_inputs(rng)[name] for _ in range(steps)])
                for name in ("query", "new_key", "new_value")}
    per_step["write_indices"] = np.stack([np.array([s, s + 2], np.int64) for s in range(steps)])
    per_step["nonpad_kv_seqlen"] = per_step["write_indices"] + 1
    flags = []
    for name, array in per_step.items():
        np.save(tmp_path / f"{name}.npy", array)
        flags += ["-i", f"{name}=@{tmp_path / name}.npy"]
    assert cli.main(["run", str(model_path), *flags, "--steps", str(steps), "--output-dir", str(tmp_path / "out")]) == 0
    assert "step 3/3" in capsys.readouterr().err
    reference = ReferenceEvaluator(demo.decode_step_model())
    caches = {"past_key": np.zeros_like(first["past_key"]), "past_value": np.zeros_like(first["past_value"])}
    outputs = []
    for step in range(steps):
        want = reference.run(None, {**{n: a[step] for n, a in per_step.items()}, **caches})
        outputs.append(want[0])
        caches = {"past_key": want[1], "past_value": want[2]}
    np.testing.assert_allclose(np.load(tmp_path / "out" / "output.npy"), np.stack(outputs), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "present_key.npy"), caches["past_key"])
