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

  genai_llama_int4  the same model built with -p int4: every linear layer a MatMulNBits (4 bits,
                    blocks of 32, symmetric, accuracy_level 4); the cases are onnxruntime's outputs at
                    accuracy_level 0 (exact dequantization: tests/exported_fixtures.onnxruntime_session),
                    printed beside their distance from onnxruntime at the builder's level 4.
  genai_llama_int4/ the int4 build's directory as written: model.onnx + model.onnx.data,
                    genai_config.json, tokenizer.json (WordLevel: "<s> t4 t5 ...").
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime
import torch
import transformers

sys.path.insert(0, str(pathlib.Path(__file__).parent))
sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))
import build_mobius  # noqa: E402
import export_decoders as ed  # noqa: E402


# The int4 build as the builder wrote it (model.onnx + external data, genai_config.json, tokenizer):
# what `kvattn generate DIR --prompt TEXT` reads.
SHIPPED = pathlib.Path(__file__).parent / "genai_llama_int4"


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


def build(hf: str, work: str, precision: str) -> onnx.ModelProto:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = f"{work}/{precision}"
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", hf, "-o", out, "-p", precision,
                    "-e", "cpu", "-c", f"{work}/cache"], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return onnx.load(f"{out}/model.onnx")  # reads the external data: inline from here on


def main() -> None:
    from exported_fixtures import onnxruntime_session

    with tempfile.TemporaryDirectory() as work:
        model = tiny_llama(f"{work}/hf")
        fp32, int4 = (build(f"{work}/hf", work, precision) for precision in ("fp32", "int4"))
        shutil.rmtree(SHIPPED, ignore_errors=True)
        shutil.copytree(f"{work}/int4", SHIPPED)
    build_mobius.save("genai_llama_fp32", fp32, build_mobius.cpu_cases(model, fp32))
    path = build_mobius.FIXTURES / "genai_llama_int4.onnx"
    onnx.save(int4, str(path))
    cases = build_mobius.cpu_cases(model, int4, session=onnxruntime_session(path), against_transformers=False)
    build_mobius.save("genai_llama_int4", int4, cases)
    shipped = onnxruntime.InferenceSession(int4.SerializeToString(), providers=["CPUExecutionProvider"])
    distance = max(float(np.abs(got - exact).max()) for _, inputs, outputs in cases
                   for got, exact in zip(shipped.run(None, inputs), outputs))
    print(f"genai_llama_int4: onnxruntime at accuracy_level 4 is {distance:.1e} from level 0")


if __name__ == "__main__":
    main()
