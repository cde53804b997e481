"""Ranked tensor types as plain Python values, and conversions between MLIR, torch and numpy.

The runtime uses this module on machines that have IREE's runtime but not its compiler, so the
compiler's `ir` module is imported only by the functions that convert MLIR types.
"""

from __future__ import annotations

import dataclasses
import re

import ml_dtypes
import numpy as np
# Builtin MLIR element type -> numpy dtype name (ml_dtypes provides bfloat16 and float8).
_NUMPY_OF_ELEMENT = {
    "f64": "float64", "f32": "float32", "f16": "float16", "bf16": "bfloat16",
    "i64": "int64", "i32": "int32", "i16": "int16", "i8": "int8", "i1": "bool",
    "ui8": "uint8", "ui16": "uint16", "ui32": "uint32", "ui64": "uint64", "f8E4M3FN": "float8_e4m3fn",
}
FLOAT_ELEMENTS = ("f64", "f32", "f16", "bf16")
# torch's signed integer element types are signless in builtin tensors.
_BUILTIN_OF_TORCH_ELEMENT = {"si64": "i64", "si32": "i32", "si16": "i16", "si8": "i8"}
_VTENSOR = re.compile(r"!torch\.vtensor<\[([^\]]*)\],(\w+)>")


@dataclasses.dataclass(frozen=True)
class TensorType:
    """A ranked tensor type: shape (None for a dynamic dimension) and builtin element type."""

    shape: tuple[int | None, ...]
    element: str

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(d is not None for d in self.shape)

    @property
    def mlir(self) -> str:
        dims = "".join(f"{'?' if d is None else d}x" for d in self.shape)
        return f"tensor<{dims}{self.element}>"

    @property
    def numpy_dtype(self) -> np.dtype:
        return numpy_dtype(self.element)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.element)

    def with_element(self, element: str) -> "TensorType":
        return TensorType(self.shape, element)

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.numpy_dtype.name}[{dims}]"


def numpy_dtype(element: str) -> np.dtype:
    if element not in _NUMPY_OF_ELEMENT:
        raise ValueError(f"no numpy dtype for element type {element}")
    name = _NUMPY_OF_ELEMENT[element]
    if name in ("bfloat16", "float8_e4m3fn"):
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def from_ir(type_) -> TensorType:
    """A builtin RankedTensorType -> TensorType."""
    from iree.compiler import ir

    ranked = ir.RankedTensorType(type_)
    shape = tuple(None if ranked.is_dynamic_dim(i) else ranked.get_dim_size(i) for i in range(ranked.rank))
    return TensorType(shape, str(ranked.element_type))


def from_torch(type_) -> TensorType | None:
    """A `!torch.vtensor<[d0,d1],dtype>` -> TensorType; None when the type is not a ranked vtensor."""
    match = _VTENSOR.fullmatch(str(type_))
    if not match:
        return None
    dims_text, element = match.groups()
    shape = tuple(None if d.strip() == "?" else int(d) for d in dims_text.split(",") if d.strip())
    return TensorType(shape, _BUILTIN_OF_TORCH_ELEMENT.get(element, element))


def to_ir(tensor_type: TensorType):
    from iree.compiler import ir

    return ir.Type.parse(tensor_type.mlir)
