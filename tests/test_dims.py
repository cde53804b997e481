"""Symbolic dims: models compile with them or with `--dim NAME=VALUE` bindings (passes/bind_dims.py),
match onnxruntime at every size they accept, and inputs that share a symbol must agree on it
(in a decode session, with its caches too)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx.reference import ReferenceEvaluator

from kvattn.lowering.diagnostics import KvattnError
from kvattn.passes import bind_dims
from kvattn.runtime import backend, cli, compiler, demo
from kvattn.runtime.module import CompiledModule
from kvattn.runtime.session import DecodeSession
from tests.onnx_models import SYMBOLIC_WEIGHT, decode_inputs, symbolic_model


def _inputs(batch: int, seq: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, seq, 8)).astype(np.float32),
            "m": rng.standard_normal((batch, seq, 4)).astype(np.float32)}


def _assert_matches_onnxruntime(module: CompiledModule, inputs: dict[str, np.ndarray]) -> None:
    session = onnxruntime.InferenceSession(symbolic_model().SerializeToString(), providers=["CPUExecutionProvider"])
    expected = dict(zip(["z", "flat"], session.run(None, inputs)))
    got = module.run(inputs)
    assert list(got) == ["z", "flat"]
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def dynamic_module():
    return CompiledModule(compiler.compile_model(symbolic_model()).vmfb)


@pytest.mark.parametrize("batch, seq", [(1, 3), (2, 5), (4, 1)])
def test_symbolic_dims_run_at_any_size(dynamic_module, batch, seq):
    _assert_matches_onnxruntime(dynamic_module, _inputs(batch, seq))


def test_manifest_records_the_symbols(dynamic_module):
    x, m = dynamic_module.manifest.inputs
    assert (x.shape, x.dims) == ((None, None, 8), ("batch", "seq", None))
    assert x.describe() == "x: float32[batch,seq,8]" and m.describe() == "m: float32[batch,seq,4]"


def test_inputs_sharing_a_symbol_must_agree(dynamic_module):
    inputs = _inputs(2, 3)
    inputs["m"] = np.zeros((3, 3, 4), np.float32)
    with pytest.raises(KvattnError, match=r"input 'm' has batch=3 \(axis 0\) but input 'x' has batch=2 \(axis 0\)"):
        dynamic_module.run(inputs)


def test_bound_dim_is_static_and_checked():
    model = symbolic_model()
    before = model.SerializeToString()
    module = CompiledModule(compiler.compile_model(model, dims={"batch": 2}).vmfb)
    assert model.SerializeToString() == before  # the caller's model is untouched
    x = module.manifest.inputs[0]
    assert (x.shape, x.dims) == ((2, None, 8), (None, "seq", None))
    for seq in (1, 6):
        _assert_matches_onnxruntime(module, _inputs(2, seq))
    with pytest.raises(KvattnError, match=r"input 'x' has shape \[3, 4, 8\], expected \[2, seq, 8\]"):
        module.run(_inputs(3, 4))


def test_binding_every_dim_folds_the_shape_chain():
    bound = bind_dims.bind(symbolic_model(), {"batch": 2, "seq": 3})
    assert "Shape" not in {node.op_type for node in bound.graph.node}
    assert [d.dim_value for d in bound.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 8]
    text, _ = compiler.compile_to_stage(symbolic_model(), "imported", dims={"batch": 2, "seq": 3})
    assert "onnx.Shape" not in text and "!torch.vtensor<[2,3,8],f32>" in text
    module = CompiledModule(compiler.compile_model(symbolic_model(), dims={"batch": 2, "seq": 3}).vmfb)
    assert all(None not in spec.shape for spec in module.manifest.inputs + module.manifest.outputs)
    _assert_matches_onnxruntime(module, _inputs(2, 3))


def test_backend_prepare_takes_dims():
    rep = backend.prepare(symbolic_model(), "CPU", dims={"seq": 5})
    assert rep.module.manifest.inputs[1].shape == (None, 5, 4)
    inputs = _inputs(3, 5)
    z, _ = rep.run([inputs["x"], inputs["m"]])
    np.testing.assert_allclose(z, inputs["x"] @ SYMBOLIC_WEIGHT + inputs["m"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims, message", [
    ({"batchsize": 2}, r"--dim batchsize: the model has no symbolic dim 'batchsize'; its symbolic dims: batch, seq$"),
    ({"batch": -1}, r"--dim batch: the value must be a non-negative integer, got -1"),
    ({"batch": 2.5}, r"--dim batch: the value must be a non-negative integer, got 2.5"),
])
def test_bad_bindings_are_clear_errors(dims, message):
    with pytest.raises(KvattnError, match=message):
        compiler.compile_model(symbolic_model(), dims=dims)


def test_dims_are_part_of_the_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("KVATTN_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "symbolic.onnx"
    onnx.save(symbolic_model(), path)
    for dims in ({"batch": 1}, {"batch": 2}, {"batch": 1}):
        CompiledModule(compiler.compile_cached(path, dims=dims))
    assert len(list((tmp_path / "cache").glob("*.vmfb"))) == 2


def _kvattn(*args, env=None):
    return subprocess.run(["kvattn", *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


def test_cli_dim_on_compile_run_and_inspect(tmp_path):
    path = tmp_path / "symbolic.onnx"
    onnx.save(symbolic_model(), path)
    inputs = _inputs(2, 3)
    flags = []
    for name, array in inputs.items():
        np.save(tmp_path / f"{name}.npy", array)
        flags += ["-i", f"{name}=@{tmp_path / name}.npy"]
    env = dict(os.environ, KVATTN_CACHE_DIR=str(tmp_path / "cache"))

    compiled = _kvattn("compile", path, "-o", tmp_path / "bound.vmfb", "--dim", "batch=2", "--dim", "seq=3", env=env)
    assert compiled.returncode == 0, compiled.stderr
    assert "binding batch=2, seq=3" in compiled.stderr
    assert CompiledModule.load(tmp_path / "bound.vmfb").manifest.inputs[0].shape == (2, 3, 8)

    ran = _kvattn("run", path, "--dim", "batch=2", *flags, "--output-dir", tmp_path / "out", env=env)
    assert ran.returncode == 0, ran.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out" / "z.npy"), inputs["x"] @ SYMBOLIC_WEIGHT + inputs["m"], rtol=1e-5, atol=1e-5)

    inspected = _kvattn("inspect", path, "--dim", "seq=3", env=env)
    assert inspected.returncode == 0, inspected.stderr
    assert "input  x: float32[batch,3,8]" in inspected.stdout and "input  m: float32[batch,3,4]" in inspected.stdout

    unknown = _kvattn("inspect", path, "--dim", "sequence=3", env=env)
    assert unknown.returncode == 1 and "its symbolic dims: batch, seq\n" in unknown.stderr
    bad = _kvattn("compile", path, "-o", tmp_path / "x.vmfb", "--dim", "seq=three", env=env)
    assert bad.returncode == 1 and "must look like NAME=VALUE" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("bad", ["seq", "seq=", "=3", "seq=-1", "seq=three"])
def test_malformed_dim_flags_are_user_errors(bad, tmp_path, capsys):
    path = tmp_path / "symbolic.onnx"
    onnx.save(symbolic_model(), path)
    assert cli.main(["compile", str(path), "-o", str(tmp_path / "x.vmfb"), "--dim", bad]) == 1
    error = capsys.readouterr().err
    assert error.startswith("kvattn: error: ") and "must look like NAME=VALUE" in error, error
    assert not (tmp_path / "x.vmfb").exists()


def test_session_checks_step_inputs_against_its_caches():
    model = demo.decode_step_model()
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    module = CompiledModule(compiler.compile_model(model).vmfb)
    with pytest.raises(KvattnError, match=r"cannot make zero caches of unknown size \(past_key: float32\[batch,2,32,16\]"):
        DecodeSession(module)
    inputs = decode_inputs(np.random.default_rng(0))
    expected = ReferenceEvaluator(demo.decode_step_model()).run(None, inputs)[0]
    session = DecodeSession(module, {name: inputs.pop(name) for name in ("past_key", "past_value")})
    np.testing.assert_allclose(session.step(inputs)["output"], expected, rtol=1e-5, atol=1e-5)
    three = {name: np.concatenate([array, array[:1]]) for name, array in inputs.items()}
    with pytest.raises(KvattnError, match=r"input 'query' has batch=3 \(axis 0\) but input 'past_key' has batch=2"):
        session.step(three)
