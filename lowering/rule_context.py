"""What every lowering rule receives (like JAX's LoweringRuleContext): one object instead of a
growing argument list."""

from __future__ import annotations

import dataclasses

from kvattn.lowering.diagnostics import UnsupportedError
from kvattn.lowering.dialect import KvOp
from kvattn.lowering.mlir_text import FunctionWriter, Value
from kvattn.lowering.options import LoweringOptions


@dataclasses.dataclass
class RuleContext:
    op: KvOp  # the kvattn op being lowered (attributes, result types, the ONNX node's name)
    w: FunctionWriter  # writes the replacement; asks for sizes
    args: dict[str, Value]  # the op's present operands by spec name
    options: LoweringOptions  # the target's lowering choices

    def error(self, message: str):
        return self.op.error(message)

    def behind_barrier(self) -> "RuleContext":
        """The context with every operand passed through a compute_barrier.start, so that IREE
        cannot move the model's reshapes into the lowered ops (it propagates a repeat_kv
        Expand/Reshape into the attention, which changes its loops under a compilation_info
        chosen for the op as written; found on a transformers StaticCache export)."""
        return dataclasses.replace(self, args={name: self.w.reshape_barrier(value, "start")
                                               for name, value in self.args.items()})

    def unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(self.op.spec.onnx_op, self.op.node, what)

    def require(self, condition: Value, message: str) -> None:
        """An i1 that must hold: checked at run time (a failed call naming the node)."""
        self.w.require(condition, str(self.op.error(message)))

    def require_in_range(self, values: Value, lowest: Value, highest: Value, message: str) -> None:
        """Every element of `values` within [lowest, highest] (FunctionWriter.require_in_range)."""
        self.w.require_in_range(values, lowest, highest, str(self.op.error(message)))

    def require_equal(self, a, b, message: str) -> None:
        """Sizes that must agree: compared at run time (a failed call naming the node) unless static."""
        self.w.require_equal(a, b, str(self.op.error(message)))
