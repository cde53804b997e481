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

from kvattn.lowering.dialect import KvOp
from kvattn.lowering.mlir_text import FunctionWriter, Value
from kvattn.lowering.options import LoweringOptions
from kvattn.lowering.tensor_types import TensorType


def lower_tensor_scatter(op: KvOp, w: FunctionWriter, args: dict[str, Value],
                         options: LoweringOptions) -> dict[str, Value]:
    cache, update = args["past_cache"], args["update"]
    rank = cache.type.rank
    axis = op.attr("axis") % rank
    capacity = cache.type.shape[axis]
    lead = list(update.type.shape[: axis + 1])  # d0..d(a-1), U
    dims = [f"d{i}" for i in range(axis + 2)]  # the loop over lead dims, then the index column
    write_indices = args.get("write_indices")

    def index_body(b: FunctionWriter, block_args: list[Value]) -> Value:
        # i32 arithmetic: cache positions fit, and some targets (SPIR-V) have no 64-bit integers.
        column = b.op(f"linalg.index {axis + 1} : index", "index", "col")
        position = b.loop_index(axis, "i32")
        if write_indices is not None:
            position = b.binary("addi", b.cast("trunci", block_args[0], "i32"), position)
        if op.attr("mode") == "circular":
            position = b.binary("remsi", position, b.constant(capacity, "i32"))
        # Column k < a is the loop index k; column a is the cache position.
        value = position
        for k in reversed(range(axis)):
            is_k = b.compare("cmpi", "eq", column, b.op(f"arith.constant {k} : index", "index", "c"))
            value = b.select(is_k, b.loop_index(k, "i32"), value)
        return value

    indices_type = TensorType((*lead, axis + 1), "i32")
    inputs = [(write_indices, ["d0"])] if write_indices is not None else []
    indices = w.generic(dims, inputs, w.empty(indices_type), index_body)
    indices = w.collapse_shape(indices, [list(range(axis + 1)), [axis + 1]])
    updates = w.collapse_shape(update, [list(range(axis + 1))] + [[d] for d in range(axis + 1, rank)])
    dimension_map = list(range(axis + 1))
    element = cache.type.element
    name = w.fresh("scatter")
    w.line(f"{name} = iree_linalg_ext.scatter dimension_map = {dimension_map} unique_indices(true) "
           f"ins({updates}, {indices} : {updates.mlir_type}, {indices.mlir_type}) outs({cache} : {cache.mlir_type}) {{")
    w.line(f"^bb0(%new: {element}, %old: {element}):")
    w.line(f"  iree_linalg_ext.yield %new : {element}")
    w.line(f"}} -> {cache.mlir_type}")
    return {"present_cache": Value(name, cache.type)}
