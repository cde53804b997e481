"""kvattn.rewrites: ONNX-level rewrites of what exporters emit, applied before import.

Each rule is an onnxscript rewriter rule (pattern / check with the reason a match is refused /
rewrite; a check that finds a node kvattn cannot compute raises the KvattnError naming it);
`apply` runs them on the model and returns what each did, for `kvattn inspect`.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
import onnxscript.rewriter

from kvattn.lowering.diagnostics import KvattnError
from kvattn.rewrites import matmul_nbits, repeat_kv, scatter_cache_rows

RULES = (matmul_nbits, scatter_cache_rows, repeat_kv)


def apply(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model after every rule that has something to match (the caller's model is not
    modified), and one line per rewrite done."""
    decisions: list[str] = []
    for rule in RULES:
        if rule.applies_to(model):
            done = len(decisions)
            try:
                rewritten = onnxscript.rewriter.rewrite(model, pattern_rewrite_rules=rule.rules(decisions.append))
            except ir.passes.PassError as error:
                raise _refusal(error) from None
            if len(decisions) > done:
                model = rule.finish(rewritten)
    return model, decisions


def _refusal(error: ir.passes.PassError) -> Exception:
    """The KvattnError a rule's check raised, from under onnx-ir's pass wrappers (else the error)."""
    cause = error
    while cause is not None and not isinstance(cause, KvattnError):
        cause = cause.__cause__
    return cause or error
