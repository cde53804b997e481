"""--static-kv-cache MAX (opt-in): growing KV caches → fixed-capacity caches updated in place.

A growing cache is a model input `past[B,H,P,D]` whose P rows are extended by the step's new rows
and returned as the present `[B,H,P+L,D]`, copied whole every step. This rewrite gives each such
cache a fixed capacity MAX and a new model input `past_length` (int64 [B]: the valid rows,
the same for every batch row, as in the growing cache: call it P), so that the present is the past's own buffer
with L rows written at past_length. Every read of the past is rewritten so that the model computes
what it computed before:

  present = Concat(past, new, axis=2)           (the exporters' DynamicCache; present a model output)
    ⇒ present_buffer = TensorScatter(past[B,H,MAX,D], new, past_length)   → the output
      present        = Slice(present_buffer, [0], [P + L], axes=[2])      → every reader

  Shape(past)[..., 2, ...]                       (the exporters take the past length from it)
    ⇒ Shape(past)[..., :2] ++ [P] ++ Shape(past)[3:, ...]

  Y, present_key, present_value = Attention(Q, K, V, mask, past_key, past_value)
    ⇒ present_key = TensorScatter(past_key[B,H,MAX,D], K, past_length)   (value alike)
      Y = Attention(Q, present_key, present_value, mask, nonpad_kv_seqlen = past_length + L)

So the attention-mask subgraphs, position ids, repeat_kv and eager attention built on the past
length and on the concatenated cache see the same values as before, and read only the valid rows
(a Slice of the buffer is a view in IREE); an Attention fed by past_key/past_value reads only the
valid rows through nonpad_kv_seqlen, its causal alignment unchanged (its queries are the last L of
the past_length + L keys; a mask over past_length + L keys leaves the rest masked). The model is
raised to opset 24 (TensorScatter, nonpad_kv_seqlen). kvattn-cache-lifetime then ties each past to
its present, and `DecodeSession` feeds past_length. A past read any other way (or a concatenated
cache that is not returned, or a qk_matmul_output over the cache) is refused, naming the node.

A model whose caches are already fixed-capacity and updated in place (TensorScatter, e.g. a
transformers StaticCache export after kvattn.rewrites) is left as it is.

L, the rows a step adds, may be symbolic: the manifest then names the input dim it equals (e.g.
input_ids' `seq`), and the session reads it from each step's inputs.
"""

from __future__ import annotations

import dataclasses

import onnx
import onnx_ir as ir

from kvattn.lowering import onnx_params
from kvattn.lowering.diagnostics import KvattnError, NodeError
from kvattn.rewrites import opset

PAST_LENGTH = "past_length"


@dataclasses.dataclass(frozen=True)
class Rewritten:
    model: onnx.ModelProto
    rows_per_step: int | str | None  # a number, or the model-input dim_param it equals; None: nothing rewritten
    caches: dict[str, str]  # past input → present output
    decisions: list[str]  # one line per cache, for `kvattn inspect`


def rewrite(model: onnx.ModelProto, capacity: int) -> Rewritten:
    """The model with fixed-capacity caches (a new ModelProto; the caller's is not modified)."""
    if capacity < 1:
        raise KvattnError(f"--static-kv-cache needs a positive capacity, got {capacity}")
    graph_model = ir.serde.deserialize_model(opset.at_least(model, 24, "--static-kv-cache (TensorScatter)"))
    graph_model = ir.passes.common.ShapeInferencePass()(graph_model).model  # the new keys' ranks
    graph = graph_model.graph
    in_place = [value.name for value in graph.inputs
                if any(node.op_type == "TensorScatter" and index == 0 for node, index in value.uses())]
    past_length = ir.Value(name=PAST_LENGTH, type=ir.TensorType(ir.DataType.INT64))
    rewriter = _CacheRewriter(graph, past_length, capacity)
    for value in list(graph.inputs):
        rewriter.rewrite_if_cache(value)
    if not rewriter.caches and in_place:
        return Rewritten(model, None, {}, [f"--static-kv-cache: nothing to rewrite, the caches {', '.join(in_place)} "
                                           f"already have a fixed capacity (the model's own) and are updated in place"])
    if not rewriter.caches:
        raise KvattnError("--static-kv-cache: the model has no growing KV cache (a 4D model input extended by "
                          "Concat along axis 2 into a model output, or the past_key/past_value of an Attention)")
    rows = set(rewriter.rows.values())
    if len(rows) != 1:
        raise KvattnError(f"--static-kv-cache: every cache must get the same number of new rows per step, found "
                          f"{dict(rewriter.rows)}")
    if any(value.name == PAST_LENGTH for value in graph.inputs):
        raise KvattnError(f"--static-kv-cache adds a model input '{PAST_LENGTH}', but the model already has one")
    past_length.shape = ir.Shape([rewriter.batch])
    graph.inputs.append(past_length)
    graph.sort()
    proto = ir.serde.serialize_model(graph_model)
    onnx_params.check_model(proto)
    rows_per_step = rows.pop()
    decisions = [f"--static-kv-cache: {past} holds {capacity} rows, {present} is its buffer with the step's "
                 f"{rows_per_step} new rows written at {PAST_LENGTH} (TensorScatter); its readers see rows "
                 f"[0, {PAST_LENGTH} + {rows_per_step})" for past, present in rewriter.caches.items()]
    return Rewritten(proto, rows_per_step, rewriter.caches, decisions)


class _CacheRewriter:
    def __init__(self, graph: ir.Graph, past_length: ir.Value, capacity: int):
        self.graph, self.past_length, self.capacity = graph, past_length, capacity
        self.caches: dict[str, str] = {}
        self.rows: dict[str, int | str] = {}
        self._first: ir.Value | None = None
        self.batch: ir.SymbolicDim | int | None = None  # the caches' batch size, past_length's
        self._names = {value.name for node in graph for value in node.outputs} | {node.name for node in graph}
        self._input_dims = {dim.value for value in graph.inputs if value.shape is not None
                            for dim in value.shape if isinstance(dim, ir.SymbolicDim) and dim.value}

    def rewrite_if_cache(self, past: ir.Value) -> None:
        """Rewrite every read of `past` when it is a growing cache; refuse one that is read otherwise."""
        if past.name in self.caches:  # the past_value of an Attention rewritten from its past_key
            return
        uses = list(past.uses())
        growing = [(node, index) for node, index in uses if _extends(node, index) or _attention_past(node, index)]
        if not growing:
            return
        if past.shape is None or len(past.shape) != 4:
            raise NodeError(growing[0][0].op_type, growing[0][0].name, f"--static-kv-cache needs a 4D cache; "
                                                                         f"'{past.name}' is not of known rank 4")
        for node, index in uses:
            if node.op_type == "Shape" and node.domain == "":
                continue
            if not (_extends(node, index) or _attention_past(node, index)):
                raise NodeError(node.op_type, node.name, f"--static-kv-cache cannot rewrite the cache '{past.name}': "
                                                         f"this node reads it (only a Concat along the sequence "
                                                         f"axis, an Attention's past input and Shape can be rewritten)")
        for node, index in uses:
            if node.op_type == "Shape":
                self._past_shape(node, past)
            elif node.op_type == "Concat":
                self._concat(node, past)
            else:
                self._attention(node)

    def _concat(self, concat: ir.Node, past: ir.Value) -> None:
        present, new = concat.outputs[0], concat.inputs[1]
        if not present.is_graph_output():
            raise NodeError("Concat", concat.name, f"--static-kv-cache: the extended cache '{present.name}' is not a "
                                                   f"model output, so no step would pass it on to the next")
        rows = self._rows(new, concat)
        buffer = self._scatter(past, new, f"{past.name}_update", present.name)
        total = self._add_rows(new, past.name)
        view = self._node("Slice", [buffer, self._const([0], f"{past.name}_zero"), total,
                                    self._const([2], f"{past.name}_axis")], f"{past.name}_valid_rows")
        view.type, view.shape = present.type, present.shape  # the rows the Concat had
        self._output(present, buffer, past)
        present.replace_all_uses_with(view)
        self.graph.remove(concat, safe=True)
        self.caches[past.name], self.rows[past.name] = buffer.name, rows

    def _attention(self, attention: ir.Node) -> None:
        if len(attention.outputs) > 3 and (attention.outputs[3].uses() or attention.outputs[3].is_graph_output()):
            raise NodeError("Attention", attention.name, "--static-kv-cache cannot rewrite an attention whose "
                                                         "qk_matmul_output is used (it covers the growing length)")
        inputs = list(attention.inputs) + [None] * (7 - len(attention.inputs))
        presents = []
        for kind, index in (("key", 1), ("value", 2)):
            past, new = inputs[3 + index], inputs[index]
            old = attention.outputs[index] if len(attention.outputs) > index else None
            if past is None or not past.is_graph_input() or old is None or not old.is_graph_output():
                raise NodeError("Attention", attention.name, f"--static-kv-cache needs past_{kind} as a model input "
                                                             f"and present_{kind} as a model output")
            if any(value.shape is None or len(value.shape) != 4 for value in (past, new)):
                raise NodeError("Attention", attention.name, f"--static-kv-cache needs 4D {kind} inputs and caches")
            rows = self._rows(new, attention)
            buffer = self._scatter(past, new, f"{past.name}_update", old.name)
            self._output(old, buffer, past)
            old.replace_all_uses_with(buffer)
            self.caches[past.name], self.rows[past.name] = buffer.name, rows
            presents.append(buffer)
        valid = self._add_rows(inputs[1], f"{inputs[4].name}_nonpad_kv_seqlen", self.past_length)
        replacement = ir.node("Attention", [inputs[0], *presents, inputs[3], None, None, valid],
                              attributes=dict(attention.attributes), name=attention.name)
        self.graph.append(replacement)
        output = attention.outputs[0]
        output.replace_all_uses_with(replacement.outputs[0], replace_graph_outputs=True)
        self.graph.remove(attention, safe=True)
        replacement.outputs[0].name, replacement.outputs[0].type = output.name, output.type
        replacement.outputs[0].shape = output.shape

    def _past_shape(self, shape: ir.Node, past: ir.Value) -> None:
        """Shape(past, start, end) → the same entries with the valid length on axis 2."""
        start, end = (shape.attributes.get_int(name, default) for name, default in (("start", 0), ("end", 4)))
        start, end = (min(max(i + 4 if i < 0 else i, 0), 4) for i in (start, end))
        if not start <= 2 < end:
            return
        pieces = []
        if start < 2:
            pieces.append(self._node("Shape", [past], f"{past.name}_shape_before", start=start, end=2))
        pieces.append(self._first_length())
        if end > 3:
            pieces.append(self._node("Shape", [past], f"{past.name}_shape_after", start=3, end=end))
        valid_shape = (pieces[0] if len(pieces) == 1
                       else self._node("Concat", pieces, f"{past.name}_valid_shape", axis=0))
        shape.outputs[0].replace_all_uses_with(valid_shape, replace_graph_outputs=True)
        self.graph.remove(shape, safe=True)

    def _rows(self, new: ir.Value, node: ir.Node) -> int | str:
        dim = new.shape[2] if new.shape is not None and len(new.shape) == 4 else None
        if isinstance(dim, int):
            return dim
        if isinstance(dim, ir.SymbolicDim) and dim.value in self._input_dims:
            return dim.value
        raise NodeError(node.op_type, node.name, f"--static-kv-cache: the number of new rows of '{new.name}' "
                                                 f"({dim}) is neither a number nor a dim of a model input, so a "
                                                 f"decode session could not tell how far the cache grows")

    def _scatter(self, past: ir.Value, new: ir.Value, name: str, output: str) -> ir.Value:
        self.batch = past.shape[0]
        buffer = self._node("TensorScatter", [past, new, self.past_length], name, axis=2)
        buffer.name = output
        return buffer

    def _add_rows(self, new: ir.Value, name: str, length: ir.Value | None = None) -> ir.Value:
        """P + the rows of `new` ([1]), or `length` + them."""
        rows = self._node("Shape", [new], f"{name}_new_rows", start=2, end=3)
        return self._node("Add", [length or self._first_length(), rows], f"{name}_valid_length")

    def _first_length(self) -> ir.Value:
        """P ([1]; the rows all hold the same length: their largest, made once)."""
        if self._first is None:
            self._first = self._node("ReduceMax", [self.past_length], f"{PAST_LENGTH}_rows", keepdims=1)
        return self._first

    def _const(self, values: list[int], name: str) -> ir.Value:
        return self._node("Constant", [], name, value=ir.tensor(values, dtype=ir.DataType.INT64))

    def _node(self, op_type: str, inputs, name: str, **attributes) -> ir.Value:
        """A new node named `name` (made unique), appended; its output is named as it is."""
        while name in self._names:
            name += "_"
        self._names.add(name)
        node = ir.node(op_type, inputs, attributes=attributes, name=name)
        node.outputs[0].name = name
        self.graph.append(node)
        return node.outputs[0]

    def _output(self, old: ir.Value, buffer: ir.Value, past: ir.Value) -> None:
        """The model output `old` becomes `buffer`; `past` gets the fixed capacity, and `buffer` the
        past's type (it is tied to it)."""
        past.shape = ir.Shape([past.shape[0], past.shape[1], self.capacity, past.shape[3]])
        for index, output in enumerate(self.graph.outputs):
            if output is old:
                buffer.type, buffer.shape = past.type, past.shape
                self.graph.outputs[index] = buffer


def _extends(node: ir.Node, index: int) -> bool:
    """A Concat of the past with new rows along axis 2 (or -2)."""
    return (node.op_type == "Concat" and node.domain == "" and index == 0 and len(node.inputs) == 2
            and node.attributes.get_int("axis", 0) in (2, -2))


def _attention_past(node: ir.Node, index: int) -> bool:
    return node.op_type == "Attention" and node.domain == "" and index in (4, 5)
