// RUN: kvattn-opt %s --passes=kvattn-raise-onnx,kvattn-fuse-qdq,kvattn-verify --split-input-file | filecheck %s

// DequantizeLinear on K and V (per-head scales) and QuantizeLinear on Y fold into the attention:
// it takes the int8 tensors with their scales and zero points and returns int8.
// CHECK-LABEL: func.func @fused
//   CHECK-NOT:   onnx.DequantizeLinear
//   CHECK-NOT:   onnx.QuantizeLinear
//       CHECK:   %[[Y:.*]] = "kvattn.attention"
//  CHECK-SAME:     K_axis = 1 : i64
//  CHECK-SAME:     V_axis = 1 : i64
//  CHECK-SAME:     Y_axis = 1 : i64
//  CHECK-SAME:     operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1>
//  CHECK-SAME:     (tensor<1x4x3x8xf32>, tensor<1x2x6x8xi8>, tensor<1x2x6x8xi8>, tensor<2xf32>, tensor<2xi8>, tensor<2xf32>, tensor<2xi8>, tensor<f32>, tensor<i8>) -> tensor<1x4x3x8xi8>
//       CHECK:   %[[T:.*]] = torch_c.from_builtin_tensor %[[Y]] : tensor<1x4x3x8xi8> -> !torch.vtensor<[1,4,3,8],si8>
//       CHECK:   return %[[T]]
func.func @fused(%q: !torch.vtensor<[1,4,3,8],f32>, %k8: !torch.vtensor<[1,2,6,8],si8>, %v8: !torch.vtensor<[1,2,6,8],si8>) -> !torch.vtensor<[1,4,3,8],si8> attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %s = torch.operator "onnx.Constant"() {torch.onnx.value = dense<[0.05, 0.06]> : tensor<2xf32>} : () -> !torch.vtensor<[2],f32>
  %z = torch.operator "onnx.Constant"() {torch.onnx.value = dense<3> : tensor<2xsi8>} : () -> !torch.vtensor<[2],si8>
  %ys = torch.operator "onnx.Constant"() {torch.onnx.value = dense<0.01> : tensor<f32>} : () -> !torch.vtensor<[],f32>
  %yz = torch.operator "onnx.Constant"() {torch.onnx.value = dense<-2> : tensor<si8>} : () -> !torch.vtensor<[],si8>
  %k = torch.operator "onnx.DequantizeLinear"(%k8, %s, %z) {torch.onnx.axis = 1 : si64} : (!torch.vtensor<[1,2,6,8],si8>, !torch.vtensor<[2],f32>, !torch.vtensor<[2],si8>) -> !torch.vtensor<[1,2,6,8],f32>
  %v = torch.operator "onnx.DequantizeLinear"(%v8, %s, %z) {torch.onnx.axis = 1 : si64} : (!torch.vtensor<[1,2,6,8],si8>, !torch.vtensor<[2],f32>, !torch.vtensor<[2],si8>) -> !torch.vtensor<[1,2,6,8],f32>
  %y = torch.operator "onnx.Attention"(%q, %k, %v) : (!torch.vtensor<[1,4,3,8],f32>, !torch.vtensor<[1,2,6,8],f32>, !torch.vtensor<[1,2,6,8],f32>) -> !torch.vtensor<[1,4,3,8],f32> loc("attention")
  %y8 = torch.operator "onnx.QuantizeLinear"(%y, %ys, %yz) : (!torch.vtensor<[1,4,3,8],f32>, !torch.vtensor<[],f32>, !torch.vtensor<[],si8>) -> !torch.vtensor<[1,4,3,8],si8>
  return %y8 : !torch.vtensor<[1,4,3,8],si8>
}

// -----

// A dequantized K that is also returned stays with IREE's own DequantizeLinear; the reason is
// recorded on the attention for `kvattn inspect`.
// CHECK-LABEL: func.func @shared
//       CHECK:   torch.operator "onnx.DequantizeLinear"
//       CHECK:   "kvattn.attention"
//  CHECK-SAME:     qdq_unfused = "K: the dequantized tensor is also used elsewhere; V: the dequantized tensor is also used elsewhere"
func.func @shared(%q: !torch.vtensor<[1,2,3,8],f32>, %k8: !torch.vtensor<[1,2,6,8],si8>) -> (!torch.vtensor<[1,2,3,8],f32>, !torch.vtensor<[1,2,6,8],f32>) attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %s = torch.operator "onnx.Constant"() {torch.onnx.value = dense<0.05> : tensor<f32>} : () -> !torch.vtensor<[],f32>
  %k = torch.operator "onnx.DequantizeLinear"(%k8, %s) : (!torch.vtensor<[1,2,6,8],si8>, !torch.vtensor<[],f32>) -> !torch.vtensor<[1,2,6,8],f32>
  %y = torch.operator "onnx.Attention"(%q, %k, %k) : (!torch.vtensor<[1,2,3,8],f32>, !torch.vtensor<[1,2,6,8],f32>, !torch.vtensor<[1,2,6,8],f32>) -> !torch.vtensor<[1,2,3,8],f32> loc("attention")
  return %y, %k : !torch.vtensor<[1,2,3,8],f32>, !torch.vtensor<[1,2,6,8],f32>
}
