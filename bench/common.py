"""Timing helpers shared by the benchmarks: median of repeats after warm-up, machine description."""
from __future__ import annotations

import os
import platform
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
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"GPU: {gpu}")
