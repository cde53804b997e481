// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=llvm-cpu --split-input-file | filecheck %s
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=vulkan --split-input-file | filecheck %s --check-prefix=VULKAN

// A causal prefill of 128 queries over a past of 64 (192 keys), static: llvm-cpu splits it into
// 2 query blocks of 64 (lowering/causal_blocks.py); block [0, 64) reads keys [0, 128), block
// [64, 128) all 192, each with its rows of the bias, and each block's rows go into the output.
// CHECK-LABEL: func.func @prefill_with_past
//       CHECK:   %[[Q0:.*]] = tensor.extract_slice %{{.*}}[0, 0, 0, 0, 0] [1, 2, 2, 64, 16] [1, 1, 1, 1, 1] : tensor<1x2x2x128x16xf32> to tensor<1x2x2x64x16xf32>
//       CHECK:   tensor.extract_slice %{{.*}}[0, 0] [64, 192] [1, 1] : tensor<128x192xf32> to tensor<64x192xf32>
//       CHECK:   tensor.extract_slice %{{.*}}[0, 0, 0, 0] [1, 2, 128, 16] [1, 1, 1, 1] : tensor<1x2x192x16xf32> to tensor<1x2x128x16xf32>
//       CHECK:   tensor.extract_slice %{{.*}}[0, 0] [64, 128] [1, 1] : tensor<64x192xf32> to tensor<64x128xf32>
//       CHECK:   outs(%{{.*}} : tensor<1x2x2x64x128xf32>)
//       CHECK:   %[[OUT0:.*]] = tensor.insert_slice %{{.*}} into %{{.*}}[0, 0, 0, 0, 0] [1, 2, 2, 64, 16]
//       CHECK:   tensor.extract_slice %{{.*}}[0, 0, 0, 64, 0] [1, 2, 2, 64, 16] [1, 1, 1, 1, 1] : tensor<1x2x2x128x16xf32> to tensor<1x2x2x64x16xf32>
//       CHECK:   tensor.extract_slice %{{.*}}[64, 0] [64, 192] [1, 1] : tensor<128x192xf32> to tensor<64x192xf32>
//       CHECK:   outs(%{{.*}} : tensor<1x2x2x64x192xf32>)
//       CHECK:   tensor.insert_slice %{{.*}} into %[[OUT0]][0, 0, 0, 64, 0] [1, 2, 2, 64, 16]
// The GPU targets keep one attention over all 128 queries.
// VULKAN-LABEL: func.func @prefill_with_past
//       VULKAN:   iree_linalg_ext.attention
//  VULKAN-SAME:     tensor<1x2x2x128x16xf32>
//   VULKAN-NOT:   iree_linalg_ext.attention
func.func @prefill_with_past(%q: tensor<1x4x128x16xf32>, %k: tensor<1x2x128x16xf32>, %v: tensor<1x2x128x16xf32>, %pk: tensor<1x2x64x16xf32>, %pv: tensor<1x2x64x16xf32>) -> tensor<1x4x128x16xf32> {
  %y, %ok, %ov = "kvattn.attention"(%q, %k, %v, %pk, %pv) {is_causal = 1 : i64, onnx_node = "prefill", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 1, 1, 0>, resultSegmentSizes = array<i32: 1, 1, 1, 0>} : (tensor<1x4x128x16xf32>, tensor<1x2x128x16xf32>, tensor<1x2x128x16xf32>, tensor<1x2x64x16xf32>, tensor<1x2x64x16xf32>) -> (tensor<1x4x128x16xf32>, tensor<1x2x192x16xf32>, tensor<1x2x192x16xf32>)
  return %y : tensor<1x4x128x16xf32>
}

// -----

// Not causal, or fewer than 128 queries: one attention.
// CHECK-LABEL: func.func @not_causal
//   CHECK-NOT:   tensor.insert_slice
// VULKAN-LABEL: func.func @not_causal
func.func @not_causal(%q: tensor<1x4x256x16xf32>, %k: tensor<1x2x256x16xf32>, %v: tensor<1x2x256x16xf32>) -> tensor<1x4x256x16xf32> {
  %y = "kvattn.attention"(%q, %k, %v) {onnx_node = "prefill", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x4x256x16xf32>, tensor<1x2x256x16xf32>, tensor<1x2x256x16xf32>) -> tensor<1x4x256x16xf32>
  return %y : tensor<1x4x256x16xf32>
}
