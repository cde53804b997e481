"""kvattn.tensor_scatter → iree_linalg_ext.scatter that writes only the new rows.

For a cache [d0, ..., d(a-1), C, rest...] updated on axis a with U new rows:
  indices[n] = (i0, ..., i(a-1), p)   for every (i0..i(a-1), u) in [d0..d(a-1), U], with
  p = write_indices[i0] + u           (linear)
  p = (write_indices[i0] + u) mod C   (circular)
  updates  = update collapsed to [N, rest...]
  present  = iree_linalg_ext.scatter dimension_map = [0..a] ins(updates, indices) outs(past)
so a decode step touches U·rest elements, whatever the capacity C. Absent write_indices are 0.
"""

from __future__ import annotations

from kvattn.lowering.mlir_text import FunctionWriter, Value
from kvattn.lowering.rule_context import RuleContext


def lower_tensor_scatter(ctx: RuleContext) -> dict[str, Value]:
    op, w = ctx.op, ctx.w
    cache, update = w.with_sizes(ctx.args["past_cache"]), w.with_sizes(ctx.args["update"])
    rank = cache.rank
    axis = op.attr("axis") % rank
    for dim in range(rank):
        if dim != axis:
            ctx.require_equal(update.sizes[dim], cache.sizes[dim],
                              f"update must match past_cache outside axis {axis} (dim {dim} differs)")
    capacity = cache.sizes[axis]
    lead = list(update.sizes[: axis + 1])  # d0..d(a-1), U
    dims = [f"d{i}" for i in range(axis + 2)]  # the loop over lead dims, then the index column
    write_indices = ctx.args.get("write_indices")
    if write_indices is not None:
        ctx.require_equal(w.dim(write_indices, 0), cache.sizes[0], "write_indices needs one entry per batch row")
    # i32 arithmetic: cache positions fit, and some targets (SPIR-V) have no 64-bit integers.
    capacity_i32 = w.scalar(capacity, "i32") if op.attr("mode") == "circular" else None

    def index_body(b: FunctionWriter, block_args: list[Value]) -> Value:
        column = b.loop_index(axis + 1, "index")
        position = b.loop_index(axis, "i32")
        if write_indices is not None:
            position = b.binary("addi", b.cast("trunci", block_args[0], "i32"), position)
        if capacity_i32 is not None:
            position = b.binary("remsi", position, capacity_i32)
        # Column k < a is the loop index k; column a is the cache position.
        value = position
        for k in reversed(range(axis)):
            is_k = b.compare("cmpi", "eq", column, b.index(k))
            value = b.select(is_k, b.loop_index(k, "i32"), value)
        return value

    inputs = [(write_indices, ["d0"])] if write_indices is not None else []
    indices = w.generic(dims, inputs, w.empty([*lead, axis + 1], "i32"), index_body)
    indices = w.collapse_shape(indices, [list(range(axis + 1)), [axis + 1]])
    updates = w.collapse_shape(update, [list(range(axis + 1))] + [[d] for d in range(axis + 1, rank)])
    dimension_map = list(range(axis + 1))
    element = cache.element
    block = [Value("%new", element), Value("%old", element)]
    present = w.region_op(
        f"iree_linalg_ext.scatter dimension_map = {dimension_map} unique_indices(true) "
        f"ins({updates}, {indices} : {updates.mlir_type}, {indices.mlir_type}) outs({cache} : {cache.mlir_type})",
        block, lambda b, args: args[0], "iree_linalg_ext.yield", f"-> {cache.mlir_type}", cache.type, cache.sizes,
        "scatter")
    return {"present_cache": present}
