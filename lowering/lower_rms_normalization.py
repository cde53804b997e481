"""kvattn.rms_normalization → two linalg.generic ops, in f32 (stash_type 1):
  mean_sq[outer] = Σ x² / N   over the normalized dims (axis..rank-1, N elements)
  y              = x · rsqrt(mean_sq + epsilon) · scale   (scale broadcast to the normalized dims)
IREE 3.13 has no lowering for ONNX RMSNormalization.
"""

from __future__ import annotations

import math

from kvattn.lowering.attention_operands import float_cast
from kvattn.lowering.dialect import KvOp
from kvattn.lowering.mlir_text import FunctionWriter, Value
from kvattn.lowering.options import LoweringOptions
from kvattn.lowering.tensor_types import TensorType


def lower_rms_normalization(op: KvOp, w: FunctionWriter, args: dict[str, Value],
                            options: LoweringOptions) -> dict[str, Value]:
    x, scale = args["X"], args["scale"]
    rank = x.type.rank
    axis = op.attr("axis") % rank
    dims = [f"d{i}" for i in range(rank)]
    outer, normalized = dims[:axis], dims[axis:]
    count = math.prod(x.type.shape[axis:])
    sums_type = TensorType(tuple(x.type.shape[:axis]), "f32")

    def square_add(b: FunctionWriter, block: list[Value]) -> Value:
        value = float_cast(b, block[0], "f32")
        return b.binary("addf", block[1], b.binary("mulf", value, value))

    sums = w.generic(dims, [(x, dims)], w.fill(w.constant(0.0, "f32"), sums_type), square_add,
                     reduction_dims=normalized)
    scale_results = [d if size != 1 else "0" for d, size in zip(dims[rank - scale.type.rank:], scale.type.shape)]
    epsilon = op.attr("epsilon")

    def normalize(b: FunctionWriter, block: list[Value]) -> Value:
        mean = b.binary("divf", block[1], b.constant(float(count), "f32"))
        inverse = b.op(f"math.rsqrt {b.binary('addf', mean, b.constant(epsilon, 'f32'))} : f32", "f32")
        value = b.binary("mulf", float_cast(b, block[0], "f32"), inverse)
        return float_cast(b, b.binary("mulf", value, float_cast(b, block[2], "f32")), x.type.element)

    y = w.generic(dims, [(x, dims), (sums, outer), (scale, scale_results)], w.empty(x.type), normalize)
    return {"Y": y}
