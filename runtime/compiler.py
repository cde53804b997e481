"""The compile driver: ONNX model → kvattn pipeline → iree-compile → vmfb with its manifest.

`compile_model` is the Python API behind `kvattn compile`; `compile_to_stage` gives the IR at
any stage for `kvattn inspect`; `compile_cached` memoizes vmfbs by model content and flags.
Each takes `dims` ({symbolic dim: size}, passes/bind_dims.py), bound before anything else, and
`inline_weights`: None (default) externalizes the weights of models with more than
onnx_params.AUTO_BYTES of them into an IREE parameter archive (.irpa) beside the vmfb, which then
holds only code; True keeps them in the vmfb, False always externalizes. No stage prints the
weights: `inspect` and `--dump-ir` elide large constants.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import importlib
import os
import pathlib
import re
import tempfile
from typing import Callable, Mapping

import onnx
from iree.compiler import ir
from iree.compiler import tools as iree_tools
from iree.compiler import version as iree_version
from onnx import external_data_helper

import kvattn
from kvattn.lowering import onnx_import, onnx_params, tensor_types
from kvattn.lowering.diagnostics import InternalError, KvattnError
from kvattn import rewrites
from kvattn.passes import bind_dims, pipeline
from kvattn.rewrites import group_query_attention, model_form
from kvattn.rewrites import static_kv_cache as static_kv_cache_rewrite
from kvattn.runtime import targets
from kvattn.runtime.manifest import (REFLECTION_KEY, CacheLink, Manifest, Parameters, ScatterBound, StaticCacheInfo,
                                     TensorSpec)

IREE_STAGES = ("flow", "stream", "executable-sources", "executable-targets", "hal", "vm")
Progress = Callable[[str], None]
# Printed IR (inspect, --dump-ir) shows constants of more elements than this as __elided__.
_ELIDE = 16
_ELIDE_FLAGS = [f"--mlir-elide-elementsattrs-if-larger={_ELIDE}", f"--mlir-elide-resource-strings-if-larger={_ELIDE}"]


@dataclasses.dataclass(frozen=True)
class CompiledModel:
    vmfb: bytes
    manifest: Manifest
    params: pathlib.Path | None = None  # the parameter archive written, when the weights are externalized


def compile_model(source, target: str = "llvm-cpu", arch: str | None = None,
                  dump_ir: str | os.PathLike | None = None, progress: Progress | None = None,
                  static_kv_cache: int | None = None, dims: Mapping[str, int] | None = None,
                  inline_weights: bool | None = None, params_out: str | os.PathLike | None = None,
                  attention_precision: str = "ieee") -> CompiledModel:
    """Compile an ONNX model (path, bytes or ModelProto) to a vmfb for `target` (and its `arch`,
    default the target's). With `dims`, those symbolic dims are bound first; with
    `static_kv_cache`, concat-style KV caches are then rewritten to that fixed capacity
    (rewrites/static_kv_cache.py). Externalized weights (see `inline_weights` above) are written
    to `params_out`, by default a new temporary .irpa file, which the result names (`params`).
    `attention_precision` (targets.ATTENTION_PRECISIONS) rounds f32 attention's matmul inputs.
    With `dump_ir`, the IR after each kvattn stage and each IREE phase is written there."""
    say = progress or (lambda message: None)
    target_info = targets.get(target)
    lowering = target_info.lowering_for(attention_precision)
    dump_dir = pathlib.Path(dump_ir) if dump_ir is not None else None
    if dump_dir:
        _make_dir(dump_dir, "--dump-ir")
    model, static_info, externalize, rewritten = _prepared(source, dims, static_kv_cache, inline_weights, say)
    signature = {}

    def on_stage(stage: str, module: ir.Module) -> None:
        say(f"stage {stage}")
        if stage == "imported":
            signature.update(_signature(module, model))
        if dump_dir:
            index = pipeline.KVATTN_STAGES.index(stage)
            (dump_dir / f"{index:02d}-{stage}.mlir").write_text(_printed(module))

    context = onnx_import.make_context()
    result = pipeline.run(model, context, "input", on_stage, lowering, externalize, rewritten)
    params, parameters = None, None
    if result.parameters:
        params = pathlib.Path(params_out) if params_out is not None else _temporary_archive()
        say(f"writing {len(result.parameters)} parameters to {params}")
        entries = onnx_params.write_archive(model, result.parameters, _data_dir(source), params)
        parameters = Parameters(onnx_params.SCOPE, tuple(key for key, _ in entries), tuple(size for _, size in entries))
    manifest = Manifest(
        entry=result.entry,
        target=target,
        inputs=signature["inputs"],
        outputs=signature["outputs"],
        scatter_bounds=tuple(_scatter_bounds(result.named_model)),
        nodes=tuple(dataclasses.asdict(node) for node in result.raised),
        caches=tuple(_cache_links(result.cache_updates)),
        static_cache=static_info,
        parameters=parameters,
        rewrites=tuple(result.rewrites),
    )
    with context:
        _embed_manifest(result.module, manifest)
        text = str(result.module)
    flags = target_info.flags(arch)
    if dump_dir:
        flags.append(f"--dump-compilation-phases-to={dump_dir / 'iree'}")
    say(f"iree-compile for {target}")
    return CompiledModel(iree_compile(text, flags), manifest, params)


def compile_to_stage(source, stage: str, target: str = "llvm-cpu", arch: str | None = None,
                     static_kv_cache: int | None = None, dims: Mapping[str, int] | None = None,
                     inline_weights: bool | None = None,
                     attention_precision: str = "ieee") -> tuple[str, pipeline.PipelineResult]:
    """The IR of the model at a kvattn stage or an IREE `--compile-to` stage, as text, with
    large constants elided (externalized weights need no archive here)."""
    if stage not in pipeline.KVATTN_STAGES and stage not in IREE_STAGES:
        raise KvattnError(f"unknown stage '{stage}'; stages: {', '.join(pipeline.KVATTN_STAGES + IREE_STAGES)}")
    lowering = targets.get(target).lowering_for(attention_precision)
    model, _, externalize, rewritten = _prepared(source, dims, static_kv_cache, inline_weights)
    context = onnx_import.make_context()
    kvattn_stage = stage if stage in pipeline.KVATTN_STAGES else "input"
    result = pipeline.run(model, context, kvattn_stage, options=lowering, externalize=externalize, rewritten=rewritten)
    with context:
        if stage not in IREE_STAGES:
            return _printed(result.module), result
        text = str(result.module)
    flags = targets.get(target).flags(arch) + [f"--compile-to={stage}"] + _ELIDE_FLAGS
    return iree_compile(text, flags).decode(), result


def _printed(module: ir.Module) -> str:
    """The module as text for people, constants of more than a few elements elided."""
    return module.operation.get_asm(large_elements_limit=_ELIDE, large_resource_limit=_ELIDE)


def _data_dir(source) -> str:
    """Where the external data of the model `source` is: beside the file, or (a ModelProto or
    bytes) relative to the working directory, as onnx does."""
    return os.path.dirname(os.path.abspath(source)) if isinstance(source, (str, os.PathLike)) else ""


def _temporary_archive() -> pathlib.Path:
    handle, name = tempfile.mkstemp(prefix="kvattn-", suffix=".irpa")
    os.close(handle)
    return pathlib.Path(name)


def compile_cached(path: str | os.PathLike, target: str = "llvm-cpu", arch: str | None = None,
                   progress: Progress | None = None, static_kv_cache: int | None = None,
                   dims: Mapping[str, int] | None = None, inline_weights: bool | None = None,
                   attention_precision: str = "ieee") -> pathlib.Path:
    """The cached vmfb file for an .onnx file, compiled into the cache unless one is there for
    the same model (with its external data), options (the target's lowering choices among them),
    kvattn's own code and IREE's version.
    Externalized weights are cached beside it (`<key>.irpa`): `CompiledModule.load` finds them."""
    model = onnx_import.load_model(path)
    externalize = onnx_params.externalize(model, inline_weights)
    key = hashlib.sha256()
    for part in (model.SerializeToString(), _external_data_digest(model, _data_dir(path)), target.encode(),
                 " ".join(targets.get(target).flags(arch)).encode(), str(static_kv_cache).encode(),
                 str(sorted((dims or {}).items())).encode(), f"externalize={externalize}".encode(),
                 repr(targets.get(target).lowering_for(attention_precision)).encode(),
                 _kvattn_code_digest(), iree_version.VERSION.encode()):
        key.update(part)
        key.update(b"\0")
    directory = cache_dir()
    cache_file = directory / f"{key.hexdigest()}.vmfb"
    archive = cache_file.with_suffix(".irpa")
    if cache_file.is_file() and (archive.is_file() or not (externalize and onnx_params.weight_bytes(model))):
        if progress:
            progress(f"using cached {cache_file}")
        return cache_file
    _make_dir(directory, "the compile cache (KVATTN_CACHE_DIR)")
    vmfb = compile_model(path, target, arch, progress=progress, static_kv_cache=static_kv_cache, dims=dims,
                         inline_weights=not externalize, params_out=archive,
                         attention_precision=attention_precision).vmfb
    temporary = cache_file.with_suffix(f".{os.getpid()}.tmp")
    try:
        temporary.write_bytes(vmfb)
        temporary.replace(cache_file)
    except OSError as exc:
        raise KvattnError(f"the compile cache (KVATTN_CACHE_DIR): cannot write '{temporary}': "
                          f"{exc.strerror or exc}") from None
    return cache_file


def _external_data_digest(model: onnx.ModelProto, base_dir: str) -> bytes:
    """A digest of the contents of the external data files the model's initializers name."""
    digest = hashlib.sha256()
    locations = sorted({external_data_helper.ExternalDataInfo(tensor).location for tensor in model.graph.initializer
                        if external_data_helper.uses_external_data(tensor)})
    for location in locations:
        try:
            with open(os.path.join(base_dir, location), "rb") as file:
                digest.update(hashlib.file_digest(file, "sha256").digest())
        except OSError as exc:
            raise KvattnError(f"cannot read the model's external data '{location}': {exc.strerror or exc}") from None
    return digest.digest()


def _prepared(source, dims: Mapping[str, int] | None, static_kv_cache: int | None, inline_weights: bool | None,
              say: Progress = lambda message: None) -> tuple[onnx.ModelProto, StaticCacheInfo | None, bool, list[str]]:
    """The loaded model in kvattn's form (rewrites/model_form.py: local functions inlined, nodes
    sorted), with `dims` bound, the exporters' patterns rewritten (kvattn.rewrites: one
    line per rewrite) and its caches made static, as asked; whether its weights are externalized
    (if not, the model has all its external data read)."""
    model, rewritten = model_form.normalize(onnx_import.load_model(source))
    model, contrib = group_query_attention.rewrite(model)
    rewritten += contrib
    static_info = None
    if dims:
        say(f"binding {', '.join(f'{name}={value}' for name, value in dims.items())}")
        model = bind_dims.bind(model, dims)
    model, rewrites_done = rewrites.apply(model)
    rewritten += rewrites_done
    if static_kv_cache is not None:
        say(f"rewriting KV caches to {static_kv_cache} rows")
        static = static_kv_cache_rewrite.rewrite(model, static_kv_cache)
        model, rewritten = static.model, rewritten + static.decisions
        if static.rows_per_step is not None:
            static_info = StaticCacheInfo(static_kv_cache, static_kv_cache_rewrite.PAST_LENGTH, static.rows_per_step)
    externalize = onnx_params.externalize(model, inline_weights)
    if not externalize:
        model = onnx_params.read_all(model, _data_dir(source))
    return model, static_info, externalize, rewritten


def _make_dir(path: pathlib.Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KvattnError(f"{what}: cannot create the directory '{path}': {exc.strerror or exc}") from None


@functools.cache
def _kvattn_code_digest() -> bytes:
    """A digest of kvattn's Python sources: a changed lowering must not reuse old vmfbs."""
    digest = hashlib.sha256(kvattn.__version__.encode())
    for package in ("kvattn.lowering", "kvattn.passes", "kvattn.rewrites", "kvattn.runtime"):
        folder = pathlib.Path(importlib.import_module(package).__file__).parent
        for source in sorted(folder.glob("*.py")):
            digest.update(source.name.encode())
            digest.update(source.read_bytes())
    return digest.digest()


def cache_dir() -> pathlib.Path:
    if "KVATTN_CACHE_DIR" in os.environ:
        return pathlib.Path(os.environ["KVATTN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "kvattn"


def iree_compile(text: str, flags: list[str]) -> bytes:
    """iree-compile's output; its diagnostics as a KvattnError, a crash as an InternalError."""
    try:
        return iree_tools.compile_str(text, extra_args=flags)
    except iree_tools.CompilerToolError as exc:
        diagnostics = _diagnostics(str(exc))
        code = re.search(r"^Error code: (-?\d+)$", str(exc), re.MULTILINE)
        status = int(code.group(1)) if code else 1
        if status < 0 or status > 128 or "Stack dump:" in diagnostics:  # killed by a signal, or LLVM's crash handler
            how = f"signal {-status}" if status < 0 else f"exit code {status}"
            first = next((line for line in diagnostics.splitlines() if line.strip()), "no diagnostics")
            raise InternalError(f"iree-compile crashed ({how}): {first}\n{diagnostics}") from None
        raise KvattnError(f"iree-compile failed:\n{diagnostics}") from None


_EXECUTABLE_TARGET = re.compile(r'#hal\.executable\.target<("[^"]*", "[^"]*"), \{.*?\}>')


def _diagnostics(message: str, max_lines: int = 40) -> str:
    """The compiler's diagnostics from a CompilerToolError message, without the invocation."""
    _, found, diagnostics = message.partition("Diagnostics:")
    diagnostics = (diagnostics if found else message).split("Invoked with:")[0].strip()
    # Executable targets print with every CPU feature (thousands of characters a line).
    diagnostics = _EXECUTABLE_TARGET.sub(r"#hal.executable.target<\1, ...>", diagnostics)
    return "\n".join(diagnostics.splitlines()[:max_lines])


def _signature(module: ir.Module, model: onnx.ModelProto) -> dict:
    """The imported function's arguments and results as TensorSpecs, with the ONNX dim_param
    names of the model's graph inputs and outputs."""
    func = onnx_import.main_function(module)
    function_type = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    input_names, output_names = onnx_import.signature_names(func)
    symbols = {value.name: tuple(d.dim_param if d.dim_param and not d.HasField("dim_value") else None
                                 for d in value.type.tensor_type.shape.dim)
               for value in list(model.graph.input) + list(model.graph.output)}

    def specs(names, types, what):
        found = []
        for name, type_ in zip(names, types, strict=True):
            tensor = tensor_types.from_torch(type_)
            if tensor is None:
                raise KvattnError(f"model {what} '{name}' is not a tensor ({type_}); only tensors are supported")
            dims = symbols.get(name, ())
            dims = tuple(None if size is not None else symbol for size, symbol in zip(tensor.shape, dims))
            found.append(TensorSpec(name, tensor.shape, tensor.element, dims))
        return tuple(found)

    return {"inputs": specs(input_names, function_type.inputs, "input"),
            "outputs": specs(output_names, function_type.results, "output")}


def _scatter_bounds(named: onnx.ModelProto):
    """Bounds of linear TensorScatters fed by model inputs, from the named, shape-inferred copy."""
    inputs = {i.name for i in named.graph.input}
    shapes = {}
    for value in list(named.graph.input) + list(named.graph.value_info) + list(named.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for node in named.graph.node:
        if node.op_type != "TensorScatter" or len(node.input) < 3 or node.input[2] not in inputs:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("mode", b"linear")
        if (mode.decode() if isinstance(mode, bytes) else mode) != "linear":
            continue
        cache, update = shapes.get(node.input[0]), shapes.get(node.input[1])
        if not cache or not update:
            continue
        axis = attrs.get("axis", -2) % len(cache)
        if cache[axis] is not None and update[axis] is not None:
            yield ScatterBound(node.name, node.input[2], update[axis], cache[axis])


def _cache_links(updates):
    """Model inputs updated into exactly one model output: the caches a decode session keeps."""
    updated = collections.Counter(update.past for update in updates if update.past)
    for update in updates:
        if update.past and update.present and updated[update.past] == 1:
            yield CacheLink(update.past, update.present, update.aliased)


def _embed_manifest(module: ir.Module, manifest: Manifest) -> None:
    for op in module.body.operations:
        op = op.operation
        if op.name == "util.func" and ir.StringAttr(op.attributes["sym_name"]).value == manifest.entry:
            op.attributes["iree.reflection"] = ir.DictAttr.get({REFLECTION_KEY: ir.StringAttr.get(manifest.to_json())})
            return
    raise KvattnError(f"entry function '{manifest.entry}' not found after lowering")
