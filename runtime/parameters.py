"""A module's externalized weights at run time: its IREE parameter archive (.irpa).

A vmfb compiled with externalized weights (manifest `parameters`) reads them through IREE's
`io_parameters` module from a parameter provider. The archive is memory-mapped
(`ParameterIndex.load`), checked against the manifest (every key present with its size) before
anything runs, and its provider becomes the `io_parameters` module of the VM context, between
the HAL module and the program (iree.runtime's create_io_parameters_module).
"""

from __future__ import annotations

import os
import pathlib

import iree.runtime as ireert

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime.manifest import Parameters

SUFFIX = ".irpa"


def beside(vmfb_path: str | os.PathLike) -> pathlib.Path:
    """Where `kvattn compile` puts a vmfb's archive by default: model.vmfb -> model.irpa."""
    return pathlib.Path(vmfb_path).with_suffix(SUFFIX)


def describe(expected: Parameters) -> str:
    return (f"{len(expected.keys)} parameters, {expected.total_bytes / 1e6:.1f} MB, "
            f"scope '{expected.scope}'")


def io_parameters_module(instance: ireert.VmInstance, path: str | os.PathLike,
                         expected: Parameters) -> ireert.VmModule:
    """The io_parameters VM module serving the archive at `path`, checked against `expected`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise KvattnError(f"parameter archive '{path}': no such file (the module's weights are in a parameter "
                          f"archive: {describe(expected)}; give it with --params FILE{SUFFIX})")
    index = ireert.ParameterIndex()
    try:
        index.load(str(path))
    except Exception as exc:  # the runtime raises plain RuntimeError/NotImplementedError here
        raise KvattnError(f"'{path}' is not a readable IREE parameter archive: {exc}") from None
    found = {key: entry.length for key, entry in index.items()}
    for key, size in zip(expected.keys, expected.sizes, strict=True):
        if key not in found:
            raise KvattnError(f"the parameter archive '{path}' does not match this module: it has no parameter "
                              f"'{key}' (the module expects {describe(expected)}; the archive has "
                              f"{len(found)} parameters)")
        if found[key] != size:
            raise KvattnError(f"the parameter archive '{path}' does not match this module: parameter '{key}' "
                              f"has {found[key]} bytes, the module expects {size}")
    return ireert.create_io_parameters_module(instance, index.create_provider(scope=expected.scope))
