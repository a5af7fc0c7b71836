"""Carlini-Wagner L2: Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks"
(arXiv 1608.04644). Optimises w in tanh space, x' = (tanh(w) + 1) / 2, minimising
||x' - x||_2^2 + c * f(x') with Adam, where f = max(Z_y - max_{i != y} Z_i, -kappa) (untargeted)
or max(max_{i != t} Z_i - Z_t, -kappa) (targeted) on the logits Z. Returns, per sample, the successful
x' with the smallest L2 distance seen, or x itself where no step succeeded. Shapes as in pgd.py.
"""

from __future__ import annotations

import torch

from ..config import AttackConfig
from .base import batches, check_inputs, check_positive, frozen, model_dtype

_EDGE = 1 - 1e-6  # keeps atanh finite at pixels that are exactly 0 or 1


def _margin(logits: torch.Tensor, label: torch.Tensor, targeted: bool, kappa: float) -> torch.Tensor:
    true = logits.gather(1, label[:, None]).squeeze(1)
    others = logits.scatter(1, label[:, None], float("-inf")).amax(1)
    return (others - true if targeted else true - others).clamp(min=-kappa)


def cw_l2(
    model,
    x,
    y,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    *,
    target=None,
    batch_size: int = AttackConfig.batch_size,
) -> torch.Tensor:
    check_inputs(model, x, y, target)
    check_positive("c", c)
    check_positive("kappa", kappa)
    check_positive("steps", steps, integer=True)
    check_positive("lr", lr, allow_zero=False)
    check_positive("batch_size", batch_size, integer=True)
    targeted = target is not None
    xm = x.to(model_dtype(model, x))
    out = xm.clone()
    with frozen(model):
        for s in batches(x.shape[0], batch_size):
            x0 = xm[s]
            label = target[s] if targeted else y[s]
            w = torch.atanh((2 * x0 - 1).clamp(-_EDGE, _EDGE)).detach().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=lr)
            best = x0.clone()
            best_l2 = torch.full((x0.shape[0],), float("inf"), device=x.device)
            for _ in range(steps):
                with torch.enable_grad():
                    xa = (torch.tanh(w) + 1) / 2
                    logits = model(xa)
                    l2 = (xa - x0).flatten(1).pow(2).sum(1)
                    loss = (l2 + c * _margin(logits, label, targeted, kappa)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    pred = logits.argmax(1)
                    ok = (pred == label) if targeted else (pred != label)
                    better = ok & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best[better] = xa.detach()[better]
            out[s] = best.clamp_(0, 1)
    return out.to(x.dtype)
