"""Run IREE's own ONNX lowering on what kvattn left in the torch dialect.

    builtin.module(torch-onnx-to-torch-backend-pipeline, torch-to-iree)

turns the remaining `torch.operator "onnx.*"` ops into linalg, folds the torch_c casts around
the lowered kvattn ops, and wraps each function in IREE's ABI (`util.func` on `!hal.buffer_view`).
The result is IREE input, ready for iree-compile.
"""

from __future__ import annotations

from iree.compiler import ir, passmanager

from kvattn.lowering.diagnostics import KvattnError

PIPELINE = "builtin.module(torch-onnx-to-torch-backend-pipeline, torch-to-iree)"


def lower_torch_to_iree_input(module: ir.Module) -> None:
    try:
        passmanager.PassManager.parse(PIPELINE).run(module.operation)
    except ir.MLIRError as exc:
        raise KvattnError(f"IREE's ONNX lowering failed:\n{_diagnostics(exc)}") from None


def _diagnostics(exc: ir.MLIRError) -> str:
    lines = [f"  {d.location}: {d.message}" for d in exc.error_diagnostics]
    return "\n".join(lines) or f"  {exc}"
