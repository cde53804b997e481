// RUN: kvattn inspect --stage raised --static-kv-cache 32 %S/../models/fixtures/llama_opset24_decode.onnx | filecheck %s

// --static-kv-cache on a torch export (DynamicCache: Concat of the past and the step's rows; an
// attention_mask subgraph built from Shape(past) and attention_mask): each past becomes a
// 32-row buffer tied to its present (iree.abi.output), the step's rows are written in place at
// past_length, and the attention reads a Slice of the valid rows, as it read the Concat before.
// CHECK-LABEL: func.func @main_graph
//  CHECK-SAME:   %[[PK:arg2]]: !torch.vtensor<[?,2,32,16],f32> {iree.abi.output = 1 : index}
//  CHECK-SAME:   %[[PV:arg3]]: !torch.vtensor<[?,2,32,16],f32> {iree.abi.output = 2 : index}
//  CHECK-SAME:   !torch.vtensor<[?],si64>
//   CHECK-NOT:   "onnx.Concat"(%[[PK]],
//       CHECK:   "kvattn.tensor_scatter"
//  CHECK-SAME:     cache_lifetime = "aliased: past_key_0 -> present_key_0"
//  CHECK-SAME:     (tensor<?x2x32x16xf32>, tensor<?x2x?x16xf32>, tensor<?xi64>) -> tensor<?x2x32x16xf32>
//       CHECK:   torch.operator "onnx.Slice"
//  CHECK-SAME:     (!torch.vtensor<[?,2,32,16],f32>, {{.*}}) -> !torch.vtensor<[?,2,?,16],f32>
//       CHECK:   "kvattn.tensor_scatter"
//  CHECK-SAME:     cache_lifetime = "aliased: past_value_0 -> present_value_0"
//       CHECK:   torch.operator "onnx.Slice"
//  CHECK-SAME:     -> !torch.vtensor<[?,2,?,16],f32>
//       CHECK:   "kvattn.attention"
//  CHECK-SAME:     onnx_node = "node_scaled_dot_product_attention"
//  CHECK-SAME:     (tensor<?x4x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x1x?x?xi1>)
