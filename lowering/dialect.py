"""The kvattn dialect: one registry of op specs.

kvattn ops live in the IR as generic unregistered operations (`"kvattn.attention"(...)`), so
every stage prints and re-parses as text. This module is the only place that writes a
`kvattn.*` name: it defines each op's operands, results and typed attributes (mirroring the
ONNX operator), builds ops, gives typed access to them (`KvOp`), and verifies them with
errors that name the ONNX node.

Optional operands and results are recorded with `operandSegmentSizes` / `resultSegmentSizes`
(one 0/1 entry per spec operand/result; trailing zeros may be left out), as MLIR does for ops
with optional operands.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from iree.compiler import ir

from kvattn.lowering import tensor_types
from kvattn.lowering.diagnostics import NodeError, UnsupportedError
from kvattn.lowering.tensor_types import TensorType

DIALECT = "kvattn"
NODE_ATTR = "onnx_node"
OPSET_ATTR = "onnx_opset"
OPERAND_SEGMENTS = "operandSegmentSizes"
RESULT_SEGMENTS = "resultSegmentSizes"


@dataclasses.dataclass(frozen=True)
class Attr:
    """A typed attribute. kind is 'int', 'float' or 'str'; default None means 'absent'."""

    name: str
    kind: str
    default: object = None


@dataclasses.dataclass(frozen=True)
class OpSpec:
    name: str  # full op name, e.g. "kvattn.attention"
    onnx_op: str  # the ONNX operator it mirrors
    operands: tuple[str, ...]
    optional_operands: frozenset[str]
    results: tuple[str, ...]
    optional_results: frozenset[str]
    attributes: tuple[Attr, ...]
    verifier: Callable[["KvOp"], None]
    onnx_domain: str = ""  # the operator's ONNX domain ("" is the default domain)
    regions: tuple[str, ...] = ()  # graph attributes, kept as regions (empty when absent)

    def attribute(self, name: str) -> Attr:
        for attr in self.attributes:
            if attr.name == name:
                return attr
        raise KeyError(f"{self.name} has no attribute '{name}'")


_REGISTRY: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    _REGISTRY[spec.name] = spec
    return spec


def spec_named(name: str) -> OpSpec:
    return _REGISTRY[name]


def registered_ops() -> tuple[OpSpec, ...]:
    return tuple(_REGISTRY.values())


def is_kvattn_op(op: ir.Operation) -> bool:
    return op.name.startswith(DIALECT + ".")


class KvOp:
    """Typed view of one kvattn op in the IR."""

    def __init__(self, operation: ir.Operation):
        self.operation = operation.operation
        self.spec = spec_named(self.operation.name)
        self._operands = _segments(self.operation, OPERAND_SEGMENTS, self.spec.operands, self.operation.operands)
        self._results = _segments(self.operation, RESULT_SEGMENTS, self.spec.results, self.operation.results)

    @property
    def node(self) -> str:
        return ir.StringAttr(self.operation.attributes[NODE_ATTR]).value

    @property
    def opset(self) -> int:
        return ir.IntegerAttr(self.operation.attributes[OPSET_ATTR]).value

    def operand(self, name: str) -> ir.Value | None:
        return self._operands[name]

    def result(self, name: str) -> ir.Value | None:
        return self._results[name]

    def operand_type(self, name: str) -> TensorType | None:
        value = self._operands[name]
        return None if value is None else tensor_types.from_ir(value.type)

    def result_type(self, name: str) -> TensorType | None:
        value = self._results[name]
        return None if value is None else tensor_types.from_ir(value.type)

    def present_results(self) -> list[tuple[str, ir.Value]]:
        return [(name, value) for name, value in self._results.items() if value is not None]

    def region(self, name: str) -> ir.Block | None:
        """The single block of a graph-attribute region, or None when the attribute is absent."""
        region = self.operation.regions[self.spec.regions.index(name)]
        blocks = list(region.blocks)
        return blocks[0] if blocks else None

    def attributes(self) -> dict[str, object]:
        """Every spec attribute that is set on the op, as Python values."""
        return {a.name: self.attr(a.name) for a in self.spec.attributes if a.name in self.operation.attributes}

    def operands(self) -> dict[str, ir.Value]:
        """The present operands by spec name."""
        return {name: value for name, value in self._operands.items() if value is not None}

    def attr(self, name: str):
        """The attribute's Python value, or its spec default when absent."""
        spec_attr = self.spec.attribute(name)
        if name not in self.operation.attributes:
            return spec_attr.default
        raw = self.operation.attributes[name]
        if spec_attr.kind == "int":
            return ir.IntegerAttr(raw).value
        if spec_attr.kind == "float":
            return ir.FloatAttr(raw).value
        return ir.StringAttr(raw).value

    def error(self, message: str) -> NodeError:
        return NodeError(self.spec.onnx_op, self.node, message)

    def verify(self) -> None:
        self.spec.verifier(self)


def _segments(operation, attr_name, names, values) -> dict[str, ir.Value | None]:
    """Values by spec name; trailing optional entries may be left out of the segment sizes."""
    sizes = list(ir.DenseI32ArrayAttr(operation.attributes[attr_name]))
    sizes += [0] * (len(names) - len(sizes))
    values = list(values)
    assert len(sizes) == len(names) and sum(sizes) == len(values), f"malformed {operation.name}"
    out, index = {}, 0
    for name, size in zip(names, sizes):
        out[name] = values[index] if size else None
        index += size
    return out


def build(
    spec: OpSpec,
    operands: dict[str, ir.Value],
    result_types: dict[str, ir.Type],
    attributes: dict[str, object],
    node: str,
    opset: int,
    location: ir.Location | None = None,
) -> KvOp:
    """Create a kvattn op at the current insertion point. Absent optional operands/results are
    simply left out of the dicts; attributes equal to None are omitted."""
    for name in spec.operands:
        if name not in operands and name not in spec.optional_operands:
            raise ValueError(f"{spec.name}: missing operand {name}")
    attrs = {
        OPERAND_SEGMENTS: ir.DenseI32ArrayAttr.get([int(n in operands) for n in spec.operands]),
        RESULT_SEGMENTS: ir.DenseI32ArrayAttr.get([int(n in result_types) for n in spec.results]),
        NODE_ATTR: ir.StringAttr.get(node),
        OPSET_ATTR: ir.IntegerAttr.get(ir.IntegerType.get_signless(64), opset),
    }
    for name, value in attributes.items():
        if value is None:
            continue
        kind = spec.attribute(name).kind
        if kind == "int":
            attrs[name] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), int(value))
        elif kind == "float":
            attrs[name] = ir.FloatAttr.get(ir.F32Type.get(), float(value))
        else:
            attrs[name] = ir.StringAttr.get(str(value))
    operation = ir.Operation.create(
        spec.name,
        results=[result_types[n] for n in spec.results if n in result_types],
        operands=[operands[n] for n in spec.operands if n in operands],
        attributes=attrs,
        regions=len(spec.regions),
        loc=location,
    )
    return KvOp(operation)


def kvattn_ops(module: ir.Module, name: str | None = None) -> list[KvOp]:
    found = []

    def visit(op):
        if is_kvattn_op(op.operation) and (name is None or op.operation.name == name):
            found.append(KvOp(op.operation))
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    return found


# --------------------------------------------------------------------------- ops


def _verify_tensor_scatter(op: KvOp) -> None:
    cache = op.operand_type("past_cache")
    update = op.operand_type("update")
    indices = op.operand_type("write_indices")
    mode = op.attr("mode")
    if mode not in ("linear", "circular"):
        raise op.error(f"attribute mode='{mode}' must be 'linear' or 'circular'")
    if cache.rank != update.rank or cache.rank < 2:
        raise op.error(f"past_cache {cache.describe()} and update {update.describe()} must have the same rank >= 2")
    axis = op.attr("axis")
    if not -cache.rank <= axis < cache.rank or axis % cache.rank == 0:
        raise op.error(f"attribute axis={axis} must name a non-batch axis of a rank-{cache.rank} cache")
    axis %= cache.rank
    if cache.element != update.element:
        raise op.error(f"update dtype {update.describe()} differs from past_cache {cache.describe()}")
    for dim, (c, u) in enumerate(zip(cache.shape, update.shape)):
        if dim == axis:
            if c is not None and u is not None and u > c:
                raise op.error(f"update has {u} rows on axis {axis} but the cache holds only {c}")
        elif c is not None and u is not None and c != u:
            raise op.error(f"update {update.describe()} must match past_cache {cache.describe()} outside axis {axis}")
    if indices is not None and (indices.rank != 1 or indices.element != "i64"):
        raise op.error(f"write_indices must be int64 of shape [batch], got {indices.describe()}")
    if indices is not None and None not in (indices.shape[0], cache.shape[0]) and indices.shape[0] != cache.shape[0]:
        raise op.error(f"write_indices has {indices.shape[0]} entries for a batch of {cache.shape[0]}")


TENSOR_SCATTER = register(
    OpSpec(
        name="kvattn.tensor_scatter",
        onnx_op="TensorScatter",
        operands=("past_cache", "update", "write_indices"),
        optional_operands=frozenset({"write_indices"}),
        results=("present_cache",),
        optional_results=frozenset(),
        attributes=(Attr("mode", "str", "linear"), Attr("axis", "int", -2)),
        verifier=_verify_tensor_scatter,
    )
)


QUANTIZED_ELEMENTS = ("i8", "ui8", "f8E4M3FN")
QDQ_UNFUSED_ATTR = "qdq_unfused"  # why kvattn-fuse-qdq left a Q/DQ around an attention unfused
CACHE_LIFETIME_ATTR = "cache_lifetime"  # kvattn-cache-lifetime's decision: aliased or copied, and why
QUANTIZABLE = ("Q", "K", "V", "Y")  # the attention tensors a fused Q/DQ can (de)quantize


def float_type(op: KvOp, name: str) -> str:
    """The float element type a Q/K/V/Y tensor has in the attention's arithmetic: its own, or,
    when a fused (de)quantization applies to it, its scale's."""
    scale = op.operand_type(f"{name}_scale")
    if scale is not None:
        return scale.element
    return (op.operand_type(name) if name != "Y" else op.result_type("Y")).element


def _verify_attention(op: KvOp) -> None:
    q, k, v = (op.operand_type(n) for n in ("Q", "K", "V"))
    if not (q.rank == k.rank == v.rank and q.rank in (3, 4)):
        raise op.error(f"Q, K and V must all be 3D or all 4D, got {q.describe()}, {k.describe()}, {v.describe()}")
    floats = [float_type(op, n) for n in ("Q", "K", "V")]
    if floats[0] not in tensor_types.FLOAT_ELEMENTS or len(set(floats)) != 1:
        raise op.error(f"Q, K and V must share one float dtype, got {q.describe()}, {k.describe()}, {v.describe()}")
    for name in QUANTIZABLE:
        if op.operand(f"{name}_scale") is not None:
            tensor = op.operand_type(name) if name != "Y" else op.result_type("Y")
            if tensor.element not in QUANTIZED_ELEMENTS:
                raise op.error(f"{name} has a fused (de)quantization but element type {tensor.element}")
            if op.operand_type(f"{name}_scale").rank > 1:
                raise op.error(f"{name}_scale must be a scalar or 1-D (per-axis)")
    q_heads, kv_heads = op.attr("q_num_heads"), op.attr("kv_num_heads")
    if q.rank == 3 and (q_heads is None or kv_heads is None):
        raise op.error("3D inputs need the attributes q_num_heads and kv_num_heads")
    if (op.operand("past_key") is None) != (op.operand("past_value") is None):
        raise op.error("past_key and past_value must be given together")
    if op.operand("nonpad_kv_seqlen") is not None and op.operand("past_key") is not None:
        raise op.error("nonpad_kv_seqlen cannot be combined with past_key/past_value")
    if op.attr("is_causal") not in (0, 1):
        raise op.error(f"attribute is_causal={op.attr('is_causal')} must be 0 or 1")
    if op.attr("qk_matmul_output_mode") not in (0, 1, 2, 3):
        raise op.error(f"attribute qk_matmul_output_mode={op.attr('qk_matmul_output_mode')} must be 0..3")
    _verify_scale(op)
    for name in ("left_window_size", "right_window_size"):
        if op.attr(name) < -1:
            raise op.error(f"attribute {name}={op.attr(name)} must be -1 or nonnegative")
    mask = op.operand_type("attn_mask")
    if mask is not None and mask.element != "i1" and mask.element not in tensor_types.FLOAT_ELEMENTS:
        raise op.error(f"attn_mask must be bool or float, got {mask.describe()}")
    if mask is not None and not 1 <= mask.rank <= 4:
        raise op.error(f"attn_mask must have rank 1 to 4, got {mask.describe()}")
    nonpad = op.operand_type("nonpad_kv_seqlen")
    if nonpad is not None and (nonpad.rank != 1 or nonpad.element != "i64"):
        raise op.error(f"nonpad_kv_seqlen must be int64 of shape [batch], got {nonpad.describe()}")
    _verify_attention_shapes(op)


def _verify_scale(op: KvOp) -> None:
    scale = op.attr("scale")
    if scale is not None and not math.isfinite(scale):
        raise op.error(f"attribute scale={scale} must be a finite number")


def _verify_attention_shapes(op: KvOp) -> None:
    """The sizes every operand of an Attention must agree on, where they are static (a dynamic
    size is checked at run time by the lowering). Head counts and head sizes must be static."""
    q, k, v = (op.operand_type(n) for n in ("Q", "K", "V"))
    past_key, past_value = op.operand_type("past_key"), op.operand_type("past_value")
    if q.rank == 3:
        q_heads, kv_heads = op.attr("q_num_heads"), op.attr("kv_num_heads")
        for name, tensor, heads in (("Q", q, q_heads), ("K", k, kv_heads), ("V", v, kv_heads)):
            hidden = tensor.shape[2]
            if hidden is None:
                raise UnsupportedError(op.spec.onnx_op, op.node, f"input {name} {tensor.describe()} with a dynamic "
                                                                 f"hidden size")
            if heads <= 0 or hidden % heads:
                raise op.error(f"{name} hidden size {hidden} is not divisible by its {heads} heads")
        head = {"Q": q.shape[2] // q_heads, "K": k.shape[2] // kv_heads, "V": v.shape[2] // kv_heads}
        lengths = [("K", k.shape[1]), ("V", v.shape[1])]
    else:
        for name, tensor in (("Q", q), ("K", k), ("V", v)):
            if tensor.shape[1] is None or tensor.shape[3] is None:
                raise UnsupportedError(op.spec.onnx_op, op.node, f"input {name} {tensor.describe()} with a dynamic "
                                                                 f"head count or head size")
        q_heads, kv_heads = q.shape[1], k.shape[1]
        head = {"Q": q.shape[3], "K": k.shape[3], "V": v.shape[3]}
        lengths = [("K", k.shape[2]), ("V", v.shape[2])]
        _agree(op, "key/value head count", [("K", k.shape[1]), ("V", v.shape[1])])
    if q_heads % kv_heads:
        raise op.error(f"{q_heads} query heads are not a multiple of {kv_heads} key/value heads")
    if head["Q"] != head["K"]:
        raise op.error(f"Q head size {head['Q']} differs from K head size {head['K']}")
    _agree(op, "sequence length", lengths)
    batch = [("Q", q.shape[0]), ("K", k.shape[0]), ("V", v.shape[0])]
    for name, past, own_head in (("past_key", past_key, head["K"]), ("past_value", past_value, head["V"])):
        if past is None:
            continue
        if past.rank != 4:
            raise op.error(f"{name} must be 4D [batch, kv_heads, past, head], got {past.describe()}")
        batch.append((name, past.shape[0]))
        _agree(op, f"{name} head count", [(name, past.shape[1]), ("kv_num_heads", kv_heads)])
        _agree(op, f"{name} head size", [(name, past.shape[3]), ("its new rows", own_head)])
    if past_key is not None:
        _agree(op, "past length", [("past_key", past_key.shape[2]), ("past_value", past_value.shape[2])])
    nonpad = op.operand_type("nonpad_kv_seqlen")
    if nonpad is not None:
        batch.append(("nonpad_kv_seqlen", nonpad.shape[0]))
    _agree(op, "batch size", batch)
    mask = op.operand_type("attn_mask")
    if mask is not None:
        query_len = q.shape[1 if q.rank == 3 else 2]
        new_len = lengths[0][1]
        past_len = past_key.shape[2] if past_key is not None else 0
        total = None if None in (new_len, past_len) else new_len + past_len
        expected = [batch[0][1], q_heads, query_len, total][4 - mask.rank:]
        for axis, (size, want) in enumerate(zip(mask.shape, expected)):
            keys = axis == mask.rank - 1
            if size is None or want is None or size in (1, want) or (keys and size < want):
                continue  # broadcast, equal, or fewer keys (padded with masked keys)
            raise op.error(f"attn_mask {mask.describe()} does not broadcast to [batch, {q_heads}, queries, keys]: "
                           f"axis {axis} has {size}, expected {want}")


def _agree(op: KvOp, what: str, named: list[tuple[str, int | None]]) -> None:
    """Every static size in `named` is the same, or an error naming each."""
    static = [(name, size) for name, size in named if size is not None]
    if len({size for _, size in static}) > 1:
        raise op.error(f"{what} differs: " + ", ".join(f"{name} {size}" for name, size in static))


ATTENTION = register(
    OpSpec(
        name="kvattn.attention",
        onnx_op="Attention",
        operands=("Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen")
        + tuple(f"{t}_{p}" for t in QUANTIZABLE for p in ("scale", "zero_point")),
        optional_operands=frozenset({"attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"}
                                    | {f"{t}_{p}" for t in QUANTIZABLE for p in ("scale", "zero_point")}),
        results=("Y", "present_key", "present_value", "qk_matmul_output"),
        optional_results=frozenset({"present_key", "present_value", "qk_matmul_output"}),
        attributes=(
            Attr("is_causal", "int", 0),
            Attr("q_num_heads", "int"),
            Attr("kv_num_heads", "int"),
            Attr("qk_matmul_output_mode", "int", 0),
            Attr("scale", "float"),
            Attr("softcap", "float", 0.0),
            Attr("softmax_precision", "int"),
            Attr("left_window_size", "int", -1),
            Attr("right_window_size", "int", -1),
            # Fused Q/DQ (kvattn-fuse-qdq): the axis of each per-axis scale.
            *(Attr(f"{t}_axis", "int", 1) for t in QUANTIZABLE),
        ),
        verifier=_verify_attention,
    )
)


def _verify_rotary_embedding(op: KvOp) -> None:
    x, cos, sin = (op.operand_type(n) for n in ("X", "cos_cache", "sin_cache"))
    positions = op.operand_type("position_ids")
    if x.rank not in (3, 4) or x.element not in tensor_types.FLOAT_ELEMENTS:
        raise op.error(f"X must be a 3D or 4D float tensor, got {x.describe()}")
    if x.rank == 3 and not op.attr("num_heads"):
        raise op.error("3D input needs the attribute num_heads")
    if op.attr("interleaved") not in (0, 1):
        raise op.error(f"attribute interleaved={op.attr('interleaved')} must be 0 or 1")
    if cos.shape != sin.shape or cos.element != x.element or sin.element != x.element:
        raise op.error(f"cos_cache {cos.describe()} and sin_cache {sin.describe()} must match each other and X's dtype")
    expected_rank = 2 if positions is not None else 3
    if cos.rank != expected_rank:
        raise op.error(f"cos_cache/sin_cache must be {expected_rank}D "
                       f"{'with' if positions is not None else 'without'} position_ids, got {cos.describe()}")
    if positions is not None and (positions.rank != 2 or positions.element != "i64"):
        raise op.error(f"position_ids must be int64 of shape [batch, sequence], got {positions.describe()}")


ROTARY_EMBEDDING = register(
    OpSpec(
        name="kvattn.rotary_embedding",
        onnx_op="RotaryEmbedding",
        operands=("X", "cos_cache", "sin_cache", "position_ids"),
        optional_operands=frozenset({"position_ids"}),
        results=("Y",),
        optional_results=frozenset(),
        attributes=(Attr("interleaved", "int", 0), Attr("rotary_embedding_dim", "int", 0), Attr("num_heads", "int", 0)),
        verifier=_verify_rotary_embedding,
    )
)


def _verify_rms_normalization(op: KvOp) -> None:
    x, scale = op.operand_type("X"), op.operand_type("scale")
    if x.element not in tensor_types.FLOAT_ELEMENTS:
        raise op.error(f"X must be a float tensor, got {x.describe()}")
    axis = op.attr("axis")
    if not -x.rank <= axis < x.rank:
        raise op.error(f"attribute axis={axis} is out of range for a rank-{x.rank} input")
    if op.attr("stash_type") != 1:
        raise op.error(f"attribute stash_type={op.attr('stash_type')}: only 1 (float32) is defined")
    normalized = x.shape[axis % x.rank:]
    if scale.rank > len(normalized) or any(
            s not in (1, n) for s, n in zip(reversed(scale.shape), reversed(normalized))):
        raise op.error(f"scale {scale.describe()} does not broadcast to the normalized shape {list(normalized)}")


RMS_NORMALIZATION = register(
    OpSpec(
        name="kvattn.rms_normalization",
        onnx_op="RMSNormalization",
        operands=("X", "scale"),
        optional_operands=frozenset(),
        results=("Y",),
        optional_results=frozenset(),
        attributes=(Attr("axis", "int", -1), Attr("epsilon", "float", 1e-5), Attr("stash_type", "int", 1)),
        verifier=_verify_rms_normalization,
    )
)


def _verify_flex_attention(op: KvOp) -> None:
    q, k, v = (op.operand_type(n) for n in ("Q", "K", "V"))
    if not (q.rank == k.rank == v.rank == 4):
        raise op.error(f"Q, K and V must be 4D, got {q.describe()}, {k.describe()}, {v.describe()}")
    if q.element not in tensor_types.FLOAT_ELEMENTS or k.element != q.element or v.element != q.element:
        raise op.error(f"Q, K and V must share one float dtype, got {q.describe()}, {k.describe()}, {v.describe()}")
    _verify_scale(op)


FLEX_ATTENTION = register(
    OpSpec(
        name="kvattn.flex_attention",
        onnx_op="FlexAttention",
        onnx_domain="ai.onnx.preview",
        operands=("Q", "K", "V"),
        optional_operands=frozenset(),
        results=("Y",),
        optional_results=frozenset(),
        attributes=(Attr("scale", "float"), Attr("softmax_precision", "int")),
        regions=("prob_mod", "score_mod"),
        verifier=_verify_flex_attention,
    )
)
