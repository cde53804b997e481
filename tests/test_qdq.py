"""Fused Q/DQ attention (kvattn-fuse-qdq) and quantized KV caches, against onnx.reference on the
same quantized graphs: fp32-dequantized outputs within 1e-5 of the output range, int8/uint8
outputs within 1 unit, float8 within 2e-2 relative."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from benchmarks.models import ELEMENT, F8, quantization_parameters, quantized_decode_model
from kvattn.lowering.diagnostics import UnsupportedError
from kvattn.runtime import inspect
from kvattn.runtime.compiler import compile_model, compile_to_stage
from kvattn.runtime.module import CompiledModule
from tests.onnx_models import fuse_cpu_attention

B, HQ, HKV, S, L, D = 1, 4, 2, 3, 6, 8


def quantized_attention(dtype, quantized=("Q", "K", "V", "Y"), per_axis=False, causal=0, extra_use=False):
    dtype = np.dtype(dtype)
    shapes = {"Q": (B, HQ, S, D), "K": (B, HKV, L, D), "V": (B, HKV, L, D)}
    nodes, inits, inputs = [], [], []
    for name, shape in shapes.items():
        if name in quantized:
            inits += quantization_parameters(name, dtype, shape[1] if per_axis else None, 0.05)
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zero"], [name], axis=1))
            inputs.append(helper.make_tensor_value_info(f"{name}_q", ELEMENT[dtype], shape))
        else:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    y_name = "Y_float" if "Y" in quantized else "Y"
    nodes.append(helper.make_node("Attention", ["Q", "K", "V"], [y_name], name="attention", is_causal=causal))
    outputs = []
    if "Y" in quantized:
        inits += quantization_parameters("Y", dtype, HQ if per_axis else None, 0.01)
        nodes.append(helper.make_node("QuantizeLinear", ["Y_float", "Y_scale", "Y_zero"], ["Y"], axis=1))
        outputs.append(helper.make_tensor_value_info("Y", ELEMENT[dtype], (B, HQ, S, D)))
    else:
        outputs.append(helper.make_tensor_value_info("Y", TensorProto.FLOAT, (B, HQ, S, D)))
    if extra_use:
        nodes.append(helper.make_node("Identity", ["K"], ["K_out"]))
        outputs.append(helper.make_tensor_value_info("K_out", TensorProto.FLOAT, shapes["K"]))
    model = helper.make_model(helper.make_graph(nodes, "quantized_attention", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 24)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _random_inputs(model, rng):
    inputs = {}
    for value in model.graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if dtype == np.int8:
            inputs[value.name] = rng.integers(-120, 120, shape).astype(np.int8)
        elif dtype == np.uint8:
            inputs[value.name] = rng.integers(10, 250, shape).astype(np.uint8)
        elif dtype == np.int64:
            inputs[value.name] = np.array([4], np.int64)
        else:
            inputs[value.name] = (rng.standard_normal(shape) * (3 if dtype == F8 else 1)).astype(dtype)
    return inputs


def _assert_close(got, expected):
    if expected.dtype in (np.int8, np.uint8):
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    elif expected.dtype == F8:
        np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), rtol=2e-2, atol=2e-2)
    else:
        span = float(np.ptp(expected)) or 1.0
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * span)


def _check(model, rng_seed=0):
    inputs = _random_inputs(model, np.random.default_rng(rng_seed))
    module = CompiledModule(compile_model(model).vmfb)
    got = module.run(inputs)
    for name, expected in zip(module.output_names, ReferenceEvaluator(model).run(None, inputs)):
        assert got[name].dtype == expected.dtype
        _assert_close(got[name], expected)


@pytest.mark.parametrize("route", ["materialized", "fused"])
@pytest.mark.parametrize("dtype", [np.int8, F8], ids=["int8", "float8e4m3fn"])
@pytest.mark.parametrize("per_axis", [False, True], ids=["per_tensor", "per_head"])
@pytest.mark.parametrize("causal", [0, 1])
def test_fully_quantized_attention_matches_reference(dtype, per_axis, causal, route, monkeypatch):
    """On llvm-cpu's route for these small shapes (K and V dequantized inside the contractions of
    the materialized scores) and on the fused op (dequantized next to it, in its dispatch)."""
    if route == "fused":
        fuse_cpu_attention(monkeypatch)
    _check(quantized_attention(dtype, per_axis=per_axis, causal=causal))


@pytest.mark.parametrize("quantized", [("K", "V"), ("Q",), ("Y",), ("Q", "K", "V")])
def test_any_subset_is_fused(quantized):
    model = quantized_attention(np.int8, quantized)
    _check(model)
    summary = inspect.summary(model)
    assert "fused Q/DQ: " + ", ".join(quantized) in summary
    assert "DequantizeLinear" not in summary and "QuantizeLinear" not in summary


def test_fully_quantized_attention_is_one_dispatch_on_the_fused_op(monkeypatch):
    fuse_cpu_attention(monkeypatch)
    flow, _ = compile_to_stage(quantized_attention(np.int8), "flow")
    assert inspect.count_dispatches(flow) == 1


def test_materialized_scores_read_the_quantized_cache():
    """Q·Kᵀ and P·V read K and V as int8 and dequantize in their bodies: no float copy of a cache."""
    model = quantized_decode_model(np.int8, batch=B, q_heads=HQ, kv_heads=HKV, head_size=D, capacity=16)
    lowered, _ = compile_to_stage(model, "lowered")
    contractions = [line for line in lowered.splitlines()
                    if "linalg.generic" in line and '"reduction"]' in line and "xi8>" in line.split("outs(")[0]]
    assert len(contractions) == 2, contractions  # Q·Kᵀ over d, P·V over the keys
    assert not any("linalg.generic" in line and "xi8>" in line.split("outs(")[0] and "xf32>" in line.split("outs(")[1]
                   and '"reduction"' not in line for line in lowered.splitlines())  # no elementwise dequantization


def test_uint8_stays_unfused_and_correct():
    model = quantized_attention(np.uint8)
    _check(model)
    assert "Q/DQ left unfused: Q: uint8 zero points" in inspect.summary(model)


def test_dequantized_tensor_used_elsewhere_stays_unfused_and_correct():
    model = quantized_attention(np.int8, extra_use=True)
    _check(model)
    summary = inspect.summary(model)
    assert "Q/DQ left unfused: K: the dequantized tensor is also used elsewhere" in summary
    assert "DequantizeLinear" in summary  # the K dequantization is left to IREE's ONNX lowering


@pytest.mark.parametrize("dtype", [np.int8, F8], ids=["int8", "float8e4m3fn"])
def test_quantized_kv_cache_decode(dtype):
    model = quantized_decode_model(dtype, batch=B, q_heads=HQ, kv_heads=HKV, head_size=D, capacity=16)
    rng = np.random.default_rng(1)
    inputs = _random_inputs(model, rng)
    inputs["write_indices"], inputs["nonpad_kv_seqlen"] = np.array([4]), np.array([5])
    module = CompiledModule(compile_model(model).vmfb)
    got = module.run(inputs)
    expected = dict(zip(module.output_names, ReferenceEvaluator(model).run(None, inputs)))
    for name in expected:
        assert got[name].dtype == expected[name].dtype  # the caches stay quantized
        _assert_close(got[name], expected[name])
    assert "fused Q/DQ: K, V" in inspect.summary(model)


@pytest.mark.parametrize("route", ["materialized", "fused"])
def test_every_float8_value_dequantizes_exactly(route, monkeypatch):
    """All 256 float8e4m3fn bit patterns (±0, subnormals, 448, NaN) as V of an attention over a
    single key, whose probability is exactly 1: the output is each dequantized value, bit for bit
    (quantization.float8_e4m3fn_to_f32 rebuilds them from their bits)."""
    if route == "fused":
        fuse_cpu_attention(monkeypatch)
    info = helper.make_tensor_value_info
    nodes = [helper.make_node("DequantizeLinear", ["V_q", "V_scale"], ["V"]),
             helper.make_node("Attention", ["Q", "K", "V"], ["Y"], name="attention")]
    scale = onnx.numpy_helper.from_array(np.array(1.0, np.float32), "V_scale")
    graph = helper.make_graph(nodes, "every_float8", [info("Q", TensorProto.FLOAT, (1, 2, 1, 8)),
                                                       info("K", TensorProto.FLOAT, (1, 1, 1, 8)),
                                                       info("V_q", TensorProto.FLOAT8E4M3FN, (1, 1, 1, 256))],
                              [info("Y", TensorProto.FLOAT, (1, 2, 1, 256))], [scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])
    rng = np.random.default_rng(0)
    inputs = {"Q": rng.standard_normal((1, 2, 1, 8)).astype(np.float32),
              "K": rng.standard_normal((1, 1, 1, 8)).astype(np.float32),
              "V_q": np.arange(256, dtype=np.uint8).view(F8).reshape(1, 1, 1, 256)}
    got = CompiledModule(compile_model(model).vmfb).run(inputs)["Y"]
    expected = ReferenceEvaluator(model).run(None, inputs)[0]
    assert np.isnan(expected).sum() == 4  # 0x7F and 0xFF, for each of the two query heads
    np.testing.assert_array_equal(got, expected)
    assert "fused Q/DQ: V" in inspect.summary(model)


@pytest.mark.parametrize("target", ["vulkan", "cuda"])
def test_float8_keys_and_values_are_refused_where_iree_gets_them_wrong(target):
    """A float8 K/V fused into the attention: wrong values on Vulkan, no compile for CUDA in IREE
    3.13, so kvattn refuses it there with an error naming the node; a float8 Q or Y still compiles."""
    with pytest.raises(UnsupportedError, match=r"node 'attention'.*float8e4m3fn K and V"):
        compile_model(quantized_attention(F8, ("K", "V")), target)
    compile_model(quantized_attention(F8, ("Q",)), "vulkan")
