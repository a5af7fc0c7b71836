"""One dataclass per concern. Each knob is declared once, with :func:`knob`: its default, help text, and
the bounds or choices it must meet. The CLI's options (ddmini.options), the validation (:func:`check_fields`)
and the presets table in docs/presets.md (ddmini.presets.markdown_table) are generated from these
declarations, so adding a knob is one line plus the code that uses it.

This module imports nothing of ddmini's, so every module can import it.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import NamedTuple

# The names of each choice, here once: the config checks, the CLI's choices, schedule.py and
# diffusion.py use these tuples. ddmini.attacks.ATTACKS maps the attack names to functions (a test keeps
# the two equal).
SCHEDULES = ("linear", "cosine")  # noise schedules (ddmini.schedule)
LOSS_WEIGHTINGS = ("mse", "min_snr")  # diffusion training loss (ddmini.diffusion)
SAMPLERS = ("ddim", "ddpm")  # ddmini.diffusion.Diffusion.sample
LR_SCHEDULES = ("constant", "cosine")  # ddmini.train.learning_rate
UPSAMPLES = ("nearest", "shuffle")  # how the U-Net's decoder goes up a level (ddmini.unet)
ATTACK_NAMES = ("pgd_l2", "pgd_linf", "fgsm", "cw_l2")
# What the gradient attacks ascend (ddmini.attacks.base.OBJECTIVES) and the targeted modes besides a class index.
ATTACK_OBJECTIVES = ("ce", "margin", "scaled")
TARGET_MODES = ("shift", "random")
CLASSIFIER_ARCHS = ("cnn", "mlp", "resnet")  # ddmini.classifier.build
# The datasets (ddmini.data.DATASETS holds their files and readers; a test keeps the two equal): image
# shape (C, H, W) and number of classes, which decide the U-Net's in_channels, image_size and classes.
DATASET_SHAPES = {"mnist": ((1, 28, 28), 10), "fashion-mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10)}
SEED_MAX = 2**63 - 1
# At most this many images of a reference set (attacked training images for the CAFD and the margin
# table) go into a run's evaluation: enough for stable per-class statistics, and it bounds the time.
REFERENCE_IMAGES = 10000
# Classifier-free guidance beyond this extrapolates so far from the model that samples are noise (and
# at 1e30 overflow to NaN).
GUIDANCE_MAX = 100.0


class Range(NamedTuple):
    """Allowed values of a numeric config field: lo <= v <= hi (lo < v where lo_open, v < hi where hi_open)."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v) -> bool:
        return (v > self.lo if self.lo_open else v >= self.lo) and (v < self.hi if self.hi_open else v <= self.hi)

    def text(self) -> str:
        def num(x):
            return str(x) if isinstance(x, int) else f"{x:g}"

        return f"{'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"


SEED = Range(0, SEED_MAX)
SIZE = Range(1, 2**20)  # batch sizes, channel counts and the like
PROB = Range(0, 1, hi_open=True)


def knob(
    default,
    help: str,
    *,
    bounds: Range | None = None,
    choices: tuple | None = None,
    key_neutral=False,
    derived=False,
    off_flag: str | None = None,
):
    """A config field declared once: its default, its help text and what it must meet (numeric ``bounds``
    or named ``choices``). ``key_neutral``: added after artefacts were cached, left out of cache keys at its
    default (:func:`key_dict`); ``derived``: decided by the data, never an option; ``off_flag``: the name of
    a boolean's off switch where it is not ``--no-<flag>``."""
    meta = {
        "help": help,
        "bounds": bounds,
        "choices": choices,
        "key_neutral": key_neutral,
        "derived": derived,
        "off_flag": off_flag,
    }
    return field(default=default, metadata=meta)


def knobs(cls) -> list:
    """The fields of config class ``cls`` that are knobs (not nested configs, not derived)."""
    return [f for f in fields(cls) if "help" in f.metadata and not f.metadata["derived"]]


def default_of(f):
    """The default value of dataclass field ``f``."""
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def _check_value(name: str, x, kind, r: Range | None) -> None:
    if kind is bool:
        if not isinstance(x, bool):
            raise ValueError(f"{name} must be true or false; got {x!r}")
        return
    if kind is int:
        if isinstance(x, bool) or not (isinstance(x, int) or (isinstance(x, float) and x.is_integer())):
            raise ValueError(f"{name} must be an integer; got {x!r}")
    elif kind is float:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ValueError(f"{name} must be a finite number; got {x!r}")
    else:
        return
    if r is not None and x not in r:
        raise ValueError(f"{name} must be in {r.text()}; got {x!r}")


def check_fields(cfg, section: str) -> None:
    """Type, finiteness, range and choice of every field of a config dataclass, from its declaration
    (:func:`knob`; tuples are checked element by element): one ValueError line naming the field. Every
    config's ``validate`` starts here, so every command inherits the same checks."""
    for f in fields(cfg):
        v, d = getattr(cfg, f.name), default_of(f)
        if hasattr(d, "__dataclass_fields__"):
            continue
        name = f"{section} {f.name}"
        if isinstance(d, tuple) and isinstance(v, list):
            v = tuple(v)
            setattr(cfg, f.name, v)
        if isinstance(d, tuple) and (not isinstance(v, tuple) or not v):
            raise ValueError(f"{name} must be a non-empty list; got {v!r}")
        if d is None and v is None:
            continue
        choices = f.metadata.get("choices")
        if choices is not None:
            if v not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}; got {v!r}")
            continue
        kind = type(d[0]) if isinstance(d, tuple) else (float if d is None else type(d))
        for x in v if isinstance(d, tuple) else (v,):
            _check_value(name, x, kind, f.metadata.get("bounds"))
        if kind is int:  # 3.0 -> 3 (never 1.5 -> 1: refused above)
            setattr(cfg, f.name, tuple(int(x) for x in v) if isinstance(d, tuple) else int(v))


def parse_list(text, name: str, kind: type = float) -> tuple:
    """Comma-separated numbers of ``kind`` (``--eps 1.0,1.5``, ``--labels 3,5``): one clear line for anything else."""
    try:
        values = tuple(kind(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        what = "a number or a comma-separated list of numbers" if kind is float else "comma-separated integers"
        raise ValueError(f"{name} must be {what}; got {text!r}") from None
    if not values:
        raise ValueError(f"{name}: no values given")
    return values


def parse_floats(text, name: str) -> tuple[float, ...]:
    return parse_list(text, name, float)


def parse_ints(text, name: str) -> tuple[int, ...]:
    return parse_list(text, name, int)


@dataclass
class ClassifierConfig:
    """The target classifier (a small CNN) and how it is trained."""

    width: int = knob(16, "Channels of the first conv block (the second has twice as many).", bounds=Range(1, 1024))
    feature_dim: int = knob(
        128, "Width of the penultimate features (the Fréchet metrics use them).", bounds=Range(1, 8192)
    )
    epochs: int = knob(3, "Training epochs.", bounds=Range(1, 10000))
    batch_size: int = knob(128, "Images per step.", bounds=SIZE)
    lr: float = knob(3e-3, "Peak learning rate of the one-cycle schedule (AdamW).", bounds=Range(0, 10, lo_open=True))
    weight_decay: float = knob(1e-4, "AdamW weight decay.", bounds=Range(0, 10))
    seed: int = knob(0, "Random seed.", bounds=SEED)
    # Added after runs were cached (key-neutral at their defaults): the architecture, and PGD-L2
    # adversarial training (Madry et al. 1706.06083).
    arch: str = knob(
        "cnn",
        "Architecture: cnn (the target), mlp, resnet (a small residual CNN).",
        choices=CLASSIFIER_ARCHS,
        key_neutral=True,
    )
    adv_eps: float = knob(
        0.0, "PGD-L2 adversarial training radius (0: clean training).", bounds=Range(0, 1000), key_neutral=True
    )
    adv_steps: int = knob(7, "PGD steps per batch of adversarial training.", bounds=Range(1, 1000), key_neutral=True)

    def validate(self) -> ClassifierConfig:
        check_fields(self, "classifier")
        return self


@dataclass
class UNetConfig:
    """The class-conditional U-Net (ddmini.unet). Levels = len(channel_mult); the image side must be
    divisible by 2 ** (levels - 1) (28 -> 14 -> 7 with three levels)."""

    base_channels: int = knob(32, "Channels at full resolution.", bounds=Range(1, 1024))
    channel_mult: tuple[int, ...] = knob(
        (1, 2, 2), "Channel multiplier per level, e.g. 1,2,4 (levels 28, 14, 7).", bounds=Range(1, 64)
    )
    num_res_blocks: int = knob(1, "Residual blocks per level.", bounds=Range(1, 16))
    attention: bool = knob(False, "Self-attention at the lowest resolution.")
    num_heads: int = knob(4, "Attention heads.", bounds=Range(1, 64))
    groups: int = knob(8, "GroupNorm groups (capped at the channel count).", bounds=Range(1, 1024))
    dropout: float = knob(0.0, "Dropout in the residual blocks.", bounds=PROB)
    # Added after models were cached (key-neutral at their defaults): a cheaper decoder top (the cpu-hour floor).
    upsample: str = knob(
        "nearest",
        "How the decoder goes up a level: nearest (nearest neighbour, then a 3x3 conv at the higher resolution), or "
        "shuffle (a 3x3 conv at the lower resolution to 4x the next level's channels, then a pixel shuffle).",
        choices=UPSAMPLES,
        key_neutral=True,
    )
    top_blocks: int = knob(
        0,
        "Decoder blocks at full resolution (0: num_res_blocks + 1, as at every other level).",
        bounds=Range(0, 16),
        key_neutral=True,
    )
    # Decided by the data (channels, image side) and the classes (plus one null class for guidance).
    num_classes: int = knob(10, "Classes.", bounds=Range(1, 100000), derived=True)
    in_channels: int = knob(1, "Image channels.", bounds=Range(1, 64), derived=True)
    image_size: int = knob(28, "Image side.", bounds=Range(1, 4096), derived=True)

    def validate(self) -> UNetConfig:
        check_fields(self, "unet")
        f = 2 ** (len(self.channel_mult) - 1)
        if self.top_blocks > self.num_res_blocks + 1:
            raise ValueError(
                f"unet top_blocks must be at most num_res_blocks + 1 = {self.num_res_blocks + 1}; got {self.top_blocks}"
            )
        if self.image_size < f or self.image_size % f:
            raise ValueError(
                f"unet with {len(self.channel_mult)} levels needs an image size divisible by {f}; got {self.image_size}"
            )
        return self


UNET_PRESETS = {
    # ~0.7 M parameters, the CPU model: few channels at 28x28, most parameters at 7x7, attention there.
    "small": UNetConfig(base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, attention=True),
    # small with a cheaper decoder: pixel-shuffle upsampling and one block at 28x28 (the cpu-hour floor on AVX2).
    "lean": UNetConfig(
        base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, attention=True, upsample="shuffle", top_blocks=1
    ),
    # Tens of millions of parameters, comparable to the diffusers UNet2DModel used for MNIST.
    "paper": UNetConfig(
        base_channels=64, channel_mult=(1, 2, 4), num_res_blocks=2, attention=True, groups=32, dropout=0.1
    ),
    # For tests and smoke runs.
    "tiny": UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, groups=4),
}


@dataclass
class DiffusionTrainConfig:
    """How the diffusion model is trained (ddmini.train)."""

    steps: int = knob(12000, "Optimiser steps.", bounds=Range(1, 10**8))
    time_budget: float = knob(0.0, "Stop after this many minutes of training (0: no limit).", bounds=Range(0, 10**6))
    batch_size: int = knob(128, "Images per step.", bounds=SIZE)
    lr: float = knob(2e-3, "Peak learning rate (AdamW).", bounds=Range(0, 1, lo_open=True))
    warmup: int = knob(200, "Linear learning-rate warm-up steps.", bounds=Range(0, 10**8))
    # With a time budget that stops early, the cosine is still where the schedule over `steps` puts it.
    lr_schedule: str = knob(
        "constant",
        "After the warm-up: constant, or a cosine down to 0 at the last step.",
        choices=LR_SCHEDULES,
        key_neutral=True,
    )
    weight_decay: float = knob(0.0, "AdamW weight decay.", bounds=Range(0, 10))
    grad_clip: float = knob(1.0, "Gradient-norm clip (0: off).", bounds=Range(0, 10**6))
    # Its horizon is ~1/(1 - ema_decay) steps: keep it well below `steps`.
    ema_decay: float = knob(0.999, "Decay of the EMA weights that sample (per step after the warm-up).", bounds=PROB)
    label_dropout: float = knob(
        0.1, "Share of labels replaced by the null label (classifier-free guidance).", bounds=PROB
    )
    loss_weighting: str = knob("mse", "mse (DDPM's L_simple) or min_snr (Hang et al. 2023).", choices=LOSS_WEIGHTINGS)
    snr_gamma: float = knob(
        5.0, "min_snr: the SNR weight is clamped at this value.", bounds=Range(0, 10**6, lo_open=True), key_neutral=True
    )
    # More training where the noise is small enough for an adversarial perturbation's detail to matter.
    low_t_share: float = knob(
        0.0, "Share of each batch with timesteps drawn from [0, low-t-max) instead of [0, T).", bounds=Range(0, 1)
    )
    low_t_max: int = knob(100, "Upper end of the low timesteps.", bounds=Range(1, 10**5))
    schedule: str = knob("linear", "Noise schedule.", choices=SCHEDULES)
    T: int = knob(1000, "Diffusion timesteps.", bounds=Range(1, 10**5))
    checkpoint_every: int = knob(500, "Write a checkpoint every this many steps.", bounds=Range(1, 10**8))
    amp: bool = knob(True, "bfloat16 autocast on CUDA.")
    # Weights, optimiser and EMA stay float32; sampling runs in float32.
    cpu_bf16: bool = knob(True, "bfloat16 autocast on a CPU with native bf16 (AVX512-BF16/AMX); float32 elsewhere.")
    compile: bool = knob(
        False, "torch.compile the model (CUDA only; refused on a CPU, where it was slower or crashed)."
    )
    channels_last: bool = knob(True, "channels_last memory format (float32).")
    # The fused kernel's result is the eager ops' to float32 rounding (tested), so on (the default) is
    # key-neutral, as another CPU or thread count would be.
    fused_norm: bool = knob(
        True, "GroupNorm + SiLU as one ddmini kernel in float32 CPU training (bf16, CUDA: eager).", key_neutral=True
    )
    seed: int = knob(0, "Random seed.", bounds=SEED)
    # The fitted steps, not the budget, enter the model's cache key (ddmini.fit).
    fit_minutes: float = knob(
        0.0,
        "Train as many steps as fit in this many minutes here, timed over the first steps "
        "and cached (0: train --train-steps).",
        bounds=Range(0, 10**6),
        key_neutral=True,
    )

    def validate(self) -> DiffusionTrainConfig:
        check_fields(self, "diffusion")
        if self.low_t_share > 0 and self.low_t_max > self.T:
            raise ValueError(f"diffusion low_t_max must be in [1, T={self.T}]; got {self.low_t_max}")
        return self


@dataclass
class SampleConfig:
    """How images are sampled from a trained diffusion model."""

    sampler: str = knob("ddim", "ddim, or ddpm (ancestral, all T steps).", choices=SAMPLERS)
    steps: int = knob(100, "DDIM steps.", bounds=Range(1, 10**5))
    # Beyond 1 asks for more noise than the DDIM step has variance for.
    eta: float = knob(0.0, "DDIM stochasticity (0: deterministic, 1: DDPM-like).", bounds=Range(0, 1))
    # 2 for sampling images (`ddmini sample`: a clean model's conditional accuracy rises to ~100 %); the
    # deception study's presets use RUN_GUIDANCE instead.
    guidance: float = knob(2.0, "Classifier-free guidance scale (1: none).", bounds=Range(0, GUIDANCE_MAX))
    # 128: on a CPU larger batches spill the U-Net's activations out of cache (docs/presets.md).
    batch_size: int = knob(128, "Images per batch.", bounds=SIZE)
    seed: int = knob(0, "Random seed.", bounds=SEED)

    def validate(self) -> SampleConfig:
        check_fields(self, "sample")
        return self


# Each attack's defaults where they differ from AttackConfig's (PGD-L2's, the paper's attack at eps 1.6):
# its strength, chosen so that 85-90 % of the training images are attacked, as the paper's 86.5 %.
ATTACK_DEFAULTS: dict[str, dict] = {
    "pgd_l2": {},
    "pgd_linf": {"eps": 0.12},
    "fgsm": {"eps": 0.25},
    "cw_l2": {"steps": 100, "lr": 0.05, "c": 0.5},
}


@dataclass
class AttackConfig:
    """The attack run over a dataset (``ddmini attack`` and the pipeline's attack stage): by default the
    paper's PGD-L2, deterministic (no random start), 10 steps, eps 1.6 (86.25 % success on MNIST's
    training set with the default classifier)."""

    attack: str = knob("pgd_l2", "Attack.", choices=ATTACK_NAMES)
    eps: float = knob(1.6, "Attack radius (L2 for pgd_l2, L-inf for pgd_linf and fgsm).", bounds=Range(0, 1000))
    alpha: float | None = knob(None, "Step size [2.5 * eps / steps].", bounds=Range(0, 1000))
    steps: int = knob(10, "Attack iterations.", bounds=Range(1, 10**5))
    random_start: bool = knob(False, "Start from a random point in the ball.")
    c: float = knob(1.0, "cw_l2: weight of the loss term.", bounds=Range(0, 10**6))
    kappa: float = knob(0.0, "cw_l2: confidence margin.", bounds=Range(0, 10**6))
    lr: float = knob(0.01, "cw_l2: Adam step size.", bounds=Range(0, 100, lo_open=True))
    batch_size: int = knob(128, "Images per batch.", bounds=SIZE)
    chunk_size: int = knob(5000, "Images per resumable chunk.", bounds=Range(1, 10**8))
    seed: int = knob(0, "Random seed.", bounds=SEED)
    # Added after attacks were cached: at their defaults (the paper's untargeted cross-entropy PGD) keys are unchanged.
    objective: str = knob(
        "ce",
        "What PGD and FGSM ascend: ce (cross-entropy), margin (the logit margin), scaled (the margin over "
        "0.5-1 x the perturbation).",
        choices=ATTACK_OBJECTIVES,
        key_neutral=True,
    )
    margin: float = knob(
        0.0,
        "Logit margin kappa an image must reach to count as attacked; PGD leaves an image there (0: misclassified).",
        bounds=Range(0, 1000),
        key_neutral=True,
    )
    target: str = knob(
        "",
        "Targeted: shift (y -> y+1 mod C), random (a seeded other class) or a class index K (empty: untargeted).",
        key_neutral=True,
    )

    def validate(self) -> AttackConfig:
        check_fields(self, "attack")
        t = self.target
        if not isinstance(t, str) or not (t in ("", *TARGET_MODES) or (t.isdigit() and t.isascii())):
            raise ValueError(f"attack target must be shift, random or a class index K (0, 1, ...); got {t!r}")
        if self.attack == "cw_l2" and (self.objective != "ce" or self.margin):
            raise ValueError("cw_l2 has its own margin (--attack-kappa); --attack-objective and --attack-margin "
                             "are for pgd_l2, pgd_linf and fgsm")  # fmt: skip
        if self.attack == "fgsm" and self.margin:
            raise ValueError("fgsm takes one step: --attack-margin is for pgd_l2 and pgd_linf")
        return self

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps

    def describe(self) -> str:
        """The settings that define this attack, as a short line (no step size for FGSM, c and kappa for CW;
        the objective, margin and target where they are not the defaults)."""
        if self.attack == "fgsm":
            line = f"fgsm eps={self.eps:g}"
        elif self.attack == "cw_l2":
            line = f"cw_l2 c={self.c:g} kappa={self.kappa:g} steps={self.steps} lr={self.lr:g}"
        else:
            line = f"{self.attack} eps={self.eps:g} alpha={self.step_size:.4g} steps={self.steps}"
        return line + "".join(f" {k}={v}" for k, v in self.variant().items())

    def variant(self) -> dict:
        """The objective, margin and target where they differ from the paper's untargeted cross-entropy."""
        out = {"objective": self.objective} if self.objective != "ce" else {}
        out.update({"margin": f"{self.margin:g}"} if self.margin else {})
        return {**out, **({"target": self.target} if self.target else {})}

    def with_attack(self, name: str) -> AttackConfig:
        """This config switched to attack ``name`` with that attack's own defaults (ATTACK_DEFAULTS:
        its calibrated strength); batch and chunk sizes and the seed stay."""
        if name not in ATTACK_NAMES:
            raise ValueError(f"attack must be one of {', '.join(ATTACK_NAMES)}; got {name!r}")
        return replace(self, attack=name, **ATTACK_DEFAULTS[name])


def to_dict(cfg) -> dict:
    return asdict(cfg)


def key_dict(cfg) -> dict:
    """``to_dict`` for cache keys: a field added after artefacts were cached carries ``key_neutral`` and is
    left out while it has its default value (which must reproduce the old behaviour exactly), so adding a
    knob does not invalidate existing caches."""
    d = asdict(cfg)
    for f in fields(cfg):
        if f.metadata.get("key_neutral") and getattr(cfg, f.name) == f.default:
            del d[f.name]
    return d


def from_dict(cls, d: dict):
    """Build ``cls`` from a dict, ignoring unknown keys (checkpoints from newer versions); nested
    dataclass fields are rebuilt and lists become tuples."""
    kw = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        sub = default_of(f)
        if hasattr(sub, "__dataclass_fields__") and isinstance(v, dict):
            v = from_dict(type(sub), v)
        elif isinstance(v, list):
            v = tuple(v)
        kw[f.name] = v
    return cls(**kw)


# The headline guidance scale of `ddmini run` (every preset): the one that maximises the p = 1 - p = 0
# gap in misclassified samples (docs/results.md): guidance pulls samples toward clean prototypes.
RUN_GUIDANCE = 1.0


def run_sample_config(**kw) -> SampleConfig:
    """The sampling config of a run (RunConfig's default and every preset's): headline RUN_GUIDANCE."""
    return SampleConfig(guidance=RUN_GUIDANCE, **kw)


@dataclass
class RunConfig:
    """The whole experiment (``ddmini run``): one sub-config per stage plus the poisoning fraction."""

    poison: float = knob(0.3, "Fraction p of training images replaced by their attacked versions.", bounds=Range(0, 1))
    only_successful: bool = knob(
        False, "Leave out training images whose attack failed (the paper's set).", off_flag="--all-attacked"
    )
    data_limit: int = knob(0, "Use the first N training images (0: all).", bounds=Range(0, 10**9))
    test_limit: int = knob(0, "Evaluate on the first N test images (0: all).", bounds=Range(0, 10**9))
    num_samples: int = knob(1000, "Generated images per guidance scale.", bounds=Range(1, 10**7))
    guidance_scales: tuple[float, ...] = knob(
        (1.0, 2.0, 3.0), "Guidance scales to sample and report (1: none).", bounds=Range(0, GUIDANCE_MAX)
    )
    other_samples: int = knob(
        0, "Generated images per guidance scale besides the headline's (0: num_samples).", bounds=Range(0, 10**7)
    )
    # Its images enter every stage's key through the data digest.
    dataset: str = knob(
        "mnist", "Which dataset (folder: your own, --data-dir DIR).", choices=(*DATASET_SHAPES, "folder")
    )
    zoo: bool = knob(False, "Also score the run's images on the classifier zoo (`ddmini zoo`): a transfer section.")
    # The whole run's budget (ddmini.fit): the other stages are timed briefly here and training gets the rest (a run
    # then ignores train.fit_minutes, which the stage commands keep); training stops at the run's deadline if it
    # falls behind (the model's key is its planned steps).
    run_minutes: float = knob(
        0.0,
        "Fit the training so the whole run ends within this many minutes here (the other stages timed "
        "briefly; 0: off).",
        bounds=Range(0, 10**6),
    )
    # --dataset folder only: the shape images are read to (0: detected; ddmini.folder).
    channels: int = knob(0, "Image folder: 1 (grayscale) or 3 (RGB) [detected].", bounds=Range(0, 3))
    image_size: int = knob(0, "Image folder: side of the square images [the commonest size].", bounds=Range(0, 4096))
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    sample: SampleConfig = field(default_factory=run_sample_config)

    SECTIONS = ("classifier", "attack", "unet", "train", "sample")

    def samples_at(self, guidance: float) -> int:
        """How many images the run generates at ``guidance``: num_samples at the headline scale, other_samples
        (where set) at the others."""
        return self.num_samples if guidance == self.sample.guidance or not self.other_samples else self.other_samples

    def validate(self) -> RunConfig:
        if isinstance(self.poison, bool) or not isinstance(self.poison, (int, float)) or not 0 <= self.poison <= 1:
            raise ValueError(f"poison fraction p must be in [0, 1]; got {self.poison}")
        if self.dataset == "folder" and "folder" not in DATASET_SHAPES:
            raise ValueError("--dataset folder needs --data-dir DIR: an image folder (DIR/<class>/*.png)")
        if self.dataset not in DATASET_SHAPES:
            raise ValueError(f"dataset must be one of {', '.join(DATASET_SHAPES)}; got {self.dataset!r}")
        (c, h, _), k = DATASET_SHAPES[self.dataset]  # what the data decide (UNetConfig's derived fields)
        self.unet.in_channels, self.unet.image_size, self.unet.num_classes = c, h, k
        check_fields(self, "run")
        self.guidance_scales = tuple(float(g) for g in self.guidance_scales)
        for name in self.SECTIONS:
            getattr(self, name).validate()
        if float(self.sample.guidance) not in self.guidance_scales:
            scales = ", ".join(f"{g:g}" for g in self.guidance_scales)
            raise ValueError(
                f"the headline guidance scale (sample guidance {self.sample.guidance:g}) must be one "
                f"of the guidance scales sampled ({scales})"
            )
        return self

    def folder(self, what: str | None = None) -> str:
        """The run's report folder in RUN_DIR: ``p0.3`` for an MNIST run with PGD-L2 (the study's own);
        another dataset or attack is named in it (``fashion-mnist-p1``, ``p1-fgsm``), so that runs sharing
        one run dir and its cache never overwrite each other's reports; a seed other than 0 is named too
        (``p0.3-seed1``), and an attack's objective, margin and target (``p1-margin2``, ``p1-target-shift``).
        ``what`` replaces ``p<p>``."""
        name = (what or f"p{self.poison:g}") + (f"-seed{self.train.seed}" if self.train.seed else "")
        if self.dataset != "mnist":
            name = f"{self.dataset}-{name}"
        name = name if self.attack.attack == "pgd_l2" else f"{name}-{self.attack.attack}"
        suffix = {"objective": "-{}", "margin": "-margin{}", "target": "-target-{}"}  # p1-scaled-margin2-target-shift
        return name + "".join(suffix[k].format(v) for k, v in self.attack.variant().items())

    def with_seed(self, seed: int) -> RunConfig:
        for name in ("classifier", "attack", "train", "sample"):
            getattr(self, name).seed = seed
        return self


def apply_overrides(cfg, overrides: dict):
    """Set ``overrides`` on a config and validate it. On a RunConfig, a stage's knobs have dotted names
    (``{"train.steps": 9000, "guidance_scales": (2, 3)}``); on a stage's own config, plain ones. Naming an
    attack (``attack.attack``) brings that attack's calibrated strength first, so options given with it
    win; steps given turn a preset's fit off unless the fit is given too; scales given without a headline
    make the first of them the headline. Returns ``cfg``."""
    given = {k: v for k, v in overrides.items() if v is not None}
    run = isinstance(cfg, RunConfig)
    if run and "attack.attack" in given:
        cfg.attack = cfg.attack.with_attack(given["attack.attack"])
    for name, v in given.items():
        section, _, knob_name = name.rpartition(".")
        target = getattr(cfg, section) if run and section in RunConfig.SECTIONS else None if section else cfg
        if target is None or knob_name not in {f.name for f in fields(target)}:
            raise ValueError(f"unknown setting {name!r}")
        setattr(target, knob_name, tuple(v) if isinstance(v, list) else v)
    train, prefix = (cfg.train, "train.") if run else (cfg, "")
    if f"{prefix}steps" in given and f"{prefix}fit_minutes" not in given and hasattr(train, "fit_minutes"):
        train.fit_minutes = 0.0  # steps given are trained as given: a preset's fit (cpu-hour) gives way
    if run and given.get("run_minutes") and given.get("train.fit_minutes"):
        raise ValueError(
            f"give the whole run's minutes (--run-minutes {given['run_minutes']:g}) or the training's "
            f"(--train-fit-minutes {given['train.fit_minutes']:g}), not both"
        )
    if run and "run_minutes" not in given and ("train.steps" in given or "train.fit_minutes" in given):
        cfg.run_minutes = 0.0  # so does the preset's whole-run budget, to steps or training minutes given
    if run and "guidance_scales" in given and "sample.guidance" not in given:
        scales = tuple(float(g) for g in cfg.guidance_scales)
        if cfg.sample.guidance not in scales:
            cfg.sample.guidance = scales[0]  # only the scales were given: the first is the headline
    return cfg.validate()


@dataclass
class HardenConfig:
    """``ddmini harden``: the deceptive-sample pool added to the training set, and the evaluation.

    The robust-accuracy attack is PGD-L2 with ``eval_steps`` steps of 2.5 eps / steps from a random start,
    the worst case over ``eval_restarts`` restarts, on the first ``eval_limit`` test images: at least as
    strong as the anchors' evaluation (50 steps, 5 restarts; weaker overstates robustness)."""

    pool: int = knob(
        5000, "Deceptive samples (from the p = 1 model) added to the training images.", bounds=Range(1, 10**7)
    )
    heldout: int = knob(
        1000, "Held-out deceptive samples (another sampling seed) every arm is scored on.", bounds=Range(1, 10**7)
    )
    eval_limit: int = knob(
        1000, "Test images (the first N) for robust accuracy and transferred attacks.", bounds=Range(1, 10**7)
    )
    eval_eps: tuple[float, ...] = knob(
        (1.6, 2.0), "L2 radii of the robust-accuracy evaluation.", bounds=Range(0, 1000, lo_open=True)
    )
    eval_steps: int = knob(50, "PGD-L2 steps of the evaluation.", bounds=Range(1, 10**5))
    eval_restarts: int = knob(5, "Random restarts of the evaluation (the worst case counts).", bounds=Range(1, 1000))
    autoattack_limit: int = knob(
        1000,
        "Test images (the first N) each arm is also attacked with AutoAttack on, L-inf and L2 at the dataset's radii "
        "(`ddmini robust`; 0: no AutoAttack columns).",
        bounds=Range(0, 10**7),
    )
    autoattack_steps: int = knob(
        100, "APGD and FAB iterations of those AutoAttack figures (the protocol's 100; fewer are marked reduced).",
        bounds=Range(1, 10**5),
    )  # fmt: skip
    autoattack_queries: int = knob(
        5000, "Square's queries of those AutoAttack figures (the protocol's 5,000; fewer are marked reduced).",
        bounds=Range(1, 10**7),
    )  # fmt: skip
    seed: int = knob(0, "Random seed.", bounds=SEED)

    def validate(self) -> HardenConfig:
        check_fields(self, "harden")
        return self


# The arms of ``ddmini harden`` (ddmini.harden.ARMS says what each trains on).
HARDEN_ARMS = ("clean", "pgd", "deceptive", "pgd+deceptive", "deceptive-fresh")
