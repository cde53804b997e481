"""kvattn.attention → the fused route (one iree_linalg_ext.attention; grouped-query heads without
repeating K/V; softcap c·tanh(s/c) as the score mod in its region, before the mask as ONNX
wants), or the unfused route when the qk_matmul_output output is used: S after softcap (modes
0, 1), S + bias (mode 2) or the probabilities (mode 3); and for fp16/bf16 inputs without
softmax_precision=FLOAT, whose softmax ONNX computes in that type: the unfused route rounds
each step as the reference does (models that set softmax_precision=FLOAT stay fused).
Routes: `attention_routes`; Q/K/V and caches: `attention_operands`; the combined mask and the
fully-masked-row guard: `attention_bias`.
Target choices (LoweringOptions): transpose 3D inputs to [B,H,S,D] instead of absorbing their
layout in the maps; compute fp16/bf16 attention in f32. A user choice: round an f32 attention's
Q/K/V to fp16/bf16 for its matmuls (--attention-precision; fused route only).
"""

from __future__ import annotations

import dataclasses
import math

import onnx
from iree.compiler import ir

from kvattn.lowering.attention_bias import combined_bias, lift_huge_rows, longest_valid_length
from kvattn.lowering.attention_operands import AttentionSizes, convert, keys_or_values, query_in_roles, transpose_to
from kvattn.lowering.attention_routes import Mod, Operands, matmul_element, unfused_attention
from kvattn.lowering.causal_blocks import attention_in_blocks, in_blocks
from kvattn.lowering.attention_tiles import TILED_ELEMENTS
from kvattn.lowering import dialect, tensor_types
from kvattn.lowering.dialect import KvOp
from kvattn.lowering.mlir_text import FunctionWriter, Value
from kvattn.lowering.quantization import Dequantization, dequantize, quantize
from kvattn.lowering.rule_context import RuleContext


def lower_attention(ctx: RuleContext) -> dict[str, Value]:
    op, options = ctx.op, ctx.options
    element = dialect.float_type(op, "Q")
    precision = _reference_precision(op, element)
    fused = op.result("qk_matmul_output") is None and not precision
    tiled = fused and options.cpu_attention_tiles
    if tiled:  # the tiles must meet the op as written
        ctx = ctx.behind_barrier()
    ctx, dequantization = _dequantized(ctx)
    w, args = ctx.w, ctx.args
    sizes = AttentionSizes(ctx)
    q, q_roles = query_in_roles(ctx, sizes)
    key, key_roles, present_key = keys_or_values(ctx, sizes, "K", "past_key", "present_key")
    value, value_roles, present_value = keys_or_values(ctx, sizes, "V", "past_value", "present_value")
    if not options.attention_layout_in_maps:
        q, q_roles = transpose_to(w, q, q_roles, ("b", "h", "g", "s", "d"))
        key, key_roles = transpose_to(w, key, key_roles, ("b", "h", "l", "d"))
        value, value_roles = transpose_to(w, value, value_roles, ("b", "h", "l", "d"))
    value_roles = tuple("e" if r == "d" else r for r in value_roles)
    out_roles = tuple("e" if r == "d" else r for r in q_roles)
    scale = op.attr("scale")
    scale = 1.0 / math.sqrt(sizes.head_q) if scale is None else scale
    operands = Operands(q, q_roles, key, key_roles, value, value_roles, out_roles, scale, sizes,
                        dequantized=any(f"{name}_scale" in args for name in ("Q", "K", "V")),
                        key_dequantization=dequantization.get("K"), value_dequantization=dequantization.get("V"))
    cap = op.attr("softcap")
    softcap = Mod(lambda b, x, extra: _softcap(b, x, cap)) if cap > 0 else None  # ONNX ignores softcap <= 0 (and NaN)

    results = {}
    if not fused:
        # The reference's softcap promotes to f32 (its attribute is a float32 scalar); an
        # explicit softmax_precision rounds the logits back.
        softmax_precision = precision or "f32"
        requested = op.attr("softmax_precision")
        if (softcap and requested is None) or requested not in (None, _onnx_type(element)):
            softmax_precision = "f32"
        if precision:
            w.note(f"unfused: {element} attention, each step rounded to {element} where the ONNX reference "
                   f"rounds (softmax in {softmax_precision})")
        else:
            w.note("unfused: the qk_matmul_output output needs the attention scores materialized")
        bias = combined_bias(ctx, sizes, precision or "f32")

        def unfused(b: FunctionWriter, block: Operands, block_bias) -> dict[str, Value]:
            return unfused_attention(b, block, block_bias, softcap, input_precision=precision or "f32",
                                     softmax_precision=softmax_precision)

        if op.result("qk_matmul_output") is not None:
            computed = unfused(w, operands, bias)
            out = computed["Y"]
            # Modes 0 and 1 both expose the scores after softcap, as the reference does.
            qk = computed[("scores", "scores", "logits", "probabilities")[op.attr("qk_matmul_output_mode")]]
            results["qk_matmul_output"] = w.collapse_shape(convert(w, qk, element), [[0], [1, 2], [3], [4]])
        else:  # rows are independent: a causal prompt may go in query blocks
            out = in_blocks(w, operands, bias, "f32", options, _causal_past(op, args, sizes),
                            lambda b, block, block_bias: unfused(b, block, block_bias)["Y"])
    else:
        compute = "f32" if options.attention_in_f32 else element
        bias = combined_bias(ctx, sizes, compute)
        if "attn_mask" in args and args["attn_mask"].element != "i1":
            bias = lift_huge_rows(w, *bias)
        valid_keys = None
        # A dynamic key count compiles only with kvattn's own CPU tiles, which are f32-only
        # (IREE's default tiles fail to vectorize it: "'vector.mask' op expects a 'vector<16xi1>'").
        if (options.slice_keys_to_valid_length and "nonpad_kv_seqlen" in args
                and options.cpu_attention_tiles and matmul_element(compute, options) in TILED_ELEMENTS):
            w.note("reads only the first max(nonpad_kv_seqlen) keys")
            valid_keys = longest_valid_length(w, args["nonpad_kv_seqlen"], sizes.total_len)
        out = attention_in_blocks(w, operands, bias, compute, softcap, options, valid_keys,
                                  _causal_past(op, args, sizes))
    out = convert(w, out, element)
    onnx_roles = ("b", "s", "h", "g", "e") if sizes.rank3 else ("b", "h", "g", "s", "e")
    out, _ = transpose_to(w, out, out_roles, onnx_roles)
    groups = [[0], [1], [2, 3, 4]] if sizes.rank3 else [[0], [1, 2], [3], [4]]
    results["Y"] = w.collapse_shape(out, groups)
    if "Y_scale" in args:
        results["Y"] = quantize(w, results["Y"], args["Y_scale"], args.get("Y_zero_point"), op.attr("Y_axis"),
                                op.result_type("Y").element)
    if tiled:  # and the consumers' reshapes out of it
        results["Y"] = w.reshape_barrier(results["Y"], "end")
    if op.result("present_key") is not None:
        results["present_key"] = present_key
    if op.result("present_value") is not None:
        results["present_value"] = present_value
    return results


def _causal_past(op: KvOp, args, sizes: AttentionSizes) -> int | None:
    """The static past length when is_causal masks keys by position alone (causal_blocks)."""
    causal = op.attr("is_causal") == 1 and "nonpad_kv_seqlen" not in args
    return sizes.past_len if causal and isinstance(sizes.past_len, int) else None


def _dequantized(ctx: RuleContext) -> tuple[RuleContext, dict[str, Dequantization]]:
    """The context with Q replaced by its fused dequantization (kvattn-fuse-qdq), and how K and V
    dequantize (they stay quantized in the context: each route dequantizes them where it reads
    them — the fused op next to it, the materialized scores inside their contractions — after
    the key slice, so a quantized cache is read once at its own width); and a note on it."""
    op, w = ctx.op, ctx.w
    fused = [name for name in ("Q", "K", "V", "Y") if f"{name}_scale" in ctx.args]
    if fused:
        w.note(f"fused Q/DQ: {', '.join(fused)} (de)quantized inside the attention's dispatch")
    if dialect.QDQ_UNFUSED_ATTR in op.operation.attributes:
        w.note(f"Q/DQ left unfused: {ir.StringAttr(op.operation.attributes[dialect.QDQ_UNFUSED_ATTR]).value}")
    args = dict(ctx.args)
    float8 = [name for name in ("K", "V") if name in fused and args[name].type.element == "f8E4M3FN"]
    if float8 and not ctx.options.float8_keys_and_values:
        raise ctx.unsupported(f"a float8e4m3fn {' and '.join(float8)} dequantized into the attention on this target "
                              "(IREE 3.13 computes it wrong on Vulkan and cannot compile it for CUDA/HIP; llvm-cpu "
                              "runs it)")
    if "Q" in fused:
        args["Q"] = dequantize(w, args["Q"], args["Q_scale"], args.get("Q_zero_point"), op.attr("Q_axis"))
    deferred = {name: Dequantization(args[f"{name}_scale"], args.get(f"{name}_zero_point"),
                                     per_head=args[f"{name}_scale"].type.rank == 1)
                for name in ("K", "V") if name in fused}  # per-axis scales are along the 4D head axis (fuse_qdq)
    return dataclasses.replace(ctx, args=args), deferred


def _reference_precision(op: KvOp, element: str) -> str | None:
    """fp16/bf16 when ONNX computes this attention in that type (softmax_precision absent or
    naming it), so kvattn rounds like the reference; else None (f32 inside). Also with
    softmax_precision=FLOAT when a float attn_mask is added: ONNX adds it to the scores in
    fp16/bf16, which decides what a row masked with large finite values gives (all its scores
    round to the mask value); the fused route would add it in f32."""
    if element not in ("f16", "bf16"):
        return None
    requested = op.attr("softmax_precision")
    mask = op.operand_type("attn_mask")
    float_mask = mask is not None and mask.element != "i1"
    return element if requested in (None, _onnx_type(element)) or float_mask else None


def _onnx_type(element: str) -> int:
    return onnx.helper.np_dtype_to_tensor_dtype(tensor_types.numpy_dtype(element))


def _softcap(b: FunctionWriter, score: Value, cap: float) -> Value:
    cap_value = b.constant(cap, score.type)
    capped = b.op(f"math.tanh {b.binary('divf', score, cap_value)} : {score.type}", score.type)
    return b.binary("mulf", capped, cap_value)
