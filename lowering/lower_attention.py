"""kvattn.attention → iree_linalg_ext.attention (fused), or an unfused linalg route when the
scores themselves must be materialized.

Fused route (one dispatch for the attention; grouped-query heads without repeating K/V):
  Y = iree_linalg_ext.attention(Q, K, V, scale, bias) { softcap in the score region }
  with Q/K/V arranged by `attention_operands` and the bias and fully-masked-row guard built by
  `attention_bias`. The region receives x = s·log2(e), s = scale·Q·Kᵀ (checked on llvm-cpu and
  on the SPIR-V decomposition), so softcap c·tanh(s/c) is written as c'·tanh(x/c'), c' = c·log2(e);
  IREE adds the mask after the region, as ONNX applies softcap before the mask.
Unfused route (taken when the qk_matmul_output output is used), all in f32:
  S = scale·Q·Kᵀ → softcap → + bias → softmax (fully masked rows 0) → P·V, each a linalg.generic;
  qk_matmul_output is S after softcap (modes 0, 1), S + bias (mode 2) or P (mode 3).
Target choices (LoweringOptions): transpose 3D inputs to [B,H,S,D] instead of absorbing their
layout in the maps; compute fp16/bf16 attention in f32.
"""

from __future__ import annotations

import math

from kvattn.lowering.attention_bias import bias_row_max, combined_bias, zero_fully_masked_rows
from kvattn.lowering.attention_operands import (DIMS, AttentionShapes, convert, float_cast, keys_or_values,
                                                query_in_roles, transpose_to)
from kvattn.lowering.dialect import KvOp
from kvattn.lowering.diagnostics import UnsupportedError
from kvattn.lowering.mlir_text import FunctionWriter, Value, affine_map
from kvattn.lowering.options import LoweringOptions
from kvattn.lowering.tensor_types import TensorType

LOG2E = 1.0 / math.log(2.0)


def lower_attention(op: KvOp, w: FunctionWriter, args: dict[str, Value],
                    options: LoweringOptions) -> dict[str, Value]:
    _check_static(op)
    shapes = AttentionShapes(op, args)
    element = args["Q"].type.element
    q, q_roles = query_in_roles(w, args["Q"], shapes)
    key, key_roles, present_key = keys_or_values(w, op, args, "K", "past_key", "present_key", shapes.head_k, shapes)
    value, value_roles, present_value = keys_or_values(
        w, op, args, "V", "past_value", "present_value", shapes.head_v, shapes)
    if not options.attention_layout_in_maps:
        q, q_roles = transpose_to(w, q, q_roles, ("b", "h", "g", "s", "d"))
        key, key_roles = transpose_to(w, key, key_roles, ("b", "h", "l", "d"))
        value, value_roles = transpose_to(w, value, value_roles, ("b", "h", "l", "d"))
    value_roles = tuple("e" if r == "d" else r for r in value_roles)
    out_roles = tuple("e" if r == "d" else r for r in q_roles)
    scale = op.attr("scale")
    scale = 1.0 / math.sqrt(shapes.head_q) if scale is None else scale
    operands = _Operands(q, q_roles, key, key_roles, value, value_roles, out_roles, scale, op.attr("softcap"), shapes)

    results = {}
    if op.result("qk_matmul_output") is not None:
        w.note("unfused: the qk_matmul_output output needs the attention scores materialized")
        bias = combined_bias(w, op, args, shapes, "f32")
        out, qk = _unfused(w, operands, bias, op.attr("qk_matmul_output_mode"))
        qk = convert(w, qk, element)
        results["qk_matmul_output"] = w.collapse_shape(qk, [[0], [1, 2], [3], [4]])
    else:
        w.note("fused: one iree_linalg_ext.attention")
        compute = "f32" if options.attention_in_f32 else element
        bias = combined_bias(w, op, args, shapes, compute)
        out = _fused(w, operands, bias, compute)
    out = convert(w, out, element)
    onnx_roles = ("b", "s", "h", "g", "e") if shapes.rank3 else ("b", "h", "g", "s", "e")
    out, _ = transpose_to(w, out, out_roles, onnx_roles)
    groups = [[0], [1], [2, 3, 4]] if shapes.rank3 else [[0], [1, 2], [3], [4]]
    results["Y"] = w.collapse_shape(out, groups)
    if op.result("present_key") is not None:
        results["present_key"] = present_key
    if op.result("present_value") is not None:
        results["present_value"] = present_value
    return results


class _Operands:
    """Q/K/V with their roles, the output roles, and the scalar attributes of one attention."""

    def __init__(self, q, q_roles, key, key_roles, value, value_roles, out_roles, scale, softcap, shapes):
        self.q, self.q_roles = q, q_roles
        self.key, self.key_roles = key, key_roles
        self.value, self.value_roles = value, value_roles
        self.out_roles = out_roles
        self.scale, self.softcap, self.shapes = scale, softcap, shapes


def _fused(w: FunctionWriter, o: _Operands, bias, compute: str) -> Value:
    q, key, value = (convert(w, x, compute) for x in (o.q, o.key, o.value))
    out_type = TensorType(tuple(o.shapes.size[r] for r in o.out_roles), compute)
    scale = w.constant(o.scale, compute)
    operands = [(q, o.q_roles), (key, o.key_roles), (value, o.value_roles)]
    maps = [affine_map(DIMS, roles) for _, roles in operands] + [affine_map(DIMS, [])]
    ins = [str(v) for v, _ in operands] + [str(scale)]
    types = [v.mlir_type for v, _ in operands] + [compute]
    if bias is not None:
        maps.append(affine_map(DIMS, bias[1]))
        ins.append(str(bias[0]))
        types.append(bias[0].mlir_type)
    maps.append(affine_map(DIMS, o.out_roles))
    init = w.empty(out_type)
    attention = w.fresh("attn")
    w.line(f"{attention} = iree_linalg_ext.attention <indexing_maps = [{', '.join(maps)}]> "
           f"ins({', '.join(ins)} : {', '.join(types)}) outs({init} : {out_type.mlir}) {{")
    w.line("^bb0(%score: f32):")
    region = w.nested()
    score = Value("%score", "f32")
    if o.softcap:
        # c·tanh(s/c) in the region's log2 domain: x = s·log2(e).
        score = _softcap(region, score, o.softcap * LOG2E)
    w.absorb(region)
    w.line(f"  iree_linalg_ext.yield {score} : f32")
    w.line(f"}} -> {out_type.mlir}")
    out = Value(attention, out_type)
    if bias is not None:
        out = zero_fully_masked_rows(w, out, o.out_roles, *bias)
    return out


def _softcap(b: FunctionWriter, score: Value, cap: float) -> Value:
    cap_value = b.constant(cap, score.type)
    capped = b.op(f"math.tanh {b.binary('divf', score, cap_value)} : {score.type}", score.type)
    return b.binary("mulf", capped, cap_value)


def _unfused(w: FunctionWriter, o: _Operands, bias, mode: int) -> tuple[Value, Value]:
    """The attention as explicit f32 linalg ops; returns (output, qk_matmul_output) with the
    output in `o.out_roles` and qk_matmul_output as [B, Hkv, G, S, T]."""
    shapes = o.shapes
    score_roles = ("b", "h", "g", "s", "l")
    score_type = TensorType(tuple(shapes.size[r] for r in score_roles), "f32")

    def multiply_add(b: FunctionWriter, block: list[Value]) -> Value:
        product = b.binary("mulf", float_cast(b, block[0], "f32"), float_cast(b, block[1], "f32"))
        return b.binary("addf", block[2], product)

    zeros = w.fill(w.constant(0.0, "f32"), score_type)
    dot = w.generic(score_roles + ("d",), [(o.q, o.q_roles), (o.key, o.key_roles)], zeros, multiply_add,
                    reduction_dims=("d",))

    def scale_and_cap(b: FunctionWriter, block: list[Value]) -> Value:
        scaled = b.binary("mulf", block[0], b.constant(o.scale, "f32"))
        return _softcap(b, scaled, o.softcap) if o.softcap else scaled

    scores = w.generic(score_roles, [(dot, score_roles)], w.empty(score_type), scale_and_cap)
    logits = scores
    if bias is not None:
        logits = w.generic(score_roles, [(scores, score_roles), (bias[0], bias[1])], w.empty(score_type),
                           lambda b, block: b.binary("addf", block[0], block[1]))
    probabilities = _softmax(w, logits, score_roles, bias)
    output_type = TensorType(tuple(shapes.size[r] for r in o.out_roles), "f32")
    output = w.generic(o.out_roles + ("l",), [(probabilities, score_roles), (o.value, o.value_roles)],
                       w.fill(w.constant(0.0, "f32"), output_type), multiply_add, reduction_dims=("l",))
    return output, {0: scores, 1: scores, 2: logits, 3: probabilities}[mode]


def _softmax(w: FunctionWriter, logits: Value, roles, bias) -> Value:
    """softmax over keys; rows whose bias is all -inf (or all -inf logits) give zeros."""
    row_roles = [r for r in roles if r != "l"]
    row_type = TensorType(tuple(logits.type.shape[roles.index(r)] for r in row_roles), "f32")
    lowest = w.fill(w.constant(-math.inf, "f32"), row_type)
    row_max = w.generic(roles, [(logits, roles)], lowest, lambda b, block: b.binary("maximumf", block[0], block[1]),
                        reduction_dims=("l",))

    def exp_shifted(b: FunctionWriter, block: list[Value]) -> Value:
        neg_inf = b.constant(-math.inf, "f32")
        safe_max = b.select(b.compare("cmpf", "oeq", block[1], neg_inf), b.constant(0.0, "f32"), block[1])
        return b.op(f"math.exp {b.binary('subf', block[0], safe_max)} : f32", "f32")

    exps = w.generic(roles, [(logits, roles), (row_max, row_roles)], w.empty(logits.type), exp_shifted)
    sums = w.generic(roles, [(exps, roles)], w.fill(w.constant(0.0, "f32"), row_type),
                     lambda b, block: b.binary("addf", block[0], block[1]), reduction_dims=("l",))
    inputs = [(exps, roles), (sums, row_roles)]
    if bias is not None:
        inputs.append(bias_row_max(w, *bias))

    def normalize(b: FunctionWriter, block: list[Value]) -> Value:
        zero = b.constant(0.0, "f32")
        total = b.select(b.compare("cmpf", "oeq", block[1], zero), b.constant(1.0, "f32"), block[1])
        probability = b.binary("divf", block[0], total)
        if bias is None:
            return probability
        fully_masked = b.compare("cmpf", "oeq", block[2], b.constant(-math.inf, "f32"))
        return b.select(fully_masked, zero, probability)

    return w.generic(roles, inputs, w.empty(logits.type), normalize)


def _check_static(op: KvOp) -> None:
    for name in ("Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"):
        operand = op.operand_type(name)
        if operand is not None and not operand.is_static:
            raise UnsupportedError("Attention", op.node, f"input {name} with dynamic shape {operand.describe()}")
