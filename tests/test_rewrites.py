"""ONNX-level rewrites (kvattn.rewrites): transformers StaticCache ScatterND writes become
TensorScatter, so the caches are updated in place; scatters of any other form are left alone.
The exported fixtures' numerics with the rewrite in place are tests/test_exported_models.py's."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from kvattn import rewrites
from kvattn.runtime import inspect
from kvattn.runtime.compiler import compile_cached
from kvattn.runtime.module import CompiledModule
from tests.exported_fixtures import stored_cases

STATIC = sorted((pathlib.Path(__file__).parent / "models" / "fixtures").glob("*_static.onnx"))


@pytest.mark.parametrize("path", STATIC, ids=[p.stem for p in STATIC])
def test_static_cache_scatters_become_tensor_scatters(path):
    """Every ScatterND cache write is rewritten, the rewritten model computes exactly what the
    original does (onnx.reference, every stored case), and each cache is aliased."""
    model = onnx.load(path)
    rewritten, decisions = rewrites.apply(model)
    scatters = [node for node in model.graph.node if node.op_type == "ScatterND"]
    assert scatters and len([line for line in decisions if line.startswith("ScatterND")]) == len(scatters)
    assert not any(node.op_type == "ScatterND" for node in rewritten.graph.node)
    assert [n.name for n in rewritten.graph.node if n.op_type == "TensorScatter"] == [n.name for n in scatters]
    for _, inputs, _ in stored_cases(path):
        for before, after in zip(ReferenceEvaluator(model).run(None, inputs),
                                 ReferenceEvaluator(rewritten).run(None, inputs), strict=True):
            np.testing.assert_array_equal(before, after)
    caches = CompiledModule(compile_cached(path)).manifest.caches
    assert len(caches) == len(scatters) and all(link.aliased for link in caches), caches
    assert all(f"ScatterND '{n.name}'" in inspect.summary(path) for n in scatters[:1])


def _scatter_model(indices: np.ndarray | None, reduction: str = "none") -> onnx.ModelProto:
    """The StaticCache pattern on a [1, 2, 6, 4] cache, its row indices either the exporter's
    Range + offset (None) or the given constant, and the ScatterND's reduction."""
    info = helper.make_tensor_value_info
    nodes = [helper.make_node("Transpose", ["past"], ["past_t"], perm=[2, 0, 1, 3]),
             helper.make_node("Transpose", ["new"], ["new_t"], perm=[2, 0, 1, 3])]
    initializers = [numpy_helper.from_array(np.array(-1, np.int64).reshape(1), "minus_one")]
    if indices is None:
        initializers += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                         (("zero", 0), ("one", 1), ("count", 2))]
        nodes += [helper.make_node("Range", ["zero", "count", "one"], ["range"]),
                  helper.make_node("Add", ["range", "offset"], ["positions"]),
                  helper.make_node("Unsqueeze", ["positions", "minus_one"], ["rows"])]
    else:
        initializers.append(numpy_helper.from_array(indices, "rows"))
    nodes += [helper.make_node("ScatterND", ["past_t", "rows", "new_t"], ["written"], reduction=reduction),
              helper.make_node("Transpose", ["written"], ["present"], perm=[1, 2, 0, 3])]
    graph = helper.make_graph(nodes, "cache", [info("past", TensorProto.FLOAT, [1, 2, 6, 4]),
                                               info("new", TensorProto.FLOAT, [1, 2, 2, 4]),
                                               info("offset", TensorProto.INT64, [])],
                              [info("present", TensorProto.FLOAT, [1, 2, 6, 4])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def _inputs(offset: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"past": rng.standard_normal((1, 2, 6, 4)).astype(np.float32),
            "new": rng.standard_normal((1, 2, 2, 4)).astype(np.float32), "offset": np.array(offset, np.int64)}


def test_rewritten_scatter_matches_and_checks_its_rows(tmp_path):
    model = _scatter_model(None)
    rewritten, decisions = rewrites.apply(model)
    assert [n.op_type for n in rewritten.graph.node if n.op_type in ("ScatterND", "TensorScatter")] == ["TensorScatter"]
    onnx.save(model, tmp_path / "cache.onnx")
    module = CompiledModule(compile_cached(tmp_path / "cache.onnx"))
    assert module.manifest.caches and module.manifest.caches[0].aliased
    for offset in (0, 3, 4):
        np.testing.assert_array_equal(module.run(_inputs(offset))["present"],
                                      ReferenceEvaluator(model).run(None, _inputs(offset))[0])
    with pytest.raises(Exception, match="write_indices out of range"):  # ScatterND past the cache end
        module.run(_inputs(5))


@pytest.mark.parametrize("indices, reduction", [(np.array([[3], [1]], np.int64), "none"),
                                                (None, "add")], ids=["other rows", "reduction"])
def test_other_scatters_are_left_alone(indices, reduction):
    model = _scatter_model(indices, reduction)
    rewritten, decisions = rewrites.apply(model)
    assert not decisions
    assert [n.op_type for n in rewritten.graph.node].count("ScatterND") == 1
