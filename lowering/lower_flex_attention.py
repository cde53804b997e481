"""kvattn.flex_attention (ai.onnx.preview FlexAttention) → the fused or the unfused attention route.

  no prob_mod, score_mod absent or position-free (only scalar constants)
      → fused: one iree_linalg_ext.attention with the score_mod in its score region
  otherwise (a score_mod built on positions, such as a causal or relative-position mod, or any
  prob_mod) → unfused: scores materialized, the mods applied elementwise with their folded
      position tensors, softmax, prob_mod, P·V.
GQA reads each KV head once (see attention_operands); the scale defaults to 1/sqrt(head size).
"""

from __future__ import annotations

import math

from kvattn.lowering.attention_operands import AttentionSizes, convert, keys_or_values, query_in_roles
from kvattn.lowering.attention_routes import Operands, attention, unfused_attention
from kvattn.lowering.flex_mods import ModProgram
from kvattn.lowering.mlir_text import Value, known
from kvattn.lowering.rule_context import RuleContext


def lower_flex_attention(ctx: RuleContext) -> dict[str, Value]:
    op, w, options = ctx.op, ctx.w, ctx.options
    sizes = AttentionSizes(ctx)
    element = ctx.args["Q"].element
    q, q_roles = query_in_roles(ctx, sizes)
    key, key_roles, _ = keys_or_values(ctx, sizes, "K", "past_key", "present_key")
    value, value_roles, _ = keys_or_values(ctx, sizes, "V", "past_value", "present_value")
    value_roles = tuple("e" if r == "d" else r for r in value_roles)
    out_roles = ("b", "h", "g", "s", "e")
    scale = op.attr("scale")
    operands = Operands(q, q_roles, key, key_roles, value, value_roles, out_roles,
                        1.0 / math.sqrt(sizes.head_q) if scale is None else scale, sizes)
    static = dict(zip(sizes.size, known(sizes.size.values())))
    score_shape = (static["b"], sizes.q_heads, static["s"], static["l"])
    programs = {name: ModProgram(block, score_shape, "FlexAttention", op.node, name)
                for name in ("score_mod", "prob_mod") if (block := op.region(name)) is not None}
    score_program, prob_program = programs.get("score_mod"), programs.get("prob_mod")
    if prob_program is None and (score_program is None or score_program.position_free):
        if score_program:
            w.note("score_mod reads only the score: in the fused op's region, or on the materialized scores")
        compute = "f32" if options.attention_in_f32 else element
        score_mod = score_program.mod(w, sizes) if score_program else None
        out = attention(w, operands, None, compute, score_mod, options)
    else:
        w.note("unfused: " + ("prob_mod needs the probabilities materialized" if prob_program
                              else "score_mod reads positions"))
        out = unfused_attention(
            w, operands, None,
            score_program.mod(w, sizes) if score_program else None,
            prob_program.mod(w, sizes) if prob_program else None)["Y"]
    out = convert(w, out, element)
    return {"Y": w.collapse_shape(out, [[0], [1, 2], [3], [4]])}
