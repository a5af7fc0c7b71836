"""Process-level helpers: device choice, seeding, thread count and progress bars."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import random
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map "auto" | "cpu" | "cuda" (or "cuda:N") to a torch.device, checking that it exists."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but no CUDA GPU is available")
        return torch.device(device)
    raise ValueError(f"device must be one of auto, cpu, cuda; got {device!r}")


#: The CPU flags that decide the speed of ddmini's kernels and torch's (reported beside every timing).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset | None]:
    """(model name, flags) of this CPU from /proc/cpuinfo; platform's name and None where it cannot be read."""
    name, flags = platform.processor() or platform.machine(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = frozenset(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return name, flags


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX-BF16), where oneDNN runs
    bf16 convolutions fast; elsewhere bf16 on a CPU is emulated and slower than float32. oneDNN held
    below its bf16 instructions (ONEDNN_MAX_CPU_ISA=AVX2, as when an AVX2-only CPU is imitated) counts
    as no: measured on a Zen 5 so held, a bf16 training step took 4.8 s against 0.53 s in float32."""
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if isa not in ("ALL", "DEFAULT") and not any(w in isa for w in ("BF16", "FP16", "AMX")):
        return False
    flags = cpu_info()[1] or ()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def quiet():
    """No progress bars (DDMINI_QUIET=1) for as long as the block runs; the variable is restored after."""
    was = os.environ.get("DDMINI_QUIET")
    os.environ["DDMINI_QUIET"] = "1"
    try:
        yield
    finally:
        if was is None:
            os.environ.pop("DDMINI_QUIET", None)
        else:
            os.environ["DDMINI_QUIET"] = was


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it", disable: bool | None = None):
    """A tqdm progress bar on stderr; silent when DDMINI_QUIET=1 or stderr is not a terminal
    (unless DDMINI_PROGRESS=1)."""
    if disable is None:
        if os.environ.get("DDMINI_QUIET") == "1":
            disable = True
        elif os.environ.get("DDMINI_PROGRESS") == "1":
            disable = False
        else:
            disable = not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, file=sys.stderr)
