"""Imports the compiled module ddmini._C once and says what it holds.

``HAS_CPP`` is False only when ddmini is imported from a source tree that was never built;
``HAS_CUDA`` says whether the CUDA kernels were compiled in (a GPU is a separate question).

CPU kernel variants: the hot loops are compiled for AVX-512, AVX2 + FMA and baseline x86-64, and the
widest the CPU supports runs. ``DDMINI_CPU_ISA=avx2`` (or ``baseline``) in the environment, or
:func:`forced_cpu_isa` in code, runs a narrower one: the tests check every variant a machine has,
and the benchmarks time them side by side.
"""

from __future__ import annotations

import contextlib
import os

try:
    from . import _C  # type: ignore[attr-defined]
except ImportError:  # source tree without a build: the torch backend still works
    _C = None

HAS_CPP: bool = _C is not None
HAS_CUDA: bool = bool(_C is not None and _C.has_cuda())
CPU_ISA_ENV = "DDMINI_CPU_ISA"


def require_cpp():
    """Return ddmini._C or raise a clear error if the extension was not built."""
    if _C is None:
        raise RuntimeError("ddmini._C is not built: install with `pip install .` (not by importing the source tree)")
    return _C


def cpu_isas() -> list[str]:
    """The CPU kernel variants this machine can run, widest first (e.g. ['avx2', 'baseline'])."""
    return list(require_cpp().cpu_isas())


def cpu_isa() -> str:
    """The CPU kernel variant in use: 'avx512', 'avx2' or 'baseline'."""
    return require_cpp().cpu_isa()


def set_cpu_isa(name: str) -> None:
    """Run the CPU kernels' ``name`` variant from now on; ValueError if unknown or not supported here."""
    require_cpp().set_cpu_isa(str(name))


@contextlib.contextmanager
def forced_cpu_isa(name: str):
    """Within the block, the CPU kernels run their ``name`` variant; the previous one is restored."""
    before = cpu_isa()
    set_cpu_isa(name)
    try:
        yield name
    finally:
        set_cpu_isa(before)


if _C is not None and os.environ.get(CPU_ISA_ENV, "auto") not in ("", "auto"):
    try:
        set_cpu_isa(os.environ[CPU_ISA_ENV])
    except ValueError as e:
        raise ValueError(f"{CPU_ISA_ENV}: {e}") from None
