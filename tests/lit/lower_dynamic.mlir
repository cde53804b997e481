// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --fused-attention --split-input-file | filecheck %s

// Batch, query length, past length and mask dims all dynamic (as torch.onnx exports a decoder):
// each size is one tensor.dim, bound once (Q's batch is the batch); the other operands' sizes
// are checked against it at run time by cf.assert naming the node; the present cache is sized
// P + L with the new rows inserted at P; the mask is padded by (P + L) - T keys; the query
// count is unknown, so the attention gets the prefill tiles.
// Two compilation_infos (printed as aliases first): decode rows (the 2 query heads of a group, 1
// position) and prefill rows (64 positions per workgroup, 8 per vector).
//       CHECK: #[[$DECODE:.*]] = #iree_cpu.lowering_config<distribution = [1, 1, 2, 1, 0, 0, 8], vector_common_parallel = [1, 1, 2, 1, 0, 0, 8]
//       CHECK: #[[$PREFILL:.*]] = #iree_cpu.lowering_config<distribution = [1, 1, 1, 64, 0, 0, 8], vector_common_parallel = [1, 1, 1, 8, 0, 0, 8]
//       CHECK: #[[$DECODE_INFO:.*]] = #iree_codegen.compilation_info<lowering_config = #[[$DECODE]]
//       CHECK: #[[$PREFILL_INFO:.*]] = #iree_codegen.compilation_info<lowering_config = #[[$PREFILL]]
// CHECK-LABEL: func.func @dynamic_gqa_past
//  CHECK-SAME:   %[[Q:[a-z0-9]+]]: tensor<?x4x?x8xf32>, %[[K:[a-z0-9]+]]: tensor<?x2x?x8xf32>, %[[V:[a-z0-9]+]]: tensor<?x2x?x8xf32>, %[[MASK:[a-z0-9]+]]: tensor<?x1x?x?xi1>, %[[PK:[a-z0-9]+]]: tensor<?x2x?x8xf32>
//       CHECK:   %[[B:.*]] = tensor.dim %[[Q]], %{{.*}} : tensor<?x4x?x8xf32>
//       CHECK:   %[[S:.*]] = tensor.dim %[[Q]], %{{.*}} : tensor<?x4x?x8xf32>
//       CHECK:   %[[QB:.*]] = iree_tensor_ext.compute_barrier.start %[[Q]] : tensor<?x4x?x8xf32>{%[[B]], %[[S]]} -> tensor<?x4x?x8xf32>
//       CHECK:   %[[KB:.*]] = tensor.dim %[[K]], %{{.*}}
//       CHECK:   %[[L:.*]] = tensor.dim %[[K]], %{{.*}}
//       CHECK:   %[[K_IN:.*]] = iree_tensor_ext.compute_barrier.start %[[K]]
//       CHECK:   %[[MASK_B:.*]] = iree_tensor_ext.compute_barrier.start %[[MASK]]
//       CHECK:   tensor.dim %[[PK]], %{{.*}}
//       CHECK:   %[[P:.*]] = tensor.dim %[[PK]], %{{.*}}
//       CHECK:   %[[PK_B:.*]] = iree_tensor_ext.compute_barrier.start %[[PK]]
//       CHECK:   %[[SAME_B:.*]] = arith.cmpi eq, %[[KB]], %[[B]] : index
//       CHECK:   cf.assert %[[SAME_B]], "Attention node 'attn': K and Q differ in batch size"
//       CHECK:   cf.assert %{{.*}}, "Attention node 'attn': K and V differ in sequence length"
//       CHECK:   %[[T:.*]] = arith.addi %[[P]], %[[L]] : index
//       CHECK:   tensor.expand_shape %[[QB]] {{\[}}[0], [1, 2], [3], [4]] output_shape [%[[B]], 2, 2, %[[S]], 8] : tensor<?x4x?x8xf32> into tensor<?x2x2x?x8xf32>
//       CHECK:   %[[PRESENT:.*]] = tensor.empty(%[[B]], %[[T]]) : tensor<?x2x?x8xf32>
//       CHECK:   %[[PAST_IN:.*]] = tensor.insert_slice %[[PK_B]] into %[[PRESENT]][0, 0, 0, 0]
//       CHECK:   %[[PRESENT_K:.*]] = tensor.insert_slice %[[K_IN]] into %[[PAST_IN]][0, 0, %[[P]], 0] [%[[KB]], 2, %[[L]], 8]
//       CHECK:   cf.assert %{{.*}}, "Attention node 'attn': attn_mask covers more keys than there are"
//       CHECK:   %[[SHORT:.*]] = arith.subi %[[T]], %{{.*}} : index
//       CHECK:   tensor.pad %[[MASK_B]] low[0, 0, 0, 0] high[0, 0, 0, %[[SHORT]]]
//       CHECK:   cf.assert %{{.*}}, "Attention node 'attn': attn_mask does not broadcast to [batch, heads, queries, keys] on axis 2"
//       CHECK:   %[[BIAS_INIT:.*]] = tensor.empty(%[[B]], %[[S]], %[[T]]) : tensor<?x?x?xf32>
//       CHECK:   %[[BIAS:.*]] = linalg.generic
//       CHECK:   } -> tensor<?x?x?xf32>
//       CHECK:   tensor.empty(%[[B]], %[[S]]) : tensor<?x2x2x?x8xf32>
//       CHECK:   %[[FEW:.*]] = arith.cmpi ult, %[[S]], %{{.*}} : index
//       CHECK:   scf.if %[[FEW]] -> (tensor<?x2x2x?x8xf32>) {
//       CHECK:     iree_linalg_ext.attention {{.*}} {compilation_info = #[[$DECODE_INFO]]}
//  CHECK-SAME:     ins(%{{.*}}, %[[PRESENT_K]], %{{.*}}, %{{.*}}, %[[BIAS]] : tensor<?x2x2x?x8xf32>, tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>, f32, tensor<?x?x?xf32>)
//       CHECK:   } else {
//       CHECK:     iree_linalg_ext.attention {{.*}} {compilation_info = #[[$PREFILL_INFO]]}
//       CHECK:   tensor.collapse_shape %{{.*}} {{\[}}[0], [1, 2], [3], [4]] : tensor<?x2x2x?x8xf32> into tensor<?x4x?x8xf32>
func.func @dynamic_gqa_past(%q: tensor<?x4x?x8xf32>, %k: tensor<?x2x?x8xf32>, %v: tensor<?x2x?x8xf32>, %mask: tensor<?x1x?x?xi1>, %pk: tensor<?x2x?x8xf32>, %pv: tensor<?x2x?x8xf32>) -> (tensor<?x4x?x8xf32>, tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) {
  %0:3 = "kvattn.attention"(%q, %k, %v, %mask, %pk, %pv) {onnx_node = "attn", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 1, 0>, resultSegmentSizes = array<i32: 1, 1, 1, 0>} : (tensor<?x4x?x8xf32>, tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>, tensor<?x1x?x?xi1>, tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) -> (tensor<?x4x?x8xf32>, tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>)
  return %0#0, %0#1, %0#2 : tensor<?x4x?x8xf32>, tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>
}

// -----

// A circular TensorScatter on a cache of dynamic batch and capacity: the index generic is sized
// by the update's run-time rows and the modulus is the run-time capacity.
// CHECK-LABEL: func.func @scatter_dynamic
//  CHECK-SAME:   %[[CACHE:[a-z0-9]+]]: tensor<?x2x?x4xf32>, %[[UPDATE:[a-z0-9]+]]: tensor<?x2x?x4xf32>
//       CHECK:   tensor.dim %[[CACHE]], %{{.*}}
//       CHECK:   %[[CAPACITY:.*]] = tensor.dim %[[CACHE]], %{{.*}}
//       CHECK:   %[[UB:.*]] = tensor.dim %[[UPDATE]], %{{.*}}
//       CHECK:   %[[ROWS:.*]] = tensor.dim %[[UPDATE]], %{{.*}}
//       CHECK:   cf.assert %{{.*}}, "TensorScatter node 'scatter': update must match past_cache outside axis 2 (dim 0 differs)"
//       CHECK:   cf.assert %{{.*}}, "TensorScatter node 'scatter': write_indices needs one entry per batch row"
//       CHECK:   %[[MODULUS:.*]] = arith.index_cast %[[CAPACITY]] : index to i32
//       CHECK:   tensor.empty(%[[UB]], %[[ROWS]]) : tensor<?x2x?x3xi32>
//       CHECK:     arith.remsi %{{.*}}, %[[MODULUS]] : i32
//       CHECK:   iree_linalg_ext.scatter dimension_map = [0, 1, 2] unique_indices(true) ins(%{{.*}}, %{{.*}} : tensor<?x4xf32>, tensor<?x3xi32>) outs(%[[CACHE]] : tensor<?x2x?x4xf32>)
func.func @scatter_dynamic(%cache: tensor<?x2x?x4xf32>, %update: tensor<?x2x?x4xf32>, %pos: tensor<?xi64>) -> tensor<?x2x?x4xf32> {
  %0 = "kvattn.tensor_scatter"(%cache, %update, %pos) {mode = "circular", axis = 2 : i64, onnx_node = "scatter", onnx_opset = 24 : i64, operandSegmentSizes = array<i32: 1, 1, 1>, resultSegmentSizes = array<i32: 1>} : (tensor<?x2x?x4xf32>, tensor<?x2x?x4xf32>, tensor<?xi64>) -> tensor<?x2x?x4xf32>
  return %0 : tensor<?x2x?x4xf32>
}

// -----

// RMSNormalization over a dynamic normalized dim: N is the run-time size, converted to f32 once.
// CHECK-LABEL: func.func @rms_dynamic
//       CHECK:   tensor.dim
//       CHECK:   %[[N:.*]] = tensor.dim %{{.*}}, %{{.*}} : tensor<?x?xf32>
//       CHECK:   %[[N64:.*]] = arith.index_cast %[[N]] : index to i64
//       CHECK:   %[[NF:.*]] = arith.sitofp %[[N64]] : i64 to f32
//       CHECK:   cf.assert %{{.*}}, "RMSNormalization node 'norm': scale does not broadcast to X on axis 1"
//       CHECK:     arith.divf %{{.*}}, %[[NF]] : f32
func.func @rms_dynamic(%x: tensor<?x?xf32>, %scale: tensor<?xf32>) -> tensor<?x?xf32> {
  %0 = "kvattn.rms_normalization"(%x, %scale) {axis = -1 : i64, onnx_node = "norm", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1>, resultSegmentSizes = array<i32: 1>} : (tensor<?x?xf32>, tensor<?xf32>) -> tensor<?x?xf32>
  return %0 : tensor<?x?xf32>
}
