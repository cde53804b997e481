"""Bring a model into the form the rest of kvattn reads, with onnx-ir's maintained passes.

  - model-local functions are inlined (onnx_ir.passes.common.InlinePass): producers ship
    onnxruntime's contrib ops as functions with their bodies (mobius: com.microsoft
    SkipSimplifiedLayerNormalization = Add + RMSNormalization), which IREE would otherwise
    receive unexpanded; the body's nodes for outputs the call leaves unnamed are dropped
    (RemoveUnusedNodesPass);
  - the graph is sorted topologically (TopologicalSortPass): onnxruntime runs graphs whose
    nodes are listed out of order (onnxruntime.transformers.float16 writes them), IREE's
    importer does not.

External data stays where it is (onnx-ir keeps its references). Returns the model and one line
per change, for `kvattn inspect`.
"""

from __future__ import annotations

import onnx
import onnx_ir
from onnx_ir.passes.common import InlinePass, RemoveUnusedNodesPass, TopologicalSortPass


def normalize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model with its local functions inlined and its nodes in topological order (the
    caller's model is not modified; returned as is when there is nothing to do)."""
    functions = [f"{f.domain}.{f.name}" if f.domain else f.name for f in model.functions]
    if not functions and _sorted(model.graph):
        return model, []
    ir_model = onnx_ir.serde.deserialize_model(model)
    decisions = []
    if InlinePass()(ir_model).modified:
        RemoveUnusedNodesPass()(ir_model)  # what the bodies compute for outputs the call leaves unnamed
        decisions.append(f"inlined the model-local functions {', '.join(sorted(set(functions)))}")
    if TopologicalSortPass()(ir_model).modified and not _sorted(model.graph):
        decisions.append("sorted the graph's nodes topologically")
    return onnx_ir.serde.serialize_model(ir_model), decisions


def _sorted(graph: onnx.GraphProto) -> bool:
    """Whether every node's inputs are graph inputs, initializers or earlier nodes' outputs."""
    known = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer} | {""}
    for node in graph.node:
        if any(name not in known for name in node.input):
            return False
        known.update(node.output)
    return True
