"""kvattn-fuse-qdq: fold DequantizeLinear / QuantizeLinear around kvattn.attention into the op.

    %q  = DequantizeLinear(%q8, %s, %zp)   (only use: the attention's Q, K or V)
    %y  = kvattn.attention(%q, ...)
    %y8 = QuantizeLinear(%y, %ys, %yzp)    (the only use of Y)
  ⇒
    %y8 = kvattn.attention(%q8, ..., Q_scale = %s, Q_zero_point = %zp, Y_scale = %ys, ...)

for int8 and float8e4m3fn tensors with per-tensor scales, or per-axis scales along the head axis
of 4D inputs (axis 1). uint8 stays unfused (IREE 3.13 mistypes a fused uint8 zero point). The lowering dequantizes inside the attention's dispatch and
quantizes its result there. Anything else stays unfused and correct, and the reason is recorded
on the op (`qdq_unfused`) for `kvattn inspect`.
"""

from __future__ import annotations

from iree.compiler import ir

from kvattn.lowering import dialect, tensor_types
from kvattn.lowering.raise_onnx import cast_value



def fuse_qdq(module: ir.Module) -> None:
    for op in dialect.kvattn_ops(module, dialect.ATTENTION.name):
        _fuse(op)


def _fuse(op: dialect.KvOp) -> None:
    operands, attributes, reasons = op.operands(), op.attributes(), []
    result_types = {name: value.type for name, value in op.present_results()}
    for name in ("Q", "K", "V"):
        dequantize = _producer(operands[name], "DequantizeLinear")
        if dequantize is None:
            continue
        why = _why_not(op, dequantize, name, op.operand_type(name).rank, "input")
        if why:
            reasons.append(f"{name}: {why}")
            continue
        with ir.InsertionPoint(op.operation), op.operation.location:
            for part, value in zip((name, f"{name}_scale", f"{name}_zero_point"), dequantize.operands):
                operands[part] = cast_value(value)
        attributes[f"{name}_axis"] = _axis(dequantize)
    quantize = _single_consumer(op, "QuantizeLinear")
    if quantize is not None:
        why = _why_not(op, quantize, "Y", op.result_type("Y").rank, "output")
        if why:
            reasons.append(f"Y: {why}")
            quantize = None
        else:
            for part, value in zip(("Y_scale", "Y_zero_point"), list(quantize.operands)[1:]):
                with ir.InsertionPoint(op.operation), op.operation.location:
                    operands[part] = cast_value(value)
            attributes["Y_axis"] = _axis(quantize)
            result_types["Y"] = _builtin(quantize.results[0].type)
    if operands == op.operands():
        if reasons:
            op.operation.attributes[dialect.QDQ_UNFUSED_ATTR] = ir.StringAttr.get("; ".join(reasons))
        return
    with ir.InsertionPoint(op.operation), op.operation.location:
        fused = dialect.build(op.spec, operands, result_types, attributes, op.node, op.opset, op.operation.location)
        for name, old in op.present_results():
            if name == "Y" and quantize is not None:
                quantize.results[0].replace_all_uses_with(
                    ir.Operation.create("torch_c.from_builtin_tensor", results=[quantize.results[0].type],
                                        operands=[fused.result("Y")]).result)
            else:
                old.replace_all_uses_with(fused.result(name))
    if reasons:
        fused.operation.attributes[dialect.QDQ_UNFUSED_ATTR] = ir.StringAttr.get("; ".join(reasons))
    dead = ([quantize, quantize.operands[0].owner.operation] if quantize is not None else []) + [op.operation]
    for operation in dead:
        operation.erase()
    _erase_dead_dequantizes(fused)


def _producer(value: ir.Value, onnx_name: str) -> ir.Operation | None:
    """The torch.operator "onnx.<name>" behind a torch_c.to_builtin_tensor cast, if any."""
    cast = value.owner  # an op, or a block for a block argument
    if not hasattr(cast, "name") or cast.operation.name != "torch_c.to_builtin_tensor":
        return None
    cast = cast.operation
    producer = cast.operands[0].owner
    if not hasattr(producer, "name"):
        return None
    producer = producer.operation
    if producer.name == "torch.operator" and ir.StringAttr(producer.attributes["name"]).value == f"onnx.{onnx_name}":
        return producer
    return None


def _single_consumer(op: dialect.KvOp, onnx_name: str) -> ir.Operation | None:
    uses = list(op.result("Y").uses)
    if len(uses) != 1 or uses[0].owner.name != "torch_c.from_builtin_tensor":
        return None
    cast_uses = list(uses[0].owner.results[0].uses)
    if len(cast_uses) != 1:
        return None
    consumer = cast_uses[0].owner
    if consumer.name == "torch.operator" and ir.StringAttr(consumer.attributes["name"]).value == f"onnx.{onnx_name}":
        return consumer
    return None


def _why_not(op: dialect.KvOp, qdq: ir.Operation, name: str, rank: int, role: str) -> str | None:
    if role == "input":
        result = qdq.results[0]
        if len(list(result.uses)) != 1 or len(list(list(result.uses)[0].owner.results[0].uses)) != 1:
            return "the dequantized tensor is also used elsewhere"
    element = _element(qdq.operands[0].type if role == "input" else qdq.results[0].type)
    if element == "ui8":
        # IREE 3.13's torch lowering cannot type a uint8 constant once it crosses into a builtin
        # tensor ('torch.vtensor.literal' infers si8), so uint8 stays with IREE's own Q/DQ.
        return "uint8 zero points do not survive IREE 3.13's torch lowering when fused"
    if element not in ("si8", "f8E4M3FN"):
        return f"{element} is not int8 or float8e4m3fn"
    if any(a in qdq.attributes for a in ("torch.onnx.block_size",)) and \
            ir.IntegerAttr(qdq.attributes["torch.onnx.block_size"]).value != 0:
        return "blocked quantization"
    scale_rank = _rank(qdq.operands[1].type)
    if scale_rank not in (0, 1):
        return "the scale is neither per-tensor nor per-axis"
    if scale_rank == 1 and (rank != 4 or _axis(qdq) % rank != 1):
        return "a per-axis scale not along the head axis of a 4D tensor"
    if op.operand("past_key") is not None and name in ("K", "V"):
        return "the internal past/present cache would mix quantized and float rows"
    return None


def _axis(qdq: ir.Operation) -> int:
    return ir.IntegerAttr(qdq.attributes["torch.onnx.axis"]).value if "torch.onnx.axis" in qdq.attributes else 1


def _element(type_: ir.Type) -> str:
    return str(type_).rsplit(",", 1)[-1].rstrip(">")


def _rank(type_: ir.Type) -> int:
    dims = str(type_).split("[", 1)[1].split("]", 1)[0]
    return len([d for d in dims.split(",") if d])


def _builtin(torch_type: ir.Type) -> ir.Type:
    return tensor_types.to_ir(tensor_types.from_torch(torch_type))


def _erase_dead_dequantizes(op: dialect.KvOp) -> None:
    """DequantizeLinear ops (and their casts) left without uses by the fusion."""
    block = op.operation.block
    for candidate in reversed(list(block.operations)):
        candidate = candidate.operation
        if candidate.name in ("torch_c.to_builtin_tensor", "torch.operator") and \
                all(not list(r.uses) for r in candidate.results) and \
                (candidate.name == "torch_c.to_builtin_tensor"
                 or ir.StringAttr(candidate.attributes["name"]).value == "onnx.DequantizeLinear"):
            candidate.erase()
