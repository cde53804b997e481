"""Start each attention's valid-length reduction before the function's first host readback, so
IREE waits for the device once for both instead of once for each (issue #13, the wait path).

A decode step reads two device values on the host: the TensorScatter range check of
write_indices (read before the scatter writes) and max(nonpad_kv_seqlen), which sizes the key
slice of the attention. IREE splits the call at each readback and waits there, so the second one
costs a second wait — a wake-up of the calling thread, on a 2-core machine often a 4 ms scheduler
tick. This pass, on the IREE input (after iree-torch-to-input):

    %ok = tensor.extract %check[]          (the first readback)       %n = linalg.generic {kvattn.valid_length}
    ...                                                          ⇒     %ok = tensor.extract %check[]
    %n = linalg.generic {kvattn.valid_length} ins(%nonpad) ...          ...
    %len = tensor.extract %n[]                                          %len = tensor.extract %n[]

moves the reduction that `attention_bias.longest_valid_length` marks, with what it reads that
is defined after the first readback, to just before that readback; IREE then computes both in
one execution and waits once. The readbacks themselves stay where they are, so every check runs
before what it guards. A reduction moves only when everything it needs is one of MOVABLE (ops
that read no memory, or only mark values): a max over a tensor of its own shape reads nothing
out of bounds whatever the input, so running it before the checks is safe. Otherwise (nonpad
computed by the model from other inputs) it stays, and the mark is dropped either way.
"""

from __future__ import annotations

from iree.compiler import ir

from kvattn.lowering.attention_bias import VALID_LENGTH_ATTR

FUNCTIONS = ("func.func", "util.func")
MOVABLE = ("arith.constant", "tensor.empty", "linalg.fill", "iree_tensor_ext.compute_barrier.start")
READBACK = "tensor.extract"


def hoist_valid_lengths(module: ir.Module) -> int:
    """Move the marked reductions; returns how many moved."""
    moved = 0
    for function in module.body.operations:
        if function.operation.name in FUNCTIONS and function.operation.regions[0].blocks:
            moved += _hoist_in(function.operation.regions[0].blocks[0])
    return moved


def _hoist_in(block: ir.Block) -> int:
    moved = 0
    for reduction in [op.operation for op in block.operations if VALID_LENGTH_ATTR in op.operation.attributes]:
        del reduction.attributes[VALID_LENGTH_ATTR]
        ops = [op.operation for op in block.operations]
        first = next((op for op in ops if op.name == READBACK), None)
        if first is None or ops.index(reduction) < ops.index(first):
            continue
        needed = _defined_after(reduction, ops, ops.index(first))
        if all(op.name in MOVABLE for op in needed if op != reduction):
            for op in sorted(needed, key=ops.index):
                op.move_before(first)
            moved += 1
    return moved


def _defined_after(root: ir.Operation, ops: list[ir.Operation], start: int) -> list[ir.Operation]:
    """`root` and the ops of its block at or after position `start` whose results it uses,
    directly, inside its region, or through each other."""
    late = set(ops[start:])
    needed, pending = [], [root]
    while pending:
        op = pending.pop()
        if op in needed:
            continue
        needed.append(op)
        for value in _operands_within(op):
            owner = value.owner
            owner = owner.operation if isinstance(owner, ir.OpView) else owner
            if isinstance(owner, ir.Operation) and owner in late:
                pending.append(owner)
    return needed


def _operands_within(op: ir.Operation):
    """The operands of `op` and of every op nested in its regions."""
    yield from op.operands
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                yield from _operands_within(inner.operation)
