"""Training the class-conditional diffusion model: eps-prediction loss, AdamW, gradient clipping,
EMA weights (what samples), label dropout for classifier-free guidance, bf16 autocast on CUDA and on CPUs
with native bf16.

Exact resume: every random draw of training (batch indices, timesteps, noise, label dropout) comes
from one CPU ``torch.Generator`` whose state is checkpointed with the model, EMA, optimiser and step,
so a run interrupted and resumed gives the same weights as an uninterrupted one (on the same device).
Checkpoints are written atomically every ``checkpoint_every`` steps, at the end, and on Ctrl-C.

Under torchrun (``ddmini.distributed``) the model is wrapped in DistributedDataParallel and the global
batch ``cfg.batch_size`` is split into equal slices, one per rank; every rank draws the whole batch's
random choices from the same generator and keeps its slice, so N ranks take exactly the samples one
process takes (the gradients differ only by the order of their reduction). All ranks stop together
(Ctrl-C or SIGTERM on any rank, the time budget on rank 0, a non-finite loss), rank 0 writes the
checkpoints, and every rank reads the checkpoint it resumes from.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import checkpoint, distributed
from .config import DiffusionTrainConfig, UNetConfig, from_dict, key_dict, to_dict
from .diffusion import Diffusion, to_model
from .runtime import cpu_has_native_bf16, progress
from .unet import UNet


@dataclass
class TrainState:
    model: UNet
    ema: UNet
    opt: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0
    seconds: float = 0.0
    losses: list = field(default_factory=list)  # (step, mean loss over the last interval)
    done: bool = False  # stopped by steps or time budget (not interrupted)


def _new_state(model_cfg: UNetConfig, cfg: DiffusionTrainConfig, device: torch.device) -> TrainState:
    torch.manual_seed(cfg.seed)
    model = UNet(model_cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return TrainState(model, ema, opt, torch.Generator().manual_seed(cfg.seed))


def save_state(
    state: TrainState, model_cfg: UNetConfig, cfg: DiffusionTrainConfig, path: str | Path, extra: dict | None = None
) -> None:
    checkpoint.save(
        {
            "kind": "diffusion",
            "unet": to_dict(model_cfg),
            "train": to_dict(cfg),
            "step": state.step,
            "seconds": state.seconds,
            "losses": state.losses,
            "done": state.done,
            "model": state.model.state_dict(),
            "ema": state.ema.state_dict(),
            "opt": state.opt.state_dict(),
            "gen": state.gen.get_state(),
            "extra": extra or {},
        },
        path,
    )


CHECKPOINT_KEYS = ("unet", "train", "step", "seconds", "model", "ema", "opt", "gen")


def load_checkpoint(path: str | Path, key: str | None = None) -> dict:
    """A diffusion checkpoint, verified and checked: its configs are objects, its step lies within the steps
    its training config asks for, its seconds are finite, and (with ``key``) it was made for that cache key;
    one line naming the file otherwise."""
    ckpt = checkpoint.load_kind(path, "diffusion", "diffusion checkpoint", CHECKPOINT_KEYS, key)
    bad = f"{path}: not a valid ddmini diffusion checkpoint"
    if not all(isinstance(ckpt.get(k), dict) for k in ("unet", "train", "extra")):
        raise ValueError(f"{bad} (its unet, train and extra fields must be objects)")
    step, steps, secs = ckpt["step"], ckpt["train"].get("steps"), ckpt["seconds"]
    if not isinstance(steps, int) or not isinstance(step, int) or not 0 <= step <= steps:
        raise ValueError(f"{bad} (step {step!r} is not within its {steps!r} training steps)")
    if not isinstance(secs, (int, float)) or not math.isfinite(secs) or secs < 0:
        raise ValueError(f"{bad} (seconds {secs!r})")
    return ckpt


#: Training settings a resumed run may change: how long it trains, how often it saves, and the fused norm
#: (its result is the eager ops' to float32 rounding).
RESUMABLE_CHANGES = ("steps", "time_budget", "checkpoint_every", "fit_minutes", "fused_norm")


def load_ema(path: str | Path, device="cpu", dataset: str | None = None) -> tuple[UNet, DiffusionTrainConfig, dict]:
    """The EMA model (eval mode) and the training config of a diffusion checkpoint; one made on another
    dataset than ``dataset`` (when given) is one ValueError line, as ``classifier.load`` says for classifiers."""
    ckpt = load_checkpoint(path)
    trained_on = ckpt.get("extra", {}).get("dataset", "mnist")  # checkpoints from before datasets were named: MNIST
    if dataset is not None and trained_on != dataset:
        raise ValueError(f"{path}: a diffusion model of {trained_on}, not {dataset}")
    mcfg = from_dict(UNetConfig, ckpt["unet"]).validate()
    model = checkpoint.load_weights(UNet(mcfg), ckpt["ema"], path)
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path}: the EMA weights hold NaN or infinity ({len(bad)} tensors, e.g. {bad[0]})")
    return model.to(device).eval(), from_dict(DiffusionTrainConfig, ckpt["train"]), ckpt


def _restore(ckpt: dict, model_cfg: UNetConfig, cfg: DiffusionTrainConfig, device, path, extra=None) -> TrainState:
    if from_dict(UNetConfig, ckpt["unet"]) != model_cfg:
        raise ValueError(f"{path}: checkpoint was made with a different U-Net config; cannot resume")
    was, now = key_dict(from_dict(DiffusionTrainConfig, ckpt["train"])), key_dict(cfg)
    diff = [k for k in sorted(set(was) | set(now)) if k not in RESUMABLE_CHANGES and was.get(k) != now.get(k)]
    if diff:
        k = diff[0]
        raise ValueError(f"{path}: checkpoint was trained with {k} {was.get(k)!r}, not {now.get(k)!r}; cannot resume "
                         "(--no-resume starts over, or choose another --out)")  # fmt: skip
    was_on, now_on = ckpt["extra"].get("dataset", "mnist"), (extra or {}).get("dataset", "mnist")
    if was_on != now_on:
        raise ValueError(f"{path}: checkpoint was trained on {was_on}, not {now_on}; cannot resume")
    state = _new_state(model_cfg, cfg, device)
    try:
        state.model.load_state_dict(ckpt["model"])
        state.ema.load_state_dict(ckpt["ema"])
        state.opt.load_state_dict(ckpt["opt"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: cannot resume from this checkpoint ({e})") from None
    state.gen.set_state(ckpt["gen"])
    state.step, state.seconds = int(ckpt["step"]), float(ckpt["seconds"])
    state.losses = list(ckpt.get("losses", []))
    return state


@dataclass
class Deadline:
    """A wall-clock time (``at``, a time.time()) at which training stops if it has not finished: the run's
    budget (``--run-minutes``) minus what sampling and evaluation are expected to take. The checkpoint keeps
    its planned steps (and the model its cache key), unfinished, so a later run resumes it. ``log`` hears
    once, early, when the loop's rate projects past the deadline, and once when training stops there."""

    at: float
    log: Callable[[str], None] = print
    hit: bool = False
    warned: bool = False

    def passed(self) -> bool:
        return time.time() >= self.at

    def check_rate(self, step: int, steps: int, seconds_per_step: float) -> None:
        """Warn once when ``steps - step`` more steps at ``seconds_per_step`` end after the deadline."""
        left = self.at - time.time()
        if self.warned or (steps - step) * seconds_per_step <= left:
            return
        self.warned = True
        reach = step + max(int(left / seconds_per_step), 0)
        self.log(
            f"  training runs at {seconds_per_step:.3f} s/step here: at that rate it reaches the run's deadline "
            f"after ≈ {reach:,} of {steps:,} steps, stops there, and a later run resumes it"
        )


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    ep, mp = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ep, mp, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


@contextlib.contextmanager
def _deferred_interrupt(signals=(signal.SIGINT,)):
    """Turn Ctrl-C into a flag the loop checks between steps, for as long as training and its last save
    run: the checkpoint written on interrupt is always consistent (never mid-update), and a second
    Ctrl-C cannot cut the step or the save short (it only sets the flag again). Under torchrun SIGTERM
    (what torchrun sends its workers when it is interrupted) is deferred the same way."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum, frame):
        flag["stop"] = True

    for s in signals:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def cpu_autocast(cfg: DiffusionTrainConfig, device: torch.device) -> bool:
    """Whether training on ``device`` runs under bfloat16 autocast on a CPU (native bf16 there)."""
    return cfg.cpu_bf16 and torch.device(device).type == "cpu" and cpu_has_native_bf16()


def fused_norm_applies(cfg: DiffusionTrainConfig, device: torch.device) -> bool:
    """Whether the model trains with the fused GroupNorm + SiLU: float32 on a CPU, with ``fused_norm`` on
    (bf16 autocast keeps the eager ops: the fused kernel takes bfloat16 too but gained nothing there, 417 vs
    414 ms per step, bench/README; CUDA keeps them as well)."""
    return cfg.fused_norm and torch.device(device).type == "cpu" and not cpu_autocast(cfg, device)


def train(
    model_cfg: UNetConfig,
    cfg: DiffusionTrainConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    ckpt_path: str | Path,
    *,
    device: torch.device | str = "cpu",
    resume: bool = True,
    extra: dict | None = None,
    desc: str = "train diffusion",
    world: distributed.World | None = None,
    deadline: Deadline | None = None,
) -> TrainState:
    """Train on images ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,) int64 until ``cfg.steps``
    (or ``cfg.time_budget`` minutes of training). With ``resume=True`` an existing checkpoint at
    ``ckpt_path`` is continued exactly. Ctrl-C finishes the step, writes a checkpoint, then raises
    KeyboardInterrupt (further Ctrl-Cs meanwhile change nothing). ``world`` (default: the one
    :func:`ddmini.distributed.init` joined) shares each batch out over its ranks. At ``deadline`` (rank 0's
    clock) training stops unfinished: the checkpoint is saved with ``done`` false, to be resumed."""
    world = world or distributed.current()
    cfg.validate()
    if cfg.compile and torch.device(device).type == "cpu":
        raise ValueError(
            "--train-compile is for CUDA: on a CPU torch.compile of the U-Net's training step was slower "
            "than eager under AVX2 (686 vs 548 ms) and aborted with heap corruption under AVX-512 "
            "(torch 2.13.0; bench/README, 'torch.compile')"
        )
    if world.distributed and cfg.batch_size % world.size:
        raise ValueError(
            f"the global batch (--train-batch-size {cfg.batch_size}) must split evenly over "
            f"{world.size} ranks" + (" and cannot be smaller than their number" if cfg.batch_size < world.size else "")
        )
    model_cfg.validate()
    if x.ndim != 4 or x.shape[1:] != (model_cfg.in_channels, model_cfg.image_size, model_cfg.image_size):
        raise ValueError(
            f"images must be (N, {model_cfg.in_channels}, {model_cfg.image_size}, "
            f"{model_cfg.image_size}); got {tuple(x.shape)}"
        )
    if y.shape != (x.shape[0],) or y.dtype != torch.long:
        raise ValueError("labels must be int64 of shape (N,)")
    if x.shape[0] == 0:
        raise ValueError("no training images")
    if int(y.min()) < 0 or int(y.max()) >= model_cfg.num_classes:
        raise ValueError(f"labels must be in [0, {model_cfg.num_classes})")
    device = torch.device(device)
    ckpt_path = Path(ckpt_path)
    if resume and ckpt_path.exists():
        state = _restore(load_checkpoint(ckpt_path), model_cfg, cfg, device, ckpt_path, extra)
    else:
        state = _new_state(model_cfg, cfg, device)
    diff = Diffusion(schedule_name=cfg.schedule, T=cfg.T)
    data = to_model(x.float())
    if device.type == "cuda":  # the whole set on the GPU once, rather than a host-to-device copy per step
        data, y = data.to(device), y.to(device)
    cpu_amp = cpu_autocast(cfg, device)
    amp = cpu_amp or (cfg.amp and device.type == "cuda")
    fmt = torch.channels_last if cfg.channels_last and not cpu_amp else torch.contiguous_format
    state.model.to(memory_format=fmt)
    state.model.set_fused_norm(fused_norm_applies(cfg, device))
    net = state.model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(net, device_ids=ids, gradient_as_bucket_view=True)
    net = torch.compile(net) if cfg.compile else net
    null = model_cfg.num_classes
    budget = cfg.time_budget * 60.0
    bar = progress(
        total=cfg.steps, desc=desc, unit="step", initial=state.step, disable=True if not world.is_main else None
    )
    state.model.train()
    signals = (signal.SIGINT, signal.SIGTERM) if world.distributed else (signal.SIGINT,)
    with _deferred_interrupt(signals) as flag:  # Ctrl-C stays deferred until the last save is on disk
        try:
            _loop(
                state, model_cfg, cfg, diff, net, data, y, device, amp, null, budget, bar, ckpt_path, extra, flag,
                world, deadline,
            )  # fmt: skip
        except KeyboardInterrupt:
            bar.close()
            if world.is_main:
                save_state(state, model_cfg, cfg, ckpt_path, extra)
            raise
        bar.close()
        state.done = not (deadline is not None and deadline.hit)
        if world.is_main:
            save_state(state, model_cfg, cfg, ckpt_path, extra)
        world.barrier()  # the others read the finished checkpoint only once it is on disk
    return state


def _timesteps(cfg: DiffusionTrainConfig, g: torch.Generator) -> torch.Tensor:
    """Training timesteps: uniform on [0, T), except a share ``low_t_share`` drawn from [0, low_t_max).
    With low_t_share = 0 the generator is used exactly as by plain uniform sampling."""
    t = torch.randint(0, cfg.T, (cfg.batch_size,), generator=g)
    if cfg.low_t_share > 0:
        low = torch.rand(cfg.batch_size, generator=g) < cfg.low_t_share
        t = torch.where(low, torch.randint(0, cfg.low_t_max, (cfg.batch_size,), generator=g), t)
    return t


def learning_rate(cfg: DiffusionTrainConfig, step: int) -> float:
    """The rate of optimiser step ``step`` (0-based): linear warm-up over ``cfg.warmup`` steps, then
    constant or half a cosine down to 0 at ``cfg.steps``. A function of the step only, so resume is exact."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * ((step + 1) / cfg.warmup)  # the expression of earlier runs, bit for bit
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.steps - cfg.warmup)
        frac = min(1.0, (step - cfg.warmup) / span)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    return cfg.lr


def _stop(state, cfg, budget, flag, world, device, deadline=None) -> bool:
    """Whether to stop before the next step: steps done, the time budget spent or the deadline passed (rank
    0's clock decides), or an interrupt on any rank (KeyboardInterrupt on every rank). One small collective
    under DDP."""
    spent = bool(budget and state.seconds >= budget) and world.is_main
    late = deadline is not None and state.step < cfg.steps and world.is_main and deadline.passed()
    spent, late, stop = world.any(spent, late, flag["stop"], device=device if device.type == "cuda" else None)
    if late and deadline is not None:
        deadline.hit = True
        deadline.log(f"  training stopped at the run's deadline after {state.step:,} of {cfg.steps:,} steps")
    over = state.step >= cfg.steps or spent or late
    if stop and not over:
        raise KeyboardInterrupt
    return over


def _loop(
    state,
    model_cfg,
    cfg,
    diff,
    net,
    data,
    y,
    device,
    amp,
    null,
    budget,
    bar,
    ckpt_path,
    extra,
    flag,
    world=distributed.SINGLE,
    deadline=None,
):
    run_loss, run_n = 0.0, 0
    t_last = time.perf_counter()
    first, first_seconds = state.step, state.seconds
    share = cfg.batch_size // world.size  # this rank's slice of the global batch
    lo, hi = world.rank * share, (world.rank + 1) * share
    while not _stop(state, cfg, budget, flag, world, device, deadline):
        g = state.gen
        idx = torch.randint(0, data.shape[0], (cfg.batch_size,), generator=g)
        t = _timesteps(cfg, g)
        noise = torch.randn((cfg.batch_size, *data.shape[1:]), generator=g)
        drop = torch.rand(cfg.batch_size, generator=g) < cfg.label_dropout
        if world.distributed:
            idx, t, noise, drop = idx[lo:hi], t[lo:hi], noise[lo:hi], drop[lo:hi]
        idx = idx.to(data.device)
        x0 = data[idx].to(device, non_blocking=True)
        yb = y[idx]
        yb = torch.where(drop.to(yb.device), torch.full_like(yb, null), yb).to(device)
        t, noise = t.to(device), noise.to(device)
        lr = learning_rate(cfg, state.step)
        for group in state.opt.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = diff.loss(net, x0, yb, t, noise, cfg.loss_weighting, cfg.snr_gamma)
        seen = world.all_mean(loss.detach().float().reshape(1).clone())  # the global batch's loss, on every rank
        if not torch.isfinite(seen).all():
            raise RuntimeError(f"training diverged at step {state.step} (loss {seen.item()}); lower the learning rate")
        state.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
        state.opt.step()
        _ema_update(state.ema, state.model, cfg.ema_decay if state.step >= cfg.warmup else 0.0)
        state.step += 1
        now = time.perf_counter()
        state.seconds += now - t_last
        t_last = now
        run_loss += seen.item()
        run_n += 1
        bar.update(1)
        if state.step % 50 == 0 or state.step == cfg.steps:
            state.losses.append((state.step, run_loss / run_n))
            bar.set_postfix(loss=f"{run_loss / run_n:.4f}", lr=f"{lr:.1e}")
            run_loss, run_n = 0.0, 0
            if deadline is not None and state.step - first >= 100 and world.is_main:  # the loop's own rate
                deadline.check_rate(state.step, cfg.steps, (state.seconds - first_seconds) / (state.step - first))
        if state.step % cfg.checkpoint_every == 0 and world.is_main:
            save_state(state, model_cfg, cfg, ckpt_path, extra)
            t_last = time.perf_counter()  # checkpoint I/O is not training time
