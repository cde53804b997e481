"""onnxruntime's com.microsoft RotaryEmbedding → ONNX RotaryEmbedding (opset 23).

onnxruntime's transformer optimizer and older model builders write rotary embeddings as the
contrib op RotaryEmbedding(input, position_ids, cos_cache, sin_cache). Its CPU kernel (1.32,
checked against onnx.reference) computes ONNX's RotaryEmbedding(input, cos_cache, sin_cache,
position_ids) with the same interleaved / num_heads / rotary_embedding_dim for a 3-D
[batch, seq, hidden] or 4-D [batch, heads, seq, head] input, except:
- position_ids of shape [1] is an offset: the positions are offset + [0, seq) for every row,
  written here as Expand(offset + Range(0, seq), [batch, seq]);
- a 3-D input without num_heads has heads of 2 · cos_cache's last dim (full rotary);
- its `scale` attribute changes nothing.
Refused, naming the node: packed batching (is_packed_batching=1). The model is raised to opset
23 (the first with RotaryEmbedding) first (rewrites/opset.py).
"""

from __future__ import annotations

from typing import Callable

import onnx
import onnx_ir as ir
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

from kvattn.lowering.diagnostics import NodeError, UnsupportedError

DOMAIN = "com.microsoft"
OPSET = 23  # RotaryEmbedding


class StandardRotaryEmbedding(RewriteRuleClassBase):
    def __init__(self, record: Callable[[str], None]):
        super().__init__(name="StandardRotaryEmbedding")
        self._record = record
        self._node: ir.Node | None = None

    def pattern(self, op, x, position_ids, cos, sin):
        return op.RotaryEmbedding(x, position_ids, cos, sin, _domain=DOMAIN, _allow_other_attributes=True)

    def check(self, context, x: ir.Value, position_ids: ir.Value, cos: ir.Value, **_) -> MatchResult:
        node = context.root
        name = node.name or f"RotaryEmbedding_{node.outputs[0].name}"
        if node.attributes.get_int("is_packed_batching", 0):
            raise UnsupportedError("RotaryEmbedding", name, "packed batching (is_packed_batching=1)")
        if x.shape is None or len(x.shape) not in (3, 4):
            raise NodeError("RotaryEmbedding", name, f"the input must be 3-D or 4-D (got shape {x.shape})")
        if position_ids.shape is None or len(position_ids.shape) not in (1, 2):
            raise NodeError("RotaryEmbedding", name, f"position_ids must be [1] (an offset) or [batch, seq] "
                                                     f"(got shape {position_ids.shape})")
        if len(x.shape) == 3 and not node.attributes.get_int("num_heads", 0) and not (
                isinstance(x.shape[-1], int) and cos.shape is not None and isinstance(cos.shape[-1], int)):
            raise NodeError("RotaryEmbedding", name, "a 3-D input without num_heads needs static hidden and "
                                                     "cos_cache dims to tell the heads")
        self._node = node
        return MatchResult()

    def rewrite(self, op, x: ir.Value, position_ids: ir.Value, cos: ir.Value, sin: ir.Value, **_):
        node = self._node
        attributes = {key: node.attributes.get_int(key, 0) for key in ("interleaved", "num_heads",
                                                                       "rotary_embedding_dim")}
        if len(x.shape) == 3 and not attributes["num_heads"]:
            attributes["num_heads"] = x.shape[-1] // (2 * cos.shape[-1])
        attributes = {key: value for key, value in attributes.items() if value}
        if len(position_ids.shape) == 1:  # an offset for every row
            seq_axis = 1 if len(x.shape) == 3 else 2
            seq = op.Squeeze(op.Shape(x, start=seq_axis, end=seq_axis + 1))
            offsets = op.Range(op.Constant(value_int=0), seq, op.Constant(value_int=1))
            rows = op.Concat(op.Shape(x, start=0, end=1), op.Shape(x, start=seq_axis, end=seq_axis + 1), axis=0)
            position_ids = op.Expand(op.Add(op.Reshape(position_ids, op.Constant(value_ints=[1])), offsets), rows)
        result = op.RotaryEmbedding(x, cos, sin, position_ids, **attributes)
        result.producer().name = node.name
        self._record(f"RotaryEmbedding '{node.name}' ({DOMAIN}): ONNX RotaryEmbedding")
        return result


def applies_to(model: onnx.ModelProto) -> bool:
    return any(node.op_type == "RotaryEmbedding" and node.domain == DOMAIN for node in model.graph.node)


def rules(record: Callable[[str], None]) -> RewriteRuleSet:
    return RewriteRuleSet([StandardRotaryEmbedding.rule(record)])
