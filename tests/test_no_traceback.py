"""No `kvattn` command ever prints a Python traceback: every subcommand on every exported fixture,
and a list of things users get wrong, each run as its own subprocess the way a user runs it.

Every fixture compiles and runs, every fourth one is inspected (exit 0; numerics are tests/test_exported_models.py's
job); a decode session over an exported decoder may be refused (its concat caches are no session
caches: exit 1 with a message); a bad input must be a user error (exit code 1). Compiled vmfbs are
shared through one compile cache (`kvattn run model.onnx` caches)."""

from __future__ import annotations

import os
import pathlib
import subprocess

import numpy as np
import onnx
import pytest

from kvattn.runtime import demo
from tests.exported_fixtures import FIXTURES, by_fixture
from tests.onnx_models import symbolic_model

# The whole matrix on a decoder with a concat-style cache and one with a static cache (a session
# keeps it); run and inspect on all of them. (`run` compiles as `compile` does, through the compile
# cache; `kvattn compile -o` itself is tests/test_cli.py's.)
MATRIX = ([p for p in FIXTURES if p.stem.endswith("_decode")][:1]
          + [p for p in FIXTURES if p.stem.endswith("_static")][:1]) or FIXTURES[:2]


@pytest.fixture(scope="module")
def env():
    """The user's environment: the same compile cache as the other tests (vmfbs are shared)."""
    return dict(os.environ)


def _kvattn(args, env, allowed=(0, 1, 2)):
    result = subprocess.run(["kvattn", *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode in allowed, output
    if result.returncode:
        assert "kvattn: " in result.stderr, output
    return result


def _npy_flags(arrays: dict[str, np.ndarray], directory: pathlib.Path) -> list[str]:
    directory.mkdir(exist_ok=True)
    flags = []
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array)
        flags += ["-i", f"{name}=@{directory / name}.npy"]
    return flags


def _fixture_flags(path: pathlib.Path, tmp_path: pathlib.Path) -> list[str]:
    """--input flags for the first recorded case of the fixture (`case0.in.NAME` in its .npz;
    none without one: a missing-input error, fine here)."""
    if not path.is_file():
        pytest.skip(f"{path.name} is gone since collection (being regenerated?)")
    npz = path.with_suffix(".npz")
    data = np.load(npz) if npz.is_file() else {}
    arrays = {key.removeprefix("case0.in."): data[key] for key in data if key.startswith("case0.in.")}
    return _npy_flags(arrays, tmp_path / "in")


@pytest.mark.parametrize("path", by_fixture(FIXTURES))
def test_run_and_inspect_every_fixture(path, tmp_path, env):
    """`run` on every fixture (from the compile cache); `inspect` (an uncached compile to the
    flow stage) on every fourth one (the fixtures sort by architecture, then variant) and the
    matrix's."""
    _kvattn(["run", path, *_fixture_flags(path, tmp_path), "-q"], env, allowed=(0,))
    if FIXTURES.index(path) % 4 == 0 or path in MATRIX:
        _kvattn(["inspect", path], env, allowed=(0,))


@pytest.mark.parametrize("command", ["inspect-raised", "steps"])
@pytest.mark.parametrize("path", by_fixture(MATRIX))
def test_every_command_on_fixtures(path, command, tmp_path, env):
    flags = _fixture_flags(path, tmp_path)
    args = {"inspect-raised": ["inspect", path, "--stage", "raised"],
            "steps": ["run", path, "--steps", "2", *flags, "-q"]}[command]
    _kvattn(args, env, allowed=(0, 1) if command == "steps" else (0,))
    if command == "steps":  # concat-style caches become session caches with --static-kv-cache
        _kvattn(args + ["--static-kv-cache", "16"], env, allowed=(0, 1))


def test_steps_on_a_model_with_caches(tmp_path, env):
    path = tmp_path / "decode.onnx"
    onnx.save(demo.decode_step_model(), path)
    _kvattn(["run", path, "--steps", "2", "-q"], env)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Files for the bad-input cases: a good model with symbolic dims, broken models, .npy files."""
    root = tmp_path_factory.mktemp("workspace")
    model = root / "model.onnx"
    onnx.save(symbolic_model(), model)
    (root / "truncated.onnx").write_bytes(model.read_bytes()[:100])
    (root / "notes.onnx").write_text("this is not a model\n")
    onnx.save(symbolic_model(), root / "external.onnx", save_as_external_data=True, location="external.data",
              size_threshold=0)
    (root / "external.data").unlink()
    (root / "a_file").write_text("")
    (root / "empty.npy").write_bytes(b"")
    (root / "garbage.vmfb").write_bytes(b"not a flatbuffer")
    rng = np.random.default_rng(0)
    x, m = rng.standard_normal((2, 3, 8)).astype(np.float32), rng.standard_normal((2, 3, 4)).astype(np.float32)
    arrays = {"x": x, "m": m, "x_rank2": x[0], "x_f64": x.astype(np.float64), "m_batch3": np.zeros((3, 3, 4), np.float32)}
    _npy_flags(arrays, root)
    return root


def _input(root, name, file=None):
    return ["-i", f"{name}=@{root / (file or name)}.npy"]


BAD = {  # case: (arguments given the workspace, extra environment, fragment of the message)
    "missing model": (lambda r: ["compile", r / "nope.onnx", "-o", r / "x.vmfb"], {}, "no such file"),
    "truncated model": (lambda r: ["compile", r / "truncated.onnx", "-o", r / "x.vmfb"], {}, "truncated.onnx"),
    "not onnx": (lambda r: ["inspect", r / "notes.onnx"], {}, "notes.onnx"),
    "missing external data": (lambda r: ["inspect", r / "external.onnx"], {}, "external.data"),
    "output in missing directory": (lambda r: ["compile", r / "model.onnx", "-o", r / "missing" / "x.vmfb"], {},
                                    "does not exist"),
    "output is a directory": (lambda r: ["compile", r / "model.onnx", "-o", r], {}, "is a directory"),
    "dump-ir is a file": (lambda r: ["compile", r / "model.onnx", "-o", r / "x.vmfb", "--dump-ir", r / "a_file"], {},
                          "--dump-ir"),
    "output-dir is a file": (lambda r: ["run", r / "model.onnx", *_input(r, "x"), *_input(r, "m"),
                                        "--output-dir", r / "a_file"], {}, "is a file"),
    "unwritable cache": (lambda r: ["run", r / "model.onnx", *_input(r, "x"), *_input(r, "m")],
                         {"KVATTN_CACHE_DIR": "{root}/a_file/cache"}, "KVATTN_CACHE_DIR"),
    "unknown dim": (lambda r: ["inspect", r / "model.onnx", "--dim", "batchsize=2"], {},
                    "its symbolic dims: batch, seq"),
    "bad dim syntax": (lambda r: ["compile", r / "model.onnx", "-o", r / "x.vmfb", "--dim", "batch:2"], {},
                       "NAME=VALUE"),
    "wrong input shape": (lambda r: ["run", r / "model.onnx", *_input(r, "x", "x_rank2"), *_input(r, "m")], {},
                          "input 'x' has shape [3, 8], expected [batch, seq, 8]"),
    "wrong input dtype": (lambda r: ["run", r / "model.onnx", *_input(r, "x", "x_f64"), *_input(r, "m")], {},
                          "input 'x' has dtype float64, expected float32"),
    "missing input": (lambda r: ["run", r / "model.onnx", *_input(r, "x")], {}, "missing input(s) m"),
    "shared dim mismatch": (lambda r: ["run", r / "model.onnx", *_input(r, "x"), *_input(r, "m", "m_batch3")], {},
                            "input 'm' has batch=3"),
    "unreadable npy": (lambda r: ["run", r / "model.onnx", *_input(r, "x", "empty"), *_input(r, "m")], {},
                       "cannot read"),
    "not a vmfb": (lambda r: ["run", r / "garbage.vmfb"], {}, "not a loadable IREE vmfb"),
    "steps without caches": (lambda r: ["run", r / "model.onnx", "--steps", "2", *_input(r, "x"), *_input(r, "m")],
                             {}, "no KV caches"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_user_error(case, workspace, env):
    arguments, extra_env, fragment = BAD[case]
    extra_env = {key: value.format(root=workspace) for key, value in extra_env.items()}
    result = _kvattn(arguments(workspace), {**env, **extra_env}, allowed=(1,))
    assert "kvattn: error: " in result.stderr and fragment in result.stderr, result.stderr
