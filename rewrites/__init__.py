"""kvattn.rewrites: ONNX-level rewrites of what exporters emit, applied before import.

Each rule is an onnxscript rewriter rule (pattern / check with the reason a match is refused /
rewrite); `apply` runs them on the model and returns what each did, for `kvattn inspect`.
"""

from __future__ import annotations

import onnx
import onnxscript.rewriter

from kvattn.rewrites import repeat_kv, scatter_cache_rows

RULES = (scatter_cache_rows, repeat_kv)


def apply(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model after every rule that has something to match (the caller's model is not
    modified), and one line per rewrite done."""
    decisions: list[str] = []
    for rule in RULES:
        if rule.applies_to(model):
            done = len(decisions)
            rewritten = onnxscript.rewriter.rewrite(model, pattern_rewrite_rules=rule.rules(decisions.append))
            if len(decisions) > done:
                model = rule.finish(rewritten)
    return model, decisions
