"""Token generation with a compiled decoder: `kvattn generate`, `generate(...)`.

    ids = generate("model.onnx", [5, 17, 42], max_new_tokens=16)   # int64 [1, 3 + 16]
    result = Generator("model.onnx")([[5, 17, 42], [8, 9]], 16, eos_id=2)
    result.ids, result.new_ids, result.prefill_ms, result.decode_tokens_per_s

The model is one decoder step as exporters write it: the same file runs the prefill (the whole
prompt, an empty past) and every decode step (one token, the caches so far). `Generator` reads
its inputs by exporters' names and feeds each step what they mean:
- `input_ids` [batch, seq]: the prompt, then each new token (greedy, the argmax of the last
  logits row, or as `search=` says: runtime/sampling.py). A module whose seq is fixed at 1 takes the prompt one token at a time.
- `attention_mask` [batch, past + seq]: 0 at the left padding of shorter prompts, else 1. A model
  with a fixed-capacity cache in the ONNX itself (a transformers StaticCache export: a mask over
  every slot and a `past_length` input) gets it zero-padded to that capacity.
- `position_ids` [batch, seq] from the mask as transformers does (`cumsum(mask) - 1`, 1 at the
  padding); `cache_position` [seq] = past + [0, seq); `past_length` (also `past_len`,
  `past_seq_len`, `past_sequence_length`) = past.
- KV caches: the module's cache links (its manifest: past -> present found by the compiler), then
  inputs whose output is found by name and matches in dtype and shape (`past_key_0` ->
  `present_key_0`, `past_key_values.0.key` -> `present.0.key`, `input.cache.layers.0.keys` ->
  `output.cache.layers.0.keys`), or pairs named by hand (`cache_pairs={"PAST": "PRESENT"}`). They
  stay on the device between steps (`DecodeSession`): a growing cache starts empty (length 0
  along its dynamic axes, the batch on axis 0), a fixed-size one as zeros; a fixed-size input
  that is not a cache (rank 0 or 1, e.g. transformers' `_sliding_window_tensor`) needs its value
  in `inputs=`, unless the ONNX returns it unchanged (an Identity), when any value does.
  A module compiled with --static-kv-cache takes the same steps; its session feeds `past_length`.
  A transformers-exporter StaticCache feeds its used length back (rank-0 `cumulative_length`
  fields, starting at 0) and takes a mask over every slot.
- `inputs={name: array}`: anything else, the same every step.
An input none of these covers is a KvattnError naming it. A model without any cache (use_cache=
False exports) runs the whole sequence again at every step (cost grows with the square of the
length). With `eos_id` (one id or several), a row that produced one repeats it from then on;
generation stops when every row has. Prompts of different lengths are left-padded with `pad_id` (masked out).
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import pathlib
import time
from typing import Callable, Mapping, Sequence

import numpy as np

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime.manifest import CacheLink, TensorSpec
from kvattn.runtime.module import CompiledModule
from kvattn.runtime.sampling import Search, TokenChooser

Progress = Callable[[str], None]

PAST_LENGTH_NAMES = ("past_length", "past_len", "past_seq_len", "past_sequence_length")
# How exporters name a cache's present after its past: the first rename that gives an output wins.
_PRESENT_NAMES = (("past_key_values.", "present."), ("past_key", "present_key"), ("past_value", "present_value"),
                  ("input.cache.", "output.cache."), ("past", "present"))
_PROGRESS_EVERY_S = 1.0


@dataclasses.dataclass(frozen=True)
class Generation:
    """What a generation produced: `ids` int64 [batch, prompt + new] (each prompt left-padded with
    the pad id to the longest, `attention_mask` 0 there), the time of the prefill (the whole
    prompt, to the first new token) and the decode rate (new tokens over all rows per second,
    after the first; None when only one token was generated)."""

    ids: np.ndarray
    attention_mask: np.ndarray
    prompt_length: int
    prefill_ms: float
    decode_tokens_per_s: float | None
    decode_steps: int

    @property
    def new_ids(self) -> np.ndarray:
        """int64 [batch, new]: the generated tokens only."""
        return self.ids[:, self.prompt_length:]


def generate(model, prompt_ids, max_new_tokens: int, *, eos_id: int | Sequence[int] | None = None,
             attention_mask: np.ndarray | None = None, pad_id: int = 0,
             cache_pairs: Mapping[str, str] | None = None, inputs: Mapping[str, np.ndarray] | None = None,
             progress: Progress | None = None, target: str = "llvm-cpu", arch: str | None = None,
             dims: Mapping[str, int] | None = None, static_kv_cache: int | None = None,
             inline_weights: bool | None = None, params: str | os.PathLike | None = None,
             attention_precision: str = "ieee", search: Search | None = None) -> np.ndarray:
    """Generation (greedy unless `search` samples): int64 [batch, prompt + new], the prompt(s) first. `model`: a
    CompiledModule, a .vmfb or an .onnx file (compiled first, cached by content and flags, with
    `target`, `arch`, `dims`, `static_kv_cache`, `inline_weights`, `attention_precision`). `prompt_ids`: one prompt (a
    list of ints), several (a list of lists, left-padded), or an int array [batch, prompt] with
    its `attention_mask`. See the module docstring for what each model input gets."""
    ids, mask = prompt_arrays(prompt_ids, attention_mask, pad_id)
    check_max_new_tokens(max_new_tokens)
    if static_kv_cache is not None:  # before a compile that would be wasted
        check_capacity(ids.shape[1], max_new_tokens, static_kv_cache, f"the static KV cache (--static-kv-cache "
                                                                      f"{static_kv_cache}) holds")
    generator = Generator(model, cache_pairs=cache_pairs, inputs=inputs, progress=progress, target=target, arch=arch,
                          dims=dims, static_kv_cache=static_kv_cache, inline_weights=inline_weights, params=params,
                          attention_precision=attention_precision)
    return generator(ids, max_new_tokens, eos_id=eos_id, attention_mask=mask, pad_id=pad_id, progress=progress,
                     search=search).ids


class Generator:
    """A compiled decoder with its inputs worked out once; `generator(prompt_ids, max_new_tokens)`
    → Generation. Raises KvattnError naming what it cannot tell how to feed."""

    def __init__(self, model, *, cache_pairs: Mapping[str, str] | None = None,
                 inputs: Mapping[str, np.ndarray] | None = None, progress: Progress | None = None,
                 target: str = "llvm-cpu", arch: str | None = None, dims: Mapping[str, int] | None = None,
                 static_kv_cache: int | None = None, inline_weights: bool | None = None,
                 params: str | os.PathLike | None = None, attention_precision: str = "ieee"):
        self.module, onnx_path = _load(model, progress, target, arch, dims, static_kv_cache, inline_weights, params,
                                       attention_precision)
        manifest = self.module.manifest
        self.specs = {spec.name: spec for spec in manifest.inputs + manifest.outputs}
        self.static = manifest.static_cache
        hidden = {self.static.length_input} if self.static else set()
        names = [name for name in self.module.input_names if name not in hidden]
        self.fixed = {name: np.asarray(value) for name, value in (inputs or {}).items()}
        for name in self.fixed:
            if name not in names:
                raise KvattnError(f"inputs: the module has no input '{name}'{_listing(manifest.inputs, hidden)}")
        self.links = _cache_links(self.module, names, cache_pairs or {})
        cached = {link.input for link in self.links}
        self.ids_input = _role(names, ("input_ids",))
        if self.ids_input is None:
            raise KvattnError(f"the model has no 'input_ids' input (the token ids generate feeds)"
                              f"{_listing(manifest.inputs, hidden)}")
        self.mask_input = _role(names, ("attention_mask",))
        self.position_input = _role(names, ("position_ids",))
        self.cache_position_input = _role(names, ("cache_position",))
        self.past_length_inputs = [name for name in names if name in PAST_LENGTH_NAMES]
        # Caches of a fixed capacity that the model writes at `write_indices` and reads up to
        # `nonpad_kv_seqlen` (TensorScatter + Attention-24, as mobius --static-cache builds them).
        self.write_index_input = _role(names, ("write_indices",))
        # onnxruntime's GroupQueryAttention reads the mask as right padding (seqlens_k = its sum - 1).
        self.right_padded = any(line.startswith("GroupQueryAttention") for line in manifest.rewrites)
        self.valid_length_input = _role(names, ("nonpad_kv_seqlen",))
        known = {self.ids_input, self.mask_input, self.position_input, self.cache_position_input,
                 self.write_index_input, self.valid_length_input, *self.past_length_inputs, *cached, *self.fixed}
        unknown = [self.specs[name].describe() for name in names if name not in known]
        if unknown:
            raise KvattnError(
                f"generate does not know how to feed the input(s) {'; '.join(unknown)}. It feeds input_ids, "
                f"attention_mask, position_ids, cache_position, {'/'.join(PAST_LENGTH_NAMES)} and KV caches (an "
                f"input whose update is an output, by name: past_key_0 -> present_key_0, past_key_values.0.key -> "
                f"present.0.key, input.cache.layers.0.keys -> output.cache.layers.0.keys); name a cache pair by hand "
                f"with --cache PAST=PRESENT (cache_pairs=), or give an input's value with --input NAME=@FILE.npy "
                f"(inputs=)")
        self.logits_output = _logits_output(self.module, {link.output for link in self.links})
        self.vocab = self.specs[self.logits_output].shape[-1]
        ids_spec = self.specs[self.ids_input]
        if len(ids_spec.shape) != 2 or ids_spec.dtype.kind not in "iu":
            raise KvattnError(f"input_ids must be integer [batch, seq]; the module takes {ids_spec.describe()}")
        self.batch, self.rows = ids_spec.shape
        if self.rows not in (None, 1):
            raise KvattnError(f"the module takes exactly {self.rows} tokens per call ({ids_spec.describe()}); "
                              f"generation needs one per decode step (compile with a symbolic or unit seq dim)")
        if not self.links and self.rows is not None:
            raise KvattnError(f"the model has no KV cache, so each step must run the whole sequence, but it takes "
                              f"exactly {self.rows} token per call ({ids_spec.describe()})")
        # A fixed-capacity cache in the ONNX itself: its mask covers every slot and a past length says how many
        # are used; the mask is padded to that length.
        # transformers' exporter feeds a StaticCache's length back as a rank-0 `cumulative_length` field.
        self.fed_back_lengths = {link.input for link in self.links if link.input.endswith("cumulative_length")
                                 and not self.specs[link.input].shape and self.specs[link.input].dtype.kind in "iu"}
        mask_spec = self.specs.get(self.mask_input)
        self.mask_slots = (_sizes(mask_spec)[-1] if mask_spec is not None and len(mask_spec.shape) == 2
                           and (self.past_length_inputs or self.fed_back_lengths) else None)
        self.capacity, self.capacity_what = None, ""
        if self.static:
            self.capacity = self.static.capacity
            self.capacity_what = f"the static KV cache (--static-kv-cache {self.static.capacity}) holds"
        elif self.mask_slots is not None:
            self.capacity = self.mask_slots
            self.capacity_what = f"the model's fixed-size attention_mask ({mask_spec.describe()}) holds"
        elif self.write_index_input is not None and self.links:
            spec = self.specs[self.links[0].input]  # [batch, capacity, heads * head] or [batch, heads, capacity, head]
            axis = 1 if len(spec.shape) == 3 else 2
            if len(spec.shape) in (3, 4) and spec.shape[axis] is not None:
                self.capacity = spec.shape[axis]
                self.capacity_what = f"the model's fixed-size KV caches ({spec.describe()}) hold"
        self._unchanged = _pass_through(onnx_path, self.links) if onnx_path else set()
        self._constant = {name: value for name, value in self.fixed.items() if name not in cached}
        for link in self.links:  # fail now rather than at the first call
            self._initial_cache(link, 1)

    def __call__(self, prompt_ids, max_new_tokens: int, *, eos_id: int | Sequence[int] | None = None,
                 attention_mask: np.ndarray | None = None, pad_id: int = 0,
                 progress: Progress | None = None, search: Search | None = None,
                 on_token: Callable[[int, int], None] | None = None) -> Generation:
        """`eos_id`: one end-of-sequence id or several; `search`: how each token is picked
        (greedy by default, runtime/sampling.py); `on_token(row, id)` as each row gets a token."""
        ids, mask = prompt_arrays(prompt_ids, attention_mask, pad_id)
        eos = _eos_ids(eos_id)
        choose = TokenChooser(search or Search())
        on_token = on_token or (lambda row, token: None)
        check_max_new_tokens(max_new_tokens)
        batch, prompt_length = ids.shape
        if self.batch is not None and batch != self.batch:
            raise KvattnError(f"the module takes a batch of {self.batch} ({self.specs[self.ids_input].describe()}); "
                              f"got {batch} prompt(s)")
        lockstep = not mask.all() and (self.mask_input is None or self.right_padded)
        if lockstep and (self.valid_length_input is None and not self.right_padded or not self.links):
            raise KvattnError("prompts of different lengths are left-padded, but the model has no attention_mask "
                              "input to mask the padding; give prompts of one length")
        if self.vocab is not None:
            for what, values in (("prompt id", ids[mask != 0]), ("the pad id", [pad_id] if not mask.all() else []),
                                 ("the eos id", eos)):
                bad = [int(v) for v in values if not 0 <= int(v) < self.vocab]
                if bad:
                    raise KvattnError(f"{what} {bad[0]} is not a token id of this model's vocabulary of "
                                      f"{self.vocab} ({self.specs[self.logits_output].describe()})")
        if self.capacity is not None:
            check_capacity(prompt_length, max_new_tokens, self.capacity, self.capacity_what)
        session = None
        if self.links:
            from kvattn.runtime.session import DecodeSession

            session = DecodeSession(self.module, {link.input: self._initial_cache(link, batch) for link in self.links},
                                    self.links)
        if lockstep:
            return self._lockstep(session, [list(row[m != 0]) for row, m in zip(ids, mask)], max_new_tokens, eos,
                                  pad_id, progress, choose, on_token)
        started = time.perf_counter()
        sequence, fed = ids, 0
        finished = np.zeros(batch, bool)
        decode_started, steps = None, 0
        last_report = started
        while True:
            logits = self._logits_after(session, sequence, mask, fed)
            fed = sequence.shape[1]
            token = np.array([choose(logits[row], sequence[row][mask[row] != 0]) for row in range(batch)], np.int64)
            for row in np.flatnonzero(~finished):
                on_token(int(row), int(token[row]))
            if eos:
                token[finished] = sequence[finished, -1]  # the eos each ended with
                finished |= np.isin(token, eos)
            sequence = np.concatenate([sequence, token[:, None]], axis=1)
            mask = np.concatenate([mask, np.ones((batch, 1), mask.dtype)], axis=1)
            now = time.perf_counter()
            if decode_started is None:
                decode_started = now
                prefill_ms = (now - started) * 1e3
            else:
                steps += 1
            new = sequence.shape[1] - prompt_length
            if new >= max_new_tokens or finished.all():
                break
            if progress and now - last_report >= _PROGRESS_EVERY_S:
                last_report = now
                progress(f"generated {new}/{max_new_tokens} tokens, "
                         f"{batch * steps / (now - decode_started):.1f} tokens/s")
        seconds = time.perf_counter() - decode_started
        rate = batch * steps / seconds if steps and seconds > 0 else None
        return Generation(sequence, mask, prompt_length, prefill_ms, rate, steps)

    def _lockstep(self, session, prompts: list[list[int]], max_new_tokens: int, eos: tuple[int, ...], pad_id: int,
                  progress: Progress | None, choose: TokenChooser, on_token: Callable[[int, int], None]) -> Generation:
        """Prompts of different lengths on a model without a mask (each row's valid length is its
        nonpad_kv_seqlen) or whose attention reads the mask as right padding (GroupQueryAttention):
        no padding at all. Every call gives each row its next token: first the
        shortest prompt's length from every prompt, then one token per call, a prompt's next token
        until it is all in, then the row's last new one. Every row's tokens are its own (exactly
        its prompt generated alone), the rows only share the calls; a row that is done is fed its
        last token again, which nothing reads."""
        batch, longest = len(prompts), max(map(len, prompts))
        streams = [list(prompt) for prompt in prompts]
        new = [[] for _ in prompts]
        done = np.zeros(batch, bool)
        started = time.perf_counter()
        past, rows, steps, last_report = 0, min(map(len, prompts)), 0, started
        prefill_ms, decode_started = None, None
        while not done.all():
            sequence = np.zeros((batch, past + rows), np.int64)  # only the columns from `past` are fed
            sequence[:, past:] = [stream[past:past + rows] + [stream[-1]] * (past + rows - len(stream))
                                  for stream in streams]
            logits = self._logits_after(session, sequence, np.ones_like(sequence), past)
            past += rows
            rows = 1
            now = time.perf_counter()
            if prefill_ms is None:
                prefill_ms, decode_started = (now - started) * 1e3, now
            else:
                steps += 1
            for row, stream in enumerate(streams):
                if done[row] or past < len(stream):  # still in its prompt
                    continue
                token = choose(logits[row], stream)
                stream.append(token)
                new[row].append(token)
                on_token(row, token)
                done[row] = len(new[row]) >= max_new_tokens or token in eos
            if progress and now - last_report >= _PROGRESS_EVERY_S:
                last_report = now
                progress(f"generated {min(map(len, new))}/{max_new_tokens} tokens in every row")
        seconds = time.perf_counter() - decode_started
        count = max(map(len, new))
        ids = np.full((batch, longest + count), pad_id, np.int64)
        mask = np.zeros_like(ids)
        for row, (prompt, tokens) in enumerate(zip(prompts, new)):
            tokens = tokens + tokens[-1:] * (count - len(tokens))  # rows that stopped at eos repeat it
            ids[row, longest - len(prompt):] = prompt + tokens
            mask[row, longest - len(prompt):] = 1
        rate = sum(map(len, new)) / seconds if steps and seconds > 0 else None
        return Generation(ids, mask, longest, prefill_ms, rate, steps)

    def _logits_after(self, session, sequence: np.ndarray, mask: np.ndarray, fed: int) -> np.ndarray:
        """Feed the tokens after the first `fed` (all of them without a cache): the last logits row."""
        if session is None:
            return self.module.run(self._feeds(sequence, mask, 0))[self.logits_output][:, -1]
        chunk = self.rows or sequence.shape[1] - fed
        for begin in range(fed, sequence.shape[1], chunk):
            outputs = session.step(self._feeds(sequence[:, begin:begin + chunk], mask, begin))
        return outputs[self.logits_output][:, -1]

    def _feeds(self, new_ids: np.ndarray, mask: np.ndarray, past: int) -> dict[str, np.ndarray]:
        """One step's inputs: `new_ids` after `past` tokens already in the caches."""
        batch, rows = new_ids.shape
        total = past + rows
        feeds = dict(self._constant)
        feeds[self.ids_input] = new_ids.astype(self.specs[self.ids_input].dtype)
        mask = mask[:, :total]
        if self.mask_input is not None:
            padded = mask if self.mask_slots is None else np.pad(mask, [(0, 0), (0, self.mask_slots - total)])
            feeds[self.mask_input] = padded.astype(self.specs[self.mask_input].dtype)
        if self.position_input is not None:  # as transformers' generate: 1 at the padding
            positions = np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1)[:, past:]
            feeds[self.position_input] = self._per_position(self.position_input, positions)
        if self.cache_position_input is not None:
            positions = np.broadcast_to(np.arange(past, total), (batch, rows))
            feeds[self.cache_position_input] = self._per_position(self.cache_position_input, positions)
        for name, value in ((self.write_index_input, past), (self.valid_length_input, total)):
            if name is not None:
                feeds[name] = np.full([batch if size is None else size for size in self.specs[name].shape], value,
                                      self.specs[name].dtype)
        for name in self.past_length_inputs:
            spec = self.specs[name]
            shape = [batch if size is None else size for size in spec.shape]
            if len(shape) > 1 or (shape and shape[0] not in (1, batch)):
                raise KvattnError(f"generate feeds {name} the past length: a scalar, [1] or [batch]; the module "
                                  f"takes {spec.describe()}")
            feeds[name] = np.full(shape, past, spec.dtype)
        return feeds

    def _per_position(self, name: str, positions: np.ndarray) -> np.ndarray:
        """positions [batch, n] as input `name` takes them: [batch, n], or [n] when every row agrees."""
        spec = self.specs[name]
        if len(spec.shape) == 2:
            return np.array(positions, spec.dtype)
        if len(spec.shape) == 1 and (positions == positions[:1]).all():
            return np.array(positions[0], spec.dtype)
        raise KvattnError(f"generate feeds {name} the positions of the new tokens, [batch, seq] (or [seq] when the "
                          f"rows agree); the module takes {spec.describe()}"
                          + (" and the rows' positions differ (left padding)" if len(spec.shape) == 1 else ""))

    def _initial_cache(self, link: CacheLink, batch: int) -> np.ndarray:
        """A cache's value before the prefill: empty along its growing axes, or zeros."""
        spec = self.specs[link.input]
        if link.input in self.fixed:
            return self.fixed[link.input]
        if link.input in self.fed_back_lengths:  # an empty cache: 0 rows used
            return np.zeros((), spec.dtype)
        sizes = _sizes(spec)
        present = _sizes(self.specs[link.output])
        if len(present) == len(sizes):  # a dim the past leaves symbolic that its present fixes (the head size)
            sizes = [size if size is not None or axis == 0 else present[axis] for axis, size in enumerate(sizes)]
        if self.static and len(sizes) == 4:  # the session pads an empty past to the capacity
            return np.zeros((batch, sizes[1] or 0, 0, sizes[3] or 0), spec.dtype)
        shape = [batch if axis == 0 else (0 if size is None else size) for axis, size in enumerate(sizes)]
        growing = any(size is None for size in sizes[1:])
        if not growing and len(spec.shape) < 2 and link.input not in self._unchanged:
            raise KvattnError(f"generate cannot tell the first value of {spec.describe()} (fed back from output "
                              f"'{link.output}' at each step): give it with --input {link.input}=@FILE.npy "
                              f"(inputs=)")
        return np.zeros(shape, spec.dtype)


def prompt_arrays(prompt_ids, attention_mask=None, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask), int64 [batch, prompt]: one prompt (ints), several (lists of ints, left-padded
    with `pad_id`), or an int array [batch, prompt] and its optional mask."""
    if isinstance(pad_id, bool) or not isinstance(pad_id, numbers.Integral):
        raise KvattnError(f"the pad id must be an integer, got {pad_id!r}")
    if isinstance(prompt_ids, np.ndarray) and prompt_ids.ndim == 2:
        rows = list(prompt_ids)
    elif isinstance(prompt_ids, (np.ndarray, Sequence)) and len(prompt_ids) and all(
            isinstance(row, (np.ndarray, Sequence)) and not isinstance(row, str) for row in prompt_ids):
        rows = list(prompt_ids)
    else:
        rows = [prompt_ids]
    prompts = [_token_ids(row) for row in rows]
    longest = max(len(prompt) for prompt in prompts)
    ids = np.full((len(prompts), longest), pad_id, np.int64)
    mask = np.zeros((len(prompts), longest), np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt):] = prompt
        mask[row, longest - len(prompt):] = 1
    if attention_mask is not None:
        given = np.asarray(attention_mask)
        if given.shape != ids.shape or given.dtype.kind not in "iub":
            raise KvattnError(f"attention_mask must be an integer array of the prompts' shape {list(ids.shape)}, "
                              f"got {given.dtype}{list(given.shape)}")
        if not mask.all():
            raise KvattnError("give attention_mask with a rectangular array of prompts, not with prompts of "
                              "different lengths (those are left-padded for you)")
        mask = (given != 0).astype(np.int64)
        if (np.diff(mask, axis=1) < 0).any() or not mask[:, -1].all():
            raise KvattnError("attention_mask must be left padding: in each row zeros, then only ones to the end")
    return ids, mask


def _token_ids(prompt) -> list[int]:
    values = list(prompt) if isinstance(prompt, (np.ndarray, Sequence)) and not isinstance(prompt, str) else None
    if values is None or not all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
                                 for v in values):
        raise KvattnError(f"a prompt must be a sequence of integer token ids, got {prompt!r}")
    if not values:
        raise KvattnError("a prompt needs at least one token")
    negative = [int(v) for v in values if v < 0]
    if negative:
        raise KvattnError(f"token ids are non-negative; the prompt has {negative[0]}")
    return [int(v) for v in values]


def _eos_ids(eos_id) -> tuple[int, ...]:
    if eos_id is None:
        return ()
    ids = (eos_id,) if isinstance(eos_id, numbers.Integral) else tuple(eos_id)
    if not all(isinstance(i, numbers.Integral) for i in ids):
        raise KvattnError(f"eos_id must be a token id or a list of them (got {eos_id!r})")
    return tuple(int(i) for i in ids)


def check_max_new_tokens(max_new_tokens) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
        raise KvattnError(f"the number of new tokens must be a positive integer, got {max_new_tokens!r}")


def check_capacity(prompt_length: int, max_new_tokens: int, capacity: int, what: str) -> None:
    """A fixed-size cache holds every token fed: the prompt and each new token but the last."""
    needed = prompt_length + max_new_tokens - 1
    if needed > capacity:
        raise KvattnError(f"a prompt of {prompt_length} token(s) and {max_new_tokens} new token(s) need {needed} "
                          f"cache rows (every token fed to the model), but {what} {capacity}")


def _load(model, progress, target, arch, dims, static_kv_cache, inline_weights, params, attention_precision):
    """(CompiledModule, the .onnx path when compiled from one)."""
    compile_options = (dims or static_kv_cache is not None or inline_weights is not None or target != "llvm-cpu" or arch
                       or attention_precision != "ieee")
    if isinstance(model, CompiledModule):
        if compile_options or params is not None:
            raise KvattnError("target, arch, dims, static_kv_cache, inline_weights, attention_precision and params "
                              "apply when compiling or loading; this module is already loaded")
        return model, None
    path = pathlib.Path(model)
    if not path.is_file():
        raise KvattnError(f"'{path}': no such file")
    if path.suffix == ".onnx":
        from kvattn.runtime import compiler

        if params is not None:
            raise KvattnError(f"--params is for a compiled .vmfb; '{path}' is compiled (with its archive) first")
        vmfb = compiler.compile_cached(path, target, arch, progress, static_kv_cache, dims, inline_weights,
                                       attention_precision)
        return CompiledModule.load(vmfb), path
    if compile_options:
        raise KvattnError(f"--dim, --static-kv-cache, --target, --attention-precision and the weights options apply "
                          f"when compiling; '{path}' is already compiled")
    return CompiledModule.load(path, params=params), None


def _sizes(spec: TensorSpec) -> list[int | None]:
    """The static size of each axis, with transformers' digit-string dim names ('2') read as sizes."""
    symbols = spec.dims or (None,) * len(spec.shape)
    return [int(symbol) if size is None and symbol and symbol.isdigit() else size
            for size, symbol in zip(spec.shape, symbols)]


def _role(names: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((name for name in candidates if name in names), None)


def _compatible(past: TensorSpec, present: TensorSpec) -> bool:
    return past.element == present.element and len(past.shape) == len(present.shape) and all(
        a is None or b is None or a == b for a, b in zip(past.shape, present.shape))


def _cache_links(module: CompiledModule, names: list[str], by_hand: Mapping[str, str]) -> list[CacheLink]:
    """The caches a session keeps: pairs named by hand, the manifest's links, then pairs by name."""
    specs = {spec.name: spec for spec in module.manifest.inputs + module.manifest.outputs}
    outputs = module.output_names
    manifest = {link.input: link for link in module.manifest.caches}
    links = {}
    for past, present in by_hand.items():
        if past not in names:
            raise KvattnError(f"--cache {past}={present}: the module has no input '{past}' to feed back"
                              f"{_listing(module.manifest.inputs)}")
        if present not in outputs:
            raise KvattnError(f"--cache {past}={present}: the module has no output '{present}'"
                              f"{_listing(module.manifest.outputs, what='outputs')}")
        if past in manifest and manifest[past].output != present:
            raise KvattnError(f"--cache {past}={present}: the compiler found that '{past}' is updated into "
                              f"'{manifest[past].output}'")
        if not _compatible(specs[past], specs[present]):
            raise KvattnError(f"--cache {past}={present}: they differ in dtype or shape ({specs[past].describe()}; "
                              f"{specs[present].describe()})")
        links[past] = manifest.get(past) or CacheLink(past, present, False)
    for past, link in manifest.items():
        links.setdefault(past, link)
    taken = {link.output for link in links.values()}
    for past in names:
        if past in links:
            continue
        for old, new in _PRESENT_NAMES:
            present = past.replace(old, new, 1)
            if present != past and present in outputs and present not in taken and _compatible(
                    specs[past], specs[present]):
                links[past] = CacheLink(past, present, False)
                taken.add(present)
                break
    return [links[name] for name in names if name in links]


def _logits_output(module: CompiledModule, cache_outputs: set[str]) -> str:
    candidates = [spec for spec in module.manifest.outputs if spec.name not in cache_outputs]
    if any(spec.name == "logits" for spec in candidates):
        return "logits"
    rank3 = [spec for spec in candidates if len(spec.shape) == 3 and spec.dtype.kind == "f"]
    if len(rank3) == 1:
        return rank3[0].name
    raise KvattnError(f"generate cannot tell which output holds the logits: no output is named 'logits' and "
                      f"{len(rank3)} float outputs other than the caches have rank 3 [batch, seq, vocab]"
                      f"{_listing(module.manifest.outputs, what='outputs')}")


def _pass_through(onnx_path: pathlib.Path, links: list[CacheLink]) -> set[str]:
    """The cached inputs that the ONNX graph returns unchanged (an Identity to their output)."""
    import onnx

    graph = onnx.load(onnx_path, load_external_data=False).graph
    identities = {(node.input[0], node.output[0]) for node in graph.node if node.op_type == "Identity"}
    return {link.input for link in links if (link.input, link.output) in identities}


def _listing(specs, hidden: set[str] = frozenset(), what: str = "inputs") -> str:
    return f". The module's {what}:\n" + "\n".join(f"  {spec.describe()}" for spec in specs if spec.name not in hidden)
