// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=llvm-cpu --split-input-file | filecheck %s
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=llvm-cpu --fused-attention --split-input-file | filecheck %s --check-prefix=FUSED
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=llvm-cpu --attention-precision=fp16 --split-input-file | filecheck %s --check-prefix=FUSED
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=vulkan --split-input-file | filecheck %s --check-prefix=FUSED

// The llvm-cpu route rule (attention_routes.attention): a decode step (fewer than 8 queries)
// materializes its [B, Hkv, G, S, L] scores — Q·Kᵀ as a contraction over d, the softmax, P·V as
// a contraction over l — and has no fused attention op. --fused-attention, a reduced attention
// precision and the GPU targets keep the fused op.
// The two contractions carry their decode tiles (attention_tiles.cpu_decode_contraction_info) over
// the loops but the unit ones (b = s = 1: operands collapsed, results expanded back): Q·Kᵀ over
// (h, g, l, d) 4 rows × 16 keys per vector tile, 64 keys per workgroup, 16 head dims per step;
// P·V over (h, g, e, l) 4 rows × 128 value dims (of V's 256 here), 4 keys per step; both peel the key loop (a
// remainder loop instead of masking every vector tile: the key count is dynamic in a model).
//       CHECK: #[[QK:.*]] = #iree_cpu.lowering_config<distribution = [1, 4, 64, 0], vector_common_parallel = [1, 4, 16, 0], vector_reduction = [0, 0, 0, 16]>
//       CHECK: #[[PV:.*]] = #iree_cpu.lowering_config<distribution = [1, 4, 128, 0], vector_common_parallel = [1, 4, 128, 0], vector_reduction = [0, 0, 0, 4]>
//       CHECK: #[[DOUBLE:.*]] = #iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<DoubleTilingExpert>, {enable_loop_peeling}>
//       CHECK: #[[QK_INFO:.*]] = #iree_codegen.compilation_info<lowering_config = #[[QK]], translation_info = #[[DOUBLE]]>
//       CHECK: #[[PV_INFO:.*]] = #iree_codegen.compilation_info<lowering_config = #[[PV]], translation_info = #[[DOUBLE]]>
// CHECK-LABEL: func.func @decode
//   CHECK-NOT:   iree_linalg_ext.attention
//       CHECK:   %[[Q:.*]] = tensor.collapse_shape %{{.*}} {{\[}}[0, 1], [2, 3], [4]] : tensor<1x2x4x1x16xf32> into tensor<2x4x16xf32>
//       CHECK:   %[[K:.*]] = tensor.collapse_shape %{{.*}} {{\[}}[0, 1], [2], [3]] : tensor<1x2x32x16xf32> into tensor<2x32x16xf32>
//       CHECK:   linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "reduction"]} ins(%[[Q]], %[[K]] : tensor<2x4x16xf32>, tensor<2x32x16xf32>) outs(%{{.*}} : tensor<2x4x32xf32>) attrs = {compilation_info = #[[QK_INFO]]}
//       CHECK:   tensor.expand_shape %{{.*}} : tensor<2x4x32xf32> into tensor<1x2x4x1x32xf32>
//       CHECK:   math.exp
//       CHECK:   linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<2x4x32xf32>, tensor<2x32x256xf32>) outs(%{{.*}} : tensor<2x4x256xf32>) attrs = {compilation_info = #[[PV_INFO]]}
//   CHECK-NOT:   iree_linalg_ext.attention
//       CHECK:   return
// FUSED-LABEL: func.func @decode
//   FUSED-NOT:   tensor<1x2x4x1x32xf32>
//       FUSED:   iree_linalg_ext.attention
func.func @decode(%q: tensor<1x8x1x16xf32>, %k: tensor<1x2x32x16xf32>, %v: tensor<1x2x32x256xf32>) -> tensor<1x8x1x256xf32> {
  %y = "kvattn.attention"(%q, %k, %v) {onnx_node = "decode", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x8x1x16xf32>, tensor<1x2x32x16xf32>, tensor<1x2x32x256xf32>) -> tensor<1x8x1x256xf32>
  return %y : tensor<1x8x1x256xf32>
}

// -----

// Batch 3: b stays its own loop (merging it with h, as IREE does inside a dispatch, would copy
// the cache here), and so do b and h in the tiles. The scores are laid out h before b, so that
// IREE cannot merge b and h in P·V either (it would rebuild the op without its tiles).
// Q·Kᵀ's loops are (h, b, g, l, d): Q and K read (b, h), the scores are written (h, b); P·V's
// are (b, h, g, e, l): P is read (h, b), V and the output (b, h). V's head (16) is one value tile.
//       CHECK: #iree_cpu.lowering_config<distribution = [1, 1, 4, 64, 0], vector_common_parallel = [1, 1, 4, 16, 0], vector_reduction = [0, 0, 0, 0, 16]>
//       CHECK: #iree_cpu.lowering_config<distribution = [1, 1, 4, 16, 0], vector_common_parallel = [1, 1, 4, 16, 0], vector_reduction = [0, 0, 0, 0, 4]>
//       CHECK: #[[SWAPPED:.*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d0, d2, d4)>
//       CHECK: #[[K_MAP:.*]] = affine_map<(d0, d1, d2, d3, d4) -> (d1, d0, d3, d4)>
//       CHECK: #[[OUT_MAP:.*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3)>
//       CHECK: #[[V_MAP:.*]] = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d4, d3)>
// CHECK-LABEL: func.func @decode_batch3
//   CHECK-NOT:   tensor.collapse_shape %{{.*}} : tensor<3x2x32x16xf32>
//       CHECK:   linalg.generic {indexing_maps = [#[[SWAPPED]], #[[K_MAP]], #[[OUT_MAP]]], {{.*}} ins(%{{.*}}, %{{.*}} : tensor<3x2x4x16xf32>, tensor<3x2x32x16xf32>) outs(%{{.*}} : tensor<2x3x4x32xf32>) attrs = {compilation_info =
//       CHECK:   linalg.generic {indexing_maps = [#[[SWAPPED]], #[[V_MAP]], #[[OUT_MAP]]], {{.*}} ins(%{{.*}}, %{{.*}} : tensor<2x3x4x32xf32>, tensor<3x2x32x16xf32>) outs(%{{.*}} : tensor<3x2x4x16xf32>) attrs = {compilation_info =
func.func @decode_batch3(%q: tensor<3x8x1x16xf32>, %k: tensor<3x2x32x16xf32>, %v: tensor<3x2x32x16xf32>) -> tensor<3x8x1x16xf32> {
  %y = "kvattn.attention"(%q, %k, %v) {onnx_node = "decode", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<3x8x1x16xf32>, tensor<3x2x32x16xf32>, tensor<3x2x32x16xf32>) -> tensor<3x8x1x16xf32>
  return %y : tensor<3x8x1x16xf32>
}

// -----

// An int8 cache (K and V dequantized inside the contractions, read as stored): the contractions
// read K and V as int8 and keep the decode tiles; P·V over an int8 V takes 64 value dims per
// vector tile (of V's 256 here), not an f32 V's 128.
//       CHECK: #iree_cpu.lowering_config<distribution = [1, 4, 64, 0], vector_common_parallel = [1, 4, 16, 0], vector_reduction = [0, 0, 0, 16]>
//       CHECK: #iree_cpu.lowering_config<distribution = [1, 4, 64, 0], vector_common_parallel = [1, 4, 64, 0], vector_reduction = [0, 0, 0, 4]>
// CHECK-LABEL: func.func @decode_int8_cache
//       CHECK:   linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<2x4x16xf32>, tensor<2x32x16xi8>) outs(%{{.*}} : tensor<2x4x32xf32>) attrs = {compilation_info =
//       CHECK:   linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<2x4x32xf32>, tensor<2x32x256xi8>) outs(%{{.*}} : tensor<2x4x256xf32>) attrs = {compilation_info =
func.func @decode_int8_cache(%q: tensor<1x8x1x16xf32>, %k: tensor<1x2x32x16xi8>, %v: tensor<1x2x32x256xi8>, %s: tensor<f32>, %z: tensor<i8>) -> tensor<1x8x1x256xf32> {
  %y = "kvattn.attention"(%q, %k, %v, %s, %z, %s, %z) {onnx_node = "decode", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x8x1x16xf32>, tensor<1x2x32x16xi8>, tensor<1x2x32x256xi8>, tensor<f32>, tensor<i8>, tensor<f32>, tensor<i8>) -> tensor<1x8x1x256xf32>
  return %y : tensor<1x8x1x256xf32>
}

// -----

// A prefill of 64 queries with a mask, static: Q·Kᵀ carries the prefill tiles
// (attention_tiles.cpu_prefill_scores_info) over (h, g, s, l, d), 16 queries × 16 keys per vector
// tile, 4 head dims per step; P·V (cpu_prefill_values_info) over (h, g·s, e, l): the probabilities
// and the output collapsed to 2·64 rows, 8 rows × 32 value dims, 1 key per step. Both peeled.
//       CHECK: #[[QK:.*]] = #iree_cpu.lowering_config<distribution = [4, 4, 64, 64, 0], vector_common_parallel = [1, 1, 16, 16, 0], vector_reduction = [0, 0, 0, 0, 4]>
//       CHECK: #[[PV:.*]] = #iree_cpu.lowering_config<distribution = [4, 64, 64, 0], vector_common_parallel = [1, 8, 32, 0], vector_reduction = [0, 0, 0, 1]>
//       CHECK: #[[PEELED:.*]] = #iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<DoubleTilingExpert>, {enable_loop_peeling}>
//       CHECK: #[[QK_INFO:.*]] = #iree_codegen.compilation_info<lowering_config = #[[QK]], translation_info = #[[PEELED]]>
//       CHECK: #[[PV_INFO:.*]] = #iree_codegen.compilation_info<lowering_config = #[[PV]], translation_info = #[[PEELED]]>
// CHECK-LABEL: func.func @prefill_with_mask
//       CHECK:   linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<2x2x64x16xf32>, tensor<2x64x16xf32>) outs(%{{.*}} : tensor<2x2x64x64xf32>) attrs = {compilation_info = #[[QK_INFO]]}
//       CHECK:   %[[P:.*]] = tensor.collapse_shape %{{.*}} {{\[}}[0, 1], [2, 3], [4]] : tensor<1x2x2x64x64xf32> into tensor<2x128x64xf32>
//       CHECK:   %[[PV_OUT:.*]] = linalg.generic {{.*}} ins(%[[P]], %{{.*}} : tensor<2x128x64xf32>, tensor<2x64x16xf32>) outs(%{{.*}} : tensor<2x128x16xf32>) attrs = {compilation_info = #[[PV_INFO]]}
//       CHECK:   tensor.expand_shape %[[PV_OUT]] {{\[}}[0, 1], [2, 3], [4]] output_shape [1, 2, 2, 64, 16] : tensor<2x128x16xf32> into tensor<1x2x2x64x16xf32>
//       CHECK:   return
func.func @prefill_with_mask(%q: tensor<1x4x64x16xf32>, %k: tensor<1x2x64x16xf32>, %v: tensor<1x2x64x16xf32>, %m: tensor<64x64xf32>) -> tensor<1x4x64x16xf32> {
  %y = "kvattn.attention"(%q, %k, %v, %m) {onnx_node = "prefill", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x4x64x16xf32>, tensor<1x2x64x16xf32>, tensor<1x2x64x16xf32>, tensor<64x64xf32>) -> tensor<1x4x64x16xf32>
  return %y : tensor<1x4x64x16xf32>
}

// -----

// A prompt of 1024 queries over 1024 keys (not causal: a causal one would be split into query
// blocks, causal_blocks.mlir): B·Hkv·G·S·L = 8·1024·1024 = SCORE_BUDGET scores,
// still materialized.
// CHECK-LABEL: func.func @prefill_at_budget
//   CHECK-NOT:   iree_linalg_ext.attention
//       CHECK:   outs(%{{.*}} : tensor<1x2x4x1024x1024xf32>)
//   CHECK-NOT:   iree_linalg_ext.attention
//       CHECK:   return
func.func @prefill_at_budget(%q: tensor<1x8x1024x16xf32>, %k: tensor<1x2x1024x16xf32>, %v: tensor<1x2x1024x16xf32>) -> tensor<1x8x1024x16xf32> {
  %y = "kvattn.attention"(%q, %k, %v) {onnx_node = "prefill", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x8x1024x16xf32>, tensor<1x2x1024x16xf32>, tensor<1x2x1024x16xf32>) -> tensor<1x8x1024x16xf32>
  return %y : tensor<1x8x1024x16xf32>
}

// -----

// One key more is over the budget: the fused op with the prefill tiles.
// CHECK-LABEL: func.func @prefill_over_budget
//   CHECK-NOT:   tensor<1x2x4x1024x1025xf32>
//       CHECK:   iree_linalg_ext.attention {{.*}} {compilation_info = #{{.*}}}
func.func @prefill_over_budget(%q: tensor<1x8x1024x16xf32>, %k: tensor<1x2x1025x16xf32>, %v: tensor<1x2x1025x16xf32>) -> tensor<1x8x1024x16xf32> {
  %y = "kvattn.attention"(%q, %k, %v) {onnx_node = "prefill", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x8x1024x16xf32>, tensor<1x2x1025x16xf32>, tensor<1x2x1025x16xf32>) -> tensor<1x8x1024x16xf32>
  return %y : tensor<1x8x1024x16xf32>
}

// -----

// Batch, queries and keys dynamic (an exported decoder): the rule runs at run time — fewer than
// 8 queries or at most 8388608 scores take the materialized branch, the rest the fused op with
// the prefill tiles alone (that branch has at least 8 queries).
// CHECK-LABEL: func.func @dynamic
//       CHECK:   %[[FEW:.*]] = arith.cmpi ult, %{{.*}}, %c8 : index
//       CHECK:   %[[WITHIN:.*]] = arith.cmpi ule, %{{.*}}, %c8388608 : index
//       CHECK:   %[[SMALL:.*]] = arith.ori %[[FEW]], %[[WITHIN]] : i1
//       CHECK:   scf.if %[[SMALL]] -> (tensor<?x2x4x?x16xf32>) {
//   CHECK-NOT:     iree_linalg_ext.attention
//   CHECK-NOT:     compilation_info
//       CHECK:     outs(%{{.*}} : tensor<?x2x4x?x?xf32>)
//       CHECK:   } else {
//   CHECK-NOT:     scf.if
//       CHECK:     iree_linalg_ext.attention {{.*}} {compilation_info = #{{.*}}}
//   CHECK-NOT:     iree_linalg_ext.attention
//       CHECK:   return
// FUSED-LABEL: func.func @dynamic
//   FUSED-NOT:   tensor<?x2x4x?x?xf32>
//       FUSED:   iree_linalg_ext.attention
func.func @dynamic(%q: tensor<?x8x?x16xf32>, %k: tensor<?x2x?x16xf32>, %v: tensor<?x2x?x16xf32>) -> tensor<?x8x?x16xf32> {
  %y = "kvattn.attention"(%q, %k, %v) {is_causal = 1 : i64, onnx_node = "dyn", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<?x8x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>) -> tensor<?x8x?x16xf32>
  return %y : tensor<?x8x?x16xf32>
}
