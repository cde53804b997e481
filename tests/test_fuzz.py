"""Differential fuzzing: random valid Attention and TensorScatter nodes, kvattn vs onnx.reference.

An example is one random node; NODES_PER_MODEL independent examples share one model (one
compile, one run: compiling is most of a fuzzing example's cost; a chunk of 40 examples took 25 s
as 5 models of 8 nodes, 18 s as 3 models of 16), each node with its own inputs and outputs and its own
tolerance. Each test is split into CHUNKS parametrized parts (so pytest-xdist can share them
between its workers), each drawing EXAMPLES / CHUNKS examples from a fixed seed of its own, so CI
runs the same 300+ examples every time. A failure names the output (`n3_Y`: node 3's Y) and
hypothesis prints the drawn nodes. For a longer local run:
    KVATTN_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py -n 2
"""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

from kvattn.runtime import backend
from tests.onnx_models import fuse_cpu_attention, merged_model, single_node_model

EXAMPLES = int(os.environ.get("KVATTN_FUZZ_EXAMPLES", "80"))
CHUNKS = 2
NODES_PER_MODEL = 16
LOW_PRECISION_TOLERANCE = {np.dtype(np.float16): 2e-3, np.dtype(ml_dtypes.bfloat16): 1.6e-2}  # 2 ulps


def run_fuzz(strategy, chunk: int) -> None:
    """Check EXAMPLES / CHUNKS cases drawn from `strategy` with seed `chunk`, NODES_PER_MODEL to a
    model. A case is (single-node model, its inputs, its tolerance)."""
    @settings(max_examples=-(-EXAMPLES // (CHUNKS * NODES_PER_MODEL)), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @seed(chunk)
    @given(st.lists(strategy, min_size=NODES_PER_MODEL, max_size=NODES_PER_MODEL))
    def fuzz(cases):
        check_together(cases)

    fuzz()


def check_together(cases) -> None:
    """Compile and run one model holding every case's node under its own prefix (`n0_`, `n1_`,
    ...); compare each node's outputs with onnx.reference on that node's own model (the
    reference evaluator keeps an omitted output "" as a value that a later node's omitted
    input then reads, so it cannot run the combined model)."""
    inputs = {f"n{index}_{name}": array for index, (_, case_inputs, _) in enumerate(cases)
              for name, array in case_inputs.items()}
    combined = merged_model([model for model, _, _ in cases], "n")
    got = iter(backend.prepare(combined).run(inputs))
    for index, (model, case_inputs, tolerance) in enumerate(cases):
        for output, expected in zip(model.graph.output, ReferenceEvaluator(model).run(None, dict(case_inputs))):
            result = next(got)
            assert result.shape == expected.shape, f"n{index}_{output.name}"
            np.testing.assert_allclose(result.astype(np.float64), expected.astype(np.float64), rtol=tolerance,
                                       atol=tolerance, err_msg=f"output n{index}_{output.name}")


CHUNK = pytest.mark.parametrize("chunk", range(CHUNKS))


def _route_for(chunk: int, monkeypatch) -> None:
    """Chunk 0 lowers each attention by the route its shape picks (for these small shapes mostly
    the materialized scores); chunk 1 takes the fused op with its CPU tiles wherever it can."""
    if chunk == 1:
        fuse_cpu_attention(monkeypatch)


@st.composite
def attention_case(draw, opset: int):
    rank = draw(st.sampled_from([3, 4]))
    batch = draw(st.integers(1, 2))
    kv_heads = draw(st.integers(1, 3))
    q_heads = kv_heads * draw(st.integers(1, 3))
    query_len, kv_len = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    head = draw(st.sampled_from([4, 8]))
    value_head = draw(st.sampled_from([head, 6]))
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float32, np.float16, ml_dtypes.bfloat16]))
    cache = draw(st.sampled_from(["none", "past", "nonpad"] if opset >= 24 else ["none", "past"]))
    past = draw(st.integers(1, 3)) if cache == "past" else 0
    total = past + kv_len
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))

    def tensor(heads, length, size):
        shape = (batch, heads, length, size) if rank == 4 else (batch, length, heads * size)
        return rng.standard_normal(shape).astype(dtype)

    inputs = {"Q": tensor(q_heads, query_len, head), "K": tensor(kv_heads, kv_len, head),
              "V": tensor(kv_heads, kv_len, value_head)}
    names = ["Q", "K", "V", "", "", "", ""]
    attrs = {"is_causal": draw(st.integers(0, 1))}
    if opset >= 25 and draw(st.booleans()):
        attrs["left_window_size"] = draw(st.integers(-1, 3))
        attrs["right_window_size"] = draw(st.integers(-1, 3))
    mask_kind = draw(st.sampled_from(["none", "bool", "float"]))
    if mask_kind != "none":
        mask_rank = draw(st.integers(1, 4)) if opset >= 25 else draw(st.integers(2, 4))
        if mask_rank == 1 and attrs["is_causal"] and len(attrs) == 1:
            mask_rank = 2  # onnx.reference fails on a rank-1 mask with is_causal and no window
        full = (batch, q_heads, query_len, total)[4 - mask_rank:]
        shape = [draw(st.sampled_from([1, size])) for size in full[:-1]] + [draw(st.integers(1, total))]
        if mask_rank >= 2 and (attrs["is_causal"] or len(attrs) > 1):
            # onnx.reference takes the causal/window frontier from the mask's own query length,
            # so a broadcast (size-1) query dim changes its answer; onnxruntime rejects such
            # masks. kvattn uses the real query positions: keep the query dim full here.
            shape[-2] = query_len
        inputs["attn_mask"] = (rng.random(shape) > 0.25 if mask_kind == "bool"
                               else rng.standard_normal(shape).astype(dtype))
        names[3] = "attn_mask"
    if past:
        inputs["past_key"] = rng.standard_normal((batch, kv_heads, past, head)).astype(dtype)
        inputs["past_value"] = rng.standard_normal((batch, kv_heads, past, value_head)).astype(dtype)
        names[4:6] = ["past_key", "past_value"]
    if cache == "nonpad":
        inputs["nonpad_kv_seqlen"] = np.array([draw(st.integers(0, kv_len)) for _ in range(batch)], np.int64)
        names[6] = "nonpad_kv_seqlen"
    while names[-1] == "":
        names.pop()
    if draw(st.booleans()):
        attrs["softcap"] = draw(st.sampled_from([0.5, 2.0, 30.0]))
    if draw(st.booleans()):
        attrs["scale"] = draw(st.sampled_from([0.05, 0.3, 1.0]))
    if rank == 3:
        attrs.update(q_num_heads=q_heads, kv_num_heads=kv_heads)
    y_shape = (batch, q_heads, query_len, value_head) if rank == 4 else (batch, query_len, q_heads * value_head)
    outputs = {"Y": (y_shape, dtype)}
    output_names = ["Y"]
    if past:
        outputs["present_key"] = ((batch, kv_heads, total, head), dtype)
        outputs["present_value"] = ((batch, kv_heads, total, value_head), dtype)
        output_names += ["present_key", "present_value"]
    if draw(st.booleans()):
        attrs["qk_matmul_output_mode"] = draw(st.integers(0, 3))
        outputs["qk_matmul_output"] = ((batch, q_heads, query_len, total), dtype)
        output_names += [""] * (3 - len(output_names)) + ["qk_matmul_output"]
    model = single_node_model("Attention", inputs, names, outputs, opset, output_names=output_names, **attrs)
    # fp16/bf16 follow the reference's rounding steps; what differs is f32 accumulation order
    # and exp/tanh, which can flip one rounding of an intermediate.
    return model, inputs, LOW_PRECISION_TOLERANCE.get(np.dtype(dtype), 2e-5)


@CHUNK
def test_fuzz_attention_opset23(chunk, monkeypatch):
    _route_for(chunk, monkeypatch)
    run_fuzz(attention_case(opset=23), chunk)


@CHUNK
def test_fuzz_attention_opset24(chunk, monkeypatch):
    _route_for(chunk, monkeypatch)
    run_fuzz(attention_case(opset=24), chunk)


@CHUNK
def test_fuzz_attention_opset25(chunk, monkeypatch):
    _route_for(chunk, monkeypatch)
    run_fuzz(attention_case(opset=25), chunk)


@st.composite
def tensor_scatter_case(draw):
    rank = draw(st.integers(2, 5))
    shape = [draw(st.integers(1, 3)) for _ in range(rank)]
    axis = draw(st.integers(1, rank - 1))
    shape[axis] = draw(st.integers(1, 9))
    capacity = shape[axis]
    rows = draw(st.integers(1, capacity))
    mode = draw(st.sampled_from(["linear", "circular"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    update_shape = list(shape)
    update_shape[axis] = rows
    inputs = {"past_cache": rng.standard_normal(shape).astype(np.float32),
              "update": rng.standard_normal(update_shape).astype(np.float32)}
    names = ["past_cache", "update"]
    if draw(st.booleans()):
        highest = capacity - rows if mode == "linear" else capacity - 1
        inputs["write_indices"] = np.array([draw(st.integers(0, highest)) for _ in range(shape[0])], np.int64)
        names.append("write_indices")
    negative_axis = draw(st.booleans())
    model = single_node_model("TensorScatter", inputs, names, {"present_cache": (tuple(shape), np.float32)}, 24,
                              mode=mode, axis=axis - rank if negative_axis else axis)
    return model, inputs, 0.0


@CHUNK
def test_fuzz_tensor_scatter(chunk):
    run_fuzz(tensor_scatter_case(), chunk)


def test_example_budget():
    """CI runs at least 300 fuzzing examples (4 tests × CHUNKS × ⌈EXAMPLES / (CHUNKS × NODES_PER_MODEL)⌉
    models × NODES_PER_MODEL nodes)."""
    models_per_test = CHUNKS * -(-EXAMPLES // (CHUNKS * NODES_PER_MODEL))
    assert 4 * models_per_test * NODES_PER_MODEL >= 300 or os.environ.get("KVATTN_FUZZ_EXAMPLES")
    pytest.importorskip("hypothesis")
