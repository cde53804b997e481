// RUN: kvattn-opt %s --passes=kvattn-fresh-sort-operands | filecheck %s

// Two TopK sorts of different keys that IREE gave one index tensor: each sorts a copy of its
// keys and indices written by its own generic, which reads its keys (so they cannot be CSE'd).
// CHECK-LABEL: func.func @two_topk
//       CHECK:   %[[E:.*]] = tensor.empty(%{{.*}}) : tensor<?x4xi64>
//       CHECK:   %[[KEYS0:.*]] = tensor.empty(%{{.*}}) : tensor<?x4xf32>
//       CHECK:   %[[FRESH0:.*]]:2 = linalg.generic {{.*}} ins(%arg0 : tensor<?x4xf32>) outs(%[[KEYS0]], %[[E]] : tensor<?x4xf32>, tensor<?x4xi64>)
//       CHECK:     linalg.index 1
//       CHECK:   iree_linalg_ext.sort dimension(1) outs(%[[FRESH0]]#0, %[[FRESH0]]#1 : tensor<?x4xf32>, tensor<?x4xi64>)
//       CHECK:   %[[FRESH1:.*]]:2 = linalg.generic {{.*}} ins(%arg1 : tensor<?x4xf32>)
//       CHECK:   iree_linalg_ext.sort dimension(1) outs(%[[FRESH1]]#0, %[[FRESH1]]#1 : tensor<?x4xf32>, tensor<?x4xi64>)
#map = affine_map<(d0, d1) -> (d0, d1)>
func.func @two_topk(%arg0: tensor<?x4xf32>, %arg1: tensor<?x4xf32>) -> (tensor<?x4xi64>, tensor<?x4xi64>) {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %arg0, %c0 : tensor<?x4xf32>
  %e = tensor.empty(%n) : tensor<?x4xi64>
  %iota = linalg.generic {indexing_maps = [#map], iterator_types = ["parallel", "parallel"]} outs(%e : tensor<?x4xi64>) {
  ^bb0(%out: i64):
    %i = linalg.index 1 : index
    %c = arith.index_cast %i : index to i64
    linalg.yield %c : i64
  } -> tensor<?x4xi64>
  %a:2 = iree_linalg_ext.sort dimension(1) outs(%arg0, %iota : tensor<?x4xf32>, tensor<?x4xi64>) {
  ^bb0(%x: f32, %y: f32, %i: i64, %j: i64):
    %ge = arith.cmpf oge, %x, %y : f32
    iree_linalg_ext.yield %ge : i1
  } -> tensor<?x4xf32>, tensor<?x4xi64>
  %b:2 = iree_linalg_ext.sort dimension(1) outs(%arg1, %iota : tensor<?x4xf32>, tensor<?x4xi64>) {
  ^bb0(%x: f32, %y: f32, %i: i64, %j: i64):
    %ge = arith.cmpf oge, %x, %y : f32
    iree_linalg_ext.yield %ge : i1
  } -> tensor<?x4xf32>, tensor<?x4xi64>
  return %a#1, %b#1 : tensor<?x4xi64>, tensor<?x4xi64>
}

// CHECK-LABEL: func.func @other_axis
//   CHECK-NOT:   ins(%arg0
func.func @other_axis(%arg0: tensor<?x4xf32>) -> tensor<?x4xi64> {
  %c0 = arith.constant 0 : index
  %n = tensor.dim %arg0, %c0 : tensor<?x4xf32>
  %e = tensor.empty(%n) : tensor<?x4xi64>
  %iota = linalg.generic {indexing_maps = [#map], iterator_types = ["parallel", "parallel"]} outs(%e : tensor<?x4xi64>) {
  ^bb0(%out: i64):
    %i = linalg.index 0 : index
    %c = arith.index_cast %i : index to i64
    linalg.yield %c : i64
  } -> tensor<?x4xi64>
  %a:2 = iree_linalg_ext.sort dimension(1) outs(%arg0, %iota : tensor<?x4xf32>, tensor<?x4xi64>) {
  ^bb0(%x: f32, %y: f32, %i: i64, %j: i64):
    %ge = arith.cmpf oge, %x, %y : f32
    iree_linalg_ext.yield %ge : i1
  } -> tensor<?x4xf32>, tensor<?x4xi64>
  return %a#1 : tensor<?x4xi64>
}
