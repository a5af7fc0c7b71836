"""Named presets of the whole experiment, and the rule that picks one when none is given.

``preset(name)`` returns a fresh :class:`~ddmini.config.RunConfig`; ``run_config`` adds the dataset's own
settings, the seed and the user's overrides; ``choose_preset`` is the default-choice rule. Why each preset
has the values it has, and the measurements behind them, is in docs/presets.md; its table is
:func:`markdown_table` (a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch

from .config import (
    UNET_PRESETS,
    AttackConfig,
    ClassifierConfig,
    DiffusionTrainConfig,
    HardenConfig,
    RunConfig,
    UNetConfig,
    apply_overrides,
    knobs,
    run_sample_config,
)

__all__ = ["PRESETS", "UNET_PRESETS", "preset", "choose_preset", "run_config", "harden_config", "markdown_table"]

PRESETS = ("smoke", "cpu", "cpu-hour", "paper", "paper-short", "cifar10")
DESCRIPTIONS = {
    "smoke": "seconds: tests and trying the commands",
    "cpu": "2 cores with native bf16: the 12,000-step recipe",
    "cpu-hour": "2 cores without native bf16: half the batch, the lean U-Net, steps fitted so the run ends in 58 min "
    "here, stochastic DDIM",
    "paper": "a GPU: the paper's model size and 40,000 steps",
    "paper-short": "a GPU lease of minutes: the paper's model, 4,500 steps in 5.5 min",
    "cifar10": "a GPU, CIFAR-10 (unmeasured)",
}
# PGD-L2's radius per dataset where it differs from MNIST's 1.6: chosen so that 85-90 % of the training
# images are attacked (Fashion-MNIST 0.75 -> 89.7 %); CIFAR-10: RobustBench's L2 radius, not calibrated.
DATASET_PGD_EPS = {"fashion-mnist": 0.75, "cifar10": 0.5}
# AutoAttack's radius per dataset and norm (`ddmini robust`): the literature's (MNIST: Madry et al.'s L-inf 0.3, and
# L2 1.5; Fashion-MNIST: L-inf 0.1; CIFAR-10: RobustBench's 8/255 and 0.5).
ROBUST_EPS = {
    ("mnist", "linf"): 0.3,
    ("mnist", "l2"): 1.5,
    ("fashion-mnist", "linf"): 0.1,
    ("fashion-mnist", "l2"): 1.5,
    ("cifar10", "linf"): 8 / 255,
    ("cifar10", "l2"): 0.5,
}
# The classifier a dataset trains where it is not the MNIST CNN (CIFAR-10 wants a residual network).
DATASET_CLASSIFIER_ARCH = {"cifar10": "resnet"}
# ``ddmini harden --preset smoke`` (seconds, for the tests: AutoAttack reduced to 5 iterations, 50 queries, and
# marked so); every other preset uses HardenConfig().
HARDEN_SMOKE = HardenConfig(
    pool=40, heldout=20, eval_limit=30, eval_eps=(1.6,), eval_steps=3, eval_restarts=2, autoattack_limit=10,
    autoattack_steps=5, autoattack_queries=50,
)  # fmt: skip


def preset(name: str) -> RunConfig:
    """A fresh RunConfig of preset ``name`` (one of PRESETS; docs/presets.md says why each value)."""
    if name == "smoke":
        return RunConfig(
            data_limit=600,
            test_limit=300,
            num_samples=40,
            guidance_scales=(1.0, 3.0),
            classifier=ClassifierConfig(width=8, feature_dim=32, epochs=3, batch_size=32),
            attack=AttackConfig(steps=2, chunk_size=256),
            unet=replace(UNET_PRESETS["tiny"]),
            train=DiffusionTrainConfig(steps=6, batch_size=16, warmup=2, checkpoint_every=3, T=100),
            sample=run_sample_config(steps=4, batch_size=64),
        )
    if name == "cpu":
        # Half of each batch at t < 100 and a cosine decay widened the p = 1 - p = 0 gap (docs/presets.md).
        return RunConfig(
            only_successful=True,
            unet=replace(UNET_PRESETS["small"]),
            train=DiffusionTrainConfig(low_t_share=0.5, lr_schedule="cosine"),
            sample=run_sample_config(steps=50),
        )
    if name == "paper":
        return RunConfig(
            only_successful=True,
            num_samples=10000,
            unet=replace(UNET_PRESETS["paper"]),
            train=DiffusionTrainConfig(steps=40000, lr=2e-4, warmup=1000, ema_decay=0.9999),
            sample=run_sample_config(steps=100, batch_size=500),
        )
    if name == "paper-short":
        # EMA 0.999: 0.9999 averages over ~10,000 steps, more than a short lease trains.
        p = preset("paper")
        p.num_samples = 1000
        p.attack.batch_size = 2048
        p.train = DiffusionTrainConfig(
            steps=4500,
            time_budget=5.5,
            batch_size=256,
            lr=5e-4,
            warmup=500,
            ema_decay=0.999,
            lr_schedule="cosine",
            checkpoint_every=2000,
        )
        p.sample = run_sample_config(steps=50, batch_size=1000)
        return p
    if name == "cpu-hour":
        # Half the batch halves a step's cost; eta 1 took a 9,000-step p = 0 model from 12.4 % to 4.8 %. The lean
        # U-Net's decoder top costs a quarter less per step, and the guidance scales besides the headline get a
        # quarter of its samples: the training steps an AVX2 CPU's hour buys (docs/presets.md).
        p = preset("cpu")
        p.unet = replace(UNET_PRESETS["lean"])
        p.train = replace(p.train, batch_size=64, fit_minutes=48.0)  # what `ddmini train-diffusion` fits
        p.run_minutes = 58.0  # a run fits the whole run instead: two minutes left for what the estimates miss
        p.other_samples = 250
        p.sample = replace(p.sample, eta=1.0)
        return p
    if name == "cifar10":
        # The DDPM CIFAR-10 U-Net's shape (Ho et al. 2020); GPU-sized and unmeasured.
        return RunConfig(
            dataset="cifar10",
            only_successful=True,
            num_samples=10000,
            classifier=ClassifierConfig(arch="resnet", width=32, epochs=30, batch_size=256, lr=2e-3, weight_decay=5e-4),
            attack=AttackConfig(eps=DATASET_PGD_EPS["cifar10"], batch_size=1024),
            unet=UNetConfig(
                base_channels=128, channel_mult=(1, 2, 2), num_res_blocks=2, attention=True, groups=32, dropout=0.1
            ),
            train=DiffusionTrainConfig(steps=100000, lr=2e-4, warmup=5000, ema_decay=0.9999, checkpoint_every=2000),
            sample=run_sample_config(steps=100, batch_size=500),
        )
    raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")


def unet_config(name: str, like: UNetConfig) -> UNetConfig:
    """U-Net preset ``name`` (UNET_PRESETS) with the fields the data decide taken from ``like``."""
    derived = {k: getattr(like, k) for k in ("in_channels", "image_size", "num_classes")}
    return replace(UNET_PRESETS[name], **derived)


def harden_config(name: str | None) -> HardenConfig:
    """``ddmini harden``'s settings under preset ``name``: seconds-sized for smoke, the defaults otherwise."""
    return replace(HARDEN_SMOKE) if name == "smoke" else HardenConfig()


class Choice(NamedTuple):
    """The preset a command uses and why it was the default ("" when it was given)."""

    name: str
    why: str


def choose_preset(device: torch.device, dataset: str = "mnist", run_dir=None) -> Choice:
    """The default-choice rule. On a GPU: paper (cifar10 for CIFAR-10). On a CPU without native bf16:
    cpu-hour. Where bf16 is native, with ``run_dir`` and outside torchrun: the cpu preset when its 12,000
    steps, timed here by the fit stage (cached in RUN_DIR/cache), fit cpu-hour's training budget, else
    cpu-hour. Without ``run_dir`` (every command but run and sweep) or under torchrun: cpu."""
    from . import distributed, fit
    from .checkpoint import writable_dir
    from .runtime import cpu_has_native_bf16

    if device.type == "cuda":
        return Choice("cifar10" if dataset == "cifar10" else "paper", "")
    if not cpu_has_native_bf16():
        return Choice("cpu-hour", "the default on a CPU without native bf16; --preset cpu for the 12,000-step recipe")
    if run_dir is None or distributed.launched():
        return Choice("cpu", "")
    cpu = preset("cpu")
    cpu.dataset = dataset
    cpu.validate()  # the U-Net's shape from the dataset
    budget = preset("cpu-hour").train.fit_minutes
    rec = fit.fitted(
        cpu.unet,
        replace(cpu.train, fit_minutes=budget),
        device,
        writable_dir(run_dir) / "cache",
        on_measure=lambda: print("default preset: timing the cpu preset's training step here (once per run dir)"),
    )
    minutes = cpu.train.steps * rec.seconds_per_step / 60
    said = (
        f"the cpu preset's {cpu.train.steps:,} steps take ≈ {minutes:.0f} min here at {rec.seconds_per_step:.3f} s/step"
    )
    if rec.steps >= cpu.train.steps:
        return Choice("cpu", f"the default here: {said}, within {budget:g}")
    return Choice("cpu-hour", f"the default here: {said}, more than {budget:g}; --preset cpu for them")


def default_preset(device: torch.device, dataset: str = "mnist", run_dir=None) -> str:
    """The name :func:`choose_preset` picks."""
    return choose_preset(device, dataset, run_dir).name


class Chosen(NamedTuple):
    """A run's config, its preset's name and why that preset was the default ("" when given)."""

    config: RunConfig
    name: str
    why: str


def for_dataset(name: str, dataset: str) -> RunConfig:
    """Preset ``name`` made for ``dataset``: its PGD-L2 radius and classifier architecture."""
    if name == "cifar10" and dataset != "cifar10":
        raise ValueError(f"--preset cifar10 is made for --dataset cifar10; got --dataset {dataset}")
    cfg = preset(name)
    cfg.dataset = dataset
    if cfg.attack.attack == "pgd_l2" and dataset in DATASET_PGD_EPS:
        cfg.attack.eps = DATASET_PGD_EPS[dataset]
    cfg.classifier.arch = DATASET_CLASSIFIER_ARCH.get(dataset, cfg.classifier.arch)
    return cfg


def run_config(
    name: str | None = None,
    *,
    poison: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dataset: str = "mnist",
    run_dir: str | Path | None = None,
    overrides: dict | None = None,
    data_dir: str | Path | None = None,
) -> Chosen:
    """The config of a run: preset ``name`` (or the default, :func:`choose_preset`) for ``dataset``, with
    ``seed``, ``poison`` and ``overrides`` (dotted names: ``{"train.steps": 9000}``; see
    :func:`ddmini.config.apply_overrides`) applied, validated."""
    why = ""
    if dataset == "folder":  # the folder's classes and image shape decide the models' (ddmini.folder)
        from . import data

        given = overrides or {}
        data.register_folder(data_dir, given.get("channels") or 0, given.get("image_size") or 0)
    if not name:
        name, why = choose_preset(torch.device(device), dataset, run_dir)
    cfg = for_dataset(name, dataset).with_seed(seed)
    if poison is not None:
        cfg.poison = poison
    return Chosen(apply_overrides(cfg, overrides or {}), name, why)


def markdown_table() -> str:
    """The presets side by side (the knobs that differ between them), as docs/presets.md shows them."""
    cfgs = {n: preset(n) for n in PRESETS}
    rows = [("what it is for", {n: DESCRIPTIONS[n] for n in PRESETS})]
    top = ["only_successful", "data_limit", "test_limit", "num_samples", "other_samples", "dataset", "run_minutes"]
    for name in top:
        rows.append((name, {n: getattr(c, name) for n, c in cfgs.items()}))
    for section in RunConfig.SECTIONS:
        for knob_name in (f.name for f in knobs(type(getattr(RunConfig(), section)))):
            vals = {n: getattr(getattr(c, section), knob_name) for n, c in cfgs.items()}
            if len({repr(v) for v in vals.values()}) > 1:
                rows.append((f"{section}.{knob_name}", vals))

    def cell(v) -> str:
        return ",".join(f"{x:g}" for x in v) if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v)

    out = ["| | " + " | ".join(PRESETS) + " |", "|---" * (len(PRESETS) + 1) + "|"]
    out += [f"| {label} | " + " | ".join(cell(vals[n]) for n in PRESETS) + " |" for label, vals in rows]
    return "\n".join(out)


if __name__ == "__main__":  # python -m ddmini.presets: the table docs/presets.md shows
    print(markdown_table())
