"""The diffusion process: forward noising, the training loss, and the DDPM / DDIM samplers.

A plain class holding the schedule (the float64 ``alphas_cumprod`` table); the network is passed into
each call (``model(x_t, t, y) -> eps``). Every update of x goes through ``ddmini.kernels`` (one fused
pass per step). Images live in model space [-1, 1]; ``to_model``/``from_model`` convert from/to [0, 1].

Classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598): eps = eps_null + w (eps_y - eps_null);
w = 1 is the plain conditional model (one network pass per step), w > 1 pushes toward the class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import distributed, kernels, schedule
from .config import LOSS_WEIGHTINGS, DiffusionTrainConfig, SampleConfig
from .runtime import progress


def to_model(x01: torch.Tensor) -> torch.Tensor:
    return x01 * 2 - 1


def from_model(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp_(0, 1)


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """S evenly spaced timesteps from T-1 down to 0 ("trailing" spacing, which starts at pure noise)."""
    if not 1 <= steps <= T:
        raise ValueError(f"sampling steps must be in [1, {T}]; got {steps}")
    ts = torch.linspace(T - 1, 0, steps).round().long().tolist()
    return sorted(set(ts), reverse=True)


class Diffusion:
    # Classifier-free guidance needs a conditional and an unconditional prediction. None: two model
    # calls on a CPU (the doubled batch's activations fall out of cache, which costs more than a
    # second call: bench/diffusion.py --only guided), one call on the doubled batch elsewhere.
    guided_split: bool | None = None

    def __init__(self, alphas_cumprod: torch.Tensor | None = None, *, schedule_name: str = "linear", T: int = 1000):
        if alphas_cumprod is None:
            alphas_cumprod = schedule.make(schedule_name, T)
        if alphas_cumprod.dtype != torch.float64 or alphas_cumprod.ndim != 1:
            raise ValueError("alphas_cumprod must be a 1-D float64 tensor")
        self.alphas_cumprod = alphas_cumprod
        self._tables: dict[torch.device, torch.Tensor] = {}

    @property
    def T(self) -> int:
        return self.alphas_cumprod.numel()

    def table(self, device: torch.device) -> torch.Tensor:
        device = torch.device(device)
        if device not in self._tables:
            self._tables[device] = self.alphas_cumprod.to(device)
        return self._tables[device]

    # ---- training -------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return kernels.q_sample(x0.contiguous(), noise.contiguous(), t, self.table(x0.device))

    def loss(
        self,
        model,
        x0: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        weighting: str = "mse",
        snr_gamma: float = DiffusionTrainConfig.snr_gamma,
    ) -> torch.Tensor:
        """eps-prediction MSE at timesteps t; "min_snr" weights each sample by min(SNR_t, gamma)/SNR_t
        (Hang et al. 2023, arXiv 2303.09556), which trains faster at the same final quality."""
        x_t = self.q_sample(x0, t, noise)
        eps = model(x_t, t, y)
        per = F.mse_loss(eps.float(), noise, reduction="none").flatten(1).mean(1)
        if weighting == "min_snr":
            ab = self.table(x0.device)[t]
            snr = ab / (1 - ab)
            per = per * (snr.clamp(max=snr_gamma) / snr).float()
        elif weighting != "mse":
            raise ValueError(f"loss weighting must be one of {', '.join(LOSS_WEIGHTINGS)}; got {weighting!r}")
        return per.mean()

    # ---- sampling -------------------------------------------------------------------------
    def _eps(self, model, x: torch.Tensor, t: int, y: torch.Tensor, guidance: float, null: int) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        if guidance == 1.0:
            return model(x, tt, y).float().contiguous()
        ynull = torch.full_like(y, null)
        split = self.guided_split if self.guided_split is not None else x.device.type == "cpu"
        if split:
            cond, uncond = model(x, tt, y).float(), model(x, tt, ynull).float()
        else:
            cond, uncond = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, ynull])).float().chunk(2)
        return (uncond + guidance * (cond - uncond)).contiguous()

    def _chain(
        self, model, x, ts: list[int], y, sampler: str, eta: float, guidance: float, null, seed: int, table, bar
    ) -> torch.Tensor:
        """Denoise x (model space, at timestep ts[0]) through the timesteps ts down to 0, in place, with the
        noise of Philox stream ``seed`` (offset i + 1 at step i): the loop of sampling and purification."""
        for i, t in enumerate(ts):
            eps = self._eps(model, x, t, y, guidance, null)
            if sampler == "ddpm":
                x = kernels.ddpm_step(x, eps, t, table, kernels.PhiloxNoise(seed, i + 1), out=x)
            else:
                t_prev = ts[i + 1] if i + 1 < len(ts) else -1
                noise = kernels.PhiloxNoise(seed, i + 1) if eta > 0 else None
                x = kernels.ddim_step(x, eps, t, t_prev, table, eta, noise, out=x)
            bar.update(y.shape[0])
        return x

    @torch.inference_mode()
    def purify(
        self,
        model,
        x01: torch.Tensor,
        t_star: int,
        steps: int = 20,
        *,
        batch_size: int = 128,
        seed: int = 0,
        device=None,
        desc: str = "purify",
    ) -> torch.Tensor:
        """Diffusion purification (Nie et al. 2022, arXiv 2205.07460): noise images x01 (N, C, H, W) in [0, 1]
        to timestep t_star (q_sample), then run DDIM back to 0 in ``steps`` evenly spaced steps with the
        null label (the class-conditional model used unconditionally). Returns images in [0, 1]."""
        if isinstance(t_star, bool) or not isinstance(t_star, int) or not 1 <= t_star < self.T:
            raise ValueError(f"t* must be an integer in [1, {self.T}); got {t_star!r}")
        if not isinstance(steps, int) or not 1 <= steps <= t_star + 1:
            raise ValueError(f"purification steps must be in [1, t* + 1 = {t_star + 1}]; got {steps!r}")
        null = getattr(model, "null_label", None)
        if null is None:
            raise ValueError("purification needs a class-conditional model with a null label")
        device = torch.device(device) if device else next(model.parameters()).device
        table = self.table(device)
        ts = sorted(set(torch.linspace(t_star, 0, steps).round().long().tolist()), reverse=True)
        gen = torch.Generator().manual_seed(seed)
        was_training = getattr(model, "training", False)
        model.eval()
        out = []
        bar = progress(total=x01.shape[0] * len(ts), desc=desc, unit="img-step")
        try:
            for s in range(0, x01.shape[0], batch_size):
                xb = to_model(x01[s : s + batch_size].float().to(device)).contiguous()
                bseed = int(torch.randint(0, 2**62, (1,), generator=gen))
                noise = kernels.philox_normal(torch.empty_like(xb), bseed, 0)
                x = kernels.q_sample(xb, noise, t_star, table)
                y = torch.full((xb.shape[0],), null, dtype=torch.long, device=device)
                x = self._chain(model, x, ts, y, "ddim", 0.0, 1.0, null, bseed, table, bar)
                out.append(from_model(x).cpu())
        finally:
            bar.close()
            model.train(was_training)
        return torch.cat(out) if out else torch.empty_like(x01)

    def purify_differentiable(
        self, model, x01: torch.Tensor, t_star: int, steps: int, noise: torch.Tensor, *, checkpointed: bool = True
    ) -> torch.Tensor:
        """:meth:`purify`'s chain (noise to t*, DDIM back with eta 0 and the null label) from the given ``noise``
        (model space, x01's shape) in plain torch ops, so that gradients flow from the purified images (in [0, 1])
        back to x01 through every denoising step: the adaptive attacker's view of the purifier. With
        ``checkpointed`` each step's U-Net pass is recomputed in the backward pass instead of kept, so memory
        stays flat in the number of steps (torch.utils.checkpoint)."""
        from torch.utils.checkpoint import checkpoint

        from . import reference

        if isinstance(t_star, bool) or not isinstance(t_star, int) or not 1 <= t_star < self.T:
            raise ValueError(f"t* must be an integer in [1, {self.T}); got {t_star!r}")
        if not isinstance(steps, int) or not 1 <= steps <= t_star + 1:
            raise ValueError(f"purification steps must be in [1, t* + 1 = {t_star + 1}]; got {steps!r}")
        if noise.shape != x01.shape:
            raise ValueError(f"noise must have the images' shape {tuple(x01.shape)}; got {tuple(noise.shape)}")
        table = self.table(x01.device)
        ts = sorted(set(torch.linspace(t_star, 0, steps).round().long().tolist()), reverse=True)
        y = torch.full((x01.shape[0],), model.null_label, dtype=torch.long, device=x01.device)
        x = reference.q_sample(to_model(x01.float()), noise.float(), t_star, table)

        def step(x, t, t_prev):
            eps = model(x, torch.full_like(y, t), y).float()
            return reference.ddim_step(x, eps, t, t_prev, table)

        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            x = checkpoint(step, x, t, t_prev, use_reentrant=False) if checkpointed else step(x, t, t_prev)
        return ((x + 1) / 2).clamp(0, 1)

    @torch.inference_mode()
    def sample(
        self,
        model,
        labels: torch.Tensor,
        cfg: SampleConfig | None = None,
        *,
        image_shape=(1, 28, 28),
        device=None,
        desc: str = "sample",
    ) -> torch.Tensor:
        """Images in [0, 1], (N, *image_shape), one per label (N,) int64, by ancestral DDPM (all T steps)
        or DDIM with ``cfg.steps`` steps and ``cfg.eta``, at guidance ``cfg.guidance``, ``cfg.batch_size``
        images at a time (``SampleConfig()`` when None). Noise is a Philox stream seeded from ``cfg.seed``
        and made inside the fused step, so a seed fixes the output on any device and thread count.
        Under torchrun (``ddmini.distributed``) batch b goes to rank b mod N with the noise of batch b
        (keyed by its images' global position, not by rank): rank 0 returns the images one process
        would, every other rank returns None."""
        cfg = (cfg or SampleConfig()).validate()
        sampler, steps, eta, guidance, batch_size = cfg.sampler, cfg.steps, cfg.eta, cfg.guidance, cfg.batch_size
        if labels.ndim != 1 or labels.dtype != torch.long:
            raise ValueError("labels must be a 1-D int64 tensor")
        null = getattr(model, "null_label", None)
        if guidance != 1.0 and null is None:
            raise ValueError("guidance != 1 needs a model with a null label (classifier-free guidance)")
        if null is not None and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= null):
            raise ValueError(f"labels must be in [0, {null}); got [{int(labels.min())}, {int(labels.max())}]")
        device = torch.device(device) if device else next(model.parameters()).device
        world = distributed.current()
        gen = torch.Generator().manual_seed(cfg.seed)
        table = self.table(device)
        ts = list(range(self.T - 1, -1, -1)) if sampler == "ddpm" else ddim_timesteps(self.T, steps)
        starts = list(range(0, labels.numel(), batch_size))
        # Noise is a counter-based stream made inside the step kernel (kernels.PhiloxNoise): one seed per
        # batch from the generator (drawn for every batch on every rank), one offset per step.
        seeds = [int(torch.randint(0, 2**62, (1,), generator=gen)) for _ in starts]
        mine = distributed.shares(len(starts), world)
        was_training = getattr(model, "training", False)
        model.eval()
        out = {}
        bar = progress(
            total=sum(labels[starts[b] : starts[b] + batch_size].numel() for b in mine) * len(ts),
            desc=desc,
            unit="img-step",
            disable=True if not world.is_main else None,
        )
        try:
            for b in mine:
                y = labels[starts[b] : starts[b] + batch_size].to(device)
                x = kernels.philox_normal(torch.empty((y.shape[0], *image_shape), device=device), seeds[b], 0)
                x = self._chain(model, x, ts, y, sampler, eta, guidance, null, seeds[b], table, bar)
                out[b] = from_model(x).cpu()
        finally:
            bar.close()
            model.train(was_training)
        if world.distributed:
            parts = world.gather_to_main(out)
            if not world.is_main:
                return None
            out = {b: x for part in parts for b, x in part.items()}
        images = torch.cat([out[b] for b in range(len(starts))]) if starts else torch.empty(0, *image_shape)
        bad = ~torch.isfinite(images).flatten(1).all(1)
        if bool(bad.any()):  # from_model's clamp keeps NaN: nothing non-finite leaves the sampler
            raise ValueError(
                f"the sampler produced NaN or infinity in {int(bad.sum())} of {len(images)} images "
                f"(guidance {guidance:g}, eta {eta:g}); are the model's weights finite?"
            )
        return images


def balanced_labels(n: int, num_classes: int = 10) -> torch.Tensor:
    """0, 1, ..., 9, 0, 1, ... (n labels, as balanced as n allows)."""
    return torch.arange(n) % num_classes
