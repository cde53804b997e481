"""Timing helper shared by the benchmarks (no dependencies: it also runs on the GPU machine)."""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time


def samples_ms(function, repeats: int, warmup: int = 3) -> list[float]:
    """Milliseconds of each of `repeats` calls of `function()`, after `warmup` calls."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def median_ms(function, repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of `function()` over `repeats` calls, after `warmup` calls."""
    return statistics.median(samples_ms(function, repeats, warmup))


@dataclasses.dataclass(frozen=True)
class Spread:
    """Milliseconds of repeated calls: a stall (a thread waking late) shows as median or p90 far above min."""
    min: float
    median: float
    p90: float

    @classmethod
    def of(cls, samples) -> "Spread":
        """min, median and 90th percentile of these milliseconds."""
        ordered = sorted(samples)
        return cls(ordered[0], statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))])

    def __str__(self) -> str:
        return f"{self.median:9.3f} ms (min {self.min:.3f}, p90 {self.p90:.3f})"


def spread_ms(function, repeats: int, warmup: int = 3) -> Spread:
    """min, median and 90th percentile milliseconds of `function()` over `repeats` calls."""
    return Spread.of(samples_ms(function, repeats, warmup))


def machine() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and the core count."""
    import os

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"
