"""Bad and edge inputs: no crash, no traceback, no wrong answer, no modified caller array.

The model cases (tests/bad_input_cases.py) run in subprocesses, a group each, so a crash fails
the test instead of killing pytest and is pinned to its case. Each case must end as it should:
"match" (kvattn equals onnx.reference) where ONNX defines the answer, "error" (a kvattn error
naming the node) where an index is out of range or the reference refuses the inputs. The CLI
cases run `kvattn` itself: exit 1 with `kvattn: error: ...`."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kvattn.runtime import backend
from tests.bad_input_cases import CASES

ROOT = pathlib.Path(__file__).parent.parent
GROUPS = ("scatter-linear", "scatter-circular", "rotary", "mask", "attention", "scatter-zero", "flex", "unknown")
MUST_FAIL = {"attention-zero-keys", "attention-scale-nan", "unknown-domain"}
IN_RANGE = {"scatter-linear": {"zero"}, "scatter-circular": {"min32", "below", "minus1", "zero", "last", "capacity",
                                                               "huge"}, "rotary": {"zero", "last"}}


def expected_outcome(name: str) -> str:
    if name in ("scatter-circular-vulkan-input-huge", "scatter-circular-vulkan-input-min32"):
        return "error"  # SPIR-V has no 64-bit division: circular indices must fit in int32 there
    for group, in_range in IN_RANGE.items():
        if name.startswith(group):
            return "match" if name.rsplit("-", 1)[1] in in_range else "error"
    return "error" if name in MUST_FAIL else "match"


def _on_vulkan(name: str) -> bool:
    return "-vulkan" in name


# Each group's cases, those compiled for Vulkan apart (they need a Vulkan device)
RUNS = [(group, vulkan) for group in GROUPS for vulkan in (False, True)
        if any(name.startswith(group) and _on_vulkan(name) == vulkan for name in CASES)]


def test_every_case_is_in_a_group():
    assert {name for name in CASES if not name.startswith(GROUPS)} == set()


@pytest.mark.parametrize("group, vulkan", RUNS, ids=[group + ("-vulkan" if vulkan else "") for group, vulkan in RUNS])
def test_cases_end_as_onnx_defines(group, vulkan):
    if vulkan and not backend.supports_device("VULKAN"):
        assert not os.environ.get("CI"), "CI must provide a Vulkan device (lavapipe)"
        pytest.skip("no Vulkan device on this machine (apt-get install mesa-vulkan-drivers)")
    names = [name for name in CASES if name.startswith(group) and _on_vulkan(name) == vulkan]
    result = subprocess.run([sys.executable, "-m", "tests.bad_input_cases", *names], capture_output=True, text=True,
                            cwd=ROOT, timeout=900)
    outcomes = {entry["case"]: entry for entry in map(json.loads, result.stdout.splitlines())}
    problems = []
    for name in names:
        if name not in outcomes:
            problems.append(f"{name}: the process died (exit {result.returncode}) before it reported:\n"
                            f"{result.stderr[-2000:]}")
            break
        entry, expected = outcomes[name], expected_outcome(name)
        if entry["outcome"] != expected:
            problems.append(f"{name}: {entry['outcome']} (expected {expected}): {entry['detail']}")
        if entry["outcome"] == "error" and "Traceback" in entry["detail"]:
            problems.append(f"{name}: an error with a traceback: {entry['detail']}")
    assert not problems, "\n".join(problems)


def _kvattn(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["kvattn", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _relu_model(path: pathlib.Path, declared: int = 4) -> pathlib.Path:
    info = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [info("x", TensorProto.FLOAT, [4])],
                              [info("y", TensorProto.FLOAT, [declared])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)]), path)
    return path


def _external_data_model(path: pathlib.Path) -> pathlib.Path:
    """A MatMul whose weight is stored in external data, which is then deleted."""
    info = helper.make_tensor_value_info
    weight = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [info("x", TensorProto.FLOAT, [1, 8])], [info("y", TensorProto.FLOAT, [1, 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)]), path,
              save_as_external_data=True, location=f"{path.stem}.data", size_threshold=0)
    (path.parent / f"{path.stem}.data").unlink()
    return path


def _cli_cases(tmp: pathlib.Path):
    relu = _relu_model(tmp / "relu.onnx")
    np.save(tmp / "x.npy", np.ones(4, np.float32))
    (tmp / "a_directory").mkdir()
    (tmp / "a_file").write_text("")
    unwritable = dict(os.environ, KVATTN_CACHE_DIR=str(tmp / "a_file" / "cache"))
    return {
        "-o into a missing directory": (["compile", relu, "-o", tmp / "missing" / "m.vmfb"], None, "does not exist"),
        "-o onto a directory": (["compile", relu, "-o", tmp / "a_directory"], None, "is a directory"),
        "--output-dir that is a file": (["run", relu, "-i", f"x=@{tmp / 'x.npy'}", "--output-dir", tmp / "a_file"],
                                        None, "is a file"),
        "unwritable KVATTN_CACHE_DIR": (["run", relu, "-i", f"x=@{tmp / 'x.npy'}"], unwritable, "compile cache"),
        "missing external data": (["compile", _external_data_model(tmp / "ext.onnx"), "-o", tmp / "e.vmfb"], None,
                                  "external data"),
        "the same --input twice": (["run", relu, "-i", f"x=@{tmp / 'x.npy'}", "-i", f"x=@{tmp / 'x.npy'}"], None,
                                   "given twice"),
        "demo --steps 0": (["demo", "--steps", "0"], None, "at least 1"),
        "a declared output shape the node does not compute": (
            ["compile", _relu_model(tmp / "bad_shape.onnx", declared=5), "-o", tmp / "b.vmfb"], None,
            "Relu node 'Relu_0': the model declares a type for 'y' that differs from what the node computes"),
    }


@pytest.mark.parametrize("case", ["-o into a missing directory", "-o onto a directory", "--output-dir that is a file",
                                  "unwritable KVATTN_CACHE_DIR", "missing external data", "the same --input twice",
                                  "demo --steps 0", "a declared output shape the node does not compute"])
def test_cli_user_errors_are_clear(case, tmp_path):
    args, env, message = _cli_cases(tmp_path)[case]
    result = _kvattn(*args, env=env)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 1, output
    assert "kvattn: error: " in result.stderr and message in result.stderr, output


def test_a_module_for_another_target_is_a_clear_error(tmp_path):
    """A Vulkan vmfb loaded on the CPU driver from Python (a subprocess: a crash fails the test)."""
    vmfb = tmp_path / "relu.vmfb"
    assert _kvattn("compile", _relu_model(tmp_path / "relu.onnx"), "-o", vmfb, "--target", "vulkan").returncode == 0
    code = ("from kvattn.lowering.diagnostics import KvattnError\n"
            "from kvattn.runtime.module import CompiledModule\n"
            "try:\n"
            f"    CompiledModule({str(vmfb)!r}, driver='local-task')\n"
            "except KvattnError as error:\n"
            "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert "compiled for vulkan and cannot run on the 'local-task' driver" in result.stdout, result.stdout
