"""Sizes of builtin tensors as IR values, for passes that build ops with the Python bindings."""

from __future__ import annotations

from iree.compiler import ir


def dynamic_sizes(tensor: ir.Value) -> list[ir.Value]:
    """One `tensor.dim` per dynamic dim of `tensor`, at the current insertion point (the operands
    that tensor.empty, hal.tensor.alias and the like take for a tensor of its type)."""
    ranked = ir.RankedTensorType(tensor.type)
    index = ir.IndexType.get()
    sizes = []
    for axis in range(ranked.rank):
        if ranked.is_dynamic_dim(axis):
            position = ir.Operation.create("arith.constant", results=[index],
                                           attributes={"value": ir.IntegerAttr.get(index, axis)}).result
            sizes.append(ir.Operation.create("tensor.dim", results=[index], operands=[tensor, position]).result)
    return sizes
