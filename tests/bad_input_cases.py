"""Bad and edge inputs for compiled models, run one subprocess per group by tests/test_bad_input.py.

    python -m tests.bad_input_cases NAME [NAME ...]

compiles and runs each named case on the IREE runtime and prints one JSON line per case, flushed
before the next case starts (so a crash is pinned to the case after the last line):
    {"case": NAME, "outcome": "match" | "error" | "mismatch" | "traceback", "detail": ...}
"match": kvattn's outputs equal onnx.reference's; "error": a kvattn error (KvattnError);
"mismatch": kvattn returned something else than the reference, or the reference refused the
inputs and kvattn did not, or the caller's arrays were modified; "traceback": any other exception.

Index sweeps (`CASES`): TensorScatter `write_indices` and RotaryEmbedding `position_ids` set to
each of INDEX_VALUES, given as a model input, stored as an initializer, or computed inside the
model (Add of an input and a constant 1, so the runtime wrapper cannot see it).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import tempfile
import traceback
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

CAPACITY = 6  # TensorScatter cache length; RotaryEmbedding cos/sin cache rows
INDEX_VALUES = {"min32": -2**31, "below": -CAPACITY - 1, "minus1": -1, "zero": 0, "last": CAPACITY - 1,
                "capacity": CAPACITY, "huge": 2**40}
SOURCES = ("input", "initializer", "computed")


@dataclasses.dataclass
class Case:
    model: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    target: str = "llvm-cpu"
    tolerance: float = 1e-5  # relative and absolute


def _index_source(name: str, values: np.ndarray, source: str):
    """(nodes, graph inputs, initializers, feeds) that give `name` the int64 `values`."""
    info = helper.make_tensor_value_info
    if source == "input":
        return [], [info(name, TensorProto.INT64, values.shape)], [], {name: values}
    if source == "initializer":
        return [], [], [numpy_helper.from_array(values, name)], {}
    one = numpy_helper.from_array(np.ones(values.shape, np.int64), f"{name}_one")
    node = helper.make_node("Add", [f"{name}_minus_one", one.name], [name], name=f"{name}_add")
    return ([node], [info(f"{name}_minus_one", TensorProto.INT64, values.shape)], [one],
            {f"{name}_minus_one": values - 1})


def _model(nodes, inputs, outputs, initializers, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bad_input", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def scatter_case(mode: str, source: str, value: int, target: str = "llvm-cpu") -> Case:
    """A batch-2 cache [2, 1, CAPACITY, 4] written 2 rows at write_indices [value, 1]."""
    rng = np.random.default_rng(0)
    cache = rng.standard_normal((2, 1, CAPACITY, 4)).astype(np.float32)
    update = rng.standard_normal((2, 1, 2, 4)).astype(np.float32)
    nodes, index_inputs, initializers, feeds = _index_source("write_indices", np.array([value, 1], np.int64), source)
    info = helper.make_tensor_value_info
    nodes.append(helper.make_node("TensorScatter", ["past_cache", "update", "write_indices"], ["present_cache"],
                                  name="cache_update", mode=mode, axis=2))
    model = _model(nodes, [info("past_cache", TensorProto.FLOAT, cache.shape),
                           info("update", TensorProto.FLOAT, update.shape), *index_inputs],
                   [info("present_cache", TensorProto.FLOAT, cache.shape)], initializers, 24)
    return Case(model, {"past_cache": cache, "update": update, **feeds}, target)


def rotary_case(source: str, value: int) -> Case:
    """RotaryEmbedding of X [1, 2, 3, 8] at position_ids [[value, 0, 1]], caches [CAPACITY, 4]."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 3, 8)).astype(np.float32)
    angles = rng.standard_normal((CAPACITY, 4)).astype(np.float32)
    nodes, index_inputs, initializers, feeds = _index_source("position_ids", np.array([[value, 0, 1]], np.int64),
                                                             source)
    info = helper.make_tensor_value_info
    nodes.append(helper.make_node("RotaryEmbedding", ["X", "cos_cache", "sin_cache", "position_ids"], ["Y"],
                                  name="rope"))
    model = _model(nodes, [info("X", TensorProto.FLOAT, x.shape), info("cos_cache", TensorProto.FLOAT, angles.shape),
                           info("sin_cache", TensorProto.FLOAT, angles.shape), *index_inputs],
                   [info("Y", TensorProto.FLOAT, x.shape)], initializers, 23)
    return Case(model, {"X": x, "cos_cache": np.cos(angles), "sin_cache": np.sin(angles), **feeds})


CASES: dict[str, Callable[[], Case]] = {}
for _mode in ("linear", "circular"):
    for _source in SOURCES:
        for _label, _value in INDEX_VALUES.items():
            CASES[f"scatter-{_mode}-{_source}-{_label}"] = (
                lambda m=_mode, s=_source, v=_value: scatter_case(m, s, v))
for _label, _value in INDEX_VALUES.items():  # Vulkan reduces circular indices in 32 bits
    CASES[f"scatter-circular-vulkan-input-{_label}"] = lambda v=_value: scatter_case("circular", "input", v, "vulkan")
for _source in SOURCES:
    for _label, _value in INDEX_VALUES.items():
        CASES[f"rotary-{_source}-{_label}"] = lambda s=_source, v=_value: rotary_case(s, v)


def register(name: str):
    def add(builder: Callable[[], Case]):
        CASES[name] = builder
        return builder

    return add


def run_case(name: str, work: pathlib.Path) -> dict:
    from kvattn.lowering.diagnostics import KvattnError
    from kvattn.runtime import compiler
    from kvattn.runtime.module import CompiledModule

    case = CASES[name]()
    try:
        expected = ReferenceEvaluator(case.model).run(None, dict(case.inputs))
    except Exception as exc:  # the reference refuses these inputs
        expected = exc
    originals = {key: value.copy() for key, value in case.inputs.items()}
    path = work / f"{name}.onnx"
    onnx.save(case.model, path)
    try:
        module = CompiledModule(compiler.compile_cached(path, case.target))
        got = module.run(case.inputs)
    except KvattnError as exc:
        return {"outcome": "error", "detail": str(exc)}
    except Exception:
        return {"outcome": "traceback", "detail": traceback.format_exc()}
    if any(not np.array_equal(case.inputs[key], value) for key, value in originals.items()):
        return {"outcome": "mismatch", "detail": "the caller's input arrays were modified"}
    if isinstance(expected, Exception):
        return {"outcome": "mismatch", "detail": f"onnx.reference refused ({expected!r}); kvattn returned a result"}
    for output, reference in zip(module.output_names, expected):
        result = got[output]
        if result.shape != reference.shape or not np.allclose(result, reference, rtol=case.tolerance, atol=case.tolerance,
                                                              equal_nan=True):
            return {"outcome": "mismatch", "detail": f"{output}: kvattn {result.ravel()[:8]} "
                                                     f"vs onnx.reference {reference.ravel()[:8]}"}
    return {"outcome": "match", "detail": ""}


def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            print(json.dumps({"case": name, **run_case(name, pathlib.Path(work))}), flush=True)



def _attention_case(inputs: dict[str, np.ndarray], names: list[str], outputs: dict, opset: int = 23,
                    target: str = "llvm-cpu", **attributes) -> Case:
    from tests.onnx_models import single_node_model

    model = single_node_model("Attention", inputs, names, outputs, opset, node_name="attn",
                              output_names=[name if name in outputs else "" for name in
                                            ("Y", "present_key", "present_value", "qk_matmul_output")
                                            ][:1 + max(("Y", "present_key", "present_value", "qk_matmul_output"
                                                        ).index(o) for o in outputs)], **attributes)
    return Case(model, inputs, target)


def masked_rows_case(fill: float, route: str, dtype=np.float32, second: float | None = None) -> Case:
    """Attention whose float mask fills query row 0 entirely (and key 0 of row 1) with `fill`
    (transformers writes finfo(dtype).min), on one of kvattn's attention routes; with `second`,
    key 2 of row 0 holds that value instead."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(shape).astype(dtype) for shape in ((1, 2, 3, 8), (1, 2, 5, 8), (1, 2, 5, 8)))
    mask = np.zeros((3, 5), dtype)
    mask[0, :] = fill
    mask[1, 0] = fill
    if second is not None:
        mask[0, 2] = second
    inputs = {"Q": q, "K": k, "V": v, "attn_mask": mask}
    names = ["Q", "K", "V", "attn_mask"]
    outputs = {"Y": ((1, 2, 3, 8), dtype)}
    opset, target, attributes = 23, "llvm-cpu", {}
    if route == "fused" and dtype != np.float32:  # else the reference-rounding (unfused) route
        attributes["softmax_precision"] = TensorProto.FLOAT
    if route == "unfused":  # qk_matmul_output materializes the scores
        outputs["qk_matmul_output"] = ((1, 2, 3, 5), dtype)
    elif route == "nonpad":
        inputs["nonpad_kv_seqlen"] = np.array([4], np.int64)
        names += ["", "", "nonpad_kv_seqlen"]
        opset = 24
    elif route == "vulkan":
        target = "vulkan"
    case = _attention_case(inputs, names, outputs, opset, target, **attributes)
    # Scores offset by a fill of moderate size lose log2(|fill|) - 23 bits to rounding, in
    # kvattn and in the reference alike (each rounds s + fill in its own order).
    case.tolerance = max(1e-5, min(abs(fill), 1e6) * 2e-7)
    return case


_FILLS = {"f32min": float(np.finfo(np.float32).min), "minus1e30": -1e30, "minus1e4": -1e4}
for _route in ("fused", "unfused", "nonpad", "vulkan"):
    for _label, _fill in _FILLS.items():
        CASES[f"mask-{_label}-{_route}"] = lambda f=_fill, r=_route: masked_rows_case(f, r)
for _route in ("fused", "unfused"):
    CASES[f"mask-f16min-{_route}"] = lambda r=_route: masked_rows_case(float(np.finfo(np.float16).min), r,
                                                                       np.float16)
    CASES[f"mask-mixedhuge-{_route}"] = lambda r=_route: masked_rows_case(_FILLS["f32min"], r, second=-3e38)


def _qkv(queries: int = 3, keys: int = 5, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {name: rng.standard_normal((1, 2, length, 8)).astype(dtype)
            for name, length in (("Q", queries), ("K", keys), ("V", keys))}


@register("attention-zero-queries")
def _zero_queries() -> Case:
    return _attention_case(_qkv(queries=0), ["Q", "K", "V"], {"Y": ((1, 2, 0, 8), np.float32)})


@register("attention-zero-keys")
def _zero_keys() -> Case:
    return _attention_case(_qkv(keys=0), ["Q", "K", "V"], {"Y": ((1, 2, 3, 8), np.float32)})


@register("attention-softcap-negative")
def _negative_softcap() -> Case:
    return _attention_case(_qkv(), ["Q", "K", "V"], {"Y": ((1, 2, 3, 8), np.float32)}, softcap=-1.0)


@register("attention-softcap-nan")
def _nan_softcap() -> Case:
    return _attention_case(_qkv(), ["Q", "K", "V"], {"Y": ((1, 2, 3, 8), np.float32)}, softcap=float("nan"))


@register("attention-scale-nan")
def _nan_scale() -> Case:
    return _attention_case(_qkv(), ["Q", "K", "V"], {"Y": ((1, 2, 3, 8), np.float32)}, scale=float("nan"))


@register("scatter-zero-rows")
def _zero_rows() -> Case:
    rng = np.random.default_rng(2)
    inputs = {"past_cache": rng.standard_normal((2, 1, CAPACITY, 4)).astype(np.float32),
              "update": np.zeros((2, 1, 0, 4), np.float32), "write_indices": np.array([1, 2], np.int64)}
    info = helper.make_tensor_value_info
    node = helper.make_node("TensorScatter", list(inputs), ["present_cache"], name="cache_update", axis=2)
    model = _model([node], [info(name, TensorProto.INT64 if name == "write_indices" else TensorProto.FLOAT, a.shape)
                            for name, a in inputs.items()],
                   [info("present_cache", TensorProto.FLOAT, inputs["past_cache"].shape)], [], 24)
    return Case(model, inputs)


_FLEX_CONSTANTS = {
    "raw-data": lambda: {"value": numpy_helper.from_array(np.array(2.0, np.float32), "cap")},  # raw_data
    "typed": lambda: {"value": helper.make_tensor("cap", TensorProto.FLOAT, [], [2.0])},
    "value-float": lambda: {"value_float": 2.0},
    "value-floats": lambda: {"value_floats": [2.0]},
    "fp16-raw-data": lambda: {"value": numpy_helper.from_array(np.array(2.0, np.float16), "cap")},  # then a Cast
}


def flex_softcap_case(form: str) -> Case:
    """FlexAttention with a softcap score_mod whose cap is a Constant written in `form`."""
    element = TensorProto.FLOAT
    scalar = lambda name: helper.make_tensor_value_info(name, element, [])  # noqa: E731
    constant = [helper.make_node("Constant", [], ["c"], **_FLEX_CONSTANTS[form]())]
    if form.startswith("fp16"):
        constant = [helper.make_node("Constant", [], ["c16"], **_FLEX_CONSTANTS[form]()),
                    helper.make_node("Cast", ["c16"], ["c"], to=TensorProto.FLOAT)]
    score_mod = helper.make_graph(
        constant + [helper.make_node("Div", ["score", "c"], ["d"]), helper.make_node("Tanh", ["d"], ["t"]),
                    helper.make_node("Mul", ["t", "c"], ["out"])], "softcap", [scalar("score")], [scalar("out")])
    inputs = {name.lower(): value for name, value in _qkv().items()}
    info = helper.make_tensor_value_info
    node = helper.make_node("FlexAttention", ["q", "k", "v"], ["y"], name="flex", domain="ai.onnx.preview",
                            score_mod=score_mod)
    graph = helper.make_graph([node], "flex", [info(n, element, a.shape) for n, a in inputs.items()],
                              [info("y", element, (1, 2, 3, 8))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24),
                                                    helper.make_opsetid("ai.onnx.preview", 1)])
    return Case(model, inputs)


for _form in _FLEX_CONSTANTS:
    CASES[f"flex-constant-{_form}"] = lambda f=_form: flex_softcap_case(f)


@register("unknown-domain")
def _unknown_domain() -> Case:
    info = helper.make_tensor_value_info
    node = helper.make_node("Relu", ["x"], ["y"], name="custom_relu", domain="com.example")
    graph = helper.make_graph([node], "custom", [info("x", TensorProto.FLOAT, [4])], [info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24), helper.make_opsetid("com.example", 1)])
    return Case(model, {"x": np.array([-1.0, 0.0, 1.0, 2.0], np.float32)})


if __name__ == "__main__":
    main(sys.argv[1:])
