"""Per-shape CPU tile sizes (a `compilation_info` on the op) for the fused attention, and for the
unfused route's two contractions in a decode (`cpu_decode_contraction_info`) and in a prefill
(`cpu_prefill_scores_info`, `cpu_prefill_values_info`).

IREE's default CPU tiling for iree_linalg_ext.attention reduces over 2 keys at a time and
leaves decode ~50× and prefill ~40× above what a tuned config reaches (measured with IREE 3.13
on the benchmark shapes, 32/8 heads, head 128: decode 20 ms → 0.4 ms, prefill 512 1180 ms →
29 ms). The rule, over the iteration space (b, h, g, s, l, d, e) of `attention_operands.DIMS`:

  rows      S ≥ 8: 8 query positions per vector tile (64 per workgroup), one query head;
            S < 8: all S positions and up to 8/S query heads of the group (decode: 4 of G);
            S dynamic: both configs, on two copies of the op chosen at run time by S < 8
            (decode tiles as for S = 1)
  e         the whole value head per tile;  b, h: one at a time
  l         reduce over 8 keys per step (fewer when there are fewer keys)
  d         not tiled (the whole head is one dot product)

IREE reshapes the op before applying the config: it drops static unit dimensions and collapses
neighbouring dimensions that every operand reads together (e.g. g and s of an unmasked 4D
attention become one row dimension M = G·S). With a fused dequantization in the attention's
dispatch that prediction holds only for static shapes, so a dynamic one keeps IREE's defaults. The lists must match that reshaped op (a list of
the wrong length or order compiles and gives wrong numbers), so `iree_loop_groups` predicts
it from the operands' roles, and a collapsed dimension's tile is the product of its parts'.
Only f32 attention gets a config: the other element types keep IREE's default tiles.
The config's 8×8×head vectors need `--iree-llvmcpu-fail-on-large-vector=false` (llvm-cpu flags).
"""

from __future__ import annotations

import math
from typing import Collection, Sequence

from kvattn.lowering.attention_operands import DIMS

TILED_ELEMENTS = ("f32",)  # attention compute types that get a config
KEY_STEP = 8  # keys reduced per step
ROWS = 8  # query rows per vector tile
ROWS_PER_WORKGROUP = 64
FEW_QUERIES = ROWS  # a dynamic query count below this takes the decode tiles (chosen at run time)
# The unfused route's decode contractions (cpu_decode_contraction_info)
DECODE_ROWS = 4  # query rows per vector tile
QK_KEYS_PER_WORKGROUP, QK_KEYS_PER_VECTOR, QK_HEAD_STEP = 64, 16, 16
PV_VALUE_TILE, PV_VALUE_TILE_NARROW_V, PV_KEY_STEP = 128, 64, 4  # value dims: an f32 V; an int8/fp8 V
# The unfused route's prefill Q·Kᵀ (cpu_prefill_scores_info); the workgroup is IREE's default
PREFILL_QK_ROWS, PREFILL_QK_KEYS, PREFILL_QK_HEAD_STEP = 16, 16, 4
PREFILL_QK_WORKGROUP = {"h": 4, "g": 4, "s": 64, "l": 64}
# ... and its P·V (cpu_prefill_values_info), over g·s as one row loop; the workgroup is IREE's default
PREFILL_PV_ROWS, PREFILL_PV_VALUES, PREFILL_PV_KEY_STEP = 8, 32, 1
PREFILL_PV_WORKGROUP = {"h": 4, "g": 1, "s": 64, "e": 64}


def iree_loop_groups(size: dict[str, int | None], operand_roles: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The loops of the attention as IREE's dispatch formation leaves them: static unit dims
    dropped, then runs of neighbouring dims merged when every operand reads both or neither,
    next to each other in the same order."""
    kept = [dim for dim in DIMS if size[dim] != 1]
    roles = [[r for r in operand if r in kept] for operand in operand_roles]

    def read_together(first: str, second: str) -> bool:
        """Every operand reads both or neither, next to each other, all in the same order."""
        orders = set()
        for r in roles:
            if (first in r) != (second in r):
                return False
            if first in r:
                if abs(r.index(first) - r.index(second)) != 1:
                    return False
                orders.add(r.index(first) < r.index(second))
        return len(orders) <= 1

    groups = [[kept[0]]] if kept else []
    for dim in kept[1:]:
        if read_together(groups[-1][-1], dim):
            groups[-1].append(dim)
        else:
            groups.append([dim])
    return [tuple(group) for group in groups]


def cpu_compilation_info(size: dict[str, int | None], operand_roles: list[tuple[str, ...]],
                         element: str, queries: int | None = None, fused_producers: bool = False) -> str | None:
    """The compilation_info attribute for an f32 attention with these dim sizes (None: dynamic)
    whose operands (Q, K, V, mask, output) read the dims in `operand_roles`, or None when IREE's
    defaults should stay. `queries` overrides the query count the rows are chosen for (a
    dynamic count that is known to be small at run time). With `fused_producers` (Q/K/V
    computed by elementwise ops that join the attention's dispatch: a fused dequantization) and
    a dynamic size, IREE's defaults stay: how IREE then reshapes the loops is not predicted here
    (tiles for a merged b·h failed to compile with a dynamic batch; with a dynamic query count and
    no mask the tiled op gave wrong numbers)."""
    if element not in TILED_ELEMENTS or (fused_producers and None in size.values()):
        return None
    queries, group = queries or size["s"], size["g"]
    if queries is None or queries >= ROWS:  # prefill, or a query count known only at run time
        vector_rows = {"g": 1, "s": ROWS}
        workgroup_rows = {"g": 1, "s": ROWS_PER_WORKGROUP if queries is None else min(queries, ROWS_PER_WORKGROUP)}
    else:
        vector_rows = {"g": min(group, max(1, ROWS // max(queries, 1))), "s": queries}
        workgroup_rows = vector_rows
    keys = size["l"]
    key_step = KEY_STEP if keys is None else min(KEY_STEP, keys)
    distribution = {"b": 1, "h": 1, **workgroup_rows, "l": 0, "d": 0, "e": size["e"]}
    parallel = {"b": 1, "h": 1, **vector_rows, "l": 0, "d": 0, "e": size["e"]}
    reduction = {**dict.fromkeys(DIMS, 0), "l": key_step}
    groups = iree_loop_groups(size, operand_roles)
    return _compilation_info(groups, distribution, parallel, reduction, "LinalgExtTileAndVectorize")


def cpu_decode_contraction_info(loops: Sequence[str], reduced: str, size: dict[str, int | None],
                                cache_element: str = "f32") -> str | None:
    """The compilation_info attribute for one of the unfused route's two contractions in a decode
    (fewer than FEW_QUERIES queries; else None): Q·Kᵀ (`reduced` "d") or P·V (`reduced` "l") over
    a K or V of `cache_element`, a linalg.generic over the non-unit dims of `loops`
    (`tiled_contraction_loops`); None (IREE's defaults) when a size other than the key count is
    dynamic (or zero).
    IREE's defaults in the decode model (32/8 heads, head 128; `--iree-hal-dump-executable-
    configurations-to`): P·V 4 rows × 16 value dims (32 for an int8 V), 16 keys per step; Q·Kᵀ 4
    rows × 16 keys (64 per workgroup), 16 head dims per step for an f32 K (kept here), 32 keys
    for an int8 K, which transposes twice the tile. Measured per dispatch
    (benchmarks.dispatch_profile, 4000 valid keys, a 2-core Xeon, IREE 3.13): P·V 0.65 → 0.36 ms,
    int8 Q·Kᵀ 0.69 → 0.47 ms, f32 Q·Kᵀ unchanged (0.57 → 0.59) (P·V then took 64 value dims).
    An f32 V then takes the whole value head up to 128 per vector tile: whole calls on a 2-core
    EPYC VM, interleaved, median of 60: 4000 valid 2.12 → 1.66 ms, 16384 / 16000 8.76 → 6.86 ms,
    batch 4 / 4000 10.8 → 8.9 ms (1 or 2 keys per step slower); an int8 V keeps 64 (with 128:
    4000 valid 0.93 → 1.01 ms, 16000 3.60 → 3.95).
    Fewer head dims per step for an f32 K (a K tile of 16 keys × 4 head dims reads a quarter of
    each cache line per step) was faster on one machine and much slower on another, so 16 stays:
    per Q·Kᵀ dispatch at 16384 / 16000 valid, 16 → 4 head dims 6.3–7.0 → 5.5–6.3 ms on a 2-core
    Xeon VM (five A/B runs), but 4.1–5.1 → 6.4–6.6 ms on a 2-core EPYC VM (4000 valid 0.98–1.33
    → 1.51–1.66 ms; 8 and 32 head dims, 8 and 32 keys per vector slower still there).
    Both peel their loops (`enable_loop_peeling`, as IREE's own x86 matmul configs do): with the
    key count dynamic, IREE otherwise masks every vector tile (in the dispatch's assembly: masked
    loads and a blend after each FMA, one serial chain per accumulator). Whole calls, A/B twice,
    min of 30: 10–15% faster while K/V stay in cache (1025 valid 0.42–0.45 → 0.36–0.38 ms, 4000
    valid 1.38 → 1.20–1.25 ms; batch 4, 1025 valid 1.31–1.39 → 1.14–1.15 ms), unchanged beyond
    it (16000 valid; batch 4, 4000 valid)."""
    queries = size["s"]
    if any(size[dim] in (None, 0) for dim in loops if dim != "l") or queries >= FEW_QUERIES:
        return None  # dynamic, empty, or not a decode
    vector_queries = min(queries, DECODE_ROWS)
    rows = {"g": min(size["g"], max(1, DECODE_ROWS // vector_queries)), "s": vector_queries}
    whole_rows = {"g": size["g"], "s": queries}
    if reduced == "d":
        distribution = {"l": QK_KEYS_PER_WORKGROUP, "d": 0}
        parallel = {"l": QK_KEYS_PER_VECTOR, "d": 0}
        step = {"d": QK_HEAD_STEP}
    else:
        values = PV_VALUE_TILE if cache_element == "f32" else PV_VALUE_TILE_NARROW_V
        distribution = parallel = {"e": min(size["e"], values), "l": 0}
        step = {"l": PV_KEY_STEP}
    ones = dict.fromkeys(loops, 1)
    groups = tiled_contraction_loops(loops, size)
    return _compilation_info(groups, {**ones, **whole_rows, **distribution}, {**ones, **rows, **parallel},
                             {**dict.fromkeys(loops, 0), **step}, "DoubleTilingExpert", peel=True)


def cpu_prefill_scores_info(loops: Sequence[str], size: dict[str, int | None], elements: Collection[str]) -> str | None:
    """The compilation_info attribute for the unfused route's Q·Kᵀ in a prefill (a contraction
    over "d" of Q and K whose `elements` are f32, with ≥ PREFILL_QK_ROWS queries and all sizes static; else
    None): 16 queries × 16 keys per vector tile, 4 head dims per step, over the non-unit dims of
    `loops`. IREE's default (8 queries × 16 keys, 16 head dims per step) transposes each 16 × 16
    K tile in registers for 8 rows; 16 rows share each transpose (8 × 32 × 4 and 16 × 16 × 8 were
    slower, 16 × 32 spills). Measured per dispatch (benchmarks.dispatch_profile, causal prefill,
    32/8 heads, head 128, 64-query blocks, a 2-core Xeon, IREE 3.13): 64 × 512 keys 1.60–1.65 →
    1.37–1.47 ms, 64 × 2048 keys 7.2–7.6 → 6.5–6.6 ms; whole calls (A/B twice, medians) prefill
    512 19.1–20.1 → 17.5–17.9 ms, 2048 302–303 → 265–271 ms. IREE keeps the config where g and s
    stay two loops in the dispatch (a mask or a query block's bias read over (s, l), or g = 1).
    (P·V, whose g and s IREE merges, gets its tiles over g·s: cpu_prefill_values_info.)"""
    if not _tiled_prefill(loops, size, elements):
        return None
    ones = dict.fromkeys(loops, 1)
    groups = tiled_contraction_loops(loops, size)
    return _compilation_info(groups, {**ones, **PREFILL_QK_WORKGROUP, "d": 0},
                             {**ones, "s": PREFILL_QK_ROWS, "l": PREFILL_QK_KEYS, "d": 0},
                             {**dict.fromkeys(loops, 0), "d": PREFILL_QK_HEAD_STEP}, "DoubleTilingExpert", peel=True)


def cpu_prefill_values_info(loops: Sequence[str], size: dict[str, int | None], elements: Collection[str]) -> str | None:
    """The compilation_info attribute for the unfused route's P·V in a prefill (a contraction over
    "l" of f32 probabilities and V, `elements`, with ≥ PREFILL_QK_ROWS queries and all sizes static;
    else None), written over g·s as one row loop (`tiled_contraction_loops` with `merged_rows`:
    IREE merges them anyway, as every operand reads them together, and would rebuild the op
    without its config): 8 rows × 32 value dims per vector tile, 1 key per step (IREE's default:
    8 × 16, 16 keys per step). Measured per dispatch (benchmarks.dispatch_profile, causal prefill
    512, 32/8 heads, head 128, 64-query blocks, a 2-core Xeon, IREE 3.13): 256 rows × 512 keys
    1.26–1.32 → 1.02–1.03 ms (A/B twice: 1.31–1.52 → 1.07–1.08, the call's span 19.8–20.0 →
    17.4–18.1 ms); 8 × 32 × 2, 4 × 64, 8 × 64, 16 × 16 (× 1) and 16 × 16 × 4 were no faster,
    8 × 48 27 ms (not a power of two). Whole calls, A/B twice, median (min) of 6: prefill 2048
    284 / 264 (279 / 260) → 261 / 252 (253 / 248) ms. At batch > 1 IREE merges b and h too (every
    operand reads them together) and P·V runs on its defaults."""
    if not _tiled_prefill(loops, size, elements):
        return None
    ones = dict.fromkeys(loops, 1)
    groups = tiled_contraction_loops(loops, size, merged_rows=True)
    return _compilation_info(groups, {**ones, **PREFILL_PV_WORKGROUP, "l": 0},
                             {**ones, "s": PREFILL_PV_ROWS, "e": PREFILL_PV_VALUES, "l": 0},
                             {**dict.fromkeys(loops, 0), "l": PREFILL_PV_KEY_STEP}, "DoubleTilingExpert", peel=True)


def _tiled_prefill(loops: Sequence[str], size: dict[str, int | None], elements: Collection[str]) -> bool:
    """Whether a prefill contraction gets tiles: f32 operands (`elements`), every size of `loops`
    static and non-zero, and at least PREFILL_QK_ROWS queries."""
    return (set(elements) == {"f32"} and all(size[dim] not in (None, 0) for dim in loops)
            and size["s"] >= PREFILL_QK_ROWS)


def decode_score_roles(roles: Sequence[str], value_loops: Sequence[str],
                       size: dict[str, int | None]) -> tuple[str, ...]:
    """The layout of a decode's scores, `roles` (b, h, g, s, l) with h moved before b when the
    decode's P·V (a contraction over `value_loops`) gets tiles at batch > 1. With b and h in
    the same order in P and V (and the output), IREE's CollapseDimensions merges them into one
    loop inside P·V's dispatch and rebuilds the op without its config; with P laid out h before
    b they stay two loops and the tiles stay. Measured per dispatch (benchmarks.dispatch_profile, batch 4, capacity 4096, a
    2-core Xeon, IREE 3.13): P·V 5.14 → 3.07 ms at 4000 valid keys, 0.66 → 0.54 ms at 1025."""
    if size["b"] in (None, 0, 1) or cpu_decode_contraction_info(value_loops, "l", size) is None:
        return tuple(roles)
    rest = [r for r in roles if r not in ("b", "h")]
    return ("h", "b", *rest)


def tiled_contraction_loops(loops: Sequence[str], size: dict[str, int | None],
                            merged_rows: bool = False) -> list[tuple[str, ...]]:
    """The loops a tiled contraction (decode or prefill) is written over, each as the dims it
    spans: its dims but the static unit ones, each its own loop; with `merged_rows`, s joins g in
    one loop when both are there (the caller has checked that every operand reads them next to
    each other, g first). (IREE rebuilds an op without its config when it drops unit dims; merging
    b and h too, as IREE does inside a dispatch, would copy the key-sliced cache outside one.)"""
    groups = [(dim,) for dim in loops if size[dim] != 1]
    if merged_rows and ("g",) in groups and ("s",) in groups:
        groups.remove(("s",))
        groups[groups.index(("g",))] = ("g", "s")
    return groups


def _compilation_info(groups, distribution: dict[str, int], parallel: dict[str, int], reduction: dict[str, int],
                      pipeline: str, peel: bool = False) -> str:
    """The attribute with these per-dim tiles (a merged loop's tile: the product of its dims'),
    with `peel`: loops whose size the tile does not divide get a remainder loop."""
    translation_options = ", {enable_loop_peeling}" if peel else ""
    def tiles(sizes: dict[str, int]) -> str:
        return "[" + ", ".join(str(math.prod(sizes[dim] for dim in group)) for group in groups) + "]"

    return (f"#iree_codegen.compilation_info<lowering_config = #iree_cpu.lowering_config<"
            f"distribution = {tiles(distribution)}, vector_common_parallel = {tiles(parallel)}, "
            f"vector_reduction = {tiles(reduction)}>, translation_info = #iree_codegen.translation_info<"
            f"pipeline = #iree_cpu.pipeline<{pipeline}>{translation_options}>>")
