"""FlexAttention's score_mod / prob_mod subgraphs (regions of torch.operator "onnx.X" ops) as
elementwise functions of the score, ready for `attention_routes.Mod`.

Everything in a subgraph that does not depend on the score's values — constants, and Shape /
Gather / Range / Reshape / comparison chains that build positions from the score's static
shape — is folded here with numpy. What remains must be elementwise in the score; its
operands are the score and folded constants. A mod whose constants are all scalars is
position-free and can run in the fused attention's score region; otherwise each non-scalar
constant (a position-dependent tensor such as a causal mask) becomes a dense tensor read by
the unfused route, broadcast over [B, Hkv, G, L, S].
"""

from __future__ import annotations

import dataclasses

import numpy as np
from iree.compiler import ir

from kvattn.lowering.attention_routes import SCORE_ROLES, Mod
from kvattn.lowering.diagnostics import UnsupportedError
from kvattn.lowering.mlir_text import FunctionWriter, Value, float_literal
from kvattn.lowering.tensor_types import TensorType

SCORE = "score"  # the mod's input


@dataclasses.dataclass(frozen=True)
class Expr:
    """A score-dependent elementwise operation; args are Expr, SCORE or numpy constants."""

    op: str
    args: tuple


_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Neg", "Tanh", "Exp", "Abs", "Sqrt", "Max", "Min", "Where", "Identity",
                "Cast", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal", "Sigmoid", "Relu"}
_FOLD = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Neg": np.negative, "Tanh": np.tanh, "Exp": np.exp,
    "Abs": np.abs, "Sqrt": np.sqrt, "Max": np.maximum, "Min": np.minimum, "Greater": np.greater, "Less": np.less,
    "GreaterOrEqual": np.greater_equal, "LessOrEqual": np.less_equal, "Equal": np.equal, "Identity": lambda x: x,
    "Not": np.logical_not, "And": np.logical_and, "Or": np.logical_or, "Where": np.where,
}


class ModProgram:
    """One subgraph, analysed for a score tensor of shape [B, Hq, L, S] (None: dynamic; a mod
    that reads the score's shape needs it static)."""

    def __init__(self, block: ir.Block, score_shape: tuple[int, ...], onnx_op: str, node: str, name: str):
        self._shape, self._onnx_op, self._node, self._name = score_shape, onnx_op, node, name
        values: dict = {block.arguments[0]: SCORE}
        result = None
        for op in block.operations:
            op = op.operation
            if op.name == "torch.operator_terminator":
                result = self._value(values, op.operands[0])
            elif op.name == "torch.constant.none":
                continue
            elif op.name == "torch.operator":
                values[op.results[0]] = self._evaluate(op, [self._value(values, v) for v in op.operands])
            else:
                raise self._unsupported(f"op {op.name}")
        self.result = result

    @property
    def position_free(self) -> bool:
        return all(np.size(c) == 1 for c in _constants(self.result))

    def mod(self, w: FunctionWriter, shapes) -> Mod:
        """The mod for attention_routes; non-scalar constants become dense tensors in `w`."""
        inputs, index_of = [], {}
        for constant in _constants(self.result):
            if np.size(constant) > 1 and id(constant) not in index_of:
                index_of[id(constant)] = len(inputs)
                inputs.append(_dense(w, constant, shapes))

        def apply(b: FunctionWriter, score: Value, extra: list[Value]) -> Value:
            def emit(node):
                if node is SCORE:
                    return score
                if isinstance(node, np.ndarray):
                    if np.size(node) > 1:
                        return extra[index_of[id(node)]]
                    value = node.reshape(()).item()
                    return b.constant(value, "i1" if node.dtype == bool else "f32")
                return _emit_op(b, node.op, [emit(a) for a in node.args])

            result = emit(self.result)
            return result if result.type == "f32" else b.cast("uitofp", result, "f32")

        return Mod(apply, inputs)

    # -- folding ---------------------------------------------------------------------------
    def _value(self, values: dict, value: ir.Value):
        if value in values:
            return values[value]
        owner = value.owner  # an op, or a block for a block argument
        if hasattr(owner, "name") and owner.operation.name == "torch.operator" \
                and _onnx_name(owner.operation) == "Constant":
            return _constant(owner.operation)
        raise self._unsupported("a value from outside the subgraph that is not a constant")

    def _evaluate(self, op: ir.Operation, args: list):
        name = _onnx_name(op)
        attrs = {n.removeprefix("torch.onnx."): op.attributes[n] for n in op.attributes if n.startswith("torch.onnx.")}
        if name == "Constant":
            return _constant(op)
        if name == "Shape":
            if args[0] is not SCORE:
                raise self._unsupported("Shape of anything but the score")
            if None in self._shape:
                raise self._unsupported(f"Shape of a score with dynamic dims {list(self._shape)}")
            return np.array(self._shape, dtype=np.int64)
        if any(isinstance(a, Expr) or a is SCORE for a in args):
            if name not in _ELEMENTWISE:
                raise self._unsupported(f"{name} applied to the score")
            if name == "Cast" and ir.IntegerAttr(attrs["to"]).value not in (1, 10, 11, 16):
                raise self._unsupported("Cast of the score to a non-float type")
            return Expr(name, tuple(args))
        return self._fold(name, args, attrs)

    def _fold(self, name: str, args: list, attrs: dict):
        if name in _FOLD:
            return np.asarray(_FOLD[name](*args))
        if name == "Div":
            return np.asarray(args[0] / args[1] if args[0].dtype.kind == "f" else args[0] // args[1])
        if name == "Gather":
            axis = ir.IntegerAttr(attrs["axis"]).value if "axis" in attrs else 0
            return np.take(args[0], args[1], axis=axis)
        if name == "Range":
            return np.arange(args[0].item(), args[1].item(), args[2].item(), dtype=args[0].dtype)
        if name == "Reshape":
            shape = [d if d != 0 else args[0].shape[i] for i, d in enumerate(args[1].tolist())]
            return args[0].reshape(shape)
        if name == "Unsqueeze":
            return np.expand_dims(args[0], tuple(args[1].tolist()))
        if name == "Squeeze":
            return np.squeeze(args[0], tuple(args[1].tolist()) if len(args) > 1 else None)
        if name == "Cast":
            from onnx.helper import tensor_dtype_to_np_dtype

            return args[0].astype(tensor_dtype_to_np_dtype(ir.IntegerAttr(attrs["to"]).value))
        if name == "Concat":
            return np.concatenate(args, axis=ir.IntegerAttr(attrs["axis"]).value)
        if name == "Expand":
            return np.broadcast_to(args[0], np.broadcast_shapes(args[0].shape, tuple(args[1].tolist()))).copy()
        raise self._unsupported(f"op {name}")

    def _unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(self._onnx_op, self._node, f"{what} in {self._name}")


def _onnx_name(op: ir.Operation) -> str:
    return ir.StringAttr(op.attributes["name"]).value.removeprefix("onnx.")


def _constant(op: ir.Operation) -> np.ndarray:
    attr = op.attributes["torch.onnx.value"]
    dense = ir.DenseElementsAttr(attr)
    shape = tuple(ir.ShapedType(dense.type).shape)
    element = str(ir.ShapedType(dense.type).element_type)
    dtype = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "si64": np.int64, "i64": np.int64,
             "si32": np.int32, "i1": bool}.get(element)
    if dtype is None:
        raise ValueError(f"constant of element type {element}")
    if dense.is_splat:
        return np.full(shape, dense.get_splat_value().value, dtype=dtype)
    return np.array(dense, dtype=dtype).reshape(shape)


def _constants(node) -> list[np.ndarray]:
    if isinstance(node, np.ndarray):
        return [node]
    if isinstance(node, Expr):
        return [c for a in node.args for c in _constants(a)]
    return []


_BINARY = {"Add": "addf", "Sub": "subf", "Mul": "mulf", "Div": "divf", "Max": "maximumf", "Min": "minimumf"}
_UNARY_MATH = {"Tanh": "math.tanh", "Exp": "math.exp", "Abs": "math.absf", "Sqrt": "math.sqrt"}
_COMPARE = {"Greater": "ogt", "Less": "olt", "GreaterOrEqual": "oge", "LessOrEqual": "ole", "Equal": "oeq"}


def _emit_op(b: FunctionWriter, name: str, args: list[Value]) -> Value:
    if name in _BINARY:
        return b.binary(_BINARY[name], *args)
    if name in _UNARY_MATH:
        return b.op(f"{_UNARY_MATH[name]} {args[0]} : f32", "f32")
    if name in _COMPARE:
        return b.compare("cmpf", _COMPARE[name], *args)
    if name == "Neg":
        return b.op(f"arith.negf {args[0]} : f32", "f32")
    if name == "Where":
        return b.select(*args)
    if name == "Sigmoid":
        one = b.constant(1.0, "f32")
        exp = b.op(f"math.exp {b.op(f'arith.negf {args[0]} : f32', 'f32')} : f32", "f32")
        return b.binary("divf", one, b.binary("addf", one, exp))
    if name == "Relu":
        return b.binary("maximumf", args[0], b.constant(0.0, "f32"))
    return args[0]  # Identity, Cast between float types (computed in f32)


def _dense(w: FunctionWriter, constant: np.ndarray, shapes) -> tuple[Value, list[str]]:
    """A constant broadcastable to [B, Hq, L, S] as a dense tensor over SCORE_ROLES, with the
    map results that broadcast it (0 for its size-1 dims)."""
    array = constant.reshape((1,) * (4 - constant.ndim) + constant.shape)
    batch, heads, queries, keys = array.shape
    if heads == shapes.q_heads:
        array = array.reshape(batch, shapes.kv_heads, shapes.group, queries, keys)
    else:
        array = array.reshape(batch, 1, 1, queries, keys)
    results = [role if size != 1 else "0" for role, size in zip(SCORE_ROLES, array.shape)]
    element = "i1" if array.dtype == bool else "f32"
    type_ = TensorType(array.shape, element)
    literal = _literal(array if element == "i1" else array.astype(np.float32), element)
    return w.op(f"arith.constant dense<{literal}> : {type_.mlir}", type_, "cst"), results


def _literal(array: np.ndarray, element: str) -> str:
    if array.ndim == 0:
        value = array.item()
        return ("true" if value else "false") if element == "i1" else float_literal(value, element)
    return "[" + ", ".join(_literal(a, element) for a in array) + "]"

