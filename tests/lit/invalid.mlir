// RUN: not kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --split-input-file 2>&1 | filecheck %s

// CHECK: error: Attention node 'no_heads': 3D inputs need the attributes q_num_heads and kv_num_heads
func.func @three_d_without_heads(%q: tensor<1x3x16xf32>) -> tensor<1x3x16xf32> {
  %0 = "kvattn.attention"(%q, %q, %q) {onnx_node = "no_heads", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x3x16xf32>, tensor<1x3x16xf32>, tensor<1x3x16xf32>) -> tensor<1x3x16xf32>
  return %0 : tensor<1x3x16xf32>
}

// -----

// Dynamic batch and sequence dims are fine; a dynamic head count is not.
// CHECK: error: Attention node 'dynamic_heads': input Q float32[1,?,4,8] with a dynamic head count or head size is not supported yet
func.func @dynamic_heads(%q: tensor<1x?x4x8xf32>, %k: tensor<1x2x4x8xf32>) -> tensor<1x?x4x8xf32> {
  %0 = "kvattn.attention"(%q, %k, %k) {onnx_node = "dynamic_heads", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x?x4x8xf32>, tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>) -> tensor<1x?x4x8xf32>
  return %0 : tensor<1x?x4x8xf32>
}

// -----

// CHECK: error: Attention node 'odd_groups': 6 query heads are not a multiple of 4 key/value heads
func.func @bad_gqa(%q: tensor<1x6x4x8xf32>, %k: tensor<1x4x4x8xf32>) -> tensor<1x6x4x8xf32> {
  %0 = "kvattn.attention"(%q, %k, %k) {onnx_node = "odd_groups", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x6x4x8xf32>, tensor<1x4x4x8xf32>, tensor<1x4x4x8xf32>) -> tensor<1x6x4x8xf32>
  return %0 : tensor<1x6x4x8xf32>
}

// -----

// CHECK: error: TensorScatter node 'bad_mode': attribute mode='ring' must be 'linear' or 'circular'
func.func @bad_mode(%cache: tensor<2x16x8xf32>, %update: tensor<2x3x8xf32>) -> tensor<2x16x8xf32> {
  %0 = "kvattn.tensor_scatter"(%cache, %update) {axis = 1 : i64, mode = "ring", onnx_node = "bad_mode", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 0>, resultSegmentSizes = array<i32: 1>} : (tensor<2x16x8xf32>, tensor<2x3x8xf32>) -> tensor<2x16x8xf32>
  return %0 : tensor<2x16x8xf32>
}

// -----

// CHECK: error: TensorScatter node 'batch_axis': attribute axis=0 must name a non-batch axis of a rank-3 cache
func.func @batch_axis(%cache: tensor<2x16x8xf32>, %update: tensor<2x16x8xf32>) -> tensor<2x16x8xf32> {
  %0 = "kvattn.tensor_scatter"(%cache, %update) {axis = 0 : i64, mode = "linear", onnx_node = "batch_axis", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 0>, resultSegmentSizes = array<i32: 1>} : (tensor<2x16x8xf32>, tensor<2x16x8xf32>) -> tensor<2x16x8xf32>
  return %0 : tensor<2x16x8xf32>
}

// -----

// CHECK: error: TensorScatter node 'too_many': update has 20 rows on axis 1 but the cache holds only 16
func.func @too_many_rows(%cache: tensor<2x16x8xf32>, %update: tensor<2x20x8xf32>) -> tensor<2x16x8xf32> {
  %0 = "kvattn.tensor_scatter"(%cache, %update) {axis = 1 : i64, mode = "circular", onnx_node = "too_many", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 0>, resultSegmentSizes = array<i32: 1>} : (tensor<2x16x8xf32>, tensor<2x20x8xf32>) -> tensor<2x16x8xf32>
  return %0 : tensor<2x16x8xf32>
}

// -----

// CHECK: error: Attention node 'nan_scale': attribute scale=nan must be a finite number
func.func @nan_scale(%q: tensor<1x2x4x8xf32>) -> tensor<1x2x4x8xf32> {
  %0 = "kvattn.attention"(%q, %q, %q) {scale = 0x7FC00000 : f32, onnx_node = "nan_scale", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>) -> tensor<1x2x4x8xf32>
  return %0 : tensor<1x2x4x8xf32>
}
