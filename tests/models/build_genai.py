"""Regenerate the onnxruntime-genai fixture (needs torch, transformers, tokenizers, onnxruntime-genai,
onnxruntime; CI does not).

    pip install torch==2.13.0 transformers==5.24.0 onnxruntime-genai==0.18.0 tokenizers onnx onnxruntime
    python tests/models/build_genai.py

onnxruntime-genai's model builder (`python -m onnxruntime_genai.models.builder -i DIR -o OUT -p fp32
-e cpu`, as its users run it; it reads the tokenizer too) on the tiny random-weight Llama of
export_decoders.py with vocab_size 128: builder 0.18 takes every Linear whose output size equals the
vocabulary for the LM head, so at vocab 64 (= 4 heads x 16 = the MLP width) it wires the logits to
layer 0. What it writes (opset 22 + com.microsoft 1): GroupQueryAttention (packed QKV, rotary inside,
seqlens_k = sum(attention_mask) - 1, the mask read as right padding), SkipSimplifiedLayerNormalization,
onnxruntime's SimplifiedLayerNormalization in the default domain (the ONNX checker rejects it), a
value_info that declares a one-element constant a scalar; genai_config.json says
past_present_share_buffer. The weights are moved inline (the builder always writes external data).

  genai_llama_fp32  inputs input_ids, attention_mask, past_key_values.<l>.key/value [batch, 2, past, 16]
                    -> logits, present.<l>.key/value; cases as build_mobius.py's cpu profile
                    (right padding; onnxruntime's outputs, transformers' checked on the batch-1 cases).

The int4 build (MatMulNBits) is not a fixture yet: kvattn does not compile MatMulNBits.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

import onnx
import torch
import transformers

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import build_mobius  # noqa: E402
import export_decoders as ed  # noqa: E402


def tiny_llama(directory: str) -> transformers.PreTrainedModel:
    from tokenizers import Tokenizer, models, pre_tokenizers

    config = transformers.LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      **{**ed.COMMON, "vocab_size": 128})
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(directory)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"t{i}": i for i in range(4, 128)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                         unk_token="<unk>", pad_token="<pad>").save_pretrained(directory)
    return model


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        model = tiny_llama(f"{work}/hf")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", f"{work}/hf", "-o",
                        f"{work}/out", "-p", "fp32", "-e", "cpu", "-c", f"{work}/cache"], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proto = onnx.load(f"{work}/out/model.onnx")  # reads the external data: inline from here on
    build_mobius.save("genai_llama_fp32", proto, build_mobius.cpu_cases(model, proto))


if __name__ == "__main__":
    main()
