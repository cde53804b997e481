// RUN: not kvattn-opt %s --passes=kvattn-raise-onnx 2>&1 | filecheck %s

// An operator of an unknown domain is refused naming the node: IREE's importer drops the
// domain, so IREE would compile com.example.Relu as ONNX's Relu.
// CHECK: error: com.example.Relu node 'custom_relu': is in the operator domain 'com.example', which kvattn does not implement
func.func @unknown_domain(%arg0: !torch.vtensor<[4],f32>) -> !torch.vtensor<[4],f32> attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %0 = torch.operator "onnx.Relu"(%arg0) {onnx_domain = "com.example"} : (!torch.vtensor<[4],f32>) -> !torch.vtensor<[4],f32> loc("custom_relu")
  return %0 : !torch.vtensor<[4],f32>
}
