"""Q, K, V and the KV caches of an ONNX Attention, arranged for the attention's iteration space.

Roles name the dims of that space: b batch, h KV head, g query head within its group (ONNX query
head = h·G + g), s query position, l key position, d head size, e value head size. Each tensor
comes with the roles of its dims, so indexing maps can absorb layouts instead of transposing:
  Q  [B,Hq,S,D] (4D) or [B,S,Hq·D] (3D)   → expand_shape to [B,Hkv,G,S,D] / [B,S,Hkv,G,D]
  K  [B,Hkv,L,D] (4D) or [B,L,Hkv·D] (3D) → [B,Hkv,L,D] / expand_shape to [B,L,Hkv,D]
  past_key/past_value                     → present = insert_slice(past, K) into [B,Hkv,P+L,D]
"""

from __future__ import annotations

import copy

from kvattn.lowering.mlir_text import Dim, FunctionWriter, Value
from kvattn.lowering.rule_context import RuleContext

DIMS = ("b", "h", "g", "s", "l", "d", "e")  # the attention's iteration space
_FLOAT_WIDTH = {"bf16": 16, "f16": 16, "f32": 32, "f64": 64}


class AttentionSizes:
    """The size of each role of one attention (Attention or FlexAttention), bound once: static,
    or the run-time size of the first operand that has it (Q's batch is *the* batch; the other
    operands' sizes are checked against it at run time). Head counts and head sizes are static
    (the verifier says so otherwise); their consistency is checked by the verifier too."""

    def __init__(self, ctx: RuleContext):
        w, args = ctx.w, ctx.args
        q, k, v = (w.with_sizes(args[n]) for n in ("Q", "K", "V"))
        self.rank3 = q.rank == 3
        if self.rank3:
            self.q_heads, self.kv_heads = ctx.op.attr("q_num_heads"), ctx.op.attr("kv_num_heads")
            self.query_len, self.new_len, value_len = q.sizes[1], k.sizes[1], v.sizes[1]
            self.head_q, self.head_k = q.sizes[2] // self.q_heads, k.sizes[2] // self.kv_heads
            self.head_v = v.sizes[2] // self.kv_heads
        else:
            _, self.q_heads, self.query_len, self.head_q = q.sizes
            _, self.kv_heads, self.new_len, self.head_k = k.sizes
            _, _, value_len, self.head_v = v.sizes
        self.batch = q.sizes[0]
        for name, tensor in (("K", k), ("V", v)):
            ctx.require_equal(tensor.sizes[0], self.batch, f"{name} and Q differ in batch size")
        ctx.require_equal(value_len, self.new_len, "K and V differ in sequence length")
        past = args.get("past_key")
        self.past_len: Dim = w.dim(past, 2) if past is not None else 0
        self.total_len = w.add(self.past_len, self.new_len)
        no_keys = "has no keys (K is empty and there is no past): a softmax over no keys is undefined"
        if self.total_len == 0:
            raise ctx.error(no_keys)
        if not isinstance(self.total_len, int):
            ctx.require(w.compare("cmpi", "ugt", w.index(self.total_len), w.index(0)), no_keys)
        self.group = self.q_heads // self.kv_heads
        self.size: dict[str, Dim] = {"b": self.batch, "h": self.kv_heads, "g": self.group, "s": self.query_len,
                                     "l": self.total_len, "d": self.head_q, "e": self.head_v}

    def resized(self, **sizes: Dim) -> "AttentionSizes":
        """These sizes with some roles' sizes replaced (an attention over a slice of the queries
        or keys: s=..., l=...)."""
        sliced = copy.copy(self)
        sliced.size = {**self.size, **sizes}
        return sliced


def query_in_roles(ctx: RuleContext, sizes: AttentionSizes) -> tuple[Value, tuple[str, ...]]:
    q = ctx.args["Q"]
    if sizes.rank3:
        roles = ("b", "s", "h", "g", "d")
        return ctx.w.expand_shape(q, [[0], [1], [2, 3, 4]], [sizes.size[r] for r in roles]), roles
    roles = ("b", "h", "g", "s", "d")
    return ctx.w.expand_shape(q, [[0], [1, 2], [3], [4]], [sizes.size[r] for r in roles]), roles


def keys_or_values(ctx: RuleContext, sizes: AttentionSizes, name: str, past_name: str, present_name: str):
    """K or V in a layout the attention maps can read, and the present cache when needed."""
    w, op = ctx.w, ctx.op
    head = sizes.head_k if name == "K" else sizes.head_v
    new = ctx.args[name]
    roles = ("b", "h", "l", "d")
    if sizes.rank3:
        new = w.expand_shape(new, [[0], [1], [2, 3]], [sizes.batch, sizes.new_len, sizes.kv_heads, head])
        roles = ("b", "l", "h", "d")
    else:
        new = w.with_sizes(new)
    past = ctx.args.get(past_name)
    if past is None and (present_name not in op.spec.results or op.result(present_name) is None):
        return new, roles, None
    if sizes.rank3:
        new = w.transpose(new, [0, 2, 1, 3])
        roles = ("b", "h", "l", "d")
    if past is None:
        return new, roles, new
    ctx.require_equal(w.dim(past, 0), sizes.batch, f"{past_name} and Q differ in batch size")
    ctx.require_equal(w.dim(past, 2), sizes.past_len, "past_key and past_value differ in length")
    present = w.empty([sizes.batch, sizes.kv_heads, sizes.total_len, head], new.element)
    present = w.insert_slice(past, present, [0, 0, 0, 0])
    present = w.insert_slice(new, present, [0, 0, sizes.past_len, 0])
    return present, roles, present


def transpose_to(w: FunctionWriter, value: Value, roles, wanted) -> tuple[Value, tuple[str, ...]]:
    if tuple(roles) == tuple(wanted):
        return value, tuple(roles)
    return w.transpose(value, [roles.index(r) for r in wanted]), tuple(wanted)


def convert(w: FunctionWriter, value: Value, element: str) -> Value:
    """Elementwise float conversion of a tensor (no-op when it already has that type)."""
    if value.type.element == element:
        return value
    dims = [f"d{i}" for i in range(value.type.rank)]
    return w.generic(dims, [(value, dims)], w.empty_like(value, element),
                     lambda b, block: float_cast(b, block[0], element))


def float_cast(b: FunctionWriter, value: Value, element: str) -> Value:
    if value.type == element:
        return value
    return b.cast("extf" if _FLOAT_WIDTH[value.type] < _FLOAT_WIDTH[element] else "truncf", value, element)
