"""Regenerate the fixtures that onnxruntime's converters make of an exported decoder (needs onnxruntime
only; CI does not run this).

    python tests/models/build_converted.py

  llama_opset24_ortfp16  onnxruntime.transformers.float16.convert_float_to_float16(llama_opset24_decode,
                         keep_io_types=True), as users run it: fp16 weights and compute, f32 inputs and
                         outputs, Casts at the boundary; its nodes are not topologically sorted
                         (onnxruntime runs that; kvattn sorts them). Its cases are llama_opset24_decode's
                         inputs with onnxruntime's outputs of the converted model (torch's fp32
                         outputs are within fp16 rounding of them, not within 1e-4).
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime
from onnxruntime.transformers.float16 import convert_float_to_float16

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def main() -> None:
    source = FIXTURES / "llama_opset24_decode"
    target = FIXTURES / "llama_opset24_ortfp16"
    converted = convert_float_to_float16(onnx.load(source.with_suffix(".onnx")), keep_io_types=True)
    onnx.save(converted, str(target.with_suffix(".onnx")))
    session = onnxruntime.InferenceSession(str(target.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    data = dict(np.load(source.with_suffix(".npz")))
    case = 0
    while f"case{case}.name" in data:
        inputs = {i.name: data[f"case{case}.in.{i.name}"] for i in session.get_inputs()}
        for index, output in enumerate(session.run(None, inputs)):
            error = float(np.abs(output - data[f"case{case}.out.{index}"]).max())
            assert error < 5e-3, (case, index, error)  # fp16 rounding of the fp32 model's outputs
            data[f"case{case}.out.{index}"] = output
        case += 1
    np.savez(target.with_suffix(".npz"), **data)
    print(f"wrote {target.name} ({case} cases)")


if __name__ == "__main__":
    main()
