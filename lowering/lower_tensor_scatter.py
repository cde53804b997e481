"""kvattn.tensor_scatter → iree_linalg_ext.scatter that writes only the new rows.

For a cache [d0, ..., d(a-1), C, rest...] updated on axis a with U new rows:
  indices[n] = (i0, ..., i(a-1), p)   for every (i0..i(a-1), u) in [d0..d(a-1), U], with
  p = write_indices[i0] + u           (linear; the call fails before anything is written
                                       unless 0 <= write_indices[i0] <= C - U for every i0)
  p = (write_indices[i0] + u) mod C   (circular; the non-negative remainder, as onnx.reference
                                       computes it with numpy, from the int64 index; on
                                       targets without i64 division the index must fit in i32)
  updates  = update collapsed to [N, rest...]
  present  = iree_linalg_ext.scatter dimension_map = [0..a] ins(updates, indices) outs(past)
so a decode step touches U·rest elements, whatever the capacity C. Absent write_indices are 0;
an update of U > C rows fails the call (static sizes: at compile time); U = 0 returns past.
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
    capacity, rows = cache.sizes[axis], update.sizes[axis]
    if rows == 0:
        return {"present_cache": cache}
    if not (isinstance(rows, int) and isinstance(capacity, int)):  # static sizes: checked by the verifier
        ctx.require(w.compare("cmpi", "ule", w.index(rows), w.index(capacity)),
                    f"update has more rows on axis {axis} than the cache holds")
    lead = list(update.sizes[: axis + 1])  # d0..d(a-1), U
    dims = [f"d{i}" for i in range(axis + 2)]  # the loop over lead dims, then the index column
    write_indices = ctx.args.get("write_indices")
    circular = op.attr("mode") == "circular"
    if write_indices is not None:
        ctx.require_equal(w.dim(write_indices, 0), cache.sizes[0], "write_indices needs one entry per batch row")
        if not circular:
            sizes = f" (here {capacity} - {rows})" if isinstance(capacity, int) and isinstance(rows, int) else ""
            ctx.require_in_range(write_indices, w.constant(0, "i64"), w.scalar(w.sub(capacity, rows), "i64"),
                                 f"write_indices out of range: a linear write needs 0 <= write_indices[b] <= "
                                 f"cache length - update rows{sizes}")
    # Positions are i32 (cache positions fit, and some targets (SPIR-V) have no 64-bit integer
    # arithmetic); a circular index is first reduced modulo C in i64 where the target divides
    # i64, else it must fit in i32.
    capacity_i32 = w.scalar(capacity, "i32") if circular else None
    capacity_i64 = None
    if circular and write_indices is not None:
        if ctx.options.int64_division:
            capacity_i64 = w.scalar(capacity, "i64")
        else:
            # -2^31 is left out: its remainder is wrong on lavapipe (abs(INT32_MIN) overflows).
            ctx.require_in_range(write_indices, w.constant(-2**31 + 1, "i64"), w.constant(2**31 - 1, "i64"),
                                 "write_indices outside (-2^31, 2^31): this target reduces circular indices in 32 bits")

    def index_body(b: FunctionWriter, block_args: list[Value]) -> Value:
        column = b.loop_index(axis + 1, "index")
        position = b.loop_index(axis, "i32")
        if write_indices is not None:
            start = block_args[0]
            if capacity_i64 is not None:
                start = _non_negative_remainder(b, start, capacity_i64)
            start = b.cast("trunci", start, "i32")
            if circular and capacity_i64 is None:
                start = _non_negative_remainder(b, start, capacity_i32)
            position = b.binary("addi", start, position)
        if circular:
            position = _non_negative_remainder(b, position, capacity_i32)
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


def _non_negative_remainder(b: FunctionWriter, value: Value, modulus: Value) -> Value:
    """value mod modulus in [0, modulus), like numpy's % (arith.remsi keeps the dividend's sign)."""
    remainder = b.binary("remsi", value, modulus)
    negative = b.compare("cmpi", "slt", remainder, b.constant(0, value.mlir_type))
    return b.select(negative, b.binary("addi", remainder, modulus), remainder)
