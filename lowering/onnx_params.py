"""ONNX initializers as IREE parameters: which weights leave the IR, and their .irpa archive.

With externalized weights, IREE's own importer (`iree-import-onnx --externalize-params`'s
`IREENodeImporter` with a `ParamData`) turns every initializer of at least `MIN_ELEMENTS`
elements into `util.global @name = #stream.parameter.named<"model"::"name">` read by
`util.global.load`; smaller ones (shapes, indices, scales, the constants kvattn's passes and
IREE's ONNX lowering read) stay inline. The IR then holds no weight data at any stage, and the
vmfb only code; the weights go to an IREE parameter archive (.irpa) loaded at run time.

The archive is written by iree.runtime's `ParameterIndex.create_archive_file` from entries that
point into the ONNX external data file itself (`add_from_file_handle`): the weights are copied
file to file by IREE, never read into Python. (The importer's own `save_params` reads every
tensor into numpy and holds them all until the archive is written — the whole model in memory.)
Tensors stored inside the .onnx are added from their bytes as they are (`add_buffer`).

A model loaded from a file keeps its large external tensors unread (`load_unread`); they are
read only when weights are compiled inline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib

import numpy as np
import onnx
from iree.compiler.tools.import_onnx.importer_externalization_overrides import ParamData
from onnx import external_data_helper

from kvattn.lowering.diagnostics import KvattnError

# Fewer elements than this: inline in the IR (iree-import-onnx's --num-elements-threshold default).
MIN_ELEMENTS = 100
# Weights of at least this many bytes in total (counting initializers of MIN_ELEMENTS or more)
# are externalized unless asked otherwise: below it, inline weights cost well under a second and
# a few hundred MB to compile and keep the vmfb one self-contained file (every test and
# conformance model is far below); above it, the weights' cost grows 10x their size inline.
AUTO_BYTES = 16 << 20
SCOPE = "model"  # iree-import-onnx's --params-scope default
_PROTOBUF_LIMIT = 2 << 30


@dataclasses.dataclass(frozen=True)
class Parameter:
    initializer: str  # the ONNX initializer's name
    key: str  # its name in the archive (the util.global's symbol)


def elements(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64))


def nbytes(tensor: onnx.TensorProto) -> int:
    """The tensor's size in bytes, from its type and dims (its data need not be loaded)."""
    if external_data_helper.uses_external_data(tensor):
        length = {entry.key: entry.value for entry in tensor.external_data}.get("length")
        if length is not None:
            return int(length)
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return elements(tensor) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers large enough to become parameters."""
    return sum(nbytes(t) for t in model.graph.initializer if elements(t) >= MIN_ELEMENTS)


def externalize(model: onnx.ModelProto, inline_weights: bool | None) -> bool:
    """Whether the model's weights go to a parameter archive: `inline_weights` False / True
    decides, None (auto) externalizes above AUTO_BYTES."""
    return weight_bytes(model) >= AUTO_BYTES if inline_weights is None else not inline_weights


def load_unread(path: str | os.PathLike) -> onnx.ModelProto:
    """The model at `path` with the external data of its small initializers read and that of
    the others (the weights) left in the external file."""
    model = onnx.load(os.fspath(path), load_external_data=False)
    base_dir = os.path.dirname(os.path.abspath(path))
    for tensor in model.graph.initializer:
        if external_data_helper.uses_external_data(tensor) and elements(tensor) < MIN_ELEMENTS:
            try:
                external_data_helper.load_external_data_for_tensor(tensor, base_dir)
            except (OSError, ValueError) as exc:
                raise KvattnError(f"'{os.fspath(path)}': cannot load its external data: {exc}") from None
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
    return model


def check_model(model: onnx.ModelProto) -> None:
    """onnx.checker.check_model on a model in memory, its initializers with external data checked
    as typed graph inputs (the checker would look for their files in the working directory)."""
    external = [t for t in model.graph.initializer if external_data_helper.uses_external_data(t)]
    if external:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        kept = [t for t in copy.graph.initializer if not external_data_helper.uses_external_data(t)]
        del copy.graph.initializer[:]
        copy.graph.initializer.extend(kept)
        copy.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in external)
        model = copy
    onnx.checker.check_model(model)


def read_all(model: onnx.ModelProto, base_dir: str) -> onnx.ModelProto:
    """The model with all its external data read (for inline weights): a copy when there was
    any to read (the caller's model is not modified)."""
    if not any(external_data_helper.uses_external_data(t) for t in model.graph.initializer):
        return model
    if weight_bytes(model) >= _PROTOBUF_LIMIT:
        raise KvattnError(f"the model's weights ({weight_bytes(model) / 1e9:.1f} GB) cannot be compiled inline "
                          f"(ONNX models over 2 GB must keep their weights outside): drop --inline-weights")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        external_data_helper.load_external_data_for_model(copy, base_dir)
    except (OSError, ValueError) as exc:
        raise KvattnError(f"cannot load the model's external data: {exc}") from None
    return copy


def param_data(scope: str = SCOPE) -> ParamData:
    """The `ParamData` of IREE's importer for kvattn's import (archive written by `write_archive`)."""
    return ParamData(param_bit_threshold=None, num_elements_threshold=MIN_ELEMENTS, params_scope=scope,
                     data_dir="", param_path="", input_index_threshold=None)


def write_archive(model: onnx.ModelProto, parameters: list[Parameter], base_dir: str,
                  path: str | os.PathLike) -> list[tuple[str, int]]:
    """Write the parameters' data to an .irpa archive at `path` (through a temporary file beside
    it); returns (key, bytes) for each."""
    import iree.runtime as ireert

    tensors = {tensor.name: tensor for tensor in model.graph.initializer}
    index = ireert.ParameterIndex()
    entries = []
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.ExitStack() as files:
        handles = {}
        for parameter in parameters:
            tensor = tensors[parameter.initializer]
            if external_data_helper.uses_external_data(tensor):
                info = external_data_helper.ExternalDataInfo(tensor)
                location = os.path.join(base_dir, info.location)
                if location not in handles:
                    handles[location] = _open(files, location, parameter.initializer)
                length = info.length if info.length is not None else nbytes(tensor)
                index.add_from_file_handle(parameter.key, handles[location], length, info.offset or 0)
            else:
                array = onnx.numpy_helper.to_array(tensor)
                length = array.nbytes
                index.add_buffer(parameter.key, array)
            entries.append((parameter.key, length))
        try:
            index.create_archive_file(str(temporary))
            temporary.replace(path)
        except (OSError, RuntimeError, ValueError) as exc:
            temporary.unlink(missing_ok=True)
            raise KvattnError(f"cannot write the parameter archive '{path}': {exc}") from None
    return entries


def _open(files: contextlib.ExitStack, location: str, initializer: str):
    import iree.runtime as ireert

    try:
        fd = os.open(location, os.O_RDONLY)
    except OSError as exc:
        raise KvattnError(f"initializer '{initializer}': cannot open its external data '{location}': "
                          f"{exc.strerror or exc}") from None
    files.callback(os.close, fd)
    return ireert.FileHandle.wrap_fd(fd)
