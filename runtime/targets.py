"""One table from kvattn target names to iree-compile flags and IREE runtime drivers."""

from __future__ import annotations

import dataclasses

from kvattn.lowering.diagnostics import KvattnError


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    driver: str  # IREE runtime HAL driver that runs this target's vmfb
    flags: tuple[str, ...]  # iree-compile flags
    onnx_device: str  # the device name of onnx.backend (CPU, CUDA, ...)
    description: str


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "llvm-cpu",
            driver="local-task",
            flags=(
                "--iree-hal-target-device=local",
                "--iree-hal-local-target-device-backends=llvm-cpu",
                "--iree-llvmcpu-target-cpu=host",
            ),
            onnx_device="CPU",
            description="this machine's CPU (LLVM, tuned for the host CPU)",
        ),
    )
}


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
