"""onnxruntime's com.microsoft MatMulNBits (blockwise 2/4/8-bit weights) → ONNX integer ops + MatMul.

onnxruntime-genai's model builder (`-p int4`) and onnxruntime's MatMulNBitsQuantizer write every
linear layer as MatMulNBits(A [.., K], B uint8 [N, k_blocks, blob], scales, zero_points?, g_idx?,
bias?): the weight's codes are packed low bits first along K, `bits` to a code, `block_size`
codes to a block, and it computes

    Y = A · dequant(B)ᵀ (+ bias),  dequant(B)[n, k] = (code[n, k] − zp[n, k // block_size])
                                                       · scale[n, k // block_size]

with zp = 2^(bits−1) without zero_points, unpacked the same way from uint8 zero_points, or
taken as written when they have the scales' type. This is written as

    codes = Concat_j(Mod(BitShift(B, j·bits, RIGHT), 2^bits)) → Reshape [N, k_blocks, block_size]
    W     = (Cast(codes) − zp[n, block, 1]) · scale[n, block, 1] → Reshape [N, k_blocks·block_size]
            → Slice to K → Transpose [K, N]
    Y     = MatMul(A, W) (+ bias)

so the weights stay packed in the module (its parameters hold B, not a float copy). onnxruntime's
accuracy_level only permits it to compute in lower precision; this computes at the scales'
precision. Refused, naming the node: a g_idx that is not the plain k // block_size order, bit
widths other than 2, 4, 8, and B or zero points whose shapes do not match K, N, block_size.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

from kvattn.lowering.diagnostics import NodeError, UnsupportedError

DOMAIN = "com.microsoft"
ZERO_POINTS, G_IDX, BIAS = 3, 4, 5
OPSET = 11  # BitShift


class DequantizedMatMul(RewriteRuleClassBase):
    def __init__(self, record: Callable[[str], None]):
        super().__init__(name="DequantizedMatMul")
        self._record = record
        self._node: ir.Node | None = None

    def pattern(self, op, a, b, scales):
        return op.MatMulNBits(a, b, scales, _domain=DOMAIN, _allow_other_inputs=True,
                              _allow_other_attributes=True)

    def check(self, context, a: ir.Value, b: ir.Value, scales: ir.Value, **_) -> MatchResult:
        node = context.root
        name = node.name or f"MatMulNBits_{node.outputs[0].name}"
        k, n, bits, block = _sizes(node)
        if bits not in (2, 4, 8):
            raise UnsupportedError("MatMulNBits", name, f"bits={bits} (2, 4 and 8 are)")
        blocks = -(-k // block)
        if block < 16 or block & (block - 1):
            raise NodeError("MatMulNBits", name, f"block_size must be a power of 2 of at least 16 (got {block})")
        expected = [n, blocks, block * bits // 8]
        if b.shape is None or list(b.shape) != expected or b.dtype != ir.DataType.UINT8:
            raise NodeError("MatMulNBits", name, f"B must be uint8 {expected} for K={k}, N={n}, bits={bits}, "
                                                 f"block_size={block} (got {b.dtype} {b.shape})")
        if scales.shape is None or math.prod(scales.shape) != n * blocks:
            raise NodeError("MatMulNBits", name, f"scales must hold N * k_blocks = {n * blocks} values "
                                                 f"(got shape {scales.shape})")
        if a.shape is not None and isinstance(a.shape[-1], int) and a.shape[-1] != k:
            raise NodeError("MatMulNBits", name, f"A's last dim {a.shape[-1]} is not K={k}")
        zero_points = _optional_input(node, ZERO_POINTS)
        if zero_points is not None and zero_points.dtype not in (ir.DataType.UINT8, scales.dtype):
            raise NodeError("MatMulNBits", name, f"zero_points must be uint8 or {scales.dtype} "
                                                 f"(got {zero_points.dtype})")
        g_idx = _optional_input(node, G_IDX)
        if g_idx is not None:
            order = g_idx.const_value.numpy() if g_idx.const_value is not None else None
            if order is None or not np.array_equal(order.reshape(-1), np.arange(k) // block):
                raise UnsupportedError("MatMulNBits", name, "a g_idx that reorders the blocks (act-order)")
        self._node = node
        return MatchResult()

    def rewrite(self, op, a: ir.Value, b: ir.Value, scales: ir.Value, **_):
        node = self._node
        k, n, bits, block = _sizes(node)
        blocks = -(-k // block)
        column = [n, blocks, 1]
        codes = op.Reshape(_unpacked(op, b, bits), _ints(op, [n, blocks, block]))
        zero_points = _optional_input(node, ZERO_POINTS)
        if zero_points is None:
            zero = op.Constant(value=ir.tensor(np.array(2 ** (bits - 1), scales.dtype.numpy())))
        elif zero_points.dtype == ir.DataType.UINT8:
            unpacked = op.Reshape(_unpacked(op, op.Reshape(zero_points, _ints(op, [n, -1])), bits), _ints(op, [n, -1]))
            first = op.Slice(unpacked, _ints(op, [0]), _ints(op, [blocks]), _ints(op, [1]))
            zero = op.Reshape(op.Cast(first, to=scales.dtype), _ints(op, column))
        else:
            zero = op.Reshape(zero_points, _ints(op, column))
        scale = op.Reshape(scales, _ints(op, column))
        weight = op.Reshape(op.Mul(op.Sub(op.Cast(codes, to=scales.dtype), zero), scale),
                            _ints(op, [n, blocks * block]))
        if blocks * block != k:
            weight = op.Slice(weight, _ints(op, [0]), _ints(op, [k]), _ints(op, [1]))
        result = op.MatMul(a, op.Transpose(weight, perm=[1, 0]))
        bias = _optional_input(node, BIAS)
        if bias is not None:
            result = op.Add(result, bias)
        result.producer().name = node.name
        self._record(f"MatMulNBits '{node.name}': {bits}-bit blocks of {block} unpacked, dequantized, MatMul "
                     f"[{k}, {n}]")
        return result


def _sizes(node: ir.Node) -> tuple[int, int, int, int]:
    attributes = node.attributes
    return (attributes.get_int("K"), attributes.get_int("N"), attributes.get_int("bits", 4),
            attributes.get_int("block_size"))


def _optional_input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


def _ints(op, values: list[int]) -> ir.Value:
    return op.Constant(value_ints=values)


def _unpacked(op, packed: ir.Value, bits: int) -> ir.Value:
    """uint8 [..., m] → its codes, low bits first: [..., m, 8 / bits] (as written for bits=8)."""
    if bits == 8:
        return packed
    modulus = op.Constant(value=ir.tensor(np.array(2 ** bits, np.uint8)))
    codes = []
    for position in range(8 // bits):
        shifted = packed if position == 0 else op.BitShift(
            packed, op.Constant(value=ir.tensor(np.array(position * bits, np.uint8))), direction="RIGHT")
        codes.append(op.Unsqueeze(op.Mod(shifted, modulus), _ints(op, [-1])))
    return op.Concat(*codes, axis=-1)


def applies_to(model: onnx.ModelProto) -> bool:
    return any(node.op_type == "MatMulNBits" and node.domain == DOMAIN for node in model.graph.node)


def rules(record: Callable[[str], None]) -> RewriteRuleSet:
    return RewriteRuleSet([DequantizedMatMul.rule(record)])
