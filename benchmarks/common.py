"""Timing helpers shared by the benchmarks: medians of synchronised step times, machine info."""

import os
import platform
import statistics
import time
from typing import Any, Callable


def cpu_description() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and the cores this process may use."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}; {cores} cores; load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> str:
    """One line naming the CPU, core count and JAX backend/devices the figures came from."""
    import jax

    devices = jax.devices()
    return (f"{cpu_description()}; jax {jax.__version__} on {devices[0].platform} "
            f"({len(devices)} x {devices[0].device_kind})")


def median_time(fn: Callable[[], Any], warmup: int = 2, repeats: int = 10) -> float:
    """Median wall time of `fn()` in seconds, waiting for its results each time."""
    import jax

    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)
