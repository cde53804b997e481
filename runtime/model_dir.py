"""What `kvattn generate` finds beside a model: the decoder, its tokenizer and its generation config.

A model directory as onnxruntime-genai's builder writes it (`genai_config.json` naming the decoder
file, its eos / pad ids and search options; `tokenizer.json`), or as other producers do (one
.onnx, transformers' `generation_config.json` / `config.json` with the eos id). Given a file, its
directory is searched the same way. The tokenizer is read with the `tokenizers` package.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from kvattn.lowering.diagnostics import KvattnError

GENAI_CONFIG = "genai_config.json"
TOKENIZER = "tokenizer.json"
# genai_config.json's search options that runtime/sampling.py's Search takes.
SEARCH_OPTIONS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty")


@dataclasses.dataclass(frozen=True)
class ModelDirectory:
    model: pathlib.Path
    tokenizer: pathlib.Path | None = None
    eos_ids: tuple[int, ...] = ()
    pad_id: int | None = None
    search: dict = dataclasses.field(default_factory=dict)

    def load_tokenizer(self):
        if self.tokenizer is None:
            raise KvattnError(f"no {TOKENIZER} beside '{self.model}': give token ids (--prompt-ids) instead of text")
        try:
            import tokenizers
        except ImportError:
            raise KvattnError("reading text needs the tokenizers package: pip install 'kvattn[text]'") from None
        try:
            return tokenizers.Tokenizer.from_file(str(self.tokenizer))
        except Exception as exc:  # the Rust library raises plain Exceptions for bad files
            raise KvattnError(f"cannot read the tokenizer '{self.tokenizer}': {exc}") from None


def locate(path: str | pathlib.Path) -> ModelDirectory:
    """The model `path` names (a directory: its genai_config.json's decoder, else its one .onnx)
    and what lies beside it."""
    path = pathlib.Path(path)
    directory = path if path.is_dir() else path.parent
    genai = _json(directory / GENAI_CONFIG)
    if path.is_dir():
        path = _decoder(directory, genai)
    eos, pad, search = (), None, {}
    if genai:
        model = genai.get("model", {})
        eos, pad = _ids(model.get("eos_token_id"), directory / GENAI_CONFIG), model.get("pad_token_id")
        search = {key: value for key, value in genai.get("search", {}).items() if key in SEARCH_OPTIONS}
    else:
        for name in ("generation_config.json", "config.json"):
            config = _json(directory / name)
            if config.get("eos_token_id") is not None:
                eos, pad = _ids(config["eos_token_id"], directory / name), config.get("pad_token_id")
                break
    tokenizer = directory / TOKENIZER
    return ModelDirectory(path, tokenizer if tokenizer.is_file() else None, eos,
                          pad if isinstance(pad, int) else None, search)


def _decoder(directory: pathlib.Path, genai: dict) -> pathlib.Path:
    named = genai.get("model", {}).get("decoder", {}).get("filename")
    if named:
        decoder = directory / named
        if not decoder.is_file():
            raise KvattnError(f"{directory / GENAI_CONFIG} names the decoder '{named}', which is not in '{directory}'")
        return decoder
    models = sorted(directory.glob("*.onnx")) or sorted(directory.glob("*.vmfb"))
    if len(models) != 1:
        found = ", ".join(p.name for p in models) or "none"
        raise KvattnError(f"'{directory}' must hold one .onnx (or .vmfb) model or a {GENAI_CONFIG} naming it "
                          f"(found: {found})")
    return models[0]


def _json(path: pathlib.Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KvattnError(f"cannot read '{path}' as JSON: {exc}") from None
    if not isinstance(value, dict):
        raise KvattnError(f"'{path}' does not hold a JSON object")
    return value


def _ids(value, source: pathlib.Path) -> tuple[int, ...]:
    if value is None:
        return ()
    ids = [value] if isinstance(value, int) else value if isinstance(value, list) else None
    if ids is None or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise KvattnError(f"'{source}': eos_token_id must be a token id or a list of them (got {value!r})")
    return tuple(ids)
