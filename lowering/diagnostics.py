"""User-facing errors. Every error a user can cause is a KvattnError with a message that says
what is wrong and, where it comes from a model, which ONNX node or input it concerns."""


class KvattnError(Exception):
    """An error caused by the user's model, inputs or flags (reported without a traceback)."""


class NodeError(KvattnError):
    """An error about one ONNX node: the message names the node and its operator."""

    def __init__(self, op_type: str, node: str, message: str):
        self.op_type = op_type
        self.node = node
        super().__init__(f"{op_type} node '{node}': {message}")


class UnsupportedError(NodeError):
    """A valid ONNX construct that kvattn cannot compile yet."""

    def __init__(self, op_type: str, node: str, message: str):
        super().__init__(op_type, node, f"{message} is not supported yet")


class InternalError(Exception):
    """A failure inside kvattn or IREE (not the user's fault): generated MLIR that does not parse,
    an iree-compile crash, an unexpected exception while lowering a node. The CLI reports it as
    `kvattn: internal error while lowering node 'X' (Op): <first line>` with exit code 2."""

    def __init__(self, message: str, node: str | None = None, op_type: str | None = None):
        self.node, self.op_type, self.detail = node, op_type, message
        where = f" while lowering node '{node}' ({op_type})" if node else ""
        first_line = message.strip().splitlines()[0] if message.strip() else "(no message)"
        super().__init__(f"internal error{where}: {first_line}")
