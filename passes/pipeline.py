"""The kvattn pipeline: ONNX model → IREE input, stage by stage.

  (ONNX)    kvattn.rewrites: exporters' patterns rewritten to the ONNX ops kvattn owns, then
            the opt-in --static-kv-cache (the compile driver applies both, runtime/compiler.py)
  imported  IREE's ONNX importer (torch dialect; our operators as torch.operator "onnx.X")
  raised    kvattn-raise-onnx, kvattn-fuse-qdq, kvattn-verify, kvattn-cache-lifetime
            (kvattn ops on builtin tensors; KV-cache arguments tied to their results)
  lowered   kvattn-lower-to-iree                       (iree_linalg_ext / linalg / tensor)
  input     iree-torch-to-input, kvattn-hoist-valid-lengths  (IREE input: util.func on buffer views)

iree-compile then takes `input` to the stages named by `--compile-to` and to the vmfb.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable

import onnx
from iree.compiler import ir

from kvattn.lowering import onnx_import, onnx_params
from kvattn.lowering.options import LoweringOptions
from kvattn.passes import cache_lifetime, registry

KVATTN_STAGES = ("imported", "raised", "lowered", "input")
STAGE_PASSES = {
    "raised": ("kvattn-raise-onnx", "kvattn-fuse-qdq", "kvattn-verify", "kvattn-cache-lifetime"),
    "lowered": ("kvattn-lower-to-iree",),
    "input": ("iree-torch-to-input", "kvattn-hoist-valid-lengths"),
}


@dataclasses.dataclass
class RaisedNode:
    node: str
    onnx_op: str
    kvattn_op: str
    lowered_to: list[str] = dataclasses.field(default_factory=list)
    route: str = ""
    cache: str = ""  # kvattn-cache-lifetime's decision for a cache update


@dataclasses.dataclass
class PipelineResult:
    module: ir.Module
    entry: str
    named_model: onnx.ModelProto  # the imported copy: named nodes, inferred value types
    raised: list[RaisedNode]
    # ONNX operators left for IREE's own lowering after the raised stage, with their counts.
    left_for_iree: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    cache_updates: list[cache_lifetime.CacheUpdate] = dataclasses.field(default_factory=list)
    # The initializers imported as IREE parameters (externalized weights), with their keys.
    parameters: list[onnx_params.Parameter] = dataclasses.field(default_factory=list)
    rewrites: list[str] = dataclasses.field(default_factory=list)  # what kvattn.rewrites did


def run(model: onnx.ModelProto, context: ir.Context, until: str = "input",
        on_stage: Callable[[str, ir.Module], None] | None = None,
        options: LoweringOptions = LoweringOptions(), externalize: bool = False,
        rewritten: list[str] | None = None) -> PipelineResult:
    """Import the (checked) model and run the stages up to and including `until`; `on_stage`
    is called with each stage's name and module as it is reached. With `externalize`, the
    large initializers are imported as IREE parameters (lowering/onnx_params.py). `rewritten`:
    what kvattn.rewrites did to the model (`rewrites.apply`), for the record."""
    if until not in KVATTN_STAGES:
        raise ValueError(f"unknown kvattn stage '{until}'; stages: {', '.join(KVATTN_STAGES)}")
    named = onnx_import.with_node_names(model)
    with context, ir.Location.unknown():
        module, parameters = onnx_import.import_model(named, context, externalize)
        entry = ir.StringAttr(onnx_import.main_function(module).attributes["sym_name"]).value
        result = PipelineResult(module, entry, named, [], parameters=parameters, rewrites=list(rewritten or []))
        if on_stage:
            on_stage("imported", module)
        for stage in KVATTN_STAGES[1:KVATTN_STAGES.index(until) + 1]:
            for pass_name in STAGE_PASSES[stage]:
                outcome = registry.get(pass_name).apply(module, options)
                _record(result, pass_name, outcome)
            if stage == "raised":
                result.left_for_iree = _torch_operators(module)
            if on_stage:
                on_stage(stage, module)
    return result


def _torch_operators(module: ir.Module) -> collections.Counter:
    counts = collections.Counter()
    for func in module.body.operations:
        if func.operation.name != "func.func":  # the parameters' util.globals
            continue
        for op in func.operation.regions[0].blocks[0].operations:
            name = ir.StringAttr(op.operation.attributes["name"]).value if op.operation.name == "torch.operator" else ""
            if name and name != "onnx.Constant":  # initializers import as Constant: data, not nodes
                counts[name.removeprefix("onnx.")] += 1
    return counts


def _record(result: PipelineResult, pass_name: str, outcome) -> None:
    if pass_name == "kvattn-raise-onnx":
        result.raised = [RaisedNode(op.node, op.spec.onnx_op, op.spec.name) for op in outcome]
    elif pass_name == "kvattn-cache-lifetime":
        result.cache_updates = outcome
        decisions = {update.node: update.decision for update in outcome}
        for node in result.raised:
            node.cache = decisions.get(node.node, "")
    elif pass_name == "kvattn-lower-to-iree":
        for node in result.raised:
            node.lowered_to = outcome[node.node].ops
            node.route = "; ".join(outcome[node.node].notes)

