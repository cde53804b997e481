"""The combined additive mask of an ONNX Attention, and the fully-masked-row guard.

mask  = causal (bottom-right: key j ≤ i + offset), left/right windows, nonpad_kv_seqlen and
        attn_mask (bool or additive float, broadcast, padded with -inf when shorter than the
        keys), combined by one linalg.generic into an additive bias [B?,Hkv?,G?,S,T] holding only
        the dims it varies in; offset = past length | nonpad_kv_seqlen[b] - S | 0.
guard = rows whose bias is all -inf give 0 (IREE's softmax would give NaN; ONNX wants zeros).
lift  = for IREE's fused attention, which multiplies the mask by log2(e): a row whose largest
        bias value m is finite but below the floor F = -max/2 of the element type (transformers'
        finfo.min masks) gets F - m added, so no value overflows to -inf (that gave
        NaN) and the row keeps what onnx.reference computes: there s + m rounds to m, the keys
        at the row's largest mask value share the probability and all others get 0.
Keys at or past max(nonpad_kv_seqlen) are masked for every row, so the attention may skip them.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from kvattn.lowering.attention_operands import AttentionSizes, float_cast
from kvattn.lowering.mlir_text import Dim, FunctionWriter, Value
from kvattn.lowering.rule_context import RuleContext

# Marks the max(nonpad_kv_seqlen) reduction whose value the host reads to size the key slice.
VALID_LENGTH_ATTR = "kvattn.valid_length"


def combined_bias(ctx: RuleContext, sizes: AttentionSizes, element: str):
    """The combined additive mask and the roles it is indexed by, or None when nothing masks."""
    op, w = ctx.op, ctx.w
    mask, nonpad = ctx.args.get("attn_mask"), ctx.args.get("nonpad_kv_seqlen")
    causal = op.attr("is_causal") == 1
    left, right = op.attr("left_window_size"), op.attr("right_window_size")
    if mask is None and nonpad is None and not causal and left < 0 and right < 0:
        return None
    inputs = []
    batch_varies = nonpad is not None
    heads_vary = False
    if mask is not None:
        mask, mask_results = _broadcast_mask(ctx, mask, sizes)
        inputs.append((mask, mask_results))
        batch_varies |= "b" in mask_results
        heads_vary = "h" in mask_results
    if nonpad is not None:
        ctx.require_equal(w.dim(nonpad, 0), sizes.batch, "nonpad_kv_seqlen needs one entry per batch row")
        inputs.append((nonpad, ["b"]))
    roles = (("b",) if batch_varies else ()) + (("h", "g") if heads_vary else ()) + ("s", "l")
    # i32 positions: SPIR-V targets without Int64 cannot vectorize i64 index math.
    query_len = w.scalar(sizes.query_len, "i32")
    past_len = w.scalar(sizes.past_len, "i32")

    def body(b: FunctionWriter, block: list[Value]) -> Value:
        allowed = b.constant(1, "i1")
        additive = b.constant(0.0, "f32")
        if mask is not None:
            if mask.element == "i1":
                allowed = block[0]
            else:
                additive = float_cast(b, block[0], "f32")
        query = b.loop_index(roles.index("s"), "i32")
        key = b.loop_index(roles.index("l"), "i32")
        if nonpad is not None:
            length = b.cast("trunci", block[-2], "i32")
            allowed = b.binary("andi", allowed, b.compare("cmpi", "slt", key, length))
            offset = b.binary("subi", length, query_len)
        else:
            offset = past_len
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

    bias = w.generic(roles, inputs, w.empty([sizes.size[r] for r in roles], element), body)
    return bias, roles


def longest_valid_length(w: FunctionWriter, nonpad: Value, total_len: Dim) -> Value:
    """max(nonpad_kv_seqlen) clamped to [1, total_len], as an index: keys past it are masked for
    every row (at least one key is kept so the attention never has an empty reduction). The
    reduction carries VALID_LENGTH_ATTR (passes/hoist_valid_lengths.py moves it early)."""
    lowest = w.fill(w.constant(0, "i64"), [])
    longest = w.generic(["b"], [(nonpad, ["b"])], lowest, lambda b, block: b.binary("maxsi", block[0], block[1]),
                        reduction_dims=("b",), marker=VALID_LENGTH_ATTR)
    length = w.extract(longest, [])
    length = w.binary("maxsi", w.binary("minsi", length, w.scalar(total_len, "i64")), w.constant(1, "i64"))
    return w.cast("index_cast", length, "index")


def _broadcast_mask(ctx: RuleContext, mask: Value, sizes: AttentionSizes):
    """attn_mask padded to the total key length, its query-head dim split into (h, g); returns it
    with its map results over the bias roles (0 for broadcast dims). A dim of size 1 broadcasts;
    a dynamic dim must match its role at run time; shorter key dims are padded with masked keys."""
    w = ctx.w
    rank = mask.rank
    roles = ("b", "q_head", "s", "l")[4 - rank:]
    keys = w.dim(mask, rank - 1)
    if keys != sizes.total_len:
        if not (isinstance(keys, int) and isinstance(sizes.total_len, int)):
            enough = w.compare("cmpi", "sle", w.index(keys), w.index(sizes.total_len))
            w.require(enough, str(ctx.error("attn_mask covers more keys than there are")))
        pad = w.constant(0, "i1") if mask.element == "i1" else w.constant(-math.inf, mask.element)
        mask = w.pad_high(mask, rank - 1, w.sub(sizes.total_len, keys), pad)
    expected = {"b": sizes.batch, "q_head": sizes.q_heads, "s": sizes.query_len}
    results = []
    for dim, role in enumerate(roles):
        size = w.dim(mask, dim)
        if role == "l":  # equal to the key count, or padded to it above
            results.append(role)
            continue
        if size == 1 and expected[role] != 1:
            results.append("0")
            continue
        ctx.require_equal(size, expected[role], f"attn_mask does not broadcast to [batch, heads, queries, keys] "
                                                f"on axis {dim}")
        results += ["h", "g"] if role == "q_head" else [role]
    if "h" in results:
        dim = roles.index("q_head")
        groups = [[i] for i in range(dim)] + [[dim, dim + 1]] + [[i + 1] for i in range(dim + 1, rank)]
        mask_sizes = list(w.sizes(mask))
        mask = w.expand_shape(mask, groups, mask_sizes[:dim] + [sizes.kv_heads, sizes.group] + mask_sizes[dim + 1:])
    return mask, results


def bias_row_max(w: FunctionWriter, bias: Value, bias_roles) -> tuple[Value, list[str]]:
    """max over keys of the bias, per row; -inf marks a row where every key is masked."""
    row_roles = [r for r in bias_roles if r != "l"]
    element = bias.element
    lowest = w.fill(w.constant(-math.inf, element), [w.dim(bias, bias_roles.index(r)) for r in row_roles])
    row_max = w.generic(bias_roles, [(bias, bias_roles)], lowest,
                        lambda b, block: b.binary("maximumf", block[0], block[1]), reduction_dims=("l",))
    return row_max, row_roles


_FINFO = {"f32": np.finfo(np.float32), "f16": np.finfo(np.float16), "bf16": ml_dtypes.finfo(ml_dtypes.bfloat16)}


def lift_huge_rows(w: FunctionWriter, bias: Value, bias_roles) -> tuple[Value, tuple[str, ...]]:
    """The bias with every row whose largest value is finite and below the floor shifted up to
    it (the module docstring's `lift`); rows fully masked with -inf stay as they are."""
    row_max, row_roles = bias_row_max(w, bias, bias_roles)
    element = bias.element
    floor = w.constant(-float(_FINFO[element].max) / 2, element)
    lowest = w.constant(-math.inf, element)
    zero = w.constant(0.0, element)

    def lift(b: FunctionWriter, block: list[Value]) -> Value:
        value, top = block[0], block[1]
        huge = b.binary("andi", b.compare("cmpf", "olt", top, floor), b.compare("cmpf", "ogt", top, lowest))
        return b.binary("addf", value, b.select(huge, b.binary("subf", floor, top), zero))

    return w.generic(bias_roles, [(bias, bias_roles), (row_max, row_roles)], w.empty_like(bias), lift), bias_roles


def zero_fully_masked_rows(w: FunctionWriter, out: Value, out_roles, bias: Value, bias_roles) -> Value:
    row_max, row_roles = bias_row_max(w, bias, bias_roles)

    def guard(b: FunctionWriter, block: list[Value]) -> Value:
        fully_masked = b.compare("cmpf", "oeq", block[1], b.constant(-math.inf, bias.element))
        return b.select(fully_masked, b.constant(0.0, out.element), block[0])

    return w.generic(out_roles, [(out, out_roles), (row_max, row_roles)], w.empty_like(out), guard)
