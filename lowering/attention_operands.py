"""Q, K, V and the KV caches of an ONNX Attention, arranged for the attention's iteration space.

Roles name the dims of that space: b batch, h KV head, g query head within its group (ONNX query
head = h·G + g), s query position, l key position, d head size, e value head size. Each tensor
comes with the roles of its dims, so indexing maps can absorb layouts instead of transposing:
  Q  [B,Hq,S,D] (4D) or [B,S,Hq·D] (3D)   → expand_shape to [B,Hkv,G,S,D] / [B,S,Hkv,G,D]
  K  [B,Hkv,L,D] (4D) or [B,L,Hkv·D] (3D) → [B,Hkv,L,D] / expand_shape to [B,L,Hkv,D]
  past_key/past_value                     → present = insert_slice(past, K) into [B,Hkv,P+L,D]
"""

from __future__ import annotations

from kvattn.lowering.dialect import KvOp
from kvattn.lowering.mlir_text import FunctionWriter, Value
from kvattn.lowering.tensor_types import TensorType

DIMS = ("b", "h", "g", "s", "l", "d", "e")  # the attention's iteration space
_FLOAT_WIDTH = {"bf16": 16, "f16": 16, "f32": 32, "f64": 64}


class AttentionShapes:
    """Head counts and sizes of one attention, checked against each other."""

    def __init__(self, op: KvOp, args: dict[str, Value]):
        q, k, v = (args[n].type.shape for n in ("Q", "K", "V"))
        self.rank3 = len(q) == 3
        if self.rank3:
            self.q_heads, self.kv_heads = op.attr("q_num_heads"), op.attr("kv_num_heads")
            for name, hidden, heads in (("Q", q[2], self.q_heads), ("K", k[2], self.kv_heads), ("V", v[2], self.kv_heads)):
                if heads <= 0 or hidden % heads:
                    raise op.error(f"{name} hidden size {hidden} is not divisible by its {heads} heads")
            self.query_len, self.head_q = q[1], q[2] // self.q_heads
            self.new_len, self.head_k, self.head_v = k[1], k[2] // self.kv_heads, v[2] // self.kv_heads
            value_heads, value_len = self.kv_heads, v[1]
        else:
            _, self.q_heads, self.query_len, self.head_q = q
            _, self.kv_heads, self.new_len, self.head_k = k
            _, value_heads, value_len, self.head_v = v
        self.batch = q[0]
        if k[0] != self.batch or v[0] != self.batch:
            raise op.error(f"Q, K and V have different batch sizes {q[0]}, {k[0]}, {v[0]}")
        if value_heads != self.kv_heads or value_len != self.new_len:
            raise op.error(f"K and V disagree on heads or sequence length: K {list(k)}, V {list(v)}")
        if self.head_q != self.head_k:
            raise op.error(f"Q head size {self.head_q} differs from K head size {self.head_k}")
        if self.q_heads % self.kv_heads:
            raise op.error(f"{self.q_heads} query heads are not a multiple of {self.kv_heads} key/value heads")
        past = args.get("past_key")
        self.past_len = past.type.shape[2] if past is not None else 0
        self.total_len = self.past_len + self.new_len
        self.group = self.q_heads // self.kv_heads
        self.size = {"b": self.batch, "h": self.kv_heads, "g": self.group, "s": self.query_len,
                     "l": self.total_len, "d": self.head_q, "e": self.head_v}


def query_in_roles(w: FunctionWriter, q: Value, shapes: AttentionShapes) -> tuple[Value, tuple[str, ...]]:
    if shapes.rank3:
        roles = ("b", "s", "h", "g", "d")
        return w.expand_shape(q, [[0], [1], [2, 3, 4]], [shapes.size[r] for r in roles]), roles
    roles = ("b", "h", "g", "s", "d")
    return w.expand_shape(q, [[0], [1, 2], [3], [4]], [shapes.size[r] for r in roles]), roles


def keys_or_values(w, op: KvOp, args, name, past_name, present_name, head, shapes: AttentionShapes):
    """K or V in a layout the attention maps can read, and the present cache when needed."""
    new = args[name]
    roles = ("b", "h", "l", "d")
    if shapes.rank3:
        new = w.expand_shape(new, [[0], [1], [2, 3]], [shapes.batch, shapes.new_len, shapes.kv_heads, head])
        roles = ("b", "l", "h", "d")
    past = args.get(past_name)
    if past is None and (present_name not in op.spec.results or op.result(present_name) is None):
        return new, roles, None
    expected = (shapes.batch, shapes.kv_heads, shapes.past_len, head)
    if past is not None and past.type.shape != expected:
        raise op.error(f"{past_name} has shape {list(past.type.shape)}, expected {list(expected)}")
    if shapes.rank3:
        new = w.transpose(new, [0, 2, 1, 3])
        roles = ("b", "h", "l", "d")
    if past is None:
        return new, roles, new
    present = w.empty(TensorType((shapes.batch, shapes.kv_heads, shapes.total_len, head), new.type.element))
    present = w.insert_slice(past, present, [0, 0, 0, 0])
    present = w.insert_slice(new, present, [0, 0, shapes.past_len, 0])
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
    return w.generic(dims, [(value, dims)], w.empty(value.type.with_element(element)),
                     lambda b, block: float_cast(b, block[0], element))


def float_cast(b: FunctionWriter, value: Value, element: str) -> Value:
    if value.type == element:
        return value
    return b.cast("extf" if _FLOAT_WIDTH[value.type] < _FLOAT_WIDTH[element] else "truncf", value, element)
