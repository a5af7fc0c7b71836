"""Pure-PyTorch references of every compiled kernel (also the ``backend="torch"`` path).

Written from the formulas, not from the kernels' factored form, so tests comparing the two check
the algebra as well as the code. Coefficients are computed in float64 from the schedule table and
applied in float32, as the kernels do.
"""

from __future__ import annotations

import torch


def axpy(a: float, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """In place y <- a*x + y."""
    return y.add_(x, alpha=a)


def _per_sample(table: torch.Tensor, t, x: torch.Tensor, fill_negative: float | None = None) -> torch.Tensor:
    """table[t] as float64 shaped (B, 1, ..., 1) to broadcast over x; t is an int or (B,) tensor.
    With ``fill_negative``, entries where t < 0 take that value instead."""
    t = torch.as_tensor(t, dtype=torch.int64, device=table.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    v = table[t.clamp(min=0)]
    if fill_negative is not None:
        v = torch.where(t < 0, torch.full_like(v, fill_negative), v)
    return v.to(x.device).reshape(x.shape[:1] + (1,) * (x.ndim - 1))


def _finish(result: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    return result if out is None else out.copy_(result)


def q_sample(x0, noise, t, alphas_cumprod, out=None):
    """sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
    ab = _per_sample(alphas_cumprod, t, x0)
    return _finish(ab.sqrt().float() * x0 + (1 - ab).sqrt().float() * noise, out)


def ddpm_step(x_t, eps, t, alphas_cumprod, noise, variance="small", out=None):
    """x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t noise;
    sigma_t^2 = beta_t (1 - abar_{t-1}) / (1 - abar_t) ("small") or beta_t ("large"); 0 at t = 0."""
    t_ = torch.as_tensor(t, dtype=torch.int64, device=alphas_cumprod.device)
    ab = _per_sample(alphas_cumprod, t_, x_t)
    ab_prev = _per_sample(alphas_cumprod, t_ - 1, x_t, fill_negative=1.0)
    alpha = ab / ab_prev
    beta = 1 - alpha
    one_minus_ab = 1 - ab
    eps_coef = torch.where(one_minus_ab > 0, beta / one_minus_ab.clamp(min=1e-300).sqrt(), torch.zeros_like(beta))
    var = (
        beta
        if variance == "large"
        else torch.where(
            one_minus_ab > 0, beta * (1 - ab_prev) / one_minus_ab.clamp(min=1e-300), torch.zeros_like(beta)
        )
    )
    nonzero = (t_.expand(x_t.shape[0]) if t_.ndim == 0 else t_) > 0
    sigma = var.clamp(min=0).sqrt() * nonzero.to(x_t.device).reshape(ab.shape)
    mean = (x_t - eps_coef.float() * eps) / alpha.sqrt().float()
    return _finish(mean + sigma.float() * noise if noise is not None else mean, out)


def ddim_step(x_t, eps, t, t_prev, alphas_cumprod, eta=0.0, noise=None, out=None):
    """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t);
    sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev);
    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma noise
    (abar_prev = 1 where t_prev < 0)."""
    ab = _per_sample(alphas_cumprod, t, x_t)
    ab_prev = _per_sample(alphas_cumprod, t_prev, x_t, fill_negative=1.0)
    one_minus_ab = 1 - ab
    ratio = torch.where(one_minus_ab > 0, (1 - ab_prev) / one_minus_ab.clamp(min=1e-300), torch.zeros_like(ab))
    sigma = eta * ratio.sqrt() * (1 - ab / ab_prev).clamp(min=0).sqrt()
    x0_hat = (x_t - one_minus_ab.sqrt().float() * eps) / ab.sqrt().float()
    dir_coef = (1 - ab_prev - sigma**2).clamp(min=0).sqrt()
    result = ab_prev.sqrt().float() * x0_hat + dir_coef.float() * eps
    if noise is not None and eta != 0:
        result = result + sigma.float() * noise
    return _finish(result, out)


_M0, _M1, _W0, _W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
_MASK = 0xFFFFFFFF


def _mulhilo(m: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product m * c (c: int64 tensor of 32-bit values), without
    overflowing int64: c is split into 16-bit halves."""
    p_lo = m * (c & 0xFFFF)  # < 2^48
    p_hi = m * (c >> 16)  # < 2^48
    low = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    return (p_hi >> 16) + (low >> 32), low & _MASK


def philox4x32_10(q: torch.Tensor, seed: int, offset: int) -> list[torch.Tensor]:
    """The four 32-bit words of Philox4x32-10 for counters (q_lo, q_hi, offset_lo, offset_hi) and key
    (seed_lo, seed_hi); q an int64 tensor. Written from Salmon et al. 2011, in int64 arithmetic."""
    c0, c1 = q & _MASK, (q >> 32) & _MASK
    c2 = torch.full_like(q, offset & _MASK)
    c3 = torch.full_like(q, (offset >> 32) & _MASK)
    k0, k1 = seed & _MASK, (seed >> 32) & _MASK
    for _ in range(10):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return [c0, c1, c2, c3]


def philox_normal(n: int, seed: int, offset: int, device="cpu") -> torch.Tensor:
    """n float32 N(0, 1) values of the stream (seed, offset): Box-Muller on Philox words, exact
    transcendental functions in float64 (the kernels use float32 polynomials: |difference| < 1e-5)."""
    blocks = (n + 3) // 4
    x = philox4x32_10(torch.arange(blocks, dtype=torch.int64, device=device), seed, offset)
    out = []
    for h in range(2):
        u1 = ((x[2 * h] >> 8) + 1).double() / 2**24
        u2 = (x[2 * h + 1] >> 8).double() / 2**24
        r = torch.sqrt(-2 * torch.log(u1))
        th = 2 * torch.pi * (u2 - 0.5)
        out += [r * torch.cos(th), r * torch.sin(th)]
    return torch.stack(out, 1).reshape(-1)[:n].float()


def group_norm_silu(x: torch.Tensor, groups: int, A: torch.Tensor, B: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """silu(A[n, c] GroupNorm(x)[n, c] + B[n, c]): GroupNorm without affine (biased variance over each
    group's channels and pixels), then a per-sample, per-channel affine A, B of shape (N, C); a bfloat16 x
    is computed in float32 and the result rounded to bfloat16."""
    xf = x.float() if x.dtype == torch.bfloat16 else x  # bfloat16 normalised in float32, as autocast does
    z = torch.nn.functional.group_norm(xf, groups, eps=eps) * A[:, :, None, None] + B[:, :, None, None]
    return torch.nn.functional.silu(z).to(x.dtype)
