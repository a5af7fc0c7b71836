"""Imports the compiled module ddmini._C once and says what it holds.

``HAS_CPP`` is False only when ddmini is imported from a source tree that was never built;
``HAS_CUDA`` says whether the CUDA kernels were compiled in (a GPU is a separate question).
"""
from __future__ import annotations

try:
    from . import _C  # type: ignore[attr-defined]
except ImportError:  # source tree without a build: the torch backend still works
    _C = None

HAS_CPP: bool = _C is not None
HAS_CUDA: bool = bool(_C is not None and _C.has_cuda())


def require_cpp():
    """Return ddmini._C or raise a clear error if the extension was not built."""
    if _C is None:
        raise RuntimeError(
            "ddmini._C is not built: install with `pip install .` (not by importing the source tree)"
        )
    return _C
