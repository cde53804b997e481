// RUN: kvattn-opt %s --passes=kvattn-raise-onnx,kvattn-verify --split-input-file | filecheck %s

// The ONNX node's name (the op's location) and the function's opset are kept on the op;
// each present operand is cast to a builtin tensor and each present result back.
// CHECK-LABEL: func.func @gqa_causal
//  CHECK-SAME:   %[[Q:[a-z0-9]+]]: !torch.vtensor<[1,8,4,16],f32>
//       CHECK:   %[[QB:.*]] = torch_c.to_builtin_tensor %[[Q]] : !torch.vtensor<[1,8,4,16],f32> -> tensor<1x8x4x16xf32>
//       CHECK:   %[[Y:.*]] = "kvattn.attention"(%[[QB]], %{{[0-9]+}}, %{{[0-9]+}})
//  CHECK-SAME:     is_causal = 1 : i64
//  CHECK-SAME:     onnx_node = "attn"
//  CHECK-SAME:     onnx_opset = 23 : i64
//  CHECK-SAME:     operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0>
//  CHECK-SAME:     resultSegmentSizes = array<i32: 1, 0, 0, 0>
//  CHECK-SAME:     (tensor<1x8x4x16xf32>, tensor<1x2x4x16xf32>, tensor<1x2x4x16xf32>) -> tensor<1x8x4x16xf32>
//       CHECK:   %[[YT:.*]] = torch_c.from_builtin_tensor %[[Y]] : tensor<1x8x4x16xf32> -> !torch.vtensor<[1,8,4,16],f32>
//       CHECK:   return %[[YT]]
//   CHECK-NOT:   torch.operator
func.func @gqa_causal(%arg0: !torch.vtensor<[1,8,4,16],f32>, %arg1: !torch.vtensor<[1,2,4,16],f32>, %arg2: !torch.vtensor<[1,2,4,16],f32>) -> !torch.vtensor<[1,8,4,16],f32> attributes {torch.onnx_meta.ir_version = 11 : si64, torch.onnx_meta.opset_version = 23 : si64} {
  %0 = torch.operator "onnx.Attention"(%arg0, %arg1, %arg2) {torch.onnx.is_causal = 1 : si64} : (!torch.vtensor<[1,8,4,16],f32>, !torch.vtensor<[1,2,4,16],f32>, !torch.vtensor<[1,2,4,16],f32>) -> !torch.vtensor<[1,8,4,16],f32> loc("attn")
  return %0 : !torch.vtensor<[1,8,4,16],f32>
}

// -----

// `!torch.none` inputs and outputs are absent optionals; positions map to the spec's names.
// CHECK-LABEL: func.func @nonpad_only
//       CHECK:   "kvattn.attention"
//  CHECK-SAME:     operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0>
//  CHECK-SAME:     (tensor<1x4x1x8xf32>, tensor<1x2x16x8xf32>, tensor<1x2x16x8xf32>, tensor<1xi64>) -> tensor<1x4x1x8xf32>
func.func @nonpad_only(%arg0: !torch.vtensor<[1,4,1,8],f32>, %arg1: !torch.vtensor<[1,2,16,8],f32>, %arg2: !torch.vtensor<[1,2,16,8],f32>, %arg3: !torch.vtensor<[1],si64>) -> !torch.vtensor<[1,4,1,8],f32> attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %none = torch.constant.none
  %0 = torch.operator "onnx.Attention"(%arg0, %arg1, %arg2, %none, %none, %none, %arg3) : (!torch.vtensor<[1,4,1,8],f32>, !torch.vtensor<[1,2,16,8],f32>, !torch.vtensor<[1,2,16,8],f32>, !torch.none, !torch.none, !torch.none, !torch.vtensor<[1],si64>) -> !torch.vtensor<[1,4,1,8],f32> loc("decode")
  return %0 : !torch.vtensor<[1,4,1,8],f32>
}

// -----

// CHECK-LABEL: func.func @scatter_circular
//       CHECK:   "kvattn.tensor_scatter"
//  CHECK-SAME:     axis = 1 : i64
//  CHECK-SAME:     mode = "circular"
//  CHECK-SAME:     onnx_node = "ring_write"
//  CHECK-SAME:     operandSegmentSizes = array<i32: 1, 1, 0>
//  CHECK-SAME:     (tensor<2x16x8xf32>, tensor<2x3x8xf32>) -> tensor<2x16x8xf32>
func.func @scatter_circular(%arg0: !torch.vtensor<[2,16,8],f32>, %arg1: !torch.vtensor<[2,3,8],f32>) -> !torch.vtensor<[2,16,8],f32> attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %0 = torch.operator "onnx.TensorScatter"(%arg0, %arg1) {torch.onnx.axis = 1 : si64, torch.onnx.mode = "circular"} : (!torch.vtensor<[2,16,8],f32>, !torch.vtensor<[2,3,8],f32>) -> !torch.vtensor<[2,16,8],f32> loc("ring_write")
  return %0 : !torch.vtensor<[2,16,8],f32>
}

// -----

// Operators kvattn does not own stay for IREE's ONNX lowering.
// CHECK-LABEL: func.func @not_ours
//       CHECK:   torch.operator "onnx.Add"
//   CHECK-NOT:   kvattn.
func.func @not_ours(%arg0: !torch.vtensor<[4],f32>) -> !torch.vtensor<[4],f32> attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %0 = torch.operator "onnx.Add"(%arg0, %arg0) : (!torch.vtensor<[4],f32>, !torch.vtensor<[4],f32>) -> !torch.vtensor<[4],f32>
  return %0 : !torch.vtensor<[4],f32>
}

// -----

// An operator of another domain with the same name (com.microsoft RotaryEmbedding) is not ours;
// the importer records its domain since the op name drops it.
// CHECK-LABEL: func.func @other_domain
//       CHECK:   torch.operator "onnx.RotaryEmbedding"
//   CHECK-NOT:   kvattn.
func.func @other_domain(%arg0: !torch.vtensor<[1,3,8],f32>, %arg1: !torch.vtensor<[1,3],si64>, %arg2: !torch.vtensor<[4,2],f32>) -> !torch.vtensor<[1,3,8],f32> attributes {torch.onnx_meta.opset_version = 23 : si64} {
  %0 = torch.operator "onnx.RotaryEmbedding"(%arg0, %arg1, %arg2, %arg2) {onnx_domain = "com.microsoft"} : (!torch.vtensor<[1,3,8],f32>, !torch.vtensor<[1,3],si64>, !torch.vtensor<[4,2],f32>, !torch.vtensor<[4,2],f32>) -> !torch.vtensor<[1,3,8],f32> loc("ms_rope")
  return %0 : !torch.vtensor<[1,3,8],f32>
}
