// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=llvm-cpu --split-input-file | filecheck %s
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=llvm-cpu --fused-attention --split-input-file | filecheck %s --check-prefix=FUSED
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=llvm-cpu --attention-precision=fp16 --split-input-file | filecheck %s --check-prefix=FUSED
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=vulkan --split-input-file | filecheck %s --check-prefix=FUSED

// The llvm-cpu route rule (attention_routes.attention): a decode step (fewer than 8 queries)
// materializes its [B, Hkv, G, S, L] scores — Q·Kᵀ as a contraction over d, the softmax, P·V as
// a contraction over l — and has no fused attention op. --fused-attention, a reduced attention
// precision and the GPU targets keep the fused op.
// CHECK-LABEL: func.func @decode
//   CHECK-NOT:   iree_linalg_ext.attention
//       CHECK:   linalg.generic {{.*}} iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel", "reduction"]} ins(%{{.*}}, %{{.*}} : tensor<1x2x4x1x16xf32>, tensor<1x2x32x16xf32>) outs(%{{.*}} : tensor<1x2x4x1x32xf32>)
//       CHECK:   math.exp
//       CHECK:   linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<1x2x4x1x32xf32>, tensor<1x2x32x16xf32>) outs(%{{.*}} : tensor<1x2x4x1x16xf32>)
//   CHECK-NOT:   iree_linalg_ext.attention
//       CHECK:   return
// FUSED-LABEL: func.func @decode
//   FUSED-NOT:   tensor<1x2x4x1x32xf32>
//       FUSED:   iree_linalg_ext.attention
func.func @decode(%q: tensor<1x8x1x16xf32>, %k: tensor<1x2x32x16xf32>, %v: tensor<1x2x32x16xf32>) -> tensor<1x8x1x16xf32> {
  %y = "kvattn.attention"(%q, %k, %v) {onnx_node = "decode", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x8x1x16xf32>, tensor<1x2x32x16xf32>, tensor<1x2x32x16xf32>) -> tensor<1x8x1x16xf32>
  return %y : tensor<1x8x1x16xf32>
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
