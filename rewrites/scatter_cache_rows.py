"""A ScatterND that writes consecutive rows of a cache → ONNX TensorScatter (kvattn in-place caches).

transformers' StaticCache (`index_copy_` along the sequence axis) exports as

    present = Transpose(ScatterND(Transpose(past, P),
                                  Unsqueeze(Range(0, n, 1) + start, [-1]),
                                  Transpose(x, Q)), P⁻¹)

with P bringing the sequence axis a to the front: the rows start .. start+n-1 of `past` along
axis a get the n rows of new = Transpose(x, R) (x in whatever layout the exporter had, R with
R[P[i]] = Q[i], so that Transpose(new, P) = Transpose(x, Q)), for every batch row.
transformers' own exporter (`transformers.exporters`) writes the new rows broadcast to the
scattered shape first, `Expand(Transpose(x, Q), [n] + the past's other dims)`: then new is that
update transposed back, Transpose(update, P⁻¹) (an Expand that broadcasts is kept as written).

Both are written as

    present = TensorScatter(past, new, write_indices = start for every batch row,
                            axis = a, mode = "linear")

which kvattn raises to kvattn.tensor_scatter, so kvattn-cache-lifetime can update the cache in
place and the row range is checked before anything is written. Checked: P moves exactly one
non-batch axis to the front and keeps the others in order, the outer Transpose inverts it, the
ScatterND does not reduce, and `start` is one int64. The model is raised to opset 24 (the
first with TensorScatter) first (rewrites/opset.py).
"""

from __future__ import annotations

from typing import Callable

import onnx
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

OPSET = 24  # TensorScatter


class ScatterCacheRows(RewriteRuleClassBase):
    def __init__(self, record: Callable[[str], None]):
        super().__init__(name="ScatterCacheRows", remove_nodes=False)  # the row indices serve every cache
        self._record = record
        self._scatter: ir.Node | None = None

    def pattern(self, op, past, new, count, start, perm, new_perm, inverse):
        rows = op.Unsqueeze(op.Add(op.Range(0, count, 1), start), [-1])
        return op.Transpose(op.ScatterND(op.Transpose(past, perm=perm), rows, op.Transpose(new, perm=new_perm)),
                            perm=inverse)

    def check(self, context, past: ir.Value, new: ir.Value, start: ir.Value, perm: ir.Attr, new_perm: ir.Attr,
              inverse: ir.Attr, **_) -> MatchResult:
        result = MatchResult()
        order = list(perm.as_ints())
        rank = len(order)
        if len(order) < 2 or order[0] == 0 or order[1:] != [axis for axis in range(rank) if axis != order[0]]:
            return result.fail(f"Transpose perm={order} does not bring one non-batch axis to the front "
                               f"keeping the others in order")
        if [order.index(axis) for axis in range(rank)] != list(inverse.as_ints()):
            return result.fail(f"the outer Transpose perm={list(inverse.as_ints())} does not invert {order}")
        scatter = context.root.inputs[0].producer()
        reduction = scatter.attributes.get("reduction")
        if reduction is not None and reduction.as_string() != "none":
            return result.fail(f"ScatterND reduction='{reduction.as_string()}' is not a plain write")
        if start.dtype != ir.DataType.INT64 or start.shape is None or list(start.shape) not in ([], [1]):
            return result.fail("the row offset is not one int64")
        update_rank = len(new_perm.as_ints()) if new_perm is not None else (len(new.shape) if new.shape else None)
        if past.shape is None or new.shape is None or len(past.shape) != rank or update_rank != rank:
            return result.fail("the cache and the new rows need known ranks equal to the perm's")
        self._scatter = scatter
        return result

    def rewrite(self, op, past: ir.Value, new: ir.Value, start: ir.Value, perm: ir.Attr, new_perm: ir.Attr = None,
                inverse: ir.Attr = None, **_):
        order = perm.as_ints()
        axis = order[0]
        if new_perm is None:  # `new` is the scattered update itself, in the transposed layout
            new = op.Transpose(new, perm=inverse.as_ints())
        else:
            in_past_layout = [0] * len(order)
            for position, source in zip(order, new_perm.as_ints()):
                in_past_layout[position] = source
            if in_past_layout != list(range(len(order))):
                new = op.Transpose(new, perm=in_past_layout)
        batch = op.Shape(new, start=0, end=1)  # (a Shape of the past would do too; this one reads no cache)
        write_indices = op.Expand(op.Reshape(start, op.Constant(value_ints=[1])), batch)
        present = op.TensorScatter(past, new, write_indices, axis=axis, mode="linear")
        present.producer().name = self._scatter.name
        self._record(f"ScatterND '{self._scatter.name}' writes rows {start.name} + [0, n) of {past.name} along axis "
                     f"{axis}: TensorScatter (linear)")
        return present


class ScatterExpandedCacheRows(ScatterCacheRows):
    """The same write with the new rows broadcast to the scattered shape (transformers' exporter)."""

    def pattern(self, op, past, new, count, start, perm, shape, inverse):
        rows = op.Unsqueeze(op.Add(op.Range(0, count, 1), start), [-1])
        return op.Transpose(op.ScatterND(op.Transpose(past, perm=perm), rows, op.Expand(new, shape)), perm=inverse)

    def check(self, context, **bindings) -> MatchResult:
        return super().check(context, new_perm=None, **bindings)


def applies_to(model: onnx.ModelProto) -> bool:
    return any(node.op_type == "ScatterND" for node in model.graph.node)


def rules(record: Callable[[str], None]) -> RewriteRuleSet:
    return RewriteRuleSet([ScatterCacheRows.rule(record), ScatterExpandedCacheRows.rule(record)], commute=True)
