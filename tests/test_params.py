"""Externalized weights: initializers as IREE parameters in an .irpa archive beside the vmfb.

Inline and externalized weights give the same outputs (and onnx.reference's), with the
kvattn paths that read the weights' neighbours at compile time (quantized attention, static KV
caches); a model with external data compiles with its weights externalized; the manifest
records the archive the module expects; a missing or wrong archive is a clear user error.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from kvattn.lowering import onnx_params
from kvattn.runtime import compiler
from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule
from kvattn.runtime.session import DecodeSession

EMBED, Q_HEADS, KV_HEADS, HEAD = 32, 4, 2, 8


def _decoder_layer(quantized: bool = False, seed: int = 0) -> onnx.ModelProto:
    """x → Q/K/V projections (weights of 256–1024 elements: parameters) → [B, H, S, D] (Reshape
    shapes: small constants, inline) → Attention-23 with a concat-style past → output projection.
    `quantized`: int8 weights through DequantizeLinear, and Q/K/V through Quantize/DequantizeLinear
    into the attention (kvattn-fuse-qdq)."""
    rng = np.random.default_rng(seed)
    tensor = helper.make_tensor_value_info
    initializers, nodes = [], []

    def weight(name, shape):
        values = rng.standard_normal(shape).astype(np.float32) * 0.2
        if not quantized:
            initializers.append(numpy_helper.from_array(values, name))
            return name
        initializers.append(numpy_helper.from_array(np.clip(np.round(values / 0.01), -127, 127).astype(np.int8),
                                                    name + "_int8"))
        nodes.append(helper.make_node("DequantizeLinear", [name + "_int8", "weight_scale"], [name]))
        return name

    initializers.append(numpy_helper.from_array(np.array(0.01, np.float32), "weight_scale"))
    initializers.append(numpy_helper.from_array(np.array(0.05, np.float32), "act_scale"))
    initializers.append(numpy_helper.from_array(np.array(0, np.int8), "act_zero"))
    attention_inputs = []
    for name, heads in (("q", Q_HEADS), ("k", KV_HEADS), ("v", KV_HEADS)):
        initializers.append(numpy_helper.from_array(np.array([1, -1, heads, HEAD], np.int64), f"{name}_shape"))
        nodes += [helper.make_node("MatMul", ["x", weight(f"w{name}", (EMBED, heads * HEAD))], [f"{name}_flat"]),
                  helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [f"{name}_bshd"]),
                  helper.make_node("Transpose", [f"{name}_bshd"], [f"{name}_heads"], perm=[0, 2, 1, 3])]
        if quantized:
            nodes += [helper.make_node("QuantizeLinear", [f"{name}_heads", "act_scale", "act_zero"], [f"{name}_int8"]),
                      helper.make_node("DequantizeLinear", [f"{name}_int8", "act_scale", "act_zero"], [f"{name}_dq"])]
        attention_inputs.append(f"{name}_dq" if quantized else f"{name}_heads")
    initializers.append(numpy_helper.from_array(np.array([1, -1, Q_HEADS * HEAD], np.int64), "y_shape"))
    nodes += [helper.make_node("Attention", [*attention_inputs, "", "past_key", "past_value"],
                               ["y_heads", "present_key", "present_value"], name="attention", is_causal=1),
              helper.make_node("Transpose", ["y_heads"], ["y_bshd"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["y_bshd", "y_shape"], ["y_flat"]),
              helper.make_node("MatMul", ["y_flat", weight("wo", (Q_HEADS * HEAD, EMBED))], ["output"])]
    cache = lambda name, length: tensor(name, TensorProto.FLOAT, [1, KV_HEADS, length, HEAD])  # noqa: E731
    graph = helper.make_graph(nodes, "layer", [tensor("x", TensorProto.FLOAT, [1, 1, EMBED]),
                                               cache("past_key", "past"), cache("past_value", "past")],
                              [tensor("output", TensorProto.FLOAT, [1, 1, EMBED]),
                               cache("present_key", "total"), cache("present_value", "total")],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def _inputs(past: int = 5, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((1, 1, EMBED)).astype(np.float32),
            "past_key": rng.standard_normal((1, KV_HEADS, past, HEAD)).astype(np.float32),
            "past_value": rng.standard_normal((1, KV_HEADS, past, HEAD)).astype(np.float32)}


def _parameter_names(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer if onnx_params.elements(t) >= onnx_params.MIN_ELEMENTS}


def _run(model, inputs, **options) -> tuple[dict[str, np.ndarray], CompiledModule]:
    compiled = compile_model(model, **options)
    module = CompiledModule(compiled.vmfb, params=compiled.params)
    return module.run(inputs), module


@pytest.mark.parametrize("quantized", [False, True], ids=["fp32", "int8-qdq"])
def test_externalized_and_inline_weights_agree_with_the_reference(quantized, tmp_path):
    model, inputs = _decoder_layer(quantized), _inputs()
    inline, inline_module = _run(model, inputs, inline_weights=True)
    external, module = _run(model, inputs, inline_weights=False, params_out=tmp_path / "layer.irpa")
    assert inline_module.manifest.parameters is None
    assert set(module.manifest.parameters.keys) == _parameter_names(model)
    for name in module.output_names:
        np.testing.assert_array_equal(external[name], inline[name], err_msg=name)
    reference = dict(zip(module.output_names, ReferenceEvaluator(model).run(None, inputs)))
    for name, want in reference.items():  # quantized: a rounding tie may land one step apart
        np.testing.assert_allclose(external[name], want, rtol=1e-4, atol=0.06 if quantized else 1e-5, err_msg=name)
    if quantized:
        (attention,) = module.manifest.nodes  # Q's dequantization fused (K/V meet the float past: not)
        assert "fused Q/DQ: Q" in attention["route"] and attention["route"] == inline_module.manifest.nodes[0]["route"]


def test_static_kv_cache_with_externalized_weights(tmp_path):
    model = _decoder_layer()
    path = _save_external(_decoder_layer(), tmp_path / "layer.onnx")  # data beside it, not in the working directory
    compiled = compile_model(path, static_kv_cache=8, inline_weights=False, params_out=tmp_path / "layer.irpa")
    assert compiled.manifest.parameters is not None
    session = DecodeSession(CompiledModule(compiled.vmfb, params=compiled.params))
    reference = ReferenceEvaluator(model)
    caches = {name: np.zeros((1, KV_HEADS, 0, HEAD), np.float32) for name in ("past_key", "past_value")}
    for step in range(3):
        x = _inputs(seed=step)["x"]
        got = session.step({"x": x})
        want = reference.run(None, {"x": x, **caches})
        np.testing.assert_allclose(got["output"], want[0], rtol=1e-5, atol=1e-5)
        caches = {"past_key": want[1], "past_value": want[2]}


def test_manifest_records_the_archive(tmp_path):
    model = _decoder_layer()
    compiled = compile_model(model, inline_weights=False, params_out=tmp_path / "layer.irpa")
    expected = compiled.manifest.parameters
    assert expected.scope == onnx_params.SCOPE
    sizes = {t.name: len(t.raw_data) for t in model.graph.initializer}
    assert dict(zip(expected.keys, expected.sizes)) == {name: sizes[name] for name in _parameter_names(model)}
    assert compiled.params.stat().st_size >= expected.total_bytes
    assert CompiledModule(compiled.vmfb, params=compiled.params).manifest == compiled.manifest


def test_auto_threshold():
    small = _decoder_layer()
    assert not onnx_params.externalize(small, None) and onnx_params.externalize(small, False)
    big = onnx.ModelProto()
    big.CopyFrom(small)
    big.graph.initializer.append(numpy_helper.from_array(np.zeros(onnx_params.AUTO_BYTES // 4, np.float32), "big"))
    assert onnx_params.externalize(big, None) and not onnx_params.externalize(big, True)


def _save_external(model: onnx.ModelProto, path: pathlib.Path) -> pathlib.Path:
    """Save with every initializer in external data (onnx.save moves the data out of `model`)."""
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location=path.name + ".data", size_threshold=0)  # the small constants too
    return path


def test_compile_cached_keeps_the_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("KVATTN_CACHE_DIR", str(tmp_path / "cache"))
    path = _save_external(_decoder_layer(), tmp_path / "layer.onnx")
    messages = []
    cached = compiler.compile_cached(path, inline_weights=False)
    assert cached.with_suffix(".irpa").is_file()
    assert compiler.compile_cached(path, inline_weights=False, progress=messages.append) == cached
    assert messages == [f"using cached {cached}"]
    assert compiler.compile_cached(path, inline_weights=True) != cached  # the key knows where the weights go
    inputs = _inputs()
    want = ReferenceEvaluator(_decoder_layer()).run(None, inputs)[0]
    np.testing.assert_allclose(CompiledModule(cached).run(inputs)["output"], want, rtol=1e-5, atol=1e-5)


def _kvattn(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvattn.runtime.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "KVATTN_DEBUG": "0"})


def _assert_user_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("kvattn: error: ") and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_cli_external_data_model_and_archive_errors(tmp_path):
    path = _save_external(_decoder_layer(), tmp_path / "layer.onnx")
    inputs = _inputs()
    flags = []
    for name, array in inputs.items():
        np.save(tmp_path / f"{name}.npy", array)
        flags += ["-i", f"{name}=@{name}.npy"]
    compiled = _kvattn("compile", path.name, "-o", "layer.vmfb", "--external-weights", cwd=tmp_path)
    assert compiled.returncode == 0, compiled.stderr
    assert "layer.irpa" in compiled.stderr and (tmp_path / "layer.irpa").is_file()
    ran = _kvattn("run", "layer.vmfb", *flags, "--output-dir", "out", "-q", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    want = ReferenceEvaluator(_decoder_layer()).run(None, inputs)[0]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "output.npy"), want, rtol=1e-5, atol=1e-5)

    other = compile_model(_decoder_layer(quantized=True), inline_weights=False, params_out=tmp_path / "other.irpa")
    _assert_user_error(_kvattn("run", "layer.vmfb", *flags, "--params", "other.irpa", cwd=tmp_path),
                       "does not match this module")
    assert other.params == tmp_path / "other.irpa"
    (tmp_path / "layer.irpa").rename(tmp_path / "moved.irpa")
    _assert_user_error(_kvattn("run", "layer.vmfb", *flags, cwd=tmp_path), "layer.irpa': no such file")


def test_onnx_backend_with_externalized_weights():
    import kvattn.runtime.backend as backend

    model, inputs = _decoder_layer(), _inputs()
    rep = backend.prepare(model, device="CPU", inline_weights=False)
    assert rep.module.manifest.parameters is not None
    outputs = rep.run(inputs)
    np.testing.assert_allclose(outputs[0], ReferenceEvaluator(model).run(None, inputs)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("inline_weights", [True, False], ids=["inline", "external"])
def test_bound_dims_on_a_model_with_external_data(inline_weights, tmp_path):
    path = _save_external(_decoder_layer(), tmp_path / "layer.onnx")
    inputs = _inputs(past=5)
    outputs, module = _run(path, inputs, dims={"past": 5}, inline_weights=inline_weights,
                           params_out=tmp_path / "layer.irpa")
    assert (module.manifest.parameters is None) == inline_weights
    want = ReferenceEvaluator(_decoder_layer()).run(None, inputs)[0]
    np.testing.assert_allclose(outputs["output"], want, rtol=1e-5, atol=1e-5)
