// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=llvm-cpu --fused-attention --split-input-file | filecheck %s
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=vulkan --split-input-file | filecheck %s --check-prefix=VULKAN

// Decode over a 32-row cache with nonpad_kv_seqlen: on llvm-cpu the attention reads only the
// first max(nonpad) rows (a dynamic slice of K, V and the mask) and carries its tile sizes,
// one entry per non-unit dim (h, g, l, d, e): all 4 query heads of a group per tile, 8 keys
// per reduction step.
//       CHECK: #[[$DECODE_CONFIG:.*]] = #iree_cpu.lowering_config<distribution = [1, 4, 0, 0, 16], vector_common_parallel = [1, 4, 0, 0, 16], vector_reduction = [0, 0, 8, 0, 0]>
//       CHECK: #[[$DECODE_TILES:.*]] = #iree_codegen.compilation_info<lowering_config = #[[$DECODE_CONFIG]], translation_info = #{{.*}}>
// CHECK-LABEL: func.func @decode
//       CHECK:   %[[MAX:.*]] = linalg.generic {{.*}} iterator_types = ["reduction"]{{.*}} ins(%{{.*}} : tensor<1xi64>)
//       CHECK:   %[[N:.*]] = tensor.extract %[[MAX]][] : tensor<i64>
//       CHECK:   %[[CLAMPED:.*]] = arith.maxsi
//       CHECK:   %[[KEYS:.*]] = arith.index_cast %[[CLAMPED]] : i64 to index
//       CHECK:   tensor.extract_slice %{{.*}}[0, 0, 0, 0] [1, 2, %[[KEYS]], 16] [1, 1, 1, 1] : tensor<1x2x32x16xf32> to tensor<1x2x?x16xf32>
//       CHECK:   tensor.extract_slice %{{.*}}[0, 0, 0, 0] [1, 2, %[[KEYS]], 16] [1, 1, 1, 1] : tensor<1x2x32x16xf32> to tensor<1x2x?x16xf32>
//       CHECK:   tensor.extract_slice %{{.*}}[0, 0, 0] [1, 1, %[[KEYS]]] [1, 1, 1] : tensor<1x1x32xf32> to tensor<1x1x?xf32>
//       CHECK:   iree_linalg_ext.attention
//  CHECK-SAME:     {compilation_info = #[[$DECODE_TILES]]}
//  CHECK-SAME:     ins({{.*}} : tensor<1x2x4x1x16xf32>, tensor<1x2x?x16xf32>, tensor<1x2x?x16xf32>, f32, tensor<1x1x?xf32>)
// The fully-masked-row guard reads the sliced mask too (every key past the slice is masked).
//       CHECK:   linalg.generic {{.*}} ins(%{{.*}} : tensor<1x1x?xf32>)
// VULKAN-LABEL: func.func @decode
//   VULKAN-NOT:   extract_slice
//   VULKAN-NOT:   compilation_info
//       VULKAN:   iree_linalg_ext.attention
//  VULKAN-SAME:     tensor<1x2x32x16xf32>
func.func @decode(%q: tensor<1x8x1x16xf32>, %k: tensor<1x2x32x16xf32>, %v: tensor<1x2x32x16xf32>, %len: tensor<1xi64>) -> tensor<1x8x1x16xf32> {
  %y = "kvattn.attention"(%q, %k, %v, %len) {is_causal = 1 : i64, onnx_node = "decode", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 1>, resultSegmentSizes = array<i32: 1>} : (tensor<1x8x1x16xf32>, tensor<1x2x32x16xf32>, tensor<1x2x32x16xf32>, tensor<1xi64>) -> tensor<1x8x1x16xf32>
  return %y : tensor<1x8x1x16xf32>
}

// -----

// Prefill (16 queries, causal): 8 query rows per vector tile, 16 per workgroup, one query head;
// the unit batch dim has no entry (h, g, s, l, d, e).
//       CHECK: #[[$PREFILL_CONFIG:.*]] = #iree_cpu.lowering_config<distribution = [1, 1, 16, 0, 0, 8], vector_common_parallel = [1, 1, 8, 0, 0, 8], vector_reduction = [0, 0, 0, 8, 0, 0]>
//       CHECK: #[[$PREFILL_TILES:.*]] = #iree_codegen.compilation_info<lowering_config = #[[$PREFILL_CONFIG]], translation_info = #{{.*}}>
// CHECK-LABEL: func.func @prefill
//       CHECK:   iree_linalg_ext.attention
//  CHECK-SAME:     {compilation_info = #[[$PREFILL_TILES]]}
func.func @prefill(%q: tensor<1x4x16x8xf32>, %k: tensor<1x2x16x8xf32>, %v: tensor<1x2x16x8xf32>) -> tensor<1x4x16x8xf32> {
  %y = "kvattn.attention"(%q, %k, %v) {is_causal = 1 : i64, onnx_node = "prefill", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1>, resultSegmentSizes = array<i32: 1>} : (tensor<1x4x16x8xf32>, tensor<1x2x16x8xf32>, tensor<1x2x16x8xf32>) -> tensor<1x4x16x8xf32>
  return %y : tensor<1x4x16x8xf32>
}

// -----

// fp16 attention keeps IREE's default tiles.
// CHECK-LABEL: func.func @half
//   CHECK-NOT:   compilation_info
func.func @half(%q: tensor<1x2x4x8xf16>, %k: tensor<1x2x4x8xf16>, %v: tensor<1x2x4x8xf16>) -> tensor<1x2x4x8xf16> {
  %y = "kvattn.attention"(%q, %k, %v) {onnx_node = "half", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1>, resultSegmentSizes = array<i32: 1>} : (tensor<1x2x4x8xf16>, tensor<1x2x4x8xf16>, tensor<1x2x4x8xf16>) -> tensor<1x2x4x8xf16>
  return %y : tensor<1x2x4x8xf16>
}

// -----

// A dynamic batch: b and h are read together by every operand that reads them (the causal bias
// reads neither), so IREE merges them into one loop and the tile lists have 6 entries.
//       CHECK: #iree_cpu.lowering_config<distribution = [1, 2, 1, 0, 0, 8], vector_common_parallel = [1, 2, 1, 0, 0, 8], vector_reduction = [0, 0, 0, 8, 0, 0]>
//       CHECK: #iree_cpu.lowering_config<distribution = [1, 1, 64, 0, 0, 8], vector_common_parallel = [1, 1, 8, 0, 0, 8], vector_reduction = [0, 0, 0, 8, 0, 0]>
// CHECK-LABEL: func.func @dynamic_batch
//       CHECK:   scf.if
func.func @dynamic_batch(%q: tensor<?x4x?x8xf32>, %k: tensor<?x2x?x8xf32>, %v: tensor<?x2x?x8xf32>) -> tensor<?x4x?x8xf32> {
  %y = "kvattn.attention"(%q, %k, %v) {is_causal = 1 : i64, onnx_node = "dynamic_batch", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 1>, resultSegmentSizes = array<i32: 1>} : (tensor<?x4x?x8xf32>, tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) -> tensor<?x4x?x8xf32>
  return %y : tensor<?x4x?x8xf32>
}

// -----

// The same with K and V dequantized inside the attention (fused Q/DQ): the dequantization joins
// the attention's dispatch, where IREE reshapes dynamic loops differently (merged-b·h tiles failed
// to compile, tiles for a dynamic query count gave wrong numbers), so IREE's default tiles stay.
// CHECK-LABEL: func.func @dynamic_batch_dequantized
//   CHECK-NOT:   compilation_info
//   CHECK-NOT:   scf.if
//       CHECK:   iree_linalg_ext.attention
//   CHECK-NOT:   compilation_info
func.func @dynamic_batch_dequantized(%q: tensor<?x4x?x8xf32>, %k: tensor<?x2x?x8xi8>, %v: tensor<?x2x?x8xi8>, %scale: tensor<f32>, %zero: tensor<i8>) -> tensor<?x4x?x8xf32> {
  %y = "kvattn.attention"(%q, %k, %v, %scale, %zero, %scale, %zero) {is_causal = 1 : i64, onnx_node = "dequantized", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1>, resultSegmentSizes = array<i32: 1>} : (tensor<?x4x?x8xf32>, tensor<?x2x?x8xi8>, tensor<?x2x?x8xi8>, tensor<f32>, tensor<i8>, tensor<f32>, tensor<i8>) -> tensor<?x4x?x8xf32>
  return %y : tensor<?x4x?x8xf32>
}
