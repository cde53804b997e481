"""Dequantize / quantize as linalg.generic ops, for the fused Q/DQ prologue and epilogue of an
attention (ONNX DequantizeLinear / QuantizeLinear semantics, per-tensor or per-axis):
  dequantize  x_f = (float(x) - float(zero_point)) · scale
  quantize    q   = saturate(round_half_even(y / scale) + zero_point)   (int8: [-128, 127],
              uint8: [0, 255]; float8e4m3fn: y / scale clamped to ±448, then rounded to f8)
Elementwise ops next to the attention: IREE fuses them into the attention's dispatch.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from kvattn.lowering.mlir_text import FunctionWriter, Value

_RANGE = {"i8": (-128, 127), "ui8": (0, 255)}
F8_MAX = 448.0


@dataclasses.dataclass(frozen=True)
class Dequantization:
    """How a quantized K or V of an attention becomes float: its scale and zero point, per
    tensor or per KV head (`per_head`: the scale has one entry per value of the role "h")."""

    scale: Value
    zero_point: Value | None
    per_head: bool

    def inputs(self, roles: Sequence[str]) -> list[tuple[Value, Sequence[str]]]:
        """The scale (and zero point) as generic inputs over an iteration space with `roles`."""
        parameter_roles = ["h"] if self.per_head else []
        assert set(parameter_roles) <= set(roles)
        return [(self.scale, parameter_roles)] + ([(self.zero_point, parameter_roles)] if self.zero_point else [])


def float8_e4m3fn_to_f32(b: FunctionWriter, value: Value) -> Value:
    """A float8e4m3fn (s eeee mmm, bias 7, no infinities, NaN = s 1111 111) as f32, rebuilt from
    its bits with integer ops that vectorize: the exponent rebiased to f32's (+120) and the
    mantissa moved to the top of f32's; subnormals (eeee = 0) as m·2⁻⁹. IREE 3.13's own
    `arith.extf` from f8 is several times slower on the CPU (per Q·Kᵀ dispatch of a decode over
    4000 keys: `benchmarks/RESULTS.md`)."""
    bits = b.cast("extui", b.cast("bitcast", value, "i8"), "i32")
    magnitude = b.binary("andi", bits, b.constant(0x7F, "i32"))
    shifted = b.binary("shli", magnitude, b.constant(20, "i32"))
    normal = b.cast("bitcast", b.binary("addi", shifted, b.constant(120 << 23, "i32")), "f32")
    subnormal = b.binary("mulf", b.cast("uitofp", magnitude, "f32"), b.constant(2.0 ** -9, "f32"))
    finite = b.select(b.compare("cmpi", "ult", magnitude, b.constant(8, "i32")), subnormal, normal)
    unsigned = b.select(b.compare("cmpi", "eq", magnitude, b.constant(0x7F, "i32")),
                        b.constant(float("nan"), "f32"), finite)
    sign = b.binary("shli", b.binary("andi", bits, b.constant(0x80, "i32")), b.constant(24, "i32"))
    return b.cast("bitcast", b.binary("ori", b.cast("bitcast", unsigned, "i32"), sign), "f32")


def dequantize(w: FunctionWriter, x: Value, scale: Value, zero_point: Value | None, axis: int) -> Value:
    dims = [f"d{i}" for i in range(x.type.rank)]
    parameter_map = [dims[axis % x.type.rank]] if scale.type.rank == 1 else []
    inputs = [(x, dims), (scale, parameter_map)] + ([(zero_point, parameter_map)] if zero_point else [])
    element = scale.type.element

    def body(b: FunctionWriter, block: list[Value]) -> Value:
        value = to_float(b, block[0], element)
        if zero_point is not None:
            value = b.binary("subf", value, to_float(b, block[2], element))
        return b.binary("mulf", value, block[1])

    return w.generic(dims, inputs, w.empty_like(x, element), body)


def dequantize_in_roles(w: FunctionWriter, x: Value, roles: Sequence[str], dequantization: "Dequantization | None") -> Value:
    """x (with dims in `roles`) dequantized as a separate elementwise op; x itself when not quantized."""
    if dequantization is None:
        return x
    return dequantize(w, x, dequantization.scale, dequantization.zero_point,
                      roles.index("h") if dequantization.per_head else 0)


def quantize(w: FunctionWriter, y: Value, scale: Value, zero_point: Value | None, axis: int, element: str) -> Value:
    dims = [f"d{i}" for i in range(y.type.rank)]
    parameter_map = [dims[axis % y.type.rank]] if scale.type.rank == 1 else []
    inputs = [(y, dims), (scale, parameter_map)] + ([(zero_point, parameter_map)] if zero_point else [])
    compute = scale.type.element

    def body(b: FunctionWriter, block: list[Value]) -> Value:
        scaled = b.binary("divf", block[0], block[1])
        if element == "f8E4M3FN":
            clamped = b.binary("minimumf", b.binary("maximumf", scaled, b.constant(-F8_MAX, compute)),
                               b.constant(F8_MAX, compute))
            return b.cast("truncf", clamped, element)
        rounded = b.op(f"math.roundeven {scaled} : {compute}", compute)
        if zero_point is not None:
            rounded = b.binary("addf", rounded, to_float(b, block[2], compute))
        low, high = _RANGE[element]
        clamped = b.binary("minimumf", b.binary("maximumf", rounded, b.constant(float(low), compute)),
                           b.constant(float(high), compute))
        signless = b.cast("fptoui" if element == "ui8" else "fptosi", clamped, "i8")
        return signless if element == "i8" else b.op(f"builtin.unrealized_conversion_cast {signless} : i8 to ui8", "ui8")

    return w.generic(dims, inputs, w.empty_like(y, element), body)


def to_float(b: FunctionWriter, value: Value, element: str) -> Value:
    """A stored element (int8, uint8, float8) as a float of type `element`."""
    if value.type == "f8E4M3FN":
        widened = float8_e4m3fn_to_f32(b, value)
        return widened if element == "f32" else b.cast("truncf", widened, element)  # exact: f16/bf16 hold every f8
    if value.type == "ui8":
        value = b.op(f"builtin.unrealized_conversion_cast {value} : ui8 to i8", "i8")
        return b.cast("uitofp", value, element)
    return b.cast("sitofp", value, element)
