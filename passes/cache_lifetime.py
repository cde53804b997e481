"""kvattn-cache-lifetime: let a present KV cache reuse its past cache's buffer when that is safe.

For each kvattn.tensor_scatter (present = past with new rows written):

    func.func @f(..., %argI {past}, ...) -> (..., present at result N, ...)
      %present = kvattn.tensor_scatter(%argI, %update, %write_indices)
  ⇒ when %argI is read by nothing but this update and %present is returned exactly once:
    func.func @f(..., %argI {iree.abi.output = N : index}, ...)
    and the op gets  cache_lifetime = "aliased: <past> -> <present>"

so the update writes only the new rows, into the caller's cache buffer. Otherwise the op gets
cache_lifetime = "copied: <why>" and nothing is tied: the past is not a model input, is read by
another node, is returned unchanged, is updated twice, or the present is not returned (or is
returned twice). A kvattn.attention with past_key/past_value (the opset-23 concat cache) always
copies: its present cache is a new, larger tensor; the reason is recorded the same way.
`iree-torch-to-input` turns the ties into `hal.tensor.alias` on the function's ABI.
"""

from __future__ import annotations

import dataclasses

from iree.compiler import ir

from kvattn.lowering import dialect, onnx_import

ALIAS_ATTR = "iree.abi.output"
_CASTS = ("torch_c.to_builtin_tensor", "torch_c.from_builtin_tensor")
_METADATA_READERS = ("onnx.Shape", "onnx.Size")  # read the past's sizes, which its update keeps


@dataclasses.dataclass(frozen=True)
class CacheUpdate:
    """One decision: the model input updated and the model output holding the update (when
    the update is a model input -> output), and whether they share a buffer."""

    node: str
    decision: str  # "aliased: ..." or "copied: ..."
    past: str | None = None
    present: str | None = None

    @property
    def aliased(self) -> bool:
        return self.decision.startswith("aliased")


def decide_cache_lifetimes(module: ir.Module) -> list[CacheUpdate]:
    """Tie every cache update that may be done in place; returns every decision."""
    updates = [_decide_scatter(op) for op in dialect.kvattn_ops(module, dialect.TENSOR_SCATTER.name)]
    for op in dialect.kvattn_ops(module, dialect.ATTENTION.name):
        concat = [f"copied: {past} is concatenated with the new rows into a larger {present}"
                  for past, present in (("past_key", "present_key"), ("past_value", "present_value"))
                  if op.operand(past) is not None and op.result(present) is not None]
        if concat:
            updates.append(CacheUpdate(op.node, "; ".join(concat)))
    decisions = {update.node: update.decision for update in updates}
    for op in dialect.kvattn_ops(module):
        if op.node in decisions:
            op.operation.attributes[dialect.CACHE_LIFETIME_ATTR] = ir.StringAttr.get(decisions[op.node])
    return updates


def _decide_scatter(op: dialect.KvOp) -> CacheUpdate:
    func = op.operation.parent
    inputs, outputs = onnx_import.signature_names(func)
    past = _source(op.operand("past_cache"))
    returned = [number for owner, number in _final_uses(op.result("present_cache")) if owner.name == "func.return"]
    present_name = outputs[returned[0]] if len(returned) == 1 else None
    if not isinstance(past.owner, ir.Block) or past.owner.owner != func:
        return CacheUpdate(op.node, "copied: past_cache is computed inside the model, not a model input")
    argument = ir.BlockArgument(past).arg_number
    past_name = inputs[argument]

    def copied(why: str) -> CacheUpdate:
        return CacheUpdate(op.node, f"copied: {why}", past_name, present_name)

    readers = [use for use in _final_uses(past) if use != (op.operation, 0) and not _reads_sizes_only(use[0])]
    if readers:
        return copied(f"{past_name} is also {_describe(readers[0][0])}")
    if not returned:
        return copied(f"the updated {past_name} is not a model output")
    if len(returned) > 1:
        return copied(f"the updated {past_name} is returned twice ({', '.join(outputs[n] for n in returned)})")
    arg_attrs = _argument_attributes(func)
    arg_attrs[argument] = {**arg_attrs[argument], ALIAS_ATTR: ir.IntegerAttr.get(ir.IndexType.get(), returned[0])}
    func.attributes["arg_attrs"] = ir.ArrayAttr.get([ir.DictAttr.get(attrs) for attrs in arg_attrs])
    return CacheUpdate(op.node, f"aliased: {past_name} -> {present_name}", past_name, present_name)


def _source(value: ir.Value) -> ir.Value:
    """The value behind a chain of torch_c casts."""
    while not isinstance(value.owner, ir.Block) and value.owner.operation.name in _CASTS:
        value = value.owner.operation.operands[0]
    return value


def _final_uses(value: ir.Value) -> list[tuple[ir.Operation, int]]:
    """(owner, operand number) of every use of the value, looking through torch_c casts."""
    uses = []
    for use in value.uses:
        owner = use.owner.operation
        if owner.name in _CASTS:
            uses += _final_uses(owner.results[0])
        else:
            uses.append((owner, use.operand_number))
    return uses


def _reads_sizes_only(op: ir.Operation) -> bool:
    return op.name == "torch.operator" and ir.StringAttr(op.attributes["name"]).value in _METADATA_READERS


def _describe(reader: ir.Operation) -> str:
    if reader.name == "func.return":
        return "returned unchanged"
    if dialect.is_kvattn_op(reader):
        node = dialect.KvOp(reader)
        if node.spec is dialect.TENSOR_SCATTER:
            return f"updated by node '{node.node}'"
        return f"read by node '{node.node}'"
    return f"read by node '{_location_name(reader)}'"


def _location_name(op: ir.Operation) -> str:
    location = str(op.location)
    return location.split('"')[1] if '"' in location else op.name


def _argument_attributes(func: ir.Operation) -> list[dict[str, ir.Attribute]]:
    count = len(func.regions[0].blocks[0].arguments)
    if "arg_attrs" not in func.attributes:
        return [{} for _ in range(count)]
    dicts = [ir.DictAttr(attrs) for attrs in ir.ArrayAttr(func.attributes["arg_attrs"])]
    return [{d[i].name: d[i].attr for i in range(len(d))} for d in dicts]
