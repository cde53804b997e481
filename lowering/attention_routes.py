"""The two ways kvattn lowers an attention, shared by Attention and FlexAttention.

fused    Y = iree_linalg_ext.attention(Q, K, V, scale, bias) { score mod in the region }, then
         the fully-masked-row guard. The region receives x = s·log2(e), s = scale·Q·Kᵀ (checked
         on llvm-cpu and on the SPIR-V decomposition), so a score mod f is written
         log2(e)·f(x/log2(e)); IREE adds the mask after the region.
unfused  explicit f32 linalg ops: S = scale·Q·Kᵀ → score mod → + bias → softmax (rows that are
         fully masked give 0) → prob mod → P·V. Taken when scores must be materialized
         (qk_matmul_output), or a mod reads tensors or positions, or there is a prob mod.
A mod is an elementwise function of the score (or probability), optionally reading tensors
indexed by the score's roles.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from kvattn.lowering.attention_bias import bias_row_max, zero_fully_masked_rows
from kvattn.lowering.attention_operands import DIMS, AttentionShapes, convert, float_cast
from kvattn.lowering.attention_tiles import cpu_compilation_info
from kvattn.lowering.mlir_text import FunctionWriter, Value, affine_map
from kvattn.lowering.options import LoweringOptions
from kvattn.lowering.tensor_types import TensorType

LOG2E = 1.0 / math.log(2.0)
SCORE_ROLES = ("b", "h", "g", "s", "l")


@dataclasses.dataclass(frozen=True)
class Mod:
    """y = apply(b, x, extra) elementwise over scores [B,Hkv,G,S,T]; `inputs` are tensors read
    at the same position (with their map results over SCORE_ROLES), passed as `extra`."""

    apply: Callable[[FunctionWriter, Value, list[Value]], Value]
    inputs: Sequence[tuple[Value, Sequence[str]]] = ()


@dataclasses.dataclass(frozen=True)
class Operands:
    """Q/K/V with the roles of their dims, the output roles, the scale and the shapes."""

    q: Value
    q_roles: tuple[str, ...]
    key: Value
    key_roles: tuple[str, ...]
    value: Value
    value_roles: tuple[str, ...]
    out_roles: tuple[str, ...]
    scale: float
    shapes: AttentionShapes


def fused_attention(w: FunctionWriter, o: Operands, bias, compute: str, score_mod: Mod | None,
                    options: LoweringOptions, valid_keys: Value | None = None) -> Value:
    """One iree_linalg_ext.attention; `score_mod` must read no tensors. With `valid_keys` (an
    index no larger than the key count, beyond which the bias masks every key) the attention
    reads only that many keys. On llvm-cpu the op carries its per-shape tile sizes."""
    assert score_mod is None or not score_mod.inputs
    q, key, value = (convert(w, x, compute) for x in (o.q, o.key, o.value))
    attention_bias = bias
    sizes = dict(o.shapes.size)
    if valid_keys is not None:
        key = w.leading_slice(key, o.key_roles.index("l"), valid_keys)
        value = w.leading_slice(value, o.value_roles.index("l"), valid_keys)
        attention_bias = (w.leading_slice(bias[0], bias[1].index("l"), valid_keys), bias[1])
        sizes["l"] = None
    out_type = TensorType(tuple(o.shapes.size[r] for r in o.out_roles), compute)
    scale = w.constant(o.scale, compute)
    operands = [(q, o.q_roles), (key, o.key_roles), (value, o.value_roles)]
    maps = [affine_map(DIMS, roles) for _, roles in operands] + [affine_map(DIMS, [])]
    ins = [str(v) for v, _ in operands] + [str(scale)]
    types = [v.mlir_type for v, _ in operands] + [compute]
    if attention_bias is not None:
        maps.append(affine_map(DIMS, attention_bias[1]))
        ins.append(str(attention_bias[0]))
        types.append(attention_bias[0].mlir_type)
    maps.append(affine_map(DIMS, o.out_roles))
    operand_roles = [o.q_roles, o.key_roles, o.value_roles] + ([attention_bias[1]] if attention_bias else []) + [o.out_roles]
    config = cpu_compilation_info(sizes, operand_roles, compute) if options.cpu_attention_tiles else None
    attributes = f" {{compilation_info = {config}}}" if config else ""
    init = w.empty(out_type)
    attention = w.fresh("attn")
    w.line(f"{attention} = iree_linalg_ext.attention <indexing_maps = [{', '.join(maps)}]>{attributes} "
           f"ins({', '.join(ins)} : {', '.join(types)}) outs({init} : {out_type.mlir}) {{")
    w.line("^bb0(%score: f32):")
    region = w.nested()
    score = Value("%score", "f32")
    if score_mod is not None:
        log2e = region.constant(LOG2E, "f32")
        natural = region.binary("divf", score, log2e)
        score = region.binary("mulf", score_mod.apply(region, natural, []), log2e)
    w.absorb(region)
    w.line(f"  iree_linalg_ext.yield {score} : f32")
    w.line(f"}} -> {out_type.mlir}")
    out = Value(attention, out_type)
    if bias is not None:
        out = zero_fully_masked_rows(w, out, o.out_roles, *bias)
    return out


def unfused_attention(w: FunctionWriter, o: Operands, bias, score_mod: Mod | None = None,
                      prob_mod: Mod | None = None) -> dict[str, Value]:
    """The attention as explicit f32 linalg ops. Returns the output ("Y", in `o.out_roles`) and
    the intermediates as [B,Hkv,G,S,T]: "scores" (after the score mod), "logits" (+ bias) and
    "probabilities" (after the prob mod)."""
    shapes = o.shapes
    score_type = TensorType(tuple(shapes.size[r] for r in SCORE_ROLES), "f32")

    def multiply_add(b: FunctionWriter, block: list[Value]) -> Value:
        product = b.binary("mulf", float_cast(b, block[0], "f32"), float_cast(b, block[1], "f32"))
        return b.binary("addf", block[2], product)

    zeros = w.fill(w.constant(0.0, "f32"), score_type)
    dot = w.generic(SCORE_ROLES + ("d",), [(o.q, o.q_roles), (o.key, o.key_roles)], zeros, multiply_add,
                    reduction_dims=("d",))
    scores = _elementwise(w, dot, score_mod, scale=o.scale)
    logits = scores
    if bias is not None:
        logits = w.generic(SCORE_ROLES, [(scores, SCORE_ROLES), (bias[0], bias[1])], w.empty(score_type),
                           lambda b, block: b.binary("addf", block[0], block[1]))
    probabilities = _softmax(w, logits, SCORE_ROLES, bias)
    if prob_mod is not None:
        probabilities = _elementwise(w, probabilities, prob_mod)
    output_type = TensorType(tuple(shapes.size[r] for r in o.out_roles), "f32")
    output = w.generic(o.out_roles + ("l",), [(probabilities, SCORE_ROLES), (o.value, o.value_roles)],
                       w.fill(w.constant(0.0, "f32"), output_type), multiply_add, reduction_dims=("l",))
    return {"Y": output, "scores": scores, "logits": logits, "probabilities": probabilities}


def _elementwise(w: FunctionWriter, x: Value, mod: Mod | None, scale: float = 1.0) -> Value:
    inputs = [(x, SCORE_ROLES)] + list(mod.inputs if mod else [])

    def body(b: FunctionWriter, block: list[Value]) -> Value:
        value = block[0] if scale == 1.0 else b.binary("mulf", block[0], b.constant(scale, "f32"))
        return mod.apply(b, value, block[1:len(inputs)]) if mod else value

    return w.generic(SCORE_ROLES, inputs, w.empty(x.type), body)


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
