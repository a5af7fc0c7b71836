"""Public kernel ops: validate tensors -> pick a backend -> call ddmini._C (or the torch reference).

Backends: "auto" (the compiled kernel for the tensor's device when present, else torch), "cpp",
"cuda", "torch" (the pure-PyTorch reference in :mod:`ddmini.reference`).
"""
from __future__ import annotations

import torch

from . import reference
from ._ext import HAS_CPP, HAS_CUDA, _C

BACKENDS = ("auto", "cpp", "cuda", "torch")


def _check_float32(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name} must be float32; got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _pick_backend(backend: str, device: torch.device) -> str:
    """Resolve "auto" and check that the asked-for backend can run on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        if device.type == "cpu" and HAS_CPP:
            return "cpp"
        if device.type == "cuda" and HAS_CUDA:
            return "cuda"
        return "torch"
    if backend == "cpp":
        if not HAS_CPP:
            raise RuntimeError("backend 'cpp' requested but ddmini._C is not built")
        if device.type != "cpu":
            raise ValueError(f"backend 'cpp' needs CPU tensors; got {device}")
    if backend == "cuda":
        if not HAS_CUDA:
            raise RuntimeError("backend 'cuda' requested but ddmini._C was built without CUDA")
        if device.type != "cuda":
            raise ValueError(f"backend 'cuda' needs CUDA tensors; got {device}")
    return backend


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def axpy(a: float, x: torch.Tensor, y: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """In place ``y <- a*x + y`` for float32 contiguous tensors of the same shape; returns ``y``.

    The trivial kernel that exercises the build, binding and dispatch path.
    """
    _check_float32("x", x)
    _check_float32("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device; got {x.device} and {y.device}")
    be = _pick_backend(backend, x.device)
    if be == "torch":
        return reference.axpy(a, x, y)
    if be == "cpp":
        _C.axpy_cpu(float(a), x.detach().numpy(), y.detach().numpy(), torch.get_num_threads())
    else:
        _C.axpy_cuda(float(a), x.data_ptr(), y.data_ptr(), x.numel(), _stream(x))
    return y
