// RUN: kvattn-opt %s --passes=kvattn-flatten-ambiguous-views --split-input-file | filecheck %s

// GPT-2's merge of heads before its Gemm: two dynamic dims, none pinned by the size list. The
// input is viewed as [?] first, and the -1 becomes numel / (product of the other sizes, at least 1).
// CHECK-LABEL: func.func @merge_heads
//       CHECK:   %[[FLAT_SIZES:.*]] = torch.prim.ListConstruct %int-1_0 : (!torch.int) -> !torch.list<int>
//       CHECK:   %[[FLAT:.*]] = torch.aten.view %arg0, %[[FLAT_SIZES]] : !torch.vtensor<[?,?,2,16],f32>, !torch.list<int> -> !torch.vtensor<[?],f32>
//       CHECK:   %[[KNOWN:.*]] = torch.aten.mul.int %{{.*}}, %int32
//       CHECK:   %[[NONZERO:.*]] = torch.prim.max.int %[[KNOWN]], %{{.*}}
//       CHECK:   %[[TOTAL:.*]] = torch.aten.size.int %[[FLAT]], %{{.*}}
//       CHECK:   %[[ROWS:.*]] = torch.aten.floordiv.int %[[TOTAL]], %[[NONZERO]]
//       CHECK:   %[[SIZES:.*]] = torch.prim.ListConstruct %[[ROWS]], %int32
//       CHECK:   torch.aten.view %[[FLAT]], %[[SIZES]] : !torch.vtensor<[?],f32>, !torch.list<int> -> !torch.vtensor<[?,32],f32>
func.func @merge_heads(%arg0: !torch.vtensor<[?,?,2,16],f32>) -> !torch.vtensor<[?,32],f32> {
  %int-1 = torch.constant.int -1
  %int32 = torch.constant.int 32
  %0 = torch.prim.ListConstruct %int-1, %int32 : (!torch.int, !torch.int) -> !torch.list<int>
  %1 = torch.aten.view %arg0, %0 : !torch.vtensor<[?,?,2,16],f32>, !torch.list<int> -> !torch.vtensor<[?,32],f32>
  return %1 : !torch.vtensor<[?,32],f32>
}

// -----

// Dims pinned by `aten.size.int` of the input itself leave at most one to guess: unchanged.
// CHECK-LABEL: func.func @pinned
//   CHECK-NOT:   torch.prim.max.int
//       CHECK:   torch.aten.view %arg0, %{{.*}} : !torch.vtensor<[?,?,32],f32>, !torch.list<int> -> !torch.vtensor<[?,?,2,16],f32>
func.func @pinned(%arg0: !torch.vtensor<[?,?,32],f32>) -> !torch.vtensor<[?,?,2,16],f32> {
  %int0 = torch.constant.int 0
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int16 = torch.constant.int 16
  %b = torch.aten.size.int %arg0, %int0 : !torch.vtensor<[?,?,32],f32>, !torch.int -> !torch.int
  %s = torch.aten.size.int %arg0, %int1 : !torch.vtensor<[?,?,32],f32>, !torch.int -> !torch.int
  %0 = torch.prim.ListConstruct %b, %s, %int2, %int16 : (!torch.int, !torch.int, !torch.int, !torch.int) -> !torch.list<int>
  %1 = torch.aten.view %arg0, %0 : !torch.vtensor<[?,?,32],f32>, !torch.list<int> -> !torch.vtensor<[?,?,2,16],f32>
  return %1 : !torch.vtensor<[?,?,2,16],f32>
}

// -----

// One dynamic dim, or a view to one dimension: nothing to guess, unchanged.
// CHECK-LABEL: func.func @one_dynamic
//   CHECK-NOT:   torch.prim.max.int
//       CHECK:   torch.aten.view %arg0, %{{.*}} -> !torch.vtensor<[?,32],f32>
//       CHECK:   torch.aten.view %arg1, %{{.*}} -> !torch.vtensor<[?],f32>
func.func @one_dynamic(%arg0: !torch.vtensor<[?,2,16],f32>, %arg1: !torch.vtensor<[?,?],f32>) -> (!torch.vtensor<[?,32],f32>, !torch.vtensor<[?],f32>) {
  %int-1 = torch.constant.int -1
  %int32 = torch.constant.int 32
  %0 = torch.prim.ListConstruct %int-1, %int32 : (!torch.int, !torch.int) -> !torch.list<int>
  %1 = torch.aten.view %arg0, %0 : !torch.vtensor<[?,2,16],f32>, !torch.list<int> -> !torch.vtensor<[?,32],f32>
  %2 = torch.prim.ListConstruct %int-1 : (!torch.int) -> !torch.list<int>
  %3 = torch.aten.view %arg1, %2 : !torch.vtensor<[?,?],f32>, !torch.list<int> -> !torch.vtensor<[?],f32>
  return %1, %3 : !torch.vtensor<[?,32],f32>, !torch.vtensor<[?],f32>
}
