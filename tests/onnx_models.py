"""Small ONNX models built with onnx.helper for the numeric and CLI tests, and the comparison
of kvattn against onnx.reference on them."""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
import onnx
import onnx.compose
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from kvattn.runtime import backend, demo, targets

_ELEMENT = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
            np.dtype(ml_dtypes.bfloat16): TensorProto.BFLOAT16,
            np.dtype(np.int64): TensorProto.INT64, np.dtype(bool): TensorProto.BOOL}


def fuse_cpu_attention(monkeypatch) -> None:
    """For the rest of the test, llvm-cpu lowers every attention it can as the fused
    iree_linalg_ext.attention with its CPU tiles, never materializing small scores: test shapes
    are small, and would otherwise all take the materialized route (attention_routes.attention)."""
    monkeypatch.setitem(targets.TARGETS, "llvm-cpu", targets.fused_attention_only(targets.get("llvm-cpu")))


def merged_model(models, prefix: str) -> onnx.ModelProto:
    """One model holding each model's graph under the prefix `<prefix><index>_` (onnx.compose):
    tests share one compile among small cases this way (compiling is most of their cost)."""
    prefixed = [onnx.compose.add_prefix(model, f"{prefix}{index}_") for index, model in enumerate(models)]
    return functools.reduce(lambda a, b: onnx.compose.merge_models(a, b, io_map=[]), prefixed)


def single_node_model(op_type: str, inputs: dict[str, np.ndarray], input_names: list[str],
                      output_shapes: dict[str, tuple[tuple[int, ...], np.dtype]], opset: int,
                      node_name: str = "", output_names: list[str] | None = None, **attributes) -> onnx.ModelProto:
    """One node; `input_names` and `output_names` (default: the keys of `output_shapes`) may
    contain "" for omitted optional inputs and outputs."""
    node = helper.make_node(op_type, input_names, output_names or list(output_shapes), name=node_name, **attributes)
    graph = helper.make_graph(
        [node], f"{op_type.lower()}_model",
        [helper.make_tensor_value_info(n, _ELEMENT[a.dtype], a.shape) for n, a in inputs.items()],
        [helper.make_tensor_value_info(n, _ELEMENT[np.dtype(d)], s) for n, (s, d) in output_shapes.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def compare_with_reference(model: onnx.ModelProto, inputs: dict[str, np.ndarray], rtol: float, atol: float):
    """Run kvattn and onnx.reference on the same inputs and assert every output matches."""
    got = backend.prepare(model).run(dict(inputs))
    return got, assert_matches_reference(model, inputs, got, rtol, atol)


def assert_matches_reference(model: onnx.ModelProto, inputs: dict[str, np.ndarray], got, rtol: float, atol: float):
    """Assert that `got` are the model's outputs on `inputs` as onnx.reference computes them (returned)."""
    expected = ReferenceEvaluator(model).run(None, dict(inputs))
    assert len(got) == len(expected)
    for output, (g, e) in zip(model.graph.output, zip(got, expected)):
        assert g.shape == e.shape, output.name
        np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"output {output.name}")
    return expected


def decode_inputs(rng, lengths=(3, 7)):
    """Random inputs for the demo's decode step, writing at per-batch `lengths`."""
    shape = lambda heads, length: (demo.BATCH, heads, length, demo.HEAD_SIZE)  # noqa: E731
    lengths = np.array(lengths, dtype=np.int64)
    return {
        "query": rng.standard_normal(shape(demo.Q_HEADS, 1)).astype(np.float32),
        "new_key": rng.standard_normal(shape(demo.KV_HEADS, 1)).astype(np.float32),
        "new_value": rng.standard_normal(shape(demo.KV_HEADS, 1)).astype(np.float32),
        "past_key": rng.standard_normal(shape(demo.KV_HEADS, demo.CAPACITY)).astype(np.float32),
        "past_value": rng.standard_normal(shape(demo.KV_HEADS, demo.CAPACITY)).astype(np.float32),
        "write_indices": lengths, "nonpad_kv_seqlen": lengths + 1,
    }


SYMBOLIC_WEIGHT = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)


def symbolic_model() -> onnx.ModelProto:
    """z = x[batch,seq,8] @ w + m[batch,seq,4]; flat = Reshape(z, Concat(Shape(x)[0:1], [-1]))."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="project"),
        helper.make_node("Add", ["xw", "m"], ["z"], name="add_m"),
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape_of_x"),
        helper.make_node("Slice", ["x_shape", "zero", "one"], ["batch_size"], name="batch_of_x"),
        helper.make_node("Concat", ["batch_size", "minus_one"], ["flat_shape"], axis=0, name="flat_shape"),
        helper.make_node("Reshape", ["z", "flat_shape"], ["flat"], name="flatten"),
    ]
    initializers = [numpy_helper.from_array(SYMBOLIC_WEIGHT, "w")] + [
        numpy_helper.from_array(np.array([v], np.int64), name) for name, v in (("zero", 0), ("one", 1), ("minus_one", -1))]
    graph = helper.make_graph(
        nodes, "symbolic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, ["batch", "seq", 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", "seq", 4]),
         helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["batch", "seq_times_4"])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model
