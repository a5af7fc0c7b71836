"""Timing helpers shared by the benchmarks: median of repeats after warm-up, machine description."""

from __future__ import annotations

import os
import statistics
import time

import torch


def timeit(fn, *, warmup: int = 3, min_time: float = 0.3, max_reps: int = 2000, sync=None) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` calls, over at least ``min_time`` seconds."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (time.perf_counter() - start < min_time or len(times) < 5):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    from ddmini.runtime import cpu_info

    cpu = cpu_info()[0]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (
        f"{cpu}, {os.cpu_count()} cores, CPU flags: {cpu_flags()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}), "
        f"ddmini default CPU variant {_ddmini_isa()}, GPU: {gpu}"
    )


def cpu_flags() -> str:
    """The flags that decide the speed of ddmini's kernels and torch's on this CPU."""
    from ddmini.runtime import SPEED_FLAGS, cpu_info

    have = cpu_info()[1]
    if have is None:
        return "unknown"
    return " ".join(w for w in SPEED_FLAGS if w in have) or "none of avx2/avx512"


def _ddmini_isa() -> str:
    try:
        from ddmini._ext import cpu_isa

        return cpu_isa()
    except RuntimeError:
        return "none (ddmini._C not built)"
