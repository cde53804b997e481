"""Every lowering with symbolic dims: one vmfb per model, run at several shapes (an empty past,
one query, batch > 1, zero-length dims) against onnx.reference; run-time size checks that fail
the call naming the node."""

from __future__ import annotations

import dataclasses
import subprocess

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule
from tests.onnx_models import single_node_model
from tests.test_attention_numerics import Config, _inputs, attention_model


def symbolic(model: onnx.ModelProto, dims: dict[str, dict[int, str]]) -> onnx.ModelProto:
    """The model with the named inputs'/outputs' axes made symbolic ({name: {axis: symbol}})."""
    for value in list(model.graph.input) + list(model.graph.output):
        for axis, symbol in dims.get(value.name, {}).items():
            value.type.tensor_type.shape.dim[axis].dim_param = symbol
    return model


def attention_symbols(config: Config) -> dict[str, dict[int, str]]:
    """batch, queries, keys, past and total symbolic on every Attention input and output."""
    sequence = 2 if config.rank == 4 else 1
    dims = {"Q": {0: "batch", sequence: "queries"}, "K": {0: "batch", sequence: "keys"},
            "V": {0: "batch", sequence: "keys"}, "Y": {0: "batch", sequence: "queries"},
            "past_key": {0: "batch", 2: "past"}, "past_value": {0: "batch", 2: "past"},
            "present_key": {0: "batch", 2: "total"}, "present_value": {0: "batch", 2: "total"},
            "nonpad_kv_seqlen": {0: "batch"}, "qk_matmul_output": {0: "batch", 2: "queries", 3: "total"}}
    if config.mask:
        shape, _ = config.mask
        roles = ("batch", None, "queries", "mask_keys")[4 - len(shape):]
        dims["attn_mask"] = {axis: role for axis, (role, size) in enumerate(zip(roles, shape)) if role and size != 1}
    return dims


def _mask_for(shape, batch, queries, keys):
    """A mask shape of the same form at other sizes (size-1 dims stay broadcast)."""
    sizes = (batch, None, queries, keys)[4 - len(shape):]
    return tuple(old if old == 1 or new is None else new for old, new in zip(shape, sizes))


# (base config, then shapes as (batch, queries, keys, past, nonpad)); the mask keeps its form.
ATTENTION = {
    "gqa_causal_past": (Config(q_heads=8, kv_heads=2, past=5, attrs={"is_causal": 1}, opset=23),
                        [(1, 3, 5, 5, None), (2, 1, 1, 7, None), (1, 4, 4, 0, None),
                         (1, 1000, 1000, 2000, None)]),  # 24M scores: llvm-cpu's fused-op branch
    "mqa_bool_mask_head_broadcast": (Config(batch=2, q_heads=6, kv_heads=1, mask=((2, 1, 3, 5), "bool")),
                                     [(2, 3, 5, 0, None), (1, 1, 9, 0, None), (3, 6, 6, 0, None),
                                      (1, 1200, 1200, 0, None)]),  # 8.6M scores: the fused-op branch
    "gqa_3d_float_head_mask_past": (Config(batch=2, q_heads=6, kv_heads=3, past=2, rank=3,
                                           mask=((6, 3, 7), "float"), opset=23),
                                    [(2, 3, 5, 2, None), (1, 1, 1, 6, None), (2, 2, 2, 0, None)]),
    "short_float_mask_padded": (Config(kv_len=9, mask=((3, 6), "float")),
                                [(1, 3, 9, 0, None), (2, 2, 7, 0, None)]),
    "decode_nonpad_causal_window": (Config(batch=3, q_heads=8, kv_heads=2, query_len=1, kv_len=16, nonpad=(5, 16, 9),
                                           attrs={"is_causal": 1, "left_window_size": 4}, opset=25),
                                    [(3, 1, 16, 0, (5, 16, 9)), (1, 1, 32, 0, (20,)), (2, 5, 8, 0, (8, 6))]),
    "softcap_gqa_causal_past": (Config(q_heads=6, kv_heads=2, past=3, attrs={"is_causal": 1, "softcap": 1.5}),
                                [(1, 3, 5, 3, None), (2, 1, 1, 0, None)]),
    "qk_mode2_causal_nonpad_unfused": (Config(batch=2, q_heads=4, kv_heads=4, query_len=2, kv_len=6, nonpad=(3, 6),
                                              qk_mode=2, attrs={"is_causal": 1}),
                                       [(2, 2, 6, 0, (3, 6)), (1, 4, 10, 0, (7,))]),
    "fp16_3d_past_causal_reference_rounding": (Config(rank=3, q_heads=6, kv_heads=2, query_len=3, kv_len=4, past=5,
                                                      dtype=np.float16, attrs={"is_causal": 1, "scale": 0.2}, opset=23),
                                               [(1, 3, 4, 5, None), (2, 1, 1, 0, None)]),
}


def _check_each_shape(model: onnx.ModelProto, cases: list[dict], rtol: float, atol: float) -> None:
    module = CompiledModule(compile_model(model).vmfb)
    reference = ReferenceEvaluator(model)
    for inputs in cases:
        got = module.run(inputs)
        expected = reference.run(None, inputs)
        shapes = {name: list(array.shape) for name, array in inputs.items()}
        for (name, value), want in zip(got.items(), expected, strict=True):
            assert value.shape == want.shape, (name, shapes)
            np.testing.assert_allclose(value.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                                       err_msg=f"{name} at {shapes}")


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention_with_symbolic_dims(name):
    config, shapes = ATTENTION[name]
    rng = np.random.default_rng(sorted(ATTENTION).index(name))
    cases = []
    for batch, queries, keys, past, nonpad in shapes:
        mask = (_mask_for(config.mask[0], batch, queries, past + keys + (config.mask[0][-1] - config.kv_len - config.past)),
                config.mask[1]) if config.mask else None
        variant = dataclasses.replace(config, batch=batch, query_len=queries, kv_len=keys, past=past, nonpad=nonpad,
                                      mask=mask)
        case = _inputs(variant, rng)[0]
        if config.past and not past:  # an empty past cache
            for cache, head in (("past_key", config.head), ("past_value", config.value_head or config.head)):
                case[cache] = np.zeros((batch, config.kv_heads, 0, head), config.dtype)
        cases.append(case)
    model = attention_model(config, *_inputs(config, rng))
    low_precision = np.dtype(config.dtype).itemsize == 2
    _check_each_shape(symbolic(model, attention_symbols(config)), cases,
                      *((1e-3, 1e-7) if low_precision else (1e-5, 1e-5)))


def _tensor(name, element, shape):
    return helper.make_tensor_value_info(name, element, shape)


def _model(node: onnx.NodeProto, inputs, outputs, opset: int) -> onnx.ModelProto:
    return helper.make_model(helper.make_graph([node], "dynamic", inputs, outputs),
                             opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter_with_symbolic_dims(mode):
    node = helper.make_node("TensorScatter", ["past", "update", "write_indices"], ["present"], mode=mode, axis=2)
    model = _model(node, [_tensor("past", TensorProto.FLOAT, ["batch", 2, "capacity", 4]),
                          _tensor("update", TensorProto.FLOAT, ["batch", 2, "rows", 4]),
                          _tensor("write_indices", TensorProto.INT64, ["batch"])],
                   [_tensor("present", TensorProto.FLOAT, ["batch", 2, "capacity", 4])], 24)
    rng = np.random.default_rng(0)
    cases = []
    for batch, capacity, rows in ((1, 8, 1), (3, 6, 3), (2, 5, 0)):
        high = capacity if mode == "circular" else capacity - rows + 1
        cases.append({"past": rng.standard_normal((batch, 2, capacity, 4)).astype(np.float32),
                      "update": rng.standard_normal((batch, 2, rows, 4)).astype(np.float32),
                      "write_indices": rng.integers(0, high, batch)})
    _check_each_shape(model, cases, 0, 0)


@pytest.mark.parametrize("positions", [True, False])
def test_rotary_embedding_with_symbolic_dims(positions):
    names = ["x", "cos", "sin"] + (["position_ids"] if positions else [])
    node = helper.make_node("RotaryEmbedding", names, ["y"], interleaved=int(not positions))
    cache = [32, 4] if positions else [1, "seq", 4]  # exporters' caches without position ids broadcast a batch of 1
    inputs = [_tensor("x", TensorProto.FLOAT, ["batch", 2, "seq", 8]), _tensor("cos", TensorProto.FLOAT, cache),
              _tensor("sin", TensorProto.FLOAT, cache)]
    if positions:
        inputs.append(_tensor("position_ids", TensorProto.INT64, ["batch", "seq"]))
    model = _model(node, inputs, [_tensor("y", TensorProto.FLOAT, ["batch", 2, "seq", 8])], 23)
    rng = np.random.default_rng(1)
    cases = []
    for batch, seq in ((1, 1), (2, 5), (3, 0)):
        shape = (32, 4) if positions else (1, seq, 4)
        case = {"x": rng.standard_normal((batch, 2, seq, 8)).astype(np.float32),
                "cos": rng.standard_normal(shape).astype(np.float32), "sin": rng.standard_normal(shape).astype(np.float32)}
        if positions:
            case["position_ids"] = rng.integers(0, 32, (batch, seq))
        cases.append(case)
    _check_each_shape(model, cases, 1e-5, 1e-5)


def test_rms_normalization_with_symbolic_dims():
    node = helper.make_node("RMSNormalization", ["x", "scale"], ["y"], axis=-2)
    model = _model(node, [_tensor("x", TensorProto.FLOAT, ["batch", "seq", 16]),
                          _tensor("scale", TensorProto.FLOAT, ["seq", 16])],
                   [_tensor("y", TensorProto.FLOAT, ["batch", "seq", 16])], 23)
    rng = np.random.default_rng(2)
    cases = [{"x": rng.standard_normal((batch, seq, 16)).astype(np.float32),
              "scale": rng.standard_normal((seq, 16)).astype(np.float32)} for batch, seq in ((1, 1), (2, 5), (2, 0))]
    _check_each_shape(model, cases, 1e-5, 1e-5)


@pytest.mark.parametrize("causal", [1, 0])
def test_fused_quantized_attention_with_symbolic_dims(causal):
    """DequantizeLinear K/V (int8, per-head scales) → Attention → QuantizeLinear, fused (kvattn-fuse-qdq);
    without a mask kvattn's tiles for a dynamic query count once gave wrong numbers here."""
    scales = [helper.make_tensor("kv_scale", TensorProto.FLOAT, [2], [0.05, 0.07]),
              helper.make_tensor("kv_zero", TensorProto.INT8, [2], [1, -2]),
              helper.make_tensor("y_scale", TensorProto.FLOAT, [], [0.02]), helper.make_tensor("y_zero", TensorProto.INT8, [], [0])]
    nodes = [helper.make_node("DequantizeLinear", [f"{n}8", "kv_scale", "kv_zero"], [n], axis=1) for n in ("k", "v")]
    nodes += [helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=causal, name="attention"),
              helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zero"], ["y8"])]
    graph = helper.make_graph(
        nodes, "qdq", [_tensor("q", TensorProto.FLOAT, ["batch", 4, "queries", 8]),
                       _tensor("k8", TensorProto.INT8, ["batch", 2, "keys", 8]),
                       _tensor("v8", TensorProto.INT8, ["batch", 2, "keys", 8])],
        [_tensor("y8", TensorProto.INT8, ["batch", 4, "queries", 8])], scales)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])
    rng = np.random.default_rng(3)
    cases = [{"q": rng.standard_normal((batch, 4, queries, 8)).astype(np.float32),
              "k8": rng.integers(-60, 60, (batch, 2, keys, 8), dtype=np.int8),
              "v8": rng.integers(-60, 60, (batch, 2, keys, 8), dtype=np.int8)}
             for batch, queries, keys in ((1, 3, 3), (2, 1, 6), (1, 9, 9))]
    _check_each_shape(model, cases, 0, 1)  # one quantization step


def test_flex_attention_position_free_mod_with_symbolic_dims():
    """A softcap score_mod (position-free: fused into the attention region) at several shapes."""
    cap = helper.make_tensor("cap", TensorProto.FLOAT, [], [2.0])
    score_mod = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=cap), helper.make_node("Div", ["score", "c"], ["d"]),
         helper.make_node("Tanh", ["d"], ["t"]), helper.make_node("Mul", ["t", "c"], ["out"])],
        "softcap", [_tensor("score", TensorProto.FLOAT, [])], [_tensor("out", TensorProto.FLOAT, [])])
    node = helper.make_node("FlexAttention", ["q", "k", "v"], ["y"], domain="ai.onnx.preview", score_mod=score_mod)
    graph = helper.make_graph([node], "flex", [_tensor("q", TensorProto.FLOAT, ["batch", 4, "queries", 8]),
                                               _tensor("k", TensorProto.FLOAT, ["batch", 2, "keys", 8]),
                                               _tensor("v", TensorProto.FLOAT, ["batch", 2, "keys", 8])],
                              [_tensor("y", TensorProto.FLOAT, ["batch", 4, "queries", 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24), helper.make_opsetid("ai.onnx.preview", 1)])
    rng = np.random.default_rng(4)
    cases = [{"q": rng.standard_normal((b, 4, s, 8)).astype(np.float32), "k": rng.standard_normal((b, 2, t, 8)).astype(np.float32),
              "v": rng.standard_normal((b, 2, t, 8)).astype(np.float32)} for b, s, t in ((1, 3, 5), (2, 1, 9))]
    _check_each_shape(model, cases, 1e-5, 1e-5)


def test_mismatched_run_time_sizes_fail_the_call_naming_the_node(tmp_path):
    """Sizes the model does not tie by name but Attention needs equal (K and V lengths): the
    module checks them itself; `kvattn run` (a subprocess: a crash would fail the test) reports it."""
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="the_attention")
    model = _model(node, [_tensor("q", TensorProto.FLOAT, ["batch", 2, "queries", 8]),
                          _tensor("k", TensorProto.FLOAT, ["batch", 2, "k_len", 8]),
                          _tensor("v", TensorProto.FLOAT, ["batch", 2, "v_len", 8])],
                   [_tensor("y", TensorProto.FLOAT, ["batch", 2, "queries", 8])], 23)
    onnx.save(model, tmp_path / "model.onnx")
    rng = np.random.default_rng(5)
    flags = []
    for name, shape in (("q", (1, 2, 3, 8)), ("k", (1, 2, 5, 8)), ("v", (1, 2, 6, 8))):
        np.save(tmp_path / f"{name}.npy", rng.standard_normal(shape).astype(np.float32))
        flags += ["-i", f"{name}=@{tmp_path / name}.npy"]
    result = subprocess.run(["kvattn", "run", tmp_path / "model.onnx", *flags, "-q"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 1, result.stderr
    assert ("kvattn: error: the module failed at run time: Attention node 'the_attention': K and V differ in "
            "sequence length") in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_bf16_dims_stay_dynamic_in_the_manifest():
    inputs = {"Q": np.zeros((1, 2, 3, 8), ml_dtypes.bfloat16), "K": np.zeros((1, 2, 4, 8), ml_dtypes.bfloat16),
              "V": np.zeros((1, 2, 4, 8), ml_dtypes.bfloat16)}
    model = single_node_model("Attention", inputs, ["Q", "K", "V"], {"Y": ((1, 2, 3, 8), ml_dtypes.bfloat16)}, 23)
    model = symbolic(model, {"Q": {0: "batch", 2: "queries"}, "K": {0: "batch", 2: "keys"}, "V": {0: "batch", 2: "keys"},
                             "Y": {0: "batch", 2: "queries"}})
    manifest = compile_model(model).manifest
    assert [spec.shape for spec in manifest.inputs] == [(None, 2, None, 8)] * 3
    assert manifest.inputs[0].dims == ("batch", None, "queries", None)
