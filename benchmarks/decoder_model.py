"""Synthetic Llama-style decoders of a chosen parameter count, built with onnx.helper, their
random weights written straight to ONNX external data (one tensor in memory at a time).

A decode step of `layers` blocks (opset 23): Gather embedding → per block RMSNormalization,
Q/K/V MatMuls, RotaryEmbedding on Q and K, Attention-23 (GQA, causal, past_key/past_value →
present_key/present_value), output MatMul, residual Add, RMSNormalization, SiLU-gated MLP,
residual Add → final RMSNormalization → lm_head MatMul → logits.

    write_decoder(SIZES["1B"], np.float32, "/tmp/big/model.onnx")   # model.onnx + model.onnx.data
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper


@dataclasses.dataclass(frozen=True)
class DecoderSize:
    hidden: int
    layers: int
    q_heads: int
    kv_heads: int
    intermediate: int
    vocab: int = 32000
    max_positions: int = 2048

    @property
    def head_size(self) -> int:
        return self.hidden // self.q_heads


SIZES = {
    "50M": DecoderSize(hidden=512, layers=8, q_heads=8, kv_heads=4, intermediate=1536),
    "500M": DecoderSize(hidden=1536, layers=16, q_heads=12, kv_heads=4, intermediate=4096),
    "1B": DecoderSize(hidden=2048, layers=16, q_heads=16, kv_heads=4, intermediate=7168),
}
ELEMENTS = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16}


class _ExternalWriter:
    """Appends each weight to one external data file and makes its TensorProto point there."""

    def __init__(self, path: pathlib.Path, dtype: np.dtype, seed: int = 0):
        self.file = open(path, "wb")
        self.location = path.name
        self.dtype = dtype
        self.rng = np.random.default_rng(seed)
        self.initializers: list[TensorProto] = []

    def weight(self, name: str, shape: tuple[int, ...], scale: float = 0.02, offset: float = 0.0) -> str:
        array = (self.rng.random(shape, dtype=np.float32) - 0.5) * (2 * scale) + offset
        data = array.astype(self.dtype).tobytes()
        proto = TensorProto(name=name, data_type=ELEMENTS[self.dtype], dims=shape)
        proto.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", self.file.tell()), ("length", len(data))):
            proto.external_data.add(key=key, value=str(value))
        self.file.write(data)
        self.initializers.append(proto)
        return name

    def close(self) -> None:
        self.file.close()


def write_decoder(size: DecoderSize, dtype, path: str | os.PathLike, past: int = 127, seq: int = 1,
                  plain: bool = False) -> pathlib.Path:
    """Write the decode-step model to `path` and its weights to `path` + '.data'. `plain`: the same
    graph without the GenAI operators stock IREE cannot compile (norms become a Mul by their
    weight, no RotaryEmbedding, no caches; Attention becomes a Concat of Q, K and V, so o_proj
    takes (q_heads + 2·kv_heads)·head rows: 3% more parameters at 1B)."""
    dtype = np.dtype(dtype)
    path = pathlib.Path(path)
    writer = _ExternalWriter(path.with_name(path.name + ".data"), dtype)
    element = ELEMENTS[dtype]
    h, d, hq, hkv = size.hidden, size.head_size, size.q_heads, size.kv_heads
    nodes, inputs, outputs = [], [], []
    node = lambda *args, **kwargs: nodes.append(helper.make_node(*args, **kwargs))  # noqa: E731
    tensor = helper.make_tensor_value_info

    def norm(value, weight, out):
        if plain:
            node("Mul", [value, weight], [out])
        else:
            node("RMSNormalization", [value, weight], [out], epsilon=1e-5)

    inputs.append(tensor("input_ids", TensorProto.INT64, [1, seq]))
    if not plain:
        inputs.append(tensor("position_ids", TensorProto.INT64, [1, seq]))
    positions = np.arange(size.max_positions, dtype=np.float32)[:, None]
    frequencies = 1.0 / (10000.0 ** (np.arange(0, d, 2, dtype=np.float32) / d))
    angles = positions * frequencies[None, :]
    for name, values in () if plain else (("cos_cache", np.cos(angles)), ("sin_cache", np.sin(angles))):
        proto = onnx.numpy_helper.from_array(values.astype(dtype), name)
        writer.initializers.append(proto)  # small (max_positions × head/2): kept in the .onnx
    node("Gather", [writer.weight("embed_tokens", (size.vocab, h)), "input_ids"], ["x0"])
    x = "x0"
    for layer in range(size.layers):
        p = f"layers.{layer}."
        norm(x, writer.weight(p + "input_norm", (h,), 0.1, 1.0), p + "h")
        for proj, width in (("q", hq * d), ("k", hkv * d), ("v", hkv * d)):
            node("MatMul", [p + "h", writer.weight(p + f"{proj}_proj", (h, width))], [p + proj])
        if plain:
            node("Concat", [p + "q", p + "k", p + "v"], [p + "attn"], axis=-1)
        else:
            for proj, heads in (("q", hq), ("k", hkv)):
                node("RotaryEmbedding", [p + proj, "cos_cache", "sin_cache", "position_ids"], [p + proj + "_rot"],
                     num_heads=heads)
            cache = [1, hkv, past, d]
            inputs += [tensor(f"past_key.{layer}", element, cache), tensor(f"past_value.{layer}", element, cache)]
            outputs += [tensor(f"present_key.{layer}", element, [1, hkv, past + seq, d]),
                        tensor(f"present_value.{layer}", element, [1, hkv, past + seq, d])]
            node("Attention", [p + "q_rot", p + "k_rot", p + "v", "", f"past_key.{layer}", f"past_value.{layer}"],
                 [p + "attn", f"present_key.{layer}", f"present_value.{layer}"],
                 q_num_heads=hq, kv_num_heads=hkv, is_causal=1, softmax_precision=TensorProto.FLOAT)
        node("MatMul", [p + "attn", writer.weight(p + "o_proj", ((hq + 2 * hkv if plain else hq) * d, h))], [p + "o"])
        node("Add", [x, p + "o"], [p + "x1"])
        norm(p + "x1", writer.weight(p + "post_norm", (h,), 0.1, 1.0), p + "h2")
        node("MatMul", [p + "h2", writer.weight(p + "gate_proj", (h, size.intermediate))], [p + "gate"])
        node("MatMul", [p + "h2", writer.weight(p + "up_proj", (h, size.intermediate))], [p + "up"])
        node("Sigmoid", [p + "gate"], [p + "gate_sigmoid"])
        node("Mul", [p + "gate", p + "gate_sigmoid"], [p + "silu"])
        node("Mul", [p + "silu", p + "up"], [p + "mlp_in"])
        node("MatMul", [p + "mlp_in", writer.weight(p + "down_proj", (size.intermediate, h))], [p + "down"])
        node("Add", [p + "x1", p + "down"], [p + "x2"])
        x = p + "x2"
    norm(x, writer.weight("final_norm", (h,), 0.1, 1.0), "final")
    node("MatMul", ["final", writer.weight("lm_head", (h, size.vocab))], ["logits"])
    outputs.insert(0, tensor("logits", element, [1, seq, size.vocab]))
    writer.close()
    graph = helper.make_graph(nodes, "decoder", inputs, outputs, initializer=writer.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    onnx.save(model, path)
    return path


def decode_inputs(size: DecoderSize, dtype, past: int = 127, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for one decode step of the model `write_decoder` wrote (token at position `past`)."""
    rng = np.random.default_rng(seed)
    inputs = {"input_ids": rng.integers(0, size.vocab, (1, 1), dtype=np.int64),
              "position_ids": np.array([[past]], np.int64)}
    cache = (1, size.kv_heads, past, size.head_size)
    for layer in range(size.layers):
        for kind in ("key", "value"):
            inputs[f"past_{kind}.{layer}"] = rng.standard_normal(cache, dtype=np.float32).astype(dtype)
    return inputs
