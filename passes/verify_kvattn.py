"""Verify every kvattn op against its op spec (shapes, dtypes, attribute values).

No rewrite: a violation raises an error that names the ONNX node and what is wrong with it.
"""

from __future__ import annotations

from iree.compiler import ir

from kvattn.lowering import dialect


def verify_kvattn_ops(module: ir.Module) -> None:
    for op in dialect.kvattn_ops(module):
        op.verify()
