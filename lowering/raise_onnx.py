"""Raise `torch.operator "onnx.X"` ops that kvattn owns into kvattn ops on builtin tensors.

    %r = torch.operator "onnx.Attention"(%q, %k, %v, %none, ...) {torch.onnx.scale = ...}
  ⇒
    %q' = torch_c.to_builtin_tensor %q            (one per present operand)
    %y  = "kvattn.attention"(%q', %k', %v') {scale = ..., onnx_node = "...", ...}
    %r  = torch_c.from_builtin_tensor %y          (one per present result)

ONNX inputs/outputs are matched to the op spec's operands/results by position; `!torch.none`
operands and results are absent optionals. Every other torch.operator of the default domain or of
com.microsoft (IREE's ONNX lowering implements some of onnxruntime's contrib ops) is left for
IREE; an operator of any other domain is refused naming the node (IREE's importer drops the
domain, so IREE would compile com.example.Relu as ONNX's Relu).
"""

from __future__ import annotations

import re

from iree.compiler import ir

from kvattn.lowering import dialect, tensor_types
from kvattn.lowering.diagnostics import NodeError
from kvattn.lowering.onnx_import import DOMAIN_ATTR, REGION_NAMES_ATTR

ONNX_OPS = {spec.onnx_op: spec for spec in dialect.registered_ops()}
IREE_DOMAINS = ("", "ai.onnx", "com.microsoft")
_TORCH_ATTR_PREFIX = "torch.onnx."
_NAME_LOC = re.compile(r'loc\("([^"]*)"')


def raise_onnx_ops(module: ir.Module) -> list[dialect.KvOp]:
    """Raise every kvattn-owned ONNX op in the module; returns the new kvattn ops."""
    raised = []
    for func in module.body.operations:
        opset = _function_opset(func)
        candidates = []
        func.operation.walk(lambda op: candidates.append(op.operation) or ir.WalkResult.ADVANCE)
        for op in candidates:
            if op.name != "torch.operator":
                continue
            spec, domain = ONNX_OPS.get(_onnx_op_name(op)), _domain(op)
            if spec is not None and domain == spec.onnx_domain:
                raised.append(_raise_one(op, spec, opset))
            elif domain not in IREE_DOMAINS:
                raise NodeError(f"{domain}.{_onnx_op_name(op)}", node_name(op),
                                f"is in the operator domain '{domain}', which kvattn does not implement "
                                f"(kvattn knows the default domain, com.microsoft and {_owned_ops()})")
    return raised


def _owned_ops() -> str:
    return ", ".join(f"{spec.onnx_domain}.{spec.onnx_op}" for spec in ONNX_OPS.values() if spec.onnx_domain)


def _onnx_op_name(op: ir.Operation) -> str:
    name = ir.StringAttr(op.attributes["name"]).value
    return name.removeprefix("onnx.")


def _domain(op: ir.Operation) -> str:
    return ir.StringAttr(op.attributes[DOMAIN_ATTR]).value if DOMAIN_ATTR in op.attributes else ""


def _function_opset(func) -> int:
    attrs = func.operation.attributes
    key = "torch.onnx_meta.opset_version"
    return ir.IntegerAttr(attrs[key]).value if key in attrs else 0


def node_name(op: ir.Operation) -> str:
    match = _NAME_LOC.search(str(op.location))
    return match.group(1) if match and match.group(1) else "<unnamed>"


def _raise_one(op: ir.Operation, spec: dialect.OpSpec, opset: int) -> dialect.KvOp:
    node = node_name(op)
    if len(op.operands) > len(spec.operands) or len(op.results) > len(spec.results):
        raise NodeError(spec.onnx_op, node, f"has more inputs or outputs than kvattn.{spec.name} knows")
    with ir.InsertionPoint(op), op.location:
        operands = {}
        for name, value in zip(spec.operands, op.operands):
            torch_type = tensor_types.from_torch(value.type)
            if str(value.type) == "!torch.none":
                continue
            if torch_type is None:
                raise NodeError(spec.onnx_op, node, f"input {name} has no ranked tensor type ({value.type})")
            operands[name] = cast_value(value)
        missing = [name for name in spec.operands if name not in operands and name not in spec.optional_operands]
        if missing:
            raise NodeError(spec.onnx_op, node, f"the required input {', '.join(missing)} is missing (given as '')")
        result_types = {}
        for name, result in zip(spec.results, op.results):
            if str(result.type) == "!torch.none":
                continue
            torch_type = tensor_types.from_torch(result.type)
            if torch_type is None:
                raise NodeError(
                    spec.onnx_op, node,
                    f"output {name} has no inferred ranked type ({result.type}); give the model static shapes",
                )
            result_types[name] = tensor_types.to_ir(torch_type)
        attributes = {}
        for attr_name in op.attributes:
            if attr_name.startswith(_TORCH_ATTR_PREFIX):
                attributes[attr_name.removeprefix(_TORCH_ATTR_PREFIX)] = _python_value(op.attributes[attr_name])
        known = {attr.name for attr in spec.attributes}
        for name in attributes:
            if name not in known:
                raise NodeError(spec.onnx_op, node, f"unknown attribute '{name}'")
        kv_op = dialect.build(spec, operands, result_types, attributes, node, opset, op.location)
        _move_regions(op, kv_op, spec)
        for name, result in zip(spec.results, op.results):
            if name in result_types:
                new = _cast("torch_c.from_builtin_tensor", kv_op.result(name), result.type)
                result.replace_all_uses_with(new)
    op.erase()
    return kv_op


def _move_regions(source: ir.Operation, kv_op: dialect.KvOp, spec: dialect.OpSpec) -> None:
    """Move the graph-attribute regions of the torch.operator to the kvattn op, by name."""
    if not spec.regions:
        return
    names = [ir.StringAttr(n).value for n in source.attributes[REGION_NAMES_ATTR]] \
        if REGION_NAMES_ATTR in source.attributes else []
    for name, region in zip(names, source.regions):
        if name not in spec.regions:
            raise NodeError(spec.onnx_op, kv_op.node, f"unknown graph attribute '{name}'")
        for block in list(region.blocks):
            block.append_to(kv_op.operation.regions[spec.regions.index(name)])


def cast_value(value: ir.Value) -> ir.Value:
    """torch_c.to_builtin_tensor of a ranked !torch.vtensor, at the current insertion point."""
    return _cast("torch_c.to_builtin_tensor", value, tensor_types.to_ir(tensor_types.from_torch(value.type)))


def _cast(op_name: str, value: ir.Value, result_type: ir.Type) -> ir.Value:
    return ir.Operation.create(op_name, results=[result_type], operands=[value]).result


def _python_value(attr: ir.Attribute):
    for attr_class in (ir.IntegerAttr, ir.FloatAttr, ir.StringAttr):
        if isinstance(attr, attr_class):
            return attr.value
    raise ValueError(f"unsupported ONNX attribute value {attr}")
