"""`kvattn inspect`: the IR at a stage, or a summary of what kvattn did with each ONNX node."""

from __future__ import annotations

import re
from typing import Mapping

import onnx

from kvattn.lowering import onnx_import, onnx_params
from kvattn.runtime import compiler

_PLUMBING = ("tensor.empty", "linalg.fill")  # not worth listing in "lowered to"
_DISPATCH = re.compile(r"\bflow\.dispatch @")


def count_dispatches(flow_ir: str) -> int:
    return len(_DISPATCH.findall(flow_ir))


def summary(source, target: str = "llvm-cpu", arch: str | None = None, static_kv_cache: int | None = None,
            dims: Mapping[str, int] | None = None, inline_weights: bool | None = None,
            attention_precision: str = "ieee") -> str:
    """The summary `kvattn inspect` prints; its inputs and outputs are those of the model as
    compiled (bound `dims`, static caches), and where its weights go."""
    flow_ir, result = compiler.compile_to_stage(source, "flow", target, arch, static_kv_cache, dims, inline_weights,
                                                attention_precision)
    model = result.named_model
    raised = {node.node: node for node in result.raised}
    others = result.left_for_iree
    precision = "" if attention_precision == "ieee" else f", attention precision {attention_precision}"
    lines = [f"entry @{result.entry}, opset {onnx_import.opset_of(model)}, target {target}{precision}"]
    lines += _describe_io(model)
    externalized = {parameter.initializer for parameter in result.parameters}
    if externalized:
        total = sum(onnx_params.nbytes(tensor) for tensor in model.graph.initializer if tensor.name in externalized)
        lines.append(f"weights: {len(externalized)} parameters, {total / 1e6:.1f} MB, in a parameter archive "
                     f"(scope '{onnx_params.SCOPE}')")
    elif onnx_params.weight_bytes(model):
        lines.append(f"weights: {onnx_params.weight_bytes(model) / 1e6:.1f} MB, inline in the vmfb")
    lines += [f"ONNX rewrite: {decision}" for decision in result.rewrites]
    lines.append("kvattn nodes:" if raised else "kvattn nodes: none")
    width = max((len(name) for name in raised), default=0)
    for node in result.raised:
        lowered = ", ".join(op for op in node.lowered_to if op not in _PLUMBING)
        lines.append(f"  {node.node:<{width}}  {node.onnx_op} → {node.kvattn_op} → {lowered}")
        if node.route:
            lines.append(f"  {'':<{width}}  route: {node.route}")
        if node.cache:
            lines.append(f"  {'':<{width}}  cache: {node.cache}")
    if others:
        listed = ", ".join(f"{op} ×{count}" if count > 1 else op for op, count in sorted(others.items()))
        lines.append(f"other nodes (IREE's ONNX lowering): {listed}")
    lines.append(f"dispatches: {count_dispatches(flow_ir)}")
    return "\n".join(lines)


def _describe_io(model: onnx.ModelProto) -> list[str]:
    initializers = {i.name for i in model.graph.initializer}

    def fmt(value):
        tensor = value.type.tensor_type
        dims = ",".join(d.dim_param or str(d.dim_value) for d in tensor.shape.dim)
        return f"{value.name}: {onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name}[{dims}]"

    return ([f"  input  {fmt(v)}" for v in model.graph.input if v.name not in initializers]
            + [f"  output {fmt(v)}" for v in model.graph.output])
