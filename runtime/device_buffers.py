"""Moving numpy arrays to and from IREE device buffers, on every HAL driver.

Uploads copy into a new device-local buffer, so a module may update it in place without touching
the caller's array. Downloads copy through a host-visible staging buffer: importing numpy memory
for the readback (what `DeviceArray.to_host()` does) fails on drivers that require aligned host
pointers, such as Vulkan on lavapipe (minImportedHostPointerAlignment 4096).
"""

from __future__ import annotations

import numpy as np
import iree.runtime as ireert
from iree.runtime.dtypes import map_dtype_to_hal_element_type

from kvattn.lowering.diagnostics import KvattnError


def upload(device: ireert.HalDevice, array: np.ndarray) -> ireert.HalBufferView:
    element_type = map_dtype_to_hal_element_type(array.dtype)
    if element_type is None:
        raise KvattnError(f"IREE has no element type for numpy dtype {array.dtype}")
    return device.allocator.allocate_buffer_copy(
        memory_type=ireert.MemoryType.DEVICE_LOCAL,
        allowed_usage=ireert.BufferUsage.DEFAULT,
        device=device,
        buffer=np.require(array, requirements="C"),  # ascontiguousarray would make rank 0 rank 1
        element_type=element_type,
    )


def download(device: ireert.HalDevice, view: ireert.HalBufferView, dtype: np.dtype) -> np.ndarray:
    source = view.get_buffer()
    staging = device.allocator.allocate_buffer(
        memory_type=ireert.MemoryType.HOST_LOCAL | ireert.MemoryType.DEVICE_VISIBLE,
        allowed_usage=ireert.BufferUsage.TRANSFER_TARGET | ireert.BufferUsage.MAPPING_SCOPED,
        allocation_size=source.byte_length(),
    )
    semaphore = device.create_semaphore(0)
    device.queue_copy(source, staging,
                      wait_semaphores=ireert.HalFence.create_at(semaphore, 0),
                      signal_semaphores=ireert.HalFence.create_at(semaphore, 1))
    ireert.HalFence.create_at(semaphore, 1).wait()
    mapped = staging.map()
    return np.array(mapped.asarray(tuple(view.shape), np.dtype(dtype)), copy=True)
