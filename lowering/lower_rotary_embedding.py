"""kvattn.rotary_embedding → one linalg.generic over the output, gathering what it needs.

For output element j of a head (R = rotary_embedding_dim or the head size, H = R/2), with
cos/sin read at the token's position (position_ids[b, s] into [max_pos, H] caches, else the
[B, S, H] caches directly):
  j ≥ R                      y = x[j]
  halves,      j < H         y = cos[j]·x[j] − sin[j]·x[j+H]
               H ≤ j < R     y = sin[j−H]·x[j−H] + cos[j−H]·x[j]
  interleaved, j even        y = cos[j/2]·x[j] − sin[j/2]·x[j+1]
               j odd         y = sin[j/2]·x[j−1] + cos[j/2]·x[j]
3D inputs [B, S, N·D] are expanded to [B, S, N, D] first; the arithmetic is done in f32.
"""

from __future__ import annotations

from kvattn.lowering.attention_operands import float_cast
from kvattn.lowering.dialect import KvOp
from kvattn.lowering.mlir_text import FunctionWriter, Value
from kvattn.lowering.options import LoweringOptions


def lower_rotary_embedding(op: KvOp, w: FunctionWriter, args: dict[str, Value],
                           options: LoweringOptions) -> dict[str, Value]:
    x = args["X"]
    rank3 = x.type.rank == 3
    if rank3:
        batch, length, hidden = x.type.shape
        heads = op.attr("num_heads")
        if hidden % heads:
            raise op.error(f"hidden size {hidden} is not divisible by num_heads={heads}")
        x = w.expand_shape(x, [[0], [1], [2, 3]], [batch, length, heads, hidden // heads])
        dims = ("b", "s", "n", "j")
    else:
        dims = ("b", "n", "s", "j")
    head = x.type.shape[3]
    rotary = op.attr("rotary_embedding_dim") or head
    half = rotary // 2
    cos, sin, positions = args["cos_cache"], args["sin_cache"], args.get("position_ids")
    if rotary % 2 or rotary > head or cos.type.shape[-1] != half:
        raise op.error(f"rotary_embedding_dim {rotary} needs caches with {half} columns and at most {head} "
                       f"head elements; cos_cache is {cos.type.describe()}")
    interleaved = op.attr("interleaved") == 1
    element = x.type.element

    def body(b: FunctionWriter, block: list[Value]) -> Value:
        index = {d: b.op(f"linalg.index {i} : index", "index", "i") for i, d in enumerate(dims)}
        j = index["j"]

        def const(value: int) -> Value:
            return b.op(f"arith.constant {value} : index", "index", "c")

        def x_at(column: Value) -> Value:
            coords = ", ".join(str(column if d == "j" else index[d]) for d in dims)
            return float_cast(b, b.op(f"tensor.extract {x}[{coords}] : {x.mlir_type}", element), "f32")

        def cache_at(cache: Value, column: Value) -> Value:
            if positions is not None:
                position = b.op(f"tensor.extract {positions}[{index['b']}, {index['s']}] : {positions.mlir_type}", "i64")
                row = [b.cast("index_cast", position, "index")]
            else:
                row = [index["b"], index["s"]]
            coords = ", ".join(str(v) for v in row + [column])
            return float_cast(b, b.op(f"tensor.extract {cache}[{coords}] : {cache.mlir_type}", element), "f32")

        if interleaved:
            pair = b.binary("divui", j, const(2))
            odd = b.compare("cmpi", "ne", b.binary("remui", j, const(2)), const(0))
            first = b.binary("muli", pair, const(2))  # the even element of the pair
            second = b.binary("addi", first, const(1))
        else:
            odd = b.compare("cmpi", "uge", j, const(half))
            pair = b.select(odd, b.binary("subi", j, const(half)), j)
            first = pair
            second = b.binary("addi", pair, const(half))
        in_rotary = b.compare("cmpi", "ult", j, const(rotary))
        # Outside the rotary part, read the (valid) column 0 of the caches; the result is unused.
        cache_column = b.select(in_rotary, pair, const(0))
        cos_value, sin_value = cache_at(cos, cache_column), cache_at(sin, cache_column)
        x1 = x_at(b.select(in_rotary, first, j))
        x2 = x_at(b.select(in_rotary, second, j))
        real = b.binary("subf", b.binary("mulf", cos_value, x1), b.binary("mulf", sin_value, x2))
        imaginary = b.binary("addf", b.binary("mulf", sin_value, x1), b.binary("mulf", cos_value, x2))
        rotated = b.select(odd, imaginary, real)
        unchanged = x_at(j)
        return float_cast(b, b.select(in_rotary, rotated, unchanged), element)

    y = w.generic(dims, [], w.empty(x.type), body)
    if rank3:
        y = w.collapse_shape(y, [[0], [1], [2, 3]])
    return {"Y": y}
