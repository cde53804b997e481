"""Lower every kvattn op to IREE's dialects (iree_linalg_ext, linalg, tensor, arith, cf).

Each op's rule receives one `RuleContext` (the op, the writer, its present operands as writer
values, the target's lowering options) and writes the replacement as a function body
(`mlir_text.FunctionWriter`) whose arguments are the op's present operands and whose results
are its present results; `splice` moves that body in place of the op. An op without a rule is
an error naming the node; anything else that fails inside a rule is an internal error naming it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from iree.compiler import ir

from kvattn.lowering import dialect
from kvattn.lowering.diagnostics import InternalError, KvattnError, NodeError
from kvattn.lowering.lower_attention import lower_attention
from kvattn.lowering.lower_flex_attention import lower_flex_attention
from kvattn.lowering.lower_rms_normalization import lower_rms_normalization
from kvattn.lowering.lower_rotary_embedding import lower_rotary_embedding
from kvattn.lowering.lower_tensor_scatter import lower_tensor_scatter
from kvattn.lowering.mlir_text import FunctionWriter, Value, splice
from kvattn.lowering.options import LoweringOptions
from kvattn.lowering.rule_context import RuleContext

Rule = Callable[[RuleContext], dict[str, Value]]

RULES: dict[str, Rule] = {
    dialect.ATTENTION.name: lower_attention,
    dialect.TENSOR_SCATTER.name: lower_tensor_scatter,
    dialect.ROTARY_EMBEDDING.name: lower_rotary_embedding,
    dialect.RMS_NORMALIZATION.name: lower_rms_normalization,
    dialect.FLEX_ATTENTION.name: lower_flex_attention,
}


@dataclasses.dataclass(frozen=True)
class Lowered:
    ops: list[str]  # the ops the node lowered to, in order, without arith
    notes: list[str]  # the rule's choices, e.g. which route it took and why


def lower_kvattn_ops(module: ir.Module, options: LoweringOptions = LoweringOptions()) -> dict[str, Lowered]:
    """Lower all kvattn ops; returns, per ONNX node, what it lowered to."""
    lowered = {}
    for op in dialect.kvattn_ops(module):
        rule = RULES.get(op.spec.name)
        if rule is None:
            raise NodeError(op.spec.onnx_op, op.node, f"no lowering rule for {op.spec.name}")
        node = op.node  # read before the op is replaced
        try:
            lowered[node] = lower_op(op, rule, options)
        except (KvattnError, InternalError) as exc:
            if isinstance(exc, InternalError) and exc.node is None:
                raise InternalError(exc.detail, node, op.spec.onnx_op) from exc
            raise
        except Exception as exc:  # a bug in a rule: report it naming the node
            raise InternalError(f"{type(exc).__name__}: {exc}", node, op.spec.onnx_op) from exc
    return lowered


def _as_declared(ctx: RuleContext, name: str, value: Value) -> Value:
    """`value` with the result type the op declares: ONNX shape inference may know sizes of a
    result that its operands leave open (a past cache of dims [?, ?, ?, ?] whose update is
    [?, 2, 16, 16]); each such size is checked at run time before the tensor.cast."""
    declared = ctx.op.result_type(name)
    if declared is None or value.type == declared or value.type.element != declared.element:
        return value
    w = ctx.w
    for axis, size in enumerate(declared.shape):
        if size is not None and value.type.shape[axis] is None:
            ctx.require_equal(w.dim(value, axis), size, f"{name} has a size on axis {axis} other than the model's "
                                                        f"declared {size}")
    sizes = tuple(w.dim(value, axis) if size is None else size for axis, size in enumerate(declared.shape))
    return w.op(f"tensor.cast {value} : {value.mlir_type} to {declared.mlir}", declared, "cast", sizes)


def lower_op(op: dialect.KvOp, rule: Rule, options: LoweringOptions) -> Lowered:
    writer = FunctionWriter(op.node)
    args = {name: Value(f"%{name}", op.operand_type(name))
            for name in op.spec.operands if op.operand(name) is not None}
    context = RuleContext(op, writer, args, options)
    results = rule(context)
    present = op.present_results()
    for name, _ in present:
        results[name] = _as_declared(context, name, results[name])
    text = writer.function("lowered", list(args.values()), [results[name] for name, _ in present])
    moved = splice(op.operation, text, [op.operand(name) for name in args], [value for _, value in present])
    names = []
    for name in moved:
        if not name.startswith(("arith.", "tensor.dim", "cf.assert")) and name not in names:
            names.append(name)
    return Lowered(names, writer.notes)
