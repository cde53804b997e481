"""A small writer of MLIR function text for lowering rules.

IREE has no Python builders for iree_linalg_ext ops, so each lowering rule writes the ops that
replace one kvattn op as the body of a function (`FunctionWriter`), and `splice` moves that
body in place of the op. Values are (SSA name, type) pairs; every op line carries the ONNX
node's name as its location.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from iree.compiler import ir

from kvattn.lowering.tensor_types import TensorType


@dataclasses.dataclass(frozen=True)
class Value:
    name: str  # SSA name with its leading %
    type: TensorType | str  # a tensor, or a scalar type such as "f32"

    @property
    def mlir_type(self) -> str:
        return self.type.mlir if isinstance(self.type, TensorType) else self.type

    def __str__(self) -> str:
        return self.name


def affine_map(dims: Sequence[str], results: Sequence[str]) -> str:
    return f"affine_map<({', '.join(dims)}) -> ({', '.join(results)})>"


def float_literal(value: float, element: str) -> str:
    """An MLIR float literal; infinities as the hex bit pattern of the element type."""
    if math.isinf(value):
        bits = {"f32": ("0x7F800000", "0xFF800000"), "f16": ("0x7C00", "0xFC00"),
                "bf16": ("0x7F80", "0xFF80"), "f64": ("0x7FF0000000000000", "0xFFF0000000000000")}
        return bits[element][value < 0]
    text = repr(float(value))
    mantissa, exponent_mark, exponent = text.partition("e")
    if "." not in mantissa and "n" not in mantissa:  # MLIR wants 1.0e-05, not 1e-05
        mantissa += ".0"
    return mantissa + exponent_mark + exponent


class FunctionWriter:
    """Collects op lines; `value` names the result of each emitted op."""

    def __init__(self, location: str, indent: str = "  "):
        self.lines: list[str] = []
        self._location = location.replace("\\", "/").replace('"', "'")
        self._indent = indent
        self._count = 0
        self.notes: list[str] = []  # what the rule chose and why, for `kvattn inspect`

    def note(self, text: str) -> None:
        self.notes.append(text)

    def nested(self) -> "FunctionWriter":
        """A writer for a region body, indented one level deeper; `absorb` it when done."""
        inner = FunctionWriter(self._location, self._indent + "  ")
        inner._count = self._count
        return inner

    def absorb(self, inner: "FunctionWriter") -> None:
        self.lines.extend(inner.lines)
        self._count = inner._count

    def fresh(self, hint: str = "v") -> str:
        self._count += 1
        return f"%{hint}{self._count}"

    def line(self, text: str) -> None:
        self.lines.append(f"{self._indent}{text}")

    def op(self, text: str, type_, hint: str = "v") -> Value:
        """Emit `%r = <text>` with this writer's location; returns %r with the given type."""
        name = self.fresh(hint)
        self.line(f'{name} = {text} loc("{self._location}")')
        return Value(name, type_)

    # -- scalars -----------------------------------------------------------------------
    def constant(self, value, scalar: str) -> Value:
        literal = float_literal(value, scalar) if scalar.startswith(("f", "bf")) else str(int(value))
        return self.op(f"arith.constant {literal} : {scalar}", scalar, "c")

    def binary(self, op_name: str, lhs: Value, rhs: Value) -> Value:
        return self.op(f"arith.{op_name} {lhs}, {rhs} : {lhs.mlir_type}", lhs.type)

    def compare(self, kind: str, predicate: str, lhs: Value, rhs: Value) -> Value:
        return self.op(f"arith.{kind} {predicate}, {lhs}, {rhs} : {lhs.mlir_type}", "i1")

    def select(self, condition: Value, true: Value, false: Value) -> Value:
        return self.op(f"arith.select {condition}, {true}, {false} : {true.mlir_type}", true.type)

    def cast(self, op_name: str, value: Value, scalar: str) -> Value:
        return self.op(f"arith.{op_name} {value} : {value.mlir_type} to {scalar}", scalar)

    def loop_index(self, dim: int, scalar: str = "i64") -> Value:
        index = self.op(f"linalg.index {dim} : index", "index", "i")
        return self.cast("index_cast", index, scalar)

    # -- tensors -----------------------------------------------------------------------
    def empty(self, type_: TensorType) -> Value:
        return self.op(f"tensor.empty() : {type_.mlir}", type_, "e")

    def fill(self, scalar: Value, type_: TensorType) -> Value:
        empty = self.empty(type_)
        return self.op(f"linalg.fill ins({scalar} : {scalar.mlir_type}) outs({empty} : {type_.mlir}) -> {type_.mlir}",
                       type_)

    def expand_shape(self, value: Value, groups: Sequence[Sequence[int]], shape: Sequence[int]) -> Value:
        out = value.type.with_shape(shape)
        return self.op(
            f"tensor.expand_shape {value} {_groups(groups)} output_shape {list(shape)} : {value.mlir_type} into {out.mlir}",
            out,
        )

    def collapse_shape(self, value: Value, groups: Sequence[Sequence[int]]) -> Value:
        shape = [math.prod(value.type.shape[i] for i in group) for group in groups]
        out = value.type.with_shape(shape)
        return self.op(f"tensor.collapse_shape {value} {_groups(groups)} : {value.mlir_type} into {out.mlir}", out)

    def transpose(self, value: Value, permutation: Sequence[int]) -> Value:
        out = value.type.with_shape([value.type.shape[p] for p in permutation])
        empty = self.empty(out)
        return self.op(
            f"linalg.transpose ins({value} : {value.mlir_type}) outs({empty} : {out.mlir}) permutation = {list(permutation)}",
            out,
        )

    def pad_high(self, value: Value, dim: int, amount: int, pad: Value) -> Value:
        """Pad `amount` elements of `pad` at the end of dimension `dim`."""
        shape = list(value.type.shape)
        shape[dim] += amount
        out = value.type.with_shape(shape)
        high = [amount if d == dim else 0 for d in range(value.type.rank)]
        name = self.fresh("pad")
        indices = ", ".join(f"%pad_i{k}: index" for k in range(value.type.rank))
        self.line(f"{name} = tensor.pad {value} low{[0] * value.type.rank} high{high} {{")
        self.line(f"^bb0({indices}):")
        self.line(f"  tensor.yield {pad} : {pad.mlir_type}")
        self.line(f'}} : {value.mlir_type} to {out.mlir} loc("{self._location}")')
        return Value(name, out)

    def leading_slice(self, value: Value, dim: int, size: Value) -> Value:
        """The first `size` (an index value) elements along `dim`; that dim becomes dynamic."""
        shape = list(value.type.shape)
        sizes = [str(size) if d == dim else str(n) for d, n in enumerate(shape)]
        shape[dim] = None
        out = value.type.with_shape(shape)
        zeros, ones = [0] * len(shape), [1] * len(shape)
        return self.op(f"tensor.extract_slice {value}{zeros} [{', '.join(sizes)}] {ones} : "
                       f"{value.mlir_type} to {out.mlir}", out)

    def insert_slice(self, source: Value, dest: Value, offsets: Sequence[int]) -> Value:
        sizes = list(source.type.shape)
        strides = [1] * len(sizes)
        return self.op(
            f"tensor.insert_slice {source} into {dest}{list(offsets)} {sizes} {strides} : "
            f"{source.mlir_type} into {dest.mlir_type}",
            dest.type,
        )

    def generic(
        self,
        dims: Sequence[str],
        inputs: Sequence[tuple[Value, Sequence[str]]],
        init: Value,
        body: Callable[["FunctionWriter", list[Value]], Value],
        reduction_dims: Sequence[str] = (),
        init_results: Sequence[str] | None = None,
    ) -> Value:
        """linalg.generic over `dims`; each input comes with its map's result expressions; the
        output map is `init_results` (default: all dims but the reduction ones). `body` gets the
        block arguments (inputs then the init element) and returns the value to yield."""
        out_results = list(init_results) if init_results is not None else [d for d in dims if d not in reduction_dims]
        maps = [affine_map(dims, results) for _, results in inputs] + [affine_map(dims, out_results)]
        iterators = ", ".join('"reduction"' if d in reduction_dims else '"parallel"' for d in dims)
        name = self.fresh("g")
        ins = ""
        if inputs:
            ins = (f"ins({', '.join(str(v) for v, _ in inputs)} : "
                   f"{', '.join(v.mlir_type for v, _ in inputs)}) ")
        self.line(f"{name} = linalg.generic {{indexing_maps = [{', '.join(maps)}], iterator_types = [{iterators}]}} "
                  f"{ins}outs({init} : {init.mlir_type}) {{")
        element_of = lambda v: v.type.element  # noqa: E731
        args = [Value(f"%in{k}_{name[1:]}", element_of(v)) for k, (v, _) in enumerate(inputs)]
        args.append(Value(f"%out_{name[1:]}", element_of(init)))
        self.line(f"^bb0({', '.join(f'{a.name}: {a.type}' for a in args)}):")
        inner = self.nested()
        result = body(inner, args)
        self.absorb(inner)
        self.line(f"  linalg.yield {result} : {result.mlir_type}")
        self.line(f'}} -> {init.mlir_type} loc("{self._location}")')
        return Value(name, init.type)

    def function(self, name: str, args: Sequence[Value], results: Sequence[Value]) -> str:
        signature = ", ".join(f"{a.name}: {a.mlir_type}" for a in args)
        result_types = ", ".join(r.mlir_type for r in results)
        returned = ", ".join(r.name for r in results)
        body = "\n".join(self.lines)
        return (f"func.func @{name}({signature}) -> ({result_types}) {{\n{body}\n"
                f"  return {returned} : {result_types}\n}}\n")


def _groups(groups: Sequence[Sequence[int]]) -> str:
    return "[" + ", ".join("[" + ", ".join(str(i) for i in g) + "]" for g in groups) + "]"


def splice(operation: ir.Operation, function_text: str, operands: Sequence[ir.Value],
           results: Sequence[ir.Value]) -> list[str]:
    """Replace `operation` by the body of the one function in `function_text`: its arguments
    become `operands`, and the values it returns replace `results`. Returns the names of the
    ops moved in, in order."""
    parsed = ir.Module.parse(function_text)
    block = parsed.body.operations[0].regions[0].blocks[0]
    for argument, value in zip(block.arguments, operands, strict=True):
        argument.replace_all_uses_with(value)
    body_ops = list(block.operations)
    for inner in body_ops[:-1]:
        inner.operation.move_before(operation)
    for old, new in zip(results, body_ops[-1].operands, strict=True):
        old.replace_all_uses_with(new)
    operation.erase()
    return [inner.operation.name for inner in body_ops[:-1]]
