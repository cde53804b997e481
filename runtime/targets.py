"""One table of compilation targets: each maps to its iree-compile flags, its IREE runtime
driver, its ONNX backend device name, and kvattn's own lowering choices for it."""

from __future__ import annotations

import dataclasses

from kvattn.lowering.diagnostics import KvattnError
from kvattn.lowering.options import LoweringOptions

# SPIR-V cannot compile iree_linalg_ext.attention as one op (verified with IREE 3.13): turn it
# into online attention and decompose it into linalg ops before dispatch formation.
_DECOMPOSE_ATTENTION = (
    "--iree-preprocessing-pass-pipeline=builtin.module(util.func("
    "iree-linalg-ext-convert-attention-to-online-attention,iree-linalg-ext-decompose-attention,"
    "canonicalize,cse))"
)

# --attention-precision: what f32 attention rounds Q, K, V (and the probabilities) to for its
# two matmuls; the accumulation and the softmax stay f32. ieee: no rounding (exact f32).
# fp16/bf16 run on the tensor cores of GPUs (IREE 3.13 has no tf32 intrinsic for sm_80).
ATTENTION_PRECISIONS = {"ieee": "f32", "fp16": "f16", "bf16": "bf16"}


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    driver: str  # IREE runtime HAL driver that runs this target's vmfb
    onnx_device: str  # the device name of onnx.backend (CPU, CUDA, ...)
    base_flags: tuple[str, ...]
    arch_flag: str  # iree-compile flag naming the chip, formatted with the arch
    default_arch: str
    executable_format: str  # what the vmfb embeds for this target's executables
    decompose_attention: bool  # no fused attention op on this target: IREE decomposes it
    lowering: LoweringOptions  # kvattn's own lowering choices for this target
    description: str

    def lowering_for(self, attention_precision: str = "ieee") -> LoweringOptions:
        """This target's lowering choices with f32 attention's Q·Kᵀ and P·V computed at
        `attention_precision` (ATTENTION_PRECISIONS)."""
        if attention_precision not in ATTENTION_PRECISIONS:
            raise KvattnError(f"unknown attention precision '{attention_precision}'; choose one of "
                              f"{', '.join(ATTENTION_PRECISIONS)}")
        if attention_precision == "ieee":
            return self.lowering
        if self.lowering.attention_in_f32:
            raise KvattnError(f"attention precision {attention_precision}: the {self.name} target computes attention "
                              f"in f32 (IREE decomposes it there); only 'ieee' applies")
        return dataclasses.replace(self.lowering, f32_attention_inputs=ATTENTION_PRECISIONS[attention_precision])

    def flags(self, arch: str | None = None) -> list[str]:
        flags = list(self.base_flags) + [self.arch_flag.format(arch or self.default_arch)]
        if self.decompose_attention:
            flags.append(_DECOMPOSE_ATTENTION)
        return flags


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("llvm-cpu", driver="local-task", onnx_device="CPU",
               base_flags=("--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu",
                           "--iree-input-demote-f64-to-f32=false",
                           # the attention tile configs use 32 KiB vectors (8 rows x 8 keys x head 128)
                           "--iree-llvmcpu-fail-on-large-vector=false"),
               arch_flag="--iree-llvmcpu-target-cpu={}", default_arch="host",
               executable_format="embedded-elf", decompose_attention=False,
               lowering=LoweringOptions(cpu_attention_tiles=True, slice_keys_to_valid_length=True,
                                        materialize_small_scores=True, causal_query_blocks=True,
                                        float8_keys_and_values=True),
               description="CPUs through LLVM"),
        Target("vulkan", driver="vulkan", onnx_device="VULKAN",
               base_flags=("--iree-hal-target-device=vulkan",),
               arch_flag="--iree-vulkan-target={}", default_arch="vp_android_baseline_2022",
               executable_format="vulkan-spirv-fb", decompose_attention=True,
               lowering=LoweringOptions(attention_layout_in_maps=False, attention_in_f32=True,
                                                int64_division=False),
               description="Vulkan/SPIR-V GPUs (runs on Mesa lavapipe without a GPU)"),
        Target("cuda", driver="cuda", onnx_device="CUDA",
               base_flags=("--iree-hal-target-device=cuda",),
               arch_flag="--iree-cuda-target={}", default_arch="sm_80",
               executable_format="cuda-nvptx-fb", decompose_attention=False, lowering=LoweringOptions(),
               description="NVIDIA GPUs (PTX, JIT-compiled by the driver on newer GPUs)"),
        Target("hip", driver="hip", onnx_device="HIP",
               base_flags=("--iree-hal-target-device=hip",),
               arch_flag="--iree-rocm-target={}", default_arch="gfx942",
               executable_format="rocm-hsaco-fb", decompose_attention=False, lowering=LoweringOptions(),
               description="AMD GPUs"),
    )
}


def fused_attention_only(target: Target) -> Target:
    """`target` lowering every attention the fused iree_linalg_ext.attention can take as that op,
    also where it would materialize small scores (kvattn-opt --fused-attention; the tests and
    benchmarks of the fused op's CPU tiles)."""
    return dataclasses.replace(target, lowering=dataclasses.replace(target.lowering, materialize_small_scores=False))


def get(name: str) -> Target:
    if name not in TARGETS:
        raise KvattnError(f"unknown target '{name}'; known targets: {', '.join(TARGETS)}")
    return TARGETS[name]


def for_onnx_device(device: str) -> Target:
    kind = device.split(":")[0].upper()
    for target in TARGETS.values():
        if target.onnx_device == kind:
            return target
    raise KvattnError(f"no kvattn target runs on ONNX device '{device}'")
