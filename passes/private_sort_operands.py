"""Sort fresh copies: every `iree_linalg_ext.sort` of keys and their indices gets both written
by one op that reads its keys.

    %iota = linalg.generic outs(%e : tensor<?x4xi64>) { linalg.index 1 }   (shared: IREE CSEs it)
    %s:2 = iree_linalg_ext.sort dimension(1) outs(%keys, %iota)
  ⇒ %fresh:2 = linalg.generic ins(%keys) outs(%e_keys, %e) { yield %key, linalg.index 1 }
    %s:2 = iree_linalg_ext.sort dimension(1) outs(%fresh#0, %fresh#1)

applied to each sort of two operands whose second is an index tensor along the sorted dim (as
IREE's TopK lowering makes them). Runs on IREE input, after torch-to-iree (passes/iree_input.py).

Why: a sort updates both operands in place. IREE 3.13's torch-to-iree gives every TopK of the
same shape one shared index tensor, and its stream copy-on-write does not copy a value that two
in-place dispatches update: the second TopK sorted the indices the first had already permuted
(a Mixtral-style MoE's layer 1 picked the wrong experts). It also sorted the keys in the buffer
of a model input. Writing the indices beside a copy of the keys makes the operands of two sorts
of different keys different values (no CSE merges them), owned by their sort alone; the copy
costs one pass over the keys.
"""

from __future__ import annotations

from iree.compiler import ir

from kvattn.passes import tensor_sizes


def give_sorts_fresh_operands(module: ir.Module) -> int:
    """Rewrite every matching sort in place; returns how many were rewritten."""
    sorts = []

    def collect(op):
        if op.operation.name == "iree_linalg_ext.sort" and _index_operand_axis(op.operation) is not None:
            sorts.append(op.operation)
        return ir.WalkResult.ADVANCE

    module.operation.walk(collect)
    for sort in sorts:
        _write_fresh_operands(sort)
    return len(sorts)


def _index_operand_axis(sort: ir.Operation) -> int | None:
    """The axis d when the sort's operands are (keys, indices along d) and the indices are a
    `linalg.generic` with no inputs whose body is `linalg.index d` cast to the element type."""
    if len(sort.operands) != 2:
        return None
    producer = sort.operands[1].owner
    if isinstance(producer, ir.Block) or producer.operation.name != "linalg.generic":
        return None
    generic = producer.operation
    if ir.DenseI32ArrayAttr(generic.attributes["operandSegmentSizes"])[0] != 0 or len(generic.results) != 1:
        return None
    body = [op.operation for op in generic.regions[0].blocks[0].operations]
    names = [op.name for op in body]
    if names != ["linalg.index", "arith.index_cast", "linalg.yield"]:
        return None
    axis = ir.IntegerAttr(body[0].attributes["dim"]).value
    return axis if axis == ir.IntegerAttr(sort.attributes["dimension"]).value else None


def _write_fresh_operands(sort: ir.Operation) -> None:
    keys, indices = sort.operands[0], sort.operands[1]
    axis = _index_operand_axis(sort)
    iota = indices.owner.operation
    index_init = iota.operands[0]
    key_type, index_type = ir.RankedTensorType(keys.type), ir.RankedTensorType(indices.type)
    rank = key_type.rank
    with ir.InsertionPoint(sort), sort.location:
        key_init = ir.Operation.create("tensor.empty", results=[key_type], operands=tensor_sizes.dynamic_sizes(keys)).result
        identity = ir.AffineMapAttr.get(ir.AffineMap.get_identity(rank))
        parallel = ir.Attribute.parse("#linalg.iterator_type<parallel>")
        fresh = ir.Operation.create(
            "linalg.generic", results=[key_type, index_type], operands=[keys, key_init, index_init],
            attributes={"indexing_maps": ir.ArrayAttr.get([identity] * 3),
                        "iterator_types": ir.ArrayAttr.get([parallel] * rank),
                        "operandSegmentSizes": ir.DenseI32ArrayAttr.get([1, 2])},
            regions=1)
        block = fresh.regions[0].blocks.append(key_type.element_type, key_type.element_type,
                                               index_type.element_type)
        with ir.InsertionPoint(block):
            position = ir.Operation.create("linalg.index", results=[ir.IndexType.get()],
                                           attributes={"dim": ir.IntegerAttr.get(ir.IntegerType.get_signless(64),
                                                                                 axis)}).result
            index = ir.Operation.create("arith.index_cast", results=[index_type.element_type],
                                        operands=[position]).result
            ir.Operation.create("linalg.yield", operands=[block.arguments[0], index])
    sort.operands[0], sort.operands[1] = fresh.results[0], fresh.results[1]
