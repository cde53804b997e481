"""Export the decoder that benchmarks/generate_speed.py runs (needs torch, transformers, onnxscript;
the benchmark itself and CI do not):

    python3 -m venv /tmp/exportenv
    /tmp/exportenv/bin/pip install torch transformers==5.24.0 onnxscript==0.7.2 onnx onnxruntime
    /tmp/exportenv/bin/python -m benchmarks.export_generate_model [--out ~/.cache/kvattn-bench/llama-1024x8]

A Llama-style decoder of realistic width with random weights (`torch.manual_seed(0)`, transformers'
own init; nothing is downloaded): hidden 1024, 8 layers, 16 query / 4 KV heads, head 64,
intermediate 2816, vocab 32000, fp32 (623 MB of weights). It is exported exactly as the test
fixtures are (tests/models/export_decoders.py: its `DecodeStep` wrapper over a concat DynamicCache,
`torch.onnx.export(..., dynamo=True)` with symbolic batch / seq / past_seq / total_seq dims, opset 23,
so onnxscript fuses RMSNormalization and RotaryEmbedding, SDPA attention → Attention-23), per-node
metadata stripped, the weights in ONNX external data (`model.onnx` + `model.onnx.data`).

Beside the model it writes `reference.npz`: torch's greedy ids for the benchmark's prompt
(`prompt_ids`, below) and its first logits, so the benchmark can check every engine against torch too.
The file is large (not committed); the benchmark finds it at the default --out.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

OPSET = 23
CONFIG = dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
              num_attention_heads=16, num_key_value_heads=4, head_dim=64, max_position_embeddings=8192,
              pad_token_id=0, bos_token_id=1, eos_token_id=2)
PROMPT_LENGTH = 512
NEW_TOKENS = 128
DEFAULT_OUT = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "kvattn-bench" / \
    "llama-1024x8"


def prompt_ids(length: int = PROMPT_LENGTH, seed: int = 0) -> np.ndarray:
    """int64 [1, length]: the benchmark's prompt, random ids in [3, vocab)."""
    return np.random.default_rng(seed).integers(3, CONFIG["vocab_size"], (1, length), dtype=np.int64)


def cache_names(prefix: str) -> list[str]:
    return [f"{prefix}_{kind}_{layer}" for layer in range(CONFIG["num_hidden_layers"]) for kind in ("key", "value")]


def weight_bytes() -> int:
    """fp32 bytes of all weights (embedding, layers, final norm, untied lm_head)."""
    h, i, v, layers = (CONFIG[k] for k in ("hidden_size", "intermediate_size", "vocab_size", "num_hidden_layers"))
    kv = CONFIG["num_key_value_heads"] * CONFIG["head_dim"]
    q = CONFIG["num_attention_heads"] * CONFIG["head_dim"]
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
    return 4 * (2 * v * h + layers * per_layer + h)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="directory (default %(default)s)")
    args = parser.parse_args(argv)

    import onnx
    import torch
    import transformers
    from torch.export import Dim

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from tests.models import export_decoders  # the fixtures' wrapper and export call

    started = time.perf_counter()
    config = transformers.LlamaConfig(**CONFIG)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    module = export_decoders.DecodeStep(model)
    layers, kv_heads, head = CONFIG["num_hidden_layers"], CONFIG["num_key_value_heads"], CONFIG["head_dim"]

    batch, past, seq = export_decoders.EXAMPLE  # no dim 0 or 1: none specializes
    generator = torch.Generator().manual_seed(1)
    example = (torch.randint(3, CONFIG["vocab_size"], (batch, seq), generator=generator),
               torch.ones(batch, past + seq, dtype=torch.int64),
               *[torch.randn(batch, kv_heads, past, head, generator=generator) for _ in range(2 * layers)])
    shapes = ({0: Dim("batch"), 1: Dim("seq")}, {0: Dim("batch"), 1: Dim("total_seq")},
              tuple({0: Dim("batch"), 2: Dim("past_seq")} for _ in range(2 * layers)))
    names = ["input_ids", "attention_mask", *cache_names("past")]
    with torch.no_grad():
        proto = export_decoders.torch_export(module, example, names, ["logits", *cache_names("present")], shapes,
                                             OPSET)
    export_decoders.strip_metadata(proto)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "model.onnx"
    for old in (path, path.with_suffix(".onnx.data")):
        old.unlink(missing_ok=True)
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=1024)
    print(f"wrote {path} (+ model.onnx.data, {path.with_suffix('.onnx.data').stat().st_size / 1e6:.0f} MB) "
          f"in {time.perf_counter() - started:.0f} s", flush=True)

    # torch's greedy generation over the same wrapper, for the benchmark's check.
    ids = torch.from_numpy(prompt_ids())
    past = [torch.zeros(1, kv_heads, 0, head) for _ in range(2 * layers)]
    mask = torch.ones(1, 0, dtype=torch.int64)
    new, first_logits, tokens = [], None, ids
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            mask = torch.ones(1, mask.shape[1] + tokens.shape[1], dtype=torch.int64)
            logits, *past = module(tokens, mask, *past)
            if first_logits is None:
                first_logits = logits[0, -1].numpy()
            tokens = logits[:, -1].argmax(-1, keepdim=True)
            new.append(int(tokens))
    np.savez(args.out / "reference.npz", prompt_ids=prompt_ids(), new_ids=np.array(new, np.int64),
             first_logits=first_logits)

    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": prompt_ids(), "attention_mask": np.ones((1, PROMPT_LENGTH), np.int64),
             **{name: np.zeros((1, kv_heads, 0, head), np.float32) for name in cache_names("past")}}
    got = session.run(["logits"], feeds)[0][0, -1]
    error = float(np.abs(got - first_logits).max())
    print(f"torch greedy ids (first 16): {new[:16]}; onnxruntime prefill logits vs torch: max |error| {error:.1e} "
          f"(logits scale {np.abs(first_logits).max():.2f})")
    print(f"wrote {args.out / 'reference.npz'}; total {time.perf_counter() - started:.0f} s")
    return 0 if error < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
