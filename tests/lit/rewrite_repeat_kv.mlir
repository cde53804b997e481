// RUN: kvattn inspect --stage raised %S/../models/fixtures/llama_opset24_decode.onnx > %t
// RUN: filecheck %s < %t && filecheck %s --check-prefix=NOREPEAT < %t

// transformers' SDPA export repeats each kv head G = 2 times before Attention (repeat_kv:
// Unsqueeze → Expand [B, 2, 2, T, 16] → Reshape [B, 4, T, 16]). kvattn.rewrites feeds the
// concatenated caches themselves to the Attention (4D ONNX Attention is grouped-query), so the
// attention reads 2 kv heads for its 4 query heads and nothing copies the cache G times.
// CHECK-LABEL: func.func @main_graph
//  CHECK-SAME:   %[[PK:arg2]]: !torch.vtensor<[?,2,?,16],f32>, %[[PV:arg3]]: !torch.vtensor<[?,2,?,16],f32>
//       CHECK:   %[[K:[0-9]+]] = torch.operator "onnx.Concat"(%[[PK]], %{{[0-9]+}}) {torch.onnx.axis = -2 : si64}
//       CHECK:   %[[V:[0-9]+]] = torch.operator "onnx.Concat"(%[[PV]], %{{[0-9]+}}) {torch.onnx.axis = -2 : si64}
//       CHECK:   %[[KB:[0-9]+]] = torch_c.to_builtin_tensor %[[K]] : !torch.vtensor<[?,2,?,16],f32> -> tensor<?x2x?x16xf32>
//       CHECK:   %[[VB:[0-9]+]] = torch_c.to_builtin_tensor %[[V]] : !torch.vtensor<[?,2,?,16],f32> -> tensor<?x2x?x16xf32>
//       CHECK:   "kvattn.attention"(%{{[0-9]+}}, %[[KB]], %[[VB]], %{{[0-9]+}})
//  CHECK-SAME:     onnx_node = "node_scaled_dot_product_attention"
//  CHECK-SAME:     (tensor<?x4x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x1x?x?xi1>) -> tensor<?x4x?x16xf32>
//       CHECK:   "kvattn.attention"
//  CHECK-SAME:     onnx_node = "node_scaled_dot_product_attention_1"
//  CHECK-SAME:     (tensor<?x4x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x2x?x16xf32>, tensor<?x1x?x?xi1>) -> tensor<?x4x?x16xf32>

// No repeat is left anywhere: no 5D [B, 2, 1|2, T, 16] K/V, no 4-head copy of a cache.
// NOREPEAT-NOT: !torch.vtensor<[?,2,1,?,16],f32>
// NOREPEAT-NOT: !torch.vtensor<[?,2,2,?,16],f32>
// NOREPEAT-NOT: "onnx.Expand"{{.*}}-> !torch.vtensor<{{.*}},f32>
