// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --split-input-file | filecheck %s

// Linear update of 3 rows at per-batch offsets on axis 2 of a [2, 4, 16, 8] cache: the call
// fails unless every write_indices[b] is in [0, 16 - 3] (an and-reduction read back by the
// host before the scatter is launched); indices (b, h, write_indices[b] + u) for the 2·4·3 new
// rows; only those rows are written.
// CHECK-LABEL: func.func @linear_axis2
//  CHECK-SAME:   %[[CACHE:[a-z0-9]+]]: tensor<2x4x16x8xf32>, %[[UPDATE:[a-z0-9]+]]: tensor<2x4x3x8xf32>, %[[WRITE:[a-z0-9]+]]: tensor<2xi64>
//   CHECK-DAG:   %[[HIGHEST:.*]] = arith.constant 13 : i64
//   CHECK-DAG:   %[[ZERO:.*]] = arith.constant 0 : i64
//       CHECK:   %[[ALL:.*]] = linalg.generic {{.*}} iterator_types = ["reduction"]} ins(%[[WRITE]] : tensor<2xi64>) outs(%{{.*}} : tensor<i1>)
//       CHECK:     arith.cmpi sge, %{{.*}}, %[[ZERO]] : i64
//       CHECK:     arith.cmpi sle, %{{.*}}, %[[HIGHEST]] : i64
//       CHECK:   %[[OK:.*]] = tensor.extract %[[ALL]][] : tensor<i1>
//       CHECK:   cf.assert %[[OK]], "TensorScatter node 'kv_write': write_indices out of range: a linear write needs 0 <= write_indices[b] <= cache length - update rows (here 16 - 3)"
//       CHECK:   %[[IDX:.*]] = linalg.generic {{.*}} ins(%[[WRITE]] : tensor<2xi64>) outs(%{{.*}} : tensor<2x4x3x3xi32>)
//   CHECK-NOT:     arith.remsi
//       CHECK:     arith.trunci {{.*}} : i64 to i32
//       CHECK:     arith.addi {{.*}} : i32
//       CHECK:   %[[IDX2:.*]] = tensor.collapse_shape %[[IDX]] {{\[}}[0, 1, 2], [3]] : tensor<2x4x3x3xi32> into tensor<24x3xi32>
//       CHECK:   %[[UPD2:.*]] = tensor.collapse_shape %[[UPDATE]] {{\[}}[0, 1, 2], [3]] : tensor<2x4x3x8xf32> into tensor<24x8xf32>
//       CHECK:   %[[NEW:.*]] = iree_linalg_ext.scatter dimension_map = [0, 1, 2] unique_indices(true)
//  CHECK-SAME:     ins(%[[UPD2]], %[[IDX2]] : tensor<24x8xf32>, tensor<24x3xi32>) outs(%[[CACHE]] : tensor<2x4x16x8xf32>)
//       CHECK:   return %[[NEW]]
func.func @linear_axis2(%cache: tensor<2x4x16x8xf32>, %update: tensor<2x4x3x8xf32>, %write: tensor<2xi64>) -> tensor<2x4x16x8xf32> {
  %0 = "kvattn.tensor_scatter"(%cache, %update, %write) {axis = 2 : i64, mode = "linear", onnx_node = "kv_write", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 1>, resultSegmentSizes = array<i32: 1>} : (tensor<2x4x16x8xf32>, tensor<2x4x3x8xf32>, tensor<2xi64>) -> tensor<2x4x16x8xf32>
  return %0 : tensor<2x4x16x8xf32>
}

// -----

// Circular update without write_indices (offset 0) on axis 1: positions wrap modulo 16.
// CHECK-LABEL: func.func @circular_axis1
//       CHECK:   linalg.generic
//   CHECK-NOT:     ins(
//       CHECK:     arith.remsi %{{.*}}, %c16_i32 : i32
//       CHECK:   iree_linalg_ext.scatter dimension_map = [0, 1] unique_indices(true)
//  CHECK-SAME:     tensor<6x8xf32>, tensor<6x2xi32>
func.func @circular_axis1(%cache: tensor<2x16x8xf32>, %update: tensor<2x3x8xf32>) -> tensor<2x16x8xf32> {
  %0 = "kvattn.tensor_scatter"(%cache, %update) {axis = 1 : i64, mode = "circular", onnx_node = "ring_write", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 0>, resultSegmentSizes = array<i32: 1>} : (tensor<2x16x8xf32>, tensor<2x3x8xf32>) -> tensor<2x16x8xf32>
  return %0 : tensor<2x16x8xf32>
}

// -----

// Circular update at write_indices: as onnx.reference (numpy's %), the index is first reduced
// to [0, C) in i64 (negative and huge indices included), then the row offset is added and
// reduced again in i32; no range check.
// CHECK-LABEL: func.func @circular_with_indices
//   CHECK-NOT:   cf.assert
//       CHECK:   linalg.generic {{.*}} ins(%{{.*}} : tensor<2xi64>)
//       CHECK:     %[[R64:.*]] = arith.remsi %{{.*}}, %c16_i64 : i64
//       CHECK:     %[[NEG64:.*]] = arith.cmpi slt, %[[R64]], %c0_i64 : i64
//       CHECK:     %[[UP64:.*]] = arith.addi %[[R64]], %c16_i64 : i64
//       CHECK:     %[[START:.*]] = arith.select %[[NEG64]], %[[UP64]], %[[R64]] : i64
//       CHECK:     arith.trunci %[[START]] : i64 to i32
//       CHECK:     arith.remsi %{{.*}}, %c16_i32 : i32
//       CHECK:   iree_linalg_ext.scatter
func.func @circular_with_indices(%cache: tensor<2x16x8xf32>, %update: tensor<2x3x8xf32>, %write: tensor<2xi64>) -> tensor<2x16x8xf32> {
  %0 = "kvattn.tensor_scatter"(%cache, %update, %write) {axis = 1 : i64, mode = "circular", onnx_node = "ring_write", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 1>, resultSegmentSizes = array<i32: 1>} : (tensor<2x16x8xf32>, tensor<2x3x8xf32>, tensor<2xi64>) -> tensor<2x16x8xf32>
  return %0 : tensor<2x16x8xf32>
}

// -----

// No new rows: the present cache is the past one (no scatter; iree-compile crashed on it).
// CHECK-LABEL: func.func @no_new_rows
//  CHECK-SAME:   %[[CACHE:[a-z0-9]+]]: tensor<2x16x8xf32>
//   CHECK-NOT:   iree_linalg_ext.scatter
//       CHECK:   return %[[CACHE]]
func.func @no_new_rows(%cache: tensor<2x16x8xf32>, %update: tensor<2x0x8xf32>) -> tensor<2x16x8xf32> {
  %0 = "kvattn.tensor_scatter"(%cache, %update) {axis = 1 : i64, mode = "linear", onnx_node = "no_write", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 0>, resultSegmentSizes = array<i32: 1>} : (tensor<2x16x8xf32>, tensor<2x0x8xf32>) -> tensor<2x16x8xf32>
  return %0 : tensor<2x16x8xf32>
}
