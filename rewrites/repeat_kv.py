"""K and V repeated per query head before a 4D Attention → the Attention reads them once (GQA).

transformers' SDPA export without `enable_gqa` repeats each kv head G times (repeat_kv) before
every Attention:

    key_BHTD = Reshape(Expand(Unsqueeze(key_BHkvTD, [2]), [B, Hkv, G, T, D]), [B, Hkv·G, T, D])
    Y = Attention(query_BHqSD, key_BHTD, value_BHTD, ...)

so head h of key_BHTD is head h // G of key_BHkvTD, and every step copies and reads the cache G
times. ONNX Attention (4D) is grouped-query itself: with Hq query heads and Hkv kv heads, query
head h reads kv head h // (Hq / Hkv) (onnx.reference: np.repeat along the heads), and
(h // (Hq / (Hkv·G))) // G = h // (Hq / Hkv), so

    Y = Attention(query_BHqSD, key_BHkvTD, value_BHkvTD, ...)

with the same mask, nonpad_kv_seqlen and attributes (the mask is indexed by query heads). The
repeat is dead then unless something else reads it (it is removed with the other dead nodes).

Checked, for K and V each, on the values the shapes are built from (Concat of Shape slices,
Squeeze/Unsqueeze/Reshape/Cast of one entry, Add, constants): the Unsqueeze inserts axis 2 into
a 4D [B, Hkv, T, D]; the Expand shape has 5 entries, G (a constant) on the inserted axis and, on
every other axis, 1 or that axis's size (so only the inserted axis grows); the Reshape shape is
[B, Hkv·G, T, D] (one entry may be -1, a 0 copies the input's axis unless allowzero). Sizes are
equal only when proven: the same int, or the same sum of named dims (ONNX: a dim_param names one
size throughout the graph; a Concat's size along its axis is the sum of its inputs'), never an
unnamed one. K and V must share Hkv and G; the Attention must have no past_key/past_value (its
present_key would lose heads), no q_num_heads/kv_num_heads (3D only, and they override K's
heads in the reference), and no use of its outputs other than Y.
"""

from __future__ import annotations

from typing import Callable

import onnx
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

# A size proven to some degree: const + the sum of named symbolic dims (sorted, repeats kept);
# None where nothing is known (equal to nothing, not even another None).
Size = tuple[int, tuple[str, ...]]
ONE: Size = (1, ())
MINUS_ONE: Size = (-1, ())
ZERO: Size = (0, ())


OPSET = 23  # Attention (what the rule matches exists from here on)

class RepeatKV(RewriteRuleClassBase):
    def __init__(self, record: Callable[[str], None]):
        super().__init__(name="RepeatKV", remove_nodes=False)  # a repeat something else reads stays
        self._record = record
        self._attention: ir.Node | None = None
        self._groups = 0
        self._heads: Size | None = None

    def pattern(self, op, query, key_BHkvTD, key_axes, key_shape_BHkvGTD, key_shape_BHTD,
                value_BHkvTD, value_axes, value_shape_BHkvGTD, value_shape_BHTD):
        key_BHTD = op.Reshape(op.Expand(op.Unsqueeze(key_BHkvTD, key_axes), key_shape_BHkvGTD), key_shape_BHTD,
                              _outputs=["key_BHTD"])
        value_BHTD = op.Reshape(op.Expand(op.Unsqueeze(value_BHkvTD, value_axes), value_shape_BHkvGTD),
                                value_shape_BHTD, _outputs=["value_BHTD"])
        return op.Attention(query, key_BHTD, value_BHTD, _allow_other_inputs=True)

    def check(self, context, query: ir.Value, key_BHkvTD: ir.Value, key_axes: ir.Value,
              key_shape_BHkvGTD: ir.Value, key_shape_BHTD: ir.Value, key_BHTD: ir.Value,
              value_BHkvTD: ir.Value, value_axes: ir.Value, value_shape_BHkvGTD: ir.Value,
              value_shape_BHTD: ir.Value, value_BHTD: ir.Value, **_) -> MatchResult:
        result = MatchResult()
        attention = context.root
        if query.shape is not None and len(query.shape) != 4:
            return result.fail(f"Attention '{attention.name}' is not 4D (3D Attention is not rewritten)")
        cache = [name for name, value in zip(("past_key", "past_value"), attention.inputs[4:6]) if value is not None]
        if cache:
            return result.fail(f"Attention '{attention.name}' has {' and '.join(cache)}: its present caches would "
                               f"have the unrepeated head count")
        heads = [name for name in ("q_num_heads", "kv_num_heads") if name in attention.attributes]
        if heads:
            return result.fail(f"Attention '{attention.name}' sets {', '.join(heads)} (3D attributes)")
        used = [index for index, output in enumerate(attention.outputs[1:], 1)
                if output.uses() or output.is_graph_output()]
        if used:
            return result.fail(f"Attention '{attention.name}' output(s) {used} are used: only Y is rewritten")
        repeats = []
        for role, unrepeated, axes, expand_shape, reshape_shape, repeated in (
                ("K", key_BHkvTD, key_axes, key_shape_BHkvGTD, key_shape_BHTD, key_BHTD),
                ("V", value_BHkvTD, value_axes, value_shape_BHkvGTD, value_shape_BHTD, value_BHTD)):
            repeat = _head_repeat(unrepeated, axes, expand_shape, reshape_shape, repeated.producer())
            if isinstance(repeat, str):
                return result.fail(f"Attention '{attention.name}' {role}: {repeat}")
            repeats.append(repeat)
        (key_heads, key_groups), (value_heads, value_groups) = repeats
        if key_groups != value_groups or key_heads != value_heads:
            return result.fail(f"Attention '{attention.name}': K repeats {_show(key_heads)} heads ×{key_groups}, "
                               f"V {_show(value_heads)} heads ×{value_groups}")
        self._attention = attention
        self._groups = key_groups
        self._heads = key_heads
        return result

    def rewrite(self, op, key_BHkvTD: ir.Value, value_BHkvTD: ir.Value, **_):
        attention = self._attention
        inputs = list(attention.inputs)
        inputs[1:3] = [key_BHkvTD, value_BHkvTD]
        output = op.Attention(*inputs, **attention.attributes)
        output.producer().name = attention.name
        query_heads = attention.inputs[0].shape[1] if attention.inputs[0].shape is not None else None
        of = f" for {query_heads} query heads" if isinstance(query_heads, int) else ""
        self._record(f"Attention '{attention.name}' read K and V repeated ×{self._groups} per kv head "
                     f"(Unsqueeze → Expand → Reshape of {key_BHkvTD.name}, {value_BHkvTD.name}): reads them once, "
                     f"{_show(self._heads)} kv head(s){of} (grouped-query)")
        return output


def _head_repeat(unrepeated: ir.Value, axes: ir.Value, expand_shape: ir.Value, reshape_shape: ir.Value,
                 reshape: ir.Node) -> tuple[Size, int] | str:
    """(Hkv, G) when Reshape(Expand(Unsqueeze(unrepeated, axes), expand_shape), reshape_shape)
    repeats each head of a 4D [B, Hkv, T, D] G times in place (head h ← h // G), else the reason."""
    if unrepeated.shape is None or len(unrepeated.shape) != 4:
        return f"{unrepeated.name} is not of known rank 4"
    dims = [_dim(unrepeated, axis) for axis in range(4)]
    inserted = _entries(axes)
    if inserted is None or [_int(a) for a in inserted] not in ([2], [-3]):
        return f"the Unsqueeze does not insert axis 2 (axes {_show_all(inserted)})"
    expanded = _entries(expand_shape)
    if expanded is None or len(expanded) != 5:
        return f"the Expand shape is not 5 known entries ({_show_all(expanded)})"
    groups = _int(expanded[2])
    if groups is None or groups < 1:
        return f"the Expand's inserted axis grows to {_show(expanded[2])}, not a constant head group"
    for axis, entry in zip((0, 1, 3, 4), expanded[:2] + expanded[3:]):
        source = axis - (axis > 2)
        if entry != ONE and (entry is None or entry != dims[source]):
            return (f"the Expand's axis {axis} is {_show(entry)}, neither 1 nor {unrepeated.name}'s axis {source} "
                    f"({_show(dims[source])}): it broadcasts more than the heads")
    target = _entries(reshape_shape)
    if target is None or len(target) != 4:
        return f"the Reshape shape is not 4 known entries ({_show_all(target)})"
    merged = [dims[0], _times(dims[1], groups), dims[2], dims[3]]
    before = [dims[0], dims[1], (groups, ()), dims[2], dims[3]]
    allowzero = reshape.attributes.get("allowzero")
    copies_zero = allowzero is None or allowzero.as_int() == 0
    if target.count(MINUS_ONE) > 1:
        return f"the Reshape shape {_show_all(target)} has more than one -1"
    for axis, entry in enumerate(target):
        if entry == MINUS_ONE:
            continue  # the element count forces it once the other three are right
        if entry == ZERO and copies_zero:
            entry = before[axis]
        if entry is None or merged[axis] is None or entry != merged[axis]:
            return (f"the Reshape's axis {axis} is {_show(entry)}, not {_show(merged[axis])}: it does not merge "
                    f"only the kv heads and their group")
    return dims[1], groups


def _dim(value: ir.Value, axis: int) -> Size | None:
    """The size of `value` along `axis`: a Concat's from its inputs, else the value's shape."""
    node = value.producer()
    if node is not None and node.op_type == "Concat" and node.domain == "" and value.shape is not None:
        along = node.attributes["axis"].as_int() % len(value.shape)
        sizes = [_dim(part, axis) for part in node.inputs]
        if axis == along:
            total: Size | None = (0, ())
            for size in sizes:
                total = _add(total, size)
            if total is not None:
                return total
        else:  # the inputs agree along every other axis (else the Concat fails): a static one is it
            known = sorted((size for size in sizes if size is not None), key=lambda size: bool(size[1]))
            if known:
                return known[0]
    if value.shape is None or axis >= len(value.shape):
        return None
    dim = value.shape[axis]
    if isinstance(dim, int):
        return (dim, ())
    return (0, (dim.value,)) if dim.value else None


def _entries(value: ir.Value) -> list[Size | None] | None:
    """The entries of a 1-D (or scalar) int64 shape tensor, as far as they are known."""
    if not value.is_graph_input():
        tensor = ir.convenience.get_const_tensor(value)
        if tensor is not None:
            if tensor.dtype not in (ir.DataType.INT64, ir.DataType.INT32) or len(tensor.shape) > 1:
                return None
            return [(int(entry), ()) for entry in tensor.numpy().reshape(-1)]
    node = value.producer()
    if node is None or node.domain != "":
        return None
    if node.op_type == "Shape":
        source = node.inputs[0]
        if source.shape is None:
            return None
        rank = len(source.shape)
        start = node.attributes.get_int("start", 0)
        end = node.attributes.get_int("end", rank)
        start, end = (min(max(i + rank if i < 0 else i, 0), rank) for i in (start, end))
        return [_dim(source, axis) for axis in range(start, end)]
    if node.op_type == "Concat":
        parts = [_entries(part) for part in node.inputs]
        return None if any(part is None for part in parts) else [entry for part in parts for entry in part]
    if node.op_type in ("Squeeze", "Unsqueeze", "Reshape", "Identity", "Cast"):
        inner = _entries(node.inputs[0])
        if node.op_type == "Cast" and node.attributes.get_int("to", 0) != ir.DataType.INT64:
            return None
        if inner is None or (node.op_type in ("Squeeze", "Unsqueeze", "Reshape") and len(inner) != 1):
            return None  # only a scalar ↔ [1] (rank changes of one entry keep its value)
        return inner
    if node.op_type == "Add":
        left, right = (_entries(part) for part in node.inputs)
        if left is None or right is None or len(left) != len(right):
            return None
        return [_add(a, b) for a, b in zip(left, right)]
    return None



def _add(a: Size | None, b: Size | None) -> Size | None:
    return None if a is None or b is None else (a[0] + b[0], tuple(sorted(a[1] + b[1])))


def _times(a: Size | None, factor: int) -> Size | None:
    return None if a is None else (a[0] * factor, tuple(sorted(a[1] * factor)))


def _int(size: Size | None) -> int | None:
    return size[0] if size is not None and not size[1] else None


def _show(size: Size | None) -> str:
    if size is None:
        return "unknown"
    const, names = size
    return " + ".join(list(names) + ([str(const)] if const or not names else []))


def _show_all(sizes: list[Size | None] | None) -> str:
    return "unknown" if sizes is None else "[" + ", ".join(_show(size) for size in sizes) + "]"


def applies_to(model: onnx.ModelProto) -> bool:
    ops = {node.op_type for node in model.graph.node}
    return {"Attention", "Expand", "Reshape", "Unsqueeze"} <= ops


def rules(record: Callable[[str], None]) -> RewriteRuleSet:
    return RewriteRuleSet([RepeatKV.rule(record)])
