"""The two ways kvattn lowers an attention, shared by Attention and FlexAttention.

fused    Y = iree_linalg_ext.attention(Q, K, V, scale, bias) { score mod in the region }, then
         the fully-masked-row guard. The region receives x = s·log2(e), s = scale·Q·Kᵀ (checked
         on llvm-cpu and on the SPIR-V decomposition), so a score mod f is written
         log2(e)·f(x/log2(e)); IREE adds the mask after the region.
unfused  explicit linalg ops: S = scale·Q·Kᵀ → score mod → + bias → softmax (rows that are
         fully masked give 0) → prob mod → P·V, in f32, or for fp16/bf16 attention without
         softmax_precision=FLOAT rounded to that type wherever the ONNX reference rounds. Taken
         when scores must be materialized (qk_matmul_output), or a mod reads tensors or
         positions, or there is a prob mod, or for that fp16/bf16 precision.
A mod is an elementwise function of the score (or probability), optionally reading tensors
indexed by the score's roles.

`attention` picks between them where either may be taken (no materialized output, a mod that
reads no tensors): with LoweringOptions.materialize_small_scores (llvm-cpu) and small scores —
fewer than FEW_QUERIES queries (decode: the scores are G·S/(2·D) of the K/V bytes), or at most
SCORE_BUDGET scores — the unfused route in f32, else the fused op; chosen at run time (an
scf.if) when the sizes are dynamic. Measured with IREE 3.13 on a 2-core EPYC (32/8 heads, head
128, fp32): decode over 1025 / 4000 / 16000 keys 0.68 / 3.34 / 14.6 ms fused vs 0.44 / 1.31 /
9.7 ms unfused (IREE streams the two matvec-like contractions near the copy rate); prefill 128 /
512 / 1024 / 2048: fused 2.6 / 45 / 164 / 704 ms, unfused 1.1 / 27 / 172 / 883 ms.
In a decode with static sizes but the key count, the unfused route's Q·Kᵀ and P·V carry llvm-cpu
tiles (attention_tiles.cpu_decode_contraction_info; `_contraction`), in a static prefill its Q·Kᵀ
(attention_tiles.cpu_prefill_scores_info).
The fused op stays for reduced-precision matmul inputs (--attention-precision). Quantized K and
V (fused Q/DQ) arrive as stored, with their Dequantization: the fused op dequantizes them next
to it (IREE fuses that into its dispatch), the unfused route inside its two contractions, so a
quantized cache is read at its own width and never copied to float.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from kvattn.lowering.attention_bias import bias_row_max, zero_fully_masked_rows
from kvattn.lowering.attention_operands import DIMS, AttentionSizes, convert, float_cast
from kvattn.lowering.attention_tiles import (FEW_QUERIES, cpu_compilation_info, cpu_decode_contraction_info,
                                             cpu_prefill_scores_info, cpu_prefill_values_info, decode_score_roles,
                                             tiled_contraction_loops)
from kvattn.lowering.mlir_text import FunctionWriter, Value, affine_map, known, tensor_type
from kvattn.lowering.options import LoweringOptions
from kvattn.lowering.quantization import Dequantization, dequantize_in_roles, to_float

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
    """Q/K/V with the roles of their dims, the output roles, the scale and the sizes."""

    q: Value
    q_roles: tuple[str, ...]
    key: Value
    key_roles: tuple[str, ...]
    value: Value
    value_roles: tuple[str, ...]
    out_roles: tuple[str, ...]
    scale: float
    sizes: AttentionSizes
    dequantized: bool = False  # Q, K or V come from a fused dequantization (it joins the attention's dispatch)
    # K and V as stored (e.g. int8) and how they dequantize, or None: already float.
    key_dequantization: Dequantization | None = None
    value_dequantization: Dequantization | None = None

    def float_keys_and_values(self, w: FunctionWriter) -> "Operands":
        """These operands with K and V dequantized by separate elementwise ops."""
        return dataclasses.replace(
            self, key=dequantize_in_roles(w, self.key, self.key_roles, self.key_dequantization),
            value=dequantize_in_roles(w, self.value, self.value_roles, self.value_dequantization),
            key_dequantization=None, value_dequantization=None)


SCORE_BUDGET = 8 * 2**20  # scores the CPU materializes at most (32 MiB of f32: prefill 512 at 32 heads)


def attention(w: FunctionWriter, o: Operands, bias, compute: str, score_mod: Mod | None,
              options: LoweringOptions, valid_keys: Value | None = None) -> Value:
    """The attention by the route the module docstring's rule picks; `score_mod` must read no
    tensors. With `valid_keys` (an index no larger than the key count, beyond which the bias
    masks every key) it reads only that many keys. The result is in `compute`."""
    assert score_mod is None or not score_mod.inputs
    if valid_keys is not None:
        o, bias = first_keys(w, o, bias, valid_keys)
    fused = "fused: one iree_linalg_ext.attention"
    if not (options.materialize_small_scores and matmul_element(compute, options) == compute):
        w.note(fused)
        return fused_attention(w, o, bias, compute, score_mod, options)

    def materialized(b: FunctionWriter) -> Value:
        return convert(b, unfused_attention(b, o, bias, score_mod, cpu_tiles=options.cpu_attention_tiles)["Y"],
                       compute)

    small = _small_scores(w, o.sizes.size)
    if small is True:
        w.note(f"unfused: small scores, materialized in f32 (fewer than {FEW_QUERIES} queries or at most "
               f"{SCORE_BUDGET} scores)")
        return materialized(w)
    if small is False:
        w.note(fused)
        return fused_attention(w, o, bias, compute, score_mod, options)
    w.note(f"sizes known at run time: unfused (scores materialized, in f32) below {FEW_QUERIES} queries or "
           f"up to {SCORE_BUDGET} scores, else {fused}")
    out_sizes = [o.sizes.size[r] for r in o.out_roles]
    return w.if_else(small, materialized, lambda b: fused_attention(b, o, bias, compute, score_mod, options,
                                                                   many_queries=True),
                     tensor_type(out_sizes, compute), out_sizes)


def first_keys(w: FunctionWriter, o: Operands, bias, count: int | Value) -> tuple[Operands, tuple]:
    """The operands and the bias (value, roles) cut to their first `count` keys."""
    o = dataclasses.replace(o, key=w.leading_slice(o.key, o.key_roles.index("l"), count),
                            value=w.leading_slice(o.value, o.value_roles.index("l"), count),
                            sizes=o.sizes.resized(l=count))
    return o, (w.leading_slice(bias[0], bias[1].index("l"), count), bias[1])


def _small_scores(w: FunctionWriter, size: dict) -> bool | Value:
    """Whether the attention has fewer than FEW_QUERIES queries or at most SCORE_BUDGET scores:
    a bool when the sizes are static, else an i1 computed at run time."""
    queries = size["s"]
    if isinstance(queries, int) and queries < FEW_QUERIES:
        return True
    scores = w.product([size[r] for r in SCORE_ROLES])
    if isinstance(scores, int):
        return scores <= SCORE_BUDGET
    few = w.compare("cmpi", "ult", w.index(queries), w.index(FEW_QUERIES))
    within = w.compare("cmpi", "ule", w.index(scores), w.index(SCORE_BUDGET))
    return w.binary("ori", few, within)


def fused_attention(w: FunctionWriter, o: Operands, bias, compute: str, score_mod: Mod | None,
                    options: LoweringOptions, many_queries: bool = False) -> Value:
    """One iree_linalg_ext.attention; `score_mod` must read no tensors. On llvm-cpu the op
    carries its per-shape tile sizes (with `many_queries`, a dynamic query count known to be
    at least FEW_QUERIES gets the prefill tiles alone). Q/K/V are rounded to
    `matmul_element(compute, options)`; scale, mask and output stay `compute`."""
    assert score_mod is None or not score_mod.inputs
    o = o.float_keys_and_values(w)
    inputs_element = matmul_element(compute, options)
    if inputs_element != compute:
        w.note(f"Q·Kᵀ and P·V on {inputs_element} inputs (attention precision), softmax and sums in {compute}")
    q, key, value = (convert(w, x, inputs_element) for x in (o.q, o.key, o.value))
    sizes = dict(o.sizes.size)
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
    operand_roles = [o.q_roles, o.key_roles, o.value_roles] + ([bias[1]] if bias else []) + [o.out_roles]
    static = dict(zip(sizes, known(sizes.values())))
    init = w.empty([o.sizes.size[r] for r in o.out_roles], compute)

    def score_region(region: FunctionWriter, block: list[Value]) -> Value:
        if score_mod is None:
            return block[0]
        log2e = region.constant(LOG2E, "f32")
        natural = region.binary("divf", block[0], log2e)
        return region.binary("mulf", score_mod.apply(region, natural, []), log2e)

    def attention(b: FunctionWriter, config: str | None) -> Value:
        attributes = f" {{compilation_info = {config}}}" if config else ""
        return b.region_op(f"iree_linalg_ext.attention <indexing_maps = [{', '.join(maps)}]>{attributes} "
                           f"ins({', '.join(ins)} : {', '.join(types)}) outs({init} : {init.mlir_type})",
                           [Value("%score", "f32")], score_region, "iree_linalg_ext.yield", f"-> {init.mlir_type}",
                           init.type, init.sizes, "attn")

    if not options.cpu_attention_tiles:
        configs = [None]
    elif static["s"] is not None:
        configs = [cpu_compilation_info(static, operand_roles, inputs_element, fused_producers=o.dequantized)]
    else:  # decode tiles for a few queries, prefill tiles for a prompt
        configs = [cpu_compilation_info(static, operand_roles, inputs_element, queries, o.dequantized)
                   for queries in ((None,) if many_queries else (1, None))]
    if len(set(configs)) == 1:
        out = attention(w, configs[0])
    else:
        # The query count is known only at run time: two copies of the op, chosen by an scf.if.
        w.note(f"query count known at run time: decode tiles below {FEW_QUERIES} queries, prefill tiles from there")
        few = w.compare("cmpi", "ult", w.index(sizes["s"]), w.index(FEW_QUERIES))
        out = w.if_else(few, lambda b: attention(b, configs[0]), lambda b: attention(b, configs[1]),
                        init.type, init.sizes)
    if bias is not None:
        out = zero_fully_masked_rows(w, out, o.out_roles, *bias)
    return out


def matmul_element(compute: str, options: LoweringOptions) -> str:
    """The element type the fused attention's Q·Kᵀ and P·V read: an f32 attention's inputs are
    rounded to the chosen attention precision (LoweringOptions.f32_attention_inputs)."""
    return options.f32_attention_inputs if compute == "f32" else compute


def unfused_attention(w: FunctionWriter, o: Operands, bias, score_mod: Mod | None = None,
                      prob_mod: Mod | None = None, input_precision: str = "f32",
                      softmax_precision: str = "f32", cpu_tiles: bool = False) -> dict[str, Value]:
    """The attention as explicit linalg ops. Returns the output ("Y" in `o.out_roles`, f32) and
    the intermediates as [B,Hkv,G,S,T] (SCORE_ROLES; see `cpu_tiles`): "scores" (after the
    score mod), "logits" (+ bias) and "probabilities" (after the prob mod).

    "f16"/"bf16" precisions round where the ONNX reference rounds. `input_precision`: Q and K
    each times √scale (itself rounded), the dot product (accumulated in f32), and the
    probabilities before P·V (accumulated in f32). A score mod runs in f32 (the reference's
    softcap promotes to f32: its attribute is a float32 scalar).
    `softmax_precision`: + bias, x − max, exp, the sum (bf16: every add, as numpy adds bfloat16
    one element at a time; fp16: accumulated in f32 and rounded once, as numpy's float16 sum
    does), the division. With `cpu_tiles`, a decode's two contractions carry llvm-cpu tile sizes
    (attention_tiles.cpu_decode_contraction_info), and at batch > 1 the intermediates are laid
    out h before b (attention_tiles.decode_score_roles) so that P·V keeps its tiles."""
    pv_loops = o.out_roles + ("l",)
    roles = decode_score_roles(SCORE_ROLES, pv_loops, _static(o.sizes.size)) if cpu_tiles else SCORE_ROLES
    score_sizes = [o.sizes.size[r] for r in roles]
    if input_precision != "f32":
        o = o.float_keys_and_values(w)
    q, key, scale = o.q, o.key, o.scale
    if input_precision != "f32":
        q, key = (_times_root_of(w, x, scale, input_precision) for x in (o.q, o.key))
        scale = 1.0

    def multiply_add(b: FunctionWriter, block: list[Value]) -> Value:
        product = b.binary("mulf", _as_f32(b, block[0]), _as_f32(b, block[1]))
        return b.binary("addf", block[2], product)

    dot = _contraction(w, roles + ("d",), [(q, o.q_roles), (key, o.key_roles)], roles, "d",
                       multiply_add, o.sizes.size, cpu_tiles)
    if o.key_dequantization:
        dot = _dequantized_sums(w, dot, roles, o.key_dequantization, (q, o.q_roles), "d")
    scores = _elementwise(w, dot, roles, score_mod, scale=scale, rounding=input_precision,
                          stored=input_precision if score_mod is None else "f32")

    def biased(b: FunctionWriter, block: list[Value]) -> Value:
        logit = float_cast(b, block[0], "f32")
        if bias is not None:
            logit = b.binary("addf", logit, float_cast(b, block[1], "f32"))
            if bias[0].element == scores.element:  # numpy adds two fp16 (bf16) arrays in that type
                logit = float_cast(b, logit, scores.element)
        return float_cast(b, logit, softmax_precision)

    logits = scores
    if bias is not None or scores.type.element != softmax_precision:
        inputs = [(scores, roles)] + ([bias] if bias is not None else [])
        logits = w.generic(roles, inputs, w.empty(score_sizes, softmax_precision), biased)
    probabilities = _softmax(w, logits, roles, bias, softmax_precision)
    if prob_mod is not None:
        probabilities = _elementwise(w, probabilities, roles, prob_mod)

    def weighted_add(b: FunctionWriter, block: list[Value]) -> Value:
        weight = round_to(b, float_cast(b, block[0], "f32"), input_precision)
        return b.binary("addf", block[2], b.binary("mulf", weight, _as_f32(b, block[1])))

    output = _contraction(w, pv_loops, [(probabilities, roles), (o.value, o.value_roles)],
                          o.out_roles, "l", weighted_add, o.sizes.size, cpu_tiles)
    if o.value_dequantization:
        output = _dequantized_sums(w, output, o.out_roles, o.value_dequantization, (probabilities, roles), "l")
    return {"Y": output, "scores": scores, "logits": logits, "probabilities": probabilities}


def _contraction(w: FunctionWriter, loops: Sequence[str], inputs: Sequence[tuple[Value, Sequence[str]]],
                 out_roles: Sequence[str], reduced: str, body, size: dict, cpu_tiles: bool) -> Value:
    """Σ over `reduced` of body(inputs), accumulated in f32 from 0: a linalg.generic over `loops`.
    With `cpu_tiles` and a decode's or a prefill's sizes it carries llvm-cpu tiles
    (attention_tiles.cpu_decode_contraction_info, cpu_prefill_scores_info, cpu_prefill_values_info)
    and is written without the static unit dims (operands collapsed, the result expanded back):
    IREE drops the config of an op whose unit dims it folds away. A prefill's P·V is written over
    g·s as one loop (s collapsed into g), where every operand reads them next to each other."""
    out_sizes = [size[r] for r in out_roles]
    static = _static(size)
    config, merged_rows = None, False
    if cpu_tiles:
        config = cpu_decode_contraction_info(loops, reduced, static, inputs[1][0].type.element)  # K or V
        elements = {value.type.element for value, _ in inputs}
        if config is None and reduced == "d":
            config = cpu_prefill_scores_info(loops, static, elements)
        elif config is None and _rows_read_together([loops, out_roles] + [roles for _, roles in inputs]):
            config, merged_rows = cpu_prefill_values_info(loops, static, elements), True
    if config is None:
        return w.generic(loops, inputs, w.fill(w.constant(0.0, "f32"), out_sizes), body, reduction_dims=(reduced,))
    groups = tiled_contraction_loops(loops, static, merged_rows)
    kept = [group[0] for group in groups]  # a merged loop is named by its first dim
    kind = "decode" if static["s"] < FEW_QUERIES else "prefill"
    w.note(f"{'Q·Kᵀ' if reduced == 'd' else 'P·V'} with llvm-cpu {kind} tiles over loops "
           f"({', '.join('·'.join(group) for group in groups)})")

    def collapsed(value: Value, roles: Sequence[str]) -> tuple[Value, list[str]]:
        kept_roles = [r for r in roles if r in kept]
        return (value if len(kept_roles) == len(roles) else w.collapse_shape(value, _reassociation(roles, kept)),
                kept_roles)

    out_kept = [r for r in out_roles if r in kept]
    init = w.fill(w.constant(0.0, "f32"), [w.product([out_sizes[axis] for axis in axes])
                                           for axes in _reassociation(out_roles, kept)])
    result = w.generic(kept, [collapsed(value, roles) for value, roles in inputs], init, body,
                       reduction_dims=(reduced,), init_results=out_kept, compilation_info=config)
    if len(out_kept) == len(out_roles):
        return result
    return w.expand_shape(result, _reassociation(out_roles, kept), out_sizes)


def _rows_read_together(role_lists: Sequence[Sequence[str]]) -> bool:
    """Whether each of `role_lists` that has g or s has both, s right after g."""
    return all(("g", "s") in zip(roles, roles[1:]) for roles in role_lists if "g" in roles or "s" in roles)


def _static(size: dict) -> dict[str, int | None]:
    """The sizes known at compile time (None where a size is a run-time Value)."""
    return dict(zip(size, known(size.values())))


def _reassociation(roles: Sequence[str], kept: Sequence[str]) -> list[list[int]]:
    """The axes of a tensor over `roles` that collapse into each of its `kept` dims: a unit dim
    joins the kept dim before it, or the first one when it leads (none at all when every dim
    is a unit dim)."""
    axes: list[list[int]] = []
    leading: list[int] = []
    for axis, role in enumerate(roles):
        if role in kept:
            axes.append(leading + [axis])
            leading = []
        elif axes:
            axes[-1].append(axis)
        else:
            leading.append(axis)
    return axes


def _as_f32(b: FunctionWriter, value: Value) -> Value:
    """A float, or a stored quantized element (its integer or float8 value), as f32."""
    return float_cast(b, value, "f32") if value.type in ("f16", "bf16", "f32", "f64") else to_float(b, value, "f32")


def _dequantized_sums(w: FunctionWriter, sums: Value, roles, dequantization: Dequantization,
                      weights: tuple[Value, Sequence[str]], reduced: str) -> Value:
    """From sums = Σ w·x over `reduced` (x as stored, e.g. int8) to Σ w·(x − z)·s = s·(sums − z·Σ w):
    a quantized K or V dequantized outside its contraction (s and z are per tensor or per KV
    head, constant along the reduced dim), so the contraction stays a plain mul-add that IREE
    codegens as a matmul, reading x at its own width."""
    inputs = [(sums, roles)] + dequantization.inputs(roles)
    if dequantization.zero_point is not None:
        weight, weight_roles = weights
        sum_roles = [r for r in weight_roles if r != reduced]
        lowest = w.fill(w.constant(0.0, "f32"), [w.dim(weight, weight_roles.index(r)) for r in sum_roles])
        total = w.generic(weight_roles, [weights], lowest,
                          lambda b, block: b.binary("addf", block[1], float_cast(b, block[0], "f32")),
                          reduction_dims=(reduced,))
        inputs.append((total, sum_roles))

    def body(b: FunctionWriter, block: list[Value]) -> Value:
        value = block[0]
        if dequantization.zero_point is not None:
            value = b.binary("subf", value, b.binary("mulf", to_float(b, block[2], "f32"), block[3]))
        return b.binary("mulf", value, float_cast(b, block[1], "f32"))

    return w.generic(roles, inputs, w.empty_like(sums), body)


def round_to(b: FunctionWriter, x: Value, precision: str) -> Value:
    """x (f32) rounded to `precision` (to nearest, ties to even) and widened back: one rounding
    step of the reference. bf16 is rounded on the bits: IREE's CPU codegen emulates bf16 in f32
    and drops an in-register truncf→extf pair (found: the rounding of the scores vanished)."""
    if precision == "f32":
        return x
    if precision != "bf16":
        return b.cast("extf", b.cast("truncf", x, precision), "f32")
    bits = b.cast("bitcast", x, "i32")
    lowest_kept = b.binary("andi", b.binary("shrui", bits, b.constant(16, "i32")), b.constant(1, "i32"))
    half_up = b.binary("addi", b.constant(0x7FFF, "i32"), lowest_kept)
    kept = b.binary("andi", b.binary("addi", bits, half_up), b.constant(-65536, "i32"))  # 0xFFFF0000
    rounded = b.cast("bitcast", kept, "f32")
    return b.select(b.compare("cmpf", "uno", x, x), x, rounded)


def _widened(b: FunctionWriter, values: Sequence[Value]) -> list[Value]:
    return [float_cast(b, v, "f32") for v in values]


def _times_root_of(w: FunctionWriter, x: Value, scale: float, precision: str) -> Value:
    """x·√scale in `precision`, √scale rounded to it first (the reference scales Q and K each)."""
    dims = [f"d{i}" for i in range(x.type.rank)]

    def body(b: FunctionWriter, block: list[Value]) -> Value:
        root = b.cast("extf", b.constant(math.sqrt(scale), precision), "f32")
        return float_cast(b, b.binary("mulf", float_cast(b, block[0], "f32"), root), precision)

    return w.generic(dims, [(x, dims)], w.empty_like(x, precision), body)


def _elementwise(w: FunctionWriter, x: Value, roles: Sequence[str], mod: Mod | None, scale: float = 1.0,
                 rounding: str = "f32", stored: str = "f32") -> Value:
    """mod(scale·x) over scores laid out as `roles`, x rounded to `rounding` first, stored in `stored`."""
    inputs = [(x, roles)] + list(mod.inputs if mod else [])

    def body(b: FunctionWriter, block: list[Value]) -> Value:
        value = round_to(b, float_cast(b, block[0], "f32"), rounding)
        if scale != 1.0:
            value = b.binary("mulf", value, b.constant(scale, "f32"))
        value = mod.apply(b, value, block[1:len(inputs)]) if mod else value
        return float_cast(b, value, stored)

    return w.generic(roles, inputs, w.empty_like(x, stored), body)


def _softmax(w: FunctionWriter, logits: Value, roles, bias, precision: str) -> Value:
    """softmax over keys, in `precision` (see unfused_attention); rows whose bias is all -inf
    (or all -inf logits) give zeros."""
    row_roles = [r for r in roles if r != "l"]
    row_sizes = [w.dim(logits, roles.index(r)) for r in row_roles]
    lowest = w.fill(w.constant(-math.inf, "f32"), row_sizes)
    row_max = w.generic(roles, [(logits, roles)], lowest,
                        lambda b, block: b.binary("maximumf", float_cast(b, block[0], "f32"), block[1]),
                        reduction_dims=("l",))

    def exp_shifted(b: FunctionWriter, block: list[Value]) -> Value:
        logit, row = _widened(b, block[:2])
        neg_inf = b.constant(-math.inf, "f32")
        safe_max = b.select(b.compare("cmpf", "oeq", row, neg_inf), b.constant(0.0, "f32"), row)
        shifted = round_to(b, b.binary("subf", logit, safe_max), precision)
        return float_cast(b, b.op(f"math.exp {shifted} : f32", "f32"), precision)

    exps = w.generic(roles, [(logits, roles), (row_max, row_roles)], w.empty_like(logits), exp_shifted)
    # bf16 sums round at every add (numpy adds bfloat16 one element at a time, and a combiner
    # that rounds is no plain addf, so IREE does not reassociate it); fp16 sums accumulate in f32.
    sum_rounding = "bf16" if precision == "bf16" else "f32"
    sums = w.generic(roles, [(exps, roles)], w.fill(w.constant(0.0, "f32"), row_sizes),
                     lambda b, block: round_to(b, b.binary("addf", float_cast(b, block[0], "f32"), block[1]),
                                               sum_rounding),
                     reduction_dims=("l",))
    inputs = [(exps, roles), (sums, row_roles)]
    if bias is not None:
        inputs.append(bias_row_max(w, *bias))

    def normalize(b: FunctionWriter, block: list[Value]) -> Value:
        exp = float_cast(b, block[0], "f32")
        total = round_to(b, block[1], precision)
        zero = b.constant(0.0, "f32")
        total = b.select(b.compare("cmpf", "oeq", total, zero), b.constant(1.0, "f32"), total)
        probability = b.binary("divf", exp, total)
        if bias is not None:
            fully_masked = b.compare("cmpf", "oeq", float_cast(b, block[2], "f32"), b.constant(-math.inf, "f32"))
            probability = b.select(fully_masked, zero, probability)
        return float_cast(b, probability, precision)

    return w.generic(roles, inputs, w.empty_like(logits), normalize)
