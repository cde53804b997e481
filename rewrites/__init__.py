"""kvattn.rewrites: ONNX-level rewrites of what exporters emit, applied before import.

Each rule is a module with `applies_to(model)`, `rules(record)` and the `OPSET` its rewrite
needs: an onnxscript rewriter rule (pattern / check with the reason a match is refused /
rewrite; a check that finds a node kvattn cannot compute raises the KvattnError naming it);
`apply` runs them on the model and returns what each did, for `kvattn inspect`.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
import onnxscript.rewriter

from kvattn.lowering.diagnostics import KvattnError
from kvattn.rewrites import contrib_rotary_embedding, matmul_nbits, opset, repeat_kv, scatter_cache_rows

RULES = (matmul_nbits, contrib_rotary_embedding, scatter_cache_rows, repeat_kv)


def apply(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model after every rule that has something to match (the caller's model is not
    modified), and one line per rewrite done."""
    decisions: list[str] = []
    for rule in RULES:
        if rule.applies_to(model):
            model = _rewritten(model, rule, decisions)
    return model, decisions


def _rewritten(model: onnx.ModelProto, rule, decisions: list[str]) -> onnx.ModelProto:
    """The model after `rule`, at the opset of the operators it writes (rewrites/opset.py: a
    model below opset 18 is converted first and rewritten again)."""
    done = len(decisions)
    rewritten = _run(model, rule, decisions)
    if len(decisions) == done:
        return model
    why = f"rewriting what {rule.__name__.rsplit('.', 1)[-1]} matches"
    if opset.default_version(model) >= min(rule.OPSET, opset.SAME_SEMANTICS_FROM):
        return opset.at_least(rewritten, rule.OPSET, why)
    del decisions[done:]
    return _run(opset.at_least(model, rule.OPSET, why), rule, decisions)


def _run(model: onnx.ModelProto, rule, decisions: list[str]) -> onnx.ModelProto:
    try:
        return onnxscript.rewriter.rewrite(model, pattern_rewrite_rules=rule.rules(decisions.append))
    except ir.passes.PassError as error:
        raise _refusal(error) from None


def _refusal(error: ir.passes.PassError) -> Exception:
    """The KvattnError a rule's check raised, from under onnx-ir's pass wrappers (else the error)."""
    cause = error
    while cause is not None and not isinstance(cause, KvattnError):
        cause = cause.__cause__
    return cause or error
