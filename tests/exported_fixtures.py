"""The exported decoder fixtures (tests/models/fixtures, made by tests/models/export_decoders.py)
and what the tests share about them: the cases stored beside each, and the xdist grouping."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime
import pytest

FIXTURES = sorted((pathlib.Path(__file__).parent / "models" / "fixtures").glob("*.onnx"))
# How close kvattn must come to onnxruntime and torch: relative, and absolute relative to each
# output's largest magnitude (at least 1) — IREE's own lowering of the ops around kvattn's (e.g.
# Gemma3's tanh-GELU) is ~1e-5 relative, and Gemma's q/k norms rescale small tensors.
TOLERANCE = 1e-4
# A model computing in fp16 (onnxruntime's fp16 converter: fp16 weights, f32 inputs and outputs):
# kvattn and onnxruntime round its intermediates differently, by up to about an fp16 ulp (9.8e-4 at 1).
FP16_TOLERANCE = 2e-3


def tolerance(path: pathlib.Path) -> float:
    """How close kvattn must come to the references on this fixture (relative)."""
    return FP16_TOLERANCE if path.stem.endswith("fp16") else TOLERANCE


def onnxruntime_session(path: pathlib.Path) -> onnxruntime.InferenceSession:
    """onnxruntime's CPU session on the fixture, its MatMulNBits at accuracy_level 0: the
    dequantize-then-multiply the op defines (the builder's level 4 lets onnxruntime quantize each
    block of A to int8 first, ~1e-2 off; build_genai.py records that distance)."""
    model = onnx.load(path)
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "MatMulNBits" and attribute.name == "accuracy_level":
                attribute.i = 0
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def absolute_tolerance(reference: np.ndarray, relative: float = TOLERANCE) -> float:
    return relative * max(1.0, float(np.abs(reference).max(initial=0)))


def by_fixture(paths):
    """pytest params, one per fixture, each in the xdist group of its fixture: the tests of one
    fixture run on one worker, one after the other, so the first compile serves the others from
    the compile cache (pyproject: --dist loadgroup) instead of both workers compiling it at once."""
    return [pytest.param(path, id=path.stem, marks=pytest.mark.xdist_group(path.stem)) for path in paths]


def stored_cases(path: pathlib.Path) -> list[tuple[str, dict, list]]:
    """(name, inputs, torch's outputs) for each case stored beside the fixture."""
    data = np.load(path.with_suffix(".npz"))
    cases = []
    for index in range(len({key.split(".")[0] for key in data.files})):
        prefix = f"case{index}."
        inputs = {key.removeprefix(prefix + "in."): data[key] for key in data.files if key.startswith(prefix + "in.")}
        outputs = [data[f"{prefix}out.{i}"] for i in range(sum(k.startswith(prefix + "out.") for k in data.files))]
        cases.append((str(data[prefix + "name"]), inputs, outputs))
    return cases
