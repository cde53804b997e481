"""Bring a model into the form the rest of kvattn reads, with onnx-ir's maintained passes.

  - model-local functions are inlined (onnx_ir.passes.common.InlinePass): producers ship
    onnxruntime's contrib ops as functions with their bodies (mobius: com.microsoft
    SkipSimplifiedLayerNormalization = Add + RMSNormalization), which IREE would otherwise
    receive unexpanded; the body's nodes for outputs the call leaves unnamed are dropped
    (RemoveUnusedNodesPass);
  - the model is read as onnxruntime reads it (onnx_import.in_onnxruntime_form): the graph is
    sorted topologically (onnxruntime runs graphs whose nodes are listed out of order,
    onnxruntime.transformers.float16 writes them; IREE's importer does not), and onnxruntime's
    SimplifiedLayerNormalization of the default domain is its com.microsoft op;
  - onnxruntime's normalization contrib ops become ONNX's RMSNormalization (opset 23):
    SimplifiedLayerNormalization(X, scale) = RMSNormalization(X, scale), and
    SkipSimplifiedLayerNormalization(X, skip, gamma[, bias]) = (RMSNormalization(S, gamma), S)
    with S = X + skip (+ bias), refused naming the node when their mean / inv_std_var outputs
    are read.

External data stays where it is (onnx-ir keeps its references). Returns the model and one line
per change, for `kvattn inspect`.
"""

from __future__ import annotations

import onnx
import onnx_ir
from onnx_ir.passes.common import InlinePass, RemoveUnusedNodesPass

from kvattn.lowering import onnx_import
from kvattn.lowering.diagnostics import NodeError
from kvattn.rewrites import opset

RMS_NORMALIZATION_OPSET = 23


def normalize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model with its local functions inlined, read as onnxruntime reads it, its
    normalization contrib ops standard (the caller's model is not modified; returned as is when
    there is nothing to do)."""
    decisions = []
    functions = [f"{f.domain}.{f.name}" if f.domain else f.name for f in model.functions]
    if functions:
        ir_model = onnx_ir.serde.deserialize_model(model)
        InlinePass()(ir_model)
        RemoveUnusedNodesPass()(ir_model)  # what the bodies compute for outputs the call leaves unnamed
        model = onnx_ir.serde.serialize_model(ir_model)
        decisions.append(f"inlined the model-local functions {', '.join(sorted(set(functions)))}")
    model, changes = onnx_import.in_onnxruntime_form(model)
    model, norms = _standard_norms(model)
    return model, decisions + changes + norms


def _standard_norms(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    norms = [node for node in model.graph.node if node.domain == onnx_import.CONTRIB_DOMAIN
             and node.op_type in ("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization")]
    if not norms:
        return model, []
    read = {name for node in model.graph.node for name in node.input} | {value.name for value in model.graph.output}
    result = onnx.ModelProto()
    result.CopyFrom(opset.at_least(model, RMS_NORMALIZATION_OPSET, "RMSNormalization"))
    nodes = []
    for node in result.graph.node:
        if node not in norms:
            nodes.append(node)
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        skip = node.op_type == "SkipSimplifiedLayerNormalization"
        statistics = node.output[1:3]
        if any(name and name in read for name in statistics):
            raise NodeError(node.op_type, node.name, "its mean / inv_std_var outputs are read; kvattn writes only "
                                                     "the normalized output (and the skip sum)")
        x, scale = node.input[0], node.input[2 if skip else 1]
        if skip:
            total = node.output[3] if len(node.output) > 3 and node.output[3] else f"{node.name}/skip_sum"
            nodes.append(onnx.helper.make_node("Add", node.input[:2], [total if len(node.input) < 4 or not
                                               node.input[3] else f"{total}/without_bias"], name=f"{node.name}/skip"))
            if len(node.input) > 3 and node.input[3]:
                nodes.append(onnx.helper.make_node("Add", [f"{total}/without_bias", node.input[3]], [total],
                                                   name=f"{node.name}/bias"))
            x = total
        nodes.append(onnx.helper.make_node("RMSNormalization", [x, scale], node.output[:1], name=node.name,
                                           axis=attrs.get("axis", -1), epsilon=attrs.get("epsilon", 1e-5),
                                           stash_type=attrs.get("stash_type", 1)))
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    kinds = ", ".join(sorted({node.op_type for node in norms}))
    return result, [f"{len(norms)} onnxruntime {kinds} written as RMSNormalization (+ Add)"]
