"""Decode sessions: run a compiled decode step again and again with its KV caches on the device.

The module's manifest lists its caches: model inputs whose updated value is a model output
(past_key → present_key, found by kvattn-cache-lifetime). A session owns one device buffer per
cache. Each `step` uploads only the per-step inputs (tokens or Q/K/V, write positions, lengths),
passes the caches as they are, and keeps the returned present caches as next step's past: when
the compiler tied them (aliased), the module writes the new rows into the same buffer and nothing
else moves; otherwise the present is a new device buffer. The caches never travel to the host
unless asked for (`caches()`).

A module compiled with --static-kv-cache has fixed-capacity caches and a `past_length` input;
the session hides that: it takes the original model's per-step inputs, feeds and advances the
length itself, accepts initial caches of any length up to the capacity, and `caches()` returns
only the valid rows, as the original model's present caches would be.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime import device_buffers
from kvattn.runtime.manifest import CacheLink
from kvattn.runtime.module import CompiledModule


class DecodeSession:
    """`session.step({per-step inputs})` → {outputs other than the caches}; `reset()` starts over."""

    def __init__(self, module: CompiledModule, initial_caches: Mapping[str, np.ndarray] | None = None,
                 links: Sequence[CacheLink] | None = None):
        self.module = module
        # `links`: the caches to keep (default the manifest's), e.g. with pairs found by name that the
        # compiler does not tie (a Concat cache's past -> present); they are kept on the device too.
        self.links = {link.input: link for link in (module.manifest.caches if links is None else links)}
        if not self.links:
            raise KvattnError("this module has no KV caches (no model input is updated into a model output), "
                              "so there is nothing for a decode session to keep; call it with module.run()")
        self.static = module.manifest.static_cache
        self._specs = {spec.name: spec for spec in module.manifest.inputs}
        hidden = set(self.links) | ({self.static.length_input} if self.static else set())
        self.step_inputs = [name for name in module.input_names if name not in hidden]
        cache_outputs = {link.output for link in self.links.values()}
        self.step_outputs = [name for name in module.output_names if name not in cache_outputs]
        self._caches = {}
        self.steps = 0
        self.length = 0  # valid cache rows (static caches)
        self.reset(initial_caches)

    @property
    def cache_names(self) -> list[str]:
        return list(self.links)

    def reset(self, initial_caches: Mapping[str, np.ndarray] | None = None) -> None:
        """Start over: caches from `initial_caches` (all of them), or zero-filled. Static caches
        may start with fewer rows than their capacity (axis 2); those become the valid rows."""
        self.length = 0
        if initial_caches is not None and self.static:
            initial_caches, self.length = self._padded(initial_caches)
        if initial_caches is None:
            dynamic = [self._specs[name].describe() for name in self.links if None in self._specs[name].shape]
            if dynamic:
                raise KvattnError(f"cannot make zero caches of unknown size ({'; '.join(dynamic)}): give the "
                                  f"initial caches, or bind their symbolic dims when compiling (--dim NAME=VALUE)")
            initial_caches = {name: np.zeros(self._specs[name].shape, self._specs[name].dtype) for name in self.links}
        self.module.check_inputs(initial_caches, self.cache_names)
        self._caches = {name: device_buffers.upload(self.module.device, np.asarray(initial_caches[name]))
                        for name in self.links}
        self.steps = 0

    def step(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of the module with this step's inputs and the session's caches."""
        self.module.check_inputs(inputs, self.step_inputs, {name: view.shape for name, view in self._caches.items()})
        rows = self._rows(inputs) if self.static else 0
        if self.static:
            if self.length + rows > self.static.capacity:
                raise KvattnError(f"the static KV cache is full: {self.length} of {self.static.capacity} rows are "
                                  f"used and this step adds {rows}; compile with a larger "
                                  f"--static-kv-cache or reset() the session")
            inputs = {**inputs, self.static.length_input: self._length_array()}
        self.module.check_scatter_bounds(inputs)
        views = [self._caches[name] if name in self.links
                 else device_buffers.upload(self.module.device, np.asarray(inputs[name]))
                 for name in self.module.input_names]
        results = dict(zip(self.module.output_names, self.module.invoke(views)))
        for name, link in self.links.items():
            self._caches[name] = results[link.output]
        self.steps += 1
        self.length += rows
        return {name: self.module.download(results[name], name) for name in self.step_outputs}

    def _length_array(self) -> np.ndarray:
        """The valid rows for the length input, one per batch row (the caches' batch)."""
        shape = self._specs[self.static.length_input].shape
        batch = next(iter(self._caches.values())).shape[0]
        return np.full([batch if size is None else size for size in shape], self.length, np.int64)

    def _rows(self, inputs: Mapping[str, np.ndarray]) -> int:
        """The rows this step adds to static caches: a number, or the size of the dim it names."""
        rows = self.static.rows_per_step
        if isinstance(rows, int):
            return rows
        for name in self.step_inputs:
            spec = self._specs[name]
            if rows in spec.dims:
                return np.shape(inputs[name])[spec.dims.index(rows)]
        raise KvattnError(f"the static KV cache grows by '{rows}' rows a step, but no step input has that dim")

    def caches(self) -> dict[str, np.ndarray]:
        """Host copies of the current caches (static caches: only the valid rows), by input name."""
        arrays = {name: self.module.download(view, name) for name, view in self._caches.items()}
        return {name: array[:, :, :self.length] for name, array in arrays.items()} if self.static else arrays

    def _padded(self, caches: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Initial static caches with `length` rows, zero-padded to the capacity (other state the
        model feeds back, such as a rank-0 window size, as it is)."""
        fixed = {name for name in caches if len(self._specs[name].shape) == 4
                 and self._specs[name].shape[2] == self.static.capacity}
        lengths = {np.shape(caches[name])[2] for name in fixed if np.ndim(caches[name]) == 4}
        if not fixed or len(lengths) != 1 or next(iter(lengths)) > self.static.capacity:
            raise KvattnError(f"initial caches must all be 4D with the same length, at most the capacity "
                              f"{self.static.capacity}; got {[list(np.shape(a)) for a in caches.values()]}")
        length = lengths.pop()
        padding = [(0, 0), (0, 0), (0, self.static.capacity - length), (0, 0)]
        return {name: np.pad(np.asarray(array), padding) if name in fixed else array
                for name, array in caches.items()}, length
