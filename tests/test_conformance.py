"""ONNX conformance: the official node tests for TensorScatter and Attention on llvm-cpu,
through kvattn's ONNX backend. Cases kvattn does not handle yet are xfail with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from kvattn.runtime import backend
from tests.conformance_cases import node_cases

SOFTCAP = "softcap is not lowered yet"
QK_OUTPUT = "the qk_matmul_output output is not lowered yet"
LOW_PRECISION = ("1-ulp differences: the reference rounds every intermediate to fp16/bf16, kvattn "
                 "accumulates in f32 and rounds once; rtol=1e-3 is below bf16's epsilon")

KNOWN_GAPS = {
    **{name: SOFTCAP for name in (
        "test_attention_4d_softcap", "test_attention_4d_gqa_softcap", "test_attention_4d_diff_heads_sizes_softcap",
        "test_attention_3d_softcap", "test_attention_3d_gqa_softcap", "test_attention_3d_diff_heads_sizes_softcap",
        "test_attention_4d_softcap_neginf_mask", "test_attention_4d_softcap_neginf_mask_poison",
        "test_attention_4d_with_qk_matmul_softcap", "test_attention_3d_with_past_and_present_qk_matmul_softcap",
        "test_attention_local_window_gqa_rank4_mask")},
    **{name: QK_OUTPUT for name in (
        "test_attention_4d_with_qk_matmul", "test_attention_4d_with_qk_matmul_bias",
        "test_attention_4d_with_qk_matmul_softmax", "test_attention_4d_with_past_and_present_qk_matmul_bias",
        "test_attention_4d_with_past_and_present_qk_matmul_bias_3d_mask",
        "test_attention_4d_with_past_and_present_qk_matmul_bias_4d_mask",
        "test_attention_4d_with_past_and_present_qk_matmul_bias_3d_mask_causal",
        "test_attention_4d_with_past_and_present_qk_matmul_bias_4d_mask_causal",
        "test_attention_4d_with_past_and_present_qk_matmul", "test_attention_3d_with_past_and_present_qk_matmul",
        "test_attention_3d_with_past_and_present_qk_matmul_bias",
        "test_attention_3d_with_past_and_present_qk_matmul_softmax",
        "test_attention_23_fullymasked_qk_matmul_output_mode3_zero",
        "test_attention_24_fullymasked_qk_matmul_output_mode3_zero",
        "test_attention_24_qk_matmul_output_mode3_softmax_precision")},
}
# Rounding-only gaps: whether the last ulp agrees can depend on the CPU, so these are not strict.
ROUNDING_GAPS = {name: LOW_PRECISION for name in (
    "test_attention_4d_causal_bf16", "test_attention_4d_causal_fp16", "test_attention_4d_padded_kv_bf16",
    "test_attention_4d_causal_padded_kv_bf16", "test_attention_4d_attn_mask_causal_bf16",
    "test_attention_3d_causal_bf16")}


def _params(op_type: str):
    params = []
    for case in node_cases(op_type):
        marks = []
        if case.name in KNOWN_GAPS:
            marks.append(pytest.mark.xfail(reason=KNOWN_GAPS[case.name], strict=True))
        elif case.name in ROUNDING_GAPS:
            marks.append(pytest.mark.xfail(reason=ROUNDING_GAPS[case.name], strict=False))
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


def _as_comparable(array) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(np.float64) if array.dtype.kind == "V" or array.dtype.name == "bfloat16" else array


def _check(case) -> None:
    rep = backend.prepare(case.model, device="CPU")
    for inputs, expected_outputs in case.data_sets:
        outputs = rep.run(list(inputs))
        assert len(outputs) == len(expected_outputs)
        for got, expected in zip(outputs, expected_outputs):
            assert got.shape == np.asarray(expected).shape
            np.testing.assert_allclose(_as_comparable(got), _as_comparable(expected), rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("case", _params("TensorScatter"))
def test_tensor_scatter_conformance(case):
    _check(case)


@pytest.mark.parametrize("case", _params("Attention"))
def test_attention_conformance(case):
    _check(case)


def test_case_counts():
    """The suite covers every official case (93 Attention, 3 TensorScatter); no silent drop."""
    assert len(node_cases("Attention")) == 93
    assert len(node_cases("TensorScatter")) == 3
    assert set(KNOWN_GAPS) | set(ROUNDING_GAPS) <= {c.name for c in node_cases("Attention")}
