"""The combined additive mask of an ONNX Attention, and the fully-masked-row guard.

mask  = causal (bottom-right: key j ≤ i + offset), left/right windows, nonpad_kv_seqlen and
        attn_mask (bool or additive float, broadcast, padded with -inf when shorter than the
        keys), combined by one linalg.generic into an additive bias [B?,Hkv?,G?,S,T] holding only
        the dims it varies in; offset = past length | nonpad_kv_seqlen[b] - S | 0.
guard = rows whose bias is all -inf give 0 (IREE's softmax would give NaN; ONNX wants zeros).
Keys at or past max(nonpad_kv_seqlen) are masked for every row, so the attention may skip them.
"""

from __future__ import annotations

import math

from kvattn.lowering.attention_operands import AttentionShapes, float_cast
from kvattn.lowering.dialect import KvOp
from kvattn.lowering.mlir_text import FunctionWriter, Value
from kvattn.lowering.tensor_types import TensorType


def combined_bias(w: FunctionWriter, op: KvOp, args, shapes: AttentionShapes, element: str):
    """The combined additive mask and the roles it is indexed by, or None when nothing masks."""
    mask, nonpad = args.get("attn_mask"), args.get("nonpad_kv_seqlen")
    causal = op.attr("is_causal") == 1
    left, right = op.attr("left_window_size"), op.attr("right_window_size")
    if mask is None and nonpad is None and not causal and left < 0 and right < 0:
        return None
    inputs = []
    batch_varies = nonpad is not None
    heads_vary = False
    if mask is not None:
        mask, mask_results = _broadcast_mask(w, op, mask, shapes)
        inputs.append((mask, mask_results))
        batch_varies |= "b" in mask_results
        heads_vary = "h" in mask_results
    if nonpad is not None:
        if nonpad.type.shape != (shapes.batch,):
            raise op.error(f"nonpad_kv_seqlen has shape {list(nonpad.type.shape)}, expected [{shapes.batch}]")
        inputs.append((nonpad, ["b"]))
    roles = (("b",) if batch_varies else ()) + (("h", "g") if heads_vary else ()) + ("s", "l")
    bias_type = TensorType(tuple(shapes.size[r] for r in roles), element)

    def body(b: FunctionWriter, block: list[Value]) -> Value:
        allowed = b.constant(1, "i1")
        additive = b.constant(0.0, "f32")
        if mask is not None:
            if mask.type.element == "i1":
                allowed = block[0]
            else:
                additive = float_cast(b, block[0], "f32")
        # i32 positions: SPIR-V targets without Int64 cannot vectorize i64 index math.
        query = b.loop_index(roles.index("s"), "i32")
        key = b.loop_index(roles.index("l"), "i32")
        if nonpad is not None:
            length = b.cast("trunci", block[-2], "i32")
            allowed = b.binary("andi", allowed, b.compare("cmpi", "slt", key, length))
            offset = b.binary("subi", length, b.constant(shapes.query_len, "i32"))
        else:
            offset = b.constant(shapes.past_len, "i32")
        frontier = b.binary("addi", query, offset)  # the query's absolute position
        if causal:
            allowed = b.binary("andi", allowed, b.compare("cmpi", "sle", key, frontier))
        if left >= 0:
            lowest = b.binary("subi", frontier, b.constant(left, "i32"))
            allowed = b.binary("andi", allowed, b.compare("cmpi", "sge", key, lowest))
        if right >= 0:
            highest = b.binary("addi", frontier, b.constant(right, "i32"))
            allowed = b.binary("andi", allowed, b.compare("cmpi", "sle", key, highest))
        masked = b.select(allowed, additive, b.constant(-math.inf, "f32"))
        return float_cast(b, masked, element)

    bias = w.generic(roles, inputs, w.empty(bias_type), body)
    return bias, roles


def longest_valid_length(w: FunctionWriter, nonpad: Value, total_len: int) -> Value:
    """max(nonpad_kv_seqlen) clamped to [1, total_len], as an index: keys past it are masked for
    every row (at least one key is kept so the attention never has an empty reduction)."""
    lowest = w.fill(w.constant(0, "i64"), TensorType((), "i64"))
    longest = w.generic(["b"], [(nonpad, ["b"])], lowest, lambda b, block: b.binary("maxsi", block[0], block[1]),
                        reduction_dims=("b",))
    length = w.op(f"tensor.extract {longest}[] : {longest.mlir_type}", "i64")
    length = w.binary("maxsi", w.binary("minsi", length, w.constant(total_len, "i64")), w.constant(1, "i64"))
    return w.cast("index_cast", length, "index")


def _broadcast_mask(w: FunctionWriter, op: KvOp, mask: Value, shapes: AttentionShapes):
    """attn_mask padded to the total key length, its query-head dim split into (h, g); returns it
    with its map results over the bias roles (0 for broadcast dims)."""
    rank = mask.type.rank
    roles = ("b", "q_head", "s", "l")[4 - rank:]
    keys = mask.type.shape[-1]
    if keys > shapes.total_len:
        raise op.error(f"attn_mask covers {keys} keys but there are only {shapes.total_len}")
    if keys < shapes.total_len:
        pad = w.constant(0, "i1") if mask.type.element == "i1" else w.constant(-math.inf, mask.type.element)
        mask = w.pad_high(mask, rank - 1, shapes.total_len - keys, pad)
    expected = {"b": shapes.batch, "q_head": shapes.q_heads, "s": shapes.query_len, "l": shapes.total_len}
    results = []
    for dim, (role, size) in enumerate(zip(roles, mask.type.shape)):
        if size == 1 and expected[role] != 1:
            results.append("0")
        elif size != expected[role]:
            raise op.error(f"attn_mask shape {list(mask.type.shape)} does not broadcast to "
                           f"[{shapes.batch}, {shapes.q_heads}, {shapes.query_len}, {shapes.total_len}]")
        elif role == "q_head":
            results += ["h", "g"]
        else:
            results.append(role)
    if "h" in results:
        dim = roles.index("q_head")
        groups = [[i] for i in range(dim)] + [[dim, dim + 1]] + [[i + 1] for i in range(dim + 1, rank)]
        shape = list(mask.type.shape[:dim]) + [shapes.kv_heads, shapes.group] + list(mask.type.shape[dim + 1:])
        mask = w.expand_shape(mask, groups, shape)
    return mask, results


def bias_row_max(w: FunctionWriter, bias: Value, bias_roles) -> tuple[Value, list[str]]:
    """max over keys of the bias, per row; -inf marks a row where every key is masked."""
    row_roles = [r for r in bias_roles if r != "l"]
    element = bias.type.element
    row_type = TensorType(tuple(bias.type.shape[bias_roles.index(r)] for r in row_roles), element)
    lowest = w.fill(w.constant(-math.inf, element), row_type)
    row_max = w.generic(bias_roles, [(bias, bias_roles)], lowest,
                        lambda b, block: b.binary("maximumf", block[0], block[1]), reduction_dims=("l",))
    return row_max, row_roles


def zero_fully_masked_rows(w: FunctionWriter, out: Value, out_roles, bias: Value, bias_roles) -> Value:
    row_max, row_roles = bias_row_max(w, bias, bias_roles)

    def guard(b: FunctionWriter, block: list[Value]) -> Value:
        fully_masked = b.compare("cmpf", "oeq", block[1], b.constant(-math.inf, bias.type.element))
        return b.select(fully_masked, b.constant(0.0, out.type.element), block[0])

    return w.generic(out_roles, [(out, out_roles), (row_max, row_roles)], w.empty(out.type), guard)
