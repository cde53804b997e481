"""Flatten the input of every `torch.aten.view` whose dims IREE's lowering would guess.

    %y = torch.aten.view %x, [sizes] : [?,?,2,16] -> [?,32]
  ⇒ %flat = torch.aten.view %x, [-1] : [?,?,2,16] -> [?]
    %y = torch.aten.view %flat, [sizes] : [?] -> [?,32]

applied to a view whose input has two or more dynamic dims that no entry of the size list pins
(`torch.aten.size.int %x, d` names input dim d as it is). Runs between IREE's
torch-onnx-to-torch-backend-pipeline and torch-to-iree (passes/iree_input.py).

Why: torch-mlir's view lowering in IREE 3.13 (`ConvertAtenViewOp`) pairs a dynamic input dim with
a dynamic output dim whenever it cannot tell them apart and then solves the remaining static dims
for the other: `[?b, ?s, 2, 16] -> [-1, 32]` (GPT-2's merge of heads before its Gemm) became
`[?b, 1, 2, 16] -> [?b, 32]`, statically dropping every query but the first in a prefill. A
one-dimensional input leaves it nothing to guess: collapsing to `[?]` is exact, and the second
view either expands `[?]` with one dynamic dim (exact) or, with more, becomes a `tensor.reshape`
of the sizes computed at run time. Views whose dynamic dims are pinned, or that have at most one
unpinned dynamic dim, are lowered as before (collapse/expand, which IREE fuses freely).
"""

from __future__ import annotations

from iree.compiler import ir

from kvattn.lowering import tensor_types


def flatten_ambiguous_views(module: ir.Module) -> int:
    """Rewrite the ambiguous views of every function in place; returns how many were rewritten."""
    views = []

    def collect(op):
        if op.operation.name == "torch.aten.view" and _ambiguous(op.operation):
            views.append(op.operation)
        return ir.WalkResult.ADVANCE

    module.operation.walk(collect)
    for view in views:
        _flatten_input(view)
    return len(views)


def _ambiguous(view: ir.Operation) -> bool:
    source = tensor_types.from_torch(view.operands[0].type)
    result = tensor_types.from_torch(view.results[0].type)
    if source is None or result is None or result.rank <= 1:  # collapsing to 1-D is exact
        return False
    sizes = _defining_op(view.operands[1])
    if sizes is None or sizes.name != "torch.prim.ListConstruct":
        return False
    pinned = {_pinned_dim(entry, view.operands[0]) for entry in sizes.operands}
    unpinned = [axis for axis, size in enumerate(source.shape) if size is None and axis not in pinned]
    return len(unpinned) >= 2


def _pinned_dim(entry: ir.Value, source: ir.Value) -> int | None:
    """d when `entry` is `torch.aten.size.int %source, d` for a constant d."""
    owner = _defining_op(entry)
    if owner is None or owner.name != "torch.aten.size.int" or owner.operands[0] != source:
        return None
    value = _constant(owner.operands[1])
    if value is None:
        return None
    rank = tensor_types.from_torch(source.type).rank
    return value % rank if rank else None


def _defining_op(value: ir.Value) -> ir.Operation | None:
    owner = value.owner
    return None if isinstance(owner, ir.Block) else owner.operation


def _flatten_input(view: ir.Operation) -> None:
    source, sizes = view.operands[0], _defining_op(view.operands[1])
    element = str(source.type).rsplit(",", 1)[1].rstrip(">")
    with ir.InsertionPoint(view), view.location:
        flat = _torch("torch.aten.view", f"!torch.vtensor<[?],{element}>", source,
                      _torch("torch.prim.ListConstruct", "!torch.list<int>", _int(-1)))
        entries = list(sizes.operands)
        inferred = [axis for axis, entry in enumerate(entries) if _constant(entry) == -1]
        if inferred:  # IREE passes a -1 of a view of a 1-D tensor on to tensor.reshape as a size
            known = _int(1)
            for axis, entry in enumerate(entries):
                if axis != inferred[0]:
                    known = _torch("torch.aten.mul.int", "!torch.int", known, entry)
            known = _torch("torch.prim.max.int", "!torch.int", known, _int(1))  # no division by zero
            total = _torch("torch.aten.size.int", "!torch.int", flat, _int(0))
            entries[inferred[0]] = _torch("torch.aten.floordiv.int", "!torch.int", total, known)
        view.operands[0] = flat
        view.operands[1] = _torch("torch.prim.ListConstruct", "!torch.list<int>", *entries)


def _torch(name: str, result: str, *operands: ir.Value) -> ir.Value:
    return ir.Operation.create(name, results=[ir.Type.parse(result)], operands=list(operands)).result


def _int(value: int) -> ir.Value:
    return ir.Operation.create("torch.constant.int", results=[ir.Type.parse("!torch.int")],
                               attributes={"value": ir.IntegerAttr.get(ir.IntegerType.get_signless(64), value)}).result


def _constant(value: ir.Value) -> int | None:
    owner = _defining_op(value)
    if owner is None or owner.name != "torch.constant.int":
        return None
    return ir.IntegerAttr(owner.attributes["value"]).value
