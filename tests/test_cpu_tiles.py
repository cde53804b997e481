"""kvattn's llvm-cpu tiles on a decode's Q·Kᵀ and P·V (attention_tiles.cpu_decode_contraction_info)
survive IREE's dispatch formation: IREE rebuilds an op without its `compilation_info` when it
folds unit dims or merges loops (CollapseDimensions), which compiles and silently runs on IREE's
default tiles instead."""

from __future__ import annotations

import re

import pytest

from kvattn.lowering import attention_tiles
from kvattn.runtime import demo
from kvattn.runtime.compiler import compile_to_stage


@pytest.mark.parametrize("batch", [1, 3])
def test_decode_contractions_keep_their_tiles_in_their_dispatches(batch):
    sources, _ = compile_to_stage(demo.decode_step_model(batch=batch), "executable-sources")
    contractions = re.split(r"(?=hal\.executable private @)", sources)
    contractions = [text for text in contractions if re.search(r"@\S*_matmul_like_", text)]
    assert len(contractions) == 2, [re.search(r"@(\S+)", text).group(1) for text in contractions]
    steps = sorted(re.search(r"vector_reduction = \[(?:0, )*(\d+)\]", text).group(1) for text in contractions
                   if "compilation_info" in text)
    assert steps == sorted([str(attention_tiles.QK_HEAD_STEP), str(attention_tiles.PV_KEY_STEP)])
