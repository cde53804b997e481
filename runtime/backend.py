"""kvattn as an ONNX backend (`onnx.backend.base.Backend`), like `onnxruntime.backend`:

    rep = kvattn.runtime.backend.prepare(model_proto, device="CPU")
    outputs = rep.run([x, y])          # or rep.run({"x": x, "y": y})

`prepare(model, device, dims={"batch": 1})` binds symbolic dims first (onnxruntime's
free-dimension overrides; passes/bind_dims.py); `arch=` picks the target's chip;
`inline_weights=` as in compile_model. Externalized weights go to a temporary parameter
archive, memory-mapped by the module and removed from the file system once loaded.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime import targets
from kvattn.runtime.compiler import compile_model
from kvattn.runtime.module import CompiledModule, create_device


class KvattnRep(BackendRep):
    def __init__(self, module: CompiledModule):
        self.module = module

    def run(self, inputs: Any, **kwargs) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            named = inputs
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            if len(inputs) != len(self.module.input_names):
                raise KvattnError(f"{len(inputs)} inputs given, the model takes {len(self.module.input_names)}: "
                                  f"{', '.join(self.module.input_names)}")
            named = dict(zip(self.module.input_names, inputs))
        results = self.module.run(named)
        return tuple(results[name] for name in self.module.output_names)


class KvattnBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> KvattnRep:
        target = targets.for_onnx_device(device)
        compiled = compile_model(model, target.name, kwargs.get("arch"), dims=kwargs.get("dims"),
                                 inline_weights=kwargs.get("inline_weights"))
        try:
            return KvattnRep(CompiledModule(compiled.vmfb, target.driver, compiled.params))
        finally:
            if compiled.params:
                compiled.params.unlink()  # mapped by the module (or not needed after a failure)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info=None, **kwargs):
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        graph_inputs = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
                        for name, x in zip(node.input, inputs) if name]
        if outputs_info is None:
            raise KvattnError("run_node needs outputs_info (dtype and shape of each output)")
        graph_outputs = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)
                         for name, (dtype, shape) in zip(node.output, outputs_info) if name]
        graph = onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs)
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        return cls.run_model(model, [x for name, x in zip(node.input, inputs) if name], device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """True when kvattn has a target for the device and this machine has one."""
        try:
            create_device(targets.for_onnx_device(device).driver)
        except KvattnError:
            return False
        return True


prepare = KvattnBackend.prepare
run_model = KvattnBackend.run_model
run_node = KvattnBackend.run_node
supports_device = KvattnBackend.supports_device
is_compatible = KvattnBackend.is_compatible
