"""Regenerate the exported-decoder fixtures (needs torch, transformers, onnxscript; CI does not).

    pip install torch==2.13.0 transformers onnxscript
    python tests/models/export_decoders.py

Tiny random-weight decoders (weights from a seeded config; nothing is downloaded), exported with
`torch.onnx.export(..., dynamo=True)` at opsets 23, 24 and 25 with static shapes, each as a
prefill (input_ids [1, 6], no cache) and as a decode step (one token over a 5-token past KV
cache, returning the present caches):
  llama  Llama-style: GQA 4 query / 2 KV heads, RMSNorm, SiLU MLP
  qwen2  Qwen-style: as Llama plus biases on the Q/K/V projections
  gemma  Gemma-style: GQA 4 / 1 (MQA), head size 16 > hidden/heads, GELU, scaled embeddings
Writes fixtures/<arch>_opset<N>_<prefill|decode>.onnx and .npz (inputs as in_<name>, torch's
outputs as out_<index>).
"""

from __future__ import annotations

import itertools
import pathlib

import numpy as np
import torch
from transformers import (DynamicCache, GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
COMMON = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, max_position_embeddings=64)
ARCHITECTURES = {
    "llama": (LlamaForCausalLM, LlamaConfig(num_attention_heads=4, num_key_value_heads=2, **COMMON)),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(num_attention_heads=4, num_key_value_heads=2, **COMMON)),
    "gemma": (GemmaForCausalLM, GemmaConfig(num_attention_heads=4, num_key_value_heads=1, head_dim=16, **COMMON)),
}
PROMPT, PAST = 6, 5


class DecodeStep(torch.nn.Module):
    """One token over an explicit past cache: (ids, mask, past k/v per layer) → (logits, present k/v)."""

    def __init__(self, model, config):
        super().__init__()
        self.model, self.config = model, config

    def forward(self, input_ids, attention_mask, *past):
        cache = DynamicCache(config=self.config)
        for layer in range(self.config.num_hidden_layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


class Prefill(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False).logits


def export(arch: str, opset: int, step: str) -> None:
    model_class, config = ARCHITECTURES[arch]
    torch.manual_seed(0)
    model = model_class(config).eval()
    generator = torch.Generator().manual_seed(1)
    if step == "prefill":
        module, names = Prefill(model), ["input_ids"]
        args = (torch.randint(0, config.vocab_size, (1, PROMPT), generator=generator),)
    else:
        module = DecodeStep(model, config)
        head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        past = [torch.randn(1, config.num_key_value_heads, PAST, head, generator=generator)
                for _ in range(2 * config.num_hidden_layers)]
        args = (torch.randint(0, config.vocab_size, (1, 1), generator=generator),
                torch.ones(1, PAST + 1, dtype=torch.int64), *past)
        names = ["input_ids", "attention_mask"] + [f"past_{kind}_{layer}" for layer in range(config.num_hidden_layers)
                                                    for kind in ("key", "value")]
    with torch.no_grad():
        outputs = module(*args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    stem = FIXTURES / f"{arch}_opset{opset}_{step}"
    program = torch.onnx.export(module, args, input_names=names, dynamo=True, opset_version=opset)
    program.save(str(stem.with_suffix(".onnx")))
    np.savez(stem.with_suffix(".npz"), **{f"in_{n}": a.numpy() for n, a in zip(names, args)},
             **{f"out_{i}": o.numpy() for i, o in enumerate(outputs)})
    print(f"wrote {stem.name}")


def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    for arch, opset, step in itertools.product(ARCHITECTURES, (23, 24, 25), ("prefill", "decode")):
        export(arch, opset, step)


if __name__ == "__main__":
    main()
