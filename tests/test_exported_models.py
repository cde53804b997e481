"""Decoders exported by torch.onnx (dynamo) at opsets 23-25 — Llama-, Qwen- and Gemma-style, prefill
and decode with a past KV cache (tests/models/export_decoders.py made them) — compile with kvattn
and match onnxruntime on the logits and present caches."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime
import pytest

from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule

FIXTURES = sorted((pathlib.Path(__file__).parent / "models" / "fixtures").glob("*.onnx"))


def test_every_architecture_opset_and_step_is_there():
    names = {path.stem for path in FIXTURES}
    for arch in ("llama", "qwen2", "gemma"):
        for opset in (23, 24, 25):
            for step in ("prefill", "decode"):
                assert f"{arch}_opset{opset}_{step}" in names


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_exported_decoder_matches_onnxruntime(path):
    model = onnx.load(path)
    assert any(node.op_type == "Attention" for node in model.graph.node)
    data = np.load(path.with_suffix(".npz"))
    inputs = {name.removeprefix("in_"): data[name] for name in data.files if name.startswith("in_")}
    module = CompiledModule(compile_model(model).vmfb)
    got = module.run(inputs)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, inputs)
    assert list(got) == [o.name for o in session.get_outputs()]
    for (name, value), reference, from_torch in zip(got.items(), expected, (data[f"out_{i}"] for i in range(len(expected)))):
        np.testing.assert_allclose(value, reference, rtol=1e-4, atol=1e-4, err_msg=f"{path.stem}: {name} vs onnxruntime")
        np.testing.assert_allclose(value, from_torch, rtol=1e-4, atol=1e-4, err_msg=f"{path.stem}: {name} vs torch")
