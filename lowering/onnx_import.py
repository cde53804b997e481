"""ONNX model → torch-dialect MLIR module, through IREE's ONNX importer.

Loads and checks the model (clear errors for files that are not ONNX), gives every unnamed
node a stable name (`<OpType>_<index>`) on a copy so that IR locations and error messages can
name it, and imports the main graph with `iree.compiler.extras.onnx_importer`. Operators that
IREE has no lowering for arrive as `torch.operator "onnx.X"`; the raise pass turns ours into
kvattn ops.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import onnx
import onnx_ir
from google.protobuf.message import DecodeError
from iree.compiler import ir
from iree.compiler.extras import onnx_importer
from iree.compiler.tools.import_onnx.importer_externalization_overrides import IREENodeImporter
from onnx import numpy_helper
from onnx_ir.passes.common import TopologicalSortPass

from kvattn.lowering import onnx_params
from kvattn.lowering.diagnostics import KvattnError


def make_context() -> ir.Context:
    context = ir.Context()
    context.allow_unregistered_dialects = True
    return context


def load_model(source) -> onnx.ModelProto:
    """A ModelProto from a path, bytes or ModelProto (never modified), checked for validity. From
    a path, the large initializers' external data is left unread (onnx_params.load_unread)."""
    checked = source  # a file is checked as a file: its external data is found beside it
    if isinstance(source, onnx.ModelProto):
        model = source
    else:
        what = "the given bytes"
        try:
            if isinstance(source, (bytes, bytearray)):
                model = checked = onnx.load_model_from_string(bytes(source))
            else:
                what = f"'{os.fspath(source)}'"
                if not os.path.isfile(source):
                    raise KvattnError(f"{what}: no such file")
                model = onnx_params.load_unread(source)
        except onnx.checker.ValidationError as exc:  # raised for a missing external data file
            raise KvattnError(f"{what}: cannot load its external data: {exc}") from None
        except (DecodeError, RuntimeError, ValueError, OSError) as exc:
            raise KvattnError(f"{what} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
        if not model.graph.node and not model.graph.output:
            raise KvattnError(f"{what} is not an ONNX model: it has no graph (truncated or not ONNX?)")
    try:
        onnx.checker.check_model(checked if isinstance(checked, onnx.ModelProto) else os.fspath(checked))
    except onnx.checker.ValidationError as exc:
        problem = _problem_in_onnxruntime_form(model) if _onnxruntime_reads_it(str(exc)) else str(exc)
        if problem:
            raise KvattnError(f"the ONNX model is invalid: {problem.strip().splitlines()[0]}") from None
    return model


# What onnxruntime accepts beyond the ONNX checker: graphs whose nodes are out of order (its fp16
# converter writes them), and its own contrib op SimplifiedLayerNormalization in the default domain
# (onnxruntime-genai's model builder writes it there). kvattn reads them as onnxruntime does.
_UNSORTED = "Nodes in a graph must be topologically sorted"
ONNXRUNTIME_DEFAULT_DOMAIN_OPS = ("SimplifiedLayerNormalization",)
CONTRIB_DOMAIN = "com.microsoft"


def _onnxruntime_reads_it(message: str) -> bool:
    return _UNSORTED in message or any(f"No Op registered for {op} " in message for op in ONNXRUNTIME_DEFAULT_DOMAIN_OPS)


def in_onnxruntime_form(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model as onnxruntime reads it: nodes sorted topologically (onnx-ir's TopologicalSortPass),
    onnxruntime's contrib ops of the default domain in com.microsoft; the changes, one line each.
    Returned as is when there is nothing to change."""
    moved = sorted({node.op_type for node in model.graph.node
                    if node.domain in ("", "ai.onnx") and node.op_type in ONNXRUNTIME_DEFAULT_DOMAIN_OPS})
    if not moved and _sorted(model.graph):
        return model, []
    ir_model = onnx_ir.serde.deserialize_model(model)
    changes = []
    if TopologicalSortPass()(ir_model).modified and not _sorted(model.graph):
        changes.append("sorted the graph's nodes topologically")
    for node in ir_model.graph:
        if node.domain in ("", "ai.onnx") and node.op_type in ONNXRUNTIME_DEFAULT_DOMAIN_OPS:
            node.domain = CONTRIB_DOMAIN
    if moved:
        ir_model.opset_imports.setdefault(CONTRIB_DOMAIN, 1)
        changes.append(f"read {', '.join(moved)} of the default domain as onnxruntime's ({CONTRIB_DOMAIN})")
    return onnx_ir.serde.serialize_model(ir_model), changes


def _sorted(graph: onnx.GraphProto) -> bool:
    """Whether every node's inputs are graph inputs, initializers or earlier nodes' outputs."""
    known = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer} | {""}
    for node in graph.node:
        if any(name not in known for name in node.input):
            return False
        known.update(node.output)
    return True


def _problem_in_onnxruntime_form(model: onnx.ModelProto) -> str | None:
    """What the checker says of the model as onnxruntime reads it (its external data, unread, was
    checked with the file: here its weights are graph inputs of their types, which the checker
    from memory would look for beside the working directory)."""
    converted = in_onnxruntime_form(model)[0]
    external = [t for t in converted.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        copy = onnx.ModelProto()
        copy.CopyFrom(converted)
        converted = copy
        kept = [t for t in converted.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
        del converted.graph.initializer[:]
        converted.graph.initializer.extend(kept)
        converted.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in external)
    try:
        onnx.checker.check_model(converted)
    except onnx.checker.ValidationError as exc:
        return str(exc)
    return None


# IREE names each dispatch's object file after the function ("<name>$async_dispatch_N"): a graph
# name of ~240 characters (onnx.compose.merge_models joins the graph names) crashes iree-compile
# with "failed to generate temporary file: File name too long".
MAX_FUNCTION_NAME = 64


def with_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model whose nodes all have unique names, whose graph name (the entry
    function's name) is at most MAX_FUNCTION_NAME characters, whose intermediate values carry
    the types ONNX shape inference gives them, whose Constants are tensors and whose subgraph
    Constants are typed tensors (the user's model is untouched)."""
    try:
        named = onnx.shape_inference.infer_shapes(_without_wrong_annotations(model), data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise KvattnError(f"ONNX shape inference rejected the model: {_first_line(exc)}") from None
    _forget_inferred_qk_length(named)
    named.graph.name = named.graph.name[:MAX_FUNCTION_NAME]
    _tensor_constants(named.graph)
    for node in named.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _type_constants(attribute.g)
    taken = {node.name for node in named.graph.node if node.name}
    for index, node in enumerate(named.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    _check_declared_types(named)
    return named


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _without_wrong_annotations(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the value_info annotations of intermediate values that contradict what
    their node computes (onnxruntime ignores them; onnxruntime-genai's builder declares a
    one-element constant as a scalar). A declared graph output that does is an error later."""
    outputs = {value.name for value in model.graph.output}
    copy = None
    for _ in range(len(model.graph.value_info)):
        try:
            onnx.shape_inference.infer_shapes(copy or model, strict_mode=True)
            break
        except onnx.shape_inference.InferenceError as exc:
            conflict = _DECLARED_CONFLICT.search(str(exc))
            node = conflict and next((n for n in (copy or model).graph.node if n.name == conflict.group(2)), None)
            wrong = [name for name in (node.output if node else []) if name not in outputs]
            annotated = [v for v in (copy or model).graph.value_info if v.name in wrong]
            if not annotated:
                break
            if copy is None:
                copy = onnx.ModelProto()
                copy.CopyFrom(model)
                annotated = [v for v in copy.graph.value_info if v.name in wrong]
            for value in annotated:
                copy.graph.value_info.remove(value)
    return copy or model


def _check_declared_types(named: onnx.ModelProto) -> None:
    """A declared output (or value_info) type that disagrees with what its node computes is an
    error naming the node (non-strict shape inference keeps the declared type, and IREE then
    fails on an incompatible cast); other strict-mode complaints are left to the later stages."""
    try:
        onnx.shape_inference.infer_shapes(named, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        conflict = _DECLARED_CONFLICT.search(str(exc))
        if conflict:
            op_type, node, detail = conflict.groups()
            outputs = next((list(n.output) for n in named.graph.node if n.name == node), [])
            declared = {v.name for v in list(named.graph.output) + list(named.graph.value_info)}
            names = ", ".join(f"'{o}'" for o in outputs if o in declared) or "its output"
            raise KvattnError(f"{op_type} node '{node}': the model declares a type for {names} that differs "
                              f"from what the node computes: {detail.strip()}") from None


_DECLARED_CONFLICT = re.compile(r"\(op_type:(\w+), node name: ([^)]*)\): \[\w+\] "
                                r"(Inferred (?:shape|elem type) and existing (?:shape|elem type) differ[^\n]*)")


_CONSTANT_FORMS = {"value_float": np.float32, "value_floats": np.float32,
                   "value_int": np.int64, "value_ints": np.int64}
# Element types IREE's importer reads from a TensorProto's typed fields (raw_data becomes a
# dense_resource, whose bytes MLIR's Python API cannot read back).
_TYPED_ELEMENTS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT64,
                   onnx.TensorProto.INT32, onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.BOOL)


def _tensor_constants(graph: onnx.GraphProto) -> None:
    """Every Constant written with value_float(s) / value_int(s) as the same `value` tensor:
    IREE's ONNX lowering takes only the tensor form (a model-local function's body, inlined,
    brings the others: mobius's SkipSimplifiedLayerNormalization)."""
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1 \
                and node.attribute[0].name in _CONSTANT_FORMS:
            attribute = node.attribute[0]
            array = np.array(onnx.helper.get_attribute_value(attribute), _CONSTANT_FORMS[attribute.name])
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(array)))


def _type_constants(graph: onnx.GraphProto) -> None:
    """Every Constant of a subgraph (FlexAttention's score_mod / prob_mod, which kvattn folds
    at compile time) as `value` with typed fields, whichever form the exporter wrote (raw_data,
    value_float(s), value_int(s)); fp16/bf16 values become an f32 Constant and a Cast (exact)."""
    nodes = []
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
            nodes.append(node)
            continue
        attribute = node.attribute[0]
        if attribute.name == "value":
            array = numpy_helper.to_array(attribute.t)
            element = attribute.t.data_type
        elif attribute.name in _CONSTANT_FORMS:
            array = np.array(onnx.helper.get_attribute_value(attribute), _CONSTANT_FORMS[attribute.name])
            element = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        else:
            nodes.append(node)
            continue
        stored = element if element in _TYPED_ELEMENTS else onnx.TensorProto.FLOAT
        value_name = node.output[0] if stored == element else f"{node.output[0]}__f32"
        nodes.append(onnx.helper.make_node("Constant", [], [value_name], name=node.name, value=onnx.helper.make_tensor(
            value_name, stored, array.shape, array.astype(onnx.helper.tensor_dtype_to_np_dtype(stored)).ravel().tolist())))
        if stored != element:
            nodes.append(onnx.helper.make_node("Cast", [value_name], [node.output[0]], to=element))
    del graph.node[:]
    graph.node.extend(nodes)


def _forget_inferred_qk_length(model: onnx.ModelProto) -> None:
    """ONNX 1.23 infers Attention's qk_matmul_output as [B, H, S, 0] when the key or past length
    is not static (the module would return an empty tensor): make that dim unknown again."""
    values = {value.name: value for value in
              list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)}

    def dims(name):
        return values[name].type.tensor_type.shape.dim if name in values else []

    for node in model.graph.node:
        if node.op_type != "Attention" or len(node.output) < 4 or not node.output[3]:
            continue
        key = dims(node.input[1])
        lengths = [key[2 if len(key) == 4 else 1] if len(key) in (3, 4) else None]
        if len(node.input) > 4 and node.input[4]:
            past = dims(node.input[4])
            lengths.append(past[2] if len(past) == 4 else None)
        qk = dims(node.output[3])
        if len(qk) == 4 and any(length is None or not length.HasField("dim_value") for length in lengths):
            qk[3].Clear()


def opset_of(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise KvattnError("the ONNX model imports no default-domain opset")


DOMAIN_ATTR = "onnx_domain"
REGION_NAMES_ATTR = "onnx_region_names"
INPUT_NAMES_ATTR = "kvattn.onnx_inputs"  # on the imported function: its arguments' ONNX names
OUTPUT_NAMES_ATTR = "kvattn.onnx_outputs"  # and its results'


def import_model(model: onnx.ModelProto, context: ir.Context,
                 externalize: bool = False) -> tuple[ir.Module, list[onnx_params.Parameter]]:
    """Import the (already named) model's main graph as a torch-dialect module. The importer
    drops a node's domain from the op name (`onnx.X` for every domain) and the names of graph
    attributes (imported as regions in sorted name order), so each torch.operator of a
    non-default domain gets an `onnx_domain` attribute, and each with regions an
    `onnx_region_names` attribute. The function records the ONNX names of its arguments and
    results (`kvattn.onnx_inputs` / `kvattn.onnx_outputs`). With `externalize`, the large
    initializers become IREE parameters (onnx_params), returned with their archive keys."""
    info = onnx_importer.ModelInfo(model)
    module = info.create_module(context=context)
    if externalize:
        importer = IREENodeImporter.define_function(info.main_graph, module.operation, onnx_params.param_data())
    else:
        importer = onnx_importer.NodeImporter.define_function(info.main_graph, module.operation)
    try:
        with warnings.catch_warnings():
            # Omitted optional outputs ("") have no type proto; they import as !torch.none.
            warnings.filterwarnings("ignore", message="Found a node without a valid type proto")
            importer.import_all()
    except onnx_importer.OnnxImportError as exc:
        raise KvattnError(f"IREE's ONNX importer rejected the model: {exc}") from None
    _name_signature(module, model)
    tags = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            tags.setdefault(node.name, {})[DOMAIN_ATTR] = ir.StringAttr.get(node.domain)
        regions = sorted(a.name for a in node.attribute if a.type == onnx.AttributeProto.GRAPH)
        if regions:
            tags.setdefault(node.name, {})[REGION_NAMES_ATTR] = ir.ArrayAttr.get(
                [ir.StringAttr.get(name) for name in regions])
    if tags:
        def tag(op):
            if op.operation.name == "torch.operator":
                match = re.search(r'loc\("([^"]*)"', str(op.operation.location))
                for name, value in tags.get(match.group(1) if match else None, {}).items():
                    op.operation.attributes[name] = value
            return ir.WalkResult.ADVANCE

        module.operation.walk(tag)
    parameters = [onnx_params.Parameter(name, key) for name, key in getattr(importer, "globals", [])]
    return module, parameters


def main_function(module: ir.Module) -> ir.Operation:
    """The module's function (the imported graph; after lowering, its ABI util.func): the first
    function op, past the parameters' util.globals."""
    for op in module.body.operations:
        if op.operation.name in ("func.func", "util.func"):
            return op.operation
    raise KvattnError("the module has no function")


def _name_signature(module: ir.Module, model: onnx.ModelProto) -> None:
    initializers = {init.name for init in model.graph.initializer}
    names = {INPUT_NAMES_ATTR: [i.name for i in model.graph.input if i.name not in initializers],
             OUTPUT_NAMES_ATTR: [o.name for o in model.graph.output]}
    func = main_function(module)
    for attr, values in names.items():
        func.attributes[attr] = ir.ArrayAttr.get([ir.StringAttr.get(v) for v in values])


def signature_names(func: ir.Operation) -> tuple[list[str], list[str]]:
    """The ONNX names of an imported function's arguments and results ("argument I" /
    "result N" for a function that does not record them)."""
    function_type = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    names = []
    for attr, kind, count in ((INPUT_NAMES_ATTR, "argument", len(function_type.inputs)),
                              (OUTPUT_NAMES_ATTR, "result", len(function_type.results))):
        if attr in func.attributes:
            names.append([ir.StringAttr(a).value for a in ir.ArrayAttr(func.attributes[attr])])
        else:
            names.append([f"{kind} {i}" for i in range(count)])
    return names[0], names[1]
