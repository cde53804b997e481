"""--attention-precision on llvm-cpu against onnx.reference: fp16/bf16 round an f32 attention's
Q, K, V (and its probabilities) for the two matmuls and nothing else, so the result matches the
reference run on inputs rounded the same way, and differs from the exact result by that rounding;
attention whose scores are materialized stays exact."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule
from tests.exported_fixtures import FIXTURES, stored_cases
from tests.onnx_models import single_node_model

ROUNDED = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}
# Max |error| against the reference on rounded inputs (what the probabilities' rounding adds).
TOLERANCE = {"fp16": 2e-3, "bf16": 1.5e-2}


def _gqa_causal_past(rng, qk_matmul_output: bool = False):
    """GQA 8/2 heads, head 32, 6 new tokens over a past of 10, causal, a float mask."""
    inputs = {"Q": rng.standard_normal((2, 8, 6, 32), dtype=np.float32),
              "K": rng.standard_normal((2, 2, 6, 32), dtype=np.float32),
              "V": rng.standard_normal((2, 2, 6, 32), dtype=np.float32),
              "attn_mask": rng.uniform(-1, 0, (6, 16)).astype(np.float32),
              "past_key": rng.standard_normal((2, 2, 10, 32), dtype=np.float32),
              "past_value": rng.standard_normal((2, 2, 10, 32), dtype=np.float32)}
    outputs = {"Y": ((2, 8, 6, 32), np.float32), "present_key": ((2, 2, 16, 32), np.float32),
               "present_value": ((2, 2, 16, 32), np.float32)}
    if qk_matmul_output:
        outputs["qk_matmul_output"] = ((2, 8, 6, 16), np.float32)
    model = single_node_model("Attention", inputs, list(inputs), outputs, opset=24, node_name="attention",
                              is_causal=1)
    return model, inputs


def _run(model, inputs, precision: str) -> np.ndarray:
    module = CompiledModule(compile_model(model, "llvm-cpu", attention_precision=precision).vmfb, "local-task")
    return module.run(inputs)["Y"]


def _reference(model, inputs) -> np.ndarray:
    return ReferenceEvaluator(model).run(["Y"], inputs)[0]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_rounds_only_the_matmul_inputs(precision):
    model, inputs = _gqa_causal_past(np.random.default_rng(0))
    got = _run(model, inputs, precision)
    rounded = {name: (value.astype(ROUNDED[precision]).astype(np.float32) if name != "attn_mask" else value)
               for name, value in inputs.items()}
    np.testing.assert_allclose(got, _reference(model, rounded), rtol=0, atol=TOLERANCE[precision])
    exact_error = np.abs(got - _reference(model, inputs)).max()
    ieee_error = np.abs(_run(model, inputs, "ieee") - _reference(model, inputs)).max()
    assert ieee_error < 1e-5
    assert exact_error > 10 * ieee_error, "the inputs were not rounded"


def test_exported_decoder_at_fp16_serves_every_shape():
    """An exporter's decoder (symbolic batch/sequence/past) at fp16 precision: one vmfb runs
    prefill with an empty past, decode and batch 2 with left padding, within 1e-3 of torch
    (relative to each output's largest magnitude; measured ~1e-4), the caller's arrays untouched."""
    path = next(p for p in FIXTURES if p.stem == "llama_opset24_decode")
    module = CompiledModule(compile_model(path, "llvm-cpu", attention_precision="fp16").vmfb, "local-task")
    for name, inputs, from_torch in stored_cases(path):
        before = {key: value.copy() for key, value in inputs.items()}
        got = module.run(inputs)
        for key, value in inputs.items():
            np.testing.assert_array_equal(value, before[key], err_msg=f"{name}: input {key} was modified")
        for (output, value), expected in zip(got.items(), from_torch, strict=True):
            np.testing.assert_allclose(value, expected, rtol=0, atol=1e-3 * max(1.0, float(np.abs(expected).max())),
                                       err_msg=f"{name}: {output}")


def test_materialized_scores_stay_exact():
    model, inputs = _gqa_causal_past(np.random.default_rng(1), qk_matmul_output=True)
    np.testing.assert_allclose(_run(model, inputs, "fp16"), _reference(model, inputs), rtol=1e-5, atol=1e-5)


def test_unknown_precision_and_decomposing_target_are_user_errors():
    model, _ = _gqa_causal_past(np.random.default_rng(2))
    with pytest.raises(KvattnError, match="unknown attention precision 'tf32'; choose one of ieee, fp16, bf16"):
        compile_model(model, "llvm-cpu", attention_precision="tf32")
    with pytest.raises(KvattnError, match="the vulkan target computes attention in f32"):
        compile_model(model, "vulkan", attention_precision="bf16")
