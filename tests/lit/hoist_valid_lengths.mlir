// RUN: kvattn-opt %s --passes=kvattn-hoist-valid-lengths --split-input-file | filecheck %s

// The marked max(nonpad) reduction, with the barrier, init and constant it reads, moves before
// the first host readback (the write_indices check); both readbacks, and the assert, stay in
// their order, and the mark is gone.
// CHECK-LABEL: func.func @decode_step
//   CHECK-NOT:   tensor.extract
//       CHECK:   %[[NONPAD:.*]] = iree_tensor_ext.compute_barrier.start %arg1
//       CHECK:   %[[INIT:.*]] = linalg.fill
//       CHECK:   %[[MAX:.*]] = linalg.generic {{.*}} ins(%[[NONPAD]] : tensor<2xi64>) outs(%[[INIT]] : tensor<i64>)
//       CHECK:   %[[OK:.*]] = tensor.extract %arg0[] : tensor<i1>
//       CHECK:   cf.assert %[[OK]], "write_indices checked first"
//       CHECK:   tensor.extract %[[MAX]][] : tensor<i64>
//   CHECK-NOT:   kvattn.valid_length
func.func @decode_step(%check: tensor<i1>, %nonpad: tensor<2xi64>) -> i64 {
  %ok = tensor.extract %check[] : tensor<i1>
  cf.assert %ok, "write_indices checked first"
  %barrier = iree_tensor_ext.compute_barrier.start %nonpad : tensor<2xi64> -> tensor<2xi64>
  %zero = arith.constant 0 : i64
  %empty = tensor.empty() : tensor<i64>
  %init = linalg.fill ins(%zero : i64) outs(%empty : tensor<i64>) -> tensor<i64>
  %max = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> ()>], iterator_types = ["reduction"], kvattn.valid_length} ins(%barrier : tensor<2xi64>) outs(%init : tensor<i64>) {
  ^bb0(%in: i64, %out: i64):
    %m = arith.maxsi %in, %out : i64
    linalg.yield %m : i64
  } -> tensor<i64>
  %n = tensor.extract %max[] : tensor<i64>
  return %n : i64
}

// -----

// nonpad computed after the check by an op that reads memory (here an elementwise add): nothing
// moves, so no computation runs before the check that guards it; the mark is dropped.
// CHECK-LABEL: func.func @computed_nonpad
//       CHECK:   tensor.extract %arg0[] : tensor<i1>
//       CHECK:   cf.assert
//       CHECK:   linalg.generic {{.*}} iterator_types = ["parallel"]
//       CHECK:   linalg.generic {{.*}} iterator_types = ["reduction"]}
//   CHECK-NOT:   kvattn.valid_length
func.func @computed_nonpad(%check: tensor<i1>, %past: tensor<2xi64>) -> i64 {
  %ok = tensor.extract %check[] : tensor<i1>
  cf.assert %ok, "checked first"
  %one = arith.constant 1 : i64
  %e2 = tensor.empty() : tensor<2xi64>
  %nonpad = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%past : tensor<2xi64>) outs(%e2 : tensor<2xi64>) {
  ^bb0(%in: i64, %out: i64):
    %s = arith.addi %in, %one : i64
    linalg.yield %s : i64
  } -> tensor<2xi64>
  %zero = arith.constant 0 : i64
  %empty = tensor.empty() : tensor<i64>
  %init = linalg.fill ins(%zero : i64) outs(%empty : tensor<i64>) -> tensor<i64>
  %max = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> ()>], iterator_types = ["reduction"], kvattn.valid_length} ins(%nonpad : tensor<2xi64>) outs(%init : tensor<i64>) {
  ^bb0(%in: i64, %out: i64):
    %m = arith.maxsi %in, %out : i64
    linalg.yield %m : i64
  } -> tensor<i64>
  %n = tensor.extract %max[] : tensor<i64>
  return %n : i64
}
