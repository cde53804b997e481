"""onnxruntime's com.microsoft GroupQueryAttention (rewrites/group_query_attention.py): one module per
attribute set, with symbolic batch / query / past dims, run at every shape onnxruntime-genai and
mobius feed it — a prompt, a right-padded batch of prompts, decode steps over a growing cache and
over a max-length buffer with rows of different lengths, a chunk after a past — every output
(present_key / present_value too) compared with onnxruntime's CPU kernel. What it cannot write yet
is refused naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule

HEADS, KV_HEADS, HEAD = 4, 2, 32
MAX_POSITIONS = 32


def gqa_model(packed: bool = False, rotary_dim: int = 0, position_ids: bool = False, **attrs) -> onnx.ModelProto:
    width = (HEADS + 2 * KV_HEADS) * HEAD if packed else HEADS * HEAD
    inputs = [helper.make_tensor_value_info("query", TensorProto.FLOAT, ["batch", "seq", width])]
    names = ["query"]
    if not packed:
        inputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq", KV_HEADS * HEAD])
                   for name in ("key", "value")]
    names += ["", ""] if packed else ["key", "value"]
    inputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", KV_HEADS, "past", HEAD])
               for name in ("past_key", "past_value")]
    inputs += [helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
               helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, [])]
    names += ["past_key", "past_value", "seqlens_k", "total_sequence_length"]
    initializers = []
    if rotary_dim:
        frequencies = np.outer(np.arange(MAX_POSITIONS), 1.0 / 10000 ** (np.arange(0, rotary_dim, 2) / rotary_dim))
        initializers = [onnx.numpy_helper.from_array(np.cos(frequencies).astype(np.float32), "cos_cache"),
                        onnx.numpy_helper.from_array(np.sin(frequencies).astype(np.float32), "sin_cache")]
        names += ["cos_cache", "sin_cache"]
        attrs["do_rotary"] = 1
    if position_ids:
        names += [""] * (9 - len(names)) + ["position_ids"]
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]))
    node = helper.make_node("GroupQueryAttention", names, ["output", "present_key", "present_value"],
                            domain="com.microsoft", name="gqa", num_heads=HEADS, kv_num_heads=KV_HEADS, **attrs)
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", "seq", HEADS * HEAD])] + [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", KV_HEADS, "present", HEAD])
        for name in ("present_key", "present_value")]
    graph = helper.make_graph([node], "gqa", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])


# (name, query rows, past rows, valid keys per row, total_sequence_length)
SHAPES = [("prompt", 5, 0, [5], 5), ("prompt_right_padded", 5, 0, [5, 2], 5),
          ("decode_growing", 1, 5, [6, 6], 6), ("decode_growing_rows_apart", 1, 5, [6, 3], 6),
          ("decode_max_buffer", 1, 10, [6, 3], 6), ("chunk_after_past", 3, 4, [7], 7)]
CONFIGS = {
    "plain": {},
    "rotary": dict(rotary_dim=HEAD),
    "rotary_interleaved_partial": dict(rotary_dim=HEAD // 2, rotary_interleaved=1),
    "rotary_position_ids": dict(rotary_dim=HEAD, position_ids=True),
    "local_window_softcap": dict(local_window_size=3, softcap=2.0),
    "packed_rotary": dict(packed=True, rotary_dim=HEAD),
    "not_causal_scale": dict(causal=0, scale=0.3),
}


def inputs_for(model: onnx.ModelProto, rows: int, past: int, valid: list[int], total: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    batch = len(valid)
    feeds = {}
    for value in model.graph.input:
        dims = [{"batch": batch, "seq": rows, "past": past}.get(d.dim_param, d.dim_value)
                for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    feeds["seqlens_k"] = np.array(valid, np.int32) - 1
    feeds["total_sequence_length"] = np.array(total, np.int32)
    if "position_ids" in feeds:
        feeds["position_ids"] = (np.array(valid)[:, None] - rows + np.arange(rows)).astype(np.int64)
    return feeds


@pytest.mark.parametrize("config", CONFIGS)
def test_one_module_matches_onnxruntime_at_every_shape(config):
    model = gqa_model(**CONFIGS[config])
    module = CompiledModule(compile_model(model).vmfb)
    assert any(spec.shape.count(None) >= 2 for spec in module.manifest.inputs)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for seed, (name, *shape) in enumerate(SHAPES):
        feeds = inputs_for(model, *shape, seed)
        got = module.run(feeds)
        for (output, value), expected in zip(got.items(), session.run(None, feeds), strict=True):
            assert value.shape == expected.shape, (name, output)
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5, err_msg=f"{config} {name} {output}")


@pytest.mark.parametrize("attrs, what", [(dict(smooth_softmax=1), "smooth_softmax"),
                                         (dict(sliding_window_cache=1, local_window_size=4), "windowed KV cache")])
def test_what_is_not_written_yet_is_refused_naming_the_node(attrs, what):
    with pytest.raises(KvattnError, match=f"GroupQueryAttention node 'gqa': .*{what}.* is not supported yet"):
        compile_model(gqa_model(**attrs))
