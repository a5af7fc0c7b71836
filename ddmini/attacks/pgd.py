"""Fast Gradient Sign Method and Projected Gradient Descent (L-inf and L2).

FGSM: Goodfellow et al., "Explaining and Harnessing Adversarial Examples" (arXiv 1412.6572), L-inf.
PGD:  Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks" (arXiv 1706.06083).
PGD-L2 is the attack of Deceptive Diffusion (arXiv 2406.19807).

Shapes: x (N, ...) in [0, 1], y (N,) int64; returns x_adv of x's shape and dtype, in [0, 1] and inside
the eps-ball around x (computed in the model's dtype, then rounded to x's). Untargeted unless ``target``
(N,) int64 is given.

``objective``: what each step ascends, ``ce`` (cross-entropy: the paper's PGD), ``margin`` (the logit margin,
Carlini & Wagner's f) or ``scaled`` (the margin averaged over 0.5-1 times the perturbation: what stays
misclassified when only part of it is reproduced). ``margin`` = kappa > 0: an image whose logit margin has
reached kappa is left where it is (and the margin objective is clipped there).
"""

from __future__ import annotations

import torch

from ..config import AttackConfig
from .base import (
    batches,
    check_inputs,
    check_objective,
    check_positive,
    frozen,
    generator,
    input_grad,
    model_dtype,
    objective_grad,
)

_TINY = 1e-12


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def _l2(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1)


def _grad(model, x, y, target, objective: str, x0, margin: float):
    """(the step's gradient, the logit margin, or None where the plain cross-entropy step needs none)."""
    if objective == "ce" and not margin:
        return input_grad(model, x, y, target), None  # the paper's PGD, as it always was
    return objective_grad(model, x, y, target, objective=objective, x0=x0, kappa=margin)


def fgsm(
    model, x, y, eps: float, *, target=None, batch_size: int = AttackConfig.batch_size, objective: str = "ce"
) -> torch.Tensor:
    """One signed-gradient step of size ``eps`` (L-inf) up ``objective``, clamped to [0, 1]."""
    check_inputs(model, x, y, target)
    check_positive("eps", eps)
    check_positive("batch_size", batch_size, integer=True)
    check_objective(objective)
    xm = x.to(model_dtype(model, x))
    out = torch.empty_like(xm)
    with frozen(model):
        for s in batches(x.shape[0], batch_size):
            g, _ = _grad(model, xm[s], y[s], None if target is None else target[s], objective, xm[s], 0.0)
            out[s] = (xm[s] + eps * g.sign()).clamp_(0, 1)
    return out.to(x.dtype)


def _pgd(
    model, x, y, eps, alpha, steps, random_start, seed, target, batch_size, start, update, objective, margin
) -> torch.Tensor:
    """The PGD loop both norms share: per batch, an optional random start ``start(x0, gen)``, then
    ``steps`` times x <- ``update(x, grad, x0)`` (which steps, projects and clamps); with ``margin`` > 0 an
    image whose logit margin has reached it stays where it is."""
    check_inputs(model, x, y, target)
    check_positive("eps", eps)
    check_positive("alpha", alpha)
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    check_objective(objective, margin)
    gen = generator(seed, x.device)
    xm = x.to(model_dtype(model, x))
    out = torch.empty_like(xm)
    with frozen(model):
        for s in batches(x.shape[0], batch_size):
            x0 = xm[s]
            tb = None if target is None else target[s]
            xa = start(x0, gen) if random_start else x0.clone()
            for _ in range(steps):
                g, m = _grad(model, xa, y[s], tb, objective, x0, margin)
                stepped = update(xa, g, x0)
                xa = stepped if not margin else torch.where(_per_sample(m >= margin, xa), xa, stepped)
            out[s] = xa
    return out.to(x.dtype)


def pgd_linf(
    model,
    x,
    y,
    eps: float,
    alpha: float,
    steps: int,
    *,
    random_start: bool = True,
    seed: int | None = None,
    target=None,
    batch_size: int = AttackConfig.batch_size,
    objective: str = "ce",
    margin: float = 0.0,
) -> torch.Tensor:
    """PGD in the L-inf ball: x <- clip_[0,1](proj_eps(x + alpha * sign(grad))), optional uniform start."""

    def start(x0, gen):
        noise = torch.rand(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        return (x0 + eps * (2 * noise - 1)).clamp_(0, 1)

    def update(xa, g, x0):
        xa = xa + alpha * g.sign()
        return torch.minimum(torch.maximum(xa, x0 - eps), x0 + eps).clamp_(0, 1)

    return _pgd(
        model, x, y, eps, alpha, steps, random_start, seed, target, batch_size, start, update, objective, margin
    )


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project x_adv onto the L2 ball of radius eps around x, then clamp to [0, 1] (which keeps it
    inside the ball: clamping moves each coordinate toward x, which is itself in [0, 1])."""
    check_positive("eps", eps)
    delta = x_adv - x
    scale = (eps / _l2(delta).clamp_min(_TINY)).clamp_(max=1.0)
    return (x + delta * _per_sample(scale, x)).clamp_(0, 1)


def pgd_l2(
    model,
    x,
    y,
    eps: float,
    alpha: float,
    steps: int,
    *,
    random_start: bool = False,
    seed: int | None = None,
    target=None,
    batch_size: int = AttackConfig.batch_size,
    objective: str = "ce",
    margin: float = 0.0,
) -> torch.Tensor:
    """PGD in the L2 ball (the paper's attack). Each step: x <- x + alpha * g / ||g||_2 (per sample),
    project onto the L2 eps-ball around the clean x, clamp to [0, 1]. Deterministic without random
    start; with it, the start is uniform in the ball (direction ~ N(0, I), radius eps * U^(1/dim))."""

    def start(x0, gen):
        d = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        r = torch.rand(x0.shape[0], generator=gen, device=x0.device, dtype=x0.dtype) ** (1.0 / x0[0].numel())
        return (x0 + d * _per_sample(eps * r / _l2(d).clamp_min(_TINY), d)).clamp_(0, 1)

    def update(xa, g, x0):
        return project_l2(xa + g * _per_sample(alpha / _l2(g).clamp_min(_TINY), g), x0, eps)

    return _pgd(
        model, x, y, eps, alpha, steps, random_start, seed, target, batch_size, start, update, objective, margin
    )
