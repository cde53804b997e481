"""Regenerate the mobius fixtures (needs torch, transformers, mobius-onnx, onnxruntime; CI does not).

    pip install torch==2.13.0 transformers==5.24.0 mobius-onnx==0.1.0 onnxscript==0.7.2 onnx onnxruntime
    python tests/models/build_mobius.py

mobius (`mobius-onnx`, onnxruntime's model builder) writes exactly the GenAI operators: it is run
here as its users run it, `mobius build --config DIR OUT [--static-cache]`, on the tiny random-weight
Llama of export_decoders.py (saved with `save_pretrained`, nothing downloaded). Fixtures:

  mobius_llama_default        its default profile: Attention-24 on 3-D Q/K/V with the past/present cache
                              inside the op, RotaryEmbedding-23, RMSNormalization, and onnxruntime's
                              com.microsoft SkipSimplifiedLayerNormalization as a model-local function;
                              inputs input_ids, attention_mask, position_ids, past_key_values.<l>.key/value
                              [batch, 2, past, 16] -> logits, present.<l>.key/value.
  mobius_llama_tensorscatter  `--static-cache --max-seq-len 16`: TensorScatter (axis 1) into 3-D caches
                              key_cache.<l> [batch, 16, 32], `write_indices` and `nonpad_kv_seqlen` [batch]
                              inputs, Attention-24 over the whole buffer with nonpad_kv_seqlen.

  mobius_llama_cpu            `--ep cpu`: onnxruntime's com.microsoft GroupQueryAttention (packed QKV, rotary
                              inside, seqlens_k = sum(attention_mask) - 1: right padding) and the
                              SkipSimplifiedLayerNormalization function; inputs as the default profile's
                              without position_ids. Its cases' outputs are onnxruntime's (transformers
                              pads on the left): checked against transformers on the batch-1 cases.

Each <stem>.npz holds cases as export_decoders.py's do (`case<k>.in.<name>`, `case<k>.out.<i>`);
the outputs are transformers' (the same weights, the same past), and onnxruntime is checked
against them to 1e-4. The weights are moved inline (the files are small).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import export_decoders as ed  # noqa: E402

FIXTURES = ed.FIXTURES
CAPACITY = 16
LAYERS = 2


def mobius_build(model, *flags: str) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory() as work:
        model.save_pretrained(f"{work}/hf")
        subprocess.run(["mobius", "build", "--config", f"{work}/hf", f"{work}/out", *flags], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proto = onnx.load(f"{work}/out/model.onnx")  # reads the external data: inline from here on
    ed.strip_metadata(proto)
    return proto


def default_cases(model):
    """DECODE_CASES as export_decoders.py has them, with the position_ids mobius takes as an input."""
    module = ed.DecodeStep(model)
    cases = []
    for k, (name, *shape) in enumerate(ed.DECODE_CASES):
        ids, mask, *past = ed.decode_inputs(model, torch.Generator().manual_seed(10 + k), *shape)
        inputs = {"input_ids": ids, "attention_mask": mask,
                  "position_ids": ed.positions(mask, past[0].shape[2], ids.shape[1])}
        for layer in range(LAYERS):
            inputs[f"past_key_values.{layer}.key"] = past[2 * layer]
            inputs[f"past_key_values.{layer}.value"] = past[2 * layer + 1]
        cases.append((name, {n: v.numpy() for n, v in inputs.items()}, ed.run_torch(module, None, (ids, mask, *past))))
    return cases


# (name, past length per row, new tokens): rows of a batch hold pasts of different lengths, as a
# static cache does (no padding: each row's valid length is its own nonpad_kv_seqlen).
STATIC_CASES = [("prefill", [0], 5), ("decode", [5], 1), ("batch2_prefill_chunk", [4, 2], 2), ("batch2_decode", [6, 3], 1)]


def static_cases(model):
    """Caches [batch, CAPACITY, kv_heads * 16] with random rows below each row's past length and
    zeros above; the reference runs transformers row by row over that row's past."""
    module = ed.DecodeStep(model)
    heads = ed.kv_heads(model)
    cases = []
    for k, (name, pasts, seq) in enumerate(STATIC_CASES):
        generator = torch.Generator().manual_seed(20 + k)
        batch = len(pasts)
        ids = torch.randint(3, 64, (batch, seq), generator=generator)
        caches = [torch.zeros(batch, CAPACITY, heads * 16) for _ in range(2 * LAYERS)]
        for cache in caches:
            for row, past in enumerate(pasts):
                cache[row, :past] = torch.randn(past, heads * 16, generator=generator)
        rows = []
        for row, past in enumerate(pasts):
            mask = torch.ones(1, past + seq, dtype=torch.int64)
            row_past = [cache[row:row + 1, :past].reshape(1, past, heads, 16).transpose(1, 2) for cache in caches]
            rows.append(ed.run_torch(module, None, (ids[row:row + 1], mask, *row_past)))
        logits = np.concatenate([outputs[0] for outputs in rows])
        updated = []
        for index, cache in enumerate(caches):
            cache = cache.clone().numpy()
            for row, (past, outputs) in enumerate(zip(pasts, rows)):
                present = outputs[1 + index][0]  # [heads, past + seq, 16]
                cache[row, past:past + seq] = present[:, past:].transpose(1, 0, 2).reshape(seq, heads * 16)
            updated.append(cache)
        position_ids = torch.stack([torch.arange(past, past + seq) for past in pasts])
        inputs = {"input_ids": ids.numpy(), "position_ids": position_ids.numpy()}
        for layer in range(LAYERS):
            inputs[f"key_cache.{layer}"] = caches[2 * layer].numpy()
            inputs[f"value_cache.{layer}"] = caches[2 * layer + 1].numpy()
        inputs["write_indices"] = np.array(pasts, np.int64)
        inputs["nonpad_kv_seqlen"] = np.array([past + seq for past in pasts], np.int64)
        cases.append((name, inputs, [logits, *updated]))
    return cases


# (name, past, new tokens, valid tokens per row): right padding, as GroupQueryAttention reads the mask.
CPU_CASES = [("prefill", 0, 5, [5]), ("decode", 5, 1, [6]), ("batch2_rightpad", 0, 4, [4, 2]), ("batch2_decode", 6, 1, [7, 7])]


def cpu_cases(model, proto: onnx.ModelProto, session=None, against_transformers: bool = True):
    import onnxruntime

    session = session or onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    module = ed.DecodeStep(model)
    heads = ed.kv_heads(model)
    cases = []
    for k, (name, past, seq, valid) in enumerate(CPU_CASES):
        generator = torch.Generator().manual_seed(30 + k)
        batch = len(valid)
        ids = torch.randint(3, 64, (batch, seq), generator=generator)
        mask = torch.zeros(batch, past + seq, dtype=torch.int64)
        for row, count in enumerate(valid):
            mask[row, :count] = 1
        pasts = [torch.randn(batch, heads, past, 16, generator=generator) for _ in range(2 * LAYERS)]
        inputs = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        for layer in range(LAYERS):
            inputs[f"past_key_values.{layer}.key"] = pasts[2 * layer].numpy()
            inputs[f"past_key_values.{layer}.value"] = pasts[2 * layer + 1].numpy()
        outputs = session.run(None, inputs)
        if batch == 1 and against_transformers:  # no padding: transformers computes the same
            names = ["logits"] + [f"present.{layer}.{kind}" for layer in range(LAYERS) for kind in ("key", "value")]
            expected = dict(zip(names, ed.run_torch(module, None, (ids, mask, *pasts))))
            error = max(float(np.abs(value - expected[output.name]).max())
                        for value, output in zip(outputs, session.get_outputs()))
            assert error < 1e-4, (name, error)
        cases.append((name, inputs, outputs))
    return cases


def save(stem: str, proto: onnx.ModelProto, cases) -> None:
    path = FIXTURES / f"{stem}.onnx"
    onnx.save(proto, str(path))
    arrays = {}
    for k, (name, inputs, outputs) in enumerate(cases):
        arrays[f"case{k}.name"] = np.array(name)
        arrays.update({f"case{k}.in.{n}": v for n, v in inputs.items()})
        arrays.update({f"case{k}.out.{i}": o for i, o in enumerate(outputs)})
    np.savez(path.with_suffix(".npz"), **arrays)
    print(f"wrote {path.name}", flush=True)


def main() -> None:
    model = ed.build_model("llama", LAYERS)
    save("mobius_llama_default", mobius_build(model), default_cases(model))
    save("mobius_llama_tensorscatter", mobius_build(model, "--static-cache", "--max-seq-len", str(CAPACITY)),
         static_cases(model))
    cpu = mobius_build(model, "--ep", "cpu")
    save("mobius_llama_cpu", cpu, cpu_cases(model, cpu))
    bad = []
    for stem in ("mobius_llama_default", "mobius_llama_tensorscatter", "mobius_llama_cpu"):
        _, errors = ed.check(FIXTURES / f"{stem}.onnx")
        print(f"{stem}: onnxruntime vs transformers, max |error| per case: " + " ".join(f"{e:.1e}" for e in errors))
        bad += [stem] if not all(e <= 1e-4 for e in errors) else []
    print("all match" if not bad else f"MISMATCH: {bad}")


if __name__ == "__main__":
    main()
