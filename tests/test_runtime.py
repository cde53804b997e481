"""The runtime: functional calls never touch the caller's arrays, inputs are checked against
the manifest before dispatch, and linear TensorScatter bounds are enforced up front."""

from __future__ import annotations

import numpy as np
import pytest

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime import demo
from kvattn.runtime.compiler import compile_model
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
    with pytest.raises(KvattnError, match=r"TensorScatter node 'update_key_cache'.*exceed the cache length 32"):
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
