"""Timing helper shared by the benchmarks (no dependencies: it also runs on the GPU machine)."""

from __future__ import annotations

import statistics
import time


def median_ms(function, repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of `function()` over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)
