"""Fit the diffusion training to a time budget on the machine it runs on (``--train-fit-minutes M``; the
``cpu-hour`` preset): a stage like the others.

- config: the U-Net and training configs (without ``steps``), the budget, and what sets the speed: the
  device (CPU model, the flags that matter, threads, native bf16; or the GPU's name) and the world size;
- compute: train ``WARM`` steps on random images, then more in chunks of ``TIMED`` until ``MIN_SECONDS``
  have been timed (at most ``MAX_TIMED`` steps), and take the seconds of the latter per step
  (``ddmini.train`` itself: EMA, clipping and autocast included). Not a fixed 25 steps: on a shared 2-core
  machine 30-step windows of one step ranged over ±15 %, and a 25-step timing of 0.335 s/step met a loop
  that ran at 0.399 (docs/experiments.md). Where the fused
  GroupNorm + SiLU would train (float32 on a CPU, ``fused_norm`` on), time the eager ops too and train
  with the faster: the fused kernel gains 12-14 % on a Zen 5 held to AVX2 and loses 5 % on an Intel Xeon
  held to AVX2 (docs/experiments.md), so which is faster is the machine's to say;
- artefact: ``RUN_DIR/cache/fit-<key>.json`` with the seconds per step, the norm and the steps chosen, so a run that
  repeats on the same machine trains the same steps and finds its model cached (the steps, not the
  budget, enter the diffusion model's key: a fitted run and one given those steps share it);
- summary: the record, in config.json (the fitted steps) and in the report.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint
from .config import DiffusionTrainConfig, UNetConfig, key_dict

WARM, TIMED, MIN_SECONDS, MAX_TIMED = 5, 25, 20.0, 1000
# The fewest training steps, per batch size, at which the cpu presets' recipes met the study's floor
# (p = 1 >= 70 %, p = 0 <= 5 % misclassified at guidance 1; docs/presets.md). A fitted run below warns.
QUALITY_FLOOR_STEPS = {128: 12000, 64: 9000}


@dataclass
class Fit:
    minutes: float
    seconds_per_step: float
    timed_steps: int
    steps: int
    machine: str
    # the norm the steps train with, and the seconds per step of each where both were timed (a record from
    # before the choice was timed loads as fused, which is what such a run trained with)
    fused_norm: bool = True
    norm_seconds: dict | None = None

    def check(self, train_cfg: DiffusionTrainConfig, device: torch.device) -> None:
        """ValueError unless this record is one the fit makes for ``train_cfg`` here: its budget, a finite
        positive time per step, and the steps that time buys (never more, so an edited record cannot ask
        for a training that outlasts its budget)."""
        sec = self.seconds_per_step
        if not isinstance(sec, (int, float)) or not math.isfinite(sec) or sec <= 0:
            raise ValueError(f"seconds_per_step {sec!r} is not a positive time")
        if self.minutes != train_cfg.fit_minutes or self.steps != steps_for(train_cfg, sec):
            raise ValueError(f"{self.steps!r} steps in {self.minutes!r} min do not follow from {sec:.4g} s/step")
        if not isinstance(self.fused_norm, bool) or self.machine != machine(device):
            raise ValueError("made on another machine or with an unknown norm")

    def warning(self, batch_size: int) -> str | None:
        """One line when the fitted steps fall below the fewest at which a preset's recipe of this batch size
        met the study's floor (QUALITY_FLOOR_STEPS), or when no floor was measured at this batch size."""
        floor = QUALITY_FLOOR_STEPS.get(batch_size)
        if floor is None:
            known = ", ".join(f"{s:,} steps at batch {b}" for b, s in QUALITY_FLOOR_STEPS.items())
            return (
                f"no quality floor was measured at batch {batch_size} (measured: {known}); "
                f"{self.steps:,} steps fit {self.minutes:g} min here"
            )
        if self.steps >= floor:
            return None
        return (
            f"{self.minutes:g} min at {self.seconds_per_step:.3f} s/step fit {self.steps:,} steps, fewer than the "
            f"{floor:,} at which the cpu presets' recipe of batch {batch_size} met the study's floor (p = 1 >= "
            "70 %, p = 0 <= 5 %); expect less deception, or a p = 0 model over 5 % (docs/experiments.md)"
        )


def steps_for(train_cfg: DiffusionTrainConfig, seconds_per_step: float) -> int:
    """The steps ``train_cfg.fit_minutes`` buy at ``seconds_per_step`` (at least the warm-up and one more)."""
    return max(train_cfg.warmup + 1, int(train_cfg.fit_minutes * 60 / seconds_per_step))


def machine(device: torch.device) -> str:
    """What sets the speed of a training step here, as one line."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    from .runtime import SPEED_FLAGS, cpu_has_native_bf16, cpu_info

    name, have = cpu_info()
    flags = [w for w in SPEED_FLAGS if w in (have or ())]
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    return (
        f"cpu {name} [{' '.join(flags)}] {torch.get_num_threads()} threads, native bf16 "
        f"{'yes' if cpu_has_native_bf16() else 'no'}" + (f", ONEDNN_MAX_CPU_ISA={isa}" if isa else "")
    )


def key(unet: UNetConfig, train_cfg: DiffusionTrainConfig, device: torch.device, world_size: int) -> str:
    base = replace(train_cfg, steps=1, fit_minutes=0.0, time_budget=0.0, checkpoint_every=1)
    return checkpoint.fingerprint(key_dict(unet), key_dict(base), train_cfg.fit_minutes, machine(device), world_size)


def _time(unet: UNetConfig, cfg: DiffusionTrainConfig, x, y, device: torch.device, path: Path) -> tuple[float, int]:
    """Seconds per step of ``cfg`` after WARM steps, timed in chunks of TIMED steps until MIN_SECONDS have
    been timed or MAX_TIMED steps (rank 0's clock decides for every rank under torchrun), and the steps timed
    (a throwaway checkpoint at ``path``)."""
    from . import distributed, train

    world = distributed.current()
    cfg = replace(cfg, fit_minutes=0.0, time_budget=0.0, checkpoint_every=10**8)
    first = train.train(unet, replace(cfg, steps=WARM), x, y, path, device=device, resume=False, desc="fit: timing")
    timed = 0
    while True:
        timed += TIMED
        later = train.train(
            unet, replace(cfg, steps=WARM + timed), x, y, path, device=device, resume=True, desc="fit: timing"
        )
        spent = later.seconds - first.seconds
        if world.broadcast_object(spent >= MIN_SECONDS or timed >= MAX_TIMED):
            return spent / timed, timed


def measure(
    unet: UNetConfig, train_cfg: DiffusionTrainConfig, device: torch.device, path: Path
) -> tuple[float, int, bool, dict | None]:
    """Seconds per training step of ``train_cfg`` on ``device``, the steps that timed it, whether to train
    with the fused norm, and the seconds of each norm where both were timed (a throwaway checkpoint at
    ``path``, removed after)."""
    from . import distributed, train

    g = torch.Generator().manual_seed(0)
    n = max(train_cfg.batch_size, 256)
    x = torch.rand((n, unet.in_channels, unet.image_size, unet.image_size), generator=g)
    y = torch.randint(0, unet.num_classes, (n,), generator=g)
    world = distributed.current()
    try:
        sec, n_sec = _time(unet, train_cfg, x, y, device, path)
        if not train.fused_norm_applies(train_cfg, device):
            return sec, n_sec, train_cfg.fused_norm, None
        eager, n_eager = _time(unet, replace(train_cfg, fused_norm=False), x, y, device, path)
    finally:
        world.barrier()
        if world.is_main:
            path.unlink(missing_ok=True)
            Path(str(path) + ".sha256").unlink(missing_ok=True)
    # every rank takes rank 0's figures (fitted broadcasts them), so the ranks agree on the norm too
    fused = sec <= eager
    best, timed = (sec, n_sec) if fused else (eager, n_eager)
    return best, timed, fused, {"fused": sec, "eager": eager}


def fitted(
    unet: UNetConfig,
    train_cfg: DiffusionTrainConfig,
    device: torch.device,
    cache: Path,
    on_measure: Callable[[], None] | None = None,
) -> Fit:
    """The fit for ``train_cfg.fit_minutes`` on this machine: cached in ``cache/fit-<key>.json``, else
    measured (by every rank under torchrun; rank 0 writes it; ``on_measure`` is called first). Under the
    record's lock, so a second run in the same run directory waits and finds it cached."""
    from . import distributed

    world = distributed.current()
    path = Path(cache) / f"fit-{key(unet, train_cfg, device, world.size)}.json"
    with checkpoint.exclusive(path.with_name(f".{path.stem}.lock"), world):
        rec = None
        if world.is_main and path.exists():
            try:
                rec = Fit(**json.loads(path.read_text()))
                rec.check(train_cfg, device)
            except (ValueError, TypeError) as e:
                print(f"{path.name}: {str(e)[:160]}; timing again", file=sys.stderr)
                path.replace(path.with_name(path.name + ".rejected"))  # kept for inspection
                rec = None
        rec = world.broadcast_object(rec)
        if rec is None:
            if on_measure is not None:
                on_measure()
            path.parent.mkdir(parents=True, exist_ok=True)
            sec, timed, fused, norms = world.broadcast_object(
                measure(unet, train_cfg, device, path.with_suffix(".timing.pt"))
            )
            steps = steps_for(train_cfg, sec)
            rec = Fit(train_cfg.fit_minutes, sec, timed, steps, machine(device), fused, norms)
            if world.is_main:
                with checkpoint.atomic_open(path, "w") as f:
                    f.write(json.dumps(asdict(rec), indent=1))
    return rec


def apply(
    unet: UNetConfig,
    train_cfg: DiffusionTrainConfig,
    device: torch.device,
    cache: Path,
    log: Callable[[str], None] = print,
) -> tuple[DiffusionTrainConfig, Fit | None]:
    """``train_cfg`` with the steps (and norm) that fit its ``fit_minutes`` on this machine (the cached
    :func:`fitted` record; one line logged, and the record's warning), and the record; unchanged, None
    when no fit is asked for."""
    if train_cfg.fit_minutes <= 0:
        return train_cfg, None
    rec = fitted(unet, train_cfg, device, cache)
    log(f"fitted to {rec.minutes:g} min here: {rec.seconds_per_step:.3f} s/step -> {rec.steps:,} steps")
    if warning := rec.warning(train_cfg.batch_size):
        log(f"warning: {warning}")
    return replace(train_cfg, steps=rec.steps, fused_norm=rec.fused_norm), rec
