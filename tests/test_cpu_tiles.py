"""kvattn's llvm-cpu tiles on a decode's Q·Kᵀ and P·V (attention_tiles.cpu_decode_contraction_info)
and a prefill's Q·Kᵀ (cpu_prefill_scores_info) survive IREE's dispatch formation: IREE rebuilds an op without its `compilation_info` when it
folds unit dims or merges loops (CollapseDimensions), which compiles and silently runs on IREE's
default tiles instead."""

from __future__ import annotations

import re

import pytest
from onnx import TensorProto, helper

from kvattn.lowering import attention_tiles
from kvattn.runtime import demo
from kvattn.runtime.compiler import compile_to_stage


def _contractions(sources: str) -> list[str]:
    """The executables of `sources` (IREE's executable-sources stage) named matmul_like."""
    executables = re.split(r"(?=hal\.executable private @)", sources)
    return [text for text in executables if re.search(r"func\.func @\S*_matmul_like_", text)]


def _causal_prefill(length: int, q_heads: int, kv_heads: int, head: int = 16):
    shape = lambda heads: [1, heads, length, head]  # noqa: E731
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape(heads))
              for name, heads in (("query", q_heads), ("key", kv_heads), ("value", kv_heads))]
    node = helper.make_node("Attention", ["query", "key", "value"], ["output"], name="prefill", is_causal=1)
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, shape(q_heads))
    return helper.make_model(helper.make_graph([node], "prefill", inputs, [output]),
                             opset_imports=[helper.make_opsetid("", 23)])


@pytest.mark.parametrize("batch", [1, 3])
def test_decode_contractions_keep_their_tiles_in_their_dispatches(batch):
    sources, _ = compile_to_stage(demo.decode_step_model(batch=batch), "executable-sources")
    contractions = _contractions(sources)
    assert len(contractions) == 2, [re.search(r"@(\S+)", text).group(1) for text in contractions]
    steps = sorted(re.search(r"vector_reduction = \[(?:0, )*(\d+)\]", text).group(1) for text in contractions
                   if "compilation_info" in text)
    assert steps == sorted([str(attention_tiles.QK_HEAD_STEP), str(attention_tiles.PV_KEY_STEP)])


@pytest.mark.parametrize("length, q_heads, kv_heads", [(256, 4, 2), (64, 4, 4)])
def test_prefill_scores_keep_their_tiles_where_g_and_s_stay_two_loops(length, q_heads, kv_heads):
    """A causal prefill in query blocks (its Q·Kᵀ dispatch reads the block's bias over (s, l)), and
    one without a query group (g = 1, dropped): each Q·Kᵀ and each P·V (over g·s) carries the
    prefill tiles."""
    sources, _ = compile_to_stage(_causal_prefill(length, q_heads, kv_heads), "executable-sources")
    steps = [re.search(r"vector_reduction = \[(?:0, )*(\d+)\]", text) for text in _contractions(sources)]
    blocks = len(steps) // 2  # a Q·Kᵀ and a P·V per query block (causal_blocks splits ≥ 256 queries)
    assert blocks > 1 if length == 256 else blocks == 1
    assert sorted(step.group(1) if step else "no config" for step in steps) == sorted(
        [str(attention_tiles.PREFILL_QK_HEAD_STEP)] * blocks + [str(attention_tiles.PREFILL_PV_KEY_STEP)] * blocks)
