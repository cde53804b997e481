"""kvattn.rms_normalization → two linalg.generic ops, in f32 (stash_type 1):
  mean_sq[outer] = Σ x² / N   over the normalized dims (axis..rank-1, N elements)
  y              = x · rsqrt(mean_sq + epsilon) · scale   (scale broadcast to the normalized dims)
IREE 3.13 has no lowering for ONNX RMSNormalization.
"""

from __future__ import annotations

from kvattn.lowering.attention_operands import float_cast
from kvattn.lowering.mlir_text import FunctionWriter, Value
from kvattn.lowering.rule_context import RuleContext


def lower_rms_normalization(ctx: RuleContext) -> dict[str, Value]:
    op, w = ctx.op, ctx.w
    x, scale = w.with_sizes(ctx.args["X"]), ctx.args["scale"]
    rank = x.rank
    axis = op.attr("axis") % rank
    dims = [f"d{i}" for i in range(rank)]
    outer, normalized = dims[:axis], dims[axis:]
    count = w.product(x.sizes[axis:])
    # N as f32: a constant, or converted once from the run-time sizes.
    count_f32 = (w.constant(float(count), "f32") if isinstance(count, int)
                 else w.cast("sitofp", w.cast("index_cast", count, "i64"), "f32"))

    def square_add(b: FunctionWriter, block: list[Value]) -> Value:
        value = float_cast(b, block[0], "f32")
        return b.binary("addf", block[1], b.binary("mulf", value, value))

    sums = w.generic(dims, [(x, dims)], w.fill(w.constant(0.0, "f32"), x.sizes[:axis]), square_add,
                     reduction_dims=normalized)
    lead = rank - scale.rank
    scale_results = [d if size != 1 else "0" for d, size in zip(dims[lead:], scale.type.shape)]
    for k, result in enumerate(scale_results):
        if result != "0":
            ctx.require_equal(w.dim(scale, k), x.sizes[lead + k], f"scale does not broadcast to X on axis {lead + k}")
    epsilon = op.attr("epsilon")

    def normalize(b: FunctionWriter, block: list[Value]) -> Value:
        mean = b.binary("divf", block[1], count_f32)
        inverse = b.op(f"math.rsqrt {b.binary('addf', mean, b.constant(epsilon, 'f32'))} : f32", "f32")
        value = b.binary("mulf", float_cast(b, block[0], "f32"), inverse)
        return float_cast(b, b.binary("mulf", value, float_cast(b, block[2], "f32")), x.type.element)

    y = w.generic(dims, [(x, dims), (sums, outer), (scale, scale_results)], w.empty_like(x), normalize)
    return {"Y": y}
