"""kvattn.rotary_embedding → one linalg.generic over the output, gathering what it needs.

For output element j of a head (R = rotary_embedding_dim or the head size, H = R/2), with
cos/sin read at the token's position (position_ids[b, s] into [max_pos, H] caches, else the
[B, S, H] caches directly; a size-1 batch or sequence dim of those broadcasts):
  j ≥ R                      y = x[j]
  halves,      j < H         y = cos[j]·x[j] − sin[j]·x[j+H]
               H ≤ j < R     y = sin[j−H]·x[j−H] + cos[j−H]·x[j]
  interleaved, j even        y = cos[j/2]·x[j] − sin[j/2]·x[j+1]
               j odd         y = sin[j/2]·x[j−1] + cos[j/2]·x[j]
3D inputs [B, S, N·D] are expanded to [B, S, N, D] first; the arithmetic is done in f32.
The call fails before the gather unless every position_ids value is in [0, max_pos).
"""

from __future__ import annotations

from kvattn.lowering.attention_operands import float_cast
from kvattn.lowering.mlir_text import FunctionWriter, Value
from kvattn.lowering.rule_context import RuleContext


def lower_rotary_embedding(ctx: RuleContext) -> dict[str, Value]:
    op, w = ctx.op, ctx.w
    x = w.with_sizes(ctx.args["X"])
    rank3 = x.rank == 3
    if rank3:
        batch, length, hidden = x.sizes
        heads = op.attr("num_heads")
        if not isinstance(hidden, int):
            raise ctx.unsupported(f"X {x.type.describe()} with a dynamic hidden size")
        if hidden % heads:
            raise op.error(f"hidden size {hidden} is not divisible by num_heads={heads}")
        x = w.expand_shape(x, [[0], [1], [2, 3]], [batch, length, heads, hidden // heads])
        dims = ("b", "s", "n", "j")
    else:
        dims = ("b", "n", "s", "j")
    head = x.sizes[3]
    if not isinstance(head, int):
        raise ctx.unsupported(f"X {x.type.describe()} with a dynamic head size")
    rotary = op.attr("rotary_embedding_dim") or head
    half = rotary // 2
    cos, sin, positions = ctx.args["cos_cache"], ctx.args["sin_cache"], ctx.args.get("position_ids")
    if rotary % 2 or rotary > head or cos.type.shape[-1] not in (half, None):
        raise op.error(f"rotary_embedding_dim {rotary} needs caches with {half} columns and at most {head} "
                       f"head elements; cos_cache is {cos.type.describe()}")
    ctx.require_equal(w.dim(cos, cos.rank - 1), half, f"cos_cache/sin_cache need {half} columns")
    for axis in range(cos.rank):
        ctx.require_equal(w.dim(sin, axis), w.dim(cos, axis), f"sin_cache and cos_cache differ in dim {axis}")
    if positions is not None:
        rows = w.dim(cos, 0)
        count = rows if isinstance(rows, int) else "N"
        ctx.require_in_range(positions, w.constant(0, "i64"), w.scalar(w.sub(rows, 1), "i64"),
                             f"position_ids out of range: every position must be in [0, {count}) "
                             f"for a cos_cache of {count} rows")
    # position_ids [B, S], or caches [B, S, H] without them; a static 1 broadcasts (exporters
    # give caches [1, S, H]).
    per_token = positions if positions is not None else cos
    broadcast = []
    for axis, role in enumerate(("b", "s")):
        size = w.dim(per_token, axis)
        broadcast.append(size == 1)
        if size != 1:
            ctx.require_equal(size, x.sizes[dims.index(role)], f"{'position_ids' if positions is not None else 'cos_cache'}"
                                                               f" and X differ in {('batch', 'sequence')[axis]} size")
    interleaved = op.attr("interleaved") == 1
    element = x.type.element

    def body(b: FunctionWriter, block: list[Value]) -> Value:
        index = {d: b.loop_index(i, "index") for i, d in enumerate(dims)}
        j = index["j"]

        def x_at(column: Value) -> Value:
            return float_cast(b, b.extract(x, [column if d == "j" else index[d] for d in dims]), "f32")

        token = [b.index(0) if broadcast[axis] else index[role] for axis, role in enumerate(("b", "s"))]

        def cache_at(cache: Value, column: Value) -> Value:
            if positions is not None:
                row = [b.cast("index_cast", b.extract(positions, token), "index")]
            else:
                row = token
            return float_cast(b, b.extract(cache, row + [column]), "f32")

        if interleaved:
            pair = b.binary("divui", j, b.index(2))
            odd = b.compare("cmpi", "ne", b.binary("remui", j, b.index(2)), b.index(0))
            first = b.binary("muli", pair, b.index(2))  # the even element of the pair
            second = b.binary("addi", first, b.index(1))
        else:
            odd = b.compare("cmpi", "uge", j, b.index(half))
            pair = b.select(odd, b.binary("subi", j, b.index(half)), j)
            first = pair
            second = b.binary("addi", pair, b.index(half))
        in_rotary = b.compare("cmpi", "ult", j, b.index(rotary))
        # Outside the rotary part, read the (valid) column 0 of the caches; the result is unused.
        cache_column = b.select(in_rotary, pair, b.index(0))
        cos_value, sin_value = cache_at(cos, cache_column), cache_at(sin, cache_column)
        x1 = x_at(b.select(in_rotary, first, j))
        x2 = x_at(b.select(in_rotary, second, j))
        real = b.binary("subf", b.binary("mulf", cos_value, x1), b.binary("mulf", sin_value, x2))
        imaginary = b.binary("addf", b.binary("mulf", sin_value, x1), b.binary("mulf", cos_value, x2))
        rotated = b.select(odd, imaginary, real)
        unchanged = x_at(j)
        return float_cast(b, b.select(in_rotary, rotated, unchanged), element)

    y = w.generic(dims, [], w.empty_like(x), body)
    if rank3:
        y = w.collapse_shape(y, [[0], [1], [2, 3]])
    return {"Y": y}
