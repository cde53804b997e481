"""kvattn: compile ONNX models with the GenAI attention and KV-cache operators to IREE."""

__version__ = "0.1.0"
