// --attention-precision: an f32 attention's Q, K and V rounded to fp16/bf16 for its matmuls; the
// scale, the mask and the output (IREE's softmax and sums) stay f32.
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=cuda --attention-precision=fp16 | filecheck %s
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=llvm-cpu --attention-precision=bf16 | filecheck %s --check-prefix=CPU
//
// On the target IR: IREE 3.13's CUDA codegen (sm_80) has no f32 MMA intrinsic, so f32 attention
// runs on the CUDA cores and fp16/bf16 on the tensor cores (mma.sync); gfx942 has f32 MFMA too.
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=cuda --compile-to=executable-targets | filecheck %s --check-prefix=CUDA-IEEE
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=cuda --attention-precision=fp16 --compile-to=executable-targets | filecheck %s --check-prefix=CUDA-MMA
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=cuda --attention-precision=bf16 --compile-to=executable-targets | filecheck %s --check-prefix=CUDA-MMA
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=hip --compile-to=executable-targets | filecheck %s --check-prefix=HIP-IEEE
// RUN: kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=hip --attention-precision=fp16 --compile-to=executable-targets | filecheck %s --check-prefix=HIP-FP16
// RUN: not kvattn-opt %s --passes=kvattn-verify,kvattn-lower-to-iree --target=vulkan --attention-precision=fp16 2>&1 | filecheck %s --check-prefix=VULKAN

// CHECK-LABEL: func.func @prefill
//       CHECK:   arith.truncf %{{.*}} : f32 to f16
//       CHECK:   arith.truncf %{{.*}} : f32 to f16
//       CHECK:   arith.truncf %{{.*}} : f32 to f16
//       CHECK:   iree_linalg_ext.attention
//  CHECK-SAME:     ins({{.*}} : tensor<1x2x2x64x64xf16>, tensor<1x2x64x64xf16>, tensor<1x2x64x64xf16>, f32, tensor<64x64xf32>)
//  CHECK-SAME:     outs(%{{.*}} : tensor<1x2x2x64x64xf32>)

// The CPU tiles are f32-only: a bf16-input attention keeps IREE's defaults (no config alias).
//     CPU-NOT: compilation_info
//   CPU-LABEL: func.func @prefill
//         CPU:   iree_linalg_ext.attention
//    CPU-SAME:     ins({{.*}} : tensor<1x2x2x64x64xbf16>, tensor<1x2x64x64xbf16>, tensor<1x2x64x64xbf16>, f32, tensor<64x64xf32>)

// CUDA-IEEE: hal.executable.variant public @cuda_nvptx_fb
// CUDA-IEEE-NOT: nvvm.mma.sync
//  CUDA-MMA: hal.executable.variant public @cuda_nvptx_fb
//  CUDA-MMA: nvvm.mma.sync
//  HIP-IEEE: rocdl.mfma.f32.16x16x4f32
//  HIP-FP16: rocdl.mfma.f32.16x16x16f16
//    VULKAN: error: attention precision fp16: the vulkan target computes attention in f32
func.func @prefill(%q: tensor<1x4x64x64xf32>, %k: tensor<1x2x64x64xf32>, %v: tensor<1x2x64x64xf32>) -> tensor<1x4x64x64xf32> {
  %0 = "kvattn.attention"(%q, %k, %v) {is_causal = 1 : i64, onnx_node = "attn", onnx_opset = 23 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0>} : (tensor<1x4x64x64xf32>, tensor<1x2x64x64xf32>, tensor<1x2x64x64xf32>) -> tensor<1x4x64x64xf32>
  return %0 : tensor<1x4x64x64xf32>
}
