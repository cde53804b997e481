"""kvattn.attention against onnx.reference on configurations beyond the conformance cases:
GQA/MQA, 3D and 4D, internal and external caches, masks of each kind and rank, windows, fp16 and
bf16 (in the reference's own precision, and with softmax_precision=FLOAT), fully masked rows."""

from __future__ import annotations

import dataclasses
import functools
import zlib

import ml_dtypes
import numpy as np
import onnx
import pytest

from kvattn.runtime import backend, inspect
from tests.onnx_models import assert_matches_reference, fuse_cpu_attention, merged_model, single_node_model


@dataclasses.dataclass
class Config:
    batch: int = 1
    q_heads: int = 4
    kv_heads: int = 4
    query_len: int = 3
    kv_len: int = 5
    head: int = 8
    value_head: int | None = None
    past: int = 0
    rank: int = 4
    mask: tuple | None = None  # (shape, "bool" | "float")
    nonpad: tuple | None = None
    qk_mode: int | None = None  # request the qk_matmul_output output with this mode
    dtype: type = np.float32
    opset: int = 24
    attrs: dict = dataclasses.field(default_factory=dict)


CONFIGS = {
    "mha": Config(),
    "gqa_causal_past": Config(q_heads=8, kv_heads=2, past=5, attrs={"is_causal": 1}, opset=23),
    "mqa_bool_mask_4d_broadcast": Config(batch=2, q_heads=6, kv_heads=1, mask=((1, 6, 3, 5), "bool")),
    "gqa_3d_float_head_mask_past": Config(batch=2, q_heads=6, kv_heads=3, past=2, rank=3,
                                          mask=((6, 3, 7), "float"), opset=23),
    "diff_value_head": Config(q_heads=4, kv_heads=2, value_head=12, attrs={"scale": 0.3}),
    "short_float_mask_padded": Config(kv_len=9, mask=((3, 6), "float")),
    "decode_nonpad_causal_window": Config(batch=3, q_heads=8, kv_heads=2, query_len=1, kv_len=16,
                                          nonpad=(5, 16, 9), attrs={"is_causal": 1, "left_window_size": 4},
                                          opset=25),
    # A decode whose value head spans more than one P·V value tile (128 + a 32 remainder)
    "decode_value_head_past_one_tile": Config(batch=2, q_heads=4, kv_heads=2, query_len=1, kv_len=21, value_head=160,
                                              nonpad=(13, 21), opset=24),
    "prefill_nonpad_batch": Config(batch=2, q_heads=4, kv_heads=2, query_len=4, kv_len=10, nonpad=(4, 10),
                                   attrs={"is_causal": 1}),
    "bidirectional_window_3d": Config(rank=3, q_heads=2, kv_heads=2, query_len=6, kv_len=6,
                                      attrs={"left_window_size": 1, "right_window_size": 2}, opset=25),
    "fp16_gqa_causal": Config(q_heads=4, kv_heads=2, query_len=5, kv_len=5, dtype=np.float16,
                              attrs={"is_causal": 1}),
    "nonpad_zero_gives_zero_rows": Config(batch=2, query_len=1, kv_len=8, nonpad=(0, 3)),
    "softcap_gqa_causal_past": Config(q_heads=6, kv_heads=2, past=3, attrs={"is_causal": 1, "softcap": 1.5}),
    "softcap_3d_window_bool_mask": Config(rank=3, q_heads=4, kv_heads=1, query_len=5, kv_len=7, mask=((5, 7), "bool"),
                                          attrs={"softcap": 4.0, "left_window_size": 2}, opset=25),
    "qk_mode0_softcap_gqa": Config(q_heads=4, kv_heads=2, qk_mode=0, attrs={"softcap": 3.0}),
    "qk_mode1_3d_past": Config(rank=3, q_heads=2, kv_heads=2, past=2, qk_mode=1, mask=((3, 7), "float")),
    "qk_mode2_causal_nonpad": Config(batch=2, q_heads=4, kv_heads=4, query_len=2, kv_len=6, nonpad=(3, 6),
                                     qk_mode=2, attrs={"is_causal": 1}),
    "qk_mode3_fully_masked_row": Config(q_heads=2, kv_heads=2, query_len=2, kv_len=4, mask=((2, 4), "bool"),
                                        qk_mode=3),
    # Softmax in the input's 16-bit type, as ONNX specifies without softmax_precision: every
    # step rounded like the reference, so the conformance tolerance (rtol 1e-3) holds.
    "bf16_softcap_float_mask_qk_mode2_gqa": Config(q_heads=4, kv_heads=2, query_len=4, kv_len=6, qk_mode=2,
                                                   mask=((4, 6), "float"), dtype=ml_dtypes.bfloat16,
                                                   attrs={"softcap": 2.0}),
    # Causal prefills of >= 128 queries: llvm-cpu computes them in query blocks (causal_blocks.py).
    "causal_query_blocks_gqa_past": Config(q_heads=4, kv_heads=2, query_len=140, kv_len=140, past=20,
                                           attrs={"is_causal": 1}, opset=23),
    "causal_query_blocks_fp16_reference_rounding": Config(q_heads=2, kv_heads=1, query_len=260, kv_len=260,
                                                          dtype=np.float16, attrs={"is_causal": 1}),
    "causal_query_blocks_3d_float_mask_softcap": Config(rank=3, q_heads=2, kv_heads=1, query_len=260, kv_len=260,
                                                        mask=((260, 260), "float"),
                                                        attrs={"is_causal": 1, "softcap": 2.0}),
    # Prefills of >= 16 queries: llvm-cpu's prefill tiles on Q·Kᵀ (where g and s stay two loops: a
    # mask over (s, l)) and on P·V (over g·s, batch 1); sizes the tiles do not divide.
    "prefill_tiles_odd_sizes": Config(q_heads=6, kv_heads=3, query_len=37, kv_len=45, head=6,
                                      mask=((37, 45), "float")),
    "prefill_tiles_batch_past_bool_mask": Config(batch=2, q_heads=4, kv_heads=2, query_len=20, kv_len=20,
                                                 past=7, mask=((2, 1, 20, 27), "bool")),
    "fp16_3d_past_causal_scale": Config(rank=3, q_heads=6, kv_heads=2, query_len=3, kv_len=4, past=5,
                                        dtype=np.float16, attrs={"is_causal": 1, "scale": 0.2}, opset=23),
    "bf16_decode_nonpad_window": Config(batch=2, q_heads=4, kv_heads=1, query_len=1, kv_len=12, nonpad=(7, 12),
                                        dtype=ml_dtypes.bfloat16, attrs={"is_causal": 1, "left_window_size": 5},
                                        opset=25),
    # ONNX ignores a softcap <= 0 (a NaN scale is refused by the verifier: tests/lit/invalid.mlir).
    "negative_softcap_ignored": Config(q_heads=4, kv_heads=2, attrs={"is_causal": 1, "softcap": -1.5}),
    # softmax_precision=FLOAT: the fused attention, computing in f32.
    "fp16_softmax_in_float": Config(q_heads=4, kv_heads=2, query_len=5, kv_len=5, dtype=np.float16,
                                    attrs={"is_causal": 1, "softmax_precision": 1}),
}
# The reference's rounding steps are followed for fp16/bf16 without softmax_precision, so they
# meet the conformance suite's tolerance; f32 softmax of fp16 inputs differs by an ulp or two.
TOLERANCE = {"fp16_gqa_causal": 2e-3, "fp16_softmax_in_float": 2e-3}


def _inputs(config: Config, rng):
    value_head = config.value_head or config.head
    shape = lambda heads, length, size: (  # noqa: E731
        (config.batch, heads, length, size) if config.rank == 4 else (config.batch, length, heads * size))
    inputs = {
        "Q": rng.standard_normal(shape(config.q_heads, config.query_len, config.head)),
        "K": rng.standard_normal(shape(config.kv_heads, config.kv_len, config.head)),
        "V": rng.standard_normal(shape(config.kv_heads, config.kv_len, value_head)),
    }
    inputs = {k: v.astype(config.dtype) for k, v in inputs.items()}
    names = ["Q", "K", "V", "", "", "", ""]
    if config.mask:
        mask_shape, kind = config.mask
        inputs["attn_mask"] = (rng.random(mask_shape) > 0.3 if kind == "bool"
                               else rng.standard_normal(mask_shape).astype(config.dtype))
        names[3] = "attn_mask"
    if config.past:
        for name, size in (("past_key", config.head), ("past_value", value_head)):
            inputs[name] = rng.standard_normal((config.batch, config.kv_heads, config.past, size)).astype(config.dtype)
        names[4:6] = ["past_key", "past_value"]
    if config.nonpad:
        inputs["nonpad_kv_seqlen"] = np.array(config.nonpad, dtype=np.int64)
        names[6] = "nonpad_kv_seqlen"
    while names[-1] == "":  # trailing omitted inputs are left out
        names.pop()
    return inputs, names


def _outputs(config: Config):
    value_head = config.value_head or config.head
    y = ((config.batch, config.q_heads, config.query_len, value_head) if config.rank == 4
         else (config.batch, config.query_len, config.q_heads * value_head))
    outputs = {"Y": (y, config.dtype)}
    total = config.past + config.kv_len
    if config.past:
        outputs["present_key"] = ((config.batch, config.kv_heads, total, config.head), config.dtype)
        outputs["present_value"] = ((config.batch, config.kv_heads, total, value_head), config.dtype)
    if config.qk_mode is not None:
        outputs["qk_matmul_output"] = ((config.batch, config.q_heads, config.query_len, total), config.dtype)
    names = [name if name in outputs else "" for name in ("Y", "present_key", "present_value", "qk_matmul_output")]
    while names[-1] == "":
        names.pop()
    return outputs, names


def attention_model(config: Config, inputs: dict, names: list[str]):
    """The one-node Attention model of `config` (inputs and names from `_inputs`)."""
    attrs = dict(config.attrs)
    if config.qk_mode is not None:
        attrs["qk_matmul_output_mode"] = config.qk_mode
    if config.rank == 3:
        attrs.update(q_num_heads=config.q_heads, kv_num_heads=config.kv_heads)
    outputs, output_names = _outputs(config)
    return single_node_model("Attention", inputs, names, outputs, config.opset, output_names=output_names, **attrs)


def _may_take_the_fused_op(config: Config) -> bool:
    """No qk_matmul_output, and f32 or softmax_precision=FLOAT (else the unfused route, always)."""
    return config.qk_mode is None and (config.dtype == np.float32 or config.attrs.get("softmax_precision") == 1)


ROUTES = ("auto", "fused")
BATCH = 8  # configs of one route and opset compiled as one model (tests.onnx_models.merged_model)


def _batches() -> dict[tuple[str, str], tuple[str, ...]]:
    """(config, route) → the configs compiled with it: up to BATCH of one route and opset."""
    groups: dict = {}
    for name in sorted(CONFIGS):
        for route in ROUTES:
            if route == "auto" or _may_take_the_fused_op(CONFIGS[name]):
                groups.setdefault((route, CONFIGS[name].opset), []).append(name)
    return {(name, route): tuple(group[start:start + BATCH])
            for (route, _), group in groups.items() for start in range(0, len(group), BATCH)
            for name in group[start:start + BATCH]}


BATCHES = _batches()


def _case(name: str):
    """The config's inputs (seeded by its name) and its one-node model."""
    inputs, names = _inputs(CONFIGS[name], np.random.default_rng(zlib.crc32(name.encode())))
    return inputs, attention_model(CONFIGS[name], inputs, names)


@functools.cache
def _batch_module(route: str, batch: tuple[str, ...]):
    """The batch's configs in one model, compiled by the first of its tests to run on the worker
    (under fuse_cpu_attention for the fused route)."""
    return backend.prepare(merged_model([_case(name)[1] for name in batch], "c"))


def _run_in_batch(name: str, route: str, inputs: dict) -> list[np.ndarray]:
    """The config's outputs from its batch's module, fed `inputs` (the other configs their own)."""
    batch = BATCHES[name, route]
    fed = {}
    for index, other in enumerate(batch):
        fed.update({f"c{index}_{key}": array for key, array in (inputs if other == name else _case(other)[0]).items()})
    outputs = _batch_module(route, batch).run(fed)
    position = batch.index(name)
    first = sum(len(_case(other)[1].graph.output) for other in batch[:position])
    return outputs[first:first + len(_case(name)[1].graph.output)]


def _check(name: str, route: str, inputs: dict, rtol: float, atol: float) -> list[np.ndarray]:
    got = _run_in_batch(name, route, inputs)
    assert_matches_reference(_case(name)[1], inputs, got, rtol, atol)
    return got


@pytest.mark.parametrize("name, route", [
    pytest.param(name, route, id=f"{name}-{route}",
                 marks=pytest.mark.xdist_group(f"numerics-{route}-{BATCHES[name, route][0]}"))
    for name, route in sorted(BATCHES)])
def test_attention_matches_reference(name, route, monkeypatch):
    """Each config by the route llvm-cpu picks for it (mostly materialized scores at these
    sizes), and with the fused op forced where it can take it; up to BATCH configs of a route and
    opset share one compiled module, each test checking its own config's outputs."""
    if route == "fused":
        fuse_cpu_attention(monkeypatch)
    config = CONFIGS[name]
    inputs = dict(_case(name)[0])
    low_precision = np.dtype(config.dtype).itemsize == 2
    rtol, atol = (TOLERANCE.get(name, 1e-3), TOLERANCE.get(name, 1e-7)) if low_precision else (1e-5, 1e-5)
    got = _check(name, route, inputs, rtol, atol)
    if name == "nonpad_zero_gives_zero_rows":
        assert not np.isnan(got[0]).any() and np.all(got[0][0] == 0)
    if name == "qk_mode3_fully_masked_row":
        inputs["attn_mask"] = inputs["attn_mask"].copy()
        inputs["attn_mask"][0] = False  # the first query row attends to nothing
        got = _check(name, route, inputs, rtol, atol)
        assert np.all(got[0][:, :, 0] == 0) and np.all(got[1][:, :, 0] == 0)


@pytest.mark.parametrize("dtype, softmax_precision, route", [
    (np.float16, None, "unfused: f16 attention, each step rounded to f16 where the ONNX reference rounds"),
    (ml_dtypes.bfloat16, 16, "unfused: bf16 attention, each step rounded to bf16 where the ONNX reference rounds"),
    (ml_dtypes.bfloat16, 1, "unfused: small scores, materialized in f32"),
    (np.float32, None, "unfused: small scores, materialized in f32"),
])
def test_low_precision_route_follows_softmax_precision(dtype, softmax_precision, route):
    assert f"route: {route}" in inspect.summary(_route_model(dtype, softmax_precision))


@pytest.mark.parametrize("dtype, softmax_precision", [(ml_dtypes.bfloat16, 1), (np.float32, None)])
def test_fused_cpu_route_when_asked(dtype, softmax_precision, monkeypatch):
    fuse_cpu_attention(monkeypatch)
    assert "route: fused: one iree_linalg_ext.attention" in inspect.summary(_route_model(dtype, softmax_precision))


def _route_model(dtype, softmax_precision) -> onnx.ModelProto:
    config = Config(dtype=dtype, attrs={} if softmax_precision is None else {"softmax_precision": softmax_precision})
    inputs, names = _inputs(config, np.random.default_rng(0))
    outputs, output_names = _outputs(config)
    return single_node_model("Attention", inputs, names, outputs, config.opset, output_names=output_names,
                             **config.attrs)
