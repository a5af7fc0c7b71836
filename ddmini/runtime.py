"""Process-level helpers: device choice, seeding, thread count and progress bars."""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
import platform
import random
import sys
import time

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


#: Where stderr is not a terminal (a log file, nohup, a batch job), long work prints one progress line this
#: often instead of a bar (DDMINI_PROGRESS_SECONDS overrides).
LINE_PROGRESS_SECONDS = 300.0
PROGRESS_SECONDS_ENV = "DDMINI_PROGRESS_SECONDS"


def progress_seconds() -> float:
    """How often a :class:`LineProgress` prints: $DDMINI_PROGRESS_SECONDS (a finite number >= 0) or
    LINE_PROGRESS_SECONDS; anything else is one line (commands check it before their work starts)."""
    text = os.environ.get(PROGRESS_SECONDS_ENV)
    if not text:
        return LINE_PROGRESS_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{PROGRESS_SECONDS_ENV} must be a number of seconds >= 0; got {text!r}")
    return value


class LineProgress:
    """A progress bar's stand-in for a stderr that is not a terminal: every ``every`` seconds one plain line
    with the count, the rate and the expected finish; nothing for work shorter than that. Takes the calls
    ddmini makes on a tqdm bar (update, set_postfix, write, close, iteration, a context manager)."""

    def __init__(
        self,
        iterable=None,
        *,
        total=None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        every: float | None = None,
    ):
        self.iterable, self.total, self.desc, self.unit, self.n = iterable, total, desc, unit, initial
        self.initial = initial  # a resumed job's count at the start: the rate counts only the work done here
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            self.total = len(iterable)
        self.every = progress_seconds() if every is None else every
        self._clock = time.monotonic
        self.start = self.last = self._clock()
        self.printed = 0

    def line(self, now: float) -> str:
        done, spent = self.n - self.initial, now - self.start
        rate = spent / done if done > 0 else float("nan")  # seconds per unit
        of = f"{self.n:,}/{self.total:,} {self.unit}" if self.total else f"{self.n:,} {self.unit}"
        text = f"  {self.desc}: {of}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")
        if done > 0 and spent > 0:
            text += f", {rate:.3g} s/{self.unit}" if rate >= 1e-2 else f", {done / spent:,.0f} {self.unit}/s"
        if self.total and done > 0 and self.n < self.total:
            left = (self.total - self.n) * rate
            end = datetime.datetime.now() + datetime.timedelta(seconds=left)
            text += f", ≈ {left / 60:.1f} min left (done ≈ {end:%H:%M})"
        return text

    def update(self, k: int = 1) -> None:
        self.n += k
        now = self._clock()
        if now - self.last >= self.every:
            self.last = now
            self.printed += 1
            print(self.line(now), file=sys.stderr, flush=True)

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def write(self, text: str) -> None:
        print(text, flush=True)  # where tqdm.write prints: stdout

    def close(self) -> None:
        if self.printed and (self.total is None or self.n >= self.total):  # long work says that it ended
            print(self.line(self._clock()), file=sys.stderr, flush=True)
        self.printed = 0

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(
    iterable=None, *, total=None, desc: str = "", unit: str = "it", initial: int = 0, disable: bool | None = None
):
    """A tqdm progress bar on stderr (``initial``: work already done, as by a resumed job); silent when
    DDMINI_QUIET=1 (or ``disable``). Where stderr is not a terminal (unless DDMINI_PROGRESS=1), a
    :class:`LineProgress`: one line every few minutes of long work."""
    if disable is None:
        if os.environ.get("DDMINI_QUIET") == "1":
            disable = True
        elif os.environ.get("DDMINI_PROGRESS") != "1" and not sys.stderr.isatty():
            return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
        else:
            disable = False
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        disable=disable,
        dynamic_ncols=True,
        file=sys.stderr,
    )
