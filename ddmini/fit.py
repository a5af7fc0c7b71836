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

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from . import checkpoint, distributed
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
    return _chunks(unet, cfg, x, y, device, path, MIN_SECONDS)


def _chunks(unet, cfg, x, y, device, path, min_seconds: float) -> tuple[float, int]:
    """:func:`_time` until ``min_seconds`` (0: one chunk)."""
    from . import train

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
        if world.broadcast_object(spent >= min_seconds or timed >= MAX_TIMED):
            return spent / timed, timed


def _remove_checkpoint(path: Path) -> None:
    """A throwaway timing checkpoint and its digest."""
    path.unlink(missing_ok=True)
    Path(str(path) + ".sha256").unlink(missing_ok=True)


def measure(
    unet: UNetConfig, train_cfg: DiffusionTrainConfig, device: torch.device, path: Path
) -> tuple[float, int, bool, dict | None]:
    """Seconds per training step of ``train_cfg`` on ``device``, the steps that timed it, whether to train
    with the fused norm, and the seconds of each norm where both were timed (a throwaway checkpoint at
    ``path``, removed after)."""
    from . import train

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
            _remove_checkpoint(path)
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

    path = Path(cache) / f"fit-{key(unet, train_cfg, device, distributed.current().size)}.json"

    def read(d: dict) -> Fit:
        rec = Fit(**d)
        rec.check(train_cfg, device)
        return rec

    def make() -> Fit:
        if on_measure is not None:
            on_measure()
        sec, timed, fused, norms = measure(unet, train_cfg, device, path.with_suffix(".timing.pt"))
        return Fit(train_cfg.fit_minutes, sec, timed, steps_for(train_cfg, sec), machine(device), fused, norms)

    return checkpoint.record(
        path, read, make, lambda m: print(m, file=sys.stderr), "timing again", distributed.current()
    )


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


# ---- the whole run: what each stage costs here, and what a budget leaves for training ---------------------
#
# ``--run-minutes M`` (cpu-hour: 58) fits the training so the whole run ends within M minutes: each other stage's
# unit of work (a classifier batch, an attacked image, a sampled image-step, an evaluated image) is timed
# briefly on this machine (:func:`rates`, cached per machine and config), the run's work is counted, and
# training gets the rest. The budget is decided once per run directory (:func:`budget`), so the runs of a
# sweep train the same steps and a repeated run finds its model cached.

#: A unit's timing: this many classifier batches, attack images (at most a batch) and sampled image-steps.
RATE_BATCHES, RATE_SAMPLE_STEPS, RATE_PREDICT = 12, 2, 1000
#: The share of a run's budget kept back for what the estimates do not count (start-up, the report, pictures).
BUDGET_SLACK = 0.03
#: Sustained work ran slower than the brief timings of it at the start of a run, on every machine measured: the
#: training loop 1.19x its fit on an Intel Xeon held to AVX2, 1.32x on a Zen 4, 1.17x and 1.12x (the small and
#: the lean U-Net) on the Zen 3 here, whose classifier, attack and sampling took 1.29x, 1.47x and 1.29x, then
#: 1.04x, 1.37x and 1.11x their brief timings (docs/results.md, "The run's plan"). A fresh model on the same
#: images ran 0.381 s/step at the start of a run and 0.465 right after it: the machine slowed, not the loop (no
#: denormals, the images made no difference). The other stages' estimates are scaled by SUSTAINED, training's by
#: SUSTAINED_TRAIN (where the loop runs slower still, the run's deadline stops it: ddmini.train.Deadline).
SUSTAINED, SUSTAINED_TRAIN = 1.25, 1.17


@dataclass
class Rates:
    """Seconds per unit of each stage's work on this machine: a classifier training batch, an attacked image,
    a sampled image-step without and with guidance (two passes of the U-Net), an image through the classifier
    with its features (evaluation), and a diffusion training step (timed briefly where no fit times it)."""

    machine: str
    classifier_batch: float
    attack_image: float
    sample_step: float
    guided_step: float
    predict_image: float
    train_step: float

    def check(self, device: torch.device) -> None:
        for name, v in asdict(self).items():
            if name != "machine" and (not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
                raise ValueError(f"{name} {v!r} is not a positive time")
        if self.machine != machine(device):
            raise ValueError("made on another machine")


def rates_key(cfg, device: torch.device, world_size: int) -> str:
    """The rates' key: what sets them (the stages' configs but not their sizes, the image shape, the machine)."""
    base = replace(cfg.train, steps=1, fit_minutes=0.0, time_budget=0.0, checkpoint_every=1)
    sample = replace(cfg.sample, steps=1, guidance=1.0, seed=0)
    return checkpoint.fingerprint(
        key_dict(cfg.classifier), key_dict(cfg.attack), key_dict(cfg.unet), key_dict(base), key_dict(sample),
        machine(device), world_size,
    )  # fmt: skip


def _clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_rates(cfg, device: torch.device, path: Path) -> Rates:
    """Time a slice of each stage's work here on random images of the run's shape with untrained models (the
    cost of a batch does not depend on the weights): :class:`Rates` (a throwaway checkpoint at ``path``)."""
    from . import classifier, distributed, samples
    from .attacks.stage import run_attack
    from .diffusion import balanced_labels
    from .runtime import quiet
    from .unet import UNet

    u = cfg.unet
    k, shape = u.num_classes, (u.in_channels, u.image_size, u.image_size)
    g = torch.Generator().manual_seed(0)
    c = cfg.classifier
    n = c.batch_size * RATE_BATCHES
    x, y = torch.rand((n, *shape), generator=g), torch.randint(0, k, (n,), generator=g)
    with quiet():  # no progress bars while a slice of each stage is timed
        # the classifier: one epoch of RATE_BATCHES batches (its first batch's set-up included: a slight over-count)
        res = classifier.train(replace(c, epochs=1), x, y, device=device, num_classes=k)
        per_batch = res.train_seconds / RATE_BATCHES
        model = res.model.eval()
        m = min(n, cfg.attack.batch_size)
        per_image = _clock(lambda: run_attack(classifier.fast_copy(model, device), x[:m].to(device), y[:m].to(device),
                                              cfg.attack)) / m  # fmt: skip
        p = min(n, RATE_PREDICT)
        per_predict = _clock(lambda: classifier.predict(model, x[:p], features=True)) / p
        unet = UNet(u).to(device).eval()
        b = min(cfg.sample.batch_size, cfg.num_samples)
        labels = balanced_labels(b, k)
        step = {}
        for name, w in (("sample", 1.0), ("guided", 2.0)):
            s = replace(cfg.sample, sampler="ddim", steps=RATE_SAMPLE_STEPS, guidance=w, seed=0)
            samples.generate(unet, cfg.train, labels[:1], replace(s, steps=1), device=device)  # warm
            step[name] = samples.generate(unet, cfg.train, labels, s, device=device)[1] / (b * RATE_SAMPLE_STEPS)
        train_cfg = replace(cfg.train, fit_minutes=0.0, time_budget=0.0, checkpoint_every=10**8)
        tx = torch.rand((max(train_cfg.batch_size, 256), *shape), generator=g)
        ty = torch.randint(0, k, (tx.shape[0],), generator=g)
        try:
            sec, _ = _chunks(u, train_cfg, tx, ty, device, path, 0.0)  # one chunk: the fit, where asked, times longer
        finally:
            distributed.current().barrier()
            if distributed.current().is_main:
                _remove_checkpoint(path)
    return Rates(machine(device), per_batch, per_image, step["sample"], step["guided"], per_predict, sec)


def rates(cfg, device: torch.device, cache: Path, log: Callable[[str], None] = print) -> Rates:
    """:func:`measure_rates`, cached in ``cache/rates-<key>.json`` (an edited or foreign record is timed again)."""

    path = Path(cache) / f"rates-{rates_key(cfg, device, distributed.current().size)}.json"

    def read(d: dict) -> Rates:
        rec = Rates(**d)
        rec.check(device)
        return rec

    def make() -> Rates:
        log("timing a slice of each stage here (once per run dir and machine)")
        return measure_rates(cfg, device, path.with_suffix(".timing.pt"))

    return checkpoint.record(path, read, make, log, "timing again", distributed.current())


@dataclass
class Work:
    """What a run has left to compute: training images and test images, the classifier's epochs unless cached,
    the images to attack, the training steps left, and the image-steps to sample (unguided, guided)."""

    classifier_batches: int
    attack_images: int
    train_steps: int
    sample_steps: int
    guided_steps: int
    predict_images: int


def work(cfg, n_train: int, n_test: int, cached: dict, steps_done: int = 0) -> Work:
    """The run's work: ``cached`` says which stages are found cached (classifier, attack, diffusion, and
    samples_w<g> per guidance scale); ``steps_done`` the training steps a checkpoint holds already."""
    from .config import REFERENCE_IMAGES

    c, s = cfg.classifier, cfg.sample
    per_image = s.steps if s.sampler == "ddim" else cfg.train.T
    scales = [g for g in cfg.guidance_scales if not cached.get(f"samples_w{g:g}")]
    ref = min(cfg.test_limit or REFERENCE_IMAGES, n_train)
    return Work(
        0 if cached.get("classifier") else c.epochs * math.ceil(n_train / c.batch_size),
        0 if cached.get("attack") else n_train,
        0 if cached.get("diffusion") else max(cfg.train.steps - steps_done, 0),
        per_image * sum(cfg.samples_at(g) for g in scales if g == 1.0),
        per_image * sum(cfg.samples_at(g) for g in scales if g != 1.0),
        n_test + 2 * ref + sum(cfg.samples_at(g) for g in cfg.guidance_scales),
    )


def expected(w: Work, r: Rates, seconds_per_step: float | None = None) -> dict:
    """Each stage's expected seconds for the work ``w`` at the rates ``r`` (the fit's time per step where given),
    sustained (SUSTAINED_TRAIN times the brief timing for training, SUSTAINED for the others)."""
    brief = {
        "classifier": w.classifier_batches * r.classifier_batch,
        "attack": w.attack_images * r.attack_image,
        "training": w.train_steps * (seconds_per_step or r.train_step),
        "sampling": w.sample_steps * r.sample_step + w.guided_steps * r.guided_step,
        "evaluation": w.predict_images * r.predict_image,
    }
    return {stage: (SUSTAINED_TRAIN if stage == "training" else SUSTAINED) * v for stage, v in brief.items()}


def budget(minutes: float, others: float, spent: float, key: str, cache: Path) -> float:
    """The training minutes, as the fit times them, of a run of ``minutes`` in all: what is left after the other
    stages' expected ``others`` seconds, the ``spent`` seconds so far and BUDGET_SLACK, over SUSTAINED_TRAIN (the fit's
    brief timing buys steps that take that much longer), to 0.1 min below (at least 0.1). Decided
    once per run directory for ``key`` (``cache/budget-<key>.json``), so every run there trains the same
    steps (a sweep's runs, a repeated run)."""
    path = Path(cache) / f"budget-{checkpoint.fingerprint(key, minutes)}.json"

    def read(d: dict) -> dict:
        got = d["train_minutes"]
        if not isinstance(got, (int, float)) or not 0 < got <= minutes:
            raise ValueError(f"train_minutes {got!r} is not within the run's {minutes:g}")
        return d

    def make() -> dict:
        left = minutes * (1 - BUDGET_SLACK) - (others + spent) / 60
        got = max(0.1, math.floor(left / SUSTAINED_TRAIN * 10) / 10)
        return {"minutes": minutes, "train_minutes": got, "others_seconds": others}

    got = checkpoint.record(
        path, read, make, lambda m: print(m, file=sys.stderr), "deciding again", distributed.current()
    )
    return float(got["train_minutes"])


def estimate_line(seconds: dict, start: float, minutes: float = 0.0) -> str:
    """One line: each stage's expected minutes, the total, and the expected finish (wall clock) from
    ``start`` (a time.time()); with the run's budget ``minutes`` when there is one."""
    total = sum(seconds.values())
    parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items())
    finish = time.strftime("%H:%M", time.localtime(start + total))
    return f"expected minutes: {parts}; {total / 60:.1f} in all, done ≈ {finish}" + (
        f" (budget {minutes:g} min)" if minutes else ""
    )
