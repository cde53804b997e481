"""kvattn.tensor_scatter against onnx.reference: modes, axes, write indices, ranks."""

from __future__ import annotations

import numpy as np
import pytest

from tests.onnx_models import compare_with_reference, single_node_model

# (cache shape, rows, axis, mode, write indices or None)
CASES = {
    "linear_axis2_per_batch": ((3, 2, 16, 4), 2, 2, "linear", (0, 5, 14)),
    "linear_default_axis": ((2, 4, 10, 8), 1, -2, "linear", (9, 3)),
    "linear_no_indices": ((2, 12, 5), 3, 1, "linear", None),
    "circular_wraps": ((2, 3, 8, 4), 3, 2, "circular", (6, 7)),
    "circular_full_ring": ((1, 6, 2), 6, 1, "circular", (4,)),
    "last_axis": ((2, 3, 9), 2, -1, "linear", (1, 7)),
    "rank5_axis3": ((2, 2, 2, 7, 3), 2, 3, "circular", (5, 0)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_tensor_scatter_matches_reference(name):
    cache_shape, rows, axis, mode, indices = CASES[name]
    rng = np.random.default_rng(sorted(CASES).index(name))
    update_shape = list(cache_shape)
    update_shape[axis] = rows
    inputs = {"past_cache": rng.standard_normal(cache_shape).astype(np.float32),
              "update": rng.standard_normal(update_shape).astype(np.float32)}
    names = ["past_cache", "update"]
    if indices is not None:
        inputs["write_indices"] = np.array(indices, dtype=np.int64)
        names.append("write_indices")
    model = single_node_model("TensorScatter", inputs, names, {"present_cache": (cache_shape, np.float32)},
                              24, mode=mode, axis=axis)
    got, _ = compare_with_reference(model, inputs, rtol=0, atol=0)
    # Only the addressed rows changed.
    changed = np.any(got[0] != inputs["past_cache"], axis=tuple(d for d in range(len(cache_shape)) if d not in (0, axis % len(cache_shape))))
    assert changed.sum() <= cache_shape[0] * rows
