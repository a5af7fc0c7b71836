"""Public kernel ops: validate tensors -> pick a backend -> call ddmini._C (or the torch reference).

Backends: "auto" (the compiled kernel for the tensor's device when present, else torch), "cpp",
"cuda", "torch" (the pure-PyTorch reference in :mod:`ddmini.reference`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import reference
from ._ext import _C, HAS_CPP, HAS_CUDA

BACKENDS = ("auto", "cpp", "cuda", "torch")


class PhiloxNoise(NamedTuple):
    """Gaussian noise made inside the step kernel from a counter-based stream (Philox4x32-10 +
    Box-Muller, csrc/philox.h): element i of the flat (B, ...) range is the i-th value of stream
    (seed, offset). Pass as ``noise=`` to ddpm_step / ddim_step: no noise tensor is drawn or read, and
    the values are the same on every device and thread count. Use a new offset for every step."""

    seed: int
    offset: int


def _check_philox(p: PhiloxNoise) -> None:
    for name in ("seed", "offset"):
        v = getattr(p, name)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**64:
            raise ValueError(f"PhiloxNoise {name} must be an int in [0, 2^64); got {v!r}")


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


# ---------------------------------------------------------------------------------------------
# Fused noise-schedule steps
# ---------------------------------------------------------------------------------------------
_VALID_TABLES: dict = {}  # (data_ptr, version, numel, device) of CUDA tables already checked


def _check_table(alphas_cumprod, device: torch.device, backend: str) -> None:
    if not isinstance(alphas_cumprod, torch.Tensor):
        raise TypeError(f"alphas_cumprod must be a torch.Tensor; got {type(alphas_cumprod).__name__}")
    if alphas_cumprod.dtype != torch.float64 or alphas_cumprod.ndim != 1 or alphas_cumprod.numel() == 0:
        raise TypeError(
            f"alphas_cumprod must be a non-empty 1-D float64 tensor; got {alphas_cumprod.dtype} "
            f"of shape {tuple(alphas_cumprod.shape)}"
        )
    if alphas_cumprod.device != device:
        raise ValueError(f"alphas_cumprod is on {alphas_cumprod.device} but x is on {device}")
    if not alphas_cumprod.is_contiguous():
        raise ValueError("alphas_cumprod must be contiguous")
    if backend == "cpp":
        return  # the C++ binding checks the values without a Python round trip
    # Inference tensors (a table made under torch.inference_mode, as in sampling) keep no version
    # counter; they cannot be changed in place outside inference mode, so their address identifies them.
    version = None if alphas_cumprod.is_inference() else alphas_cumprod._version
    key = (alphas_cumprod.data_ptr(), version, alphas_cumprod.numel(), str(device))
    if key in _VALID_TABLES:
        return
    if not bool(((alphas_cumprod > 0) & (alphas_cumprod <= 1)).all()):
        raise ValueError("alphas_cumprod must lie in (0, 1]")
    if len(_VALID_TABLES) > 64:
        _VALID_TABLES.clear()
    _VALID_TABLES[key] = True


def _check_like(name: str, t, x: torch.Tensor) -> None:
    _check_float32(name, t)
    if t.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}; got {tuple(t.shape)}")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}")


def _check_ranges(pending: list, T: int) -> None:
    """Range checks of tensor timesteps [(name, t, allow_negative)]: one min/max reduction each and one
    device-to-host read for all of them (a single CUDA sync per step op). The kernels also clamp the
    index, so no timestep can read outside the table whatever happens here."""
    pending = [p for p in pending if p[1].numel()]
    if not pending:
        return
    bounds = torch.stack([torch.stack(torch.aminmax(t)) for _, t, _ in pending]).tolist()
    for (name, _, allow_negative), (t_min, t_max) in zip(pending, bounds):
        if (t_min < 0 and not allow_negative) or t_max >= T:
            lo = "-inf" if allow_negative else "0"
            raise ValueError(f"{name} must lie in [{lo}, {T}); got values from {t_min} to {t_max}")


def _check_timesteps(
    name: str, t, B: int, T: int, device: torch.device, backend: str, allow_negative=False, pending: list | None = None
):
    """Returns (tensor or None, scalar). Tensor timesteps are int64 (B,) on x's device; their range is
    checked here, or appended to ``pending`` for one :func:`_check_ranges` call with the others."""
    lo = "-inf" if allow_negative else "0"
    if isinstance(t, bool):
        raise TypeError(f"{name} must be an int or an int64 tensor; got bool")
    if isinstance(t, int):
        if (t < 0 and not allow_negative) or t >= T:
            raise ValueError(f"{name} must lie in [{lo}, {T}); got {t}")
        return None, t
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an int or an int64 tensor; got {type(t).__name__}")
    if t.dtype != torch.int64:
        raise TypeError(f"{name} must be int64; got {t.dtype}")
    if t.ndim == 0:
        return _check_timesteps(name, int(t), B, T, device, backend, allow_negative, pending)
    if t.shape != (B,):
        raise ValueError(f"{name} must have shape ({B},), one timestep per sample; got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but x is on {device}")
    if backend != "cpp":  # the C++ binding checks the range itself
        if pending is None:
            _check_ranges([(name, t, allow_negative)], T)
        else:
            pending.append((name, t, allow_negative))
    return t.contiguous(), 0


def _prepare_out(out, x: torch.Tensor) -> torch.Tensor:
    if out is None:
        return torch.empty_like(x)
    _check_like("out", out, x)
    return out


def _launch(op: int, be: str, a, b, c, out, t, t_scalar, t_prev, t_prev_scalar, eta, table):
    B = a.shape[0]
    if a.numel() == 0:
        return out
    philox = isinstance(c, PhiloxNoise)
    seed, offset = (c.seed, c.offset) if philox else (0, 0)
    arr = None if philox else c
    if be == "cpp":
        _C.schedule_step_cpu(
            op,
            a.detach().numpy(),
            b.detach().numpy(),
            None if arr is None else arr.detach().numpy(),
            out.detach().numpy(),
            B,
            table.numpy(),
            None if t is None else t.numpy(),
            t_scalar,
            None if t_prev is None else t_prev.numpy(),
            t_prev_scalar,
            float(eta),
            torch.get_num_threads(),
            philox,
            seed,
            offset,
        )
    else:
        _C.schedule_step_cuda(
            op,
            a.data_ptr(),
            b.data_ptr(),
            0 if arr is None else arr.data_ptr(),
            out.data_ptr(),
            B,
            a.numel() // B,
            table.data_ptr(),
            table.numel(),
            0 if t is None else t.data_ptr(),
            t_scalar,
            0 if t_prev is None else t_prev.data_ptr(),
            t_prev_scalar,
            float(eta),
            _stream(a),
            philox,
            seed,
            offset,
        )
    return out


def philox_normal(
    like: torch.Tensor, seed: int, offset: int, *, out: torch.Tensor | None = None, backend: str = "auto"
) -> torch.Tensor:
    """A tensor shaped like ``like`` (float32) holding the stream (seed, offset) of :class:`PhiloxNoise`:
    exactly the noise a step with ``noise=PhiloxNoise(seed, offset)`` adds (up to float rounding)."""
    _check_philox(PhiloxNoise(seed, offset))
    _check_float32("like", like)
    out = _prepare_out(out, like)
    be = _pick_backend(backend, like.device)
    if out.numel() == 0:
        return out
    if be == "torch":
        return out.copy_(reference.philox_normal(out.numel(), seed, offset, out.device).view_as(out))
    if be == "cpp":
        _C.philox_normal_cpu(out.detach().numpy().reshape(-1), seed, offset, torch.get_num_threads())
    else:
        _C.philox_normal_cuda(out.data_ptr(), out.numel(), seed, offset, _stream(out))
    return out


def _resolve_noise(noise, x: torch.Tensor, be: str):
    """A tensor or PhiloxNoise after checks; the torch backend turns PhiloxNoise into its tensor."""
    if isinstance(noise, PhiloxNoise):
        _check_philox(noise)
        if be == "torch":
            return reference.philox_normal(x.numel(), noise.seed, noise.offset, x.device).view_as(x)
        return noise
    _check_like("noise", noise, x)
    return noise


def _validate_x(name: str, x) -> None:
    _check_float32(name, x)
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension (B, ...); got a 0-d tensor")


def q_sample(
    x0: torch.Tensor,
    noise: torch.Tensor,
    t,
    alphas_cumprod: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Forward noising ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` in one pass.

    x0, noise: float32 (B, ...) contiguous; t: int or int64 (B,); alphas_cumprod: float64 (T,) on
    x0's device; out: optional float32 tensor like x0 (may alias x0 or noise). Returns out.
    """
    _validate_x("x0", x0)
    _check_like("noise", noise, x0)
    be = _pick_backend(backend, x0.device)
    _check_table(alphas_cumprod, x0.device, be)
    tt, ts = _check_timesteps("t", t, x0.shape[0], alphas_cumprod.numel(), x0.device, be)
    out = _prepare_out(out, x0)
    if be == "torch":
        return reference.q_sample(x0, noise, t, alphas_cumprod, out=out)
    return _launch(_C.OP_Q_SAMPLE, be, x0, noise, None, out, tt, ts, None, -1, 0.0, alphas_cumprod)


def ddpm_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t,
    alphas_cumprod: torch.Tensor,
    noise: torch.Tensor | None = None,
    variance: str = "small",
    *,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """One ancestral DDPM update (Ho et al. 2020, Alg. 2) in one pass:

    ``x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t noise`` with
    sigma_t^2 = beta_t (1 - abar_{t-1}) / (1 - abar_t) for variance="small", beta_t for "large";
    no noise where t = 0. ``noise=None`` draws it with ``torch.randn_like`` (global generator);
    ``noise=PhiloxNoise(seed, offset)`` makes it inside the kernel (no extra pass over memory).
    """
    _validate_x("x_t", x_t)
    _check_like("eps", eps, x_t)
    if variance not in ("small", "large"):
        raise ValueError(f"variance must be 'small' or 'large'; got {variance!r}")
    be = _pick_backend(backend, x_t.device)
    noise = torch.randn_like(x_t) if noise is None else _resolve_noise(noise, x_t, be)
    _check_table(alphas_cumprod, x_t.device, be)
    tt, ts = _check_timesteps("t", t, x_t.shape[0], alphas_cumprod.numel(), x_t.device, be)
    out = _prepare_out(out, x_t)
    if be == "torch":
        return reference.ddpm_step(x_t, eps, t, alphas_cumprod, noise, variance, out=out)
    op = _C.OP_DDPM_SMALL if variance == "small" else _C.OP_DDPM_LARGE
    return _launch(op, be, x_t, eps, noise, out, tt, ts, None, -1, 0.0, alphas_cumprod)


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t,
    t_prev,
    alphas_cumprod: torch.Tensor,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """One DDIM update (Song et al. 2021, Eq. 12) in one pass:

    ``x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``,
    ``sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev)``,
    result ``sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma noise``;
    abar_prev = 1 where t_prev < 0. With eta > 0 and ``noise=None`` the noise is drawn with
    ``torch.randn_like`` (global generator); with eta = 0 noise is ignored.
    """
    _validate_x("x_t", x_t)
    _check_like("eps", eps, x_t)
    eta = float(eta)
    if not 0 <= eta < float("inf"):
        raise ValueError(f"eta must be finite and >= 0; got {eta}")
    be = _pick_backend(backend, x_t.device)
    if eta == 0:
        noise = None
    elif noise is None:
        noise = torch.randn_like(x_t)
    else:
        noise = _resolve_noise(noise, x_t, be)
    _check_table(alphas_cumprod, x_t.device, be)
    T, B = alphas_cumprod.numel(), x_t.shape[0]
    pending: list = []  # t and t_prev checked together: one device read, not two
    tt, ts = _check_timesteps("t", t, B, T, x_t.device, be, pending=pending)
    tp, tps = _check_timesteps("t_prev", t_prev, B, T, x_t.device, be, allow_negative=True, pending=pending)
    _check_ranges(pending, T)
    out = _prepare_out(out, x_t)
    if be == "torch":
        return reference.ddim_step(x_t, eps, t, t_prev, alphas_cumprod, eta, noise, out=out)
    return _launch(_C.OP_DDIM, be, x_t, eps, noise, out, tt, ts, tp, tps, eta, alphas_cumprod)


# ---------------------------------------------------------------------------------------------
# GroupNorm + affine + SiLU (the U-Net's ResBlock input and its scale-shift conditioning)
# ---------------------------------------------------------------------------------------------
def _layout(x: torch.Tensor) -> bool | None:
    """True for channels_last, False for channels-first contiguous, None for any other layout. A
    tensor of one channel or one pixel is both: called channels-first."""
    if x.is_contiguous():
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    return None


def group_norm_silu_fits(x: torch.Tensor) -> bool:
    """Whether the C++ group_norm_silu kernel is built and takes x: float32 or bfloat16 on the CPU,
    channels_last or contiguous (what "auto" sends to it; anything else goes to the reference)."""
    return HAS_CPP and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and _layout(x) is not None


def _flat(t: torch.Tensor, channels_last: bool):
    """A NumPy view of a 4-D tensor in its memory order (no copy); bfloat16 as its bits (int16)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return (t.permute(0, 2, 3, 1) if channels_last else t).numpy()


_FORMAT = {True: torch.channels_last, False: torch.contiguous_format}  # by _layout's answer


class _GroupNormSilu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, A, B, groups: int, eps: float):
        cl = _layout(x)
        N, C, H, W = x.shape
        A, B = A.detach().contiguous(), B.detach().contiguous()
        y = torch.empty_like(x, memory_format=_FORMAT[cl])
        mean = x.new_empty((N, groups), dtype=torch.float32)
        rstd = x.new_empty((N, groups), dtype=torch.float32)
        _C.group_norm_silu_forward_cpu(
            _flat(x, cl),
            A.numpy(),
            B.numpy(),
            _flat(y, cl),
            mean.numpy(),
            rstd.numpy(),
            N,
            C,
            H * W,
            groups,
            cl,
            float(eps),
            torch.get_num_threads(),
        )
        ctx.save_for_backward(x, A, B, mean, rstd)
        ctx.groups, ctx.channels_last = groups, cl
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, A, B, mean, rstd = ctx.saved_tensors
        cl, (N, C, H, W) = ctx.channels_last, x.shape
        dy = dy.contiguous(memory_format=_FORMAT[cl])
        dx = torch.empty_like(x, memory_format=_FORMAT[cl])
        dA, dB = torch.empty_like(A), torch.empty_like(B)
        _C.group_norm_silu_backward_cpu(
            _flat(dy, cl),
            _flat(x, cl),
            A.numpy(),
            B.numpy(),
            mean.numpy(),
            rstd.numpy(),
            _flat(dx, cl),
            dA.numpy(),
            dB.numpy(),
            N,
            C,
            H * W,
            ctx.groups,
            cl,
            torch.get_num_threads(),
        )
        return dx, dA, dB, None, None


def group_norm_silu(
    x: torch.Tensor,
    groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    *,
    eps: float = 1e-5,
    backend: str = "auto",
) -> torch.Tensor:
    """``silu(GroupNorm(x) * (1 + scale) + shift)``, GroupNorm with its affine ``weight``, ``bias`` (C,);
    ``scale``, ``shift`` (N, C) or absent: one pass over x forward and two backward, differentiable in
    every tensor argument (the per-sample coefficients A = weight (1 + scale), B = bias (1 + scale) + shift
    are formed by autograd-tracked torch ops of size N x C).

    x: (N, C, H, W) float32 or bfloat16 on the CPU, channels_last or contiguous, C divisible by ``groups``.
    "auto" takes the C++ kernel for such x and the torch reference otherwise (other dtypes, devices,
    layouts). A bfloat16 x (a convolution's output under CPU autocast) is normalised in float32, as
    autocast runs GroupNorm, and y is rounded to bfloat16 once; the coefficients stay float32.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError("group_norm_silu: x must be a 4-D tensor (N, C, H, W)")
    N, C = x.shape[:2]
    if not isinstance(groups, int) or groups < 1 or C % groups:
        raise ValueError(f"group_norm_silu: groups must be a positive divisor of the {C} channels; got {groups!r}")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"group_norm_silu: eps must be positive and finite; got {eps!r}")
    for name, t, shape in (
        ("weight", weight, (C,)),
        ("bias", bias, (C,)),
        ("scale", scale, (N, C)),
        ("shift", shift, (N, C)),
    ):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"group_norm_silu: {name} must have shape {shape}; got {tuple(t.shape)}")
    s1 = None if scale is None else scale + 1
    A = weight if s1 is None else (s1 if weight is None else s1 * weight)
    B = bias if s1 is None or bias is None else bias * s1
    if shift is not None:
        B = shift if B is None else B + shift
    A = x.new_ones((N, C)) if A is None else A.expand(N, C)
    B = x.new_zeros((N, C)) if B is None else B.expand(N, C)
    coef = torch.float32 if x.dtype == torch.bfloat16 else x.dtype
    if A.dtype != coef or B.dtype != coef:
        A, B = A.to(coef), B.to(coef)
    fits = group_norm_silu_fits(x)
    be = ("cpp" if fits else "torch") if backend == "auto" else _pick_backend(backend, x.device)
    if be == "cpp":
        if not fits:
            raise ValueError(
                "group_norm_silu: the C++ kernel takes float32 or bfloat16 CPU tensors, channels_last or contiguous"
            )
        return _GroupNormSilu.apply(x, A, B, groups, float(eps))
    if be == "cuda":
        raise ValueError("group_norm_silu has no CUDA kernel: use backend 'auto' or 'torch'")
    return reference.group_norm_silu(x, groups, A, B, eps)
