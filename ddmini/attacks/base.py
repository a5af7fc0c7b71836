"""What every attack shares: input checks, the model frozen in eval mode, the input gradient, success.

Attacks never touch the model's parameters: for the duration of an attack the model is in eval mode
and its parameters do not require gradients (so no weight gradients are computed); both are restored in
``finally``. Gradients are taken with respect to the input only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def check_inputs(model, x, y, target=None) -> None:
    """Raise ValueError/TypeError naming the argument if the attack inputs are unusable."""
    if not callable(model):
        raise TypeError(f"model must be callable (an nn.Module returning logits); got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor; got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim < 2:
        raise ValueError(f"x must be (N, ...) with at least 2 dimensions; got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinity")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(f"x must lie in [0, 1]; got values in [{float(x.min()):.4g}, {float(x.max()):.4g}]")
    for name, lab in (("y", y), ("target", target)):
        if lab is None and name == "target":
            continue
        if not isinstance(lab, torch.Tensor) or lab.dtype != torch.int64:
            raise TypeError(
                f"{name} must be an int64 tensor of labels; got {getattr(lab, 'dtype', type(lab).__name__)}"
            )
        if lab.shape != (x.shape[0],):
            raise ValueError(f"{name} must have shape ({x.shape[0]},) to match x; got {tuple(lab.shape)}")
        if lab.numel() and int(lab.min()) < 0:
            raise ValueError(f"{name} contains a negative label")
        if lab.numel():
            k = num_outputs(model, x)
            if int(lab.max()) >= k:
                raise ValueError(f"{name} must be in [0, {k}) (the model has {k} outputs); got {int(lab.max())}")


def model_dtype(model, x: torch.Tensor) -> torch.dtype:
    """The floating dtype the model computes in (its parameters'), or x's for a parameterless callable."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return x.dtype


@torch.no_grad()
def num_outputs(model, x: torch.Tensor) -> int:
    """How many classes the model scores (one forward pass of one image, in eval mode)."""
    with frozen(model):
        return int(model(x[:1].to(model_dtype(model, x))).shape[-1])


def check_positive(name: str, value, *, allow_zero: bool = True, integer: bool = False) -> None:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not a bool; got {value!r}")
    if integer:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
        return
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}; got {value!r}")


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients for the duration; both restored afterwards."""
    if not isinstance(model, nn.Module):
        yield model
        return
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def input_grad(model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient w.r.t. ``x`` of the loss an attack ascends: CE(model(x), y) (untargeted) or
    -CE(model(x), target) (targeted). Summed over the batch, so each row is its sample's own gradient."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if target is None:
            loss = F.cross_entropy(logits, y, reduction="sum")
        else:
            loss = -F.cross_entropy(logits, target, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    return g


#: What a gradient attack ascends: cross-entropy (the paper's PGD), the logit margin, or the margin averaged
#: over a range of the perturbation's scale (so that the image stays misclassified when a generator trained on
#: it reproduces only part of the perturbation).
OBJECTIVES = ("ce", "margin", "scaled")
#: The scales the scale-robust objective averages over: a deceptive model's samples were measured to carry
#: about 0.8 of their training perturbations' strength (docs/experiments.md).
OBJECTIVE_SCALES = (0.5, 0.75, 1.0)


def check_objective(objective: str, margin: float = 0.0) -> None:
    """ValueError unless ``objective`` is one of OBJECTIVES and ``margin`` a finite number >= 0."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
    check_positive("margin", margin)


def logit_margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample, how far the prediction is past the decision boundary in logits (Carlini & Wagner's f,
    negated): max_{j != y} z_j - z_y untargeted (> 0: misclassified), z_t - max_{j != t} z_j targeted (> 0:
    the target wins)."""
    k = y if target is None else target
    own = logits.gather(1, k[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(k, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - own if target is None else own - other


def objective_grad(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    objective: str = "ce",
    x0: torch.Tensor | None = None,
    kappa: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient w.r.t. ``x`` of what the attack ascends, each sample's logit margin at ``x``). ``ce``: the
    cross-entropy of :func:`input_grad`; ``margin``: :func:`logit_margin`, clipped at ``kappa`` when it is > 0
    (an image past it pulls no further: Carlini & Wagner's confidence); ``scaled``: that margin averaged over
    ``x0 + s (x - x0)`` for s in OBJECTIVE_SCALES (``x0``: the clean images). Summed over the batch, so each
    row is its sample's own gradient."""
    check_objective(objective)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        margin = logit_margin(logits, y, target)
        if objective == "ce":
            loss = F.cross_entropy(logits, y if target is None else target, reduction="sum")
            loss = loss if target is None else -loss
        else:
            scales = OBJECTIVE_SCALES if objective == "scaled" else (1.0,)
            loss = 0.0
            for s in scales:
                m = margin if s == 1.0 else logit_margin(model((x0 + s * (x - x0)).clamp(0, 1)), y, target)
                loss = loss + (m.clamp(max=kappa) if kappa > 0 else m).sum() / len(scales)
        (g,) = torch.autograd.grad(loss, x)
    return g, margin.detach()


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


@torch.no_grad()
def predict_logits(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The model's logits for ``x`` in batches, on ``x``'s device (N, 0 for no images)."""
    with frozen(model):
        out = [model(x[s]) for s in batches(x.shape[0], batch_size)]
    return torch.cat(out) if out else torch.empty(0, 0, device=x.device)


def predict_labels(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels for ``x`` in batches, on ``x``'s device."""
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=x.device)
    return predict_logits(model, x, batch_size).argmax(1)


def success(
    model, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None, batch_size: int = 1000
) -> torch.Tensor:
    """Per-sample bool mask: the attack worked (prediction != y, or == target when targeted)."""
    check_inputs(model, x_adv, y, target)
    pred = predict_labels(model, x_adv.to(model_dtype(model, x_adv)), batch_size)
    return pred == target if target is not None else pred != y


# Perturbation scales at which ``scaled_success`` is reported by default (the pipeline and `ddmini attack`);
# 1 is measured too, not assumed: the whole perturbation re-checked with the model given.
MARGIN_SCALES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@torch.no_grad()
def scaled_predictions(
    model,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    scales=MARGIN_SCALES,
    batch_size: int = 1000,
    target: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """For each s in ``scales``: the model's labels for x + s * (x_adv - x) clamped to [0, 1], the inputs
    checked as :func:`scaled_success` checks them (one pass per scale, whatever shares are read off it)."""
    check_inputs(model, x_adv, y, target)
    if not isinstance(x, torch.Tensor) or x.shape != x_adv.shape:
        raise ValueError(f"x must have x_adv's shape {tuple(x_adv.shape)}; got {tuple(getattr(x, 'shape', ()))}")
    for s in scales:
        check_positive("scale", s)
    delta = x_adv - x
    dtype = model_dtype(model, x_adv)
    return [predict_labels(model, (x + s * delta).clamp_(0, 1).to(dtype), batch_size) for s in scales]


def prediction_shares(preds: list[torch.Tensor], y: torch.Tensor, target: torch.Tensor | None = None) -> list[float]:
    """Per prediction tensor: the share misclassified (!= y), or with ``target`` the share classified as it;
    NaN for no images."""
    if y.shape[0] == 0:
        return [float("nan") for _ in preds]
    return [float((p == target if target is not None else p != y).double().mean()) for p in preds]


def scaled_success(
    model,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    scales=MARGIN_SCALES,
    batch_size: int = 1000,
    target: torch.Tensor | None = None,
) -> list[float]:
    """For each s in ``scales``: the share of images still misclassified (prediction != y; with
    ``target``, classified as their target) when only s times their perturbation is applied,
    x + s * (x_adv - x) clamped to [0, 1].

    It says how far past the decision boundary an attack went, and so how much of a perturbation
    a generator trained on attacked images (the deceptive diffusion model) has to reproduce for
    its samples to mislead as often as the attacked set does."""
    return prediction_shares(scaled_predictions(model, x, x_adv, y, scales, batch_size, target), y, target)


def norms(x_adv: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (L2, L-inf) norms of the perturbation x_adv - x, in float32."""
    d = (x_adv - x).flatten(1).float()
    return d.norm(dim=1), d.abs().amax(dim=1)


def generator(seed: int | None, device) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


def robust_accuracy(model, x: torch.Tensor, y: torch.Tensor, attack, restarts: int, seed: int = 0) -> float:
    """The share of (x, y) that ``model`` classifies correctly on the clean image and on every one of
    ``restarts`` runs of ``attack(model, x, y, seed)`` (a random-start attack, seeds seed, seed + 1, ...):
    the worst case over restarts, as robustness is evaluated (Madry et al. 1706.06083)."""
    check_positive("restarts", restarts, integer=True)
    if x.shape[0] == 0:
        return float("nan")
    ok = predict_labels(model, x) == y
    for r in range(restarts):
        idx = ok.nonzero().flatten()  # only the images still standing need attacking
        if idx.numel() == 0:
            break
        x_adv = attack(model, x[idx], y[idx], seed + r)
        ok[idx] &= predict_labels(model, x_adv) == y[idx]
    return ok.float().mean().item()
