// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --fused-attention --split-input-file | filecheck %s

// GQA (8 query heads over 2 KV heads): Q is expanded to [B, Hkv, G, S, D] and the maps read
// K/V once per KV head (no repeat). Causal without cache: key j allowed iff j <= i. A tiled
// attention's operands and result pass compute barriers (IREE keeps the model's reshapes out).
//   CHECK-DAG: #[[$Q:.*]] = affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1, d2, d3, d5)>
//   CHECK-DAG: #[[$K:.*]] = affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1, d4, d5)>
//   CHECK-DAG: #[[$V:.*]] = affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1, d4, d6)>
//   CHECK-DAG: #[[$M:.*]] = affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d3, d4)>
//   CHECK-DAG: #[[$O:.*]] = affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d1, d2, d3, d6)>
// CHECK-LABEL: func.func @gqa_causal
//  CHECK-SAME:   %[[Q:[a-z0-9]+]]: tensor<1x8x4x16xf32>, %[[K:[a-z0-9]+]]: tensor<1x2x4x16xf32>, %[[V:[a-z0-9]+]]: tensor<1x2x4x16xf32>
//       CHECK:   %[[QB:.*]] = iree_tensor_ext.compute_barrier.start %[[Q]] : tensor<1x8x4x16xf32> -> tensor<1x8x4x16xf32>
//       CHECK:   %[[KB:.*]] = iree_tensor_ext.compute_barrier.start %[[K]]
//       CHECK:   %[[VB:.*]] = iree_tensor_ext.compute_barrier.start %[[V]]
//       CHECK:   %[[QE:.*]] = tensor.expand_shape %[[QB]] {{\[}}[0], [1, 2], [3], [4]] output_shape [1, 2, 4, 4, 16]
//       CHECK:   %[[BIAS:.*]] = linalg.generic
//       CHECK:     arith.cmpi sle
//       CHECK:   } -> tensor<4x4xf32>
//       CHECK:   %[[SCALE:.*]] = arith.constant 2.500000e-01 : f32
//       CHECK:   %[[ATT:.*]] = iree_linalg_ext.attention <indexing_maps = [#[[$Q]], #[[$K]], #[[$V]], #{{.*}}, #[[$M]], #[[$O]]]>
//  CHECK-SAME:     ins(%[[QE]], %[[KB]], %[[VB]], %[[SCALE]], %[[BIAS]] :
//  CHECK-SAME:     outs(%{{.*}} : tensor<1x2x4x4x16xf32>)
// Fully masked rows become zeros instead of NaN.
//       CHECK:   arith.maximumf
//       CHECK:   %[[GUARDED:.*]] = linalg.generic {{.*}} ins(%[[ATT]]
//       CHECK:     arith.cmpf oeq
//       CHECK:   %[[Y:.*]] = tensor.collapse_shape %[[GUARDED]] {{\[}}[0], [1, 2], [3], [4]] : tensor<1x2x4x4x16xf32> into tensor<1x8x4x16xf32>
//       CHECK:   %[[YB:.*]] = iree_tensor_ext.compute_barrier.end %[[Y]]
//       CHECK:   return %[[YB]]
func.func @gqa_causal(%q: tensor<1x8x4x16xf32>, %k: tensor<1x2x4x16xf32>, %v: tensor<1x2x4x16xf32>) -> tensor<1x8x4x16xf32> {
  %0 = "kvattn.attention"(%q, %k, %v) {is_causal = 1 : i64, onnx_node = "attn", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x8x4x16xf32>, tensor<1x2x4x16xf32>, tensor<1x2x4x16xf32>) -> tensor<1x8x4x16xf32>
  return %0 : tensor<1x8x4x16xf32>
}

// -----

// No mask of any kind: no bias operand and no guard.
// CHECK-LABEL: func.func @plain
//       CHECK:   iree_linalg_ext.attention
//  CHECK-SAME:     ins(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<1x2x1x4x8xf32>, tensor<1x2x6x8xf32>, tensor<1x2x6x8xf32>, f32)
//   CHECK-NOT:   linalg.generic
func.func @plain(%q: tensor<1x2x4x8xf32>, %k: tensor<1x2x6x8xf32>, %v: tensor<1x2x6x8xf32>) -> tensor<1x2x4x8xf32> {
  %0 = "kvattn.attention"(%q, %k, %v) {scale = 1.000000e-01 : f32, onnx_node = "plain", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x2x4x8xf32>, tensor<1x2x6x8xf32>, tensor<1x2x6x8xf32>) -> tensor<1x2x4x8xf32>
  return %0 : tensor<1x2x4x8xf32>
}

// -----

// 3D inputs with an internal cache: K/V are transposed once into the present cache
// [B, Hkv, P+L, D] (past at 0, new rows at P); the bool mask [3, 4] is padded with false up to
// the 5 keys; Q keeps its [B, S, Hkv, G, D] layout and the maps absorb it.
//   CHECK-DAG: #[[$Q3:.*]] = affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d3, d1, d2, d5)>
//   CHECK-DAG: #[[$O3:.*]] = affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d3, d1, d2, d6)>
// CHECK-LABEL: func.func @mha_3d_past
//  CHECK-SAME:   %[[MASK:[a-z0-9]+]]: tensor<3x4xi1>, %[[PK:[a-z0-9]+]]: tensor<1x2x2x8xf32>
//       CHECK:   iree_tensor_ext.compute_barrier.start %[[MASK]]
//       CHECK:   iree_tensor_ext.compute_barrier.start %[[PK]]
//       CHECK:   %[[KT:.*]] = linalg.transpose ins(%{{.*}} : tensor<1x3x2x8xf32>) outs(%{{.*}} : tensor<1x2x3x8xf32>) permutation = [0, 2, 1, 3]
//       CHECK:   %[[P0:.*]] = tensor.insert_slice %{{.*}} into %{{.*}}[0, 0, 0, 0] [1, 2, 2, 8] [1, 1, 1, 1]
//       CHECK:   %[[PRESENT_K:.*]] = tensor.insert_slice %[[KT]] into %[[P0]][0, 0, 2, 0] [1, 2, 3, 8] [1, 1, 1, 1]
//       CHECK:   tensor.pad %{{.*}} low[0, 0] high[0, 1]
//       CHECK:     tensor.yield %false
//       CHECK:   iree_linalg_ext.attention <indexing_maps = [#[[$Q3]], {{.*}}, #[[$O3]]]>
//  CHECK-SAME:     ins(%{{.*}}, %[[PRESENT_K]], %{{.*}} : tensor<1x3x2x1x8xf32>, tensor<1x2x5x8xf32>, tensor<1x2x5x8xf32>, f32, tensor<3x5xf32>)
//       CHECK:   tensor.collapse_shape %{{.*}} {{\[}}[0], [1], [2, 3, 4]] : tensor<1x3x2x1x8xf32> into tensor<1x3x16xf32>
//       CHECK:   %[[Y3:.*]] = iree_tensor_ext.compute_barrier.end
//       CHECK:   return %[[Y3]], %[[PRESENT_K]], %{{.*}} : tensor<1x3x16xf32>, tensor<1x2x5x8xf32>, tensor<1x2x5x8xf32>
func.func @mha_3d_past(%q: tensor<1x3x16xf32>, %k: tensor<1x3x16xf32>, %v: tensor<1x3x16xf32>, %mask: tensor<3x4xi1>, %pk: tensor<1x2x2x8xf32>, %pv: tensor<1x2x2x8xf32>) -> (tensor<1x3x16xf32>, tensor<1x2x5x8xf32>, tensor<1x2x5x8xf32>) {
  %0:3 = "kvattn.attention"(%q, %k, %v, %mask, %pk, %pv) {kv_num_heads = 2 : i64, q_num_heads = 2 : i64, onnx_node = "attn3d", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 1, 0>, resultSegmentSizes = array<i32: 1, 1, 1, 0>} : (tensor<1x3x16xf32>, tensor<1x3x16xf32>, tensor<1x3x16xf32>, tensor<3x4xi1>, tensor<1x2x2x8xf32>, tensor<1x2x2x8xf32>) -> (tensor<1x3x16xf32>, tensor<1x2x5x8xf32>, tensor<1x2x5x8xf32>)
  return %0#0, %0#1, %0#2 : tensor<1x3x16xf32>, tensor<1x2x5x8xf32>, tensor<1x2x5x8xf32>
}

// -----

// nonpad_kv_seqlen gives the bias a batch dim: keys j < nonpad[b], causal frontier
// j <= i + nonpad[b] - S.
//   CHECK-DAG: #[[$NP:.*]] = affine_map<(d0, d1, d2) -> (d0)>
//   CHECK-DAG: #[[$MB:.*]] = affine_map<(d0, d1, d2, d3, d4, d5, d6) -> (d0, d3, d4)>
// CHECK-LABEL: func.func @decode_nonpad
//  CHECK-SAME:   %[[NONPAD:[a-z0-9]+]]: tensor<2xi64>
//       CHECK:   %[[NONPAD_B:.*]] = iree_tensor_ext.compute_barrier.start %[[NONPAD]]
//       CHECK:   linalg.generic {indexing_maps = [#[[$NP]], {{.*}}]{{.*}} ins(%[[NONPAD_B]] : tensor<2xi64>)
//       CHECK:     arith.cmpi slt
//       CHECK:     arith.subi
//       CHECK:     arith.cmpi sle
//       CHECK:   } -> tensor<2x1x16xf32>
//       CHECK:   iree_linalg_ext.attention <indexing_maps = [{{.*}}, #[[$MB]], {{.*}}]>
func.func @decode_nonpad(%q: tensor<2x4x1x8xf32>, %k: tensor<2x2x16x8xf32>, %v: tensor<2x2x16x8xf32>, %nonpad: tensor<2xi64>) -> tensor<2x4x1x8xf32> {
  %0 = "kvattn.attention"(%q, %k, %v, %nonpad) {is_causal = 1 : i64, onnx_node = "decode", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 1>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<2x4x1x8xf32>, tensor<2x2x16x8xf32>, tensor<2x2x16x8xf32>, tensor<2xi64>) -> tensor<2x4x1x8xf32>
  return %0 : tensor<2x4x1x8xf32>
}

// -----

// softcap c·tanh(s/c) goes into the score region, which sees x = s·log2(e): it computes
// log2(e)·softcap(x/log2(e)).
// CHECK-LABEL: func.func @softcap_in_region
//       CHECK:   iree_linalg_ext.attention
//       CHECK:   ^bb0(%[[X:.*]]: f32):
//       CHECK:     %[[LOG2E:.*]] = arith.constant 1.44269{{[0-9]*}} : f32
//       CHECK:     %[[S:.*]] = arith.divf %[[X]], %[[LOG2E]] : f32
//       CHECK:     %[[CAP:.*]] = arith.constant 2.000000e+00 : f32
//       CHECK:     %[[D:.*]] = arith.divf %[[S]], %[[CAP]] : f32
//       CHECK:     %[[T:.*]] = math.tanh %[[D]] : f32
//       CHECK:     %[[C:.*]] = arith.mulf %[[T]], %[[CAP]] : f32
//       CHECK:     %[[Y:.*]] = arith.mulf %[[C]], %[[LOG2E]] : f32
//       CHECK:     iree_linalg_ext.yield %[[Y]] : f32
func.func @softcap_in_region(%q: tensor<1x2x4x8xf32>) -> tensor<1x2x4x8xf32> {
  %0 = "kvattn.attention"(%q, %q, %q) {softcap = 2.0 : f32, onnx_node = "capped", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>) -> tensor<1x2x4x8xf32>
  return %0 : tensor<1x2x4x8xf32>
}

// -----

// qk_matmul_output takes the unfused route: S = scale·Q·Kᵀ as a reduction over d, + bias,
// softmax (max, exp, sum, divide), then P·V; mode 2 returns S + bias, collapsed to [B, Hq, S, T].
// CHECK-LABEL: func.func @qk_output_unfused
//   CHECK-NOT:   iree_linalg_ext.attention
//       CHECK:   %[[DOT:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel", "reduction"]
//       CHECK:   %[[SCALED:.*]] = linalg.generic {{.*}} ins(%[[DOT]]
//       CHECK:   %[[LOGITS:.*]] = linalg.generic {{.*}} ins(%[[SCALED]], %{{.*}} : tensor<1x2x1x4x6xf32>, tensor<4x6xf32>)
//       CHECK:     arith.maximumf
//       CHECK:     math.exp
//       CHECK:     arith.divf
//       CHECK:   %[[QK:.*]] = tensor.collapse_shape %[[LOGITS]] {{\[}}[0], [1, 2], [3], [4]] : tensor<1x2x1x4x6xf32> into tensor<1x2x4x6xf32>
//       CHECK:   return %{{.*}}, %[[QK]]
func.func @qk_output_unfused(%q: tensor<1x2x4x8xf32>, %k: tensor<1x2x6x8xf32>, %mask: tensor<4x6xf32>) -> (tensor<1x2x4x8xf32>, tensor<1x2x4x6xf32>) {
  %0:2 = "kvattn.attention"(%q, %k, %k, %mask) {qk_matmul_output_mode = 2 : i64, onnx_node = "with_scores", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 1>} : (tensor<1x2x4x8xf32>, tensor<1x2x6x8xf32>, tensor<1x2x6x8xf32>, tensor<4x6xf32>) -> (tensor<1x2x4x8xf32>, tensor<1x2x4x6xf32>)
  return %0#0, %0#1 : tensor<1x2x4x8xf32>, tensor<1x2x4x6xf32>
}

// -----

// bf16 without softmax_precision (ONNX computes its softmax in bf16): the unfused route rounds
// where the ONNX reference rounds. Q and K are each scaled by √scale rounded to bf16 (0.59375
// for head size 8); the f32 dot product is rounded to bf16 on the bits (IREE's bf16 emulation
// would drop a truncf→extf pair inside one dispatch); the softmax sum rounds after every add.
// CHECK-LABEL: func.func @bf16_reference_rounding
//       CHECK:   linalg.generic
//       CHECK:     %[[ROOT:.*]] = arith.constant 5.937500e-01 : bf16
//       CHECK:     arith.mulf
//       CHECK:     arith.truncf %{{.*}} : f32 to bf16
//       CHECK:   } -> tensor<1x2x1x3x8xbf16>
//       CHECK:     arith.constant 5.937500e-01 : bf16
//       CHECK:   } -> tensor<1x2x4x8xbf16>
//       CHECK:   %[[DOT:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel", "reduction"]
//       CHECK:   } -> tensor<1x2x1x3x4xf32>
//       CHECK:   linalg.generic {{.*}} ins(%[[DOT]] : tensor<1x2x1x3x4xf32>)
//       CHECK:     arith.bitcast %{{.*}} : f32 to i32
//       CHECK:     arith.andi %{{.*}}, %c-65536_i32 : i32
//       CHECK:   } -> tensor<1x2x1x3x4xbf16>
//       CHECK:   math.exp
//       CHECK:   linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction"]
//  CHECK-NEXT:   ^bb0(%[[E:.*]]: bf16, %[[ACC:.*]]: f32):
//       CHECK:     %[[ADDED:.*]] = arith.addf %{{.*}}, %[[ACC]] : f32
//       CHECK:     arith.bitcast %[[ADDED]] : f32 to i32
//       CHECK:     arith.andi %{{.*}}, %c-65536_i32 : i32
//       CHECK:   } -> tensor<1x2x1x3xf32>
//   CHECK-NOT:   iree_linalg_ext.attention
func.func @bf16_reference_rounding(%q: tensor<1x2x3x8xbf16>, %k: tensor<1x2x4x8xbf16>, %v: tensor<1x2x4x8xbf16>) -> tensor<1x2x3x8xbf16> {
  %0 = "kvattn.attention"(%q, %k, %v) {onnx_node = "attn", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x2x3x8xbf16>, tensor<1x2x4x8xbf16>, tensor<1x2x4x8xbf16>) -> tensor<1x2x3x8xbf16>
  return %0 : tensor<1x2x3x8xbf16>
}

// -----

// softmax_precision = FLOAT (1): the fused attention.
// CHECK-LABEL: func.func @fp16_softmax_in_float
//       CHECK:   iree_linalg_ext.attention
//  CHECK-SAME:     tensor<1x2x1x3x8xf16>
func.func @fp16_softmax_in_float(%q: tensor<1x2x3x8xf16>, %k: tensor<1x2x4x8xf16>, %v: tensor<1x2x4x8xf16>) -> tensor<1x2x3x8xf16> {
  %0 = "kvattn.attention"(%q, %k, %v) {softmax_precision = 1 : i64, onnx_node = "attn", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x2x3x8xf16>, tensor<1x2x4x8xf16>, tensor<1x2x4x8xf16>) -> tensor<1x2x3x8xf16>
  return %0 : tensor<1x2x3x8xf16>
}

// -----

// A float mask on the fused route: IREE multiplies the mask by log2(e), so finfo.min would
// overflow to -inf (NaN rows). Rows whose largest mask value is finite but below -max/2 are
// lifted to -max/2 first (their keys keep their order, so the result is onnx.reference's).
// CHECK-LABEL: func.func @float_mask_lifted
//       CHECK:   %[[BIAS:.*]] = linalg.generic {{.*}} outs(%{{.*}} : tensor<4x6xf32>)
//       CHECK:   %[[ROWMAX:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]} ins(%[[BIAS]] : tensor<4x6xf32>)
//       CHECK:   %[[LIFTED:.*]] = linalg.generic {{.*}} ins(%[[BIAS]], %[[ROWMAX]] : tensor<4x6xf32>, tensor<4xf32>)
//       CHECK:     %[[HUGE:.*]] = arith.cmpf olt, %{{.*}}, %cst{{.*}} : f32
//       CHECK:     arith.subf
//       CHECK:     arith.addf
//       CHECK:   iree_linalg_ext.attention
//  CHECK-SAME:     ins(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[LIFTED]] :
func.func @float_mask_lifted(%q: tensor<1x2x4x8xf32>, %k: tensor<1x2x6x8xf32>, %v: tensor<1x2x6x8xf32>, %mask: tensor<4x6xf32>) -> tensor<1x2x4x8xf32> {
  %0 = "kvattn.attention"(%q, %k, %v, %mask) {onnx_node = "masked", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x2x4x8xf32>, tensor<1x2x6x8xf32>, tensor<1x2x6x8xf32>, tensor<4x6xf32>) -> tensor<1x2x4x8xf32>
  return %0 : tensor<1x2x4x8xf32>
}
