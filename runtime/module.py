"""Load a kvattn vmfb on an IREE device and call it with numpy arrays by ONNX names.

Calls are functional: every input is copied into a new device buffer (IREE may write an
updated cache into an argument's buffer), so the caller's arrays are never modified.
Inputs are checked against the manifest before anything is dispatched: names, dtypes, static
sizes, and that inputs sharing an ONNX symbolic dim (`batch`, `past_seq`) agree on its size.
A call the module itself refuses (a `cf.assert` on the data, or a device failure) is a
KvattnError with the runtime's message, without its status prefix.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
from typing import Mapping, Sequence

import numpy as np
import iree.runtime as ireert

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime import device_buffers, parameters, scheduling, targets
from kvattn.runtime.manifest import REFLECTION_KEY, Manifest


class CompiledModule:
    """A loaded vmfb (its bytes, or the path of a .vmfb file): `module(inputs)` /
    `module.run({name: array})` → {output name: array}. A module compiled with externalized
    weights needs its parameter archive, `params` (.irpa, memory-mapped; runtime/parameters.py),
    by default the one beside the vmfb file (model.vmfb -> model.irpa)."""

    def __init__(self, vmfb: bytes | str | os.PathLike, driver: str | None = None,
                 params: str | os.PathLike | None = None):
        params_beside = None
        if isinstance(vmfb, (str, os.PathLike)):
            params_beside = parameters.beside(vmfb)
            try:
                with open(vmfb, "rb") as file:
                    vmfb = file.read()
            except OSError as exc:
                raise KvattnError(f"cannot read the vmfb '{os.fspath(vmfb)}': {exc.strerror or exc}") from None
        instance = ireert.VmInstance()
        try:
            self._vm_module = ireert.VmModule.copy_buffer(instance, vmfb)
        except Exception as exc:  # the runtime raises plain RuntimeError/ValueError here
            raise KvattnError(f"not a loadable IREE vmfb: {exc}") from None
        self.manifest = _find_manifest(self._vm_module)
        self._specs = {spec.name: spec for spec in self.manifest.inputs + self.manifest.outputs}
        self.driver = driver or _default_driver(self.manifest.target)
        self.device = create_device(self.driver)
        modules = [ireert.create_hal_module(instance, self.device)]
        expected = self.manifest.parameters
        if expected is not None:
            archive = params or params_beside
            if archive is None:
                raise KvattnError(f"this module's weights are in a parameter archive ({parameters.describe(expected)}): "
                                  f"give it (--params FILE.irpa; `kvattn compile` writes it beside the vmfb)")
            modules.append(parameters.io_parameters_module(instance, archive, expected))
        elif params is not None:
            raise KvattnError(f"--params '{params}': this module has its weights inline (it was compiled without "
                              f"a parameter archive)")
        try:
            self._vm_context = ireert.VmContext(instance, modules + [self._vm_module])
        except RuntimeError as exc:  # e.g. a Vulkan module on the CPU driver: no such HAL device
            reason = _runtime_message(exc, 1).split(": #hal.")[0]  # without the target's attribute blob
            raise KvattnError(f"this module was compiled for {self.manifest.target} and cannot run on the "
                              f"'{self.driver}' driver: {reason}") from None
        self._function = self._vm_module.lookup_function(self.manifest.entry)

    @classmethod
    def load(cls, path: str | os.PathLike, driver: str | None = None,
             params: str | os.PathLike | None = None) -> "CompiledModule":
        """The vmfb at `path`; its parameter archive is `params`, by default beside it."""
        return cls(pathlib.Path(path), driver, params)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.manifest.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.manifest.outputs]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.invoke(self.upload(inputs))
        return {spec.name: self.download(view, spec.name) for spec, view in zip(self.manifest.outputs, results, strict=True)}

    def download(self, view: ireert.HalBufferView, output: str) -> np.ndarray:
        """A copy on the host of a device buffer holding the named output (or input)."""
        return device_buffers.download(self.device, view, self._specs[output].dtype)

    def upload(self, inputs: Mapping[str, np.ndarray]) -> list[ireert.HalBufferView]:
        """Check the inputs against the manifest and copy them into new device buffers."""
        self.check_inputs(inputs, self.input_names)
        arrays = {name: np.asarray(inputs[name]) for name in self.input_names}
        self.check_scatter_bounds(arrays)
        return [device_buffers.upload(self.device, arrays[name]) for name in self.input_names]

    def invoke(self, views: list[ireert.HalBufferView]) -> list[ireert.HalBufferView]:
        """Call the entry function on device buffers (in manifest input order); results stay on
        the device. The module may update an argument's buffer in place. The calling thread
        waits without preempting IREE's workers (runtime/scheduling.py)."""
        arguments = ireert.VmVariantList(len(views))
        for view in views:
            arguments.push_ref(view)
        results = ireert.VmVariantList(len(self.manifest.outputs))
        try:
            with scheduling.without_wakeup_preemption():
                self._vm_context.invoke(self._function, arguments, results)
        except (RuntimeError, ValueError) as exc:  # the runtime's status, as either
            raise KvattnError(f"the module failed at run time: {_runtime_message(exc)}") from None
        return [results.get_as_object(i, ireert.HalBufferView) for i in range(len(self.manifest.outputs))]

    __call__ = run

    def check_inputs(self, inputs: Mapping[str, np.ndarray], names: list[str],
                     on_device: Mapping[str, Sequence[int]] | None = None) -> None:
        """Exactly the inputs `names` (a subset of the module's), each with its manifest dtype,
        rank and static sizes, and the same size wherever they share a symbolic dim, also with
        the shapes of the inputs already `on_device` (a session's caches)."""
        expected = "\n".join(f"  {spec.describe()}" for spec in self.manifest.inputs if spec.name in names)
        unknown = sorted(set(inputs) - set(names))
        missing = [name for name in names if name not in inputs]
        if unknown or missing:
            problems = ([f"unknown input(s) {', '.join(unknown)}"] if unknown else []) + (
                [f"missing input(s) {', '.join(missing)}"] if missing else [])
            raise KvattnError(f"{'; '.join(problems)}. The module expects:\n{expected}")
        shapes = dict(on_device or {})
        for spec in self.manifest.inputs:
            if spec.name not in names:
                continue
            array = np.asarray(inputs[spec.name])
            if array.dtype != spec.dtype:
                raise KvattnError(f"input '{spec.name}' has dtype {array.dtype}, expected {spec.dtype}. "
                                  f"The module expects:\n{expected}")
            if len(array.shape) != len(spec.shape) or any(
                    want is not None and want != got for want, got in zip(spec.shape, array.shape)):
                raise KvattnError(f"input '{spec.name}' has shape {list(array.shape)}, expected "
                                  f"[{', '.join(spec.axes())}]. The module expects:\n{expected}")
            shapes[spec.name] = array.shape
        seen = {}  # symbolic dim -> (size, input, axis) where first seen
        for name, shape in shapes.items():
            for axis, (symbol, size) in enumerate(zip(self._specs[name].dims, shape)):
                if symbol is None:
                    continue
                first_size, first_input, first_axis = seen.setdefault(symbol, (size, name, axis))
                if size != first_size:
                    raise KvattnError(f"input '{name}' has {symbol}={size} (axis {axis}) but input "
                                      f"'{first_input}' has {symbol}={first_size} (axis {first_axis}). "
                                      f"The module expects:\n{expected}")

    def check_scatter_bounds(self, by_name: Mapping[str, np.ndarray]) -> None:
        """Linear TensorScatter write positions within their caches (checked before dispatch)."""
        for bound in self.manifest.scatter_bounds:
            indices = by_name[bound.write_indices]
            worst = int(indices.max()) + bound.rows if indices.size else 0
            if worst > bound.capacity or (indices.size and int(indices.min()) < 0):
                raise KvattnError(
                    f"TensorScatter node '{bound.node}': write_indices (input '{bound.write_indices}') "
                    f"{indices.tolist()} out of range: a linear write of {bound.rows} row(s) into a cache of "
                    f"{bound.capacity} needs 0 <= write_indices[b] <= {bound.capacity - bound.rows}; nothing was written")


@functools.cache
def create_device(driver: str) -> ireert.HalDevice:
    """The default device of an IREE HAL driver (one per driver per process)."""
    try:
        return ireert.get_driver(driver).create_default_device()
    except Exception as exc:  # the runtime raises plain RuntimeError/ValueError here
        raise KvattnError(f"IREE driver '{driver}' has no usable device here: {exc}") from None


# "Error invoking function: <vm>:0: FAILED_PRECONDITION; <message>; ", for some failures followed
# by the VM's stack frames ("\n[ 1] bytecode module.__init:306 -").
_STATUS_PREFIX = re.compile(r"^(?:Error invoking function: )?(?:\S+:\d+: )?[A-Z_]+; ")
_STACK_FRAME = re.compile(r"(?:;\s*|\n)\[ *\d+\] ")


def _runtime_message(exc: Exception, max_lines: int = 5) -> str:
    """The message of a failed IREE call (a cf.assert's text) without the status prefix and stack."""
    text = _STACK_FRAME.split(_STATUS_PREFIX.sub("", str(exc).strip(), count=1))[0]
    return "\n".join(text.strip().rstrip(";").strip().splitlines()[:max_lines]) or str(exc)


def _find_manifest(vm_module) -> Manifest:
    for name in vm_module.function_names:
        reflection = vm_module.lookup_function(name).reflection
        if REFLECTION_KEY in reflection:
            return Manifest.from_json(reflection[REFLECTION_KEY])
    raise KvattnError("this vmfb was not compiled by kvattn (it has no kvattn manifest)")


def _default_driver(target: str) -> str:
    return targets.get(target).driver
