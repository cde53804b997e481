"""kvattn.lowering: the kvattn dialect, ONNX import and raising, and lowering to IREE's dialects."""
