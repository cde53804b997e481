"""Models in the forms producers ship and onnxruntime accepts (rewrites/model_form.py): model-local
functions (mobius's com.microsoft SkipSimplifiedLayerNormalization, with value_floats Constants in
its body) are inlined, graphs whose nodes are out of order are sorted, a merged model's long graph
name is cut (lowering/onnx_import.py); each compiled and run on the IREE runtime, compared with
onnxruntime. The mobius fixtures themselves run in test_exported_models."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from kvattn.rewrites import model_form
from kvattn.runtime.compiler import compile_model, compile_to_stage
from kvattn.runtime.module import CompiledModule
from tests.onnx_models import symbolic_model


def skip_norm_model(sorted_nodes: bool = True) -> onnx.ModelProto:
    """As mobius writes it: SkipSimplifiedLayerNormalization as a com.microsoft function whose body
    is Add + RMSNormalization, its unused mean / inv_std_var outputs Constants with value_floats."""
    body = [
        helper.make_node("Add", ["input", "skip"], ["add_out"]),
        helper.make_node("RMSNormalization", ["add_out", "weight"], ["norm_out"]),
        helper.make_node("Constant", [], ["mean"], value_floats=[0.0]),
        helper.make_node("Constant", [], ["inv_std_var"], value_floats=[0.0]),
    ]
    body[1].attribute.append(helper.make_attribute_ref("epsilon", onnx.AttributeProto.FLOAT))
    function = helper.make_function("com.microsoft", "SkipSimplifiedLayerNormalization", ["input", "skip", "weight"],
                                    ["norm_out", "mean", "inv_std_var", "add_out"], body,
                                    [helper.make_opsetid("", 24)], attributes=["epsilon"])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["doubled"]),
        helper.make_node("SkipSimplifiedLayerNormalization", ["doubled", "skip", "scale"], ["y", "", "", "sum"],
                         domain="com.microsoft", epsilon=1e-5),
        helper.make_node("Relu", ["y"], ["out"]),
    ]
    if not sorted_nodes:
        nodes.reverse()
    graph = helper.make_graph(
        nodes, "skip_norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8]),
         helper.make_tensor_value_info("skip", TensorProto.FLOAT, ["batch", "seq", 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", 8]),
         helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", "seq", 8])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("scale", TensorProto.FLOAT, [8], np.linspace(0.5, 1.5, 8).tolist())])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24), helper.make_opsetid("com.microsoft", 1)],
                             functions=[function])


@pytest.mark.parametrize("sorted_nodes", [True, False], ids=["sorted", "nodes_reversed"])
def test_local_functions_and_unsorted_graphs_compile_and_match_onnxruntime(sorted_nodes):
    model = skip_norm_model(sorted_nodes)
    module = CompiledModule(compile_model(model).vmfb)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in ((1, 1, 8), (2, 5, 8)):
        inputs = {"x": rng.standard_normal(shape, np.float32), "skip": rng.standard_normal(shape, np.float32)}
        got = module.run(inputs)
        for (name, value), expected in zip(got.items(), session.run(None, inputs), strict=True):
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_normalize_reports_what_it_did_and_leaves_the_callers_model():
    model = skip_norm_model(sorted_nodes=False)
    before = model.SerializeToString()
    normalized, decisions = model_form.normalize(model)
    assert model.SerializeToString() == before
    assert not normalized.functions
    assert [n.op_type for n in normalized.graph.node if n.op_type in ("Add", "RMSNormalization")] == \
        ["Add", "RMSNormalization"]
    assert decisions == ["inlined the model-local functions com.microsoft.SkipSimplifiedLayerNormalization",
                         "sorted the graph's nodes topologically"]
    plain = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]))
    assert model_form.normalize(plain) == (plain, [])


def test_inspect_names_the_rewrites_and_the_raised_rms_normalization():
    text, result = compile_to_stage(skip_norm_model(sorted_nodes=False), "raised")
    assert "ONNX rewrite" not in " ".join(result.rewrites)
    assert result.rewrites[0].startswith("inlined the model-local functions")
    assert "kvattn.rms_normalization" in text and "SkipSimplifiedLayerNormalization" not in text


def test_merged_models_long_graph_name_compiles_and_matches_onnxruntime():
    """onnx.compose.merge_models joins the graph names: 16 merged models have a graph name of 255
    characters, with which IREE named files the file system refused (iree-compile crashed on the
    MatMul's dispatch)."""
    model = symbolic_model()
    model.graph.name = "_".join(["attention_model"] * 16)
    before = model.SerializeToString()
    module = CompiledModule(compile_model(model).vmfb)
    assert model.SerializeToString() == before
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 3, 8), np.float32), "m": rng.standard_normal((2, 3, 4), np.float32)}
    expected = onnxruntime.InferenceSession(before, providers=["CPUExecutionProvider"]).run(None, inputs)
    for value, want in zip(module.run(inputs).values(), expected, strict=True):
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6)
