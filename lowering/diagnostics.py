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
