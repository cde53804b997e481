"""The registries stay consistent: op specs, raise and lowering rules, passes, targets."""

from __future__ import annotations

import importlib

from kvattn.lowering import dialect, lower_to_iree, raise_onnx
from kvattn.passes import pipeline, registry
from kvattn.runtime import backend, targets


def test_every_op_spec_has_a_raise_rule_and_a_lowering_rule():
    for spec in dialect.registered_ops():
        assert spec.name.startswith("kvattn.")
        assert raise_onnx.ONNX_OPS[spec.onnx_op] is spec
        assert spec.name in lower_to_iree.RULES
        assert set(spec.optional_operands) <= set(spec.operands)
        assert set(spec.optional_results) <= set(spec.results)


def test_every_registered_pass_matches_its_implementation():
    for name, registered in registry.PASSES.items():
        assert registered.name == name
        module = importlib.import_module(registered.implementation.__name__)
        assert getattr(module, registered.run.__name__) is registered.run
        assert registered.summary, f"{name} has no docstring"
    for stage, names in pipeline.STAGE_PASSES.items():
        assert stage in pipeline.KVATTN_STAGES
        for name in names:
            registry.get(name)


def test_targets_and_backend_devices():
    for name, target in targets.TARGETS.items():
        assert target.name == name and target.flags
    assert backend.supports_device("CPU")
    assert not backend.supports_device("NPU")
