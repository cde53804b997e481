"""Every target compiles the demo's decode step; Vulkan runs it on this machine (lavapipe); the
runtime works where IREE's compiler is not installed (the GPU machine)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from kvattn.runtime import backend, demo, targets
from kvattn.runtime.compiler import compile_model
from tests.onnx_models import decode_inputs


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_demo_model_compiles_for_every_target(target):
    vmfb = compile_model(demo.decode_step_model(), target).vmfb
    assert targets.get(target).executable_format.encode() in vmfb


def test_arch_reaches_the_compiler():
    vmfb = compile_model(demo.decode_step_model(), "cuda", arch="sm_86").vmfb
    assert b"sm_86" in vmfb


def test_demo_model_runs_on_vulkan():
    if not backend.supports_device("VULKAN"):
        pytest.skip("no Vulkan device on this machine (apt-get install mesa-vulkan-drivers)")
    model = demo.decode_step_model()
    inputs = decode_inputs(np.random.default_rng(5))
    got = backend.prepare(model, device="VULKAN").run(inputs)
    for g, e in zip(got, ReferenceEvaluator(model).run(None, inputs)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_causal_prefill_runs_on_vulkan():
    """32 causal query rows: the mask's position math vectorizes, which SPIR-V targets without
    Int64 (the default vp_android_baseline_2022) accept only in i32."""
    if not backend.supports_device("VULKAN"):
        pytest.skip("no Vulkan device (install mesa-vulkan-drivers)")
    from benchmarks.models import prefill_model

    model = prefill_model(32)
    rng = np.random.default_rng(0)
    inputs = {v.name: rng.standard_normal([d.dim_value for d in v.type.tensor_type.shape.dim]).astype(np.float32)
              for v in model.graph.input}
    got = backend.prepare(model, device="VULKAN").run(inputs)[0]
    np.testing.assert_allclose(got, ReferenceEvaluator(model).run(None, inputs)[0], rtol=1e-4, atol=1e-4)


def test_runtime_imports_without_the_compiler():
    code = ("import sys; sys.modules['iree.compiler'] = None; "
            "import kvattn.runtime.module, kvattn.runtime.device_buffers, benchmarks.gpu.run_on_gpu")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
