"""A small writer of MLIR function text for lowering rules; the only code that writes op text.

IREE has no Python builders for iree_linalg_ext ops, so each lowering rule writes the ops that
replace one kvattn op as the body of a function (`FunctionWriter`), and `splice` moves that
body in place of the op. Every op line carries the ONNX node's name as its location.

Sizes flow with values, whether they are known or not (as JAX's `eval_dynamic_shape` and
torch-mlir's `getDimOp` do): a `Dim` is a Python int for a static size or an SSA `index` Value
for a dynamic one. Each tensor Value carries the sizes of its dims; a tensor type is derived
from its sizes (`?` where the size is a Value), never stored beside them. Rules ask the writer
for sizes (`w.dim(x, 0)`), do arithmetic on them with `add`/`sub`/`mul`/`floordiv` (folded
when static), and create tensors from sizes (`empty`, `expand_shape`, ...), so a rule writes
the same code whether a size is known or not. A size that must agree between two operands at
run time is checked by `require_equal` (a `cf.assert`, which fails the call with a message
naming the node) unless both are static.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence, Union

from iree.compiler import ir

from kvattn.lowering.diagnostics import InternalError, KvattnError
from kvattn.lowering.tensor_types import TensorType


@dataclasses.dataclass(frozen=True)
class Value:
    name: str  # SSA name with its leading %
    type: TensorType | str  # a tensor, or a scalar type such as "f32" or "index"
    sizes: tuple["Dim", ...] | None = None  # a tensor's dim sizes (set for every tensor the writer makes)

    @property
    def mlir_type(self) -> str:
        return self.type.mlir if isinstance(self.type, TensorType) else self.type

    @property
    def rank(self) -> int:
        return self.type.rank

    @property
    def element(self) -> str:
        return self.type.element

    def __str__(self) -> str:
        return self.name


Dim = Union[int, Value]  # a static size, or an SSA value of type index


def known(sizes: Sequence[Dim]) -> tuple[int | None, ...]:
    """Each size where it is known at compile time, else None."""
    return tuple(d if isinstance(d, int) else None for d in sizes)


def tensor_type(sizes: Sequence[Dim], element: str) -> TensorType:
    return TensorType(known(sizes), element)


def mixed(dims: Sequence[Dim]) -> str:
    """Static and dynamic sizes as MLIR writes them in output_shape, offsets and slice sizes."""
    return "[" + ", ".join(str(d) for d in dims) + "]"


def affine_map(dims: Sequence[str], results: Sequence[str]) -> str:
    return f"affine_map<({', '.join(dims)}) -> ({', '.join(results)})>"


def float_literal(value: float, element: str) -> str:
    """An MLIR float literal; infinities and NaN as the hex bit pattern of the element type."""
    if math.isnan(value):
        return {"f32": "0x7FC00000", "f16": "0x7E00", "bf16": "0x7FC0", "f64": "0x7FF8000000000000"}[element]
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
    """Collects op lines; `op` names the result of each emitted op."""

    def __init__(self, location: str, indent: str = "  "):
        self.lines: list[str] = []
        self._location = location.replace("\\", "/").replace('"', "'")
        self._indent = indent
        self._count = 0
        self._dims: dict[tuple[str, int], Value] = {}  # one tensor.dim per (value, axis)
        self.notes: list[str] = []  # what the rule chose and why, for `kvattn inspect`

    def note(self, text: str) -> None:
        self.notes.append(text)

    def nested(self) -> "FunctionWriter":
        """A writer for a region body, indented one level deeper; `absorb` it when done."""
        inner = FunctionWriter(self._location, self._indent + "  ")
        inner._count = self._count
        inner._dims = dict(self._dims)  # sizes defined above are visible inside; new ones stay inside
        return inner

    def absorb(self, inner: "FunctionWriter") -> None:
        self.lines.extend(inner.lines)
        self._count = inner._count

    def fresh(self, hint: str = "v") -> str:
        self._count += 1
        return f"%{hint}{self._count}"

    def line(self, text: str) -> None:
        self.lines.append(f"{self._indent}{text}")

    @property
    def location(self) -> str:
        return f'loc("{self._location}")'

    def op(self, text: str, type_, hint: str = "v", sizes: Sequence[Dim] | None = None) -> Value:
        """Emit `%r = <text>` with this writer's location; returns %r with the given type."""
        name = self.fresh(hint)
        self.line(f"{name} = {text} {self.location}")
        return Value(name, type_, tuple(sizes) if sizes is not None else None)

    def region_op(self, head: str, block_args: Sequence[Value],
                  body: Callable[["FunctionWriter", list[Value]], Value], terminator: str, tail: str,
                  result_type, sizes: Sequence[Dim] | None, hint: str = "v") -> Value:
        """`%r = <head> { ^bb0(<block_args>): <body> <terminator> <yielded> : <type> } <tail>`,
        for ops with one region (linalg.generic, tensor.pad, iree_linalg_ext.attention / scatter)."""
        name = self.fresh(hint)
        self.line(f"{name} = {head} {{")
        self.line(f"^bb0({', '.join(f'{a.name}: {a.mlir_type}' for a in block_args)}):")
        inner = self.nested()
        yielded = body(inner, list(block_args))
        self.absorb(inner)
        self.line(f"  {terminator} {yielded} : {yielded.mlir_type}")
        self.line(f"}} {tail} {self.location}")
        return Value(name, result_type, tuple(sizes) if sizes is not None else None)

    def if_else(self, condition: Value, then_body: Callable[["FunctionWriter"], Value],
                else_body: Callable[["FunctionWriter"], Value], result_type, sizes: Sequence[Dim]) -> Value:
        """`scf.if` yielding one value: `then_body`'s when `condition` holds, else `else_body`'s."""
        name = self.fresh("if")
        type_text = result_type.mlir if isinstance(result_type, TensorType) else result_type
        self.line(f"{name} = scf.if {condition} -> ({type_text}) {{")
        for index, body in enumerate((then_body, else_body)):
            if index:
                self.line("} else {")
            inner = self.nested()
            yielded = body(inner)
            self.absorb(inner)
            self.line(f"  scf.yield {yielded} : {yielded.mlir_type}")
        self.line(f"}} {self.location}")
        return Value(name, result_type, tuple(sizes))

    # -- sizes -------------------------------------------------------------------------
    def dim(self, value: Value, axis: int) -> Dim:
        """The size of `value`'s dim `axis`: static, carried, or one cached tensor.dim."""
        if value.sizes is not None:
            return value.sizes[axis]
        static = value.type.shape[axis]
        if static is not None:
            return static
        key = (value.name, axis)
        if key not in self._dims:
            self._dims[key] = self.op(f"tensor.dim {value}, {self.index(axis)} : {value.mlir_type}", "index", "dim")
        return self._dims[key]

    def sizes(self, value: Value) -> tuple[Dim, ...]:
        return tuple(self.dim(value, axis) for axis in range(value.rank))

    def with_sizes(self, value: Value) -> Value:
        """`value` carrying its sizes (a function argument gets its tensor.dim ops here)."""
        return dataclasses.replace(value, sizes=self.sizes(value))

    def index(self, size: Dim) -> Value:
        """A size as an index value (a constant when static)."""
        if isinstance(size, Value):
            return size
        return self.op(f"arith.constant {size} : index", "index", "c")

    def scalar(self, size: Dim, scalar: str) -> Value:
        """A size as an integer scalar of type `scalar` (e.g. i32 for positions in a body)."""
        if isinstance(size, int):
            return self.constant(size, scalar)
        return self.cast("index_cast", size, scalar)

    def _arith(self, name: str, fold: Callable[[int, int], int], a: Dim, b: Dim) -> Dim:
        if isinstance(a, int) and isinstance(b, int):
            return fold(a, b)
        return self.op(f"arith.{name} {self.index(a)}, {self.index(b)} : index", "index", "dim")

    def add(self, a: Dim, b: Dim) -> Dim:
        if a == 0 or b == 0:
            return b if a == 0 else a
        return self._arith("addi", lambda x, y: x + y, a, b)

    def sub(self, a: Dim, b: Dim) -> Dim:
        return a if b == 0 else self._arith("subi", lambda x, y: x - y, a, b)

    def mul(self, a: Dim, b: Dim) -> Dim:
        if a == 1 or b == 1:
            return b if a == 1 else a
        return self._arith("muli", lambda x, y: x * y, a, b)

    def floordiv(self, a: Dim, b: int) -> Dim:
        return a if b == 1 else self._arith("divui", lambda x, y: x // y, a, b)

    def product(self, sizes: Sequence[Dim]) -> Dim:
        total: Dim = 1
        for size in sizes:
            total = self.mul(total, size)
        return total

    def require_equal(self, a: Dim, b: Dim, message: str) -> None:
        """Fail the call at run time with `message` (which should name the node) unless a == b;
        static sizes are compared now (a KvattnError when they differ)."""
        if isinstance(a, int) and isinstance(b, int):
            if a != b:
                raise KvattnError(f"{message}: {a} vs {b}")
            return
        if a == b:  # the same size value
            return
        self.require(self.compare("cmpi", "eq", self.index(a), self.index(b)), message)

    def require(self, condition: Value, message: str) -> None:
        text = message.replace("\\", "/").replace('"', "'")
        self.line(f'cf.assert {condition}, "{text}" {self.location}')

    def require_in_range(self, values: Value, lowest: Value, highest: Value, message: str) -> None:
        """Fail the call at run time with `message` unless lowest <= v <= highest for every
        element v of the integer tensor `values` (bounds of its element type): an and-reduction on
        the device whose i1 the host reads back before it launches anything that depends on it."""
        dims = [f"d{axis}" for axis in range(values.rank)]

        def within(b: "FunctionWriter", args: list[Value]) -> Value:
            inside = b.binary("andi", b.compare("cmpi", "sge", args[0], lowest),
                              b.compare("cmpi", "sle", args[0], highest))
            return b.binary("andi", args[1], inside)

        every = self.generic(dims, [(values, dims)], self.fill(self.constant(1, "i1"), []), within,
                             reduction_dims=dims)
        self.require(self.extract(every, []), message)

    def reshape_barrier(self, value: Value, side: str) -> Value:
        """`value` through an iree_tensor_ext.compute_barrier: "start" keeps reshapes above it
        from moving down past it, "end" keeps reshapes below it from moving up."""
        value = self.with_sizes(value)
        dynamic = ", ".join(str(d) for d in value.sizes if isinstance(d, Value))
        return self.op(f"iree_tensor_ext.compute_barrier.{side} {value} : {value.mlir_type}"
                       f"{{{dynamic}}} -> {value.mlir_type}" if dynamic else
                       f"iree_tensor_ext.compute_barrier.{side} {value} : {value.mlir_type} -> {value.mlir_type}",
                       value.type, "barrier", value.sizes)

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
        return index if scalar == "index" else self.cast("index_cast", index, scalar)

    def extract(self, tensor: Value, indices: Sequence[Value]) -> Value:
        return self.op(f"tensor.extract {tensor}[{', '.join(str(i) for i in indices)}] : {tensor.mlir_type}",
                       tensor.element)

    # -- tensors -----------------------------------------------------------------------
    def empty(self, sizes: Sequence[Dim], element: str) -> Value:
        out = tensor_type(sizes, element)
        dynamic = ", ".join(str(d) for d in sizes if isinstance(d, Value))
        return self.op(f"tensor.empty({dynamic}) : {out.mlir}", out, "e", sizes)

    def empty_like(self, value: Value, element: str | None = None) -> Value:
        return self.empty(self.sizes(value), element or value.element)

    def fill(self, scalar: Value, sizes: Sequence[Dim]) -> Value:
        empty = self.empty(sizes, scalar.mlir_type)
        return self.op(f"linalg.fill ins({scalar} : {scalar.mlir_type}) outs({empty} : {empty.mlir_type}) -> "
                       f"{empty.mlir_type}", empty.type, sizes=sizes)

    def expand_shape(self, value: Value, groups: Sequence[Sequence[int]], sizes: Sequence[Dim]) -> Value:
        out = tensor_type(sizes, value.element)
        return self.op(f"tensor.expand_shape {value} {_groups(groups)} output_shape {mixed(sizes)} : "
                       f"{value.mlir_type} into {out.mlir}", out, sizes=sizes)

    def collapse_shape(self, value: Value, groups: Sequence[Sequence[int]]) -> Value:
        sizes = [self.product([self.dim(value, i) for i in group]) for group in groups]
        out = tensor_type(sizes, value.element)
        return self.op(f"tensor.collapse_shape {value} {_groups(groups)} : {value.mlir_type} into {out.mlir}", out,
                       sizes=sizes)

    def transpose(self, value: Value, permutation: Sequence[int]) -> Value:
        sizes = [self.dim(value, p) for p in permutation]
        empty = self.empty(sizes, value.element)
        return self.op(f"linalg.transpose ins({value} : {value.mlir_type}) outs({empty} : {empty.mlir_type}) "
                       f"permutation = {list(permutation)}", empty.type, sizes=sizes)

    def pad_high(self, value: Value, dim: int, amount: Dim, pad: Value) -> Value:
        """Pad `amount` elements of `pad` at the end of dimension `dim`."""
        sizes = list(self.sizes(value))
        sizes[dim] = self.add(sizes[dim], amount)
        out = tensor_type(sizes, value.element)
        high = [amount if d == dim else 0 for d in range(value.rank)]
        indices = [Value(f"%pad_i{k}", "index") for k in range(value.rank)]
        return self.region_op(f"tensor.pad {value} low{[0] * value.rank} high{mixed(high)}", indices,
                              lambda b, _: pad, "tensor.yield", f": {value.mlir_type} to {out.mlir}", out, sizes,
                              "pad")

    def leading_slice(self, value: Value, dim: int, size: Dim) -> Value:
        """The first `size` elements along `dim`."""
        return self.slice(value, dim, 0, size)

    def slice(self, value: Value, dim: int, offset: Dim, size: Dim) -> Value:
        """`size` elements along `dim` from `offset` on."""
        sizes = list(self.sizes(value))
        sizes[dim] = size
        out = tensor_type(sizes, value.element)
        offsets, ones = [offset if d == dim else 0 for d in range(value.rank)], [1] * value.rank
        return self.op(f"tensor.extract_slice {value}{mixed(offsets)} {mixed(sizes)} {ones} : {value.mlir_type} to "
                       f"{out.mlir}", out, sizes=sizes)

    def insert_slice(self, source: Value, dest: Value, offsets: Sequence[Dim]) -> Value:
        strides = [1] * source.rank
        return self.op(f"tensor.insert_slice {source} into {dest}{mixed(offsets)} {mixed(self.sizes(source))} "
                       f"{strides} : {source.mlir_type} into {dest.mlir_type}", dest.type, sizes=self.sizes(dest))

    def generic(
        self,
        dims: Sequence[str],
        inputs: Sequence[tuple[Value, Sequence[str]]],
        init: Value,
        body: Callable[["FunctionWriter", list[Value]], Value],
        reduction_dims: Sequence[str] = (),
        init_results: Sequence[str] | None = None,
        marker: str | None = None,
        compilation_info: str | None = None,
    ) -> Value:
        """linalg.generic over `dims`; each input comes with its map's result expressions; the
        output map is `init_results` (default: all dims but the reduction ones). `body` gets the
        block arguments (inputs then the init element) and returns the value to yield. `marker`:
        a unit attribute that names the op for a later pass; `compilation_info`: IREE's codegen
        config for the op (attention_tiles)."""
        out_results = list(init_results) if init_results is not None else [d for d in dims if d not in reduction_dims]
        maps = [affine_map(dims, results) for _, results in inputs] + [affine_map(dims, out_results)]
        iterators = ", ".join('"reduction"' if d in reduction_dims else '"parallel"' for d in dims)
        ins = ""
        if inputs:
            ins = (f"ins({', '.join(str(v) for v, _ in inputs)} : "
                   f"{', '.join(v.mlir_type for v, _ in inputs)}) ")
        tag = self._count + 1  # the generic's own number names its block arguments
        args = [Value(f"%in{k}_g{tag}", v.element) for k, (v, _) in enumerate(inputs)]
        args.append(Value(f"%out_g{tag}", init.element))
        marked = (f", {marker}" if marker else "") + (f", compilation_info = {compilation_info}"
                                                      if compilation_info else "")
        head = (f"linalg.generic {{indexing_maps = [{', '.join(maps)}], iterator_types = [{iterators}]{marked}}} "
                f"{ins}outs({init} : {init.mlir_type})")
        return self.region_op(head, args, body, "linalg.yield", f"-> {init.mlir_type}", init.type,
                              self.sizes(init), "g")

    def function(self, name: str, args: Sequence[Value], results: Sequence[Value]) -> str:
        signature = ", ".join(f"{a.name}: {a.mlir_type}" for a in args)
        result_types = ", ".join(r.mlir_type for r in results)
        returned = ", ".join(r.name for r in results)
        body = "\n".join(self.lines)
        return (f"func.func @{name}({signature}) -> ({result_types}) {{\n{body}\n"
                f"  return {returned} : {result_types}\n}}\n")


def _groups(groups: Sequence[Sequence[int]]) -> str:
    return "[" + ", ".join("[" + ", ".join(str(i) for i in g) + "]" for g in groups) + "]"


def parse_generated(text: str) -> ir.Module:
    """Parse text a rule generated; a parse error is an internal error showing the numbered text."""
    try:
        return ir.Module.parse(text)
    except ir.MLIRError as exc:
        numbered = "\n".join(f"{n:4d} | {line}" for n, line in enumerate(text.splitlines(), 1))
        raise InternalError(f"generated MLIR does not parse: {exc}\n{numbered}") from None


def splice(operation: ir.Operation, function_text: str, operands: Sequence[ir.Value],
           results: Sequence[ir.Value]) -> list[str]:
    """Replace `operation` by the body of the one function in `function_text`: its arguments
    become `operands`, and the values it returns replace `results`. Returns the names of the
    ops moved in, in order."""
    parsed = parse_generated(function_text)
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
