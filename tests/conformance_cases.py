"""The official ONNX node tests (onnx.backend.test.case.node), non-expanded, by operator.

`collect_testcases` only applies its op filter on its first call in a process, so all cases
are collected once and filtered here by the operator of the model's (single) node.
"""

from __future__ import annotations

import functools
import warnings

from onnx.backend.test.case.node import collect_testcases


@functools.cache
def _all_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(collect_testcases())


def node_cases(op_type: str):
    return [case for case in _all_cases()
            if "expanded" not in case.name and case.model.graph.node[0].op_type == op_type]
