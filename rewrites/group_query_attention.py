"""onnxruntime's com.microsoft GroupQueryAttention → the ONNX operators kvattn owns.

onnxruntime-genai's model builder and `mobius build --ep cpu` write attention as this contrib
op. With T_b = seqlens_k[b] + 1 (row b's valid keys), S the query length and P the past's
length, onnxruntime 1.32's CPU kernel computes (verified case by case against it):

  first    = S == total_sequence_length           (a first prompt: the past is not read)
  past_b   = 0 if first or no past, else T_b − S   (row b's past length, its causal offset)
  positions (do_rotary) = position_ids[0, 0] + s if first (0 without position_ids), else
             position_ids[b, s] (or past_b + s); Q and the new K are rotated, V is not
  present  = [B, Hkv, max(total, P), D]: rows [0, past_b) of past, the S new rows at past_b
             (right-padded prompt rows too), zeros after them (a present separate from the past)
  keys of query s: j in [lo, end), c = past_b + s + 1, end = min(c, T_b), lo = max(0, c − W)
             (with softcap, onnxruntime's non-flash path: max(0, end − W))
             under a local window W ≥ 0, else 0 (causal=0: every j < T_b)
  output   = softmax(softcap(scale · q·kᵀ)) · v over those keys, scale 0 meaning 1/√D, softcap(x) =
             c · tanh(x / c) with c > 0 (before the mask, as Attention's softcap)

which is written here as

  Q, K, V  = Split (packed QKV) → Reshape [B, S, heads, D] → Transpose [B, heads, S, D]
             → RotaryEmbedding(position_ids = positions) for Q and K (do_rotary)
  present  = Where(row < past_b + S, TensorScatter(Pad(past to max(total, P) rows), K, past_b), 0)
  Y        = Attention(Q, present_key, present_value, mask[b, 1, s, j] = lo ≤ j < end,
                       nonpad_kv_seqlen = T_b, scale, softcap)   (grouped-query: Hkv kv heads)
  output   = Transpose(Y) → Reshape [B, S, H·D]

so kvattn's fused, grouped-query attention reads only the first max(T_b) keys. The model is
raised to opset 24 (TensorScatter, Attention's nonpad_kv_seqlen) first (rewrites/opset.py). Refused, naming the node:
smooth_softmax / head_sink, attention_bias, qk_output, query_seqlens, the windowed
cache (sliding_window_cache=1) and quantized caches. The present is a new buffer (onnxruntime's
separate-buffer semantics; its in-place shared buffer is a property of the caller's bindings).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kvattn.lowering.diagnostics import NodeError, UnsupportedError
from kvattn.rewrites import opset

DOMAIN = "com.microsoft"
OPSET = 24
# Inputs by position (onnxruntime 1.32's schema).
QUERY, KEY, VALUE, PAST_KEY, PAST_VALUE, SEQLENS_K, TOTAL, COS, SIN, POSITION_IDS = range(10)
_REFUSED_INPUTS = {10: "attention_bias", 11: "head_sink", 12: "k_scale", 13: "v_scale", 14: "q_norm_weight",
                   15: "k_norm_weight", 16: "query_seqlens"}


def applies_to(model: onnx.ModelProto) -> bool:
    return any(_is_gqa(node) for node in model.graph.node)


def rewrite(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model with every GroupQueryAttention written in ONNX operators (a new ModelProto),
    and one line per node for `kvattn inspect`."""
    if not applies_to(model):
        return model, []
    model = opset.at_least(model, OPSET, "GroupQueryAttention (TensorScatter, Attention's nonpad_kv_seqlen)")
    shapes = _static_shapes(model)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    nodes, decisions = [], []
    for node in model.graph.node:
        if not _is_gqa(node):
            nodes.append(node)
            continue
        nodes.extend(_Rewrite(node, shapes).nodes())
        decisions.append(f"GroupQueryAttention '{node.name}': RotaryEmbedding, TensorScatter into the present, "
                         f"grouped-query Attention over the first seqlens_k + 1 keys")
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    return result, decisions


def _is_gqa(node: onnx.NodeProto) -> bool:
    return node.op_type == "GroupQueryAttention" and node.domain == DOMAIN


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Each value's dims as shape inference knows them (None where symbolic)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None
                                  for d in value.type.tensor_type.shape.dim]
    for tensor in model.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    return shapes


class _Rewrite:
    def __init__(self, node: onnx.NodeProto, shapes: dict[str, list[int | None]]):
        self.node, self.shapes = node, shapes
        self.name = node.name or f"GroupQueryAttention_{node.output[0]}"
        self.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        self.out: list[onnx.NodeProto] = []
        self.count = 0

    def error(self, message: str) -> UnsupportedError:
        return UnsupportedError("GroupQueryAttention", self.name, message)

    def input(self, index: int) -> str:
        return self.node.input[index] if index < len(self.node.input) else ""

    # -- emitting -------------------------------------------------------------------------------
    def op(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        self.count += 1
        output = f"{self.name}/{hint}_{self.count}"
        self.out.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def const(self, values, hint: str, dtype=np.int64) -> str:
        array = np.array(values, dtype)
        return self.op("Constant", [], hint, value=numpy_helper.from_array(array))

    def dim(self, value: str, axis: int) -> str:
        """Size of `value`'s dim `axis`, int64 [1]."""
        return self.op("Shape", [value], "dim", start=axis, end=axis + 1)

    # -- the rewrite ----------------------------------------------------------------------------
    def nodes(self) -> list[onnx.NodeProto]:
        self._refuse_what_is_not_written()
        heads, kv_heads = self.attrs["num_heads"], self.attrs["kv_num_heads"]
        head = self._head_size(heads, kv_heads)
        query, key, value = self._projections(heads, kv_heads, head)
        one = self.const([1], "one")
        valid = self.op("Add", [self.op("Cast", [self.input(SEQLENS_K)], "seqlens", to=TensorProto.INT64), one],
                        "valid_keys")  # T_b, [B]
        rows = self.dim(query, 2)  # S, [1]
        total = self.op("Cast", [self.op("Reshape", [self.input(TOTAL), one], "total")], "total_i64",
                        to=TensorProto.INT64)
        first = self.op("Equal", [rows, total], "first_prompt")
        zero = self.const([0], "zero")
        has_past = bool(self.input(PAST_KEY))
        past = self.op("Where", [first, zero, self.op("Sub", [valid, rows], "past_rows")], "past") if has_past \
            else self.op("Mul", [valid, zero], "no_past")  # [B]
        positions = self.op("Add", [self.op("Unsqueeze", [past, one], "past_col"),
                                    self.op("Range", [self.const(0, "r0"), self.op("Squeeze", [rows], "s"),
                                                      self.const(1, "r1")], "offsets")], "positions")  # [B, S]
        if self.input(POSITION_IDS):
            given = self.input(POSITION_IDS)
            first_row = self.op("Gather", [given, self.const(0, "r0")], "first_row", axis=0)
            origin = self.op("Gather", [first_row, self.const(0, "r0")], "origin", axis=0)  # position_ids[0, 0]
            positions = self.op("Where", [first, self.op("Add", [origin, positions], "from_origin"), given],
                                "given_positions")
        if self.attrs.get("do_rotary", 0):
            query, key = (self._rotate(x, positions, head) for x in (query, key))
        length = self.op("Max", [total, self.dim(self.input(PAST_KEY), 2)], "present_rows") if has_past else total
        written_end = self.op("Add", [past, rows], "written_end")  # past_b + S: the rows present holds
        presents = [self._present(new, self.input(past_index), past, written_end, length, kv_heads, head)
                    for new, past_index in ((key, PAST_KEY), (value, PAST_VALUE))]
        mask = self._mask(past, valid, rows, length)
        scale = self.attrs.get("scale", 0.0) or 1.0 / math.sqrt(head)
        softcap = {"softcap": float(self.attrs["softcap"])} if self.attrs.get("softcap", 0.0) else {}
        attended = self.op("Attention", [query, *presents, mask, "", "", valid], "attention", scale=float(scale),
                           **softcap)
        merged = self.op("Transpose", [attended], "merged", perm=[0, 2, 1, 3])
        outputs = [self.node.output[0], *(list(self.node.output[1:3]) + ["", ""])[:2]]
        self.out.append(helper.make_node("Reshape", [merged, self.const([0, 0, heads * head], "out_shape")],
                                         [outputs[0]], name=f"{self.name}/output"))
        for present, output in zip(presents, outputs[1:]):
            if output:
                self.out.append(helper.make_node("Identity", [present], [output], name=f"{self.name}/{output}"))
        return self.out

    def _refuse_what_is_not_written(self) -> None:
        for key, what in (("qk_output", "qk_output"),
                          ("sliding_window_cache", "the windowed KV cache (sliding_window_cache=1)")):
            if self.attrs.get(key, 0):
                raise self.error(what)
        if self.attrs.get("smooth_softmax", -1) == 1:
            raise self.error("smooth_softmax")
        for index, what in _REFUSED_INPUTS.items():
            if self.input(index):
                raise self.error(f"the {what} input")
        if self.attrs.get("k_quant_type", b"NONE") not in (b"NONE", "NONE"):
            raise self.error("a quantized KV cache")
        if bool(self.input(KEY)) != bool(self.input(VALUE)) or bool(self.input(PAST_KEY)) != bool(self.input(PAST_VALUE)):
            raise NodeError("GroupQueryAttention", self.name,
                            "key and value (and past_key and past_value) must be given together")

    def _head_size(self, heads: int, kv_heads: int) -> int:
        width = (self.shapes.get(self.input(QUERY)) or [None])[-1]
        parts = heads if self.input(KEY) else heads + 2 * kv_heads
        if width is None or width % parts:
            raise NodeError("GroupQueryAttention", self.name, f"the query's last dim must be static and a multiple "
                                                              f"of {parts} heads (got {width})")
        return width // parts

    def _projections(self, heads: int, kv_heads: int, head: int) -> tuple[str, str, str]:
        """Q, K, V as [B, heads, S, D]."""
        query, key, value = self.input(QUERY), self.input(KEY), self.input(VALUE)
        if not key:
            split = [heads * head, kv_heads * head, kv_heads * head]
            outputs = [f"{self.name}/packed_{part}" for part in ("q", "k", "v")]
            self.out.append(helper.make_node("Split", [query, self.const(split, "split")], outputs,
                                             name=f"{self.name}/split_qkv", axis=-1))
            query, key, value = outputs
        return tuple(self.op("Transpose", [self.op("Reshape", [x, self.const([0, 0, n, head], "heads")], "split")],
                             "bnsh", perm=[0, 2, 1, 3])
                     for x, n in ((query, heads), (key, kv_heads), (value, kv_heads)))

    def _rotate(self, x: str, positions: str, head: int) -> str:
        cos = self.input(COS)
        half = (self.shapes.get(cos) or [None, None])[-1]
        if not cos or not self.input(SIN) or half is None:
            raise NodeError("GroupQueryAttention", self.name,
                            "do_rotary needs cos_cache and sin_cache of static shape [max positions, rotary dim / 2]")
        attrs = {"interleaved": int(self.attrs.get("rotary_interleaved", 0))}
        if 2 * half != head:
            attrs["rotary_embedding_dim"] = 2 * half
        return self.op("RotaryEmbedding", [x, cos, self.input(SIN), positions], "rotated", **attrs)

    def _present(self, new: str, past_input: str, past: str, written_end: str, length: str, kv_heads: int,
                 head: int) -> str:
        """[B, Hkv, max(total, P), D]: the past's rows, the new rows at past_b, zeros after them."""
        if past_input:
            extra = self.op("Sub", [length, self.dim(past_input, 2)], "extra_rows")
            zeros = self.const([0] * 6, "pads_head")
            pads = self.op("Concat", [zeros, extra, self.const([0], "pads_tail")], "pads", axis=0)
            buffer = self.op("Pad", [past_input, pads], "grown")
        else:
            shape = self.op("Concat", [self.dim(new, 0), self.const([kv_heads], "kv"), length,
                                       self.const([head], "d")], "present_shape", axis=0)
            buffer = self.op("ConstantOfShape", [shape], "empty",
                             value=numpy_helper.from_array(np.zeros([1], np.float32)))
            buffer = self.op("CastLike", [buffer, new], "empty_typed")
        written = self.op("TensorScatter", [buffer, new, past], "written", axis=2, mode="linear")
        row = self.op("Range", [self.const(0, "r0"), self.op("Squeeze", [length], "l"), self.const(1, "r1")], "rows")
        kept = self.op("Less", [self.op("Reshape", [row, self.const([1, 1, -1, 1], "row_shape")], "row4"),
                                self.op("Reshape", [written_end, self.const([-1, 1, 1, 1], "end_shape")], "end4")],
                       "kept")
        present = self.op("Where", [kept, written, self.op("CastLike", [self.const(0.0, "z", np.float32), new],
                                                                        "zero")], "zeroed")
        return self.op("Reshape", [present, self.const([0, kv_heads, -1, head], "present_shape")], "present")

    def _mask(self, past: str, valid: str, rows: str, length: str) -> str:
        """bool [B, 1, S, L]: key j of query s is read iff lo <= j < end, with c = past_b + s + 1,
        end = min(c, T_b) and lo = max(0, c - W) under a local window W (onnxruntime's default CPU
        path; for a right-padded query row c > T_b, so its window may hold no key: zeros)."""
        one = self.const([1], "one")
        keys = self.op("Range", [self.const(0, "r0"), self.op("Squeeze", [length], "l"), self.const(1, "r1")], "keys")
        valid3 = self.op("Reshape", [valid, self.const([-1, 1, 1], "valid3_shape")], "valid3")  # [B, 1, 1]
        mask = self.op("Less", [keys, valid3], "valid_keys")  # [B, 1, L]
        if self.attrs.get("causal", 1):
            s = self.op("Range", [self.const(0, "r0"), self.op("Squeeze", [rows], "s"), self.const(1, "r1")],
                        "queries")
            causal = self.op("Add", [self.op("Add", [self.op("Unsqueeze", [past, one], "past_col"), s], "at"),
                                     self.const(1, "r1")], "causal_end")  # c, [B, S]
            causal3 = self.op("Unsqueeze", [causal, self.const([2], "axis2")], "causal3")  # [B, S, 1]
            mask = self.op("And", [mask, self.op("Less", [keys, causal3], "before_causal_end")], "causal")
            window = self.attrs.get("local_window_size", -1)
            if window >= 0:
                # onnxruntime's CPU kernel takes its flash path unless softcap is set; its other path starts
                # the window W keys before min(c, T_b) (they differ only on right-padded query rows).
                end = self.op("Min", [causal3, valid3], "window_end") if self.attrs.get("softcap", 0.0) else causal3
                start = self.op("Sub", [end, self.const(window, "w")], "window_start")
                mask = self.op("And", [mask, self.op("GreaterOrEqual", [keys, start], "after_start")], "windowed")
        return self.op("Unsqueeze", [mask, one], "mask")  # [B, 1, S or 1, L]
