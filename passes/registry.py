"""The pass registry: every named pass kvattn runs, for the pipeline and for kvattn-opt.

A pass takes an `ir.Module` and rewrites it in place; its docstring (the rewrite it performs)
is the module docstring of the file that implements it.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Callable

from iree.compiler import ir

from kvattn.lowering import lower_to_iree, raise_onnx
from kvattn.lowering.options import LoweringOptions
from kvattn.passes import (cache_lifetime, fuse_qdq, hoist_valid_lengths, iree_input, private_sort_operands,
                           unambiguous_views, verify_kvattn)


@dataclasses.dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[..., object]  # run(module) or, when takes_options, run(module, options)
    implementation: ModuleType
    takes_options: bool = False

    def apply(self, module: ir.Module, options: LoweringOptions):
        return self.run(module, options) if self.takes_options else self.run(module)

    @property
    def summary(self) -> str:
        return (self.implementation.__doc__ or "").strip().splitlines()[0]


PASSES: dict[str, Pass] = {
    p.name: p
    for p in (
        Pass("kvattn-raise-onnx", raise_onnx.raise_onnx_ops, raise_onnx),
        Pass("kvattn-fuse-qdq", fuse_qdq.fuse_qdq, fuse_qdq),
        Pass("kvattn-verify", verify_kvattn.verify_kvattn_ops, verify_kvattn),
        Pass("kvattn-cache-lifetime", cache_lifetime.decide_cache_lifetimes, cache_lifetime),
        Pass("kvattn-lower-to-iree", lower_to_iree.lower_kvattn_ops, lower_to_iree, takes_options=True),
        Pass("iree-torch-to-input", iree_input.lower_torch_to_iree_input, iree_input),
        # Steps of iree-torch-to-input, by themselves for kvattn-opt and the lit tests.
        Pass("kvattn-flatten-ambiguous-views", unambiguous_views.flatten_ambiguous_views, unambiguous_views),
        Pass("kvattn-fresh-sort-operands", private_sort_operands.give_sorts_fresh_operands, private_sort_operands),
        Pass("kvattn-hoist-valid-lengths", hoist_valid_lengths.hoist_valid_lengths, hoist_valid_lengths),
    )
}


def get(name: str) -> Pass:
    if name not in PASSES:
        raise KeyError(f"unknown pass '{name}'; known passes: {', '.join(PASSES)}")
    return PASSES[name]
