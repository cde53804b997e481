"""Lowering choices that depend on the target (set per target in kvattn.runtime.targets)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LoweringOptions:
    # Let the attention's indexing maps absorb the [B, S, H·D] layout of 3D inputs (no
    # transposes). False: transpose 3D Q/K/V to [B, H, S, D] first; IREE's attention
    # decomposition (used for SPIR-V) miscomputes with permuted maps.
    attention_layout_in_maps: bool = True
    # Compute fp16/bf16 attention in f32 (convert Q/K/V in, the result back out); the
    # decomposed attention overflows to NaN in fp16 on SPIR-V.
    attention_in_f32: bool = False
    # The element type f32 attention's Q, K and V are rounded to for its fused Q·Kᵀ and P·V
    # (f16/bf16: tensor cores on GPUs; scale, mask, softmax and accumulation stay f32); f32:
    # exact. A user choice (--attention-precision), not a target default.
    f32_attention_inputs: str = "f32"
    # Give each f32 fused attention per-shape CPU tile sizes (attention_tiles); llvm-cpu only.
    cpu_attention_tiles: bool = False
    # Lower an attention whose scores are small (a few queries per KV head, or at most
    # attention_routes.SCORE_BUDGET scores) as explicit ops with the scores materialized (the
    # unfused route), chosen at run time when the sizes are dynamic: measured faster than the
    # fused op on llvm-cpu (attention_routes.attention).
    materialize_small_scores: bool = False
    # Split a causal prefill with static sizes into query blocks that read only the keys their
    # last query sees (lowering/causal_blocks.py); llvm-cpu.
    causal_query_blocks: bool = False
    # With nonpad_kv_seqlen, let the fused attention iterate only the first max(nonpad) keys
    # (a dynamic slice of K/V and the mask) so its cost follows the valid length, not the
    # cache capacity (f32 attention, which gets CPU tiles). Verified on llvm-cpu; the GPU
    # targets keep the full-capacity mask.
    slice_keys_to_valid_length: bool = False
    # The target divides 64-bit integers (IREE's i64 emulation for SPIR-V has no arith.remsi):
    # a circular TensorScatter reduces its int64 write_indices modulo the capacity in i64;
    # without it, indices must lie in the int32 range (checked at run time) and are reduced in i32.
    int64_division: bool = True
    # The target dequantizes a float8e4m3fn K or V fused into the attention correctly. IREE 3.13
    # reads wrong values from them on Vulkan (a fused K or V off by up to 100% of the output
    # range, the same before and after kvattn's own f8 decoding; a float8 Q and Y are right),
    # and cannot translate f8 conversions for CUDA: those targets refuse it with an error.
    float8_keys_and_values: bool = False
