// RUN: kvattn inspect --stage raised %S/../models/fixtures/qwen2_opset23_static.onnx | filecheck %s

// A transformers StaticCache export writes its caches with Transpose → ScatterND → Transpose
// (index_copy_ along the sequence axis). kvattn.rewrites turns each into a TensorScatter at the
// row offset (past_length, for every batch row), which is raised and updated in place.
// CHECK-LABEL: func.func @main_graph
//  CHECK-SAME:   {iree.abi.output = 1 : index}
//  CHECK-SAME:   {iree.abi.output = 2 : index}
//   CHECK-NOT:   onnx.ScatterND
//       CHECK:   "kvattn.tensor_scatter"
//  CHECK-SAME:     axis = 2
//  CHECK-SAME:     cache_lifetime = "aliased: past_key_0 -> present_key_0"
//  CHECK-SAME:     mode = "linear"
//       CHECK:   "kvattn.tensor_scatter"
//  CHECK-SAME:     cache_lifetime = "aliased: past_value_0 -> present_value_0"
