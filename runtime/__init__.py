"""kvattn.runtime: compile driver and targets, module loading and calls, CLI, ONNX backend."""
