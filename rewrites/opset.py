"""A model at the default-domain opset an operator a rewrite writes needs (RMSNormalization and
RotaryEmbedding 23, TensorScatter and Attention's nonpad_kv_seqlen 24).

From opset 18 on, the operators a model can hold compute the same at every later opset (the
versions since add types and attributes), so the version is raised as is; a model below 18 (where
Reduce*, Split and Pad take their axes as attributes) is converted by onnx's version converter
first, before the rewrite adds the new operators. A conversion that fails is a KvattnError.
"""

from __future__ import annotations

import onnx

from kvattn.lowering.diagnostics import KvattnError

SAME_SEMANTICS_FROM = 18


def default_version(model: onnx.ModelProto) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)


def at_least(model: onnx.ModelProto, version: int, why: str) -> onnx.ModelProto:
    """The model at opset `version` or later (a new ModelProto when raised); `why` names what
    needs it, for the error."""
    current = default_version(model)
    if current >= version:
        return model
    if current < SAME_SEMANTICS_FROM:
        try:
            return onnx.version_converter.convert_version(model, version)
        except Exception as exc:  # the converter raises plain RuntimeError/ValueError
            raise KvattnError(f"{why} needs the model at opset {version}; converting from opset {current} failed: "
                              f"{exc}") from None
    raised = onnx.ModelProto()
    raised.CopyFrom(model)
    for entry in raised.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = version
    return raised
