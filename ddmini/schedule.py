"""Noise schedules as float64 tables of alphas_cumprod (abar_t), the form the fused kernels take.

beta_t = 1 - abar_t / abar_{t-1} with abar_{-1} = 1.
"""

from __future__ import annotations

import math

import torch

from .config import SCHEDULES


def linear_alphas_cumprod(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear beta schedule (Ho et al. 2020, arXiv 2006.11239): betas evenly spaced."""
    if T < 1:
        raise ValueError(f"T must be >= 1; got {T}")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1; got {beta_start}, {beta_end}")
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def cosine_alphas_cumprod(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """The cosine schedule of Nichol & Dhariwal 2021 (arXiv 2102.09672), betas clipped at max_beta."""
    if T < 1:
        raise ValueError(f"T must be >= 1; got {T}")
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1.0 - betas, 0)


def make(name: str = "linear", T: int = 1000) -> torch.Tensor:
    """The alphas_cumprod table of a named schedule."""
    if name == "linear":
        return linear_alphas_cumprod(T)
    if name == "cosine":
        return cosine_alphas_cumprod(T)
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {name!r}")


def betas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """beta_t = 1 - abar_t / abar_{t-1}, abar_{-1} = 1."""
    prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return 1.0 - alphas_cumprod / prev
