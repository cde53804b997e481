// RUN: kvattn-opt %s --passes=kvattn-raise-onnx,kvattn-cache-lifetime --split-input-file | filecheck %s
// RUN: kvattn-opt %s --passes=kvattn-raise-onnx,kvattn-cache-lifetime,kvattn-lower-to-iree,iree-torch-to-input --split-input-file | filecheck %s --check-prefix=ABI

// A past cache read only by its update, whose present is returned: tied to that result.
// CHECK-LABEL: func.func @decode
//  CHECK-SAME:   %{{.*}}: !torch.vtensor<[1,2,16,8],f32> {iree.abi.output = 1 : index}
//  CHECK-SAME:   %{{.*}}: !torch.vtensor<[1,2,16,8],f32> {iree.abi.output = 2 : index}
//       CHECK:   "kvattn.tensor_scatter"
//  CHECK-SAME:     cache_lifetime = "aliased: past_key -> present_key"
//       CHECK:   "kvattn.tensor_scatter"
//  CHECK-SAME:     cache_lifetime = "aliased: past_value -> present_value"
// The ABI function consumes the cache buffers and computes the presents in them.
// ABI-LABEL: util.func public @decode$async
//       ABI:   hal.tensor.import wait(%{{.*}}) => consume %arg3
//       ABI:   hal.tensor.import wait(%{{.*}}) => consume %arg4
//       ABI:   hal.tensor.alias wait(%{{.*}}) => %{{.*}} : tensor<1x2x16x8xf32> to %arg3 : !hal.buffer_view
//       ABI:   hal.tensor.alias wait(%{{.*}}) => %{{.*}} : tensor<1x2x16x8xf32> to %arg4 : !hal.buffer_view
//       ABI:   hal.tensor.barrier
func.func @decode(%q: !torch.vtensor<[1,4,1,8],f32>, %k: !torch.vtensor<[1,2,1,8],f32>, %v: !torch.vtensor<[1,2,1,8],f32>, %past_k: !torch.vtensor<[1,2,16,8],f32>, %past_v: !torch.vtensor<[1,2,16,8],f32>, %pos: !torch.vtensor<[1],si64>, %len: !torch.vtensor<[1],si64>) -> (!torch.vtensor<[1,4,1,8],f32>, !torch.vtensor<[1,2,16,8],f32>, !torch.vtensor<[1,2,16,8],f32>) attributes {torch.onnx_meta.opset_version = 24 : si64, kvattn.onnx_inputs = ["query", "new_key", "new_value", "past_key", "past_value", "write_indices", "nonpad_kv_seqlen"], kvattn.onnx_outputs = ["output", "present_key", "present_value"]} {
  %none = torch.constant.none
  %pk = torch.operator "onnx.TensorScatter"(%past_k, %k, %pos) {torch.onnx.axis = 2 : si64} : (!torch.vtensor<[1,2,16,8],f32>, !torch.vtensor<[1,2,1,8],f32>, !torch.vtensor<[1],si64>) -> !torch.vtensor<[1,2,16,8],f32> loc("update_key")
  %pv = torch.operator "onnx.TensorScatter"(%past_v, %v, %pos) {torch.onnx.axis = 2 : si64} : (!torch.vtensor<[1,2,16,8],f32>, !torch.vtensor<[1,2,1,8],f32>, !torch.vtensor<[1],si64>) -> !torch.vtensor<[1,2,16,8],f32> loc("update_value")
  %y = torch.operator "onnx.Attention"(%q, %pk, %pv, %none, %none, %none, %len) {torch.onnx.is_causal = 1 : si64} : (!torch.vtensor<[1,4,1,8],f32>, !torch.vtensor<[1,2,16,8],f32>, !torch.vtensor<[1,2,16,8],f32>, !torch.none, !torch.none, !torch.none, !torch.vtensor<[1],si64>) -> !torch.vtensor<[1,4,1,8],f32> loc("attention")
  return %y, %pk, %pv : !torch.vtensor<[1,4,1,8],f32>, !torch.vtensor<[1,2,16,8],f32>, !torch.vtensor<[1,2,16,8],f32>
}

// -----

// The past is still read after the update (by another node): never aliased.
// CHECK-LABEL: func.func @past_read_later
//   CHECK-NOT:   iree.abi.output
//       CHECK:   "kvattn.tensor_scatter"
//  CHECK-SAME:     cache_lifetime = "copied: argument 0 is also read by node 'norm'"
// ABI-LABEL: util.func public @past_read_later$async
//   ABI-NOT:   hal.tensor.alias
//   ABI-NOT:   consume
//       ABI:   util.return
func.func @past_read_later(%past: !torch.vtensor<[1,2,4,8],f32>, %new: !torch.vtensor<[1,2,1,8],f32>) -> (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>) attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %present = torch.operator "onnx.TensorScatter"(%past, %new) {torch.onnx.axis = 2 : si64} : (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,1,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> loc("update")
  %read = torch.operator "onnx.Neg"(%past) : (!torch.vtensor<[1,2,4,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> loc("norm")
  return %present, %read : !torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>
}

// -----

// A Shape of the past reads only its sizes, which the update keeps: still aliased.
// CHECK-LABEL: func.func @past_shape_read
//  CHECK-SAME:   {iree.abi.output = 0 : index}
//       CHECK:   "kvattn.tensor_scatter"
//  CHECK-SAME:     cache_lifetime = "aliased: argument 0 -> result 0"
func.func @past_shape_read(%past: !torch.vtensor<[1,2,4,8],f32>, %new: !torch.vtensor<[1,2,1,8],f32>) -> (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[4],si64>) attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %present = torch.operator "onnx.TensorScatter"(%past, %new) {torch.onnx.axis = 2 : si64} : (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,1,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> loc("update")
  %shape = torch.operator "onnx.Shape"(%past) : (!torch.vtensor<[1,2,4,8],f32>) -> !torch.vtensor<[4],si64> loc("shape")
  return %present, %shape : !torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[4],si64>
}

// -----

// The past is returned unchanged beside its update: never aliased.
// CHECK-LABEL: func.func @past_returned
//   CHECK-NOT:   iree.abi.output
//       CHECK:   cache_lifetime = "copied: argument 0 is also returned unchanged"
func.func @past_returned(%past: !torch.vtensor<[1,2,4,8],f32>, %new: !torch.vtensor<[1,2,1,8],f32>) -> (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>) attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %present = torch.operator "onnx.TensorScatter"(%past, %new) {torch.onnx.axis = 2 : si64} : (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,1,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> loc("update")
  return %present, %past : !torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>
}

// -----

// One past updated by two nodes: neither update may take its buffer.
// CHECK-LABEL: func.func @shared_past
//   CHECK-NOT:   iree.abi.output
//       CHECK:   cache_lifetime = "copied: argument 0 is also updated by node 'second'"
//       CHECK:   cache_lifetime = "copied: argument 0 is also updated by node 'first'"
func.func @shared_past(%past: !torch.vtensor<[1,2,4,8],f32>, %new: !torch.vtensor<[1,2,1,8],f32>) -> (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>) attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %a = torch.operator "onnx.TensorScatter"(%past, %new) {torch.onnx.axis = 2 : si64} : (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,1,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> loc("first")
  %b = torch.operator "onnx.TensorScatter"(%past, %new) {torch.onnx.axis = 2 : si64} : (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,1,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> loc("second")
  return %a, %b : !torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>
}

// -----

// A past computed inside the model (not a function argument): nothing to tie.
// CHECK-LABEL: func.func @internal
//   CHECK-NOT:   iree.abi.output
//       CHECK:   cache_lifetime = "copied: past_cache is computed inside the model, not a model input"
func.func @internal(%past: !torch.vtensor<[1,2,4,8],f32>, %new: !torch.vtensor<[1,2,1,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %scaled = torch.operator "onnx.Neg"(%past) : (!torch.vtensor<[1,2,4,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> loc("neg")
  %a = torch.operator "onnx.TensorScatter"(%scaled, %new) {torch.onnx.axis = 2 : si64} : (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,1,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> loc("from_neg")
  return %a : !torch.vtensor<[1,2,4,8],f32>
}

// -----

// A present that is not returned: nothing to tie.
// CHECK-LABEL: func.func @not_returned
//   CHECK-NOT:   iree.abi.output
//       CHECK:   cache_lifetime = "copied: the updated argument 0 is not a model output"
func.func @not_returned(%past: !torch.vtensor<[1,2,4,8],f32>, %new: !torch.vtensor<[1,2,1,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %a = torch.operator "onnx.TensorScatter"(%past, %new) {torch.onnx.axis = 2 : si64} : (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,1,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> loc("update")
  %b = torch.operator "onnx.Neg"(%a) : (!torch.vtensor<[1,2,4,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> loc("neg")
  return %b : !torch.vtensor<[1,2,4,8],f32>
}

// -----

// The present returned twice: not tied (two outputs cannot share one input buffer).
// CHECK-LABEL: func.func @returned_twice
//   CHECK-NOT:   iree.abi.output
//       CHECK:   cache_lifetime = "copied: the updated argument 0 is returned twice (result 0, result 1)"
func.func @returned_twice(%past: !torch.vtensor<[1,2,4,8],f32>, %new: !torch.vtensor<[1,2,1,8],f32>) -> (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>) attributes {torch.onnx_meta.opset_version = 24 : si64} {
  %a = torch.operator "onnx.TensorScatter"(%past, %new) {torch.onnx.axis = 2 : si64} : (!torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,1,8],f32>) -> !torch.vtensor<[1,2,4,8],f32> loc("update")
  return %a, %a : !torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>
}

// -----

// The opset-23 concat cache: the present is a new, larger tensor.
// CHECK-LABEL: func.func @concat_cache
//   CHECK-NOT:   iree.abi.output
//       CHECK:   "kvattn.attention"
//  CHECK-SAME:     cache_lifetime = "copied: past_key is concatenated with the new rows into a larger present_key; copied: past_value is concatenated with the new rows into a larger present_value"
func.func @concat_cache(%q: !torch.vtensor<[1,2,1,8],f32>, %k: !torch.vtensor<[1,2,1,8],f32>, %v: !torch.vtensor<[1,2,1,8],f32>, %pk: !torch.vtensor<[1,2,3,8],f32>, %pv: !torch.vtensor<[1,2,3,8],f32>) -> (!torch.vtensor<[1,2,1,8],f32>, !torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>) attributes {torch.onnx_meta.opset_version = 23 : si64} {
  %none = torch.constant.none
  %y:3 = torch.operator "onnx.Attention"(%q, %k, %v, %none, %pk, %pv) : (!torch.vtensor<[1,2,1,8],f32>, !torch.vtensor<[1,2,1,8],f32>, !torch.vtensor<[1,2,1,8],f32>, !torch.none, !torch.vtensor<[1,2,3,8],f32>, !torch.vtensor<[1,2,3,8],f32>) -> (!torch.vtensor<[1,2,1,8],f32>, !torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>) loc("attention")
  return %y#0, %y#1, %y#2 : !torch.vtensor<[1,2,1,8],f32>, !torch.vtensor<[1,2,4,8],f32>, !torch.vtensor<[1,2,4,8],f32>
}
