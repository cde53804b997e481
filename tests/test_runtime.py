"""The runtime: functional calls never touch the caller's arrays, inputs are checked against
the manifest before dispatch, linear TensorScatter bounds are enforced up front, a call the
module refuses on the device is a clean error, and a call waits under SCHED_BATCH."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime import demo, device_buffers, targets
from kvattn.runtime.compiler import compile_model, iree_compile
from kvattn.runtime.manifest import REFLECTION_KEY, Manifest, TensorSpec
from kvattn.runtime.module import CompiledModule
from tests.onnx_models import decode_inputs


@pytest.fixture(scope="module")
def decode_module():
    return CompiledModule(compile_model(demo.decode_step_model()).vmfb, driver="local-task")


def test_functional_call_never_mutates_inputs(decode_module):
    """On local-task host memory could be imported without a copy and the scatter's dead cache
    argument updated in place; the caller's arrays must stay as they were."""
    inputs = decode_inputs(np.random.default_rng(0))
    before = {name: array.copy() for name, array in inputs.items()}
    first = decode_module.run(inputs)
    second = decode_module.run(inputs)
    for name in inputs:
        np.testing.assert_array_equal(inputs[name], before[name], err_msg=name)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    assert not np.array_equal(first["present_key"], inputs["past_key"])  # the update did happen


def test_outputs_do_not_alias_each_other_or_inputs(decode_module):
    inputs = decode_inputs(np.random.default_rng(1))
    outputs = decode_module.run(inputs)
    arrays = list(inputs.values()) + list(outputs.values())
    for i, a in enumerate(arrays):
        for b in arrays[i + 1:]:
            assert not np.shares_memory(a, b)


def test_scatter_past_the_cache_end_is_refused(decode_module):
    inputs = decode_inputs(np.random.default_rng(2), lengths=(3, demo.CAPACITY))
    before = {name: array.copy() for name, array in inputs.items()}
    with pytest.raises(KvattnError, match=r"TensorScatter node 'update_key_cache'.*out of range.*into a cache of 32"):
        decode_module.run(inputs)
    for name in inputs:
        np.testing.assert_array_equal(inputs[name], before[name])


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("query"), r"missing input\(s\) query"),
    (lambda d: d.update(typo=d.pop("query")), r"unknown input\(s\) typo; missing input\(s\) query"),
    (lambda d: d.update(query=d["query"][:, :4]), r"input 'query' has shape \[2, 4, 1, 16\], expected \[2, 8, 1, 16\]"),
    (lambda d: d.update(query=d["query"].astype(np.float64)), r"input 'query' has dtype float64, expected float32"),
])
def test_bad_inputs_name_what_the_module_expects(decode_module, change, message):
    inputs = decode_inputs(np.random.default_rng(3))
    change(inputs)
    with pytest.raises(KvattnError, match=message) as error:
        decode_module.run(inputs)
    assert "query: float32[2,8,1,16]" in str(error.value)


def test_manifest_travels_inside_the_vmfb():
    compiled = compile_model(demo.decode_step_model())
    module = CompiledModule(compiled.vmfb)
    assert module.manifest == compiled.manifest
    assert module.input_names[:3] == ["query", "new_key", "new_value"]
    assert [n["kvattn_op"] for n in module.manifest.nodes] == ["kvattn.tensor_scatter"] * 2 + ["kvattn.attention"]


def test_not_a_vmfb_is_a_clear_error():
    with pytest.raises(KvattnError, match="not a loadable IREE vmfb"):
        CompiledModule(b"definitely not a flatbuffer")


def test_rank0_inputs_stay_rank0():
    """transformers' exporter has rank-0 int64 inputs (cumulative_length)."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["cumulative_length"], ["offset"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["x", "offset"], ["y"])], "rank0",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("cumulative_length", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    module = CompiledModule(compile_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).vmfb)
    assert module.manifest.inputs[1] == TensorSpec("cumulative_length", (), "i64", ())
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(module.run({"x": x, "cumulative_length": np.array(3)})["y"], x + 3)
    for wrong in (np.array([3]), np.array([[3]])):
        with pytest.raises(KvattnError, match=r"input 'cumulative_length' has shape \[1(, 1)?\], expected \[\]"):
            module.run({"x": x, "cumulative_length": wrong})
    # Past the checks, the module's own ABI check refuses it: its status text, without the stack.
    views = [device_buffers.upload(module.device, x), device_buffers.upload(module.device, np.array([3]))]
    with pytest.raises(KvattnError) as error:
        module.invoke(views)
    assert str(error.value).startswith("the module failed at run time: tensor shape rank mismatch; expected 0 (scalar)")
    assert "bytecode" not in str(error.value) and "\n" not in str(error.value)


def test_device_side_assert_is_a_clean_error():
    """A cf.assert in the module (as a lowering emits for data it must refuse) fails the call
    with its message, without the runtime's status prefix."""
    manifest = Manifest("main", "llvm-cpu", (TensorSpec("n", (1,), "i64"),), (TensorSpec("y", (1,), "i64"),))
    module = CompiledModule(iree_compile(f"""
func.func @main(%n: tensor<1xi64>) -> tensor<1xi64> attributes {{
    iree.reflection = {{{REFLECTION_KEY} = {json.dumps(manifest.to_json())}}}}} {{
  %c0 = arith.constant 0 : index
  %v = tensor.extract %n[%c0] : tensor<1xi64>
  %c8 = arith.constant 8 : i64
  %ok = arith.cmpi sle, %v, %c8 : i64
  cf.assert %ok, "Attention node 'attn': nonpad_kv_seqlen exceeds the 8 keys"
  return %n : tensor<1xi64>
}}""", targets.get("llvm-cpu").flags(None)))
    assert module.run({"n": np.array([3])})["y"].tolist() == [3]
    with pytest.raises(KvattnError) as error:
        module.run({"n": np.array([9])})
    assert str(error.value) == "the module failed at run time: Attention node 'attn': nonpad_kv_seqlen exceeds the 8 keys"


class _PolicyDuringCalls:
    """A VM context that records the calling thread's scheduling policy at each call."""

    def __init__(self, context):
        self.context, self.policies = context, []

    def invoke(self, *arguments):
        self.policies.append(os.sched_getscheduler(0))
        return self.context.invoke(*arguments)


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")
@pytest.mark.parametrize("policy", ["SCHED_OTHER", "SCHED_IDLE"])
def test_call_waits_without_wakeup_preemption(decode_module, monkeypatch, policy):
    """A SCHED_OTHER caller waits under SCHED_BATCH during the call and gets its policy back;
    a caller under another policy (here SCHED_IDLE, which it could not leave unprivileged) is
    left alone. Each case in its own thread, so the test's thread keeps its policy."""
    recorder = _PolicyDuringCalls(decode_module._vm_context)
    monkeypatch.setattr(decode_module, "_vm_context", recorder)
    inputs = decode_inputs(np.random.default_rng(0))
    seen = {}

    def call():
        try:
            os.sched_setscheduler(0, getattr(os, policy), os.sched_param(0))
        except OSError as exc:  # a sandbox that refuses policy changes: nothing to check
            seen["refused"] = exc
            return
        decode_module.run(inputs)
        seen["after"] = os.sched_getscheduler(0)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    if "refused" in seen:
        pytest.skip(f"this machine refuses {policy}: {seen['refused']}")
    during = os.SCHED_BATCH if policy == "SCHED_OTHER" else getattr(os, policy)
    assert recorder.policies == [during]
    assert seen["after"] == getattr(os, policy)
