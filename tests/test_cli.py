"""The `kvattn` command line, end to end, including what users get wrong."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from iree.compiler.tools import CompilerToolError
from onnx.reference import ReferenceEvaluator

from kvattn.lowering.diagnostics import InternalError, KvattnError
from kvattn.runtime import cli, compiler, demo
from tests.onnx_models import single_node_model


@pytest.fixture(scope="module")
def decode_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "decode.onnx"
    onnx.save(demo.decode_step_model(), path)
    return path


@pytest.fixture(scope="module")
def decode_inputs(tmp_path_factory):
    rng = np.random.default_rng(0)
    directory = tmp_path_factory.mktemp("inputs")
    arrays = {}
    for value in demo.decode_step_model().graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if value.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            arrays[value.name] = np.array([2, 5], dtype=np.int64) + (value.name == "nonpad_kv_seqlen")
        else:
            arrays[value.name] = rng.standard_normal(shape).astype(np.float32)
        np.save(directory / f"{value.name}.npy", arrays[value.name])
    flags = [arg for name in arrays for arg in ("--input", f"{name}=@{directory / name}.npy")]
    return arrays, flags


def _kvattn(*args, env=None):
    """Run the installed console script the way a user does."""
    return subprocess.run(["kvattn", *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


def test_help_lists_every_command():
    result = _kvattn("--help")
    assert result.returncode == 0
    for command in ("compile", "run", "generate", "inspect", "demo"):
        assert command in result.stdout


def test_compile_then_run_matches_reference(tmp_path, decode_onnx, decode_inputs, capsys):
    arrays, flags = decode_inputs
    vmfb = tmp_path / "decode.vmfb"
    assert cli.main(["compile", str(decode_onnx), "-o", str(vmfb), "--dump-ir", str(tmp_path / "ir")]) == 0
    assert vmfb.stat().st_size > 0
    dumped = sorted(p.name for p in (tmp_path / "ir").glob("*.mlir"))
    assert dumped == ["00-imported.mlir", "01-raised.mlir", "02-lowered.mlir", "03-input.mlir"]
    assert '"kvattn.attention"' in (tmp_path / "ir" / "01-raised.mlir").read_text()
    lowered = (tmp_path / "ir" / "02-lowered.mlir").read_text()
    assert "iree_linalg_ext.scatter" in lowered and "math.exp" in lowered  # decode: the scores materialized
    assert any((tmp_path / "ir" / "iree").iterdir())

    assert cli.main(["run", str(vmfb), *flags, "--output-dir", str(tmp_path / "out"), "-q"]) == 0
    expected = ReferenceEvaluator(demo.decode_step_model()).run(None, arrays)
    for name, want in zip(["output", "present_key", "present_value"], expected):
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"{name}.npy"), want, rtol=1e-5, atol=1e-5)


def test_run_onnx_compiles_once_then_uses_the_cache(tmp_path, decode_onnx, decode_inputs):
    _, flags = decode_inputs
    env = dict(os.environ, KVATTN_CACHE_DIR=str(tmp_path / "cache"))
    first = _kvattn("run", decode_onnx, *flags, env=env)
    assert first.returncode == 0, first.stderr
    assert "output: float32[2, 8, 1, 16]" in first.stdout
    assert len(list((tmp_path / "cache").glob("*.vmfb"))) == 1
    second = _kvattn("run", decode_onnx, *flags, env=env)
    assert second.returncode == 0 and "using cached" in second.stderr
    assert second.stdout == first.stdout


def test_inspect_summary_and_stages(decode_onnx, capsys):
    assert cli.main(["inspect", str(decode_onnx)]) == 0
    summary = capsys.readouterr().out
    assert "decode_attention    Attention → kvattn.attention → " in summary
    assert "iree_linalg_ext.scatter" in summary and "route: reads only the first max(nonpad_kv_seqlen) keys; " \
        "unfused: small scores, materialized in f32" in summary
    assert "dispatches: " in summary
    assert cli.main(["inspect", str(decode_onnx), "--stage", "raised"]) == 0
    assert '"kvattn.tensor_scatter"' in capsys.readouterr().out
    assert cli.main(["inspect", str(decode_onnx), "--stage", "flow"]) == 0
    assert "flow.dispatch" in capsys.readouterr().out


def test_attention_precision_flag(tmp_path, decode_onnx, capsys):
    """inspect names the precision per node; a vmfb is already compiled; vulkan takes only ieee."""
    assert cli.main(["inspect", str(decode_onnx), "--target", "cuda", "--attention-precision", "bf16"]) == 0
    summary = capsys.readouterr().out
    assert "target cuda, attention precision bf16" in summary
    assert "Q·Kᵀ and P·V on bf16 inputs (attention precision), softmax and sums in f32" in summary
    vmfb = tmp_path / "decode.vmfb"
    assert cli.main(["compile", str(decode_onnx), "-o", str(vmfb), "-q"]) == 0
    assert cli.main(["run", str(vmfb), "--attention-precision", "fp16"]) == 1
    assert "--attention-precision and --inline-weights/--external-weights apply when compiling" in capsys.readouterr().err
    assert cli.main(["compile", str(decode_onnx), "-o", str(vmfb), "--target", "vulkan",
                     "--attention-precision", "fp16"]) == 1
    assert ("kvattn: error: attention precision fp16: the vulkan target computes attention in f32"
            in capsys.readouterr().err)


def test_demo_passes():
    result = _kvattn("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS: 8 decode steps match onnx.reference" in result.stdout
    assert result.stdout.count("step ") >= 8


def _assert_user_error(result, *fragments):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "kvattn: error: " in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_truncated_model_is_a_clear_error(tmp_path, decode_onnx):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(decode_onnx.read_bytes()[:200])
    _assert_user_error(_kvattn("compile", truncated, "-o", tmp_path / "x.vmfb"), "truncated.onnx")
    assert not (tmp_path / "x.vmfb").exists()


def test_non_onnx_file_is_a_clear_error(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    _assert_user_error(_kvattn("inspect", text), "notes.onnx")


def test_missing_file_is_a_clear_error(tmp_path):
    _assert_user_error(_kvattn("compile", tmp_path / "nope.onnx", "-o", tmp_path / "x.vmfb"), "no such file")


def test_invalid_attribute_names_node_and_attribute(tmp_path):
    q = np.zeros((1, 2, 4, 8), np.float32)
    model = single_node_model("Attention", {"Q": q, "K": q, "V": q}, ["Q", "K", "V"],
                              {"Y": ((1, 2, 4, 8), np.float32)}, 23, node_name="odd_attention", is_causal=2)
    path = tmp_path / "odd.onnx"
    onnx.save(model, path)
    _assert_user_error(_kvattn("compile", path, "-o", tmp_path / "x.vmfb"),
                       "Attention node 'odd_attention'", "attribute is_causal=2 must be 0 or 1")


def test_dim_binds_an_attention_input(tmp_path):
    q = onnx.helper.make_tensor_value_info("Q", onnx.TensorProto.FLOAT, [1, 2, "sequence", 8])
    k = onnx.helper.make_tensor_value_info("K", onnx.TensorProto.FLOAT, [1, 2, 4, 8])
    y = onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [1, 2, "sequence", 8])
    node = onnx.helper.make_node("Attention", ["Q", "K", "K"], ["Y"], name="prompt_attention")
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "dynamic", [q, k], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 23)])
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, path)
    bound = _kvattn("inspect", path, "--dim", "sequence=3")
    assert bound.returncode == 0, bound.stderr
    assert "input  Q: float32[1,2,3,8]" in bound.stdout and "output Y: float32[1,2,3,8]" in bound.stdout
    assert "prompt_attention  Attention → kvattn.attention" in bound.stdout


def test_wrong_input_name_lists_expected_inputs(tmp_path, decode_onnx, decode_inputs):
    _, flags = decode_inputs
    flags = [f.replace("query=", "querry=") for f in flags]
    env = dict(os.environ, KVATTN_CACHE_DIR=str(tmp_path / "cache"))
    _assert_user_error(_kvattn("run", decode_onnx, *flags, env=env),
                       "unknown input(s) querry", "missing input(s) query", "query: float32[2,8,1,16]")


def test_malformed_input_flag(tmp_path, decode_onnx):
    _assert_user_error(_kvattn("run", decode_onnx, "--input", "query=file.npy"), "NAME=@FILE.npy")


def test_module_entry_point_matches_console_script():
    result = subprocess.run([sys.executable, "-m", "kvattn.runtime.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "inspect" in result.stdout


@pytest.fixture
def tiny_onnx(tmp_path):
    q = np.zeros((1, 1, 2, 4), np.float32)
    path = tmp_path / "tiny.onnx"
    onnx.save(single_node_model("Add", {"A": q, "B": q}, ["A", "B"], {"C": ((1, 1, 2, 4), np.float32)}, 17), path)
    return path


def _boom(*args, **kwargs):
    raise RuntimeError("boom\nsecond line")


@pytest.mark.parametrize("debug_flags, debug_env", [([], None), (["--debug"], None), ([], "1")])
def test_unexpected_exception_is_an_internal_error(tmp_path, tiny_onnx, capsys, monkeypatch, debug_flags, debug_env):
    monkeypatch.setattr(compiler, "compile_model", _boom)
    if debug_env:
        monkeypatch.setenv("KVATTN_DEBUG", debug_env)
    else:
        monkeypatch.delenv("KVATTN_DEBUG", raising=False)
    assert cli.main([*debug_flags, "compile", str(tiny_onnx), "-o", str(tmp_path / "x.vmfb")]) == 2
    err = capsys.readouterr().err
    assert "kvattn: internal error: RuntimeError: boom\n" in err and "second line" not in err.split("boom")[-1]
    debug = bool(debug_flags or debug_env)
    assert ("Traceback" in err) == debug
    assert ("rerun with --debug for the traceback" in err) != debug


def test_debug_flag_after_the_subcommand(tmp_path, tiny_onnx, capsys, monkeypatch):
    monkeypatch.setattr(compiler, "compile_model", _boom)
    monkeypatch.delenv("KVATTN_DEBUG", raising=False)
    assert cli.main(["compile", str(tiny_onnx), "-o", str(tmp_path / "x.vmfb"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_internal_error_names_the_node(tmp_path, tiny_onnx, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise InternalError("ValueError: bad operand\ndetails", node="attn_0", op_type="Attention")

    monkeypatch.setattr(compiler, "compile_model", fail)
    assert cli.main(["compile", str(tiny_onnx), "-o", str(tmp_path / "x.vmfb")]) == 2
    err = capsys.readouterr().err
    assert "kvattn: internal error while lowering node 'attn_0' (Attention): ValueError: bad operand\n" in err
    assert "details" not in err and "Traceback" not in err


@pytest.mark.parametrize("code, stderr, error, message", [
    (-11, b"", InternalError, "internal error: iree-compile crashed (signal 11): no diagnostics"),
    (134, b"LLVM ERROR: oops\nStack dump:\n0. Program arguments: iree-compile\n", InternalError,
     "internal error: iree-compile crashed (exit code 134): LLVM ERROR: oops"),
    (1, b"<stdin>:3:5: error: 'tensor.empty' op bad\n", KvattnError,
     "iree-compile failed:\n<stdin>:3:5: error: 'tensor.empty' op bad"),
])
def test_iree_compile_crash_is_internal_diagnostics_are_not(monkeypatch, code, stderr, error, message):
    def compile_str(*args, **kwargs):
        raise CompilerToolError(subprocess.CompletedProcess(["iree-compile", "-"], code, b"", stderr))

    monkeypatch.setattr(compiler.iree_tools, "compile_str", compile_str)
    with pytest.raises(error) as raised:
        compiler.iree_compile("module {}", [])
    assert str(raised.value) == message


def test_output_problems_are_found_before_compiling(tmp_path, tiny_onnx, capsys, monkeypatch):
    monkeypatch.setattr(compiler, "compile_model", _boom)
    assert cli.main(["compile", str(tiny_onnx), "-o", str(tmp_path / "missing" / "x.vmfb")]) == 1
    assert "the directory '" in capsys.readouterr().err
    assert cli.main(["compile", str(tiny_onnx), "-o", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err
