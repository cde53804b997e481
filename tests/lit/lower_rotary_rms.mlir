// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --split-input-file | filecheck %s

// RotaryEmbedding with position_ids: the call fails unless every position is in [0, 16) (an
// and-reduction read back before the gather); then one generic over [B, N, S, D] that gathers
// the token's cos/sin row (position_ids[b, s]) and the partner element of x (j ± D/2).
// CHECK-LABEL: func.func @rotary_halves
//  CHECK-SAME:   %[[X:[a-z0-9]+]]: tensor<1x2x3x8xf32>, %[[COS:[a-z0-9]+]]: tensor<16x4xf32>, %[[SIN:[a-z0-9]+]]: tensor<16x4xf32>, %[[POS:[a-z0-9]+]]: tensor<1x3xi64>
//       CHECK:   %[[ALL:.*]] = linalg.generic {{.*}} iterator_types = ["reduction", "reduction"]} ins(%[[POS]] : tensor<1x3xi64>) outs(%{{.*}} : tensor<i1>)
//       CHECK:     arith.cmpi sge, %{{.*}}, %c0_i64 : i64
//       CHECK:     arith.cmpi sle, %{{.*}}, %c15_i64 : i64
//       CHECK:   %[[OK:.*]] = tensor.extract %[[ALL]][] : tensor<i1>
//       CHECK:   cf.assert %[[OK]], "RotaryEmbedding node 'rope': position_ids out of range: every position must be in [0, 16) for a cos_cache of 16 rows"
//       CHECK:   linalg.generic {{.*}} outs(%{{.*}} : tensor<1x2x3x8xf32>)
//       CHECK:     tensor.extract %[[POS]]
//       CHECK:     tensor.extract %[[COS]]
//       CHECK:     tensor.extract %[[SIN]]
//       CHECK:     tensor.extract %[[X]]
//       CHECK:   } -> tensor<1x2x3x8xf32>
func.func @rotary_halves(%x: tensor<1x2x3x8xf32>, %cos: tensor<16x4xf32>, %sin: tensor<16x4xf32>, %pos: tensor<1x3xi64>) -> tensor<1x2x3x8xf32> {
  %0 = "kvattn.rotary_embedding"(%x, %cos, %sin, %pos) {onnx_node = "rope", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 1>, resultSegmentSizes = array<i32: 1>} : (tensor<1x2x3x8xf32>, tensor<16x4xf32>, tensor<16x4xf32>, tensor<1x3xi64>) -> tensor<1x2x3x8xf32>
  return %0 : tensor<1x2x3x8xf32>
}

// -----

// 3D input [B, S, N·D] is expanded to [B, S, N, D] and collapsed back.
// CHECK-LABEL: func.func @rotary_3d
//       CHECK:   tensor.expand_shape %{{.*}} {{\[}}[0], [1], [2, 3]] output_shape [1, 3, 2, 8]
//       CHECK:   linalg.generic
//       CHECK:   tensor.collapse_shape %{{.*}} {{\[}}[0], [1], [2, 3]] : tensor<1x3x2x8xf32> into tensor<1x3x16xf32>
func.func @rotary_3d(%x: tensor<1x3x16xf32>, %cos: tensor<1x3x4xf32>, %sin: tensor<1x3x4xf32>) -> tensor<1x3x16xf32> {
  %0 = "kvattn.rotary_embedding"(%x, %cos, %sin) {num_heads = 2 : i64, onnx_node = "rope3d", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0>, resultSegmentSizes = array<i32: 1>} : (tensor<1x3x16xf32>, tensor<1x3x4xf32>, tensor<1x3x4xf32>) -> tensor<1x3x16xf32>
  return %0 : tensor<1x3x16xf32>
}

// -----

// RMSNormalization over the last two dims: Σx² reduced to [B], then x·rsqrt(Σx²/N + ε)·scale.
// CHECK-LABEL: func.func @rms_axis1
//       CHECK:   %[[N:.*]] = arith.constant 1.200000e+01 : f32
//       CHECK:   %[[SUMS:.*]] = linalg.generic {{.*}}iterator_types = ["parallel", "reduction", "reduction"]{{.*}} outs(%{{.*}} : tensor<2xf32>)
//       CHECK:   linalg.generic {{.*}} ins(%{{.*}}, %[[SUMS]], %{{.*}} : tensor<2x3x4xf32>, tensor<2xf32>, tensor<4xf32>)
//       CHECK:     arith.divf %{{.*}}, %[[N]] : f32
//       CHECK:     math.rsqrt
func.func @rms_axis1(%x: tensor<2x3x4xf32>, %scale: tensor<4xf32>) -> tensor<2x3x4xf32> {
  %0 = "kvattn.rms_normalization"(%x, %scale) {axis = 1 : i64, onnx_node = "norm", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1>, resultSegmentSizes = array<i32: 1>} : (tensor<2x3x4xf32>, tensor<4xf32>) -> tensor<2x3x4xf32>
  return %0 : tensor<2x3x4xf32>
}
