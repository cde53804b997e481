"""Decoders exported as exporters export them (tests/models/export_decoders.py made them): Llama,
Qwen2/3, Gemma2/3, Phi3 and Mistral styles at opsets 23-25, with symbolic batch / sequence / past
dims, a concat KV cache, no cache, a StaticCache (ScatterND) and transformers' own exporter.
One vmfb per fixture runs every stored case (prefill with an empty past, decode, batch 2 with left
padding) and matches onnxruntime and torch; `dims=` specialization gives the same numbers."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest

from kvattn.runtime.compiler import compile_cached
from kvattn.runtime.module import CompiledModule
from tests.exported_fixtures import (FIXTURES, absolute_tolerance, by_fixture, onnxruntime_session, stored_cases,
                                     tolerance)


def symbolic_dims(path: pathlib.Path, inputs: dict) -> dict[str, int]:
    """The model's symbolic input dims bound to the sizes they have in `inputs`."""
    dims = {}
    for value in onnx.load(path, load_external_data=False).graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param:
                dims[dim.dim_param] = int(inputs[value.name].shape[axis])
    return dims


def check_case(path, module: CompiledModule, session, name: str, inputs: dict, from_torch: list) -> None:
    got = module.run(inputs)
    expected = session.run(None, inputs)
    assert list(got) == [o.name for o in session.get_outputs()]
    for (output, value), reference, torch_value in zip(got.items(), expected, from_torch, strict=True):
        where = f"{path.stem} case {name}: {output}"
        rtol = tolerance(path)
        atol = absolute_tolerance(reference, rtol)
        np.testing.assert_allclose(value, reference, rtol=rtol, atol=atol, err_msg=f"{where} vs onnxruntime")
        np.testing.assert_allclose(value, torch_value, rtol=rtol, atol=atol, err_msg=f"{where} vs torch")


def test_every_architecture_variant_and_opset_is_there():
    stems = [path.stem for path in FIXTURES]
    for arch in ("llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mistral"):
        assert any(stem.startswith(arch + "_") for stem in stems), arch
    for variant in ("decode", "nocache", "eager", "static", "hf"):
        assert any(variant in stem for stem in stems), variant
    for opset in (23, 24, 25):
        assert sum(f"_opset{opset}_" in stem for stem in stems) >= 3, opset
    assert {f"llama_opset{opset}_decode" for opset in (23, 24, 25)} <= set(stems)


@pytest.mark.parametrize("path", by_fixture(FIXTURES))
def test_one_vmfb_serves_every_shape(path):
    model = onnx.load(path)
    symbols = {d.dim_param for v in model.graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert symbols, f"{path.stem} has no symbolic input dims"
    module = CompiledModule(compile_cached(path))
    assert any(None in spec.shape for spec in module.manifest.inputs), "the module must keep the dynamic dims"
    session = onnxruntime_session(path)
    cases = stored_cases(path)
    assert len(cases) >= 3
    for name, inputs, from_torch in cases:
        check_case(path, module, session, name, inputs, from_torch)


# dims= specialization on one fixture of each export variant (a second compile of every fixture
# would cost the suite two minutes).
SPECIALIZED = [next(p for p in FIXTURES if variant in p.stem)
               for variant in ("_decode", "_nocache", "_static", "_hf", "_eager") if any(variant in p.stem for p in FIXTURES)]


@pytest.mark.parametrize("path", SPECIALIZED, ids=[p.stem for p in SPECIALIZED])
def test_dims_specialization(path):
    """Binding every symbolic dim to one case's sizes compiles a static module with the same results."""
    name, inputs, from_torch = stored_cases(path)[-1]
    module = CompiledModule(compile_cached(path, dims=symbolic_dims(path, inputs)))
    assert all(None not in spec.shape for spec in module.manifest.inputs)
    session = onnxruntime_session(path)
    check_case(path, module, session, name, inputs, from_torch)
