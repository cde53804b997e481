"""kvattn.attention → one iree_linalg_ext.attention, grouped-query heads without repeating K/V.

Rewrite (roles: b batch, h kv head, g query head within its group, s query position,
l key position, d head size, e value head size; ONNX query head = h·G + g):
  Q  [B,Hq,S,D] (4D) or [B,S,Hq·D] (3D)   → expand_shape to [B,Hkv,G,S,D] / [B,S,Hkv,G,D]
  K  [B,Hkv,L,D] (4D) or [B,L,Hkv·D] (3D) → expand_shape to [B,L,Hkv,D]; the maps absorb the
                                            layout, so K/V are never transposed or repeated
  past_key/past_value                     → present = insert_slice(past, K) into [B,Hkv,P+L,D]
  mask  = causal (bottom-right: key j ≤ i + offset), left/right windows, nonpad_kv_seqlen and
          attn_mask (bool or additive float, broadcast, padded with -inf when shorter than the
          keys), combined by one linalg.generic into an additive bias [B?,Hkv?,G?,S,T] holding
          only the dims it varies in; offset = past length | nonpad_kv_seqlen[b] - S | 0
  Y     = iree_linalg_ext.attention(Q, K, V, scale, bias), rows whose bias is all -inf set to 0
          (IREE would give NaN; ONNX wants zeros), collapsed back to ONNX's output layout.
Target choices (LoweringOptions): transpose 3D inputs to [B,H,S,D] instead of absorbing their
layout in the maps; compute fp16/bf16 attention in f32.
Not lowered yet (clear error): softcap, the qk_matmul_output output.
"""

from __future__ import annotations

import math

from kvattn.lowering.dialect import KvOp
from kvattn.lowering.diagnostics import UnsupportedError
from kvattn.lowering.mlir_text import FunctionWriter, Value, affine_map
from kvattn.lowering.options import LoweringOptions
from kvattn.lowering.tensor_types import TensorType

DIMS = ("b", "h", "g", "s", "l", "d", "e")  # the attention's iteration space


def lower_attention(op: KvOp, w: FunctionWriter, args: dict[str, Value],
                    options: LoweringOptions) -> dict[str, Value]:
    _check_supported(op)
    shapes = _Shapes(op, args)
    element = args["Q"].type.element
    q, q_roles = _query(w, args["Q"], shapes)
    key, key_roles, present_key = _keys_or_values(w, op, args, "K", "past_key", "present_key", shapes.head_k, shapes)
    value, value_roles, present_value = _keys_or_values(
        w, op, args, "V", "past_value", "present_value", shapes.head_v, shapes)
    if not options.attention_layout_in_maps:
        q, q_roles = _transpose_to(w, q, q_roles, ("b", "h", "g", "s", "d"))
        key, key_roles = _transpose_to(w, key, key_roles, ("b", "h", "l", "d"))
        value, value_roles = _transpose_to(w, value, value_roles, ("b", "h", "l", "d"))
    value_roles = tuple("e" if r == "d" else r for r in value_roles)
    compute = "f32" if options.attention_in_f32 else element
    q, key, value = (_convert(w, x, compute) for x in (q, key, value))

    out_roles = tuple("e" if r == "d" else r for r in q_roles)
    out_type = TensorType(tuple(shapes.size[r] for r in out_roles), compute)
    scale = op.attr("scale")
    scale = w.constant(1.0 / math.sqrt(shapes.head_q) if scale is None else scale, compute)

    bias = _bias(w, op, args, shapes, compute)
    operands = [(q, q_roles), (key, key_roles), (value, value_roles)]
    maps = [affine_map(DIMS, roles) for _, roles in operands] + [affine_map(DIMS, [])]
    ins = [str(v) for v, _ in operands] + [str(scale)]
    types = [v.mlir_type for v, _ in operands] + [compute]
    if bias is not None:
        maps.append(affine_map(DIMS, bias[1]))
        ins.append(str(bias[0]))
        types.append(bias[0].mlir_type)
    maps.append(affine_map(DIMS, out_roles))
    init = w.empty(out_type)
    attention = w.fresh("attn")
    w.line(f"{attention} = iree_linalg_ext.attention <indexing_maps = [{', '.join(maps)}]> "
           f"ins({', '.join(ins)} : {', '.join(types)}) outs({init} : {out_type.mlir}) {{")
    w.line("^bb0(%score: f32):")
    w.line("  iree_linalg_ext.yield %score : f32")
    w.line(f"}} -> {out_type.mlir}")
    out = Value(attention, out_type)
    if bias is not None:
        out = _zero_fully_masked_rows(w, out, out_roles, *bias)
    out = _convert(w, out, element)
    onnx_roles = ("b", "s", "h", "g", "e") if shapes.rank3 else ("b", "h", "g", "s", "e")
    out, _ = _transpose_to(w, out, out_roles, onnx_roles)
    groups = [[0], [1], [2, 3, 4]] if shapes.rank3 else [[0], [1, 2], [3], [4]]
    results = {"Y": w.collapse_shape(out, groups)}
    if op.result("present_key") is not None:
        results["present_key"] = present_key
    if op.result("present_value") is not None:
        results["present_value"] = present_value
    return results


def _transpose_to(w: FunctionWriter, value: Value, roles, wanted) -> tuple[Value, tuple[str, ...]]:
    if tuple(roles) == tuple(wanted):
        return value, tuple(roles)
    return w.transpose(value, [roles.index(r) for r in wanted]), tuple(wanted)


def _convert(w: FunctionWriter, value: Value, element: str) -> Value:
    """Elementwise float conversion of a tensor (no-op when it already has that type)."""
    if value.type.element == element:
        return value
    dims = [f"d{i}" for i in range(value.type.rank)]
    return w.generic(dims, [(value, dims)], w.empty(value.type.with_element(element)),
                     lambda b, block: _float_cast(b, block[0], element))


def _check_supported(op: KvOp) -> None:
    if op.attr("softcap"):
        raise UnsupportedError("Attention", op.node, f"attribute softcap={op.attr('softcap')}")
    if op.result("qk_matmul_output") is not None:
        raise UnsupportedError("Attention", op.node,
                               f"output qk_matmul_output (qk_matmul_output_mode={op.attr('qk_matmul_output_mode')})")
    for name in ("Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"):
        operand = op.operand_type(name)
        if operand is not None and not operand.is_static:
            raise UnsupportedError("Attention", op.node, f"input {name} with dynamic shape {operand.describe()}")


class _Shapes:
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


def _query(w: FunctionWriter, q: Value, shapes: _Shapes) -> tuple[Value, tuple[str, ...]]:
    if shapes.rank3:
        roles = ("b", "s", "h", "g", "d")
        return w.expand_shape(q, [[0], [1], [2, 3, 4]], [shapes.size[r] for r in roles]), roles
    roles = ("b", "h", "g", "s", "d")
    return w.expand_shape(q, [[0], [1, 2], [3], [4]], [shapes.size[r] for r in roles]), roles


def _keys_or_values(w, op: KvOp, args, name, past_name, present_name, head, shapes: _Shapes):
    """K or V in a layout the attention maps can read, and the present cache when needed."""
    new = args[name]
    roles = ("b", "h", "l", "d")
    if shapes.rank3:
        new = w.expand_shape(new, [[0], [1], [2, 3]], [shapes.batch, shapes.new_len, shapes.kv_heads, head])
        roles = ("b", "l", "h", "d")
    past = args.get(past_name)
    if past is None and op.result(present_name) is None:
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


def _bias(w: FunctionWriter, op: KvOp, args, shapes: _Shapes, element: str):
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
                additive = _float_cast(b, block[0], "f32")
        query = b.loop_index(roles.index("s"))
        key = b.loop_index(roles.index("l"))
        if nonpad is not None:
            length = block[-2]
            allowed = b.binary("andi", allowed, b.compare("cmpi", "slt", key, length))
            offset = b.binary("subi", length, b.constant(shapes.query_len, "i64"))
        else:
            offset = b.constant(shapes.past_len, "i64")
        frontier = b.binary("addi", query, offset)  # the query's absolute position
        if causal:
            allowed = b.binary("andi", allowed, b.compare("cmpi", "sle", key, frontier))
        if left >= 0:
            lowest = b.binary("subi", frontier, b.constant(left, "i64"))
            allowed = b.binary("andi", allowed, b.compare("cmpi", "sge", key, lowest))
        if right >= 0:
            highest = b.binary("addi", frontier, b.constant(right, "i64"))
            allowed = b.binary("andi", allowed, b.compare("cmpi", "sle", key, highest))
        masked = b.select(allowed, additive, b.constant(-math.inf, "f32"))
        return _float_cast(b, masked, element)

    bias = w.generic(roles, inputs, w.empty(bias_type), body)
    return bias, roles


def _broadcast_mask(w: FunctionWriter, op: KvOp, mask: Value, shapes: _Shapes):
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


_FLOAT_WIDTH = {"bf16": 16, "f16": 16, "f32": 32, "f64": 64}


def _float_cast(b: FunctionWriter, value: Value, element: str) -> Value:
    if value.type == element:
        return value
    return b.cast("extf" if _FLOAT_WIDTH[value.type] < _FLOAT_WIDTH[element] else "truncf", value, element)


def _zero_fully_masked_rows(w: FunctionWriter, out: Value, out_roles, bias: Value, bias_roles) -> Value:
    row_roles = [r for r in bias_roles if r != "l"]
    element = bias.type.element
    row_type = TensorType(tuple(bias.type.shape[bias_roles.index(r)] for r in row_roles), element)
    lowest = w.fill(w.constant(-math.inf, element), row_type)
    row_max = w.generic(bias_roles, [(bias, bias_roles)], lowest,
                        lambda b, block: b.binary("maximumf", block[0], block[1]), reduction_dims=("l",))

    def guard(b: FunctionWriter, block: list[Value]) -> Value:
        fully_masked = b.compare("cmpf", "oeq", block[1], b.constant(-math.inf, element))
        return b.select(fully_masked, b.constant(0.0, out.type.element), block[0])

    return w.generic(out_roles, [(out, out_roles), (row_max, row_roles)], w.empty(out.type), guard)
