"""What a compiled module needs to be called by ONNX names: the manifest.

It is embedded in the vmfb as the entry function's reflection (`iree.reflection`
`{kvattn.manifest = "<json>"}`), so a .vmfb file is self-describing.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from kvattn.lowering.tensor_types import numpy_dtype

REFLECTION_KEY = "kvattn.manifest"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]
    element: str  # builtin MLIR element type, e.g. "f32"
    # The ONNX dim_param of each axis (None where static or unnamed); () when unknown. Inputs
    # that share a name must agree on its size at run time.
    dims: tuple[str | None, ...] = ()

    @property
    def dtype(self) -> np.dtype:
        return numpy_dtype(self.element)

    def axes(self) -> list[str]:
        """Each axis as its size, else its symbol, else ?."""
        symbols = self.dims or (None,) * len(self.shape)
        return [symbol or ("?" if size is None else str(size)) for size, symbol in zip(self.shape, symbols)]

    def describe(self) -> str:
        """`name: float32[batch,8,?,16]`."""
        return f"{self.name}: {self.dtype.name}[{','.join(self.axes())}]"


@dataclasses.dataclass(frozen=True)
class ScatterBound:
    """A linear TensorScatter whose write_indices come straight from a model input: the runtime
    checks write_indices + rows <= capacity before dispatch."""

    node: str
    write_indices: str
    rows: int
    capacity: int


@dataclasses.dataclass(frozen=True)
class CacheLink:
    """A model input whose updated value is a model output (a KV cache, past → present);
    `aliased`: the output is written into the input's buffer (kvattn-cache-lifetime)."""

    input: str
    output: str
    aliased: bool


@dataclasses.dataclass(frozen=True)
class StaticCacheInfo:
    """Set when the model was compiled with --static-kv-cache: its caches hold `capacity` rows,
    `length_input` says how many are valid, and each step appends `rows_per_step` rows: a
    number, or the name of a model-input dim (e.g. `seq`) whose size in the step's inputs it is."""

    capacity: int
    length_input: str
    rows_per_step: int | str


@dataclasses.dataclass(frozen=True)
class Parameters:
    """Set when the module's weights are IREE parameters (externalized): the archive it needs
    holds each key of `keys` in scope `scope`, of `sizes[i]` bytes. Checked before the module
    is loaded with an archive (runtime/parameters.py)."""

    scope: str
    keys: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)


@dataclasses.dataclass(frozen=True)
class Manifest:
    entry: str
    target: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    scatter_bounds: tuple[ScatterBound, ...] = ()
    nodes: tuple[dict, ...] = ()  # {"node", "onnx_op", "kvattn_op", "lowered_to", "route", "cache"} per raised node
    caches: tuple[CacheLink, ...] = ()
    static_cache: StaticCacheInfo | None = None
    parameters: Parameters | None = None
    rewrites: tuple[str, ...] = ()  # what kvattn.rewrites did to the ONNX model, one line each

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "Manifest":
        raw = json.loads(text)
        return Manifest(
            entry=raw["entry"],
            target=raw["target"],
            inputs=tuple(_tensor_spec(s) for s in raw["inputs"]),
            outputs=tuple(_tensor_spec(s) for s in raw["outputs"]),
            scatter_bounds=tuple(ScatterBound(**b) for b in raw["scatter_bounds"]),
            nodes=tuple(raw["nodes"]),
            caches=tuple(CacheLink(**c) for c in raw["caches"]),
            static_cache=StaticCacheInfo(**raw["static_cache"]) if raw["static_cache"] else None,
            parameters=_parameters(raw.get("parameters")),  # absent in vmfbs from before parameters
            rewrites=tuple(raw.get("rewrites", ())),
        )


def _parameters(raw: dict | None) -> Parameters | None:
    return Parameters(raw["scope"], tuple(raw["keys"]), tuple(raw["sizes"])) if raw else None


def _tensor_spec(raw: dict) -> TensorSpec:
    # vmfbs from before symbolic dims were recorded have no "dims"
    return TensorSpec(raw["name"], tuple(raw["shape"]), raw["element"], tuple(raw.get("dims", ())))
