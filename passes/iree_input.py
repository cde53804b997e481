"""Run IREE's own ONNX lowering on what kvattn left in the torch dialect, keeping cache ties.

    builtin.module(torch-onnx-to-torch-backend-pipeline)
    kvattn: views whose dims IREE would guess are flattened first (passes/unambiguous_views.py)
    builtin.module(torch-to-iree)
    kvattn: every sort gets operands of its own (passes/private_sort_operands.py)

turns the remaining `torch.operator "onnx.*"` ops into linalg, folds the torch_c casts around
the lowered kvattn ops, and wraps each function in IREE's ABI (`util.func` on `!hal.buffer_view`).
torch-to-iree drops argument attributes, so the ties kvattn-cache-lifetime put on the function
(`%argI {iree.abi.output = N}`) are re-applied on the ABI function:

    %past = hal.tensor.import wait(%w) => %argI        ⇒  hal.tensor.import wait(%w) => consume %argI
    %r = hal.tensor.barrier join(..., %present, ...)   ⇒
    %a = hal.tensor.alias wait(%w) => %present : tensor<...>{dynamic sizes} to %argI : !hal.buffer_view
    %r = hal.tensor.barrier join(..., %a, ...)

as IREE's own ABI wrapper does: result N is computed in argument I's buffer, which the call
consumes (the caller hands the buffer over; kvattn's runtime passes it copies or its own
caches). The result is IREE input, ready for iree-compile.
"""

from __future__ import annotations

from iree.compiler import ir, passmanager

from kvattn.lowering.diagnostics import KvattnError
from kvattn.passes import private_sort_operands, tensor_sizes, unambiguous_views
from kvattn.passes.cache_lifetime import ALIAS_ATTR

TORCH_BACKEND = "builtin.module(torch-onnx-to-torch-backend-pipeline)"
TORCH_TO_IREE = "builtin.module(torch-to-iree)"


def lower_torch_to_iree_input(module: ir.Module) -> None:
    ties = {_name(func): _ties(func) for func in module.body.operations if func.operation.name == "func.func"}
    try:
        passmanager.PassManager.parse(TORCH_BACKEND).run(module.operation)
        unambiguous_views.flatten_ambiguous_views(module)
        passmanager.PassManager.parse(TORCH_TO_IREE).run(module.operation)
        private_sort_operands.give_sorts_fresh_operands(module)
    except ir.MLIRError as exc:
        raise KvattnError(f"IREE's ONNX lowering failed:\n{_diagnostics(exc)}") from None
    for func in module.body.operations:
        base = _name(func).removesuffix("$async")
        if func.operation.name == "util.func" and _name(func).endswith("$async") and ties.get(base):
            _alias_results(func.operation, ties[base])


def _name(func) -> str:
    return ir.StringAttr(func.operation.attributes["sym_name"]).value


def _ties(func) -> dict[int, int]:
    """{argument: result} from the function's iree.abi.output argument attributes."""
    if "arg_attrs" not in func.operation.attributes:
        return {}
    ties = {}
    for argument, attrs in enumerate(ir.ArrayAttr(func.operation.attributes["arg_attrs"])):
        attrs = ir.DictAttr(attrs)
        if ALIAS_ATTR in attrs:
            ties[argument] = ir.IntegerAttr(attrs[ALIAS_ATTR]).value
    return ties


def _alias_results(func: ir.Operation, ties: dict[int, int]) -> None:
    block = func.regions[0].blocks[0]
    arguments = list(block.arguments)
    wait_fence = arguments[-2]  # the coarse-fences ABI: (..., wait fence, signal fence)
    returned = list(block.operations)[-1]
    for argument, result in ties.items():
        for use in arguments[argument].uses:
            if use.owner.operation.name == "hal.tensor.import":
                use.owner.operation.attributes["consume"] = ir.UnitAttr.get()
        export = returned.operands[result].owner
        barrier_result = ir.OpResult(export.operands[0])
        barrier = barrier_result.owner
        present = barrier.operands[barrier_result.result_number]
        with ir.InsertionPoint(barrier), barrier.location:
            sizes = tensor_sizes.dynamic_sizes(present)
            alias = ir.Operation.create(
                "hal.tensor.alias", results=[present.type], operands=[present, *sizes, arguments[argument], wait_fence],
                attributes={"operandSegmentSizes": ir.DenseI32ArrayAttr.get([1, len(sizes), 1, 1])})
        barrier.operands[barrier_result.result_number] = alias.result


def _diagnostics(exc: ir.MLIRError) -> str:
    lines = [f"  {d.location}: {d.message}" for d in exc.error_diagnostics]
    return "\n".join(lines) or f"  {exc}"
