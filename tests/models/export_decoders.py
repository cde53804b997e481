"""Regenerate the exported-decoder fixtures (needs torch, transformers, onnxscript, onnxruntime; CI does not).

    pip install torch==2.14.1 transformers==5.24.0 onnxscript==0.7.2 onnx onnxruntime
    python tests/models/export_decoders.py            # export, check with onnxruntime, print a table
    python tests/models/export_decoders.py --check    # only re-check the committed fixtures
    python tests/models/export_decoders.py --only gpt2_opset24_decode   # export (and check) just these

Tiny random-weight decoders (vocab 64, hidden 32, intermediate 64, head size 16, weights from
`torch.manual_seed(0)`; nothing is downloaded), exported the way real exporters emit them: with
`torch.onnx.export(..., dynamo=True, dynamic_shapes=...)` (default optimize=True) and symbolic
`batch` / `seq` / `past_seq` / `total_seq` dims, so one file serves every shape.
Architectures:
  llama    GQA 4 query / 2 KV heads, RMSNorm, SiLU MLP
  qwen2    as llama plus biases on the Q/K/V projections
  qwen3    as llama plus RMSNorm on Q and K (q/k norm)
  gemma2   GQA 4 / 2, attention and final logit softcapping, sliding window 4 on every other layer
  gemma3   q/k norm, sliding window 4 on layer 0, local + global rope bases
  phi3     fused QKV and gate/up projections, GQA 2 / 1
  mistral  sliding window 4 on every layer
  gpt2     MHA 2 heads, learned positions, LayerNorm, Conv1D projections (Gemm after a Reshape to 2D)
  mixtral  MoE: 4 experts, top-2 routing (Softmax, TopK), GQA 4 / 2
  qwen2moe MoE as mixtral plus a gated shared expert
  gptoss   MoE with attention sinks and biased experts, sliding window 4 on every other layer (eager)
MoE experts export with `experts_implementation="batched_mm"` (TopK + GatherND routing; transformers'
default experts op does not export).
Variants (fixtures/<arch>_opset<N>_<variant>.onnx):
  decode        (input_ids [batch, seq], attention_mask [batch, total_seq], past_key_<l>, past_value_<l>
                [batch, kv_heads, past_seq, 16] ...) -> (logits, present_key_<l>, present_value_<l> ...), a
                transformers DynamicCache built from the past inputs (concat cache). The same file runs the
                prefill (past_seq = 0) and every decode step.
  nocache       (input_ids [batch, seq], attention_mask [batch, seq]) -> logits, use_cache=False.
  *_eager       the same with attn_implementation="eager" (float mask, softmax written out) instead of "sdpa".
  static        a transformers StaticCache of 16 slots: (input_ids [batch, seq], attention_mask [batch, 16],
                past_length (rank 0), key_<l>, value_<l> [batch, kv_heads, 16, 16] ...) -> (logits, key_<l>,
                value_<l> ...); the cache write is `index_copy_` (ScatterND).
  hf            transformers' own exporter (`transformers.exporters.OnnxExporter`, `OnnxConfig(dynamic=True)`) on
                the model with (input_ids, attention_mask, DynamicCache(config)): inputs
                `input.cache.layers.<l>.keys/values` (+ rank-0 `_sliding_window_tensor` for sliding layers), outputs
                `output.cache.layers...`, dims it names itself (`s17`, ...; a sliding layer's past gets its own symbol). Positions are the
                model's own `arange` (its rotary is not fused, so batch > 1 runs).
  hf_static     transformers' own exporter on the model with a StaticCache of 16 slots (laid out as the
                static variant's): inputs `input.cache.layers.<l>.keys/values` [batch, 2, 16, 16] (dims named
                '2', '16') and rank-0 `cumulative_length`, a mask over every slot; its cache write is an
                index_put (ScatterND of the new rows broadcast with Expand).
The decode/nocache/static wrappers pass position_ids [batch, seq] computed from attention_mask as `generate` does.
onnxscript 0.7 fuses RotaryEmbedding and RMSNormalization only at opset 23; at 24 and 25 they stay decomposed.
Per-node metadata (stack traces, FX names, local paths) is stripped to keep the files small; the graph is
as exported. Each <stem>.npz holds several input cases: `case<k>.name`, `case<k>.in.<input name>` and
`case<k>.out.<output index>` (torch's outputs from the same module). Every case is checked with onnxruntime
(CPU) against torch to 1e-4.
"""

from __future__ import annotations

import collections
import pathlib
import sys

import numpy as np
import onnx
import onnx_ir
import torch
import transformers
from torch.export import Dim
from transformers import DynamicCache, StaticCache

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
COMMON = dict(vocab_size=64, hidden_size=32, intermediate_size=64, max_position_embeddings=64, head_dim=16,
              pad_token_id=0, bos_token_id=1, eos_token_id=2)
ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=2)),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", dict(num_attention_heads=4, num_key_value_heads=2)),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(num_attention_heads=4, num_key_value_heads=2)),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", dict(num_attention_heads=4, num_key_value_heads=2,
                                                         sliding_window=4)),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", dict(num_attention_heads=4, num_key_value_heads=2,
                                                             sliding_window=4,
                                                             layer_types=["sliding_attention", "full_attention"])),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", dict(num_attention_heads=2, num_key_value_heads=1)),
    "mistral": ("MistralForCausalLM", "MistralConfig", dict(num_attention_heads=4, num_key_value_heads=2,
                                                            sliding_window=4)),
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", dict(num_attention_heads=2, n_inner=64)),
    "mixtral": ("MixtralForCausalLM", "MixtralConfig", dict(num_attention_heads=4, num_key_value_heads=2,
                                                            num_local_experts=4, num_experts_per_tok=2,
                                                            experts_implementation="batched_mm")),
    "qwen2moe": ("Qwen2MoeForCausalLM", "Qwen2MoeConfig", dict(num_attention_heads=4, num_key_value_heads=2,
                                                               num_experts=4, num_experts_per_tok=2,
                                                               moe_intermediate_size=32,
                                                               shared_expert_intermediate_size=64,
                                                               experts_implementation="batched_mm")),
    "gptoss": ("GptOssForCausalLM", "GptOssConfig", dict(num_attention_heads=4, num_key_value_heads=2,
                                                         num_local_experts=4, num_experts_per_tok=2,
                                                         sliding_window=4, experts_implementation="batched_mm")),
}
# (arch, opset, variant, layers). Gemma2 has no SDPA path in transformers 5.24 (its constructor raises
# "Gemma2ForCausalLM does not support an attention implementation through
# torch.nn.functional.scaled_dot_product_attention yet"), so its fixtures are eager only.
FIXTURE_LIST = [
    ("llama", 23, "decode", 2), ("llama", 24, "decode", 2), ("llama", 25, "decode", 2),
    ("qwen2", 24, "decode", 2), ("qwen3", 25, "decode", 2), ("gemma2", 23, "decode_eager", 2),
    ("gemma3", 24, "decode", 2), ("phi3", 25, "decode", 2), ("mistral", 23, "decode", 2),
    ("llama", 24, "nocache", 1), ("qwen3", 23, "nocache", 1), ("gemma2", 25, "nocache_eager", 2),
    ("llama", 25, "static", 2), ("qwen2", 23, "static", 1),
    ("llama", 24, "hf", 2), ("gemma2", 25, "hf_eager", 2),
    ("gpt2", 24, "decode", 2), ("mixtral", 24, "decode", 2), ("qwen2moe", 24, "decode", 2),
    ("gptoss", 24, "decode_eager", 2), ("llama", 24, "hf_static", 2),
]
STATIC_LEN = 16
# (name, batch, past, new tokens, left-padding of row 1)
DECODE_CASES = [("prefill", 1, 0, 5, 0), ("decode", 1, 5, 1, 0), ("batch2_leftpad", 2, 4, 2, 3),
                ("batch2_decode", 2, 6, 1, 0)]
NOCACHE_CASES = [("prompt", 1, 0, 5, 0), ("batch2_leftpad", 2, 0, 4, 2), ("single_token", 1, 0, 1, 0)]
EXAMPLE = (2, 5, 3)  # batch, past, seq of the export's example inputs: no dim equal to 0 or 1, so none specializes


def build_model(arch: str, layers: int, attn_implementation: str = "sdpa"):
    model_class, config_class, extra = ARCHITECTURES[arch]
    config = getattr(transformers, config_class)(num_hidden_layers=layers, **COMMON, **extra)
    if "layer_types" in extra:
        config.layer_types = extra["layer_types"][:layers]
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    return getattr(transformers, model_class)(config).eval()


def kv_heads(model) -> int:
    return getattr(model.config, "num_key_value_heads", model.config.num_attention_heads)


def cache_names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}_{kind}_{layer}" for layer in range(layers) for kind in ("key", "value")]


def positions(attention_mask, start, seq: int):
    """position_ids [batch, seq] as `generate` makes them: count of unmasked tokens before each, from `start`.

    Passing them (rather than letting the model use `arange`, shape [1, seq]) matters: onnxscript fuses the rotary
    into RotaryEmbedding with cos/sin caches of batch 1, which the op (and onnxruntime) reject for batch > 1.
    """
    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
    index = (torch.arange(seq) + start).expand(attention_mask.shape[0], seq)
    return torch.gather(position_ids, 1, index)


class DecodeStep(torch.nn.Module):
    """(ids, mask, past k/v per layer) → (logits, present k/v per layer) over a concat DynamicCache."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, *past):
        # Plain DynamicLayers (no config): sliding-window layers keep the whole past, the mask applies the window.
        cache = DynamicCache()
        for layer in range(self.model.config.num_hidden_layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        position_ids = positions(attention_mask, past[0].shape[2], input_ids.shape[1])
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                         use_cache=True)
        return (out.logits, *[t for layer in out.cache.layers for t in (layer.keys, layer.values)])


class NoCache(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        position_ids = positions(attention_mask, 0, input_ids.shape[1])
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).logits


class StaticStep(torch.nn.Module):
    """(ids, mask over all slots, past length, k/v slots per layer) → (logits, updated k/v slots) via a StaticCache."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, past_length, *slots):
        cache = static_cache(self.model, slots, past_length)
        position_ids = positions(attention_mask, past_length, input_ids.shape[1])
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                         use_cache=True)
        return (out.logits, *[t for layer in cache.layers for t in (layer.keys, layer.values)])


def ids_and_mask(generator, batch: int, past: int, seq: int, pad: int):
    """Random ids [batch, seq] and a mask [batch, past + seq] with the first `pad` positions of row 1 masked."""
    ids = torch.randint(3, 64, (batch, seq), generator=generator)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    if pad:
        mask[1, :pad] = 0
    return ids, mask


def decode_inputs(model, generator, batch, past, seq, pad):
    ids, mask = ids_and_mask(generator, batch, past, seq, pad)
    caches = [torch.randn(batch, kv_heads(model), past, 16, generator=generator)
              for _ in range(2 * model.config.num_hidden_layers)]
    return (ids, mask, *caches)


def static_inputs(model, generator, batch, past, seq, pad):
    ids, mask = ids_and_mask(generator, batch, past, seq, pad)
    mask = torch.nn.functional.pad(mask, (0, STATIC_LEN - past - seq))
    slots = []
    for _ in range(2 * model.config.num_hidden_layers):
        slot = torch.zeros(batch, kv_heads(model), STATIC_LEN, 16)
        slot[:, :, :past] = torch.randn(batch, kv_heads(model), past, 16, generator=generator)
        slots.append(slot)
    return (ids, mask, torch.tensor(past, dtype=torch.int64), *slots)


def torch_export(module, args, names, output_names, dynamic_shapes, opset: int) -> onnx.ModelProto:
    program = torch.onnx.export(module.eval(), args, input_names=names, output_names=output_names, dynamo=True,
                                opset_version=opset, dynamic_shapes=dynamic_shapes)
    return program.model_proto


def export_decode(model, opset: int):
    layers = model.config.num_hidden_layers
    batch, seq, past_seq, total = Dim("batch"), Dim("seq"), Dim("past_seq"), Dim("total_seq")
    shapes = ({0: batch, 1: seq}, {0: batch, 1: total}, tuple({0: batch, 2: past_seq} for _ in range(2 * layers)))
    b, p, s = EXAMPLE
    module = DecodeStep(model)
    args = decode_inputs(model, torch.Generator().manual_seed(1), b, p, s, 0)
    names = ["input_ids", "attention_mask", *cache_names(layers, "past")]
    proto = torch_export(module, args, names, ["logits", *cache_names(layers, "present")], shapes, opset)
    cases = [(name, decode_inputs(model, torch.Generator().manual_seed(10 + k), *shape))
             for k, (name, *shape) in enumerate(DECODE_CASES)]
    return module, proto, names, cases


def export_nocache(model, opset: int):
    batch, seq = Dim("batch"), Dim("seq")
    b, _, s = EXAMPLE
    module = NoCache(model)
    args = ids_and_mask(torch.Generator().manual_seed(1), b, 0, s, 0)
    names = ["input_ids", "attention_mask"]
    proto = torch_export(module, args, names, ["logits"], ({0: batch, 1: seq}, {0: batch, 1: seq}), opset)
    cases = [(name, ids_and_mask(torch.Generator().manual_seed(10 + k), *shape))
             for k, (name, *shape) in enumerate(NOCACHE_CASES)]
    return module, proto, names, cases


def export_static(model, opset: int):
    layers = model.config.num_hidden_layers
    batch, seq = Dim("batch"), Dim("seq")
    shapes = ({0: batch, 1: seq}, {0: batch}, None, tuple({0: batch} for _ in range(2 * layers)))
    b, p, s = EXAMPLE
    module = StaticStep(model)
    args = static_inputs(model, torch.Generator().manual_seed(1), b, p, s, 0)
    names = ["input_ids", "attention_mask", "past_length", *cache_names(layers, "past")]
    proto = torch_export(module, args, names, ["logits", *cache_names(layers, "present")], shapes, opset)
    cases = [(name, static_inputs(model, torch.Generator().manual_seed(10 + k), *shape))
             for k, (name, *shape) in enumerate(DECODE_CASES)]
    return module, proto, names, cases


def export_hf(model, opset: int):
    from transformers.exporters import OnnxConfig, OnnxExporter

    b, p, s = EXAMPLE
    ids, mask, *past = decode_inputs(model, torch.Generator().manual_seed(1), b, p, s, 0)
    sample = dict(input_ids=ids, attention_mask=mask, cache=filled_cache(model, past), use_cache=True)
    exported = OnnxExporter().export(model, sample, config=OnnxConfig(dynamic=True, opset_version=opset))
    proto = onnx_ir.serde.serialize_model(exported.program)
    names = [value.name for value in proto.graph.input]
    module = HfReference(model, [value.name for value in proto.graph.output])
    cases = []
    for k, (name, *shape) in enumerate(DECODE_CASES):
        ids, mask, *past = decode_inputs(model, torch.Generator().manual_seed(10 + k), *shape)
        cases.append((name, hf_inputs(names, ids, mask, filled_cache(model, past))))
    return module, proto, names, cases


def filled_cache(model, past, config: bool = True) -> DynamicCache:
    """A DynamicCache holding `past` whole: a sliding-window layer (with `config`) would keep only its window, but
    the exported graph returns every layer's full concat, which is what the next step feeds back."""
    cache = DynamicCache(config=model.config) if config else DynamicCache()
    for layer in range(model.config.num_hidden_layers):
        cache.update(past[2 * layer], past[2 * layer + 1], layer)
        cache.layers[layer].keys, cache.layers[layer].values = past[2 * layer], past[2 * layer + 1]
    return cache


def hf_inputs(names: list[str], ids, mask, cache) -> dict[str, torch.Tensor]:
    """The exporter's inputs are the cache's flattened fields: `input.cache.layers.<l>.<field>`."""
    values = {"input_ids": ids, "attention_mask": mask}
    for name in names[2:]:
        _, _, _, layer, field = name.split(".")
        values[name] = getattr(cache.layers[int(layer)], field)
    return values


class HfReference(torch.nn.Module):
    """What the transformers exporter traced: the model itself on (ids, mask, cache), no position_ids. Its export
    patch traces sliding-window layers as full DynamicLayers, so the reference uses plain DynamicLayers too; other
    cache fields (`_sliding_window_tensor`) pass through."""

    def __init__(self, model, output_names: list[str]):
        super().__init__()
        self.model, self.output_names = model, output_names

    def forward(self, **inputs):
        layers = range(self.model.config.num_hidden_layers)
        past = [inputs[f"input.cache.layers.{layer}.{field}"] for layer in layers for field in ("keys", "values")]
        out = self.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                         cache=filled_cache(self.model, past, config=False), use_cache=True)
        outputs = [out.logits]
        for name in self.output_names[1:]:
            _, _, _, layer, field = name.split(".")
            if field in ("keys", "values"):
                outputs.append(getattr(out.cache.layers[int(layer)], field))
            else:
                outputs.append(inputs[f"input.cache.layers.{layer}.{field}"])
        return tuple(outputs)


def static_cache(model, slots, past_length) -> StaticCache:
    """A StaticCache of STATIC_LEN slots holding `slots` (k, v per layer), `past_length` of them used."""
    cache = StaticCache(config=model.config, max_cache_len=STATIC_LEN)
    for index, layer in enumerate(cache.layers):
        keys, values = slots[2 * index].clone(), slots[2 * index + 1].clone()
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values, layer.cumulative_length = keys, values, past_length.clone()
    return cache


class HfStaticReference(torch.nn.Module):
    """What the transformers exporter traced with a StaticCache: the model on (ids, mask over the slots,
    cache), returning the logits and every cache field the export returns."""

    def __init__(self, model, output_names: list[str]):
        super().__init__()
        self.model, self.output_names = model, output_names

    def forward(self, **inputs):
        layers = range(self.model.config.num_hidden_layers)
        slots = [inputs[f"input.cache.layers.{layer}.{field}"] for layer in layers for field in ("keys", "values")]
        cache = static_cache(self.model, slots, inputs["input.cache.layers.0.cumulative_length"])
        out = self.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], cache=cache,
                         use_cache=True)
        outputs = [out.logits]
        for name in self.output_names[1:]:
            _, _, _, layer, field = name.split(".")
            outputs.append(getattr(cache.layers[int(layer)], field))
        return tuple(outputs)


def export_hf_static(model, opset: int):
    from transformers.exporters import OnnxConfig, OnnxExporter

    b, p, s = EXAMPLE
    ids, mask, past_length, *slots = static_inputs(model, torch.Generator().manual_seed(1), b, p, s, 0)
    sample = dict(input_ids=ids, attention_mask=mask, cache=static_cache(model, slots, past_length), use_cache=True)
    exported = OnnxExporter().export(model, sample, config=OnnxConfig(dynamic=True, opset_version=opset))
    proto = onnx_ir.serde.serialize_model(exported.program)
    names = [value.name for value in proto.graph.input]
    module = HfStaticReference(model, [value.name for value in proto.graph.output])
    cases = []
    for k, (name, *shape) in enumerate(DECODE_CASES):
        ids, mask, past_length, *slots = static_inputs(model, torch.Generator().manual_seed(10 + k), *shape)
        inputs = {"input_ids": ids, "attention_mask": mask}
        for layer in range(model.config.num_hidden_layers):
            inputs[f"input.cache.layers.{layer}.keys"] = slots[2 * layer]
            inputs[f"input.cache.layers.{layer}.values"] = slots[2 * layer + 1]
            inputs[f"input.cache.layers.{layer}.cumulative_length"] = past_length
        cases.append((name, inputs))
    return module, proto, names, cases


EXPORTERS = {"decode": export_decode, "nocache": export_nocache, "static": export_static, "hf": export_hf,
             "hf_static": export_hf_static}


def strip_metadata(proto: onnx.ModelProto) -> None:
    for graph in [proto.graph] + [attr.g for node in proto.graph.node for attr in node.attribute if attr.g.name]:
        for node in graph.node:
            del node.metadata_props[:]
    for function in proto.functions:
        for node in function.node:
            del node.metadata_props[:]


def run_torch(module, names, inputs) -> list[np.ndarray]:
    with torch.no_grad():
        outputs = module(**inputs) if isinstance(inputs, dict) else module(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return [o.numpy() for o in outputs]


def save_cases(stem: pathlib.Path, module, names, cases) -> None:
    arrays = {}
    for k, (case_name, inputs) in enumerate(cases):
        named = inputs if isinstance(inputs, dict) else dict(zip(names, inputs))
        arrays[f"case{k}.name"] = np.array(case_name)
        arrays.update({f"case{k}.in.{n}": v.numpy() for n, v in named.items()})
        arrays.update({f"case{k}.out.{i}": o for i, o in enumerate(run_torch(module, names, inputs))})
    np.savez(stem.with_suffix(".npz"), **arrays)


def stem_of(arch: str, opset: int, variant: str) -> str:
    return f"{arch}_opset{opset}_{variant}"


def export(arch: str, opset: int, variant: str, layers: int) -> None:
    model = build_model(arch, layers, "eager" if variant.endswith("eager") else "sdpa")
    module, proto, names, cases = EXPORTERS[variant.removesuffix("_eager")](model, opset)
    strip_metadata(proto)
    stem = FIXTURES / stem_of(arch, opset, variant)
    onnx.save(proto, str(stem.with_suffix(".onnx")))
    save_cases(stem, module, names, cases)
    print(f"wrote {stem.name}", flush=True)


def dims(value) -> str:
    return "[" + ",".join(d.dim_param or str(d.dim_value) for d in value.type.tensor_type.shape.dim) + "]"


def check(path: pathlib.Path) -> tuple[str, list[float]]:
    import onnxruntime

    proto = onnx.load(str(path))
    counts = collections.Counter(node.op_type for node in proto.graph.node)
    ops = " ".join(f"{op}={counts[op]}" for op in ("Attention", "ScatterND", "RotaryEmbedding", "RMSNormalization"))
    print(f"{path.stem}: {ops}")
    print("  in:  " + " ".join(f"{v.name}{dims(v)}" for v in proto.graph.input))
    print("  out: " + " ".join(f"{v.name}{dims(v)}" for v in proto.graph.output))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    data = np.load(path.with_suffix(".npz"))
    errors, k = [], 0
    while f"case{k}.name" in data:
        feeds = {v.name: data[f"case{k}.in.{v.name}"] for v in proto.graph.input}
        got = session.run(None, feeds)
        want = [data[f"case{k}.out.{i}"] for i in range(len(got))]
        error = max(float(np.max(np.abs(g - w))) if g.size else 0.0 for g, w in zip(got, want))
        ok = all(g.shape == w.shape and np.allclose(g, w, rtol=1e-4, atol=1e-4) for g, w in zip(got, want))
        errors.append(error if ok else float("inf"))
        k += 1
    return ops, errors


def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    only = sys.argv[sys.argv.index("--only") + 1:] if "--only" in sys.argv else None
    chosen = [entry for entry in FIXTURE_LIST if only is None or stem_of(*entry[:3]) in only]
    if only is None and "--check" not in sys.argv:
        for old in list(FIXTURES.glob("*.onnx")) + list(FIXTURES.glob("*.npz")):
            old.unlink()
    if "--check" not in sys.argv:
        for arch, opset, variant, layers in chosen:
            export(arch, opset, variant, layers)
    rows = []
    for arch, opset, variant, layers in chosen:
        path = FIXTURES / f"{stem_of(arch, opset, variant)}.onnx"
        if path.exists():
            ops, errors = check(path)
            rows.append((path.stem, opset, variant, path.stat().st_size, errors))
    print(f"\n{'fixture':32} {'opset':5} {'variant':13} {'bytes':>7}  ORT max |error| per case")
    for stem, opset, variant, size, errors in rows:
        print(f"{stem:32} {opset:<5} {variant:13} {size:7}  " + " ".join(f"{e:.1e}" for e in errors))
    bad = [stem for stem, *_, errors in rows if not all(e <= 1e-4 for e in errors)]
    print("all match" if not bad else f"MISMATCH: {bad}")


if __name__ == "__main__":
    main()
