"""Free-dimension overrides (`kvattn compile --dim NAME=VALUE`, like onnxruntime's): bind symbolic dims.

On a copy of the model (the caller's ModelProto is never modified):

    every dim of a graph input, output or value_info whose dim_param is NAME  ⇒  dim_value VALUE

then onnxscript's constant folder (`onnxscript.optimizer.fold_constants`, with ONNX's node-level
shape inference) folds what the bound sizes make constant — the Shape / Gather / Concat / Range
chains exporters build sizes from — and the nodes left unused are removed, so that the operators
downstream see static shapes. (ONNX shape inference alone, even with data propagation, leaves
those chains unknown; the pipeline runs it again afterwards.)
"""

from __future__ import annotations

from typing import Mapping

import onnx

from kvattn.lowering.diagnostics import KvattnError


def symbolic_dims(model: onnx.ModelProto) -> list[str]:
    """The dim_param names of the model's graph inputs (the dims a caller chooses; outputs may
    name expressions such as `past_seq + seq`), in order of appearance."""
    names = {}
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param and not dim.HasField("dim_value"):
                names[dim.dim_param] = None
    return list(names)


def bind(model: onnx.ModelProto, dims: Mapping[str, int]) -> onnx.ModelProto:
    """A copy of the model with each symbolic dim in `dims` set to its value and the sizes that
    follow from them folded."""
    known = symbolic_dims(model)
    for name, value in dims.items():
        if name not in known:
            listed = ", ".join(known) if known else "none"
            raise KvattnError(f"--dim {name}: the model has no symbolic dim '{name}'; its symbolic dims: {listed}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise KvattnError(f"--dim {name}: the value must be a non-negative integer, got {value!r}")
    import onnxscript.optimizer  # takes a second to import: only when binding

    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    graph = bound.graph
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in dims:
                dim.dim_value = dims[dim.dim_param]  # clears dim_param (a oneof)
    onnxscript.optimizer.fold_constants(bound)
    onnxscript.optimizer.remove_unused_nodes(bound)
    return bound
