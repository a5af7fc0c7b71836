"""Fréchet distances in a feature space, batched, with the trace square root in compiled float64.

    FD(N(mu1, C1), N(mu2, C2)) = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^{1/2})

The expensive part, tr((C1 C2)^{1/2}), is computed for the whole batch in one call to
``ddmini._C.trace_sqrt_product_cpu``: pivoted Cholesky of C1 = L L^T, then the eigenvalues of the
symmetric PSD matrix L^T C2 L (which has the eigenvalues of C1 C2) by Householder tridiagonalisation
and implicit QL, negative round-off eigenvalues clamped to 0 (see csrc/frechet_cpu.cpp). All steps are
real symmetric algorithms, so singular or ill-conditioned covariances (fewer samples than dimensions)
give a real, finite answer — unlike ``scipy.linalg.sqrtm`` (pytorch-fid), which can return complex
parts, or ``eigvals(C1 @ C2)`` (torchmetrics), a nonsymmetric eigenproblem.

On a GPU the same method runs on the device through ``torch.linalg`` (backend ``"linalg"``, the
``"auto"`` choice for CUDA tensors): batched Cholesky, two batched products and a batched symmetric
eigenvalue solve, all cuSOLVER/cuBLAS calls in float64. It is not a hand-written kernel: dense
factorisations are what those libraries are built for, and the C++ code's blocking is tuned for a CPU.

The class-aware variant (CAFD, Liu et al. 2018, arXiv 1803.07474) fits one weighted Gaussian per class
k with weights w_nk = p(k|x_n) / sum_n p(k|x_n) (soft: classifier probabilities) or one-hot labels
(hard), and averages FD_k over classes.
"""

from __future__ import annotations

import torch

from ._ext import _C, HAS_CPP

BACKENDS = ("auto", "cpp", "linalg", "torch")


def _as_f64(name: str, t, ndim: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if not (t.is_floating_point()):
        raise TypeError(f"{name} must be a floating-point tensor; got {t.dtype}")
    if t.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimensions; got shape {tuple(t.shape)}")
    t = t.detach().to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinity")
    return t


def _check_cov(name: str, c: torch.Tensor) -> None:
    if c.shape[-1] != c.shape[-2]:
        raise ValueError(f"{name} must be square (..., d, d); got {tuple(c.shape)}")
    asym = (c - c.transpose(-1, -2)).abs().amax()
    if asym > 1e-8 * (c.abs().amax() + 1e-300):
        raise ValueError(f"{name} must be symmetric (max |C - C^T| = {float(asym):.3g})")


# A covariance must be PSD within round-off: no eigenvalue below -PSD_TOL times the largest (the C++
# kernel's kPsdTol, csrc/kernels.h). An indefinite "covariance" would otherwise be clamped to a
# meaningless distance (0 or 1 for [[0, 1], [1, 0]]).
PSD_TOL = 1e-8


def _check_psd_eigenvalues(name: str, w: torch.Tensor) -> None:
    """w: (..., n) eigenvalues of a symmetric matrix that must be PSD."""
    scale = w.abs().amax(-1)
    bad = w.amin(-1) < -PSD_TOL * scale
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0]) if bad.ndim else 0
        raise ValueError(
            f"{name} must be positive semi-definite; "
            f"{'pair ' + str(i) + ' has ' if bad.ndim else ''}an eigenvalue "
            f"{float(w.reshape(-1, w.shape[-1])[i].min()):.3g} (largest {float(scale.reshape(-1)[i]):.3g})"
        )


def trace_sqrt_product_reference(cov1: torch.Tensor, cov2: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch tr((C1 C2)^{1/2}) via eigh: S = C1^{1/2}, sum sqrt(eig(S C2 S)) (float64)."""
    w, V = torch.linalg.eigh(cov1)
    _check_psd_eigenvalues("cov1", w)
    S = (V * w.clamp(min=0).sqrt().unsqueeze(-2)) @ V.transpose(-1, -2)
    M = S @ cov2 @ S
    ev = torch.linalg.eigvalsh(0.5 * (M + M.transpose(-1, -2)))
    _check_psd_eigenvalues("cov2", ev)
    return ev.clamp(min=0).sqrt().sum(-1)


def trace_sqrt_product_linalg(cov1: torch.Tensor, cov2: torch.Tensor) -> torch.Tensor:
    """tr((C1 C2)^{1/2}) by the C++ kernel's method in batched ``torch.linalg`` calls, on the inputs'
    device: a factor C1 = F F^T, then sum sqrt(eigvalsh(F^T C2 F)) with round-off below 0 clamped.
    F is the Cholesky factor where C1 is positive definite (backward stable, so F F^T = C1 up to
    rounding even when C1 is ill-conditioned); where Cholesky breaks down (a singular C1, e.g. the
    covariance of fewer samples than dimensions) F = V diag(sqrt(max(w, 0))) from eigh(C1) instead.
    One symmetric eigenvalue solve per pair where C1 is positive definite, against the reference's two."""
    L, info = torch.linalg.cholesky_ex(cov1)
    bad = info != 0
    if bool(bad.any()):
        w, V = torch.linalg.eigh(cov1[bad])
        _check_psd_eigenvalues("cov1", w)
        L = L.clone()
        L[bad] = V * w.clamp(min=0).sqrt().unsqueeze(-2)
    M = L.transpose(-1, -2) @ cov2 @ L
    ev = torch.linalg.eigvalsh(0.5 * (M + M.transpose(-1, -2)))
    _check_psd_eigenvalues("cov2", ev)
    return ev.clamp(min=0).sqrt().sum(-1)


def _checked_covs(cov1, cov2) -> tuple[torch.Tensor, torch.Tensor]:
    """cov1, cov2 as float64 after checking shape, finiteness and symmetry (PSD is checked by each
    backend, from the factorisation it makes anyway)."""
    c1 = _as_f64("cov1", cov1, (2, 3))
    c2 = _as_f64("cov2", cov2, (2, 3))
    if c1.numel() == 0 or c2.numel() == 0:
        raise ValueError(f"covariances must not be empty; got shapes {tuple(c1.shape)} and {tuple(c2.shape)}")
    if c1.shape != c2.shape:
        raise ValueError(f"cov1 and cov2 must have the same shape; got {tuple(c1.shape)} and {tuple(c2.shape)}")
    _check_cov("cov1", c1)
    _check_cov("cov2", c2)
    return c1, c2


def _trace_sqrt(c1: torch.Tensor, c2: torch.Tensor, backend: str) -> torch.Tensor:
    """Backend dispatch for covariances already through :func:`_checked_covs`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        backend = "cpp" if HAS_CPP and c1.device.type == "cpu" else "linalg"
    if backend == "cpp" and not HAS_CPP:
        raise RuntimeError("backend 'cpp' requested but ddmini._C is not built")
    single = c1.ndim == 2
    if single:
        c1, c2 = c1[None], c2[None]
    if backend == "torch":
        out = trace_sqrt_product_reference(c1, c2)
    elif backend == "linalg":
        out = trace_sqrt_product_linalg(c1, c2)
    else:
        out = torch.from_numpy(
            _C.trace_sqrt_product_cpu(
                c1.cpu().contiguous().numpy(), c2.cpu().contiguous().numpy(), torch.get_num_threads()
            )
        )
        if bool(torch.isnan(out).any()):
            raise ValueError("trace_sqrt_product: the eigenvalue iteration did not converge")
        for sentinel, name in ((-1.0, "cov1"), (-2.0, "cov2")):  # csrc/kernels.h kNotPsd1 / kNotPsd2
            if bool((out == sentinel).any()):
                i = int((out == sentinel).nonzero()[0, 0])
                raise ValueError(
                    f"{name} must be positive semi-definite (pair {i} is not, within a relative "
                    f"tolerance of {PSD_TOL:g})"
                )
    return out[0] if single else out


def trace_sqrt_product(cov1: torch.Tensor, cov2: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """tr((C1 C2)^{1/2}) for symmetric PSD C1, C2 of shape (B, d, d) or (d, d); float64 (B,) or 0-d."""
    return _trace_sqrt(*_checked_covs(cov1, cov2), backend)


def frechet_distance(mu1, cov1, mu2, cov2, *, backend: str = "auto") -> torch.Tensor:
    """|mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^{1/2}) in float64.

    mu (B, d) or (d,), cov (B, d, d) or (d, d) -> (B,) or 0-d. Round-off below zero is clamped to 0.
    """
    m1 = _as_f64("mu1", mu1, (1, 2))
    m2 = _as_f64("mu2", mu2, (1, 2))
    if m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 must have the same shape; got {tuple(m1.shape)} and {tuple(m2.shape)}")
    c1, c2 = _checked_covs(cov1, cov2)
    if c1.shape[:-1] != m1.shape:
        raise ValueError(f"cov1 of shape {tuple(c1.shape)} does not match mu1 of shape {tuple(m1.shape)}")
    ts = _trace_sqrt(c1, c2, backend)
    diff = (m1 - m2).to(ts.device)
    fd = (
        (diff * diff).sum(-1)
        + torch.diagonal(c1, dim1=-2, dim2=-1).sum(-1).to(ts.device)
        + torch.diagonal(c2, dim1=-2, dim2=-1).sum(-1).to(ts.device)
        - 2 * ts
    )
    return fd.clamp(min=0)


def mean_cov(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and unbiased covariance (d, d) of features (N, d), in float64 (as pytorch-fid)."""
    f = _as_f64("feats", feats, (2,))
    if f.shape[1] == 0:
        raise ValueError(f"feats must have at least one feature dimension; got shape {tuple(f.shape)}")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance; got {f.shape[0]}")
    mu = f.mean(0)
    x = f - mu
    return mu, (x.T @ x) / (f.shape[0] - 1)


def frechet_from_features(feats_a: torch.Tensor, feats_b: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Fréchet distance between Gaussians fitted to two feature sets (N, d) and (M, d)."""
    mu_a, cov_a = mean_cov(feats_a)
    mu_b, cov_b = mean_cov(feats_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sets differ in width: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    return frechet_distance(mu_a, cov_a, mu_b, cov_b, backend=backend)


def class_weights(weights: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """(N, K) float64 weights: int labels (N,) become one-hot (hard), probabilities (N, K) stay (soft)."""
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor; got {type(weights).__name__}")
    if weights.ndim == 1 and not weights.is_floating_point():
        if weights.numel() and int(weights.min()) < 0:
            raise ValueError("labels must be >= 0")
        if num_classes and weights.numel() and int(weights.max()) >= num_classes:
            raise ValueError(f"labels must be in [0, {num_classes}); got {int(weights.max())}")
        if not num_classes and not weights.numel():
            raise ValueError("labels are empty: no classes to weight")
        k = num_classes or int(weights.max()) + 1
        return torch.nn.functional.one_hot(weights.long(), k).to(torch.float64)
    w = _as_f64("weights", weights, (2,))
    if bool((w < 0).any()):
        raise ValueError("weights must be non-negative (class probabilities or one-hot)")
    return w


def weighted_mean_cov(feats: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class weighted Gaussians: feats (N, d), weights (N, K) -> mu (K, d), cov (K, d, d).

    w_nk is normalised to sum to 1 over n for each class; cov_k = sum_n w_nk (x_n - mu_k)(x_n - mu_k)^T.
    """
    f = _as_f64("feats", feats, (2,))
    if f.shape[0] == 0 or f.shape[1] == 0:
        raise ValueError(f"feats must be a non-empty (N, d) tensor; got shape {tuple(f.shape)}")
    w = class_weights(weights)
    if w.shape[0] != f.shape[0]:
        raise ValueError(f"weights have {w.shape[0]} rows for {f.shape[0]} feature vectors")
    mass = w.sum(0)
    empty = (mass <= 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"class(es) {empty} have zero total weight: no samples to fit")
    w = w / mass
    mu = w.T @ f  # (K, d)
    xc = f.unsqueeze(0) - mu.unsqueeze(1)  # (K, N, d)
    xw = xc * w.T.sqrt().unsqueeze(-1)
    cov = xw.transpose(1, 2) @ xw  # (K, d, d)
    return mu, 0.5 * (cov + cov.transpose(1, 2))


def class_aware_frechet_distance(feats_a, weights_a, feats_b, weights_b, *, backend: str = "auto"):
    """Class-Aware Fréchet Distance (Liu et al. 2018): mean over classes of FD_k, and the (K,) vector.

    feats: (N, d) features; weights: (N, K) class probabilities (soft) or int64 labels (N,) (hard).
    All K classes go through one batched trace-sqrt call.
    """
    for name, f in (("feats_a", feats_a), ("feats_b", feats_b)):
        if isinstance(f, torch.Tensor) and (f.ndim != 2 or 0 in f.shape):
            raise ValueError(f"{name} must be a non-empty (N, d) tensor; got shape {tuple(f.shape)}")
    wa, wb = class_weights(weights_a), class_weights(weights_b)
    k = max(wa.shape[1], wb.shape[1])
    if weights_a.ndim == 1:
        wa = class_weights(weights_a, k)
    if weights_b.ndim == 1:
        wb = class_weights(weights_b, k)
    if wa.shape[1] != wb.shape[1]:
        raise ValueError(f"weights disagree on the number of classes: {wa.shape[1]} vs {wb.shape[1]}")
    mu_a, cov_a = weighted_mean_cov(feats_a, wa)
    mu_b, cov_b = weighted_mean_cov(feats_b, wb)
    per_class = frechet_distance(mu_a, cov_a, mu_b, cov_b, backend=backend)
    return per_class.mean(), per_class


# ---------------------------------------------------------------------------------------------
# Label agreement (how often the classifier is fooled)
# ---------------------------------------------------------------------------------------------
def confusion_matrix(labels: torch.Tensor, pred: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """(K, K) int64 counts: rows are the true / conditioning label, columns the prediction."""
    if labels.shape != pred.shape or labels.ndim != 1:
        raise ValueError(
            f"labels and pred must be 1-D of equal length; got {tuple(labels.shape)} and {tuple(pred.shape)}"
        )
    for name, t in (("labels", labels), ("pred", pred)):
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"{name} must be an integer tensor; got {t.dtype}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"{name} must be in [0, {num_classes}); got values from {int(t.min())} to {int(t.max())}")
    idx = labels.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def misclassification(labels: torch.Tensor, pred: torch.Tensor, num_classes: int = 10) -> dict:
    """Share of ``pred != labels`` overall and per class (NaN for a class with no example), and the
    confusion matrix, as plain Python lists (JSON-ready)."""
    cm = confusion_matrix(labels, pred, num_classes)
    total = cm.sum(1)
    wrong = total - cm.diagonal()
    per_class = [float(w) / float(n) if n else float("nan") for w, n in zip(wrong.tolist(), total.tolist())]
    n = int(total.sum())
    return {
        "rate": float(wrong.sum()) / n if n else float("nan"),
        "n": n,
        "per_class": per_class,
        "confusion": cm.tolist(),
    }
