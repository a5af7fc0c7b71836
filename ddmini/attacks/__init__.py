"""Adversarial attacks on a classifier returning logits: FGSM, PGD (L-inf, L2) and Carlini-Wagner L2.

All take ``model, x, y`` with x (N, ...) in [0, 1] and y (N,) int64, optional ``target=`` for targeted
attacks, and return adversarial images of x's shape inside [0, 1] (and the eps-ball where there is one).
The model is put in eval mode and its parameters get no gradients for the duration.
``success(model, x_adv, y)`` is the per-sample success mask; ``norms(x_adv, x)`` the L2 / L-inf sizes;
``scaled_success(model, x, x_adv, y)`` how much of each perturbation is needed to mislead;
``robust_accuracy`` the worst case over random restarts of an attack; ``autoattack`` the standard protocol
(APGD-CE, APGD-T, FAB-T, Square: :mod:`ddmini.attacks.auto`).
The chunked, resumable attack of a whole dataset lives in :mod:`ddmini.attacks.stage`.
"""

from .auto import autoattack
from .base import MARGIN_SCALES, norms, predict_labels, robust_accuracy, scaled_success, success
from .cw import cw_l2
from .pgd import fgsm, pgd_l2, pgd_linf, project_l2

ATTACKS = {"fgsm": fgsm, "pgd_linf": pgd_linf, "pgd_l2": pgd_l2, "cw_l2": cw_l2}

__all__ = [
    "ATTACKS",
    "MARGIN_SCALES",
    "autoattack",
    "cw_l2",
    "fgsm",
    "norms",
    "pgd_l2",
    "pgd_linf",
    "predict_labels",
    "project_l2",
    "robust_accuracy",
    "scaled_success",
    "success",
]
