"""The compile driver: ONNX model → kvattn pipeline → iree-compile → vmfb with its manifest.

`compile_model` is the Python API behind `kvattn compile`; `compile_to_stage` gives the IR at
any stage for `kvattn inspect`; `compile_cached` memoizes vmfbs by model content and flags.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import importlib
import os
import pathlib
from typing import Callable

import onnx
from iree.compiler import ir
from iree.compiler import tools as iree_tools
from iree.compiler import version as iree_version

import kvattn
from kvattn.lowering import onnx_import, tensor_types
from kvattn.lowering.diagnostics import KvattnError
from kvattn.passes import pipeline, static_kv_cache
from kvattn.runtime import targets
from kvattn.runtime.manifest import REFLECTION_KEY, CacheLink, Manifest, ScatterBound, StaticCacheInfo, TensorSpec

IREE_STAGES = ("flow", "stream", "executable-sources", "executable-targets", "hal", "vm")
Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class CompiledModel:
    vmfb: bytes
    manifest: Manifest


def compile_model(source, target: str = "llvm-cpu", arch: str | None = None,
                  dump_ir: str | os.PathLike | None = None, progress: Progress | None = None,
                  static_kv_cache: int | None = None) -> CompiledModel:
    """Compile an ONNX model (path, bytes or ModelProto) to a vmfb for `target` (and its `arch`,
    default the target's). With `static_kv_cache`, concat-style KV caches are rewritten to that
    fixed capacity first (passes/static_kv_cache.py).
    With `dump_ir`, the IR after each kvattn stage and each IREE phase is written there."""
    say = progress or (lambda message: None)
    target_info = targets.get(target)
    model = onnx_import.load_model(source)
    static_info = None
    if static_kv_cache is not None:
        say(f"rewriting KV caches to {static_kv_cache} rows")
        model, static_info = _static_caches(model, static_kv_cache)
    dump_dir = pathlib.Path(dump_ir) if dump_ir is not None else None
    if dump_dir:
        dump_dir.mkdir(parents=True, exist_ok=True)
    signature = {}

    def on_stage(stage: str, module: ir.Module) -> None:
        say(f"stage {stage}")
        if stage == "imported":
            signature.update(_signature(module))
        if dump_dir:
            index = pipeline.KVATTN_STAGES.index(stage)
            (dump_dir / f"{index:02d}-{stage}.mlir").write_text(str(module))

    context = onnx_import.make_context()
    result = pipeline.run(model, context, "input", on_stage, target_info.lowering)
    manifest = Manifest(
        entry=result.entry,
        target=target,
        inputs=signature["inputs"],
        outputs=signature["outputs"],
        scatter_bounds=tuple(_scatter_bounds(result.named_model)),
        nodes=tuple(dataclasses.asdict(node) for node in result.raised),
        caches=tuple(_cache_links(result.cache_updates)),
        static_cache=static_info,
    )
    with context:
        _embed_manifest(result.module, manifest)
        text = str(result.module)
    flags = target_info.flags(arch)
    if dump_dir:
        flags.append(f"--dump-compilation-phases-to={dump_dir / 'iree'}")
    say(f"iree-compile for {target}")
    return CompiledModel(iree_compile(text, flags), manifest)


def compile_to_stage(source, stage: str, target: str = "llvm-cpu", arch: str | None = None,
                     static_kv_cache: int | None = None) -> tuple[str, pipeline.PipelineResult]:
    """The IR of the model at a kvattn stage or an IREE `--compile-to` stage, as text."""
    model = onnx_import.load_model(source)
    if static_kv_cache is not None:
        model, _ = _static_caches(model, static_kv_cache)
    context = onnx_import.make_context()
    kvattn_stage = stage if stage in pipeline.KVATTN_STAGES else "input"
    if stage not in pipeline.KVATTN_STAGES and stage not in IREE_STAGES:
        raise KvattnError(f"unknown stage '{stage}'; stages: {', '.join(pipeline.KVATTN_STAGES + IREE_STAGES)}")
    result = pipeline.run(model, context, kvattn_stage, options=targets.get(target).lowering)
    with context:
        text = str(result.module)
    if stage in IREE_STAGES:
        text = iree_compile(text, targets.get(target).flags(arch) + [f"--compile-to={stage}"]).decode()
    return text, result


def compile_cached(path: str | os.PathLike, target: str = "llvm-cpu", arch: str | None = None,
                   progress: Progress | None = None, static_kv_cache: int | None = None) -> bytes:
    """The vmfb for an .onnx file, from the cache when the file, options, kvattn's own code and
    IREE's version match."""
    content = pathlib.Path(path).read_bytes()
    key = hashlib.sha256()
    for part in (content, target.encode(), " ".join(targets.get(target).flags(arch)).encode(),
                 str(static_kv_cache).encode(), _kvattn_code_digest(), iree_version.VERSION.encode()):
        key.update(part)
        key.update(b"\0")
    cache_file = cache_dir() / f"{key.hexdigest()}.vmfb"
    if cache_file.is_file():
        if progress:
            progress(f"using cached {cache_file}")
        return cache_file.read_bytes()
    vmfb = compile_model(content, target, arch, progress=progress, static_kv_cache=static_kv_cache).vmfb
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache_file.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_bytes(vmfb)
    temporary.replace(cache_file)
    return vmfb


@functools.cache
def _kvattn_code_digest() -> bytes:
    """A digest of kvattn's Python sources: a changed lowering must not reuse old vmfbs."""
    digest = hashlib.sha256(kvattn.__version__.encode())
    for package in ("kvattn.lowering", "kvattn.passes", "kvattn.runtime"):
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
    try:
        return iree_tools.compile_str(text, extra_args=flags)
    except iree_tools.CompilerToolError as exc:
        raise KvattnError(f"iree-compile failed:\n{_diagnostics(str(exc))}") from None


def _diagnostics(message: str, max_lines: int = 40) -> str:
    """The compiler's diagnostics from a CompilerToolError message, without the invocation."""
    _, found, diagnostics = message.partition("Diagnostics:")
    diagnostics = (diagnostics if found else message).split("Invoked with:")[0].strip()
    return "\n".join(diagnostics.splitlines()[:max_lines])


def _signature(module: ir.Module) -> dict:
    func = module.body.operations[0].operation
    function_type = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    input_names, output_names = onnx_import.signature_names(func)

    def specs(names, types, what):
        found = []
        for name, type_ in zip(names, types, strict=True):
            tensor = tensor_types.from_torch(type_)
            if tensor is None:
                raise KvattnError(f"model {what} '{name}' is not a tensor ({type_}); only tensors are supported")
            found.append(TensorSpec(name, tensor.shape, tensor.element))
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


def _static_caches(model: onnx.ModelProto, capacity: int) -> tuple[onnx.ModelProto, StaticCacheInfo]:
    rewritten, rows_per_step = static_kv_cache.rewrite(model, capacity)
    if len(set(rows_per_step.values())) != 1:
        raise KvattnError(f"--static-kv-cache: every cache must get the same number of new rows per step, "
                          f"found {rows_per_step}")
    return rewritten, StaticCacheInfo(capacity, static_kv_cache.PAST_LENGTH, next(iter(rows_per_step.values())))


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
