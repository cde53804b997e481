"""kvattn-static-kv-cache (opt-in, `kvattn compile --static-kv-cache MAX`): fixed-capacity KV caches.

A concat-style cache grows every step and is copied whole into the present. This ONNX-level
rewrite (before import) gives each such cache a fixed capacity MAX, updated in place:

    Y, present_key, present_value = Attention(Q, K, V, past_key[B,H,P,D], past_value[B,H,P,D])
  or
    key = Concat(past_key[B,H,P,D], K, axis=2); value = Concat(past_value, V, axis=2)
    Y = Attention(Q, key, value)          (present_key = key, present_value = value when returned)
  ⇒
    present_key   = TensorScatter(past_key[B,H,MAX,D], K, write_indices = past_length)
    present_value = TensorScatter(past_value[B,H,MAX,D], V, write_indices = past_length)
    Y = Attention(Q, present_key, present_value, nonpad_kv_seqlen = past_length + L)

with a new model input `past_length` (int64 [B]: the rows already in the caches) and the model
at opset 24 (TensorScatter, nonpad_kv_seqlen). Causal masking keeps its meaning (the queries
are the last L of past_length + L keys; a causal attention over a Concat cache is top-left
aligned in ONNX and is refused). kvattn-cache-lifetime then ties each cache to its
present, and `DecodeSession` hides the changed interface. Only 4D K/V without attn_mask or
qk_matmul_output are rewritten (a mask covers the concatenated length, which no longer exists
as a shape); anything else is refused with the node's name.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from kvattn.lowering import onnx_params
from kvattn.lowering.diagnostics import KvattnError, NodeError

PAST_LENGTH = "past_length"


def rewrite(model: onnx.ModelProto, capacity: int) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The model with fixed-capacity caches (a new ModelProto), and {cache input: rows it gains
    per step} for each cache it rewrote."""
    if capacity < 1:
        raise KvattnError(f"--static-kv-cache needs a positive capacity, got {capacity}")
    model = _at_opset_24(model)
    graph = model.graph
    inputs = {value.name: value for value in graph.input}
    if PAST_LENGTH in inputs:
        raise KvattnError(f"--static-kv-cache adds a model input '{PAST_LENGTH}', but the model already has one")
    shapes = _shapes(model)
    producers = {out: node for node in graph.node for out in node.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    caches, new_nodes, dropped = {}, [], set()
    for node in list(graph.node):
        if node.op_type != "Attention":
            continue
        plan = _cache_plan(node, inputs, producers, consumers)
        if plan is None:
            continue
        name = node.name or "Attention"
        if len(node.input) > 3 and node.input[3]:
            raise NodeError("Attention", name, "--static-kv-cache cannot rewrite an attention with attn_mask "
                                               "(the mask covers the growing concatenated length)")
        concat_style = plan["key"][3] is not None
        if concat_style and any(a.name == "is_causal" and a.i for a in node.attribute):
            raise NodeError("Attention", name, "--static-kv-cache cannot rewrite a causal attention over a Concat "
                                               "cache: without past_key, ONNX aligns is_causal to the top-left "
                                               "(the new query sees only the first keys), which a fixed-capacity "
                                               "cache cannot express")
        if len(node.output) > 3 and node.output[3]:
            raise NodeError("Attention", name, "--static-kv-cache cannot rewrite an attention whose "
                                               "qk_matmul_output is used")
        for kind in ("key", "value"):
            past, new, present, concat = plan[kind]
            value = inputs[past]
            dims = value.type.tensor_type.shape.dim
            new_shape = shapes.get(new, [])
            if len(dims) != 4 or len(new_shape) != 4:
                raise NodeError("Attention", name, f"--static-kv-cache needs 4D {kind} inputs and caches")
            if not new_shape[2]:
                raise NodeError("Attention", name, f"--static-kv-cache needs a static number of new {kind} rows "
                                                   f"per step ({new} has a symbolic sequence length)")
            dims[2].Clear()
            dims[2].dim_value = capacity
            if concat is not None:
                dropped.add(id(concat))
            new_nodes.append(helper.make_node("TensorScatter", [past, new, PAST_LENGTH], [present],
                                              name=f"{name}_{kind}_cache_update", axis=2))
            caches[past] = new_shape[2]
            _set_dim(graph.output, present, capacity)
        new_length = plan["key"][1]
        valid = f"{name}_valid_length"
        new_nodes += [
            helper.make_node("Shape", [new_length], [f"{valid}_shape"], start=2, end=3),
            helper.make_node("Add", [PAST_LENGTH, f"{valid}_shape"], [valid]),
        ]
        attention_inputs = [node.input[0], plan["key"][2], plan["value"][2], "", "", "", valid]
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        new_nodes.append(helper.make_node("Attention", attention_inputs, [node.output[0]], name=name, **attributes))
        dropped.add(id(node))
    if not caches:
        raise KvattnError("--static-kv-cache: the model has no concat-style KV cache (an Attention with "
                          "past_key/past_value model inputs, or a Concat of a past cache input before Attention)")
    batch = inputs[next(iter(caches))].type.tensor_type.shape.dim[0].dim_value
    graph.input.append(helper.make_tensor_value_info(PAST_LENGTH, TensorProto.INT64, [batch]))
    kept = [node for node in graph.node if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(_topological(kept + new_nodes, graph))
    del graph.value_info[:]
    onnx_params.check_model(model)
    return model, caches


def _cache_plan(node, inputs, producers, consumers):
    """{kind: (past input, new rows, present name, concat node or None)} for an attention with a
    concat-style cache, or None."""
    past_inputs = list(node.input[4:6]) if len(node.input) > 5 else []
    if len(past_inputs) == 2 and all(name in inputs for name in past_inputs):
        presents = list(node.output[1:3]) + [""] * (3 - len(node.output))
        return {kind: (past, node.input[1 + i], presents[i] or f"{node.name}_present_{kind}", None)
                for i, (kind, past) in enumerate(zip(("key", "value"), past_inputs))}
    plan = {}
    for i, kind in enumerate(("key", "value")):
        concat = producers.get(node.input[1 + i])
        if (concat is None or concat.op_type != "Concat" or len(concat.input) != 2
                or concat.input[0] not in inputs or _axis(concat) not in (2, -2)):
            return None
        if any(other is not node for other in consumers.get(concat.output[0], [])):
            return None
        plan[kind] = (concat.input[0], concat.input[1], concat.output[0], concat)
    return plan


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every value's inferred shape (0 for a symbolic dim)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output)
    return {value.name: [dim.dim_value for dim in value.type.tensor_type.shape.dim] for value in values}


def _axis(node) -> int | None:
    for attribute in node.attribute:
        if attribute.name == "axis":
            return helper.get_attribute_value(attribute)
    return None


def _set_dim(values, name: str, capacity: int) -> None:
    for value in values:
        if value.name == name:
            dim = value.type.tensor_type.shape.dim[2]
            dim.Clear()
            dim.dim_value = capacity


def _at_opset_24(model: onnx.ModelProto) -> onnx.ModelProto:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version >= 24:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    try:
        return onnx.version_converter.convert_version(model, 24)
    except Exception as exc:  # the converter raises plain RuntimeError/ValueError
        raise KvattnError(f"--static-kv-cache needs the model at opset 24 (TensorScatter); converting "
                          f"from opset {version} failed: {exc}") from None


def _topological(nodes, graph):
    available = {value.name for value in graph.input} | {init.name for init in graph.initializer} | {""}
    ordered, pending = [], list(nodes)
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise KvattnError("--static-kv-cache: the rewritten graph has a cycle")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [node for node in pending if node not in ready]
    return ordered
