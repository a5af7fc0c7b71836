"""One dataclass per concern; the CLI maps its options onto these, so each default lives here only."""
from __future__ import annotations

from dataclasses import MISSING as MISSING_FACTORY, asdict, dataclass, field, fields, replace

# The names of each choice, here once: the config checks, the CLI's choices, schedule.py and
# diffusion.py use these tuples (this module imports nothing but dataclasses, so any module can).
# ddmini.attacks.ATTACKS maps the same attack names to functions (a test keeps the two equal).
SCHEDULES = ("linear", "cosine")             # noise schedules (ddmini.schedule)
LOSS_WEIGHTINGS = ("mse", "min_snr")         # diffusion training loss (ddmini.diffusion)
SAMPLERS = ("ddim", "ddpm")                  # ddmini.diffusion.Diffusion.sample
LR_SCHEDULES = ("constant", "cosine")        # ddmini.train.learning_rate
ATTACK_NAMES = ("pgd_l2", "pgd_linf", "fgsm", "cw_l2")


@dataclass
class ClassifierConfig:
    """The target classifier (a small CNN) and how it is trained."""

    width: int = 16            # channels of the first conv block (the second has 2x)
    feature_dim: int = 128     # penultimate activations, used by the Fréchet metrics
    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-3           # peak of the one-cycle schedule (AdamW)
    weight_decay: float = 1e-4
    seed: int = 0

    def validate(self) -> "ClassifierConfig":
        for name in ("width", "feature_dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"classifier {name} must be >= 1; got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"classifier lr must be > 0; got {self.lr}")
        return self


@dataclass
class UNetConfig:
    """The class-conditional U-Net (ddmini.unet). Levels = len(channel_mult); the image side must be
    divisible by 2 ** (levels - 1) (28 -> 14 -> 7 with three levels)."""

    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = False      # self-attention at the lowest resolution
    num_heads: int = 4
    groups: int = 8              # GroupNorm groups (capped at the channel count)
    dropout: float = 0.0
    num_classes: int = 10        # plus one "null" class for classifier-free guidance
    in_channels: int = 1
    image_size: int = 28

    def validate(self) -> "UNetConfig":
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if self.base_channels < 1 or not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError("unet base_channels and every channel_mult entry must be >= 1")
        if self.num_res_blocks < 1 or self.num_classes < 1 or self.in_channels < 1:
            raise ValueError("unet num_res_blocks, num_classes and in_channels must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"unet dropout must be in [0, 1); got {self.dropout}")
        f = 2 ** (len(self.channel_mult) - 1)
        if self.image_size < f or self.image_size % f:
            raise ValueError(f"unet with {len(self.channel_mult)} levels needs an image size divisible by {f};"
                             f" got {self.image_size}")
        return self


UNET_PRESETS = {
    # ~0.7 M parameters, the CPU model: few channels at 28x28 (where convolutions cost the most),
    # most parameters at 7x7, attention there (49 tokens: cheap).
    "small": UNetConfig(base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, attention=True),
    # A few tens of millions of parameters with attention: comparable to the diffusers UNet2DModel
    # configurations used for MNIST (block_out_channels up to 128-256, two layers per block).
    "paper": UNetConfig(base_channels=64, channel_mult=(1, 2, 4), num_res_blocks=2, attention=True,
                        groups=32, dropout=0.1),
    # For tests and smoke runs.
    "tiny": UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, groups=4),
}


@dataclass
class DiffusionTrainConfig:
    """How the diffusion model is trained (ddmini.train)."""

    steps: int = 12000           # optimiser steps (the run also stops at time_budget)
    time_budget: float = 0.0     # minutes; 0 = no limit
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 200            # linear learning-rate warm-up steps, then lr_schedule
    # after the warm-up: "constant", or "cosine" (half a cosine from lr down to 0 at `steps`; with a
    # time budget that stops earlier, the rate is still where the schedule over `steps` puts it)
    lr_schedule: str = field(default="constant", metadata={"key_neutral": True})
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999     # per step after the warm-up (the EMA copies the weights during it); its
    #                              horizon is ~1/(1 - ema_decay) steps: keep it well below `steps`
    label_dropout: float = 0.1   # share of labels replaced by the null label (classifier-free guidance)
    loss_weighting: str = "mse"  # mse (DDPM's L_simple) or min_snr (Hang et al. 2023, gamma 5)
    # Share of each batch whose timesteps are drawn from [0, low_t_max) instead of [0, T): more
    # training where the noise is small enough for fine, low-amplitude detail (an adversarial
    # perturbation of L2 norm 1.6 on MNIST is resolved below t ~ 100 of the linear schedule) to matter.
    low_t_share: float = 0.0
    low_t_max: int = 100
    schedule: str = "linear"
    T: int = 1000
    checkpoint_every: int = 500
    amp: bool = True             # bfloat16 autocast on CUDA (ignored on a CPU)
    # bfloat16 autocast when training on a CPU that computes bf16 natively (AVX512-BF16 / AMX; see
    # runtime.cpu_has_native_bf16), float32 elsewhere; weights, optimiser and EMA stay float32 and
    # sampling runs in float32. channels_last is not applied under it (slower with bf16 there).
    cpu_bf16: bool = True
    compile: bool = False        # torch.compile the model
    channels_last: bool = True
    seed: int = 0

    def validate(self) -> "DiffusionTrainConfig":
        for name in ("steps", "batch_size", "T", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"diffusion {name} must be >= 1; got {getattr(self, name)}")
        if not self.lr > 0 or self.warmup < 0 or self.time_budget < 0:
            raise ValueError("diffusion lr must be > 0, warmup and time_budget >= 0")
        if not 0 <= self.ema_decay < 1 or not 0 <= self.label_dropout < 1:
            raise ValueError("diffusion ema_decay and label_dropout must be in [0, 1)")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"diffusion loss_weighting must be one of {', '.join(LOSS_WEIGHTINGS)}; "
                             f"got {self.loss_weighting!r}")
        if not 0 <= self.low_t_share <= 1:
            raise ValueError(f"diffusion low_t_share must be in [0, 1]; got {self.low_t_share}")
        if self.low_t_max < 1 or (self.low_t_share > 0 and self.low_t_max > self.T):
            raise ValueError(f"diffusion low_t_max must be in [1, T={self.T}]; got {self.low_t_max}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"diffusion schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"diffusion lr_schedule must be one of {', '.join(LR_SCHEDULES)}; "
                             f"got {self.lr_schedule!r}")
        return self


@dataclass
class SampleConfig:
    """How images are sampled from a trained diffusion model."""

    sampler: str = "ddim"        # ddim | ddpm (ancestral, all T steps)
    steps: int = 100             # DDIM steps
    eta: float = 0.0
    # Classifier-free guidance scale; 1 = the plain conditional model. 2 for sampling images (`ddmini
    # sample`): a clean cpu-size model's conditional accuracy, DDIM-100, rises from 97.2 % to 100 % (README).
    # The deception study's presets use RUN_GUIDANCE instead.
    guidance: float = 2.0
    # 128: on a CPU the U-Net's activations at larger batches spill out of cache (small U-Net, 2 cores:
    # 1.37 ms/image at 128, 2.14 at 500, 2.80 at 1000), which is also why guidance there makes two calls
    # of this size rather than one on the doubled batch (Diffusion.guided_split); GPUs want more
    batch_size: int = 128
    seed: int = 0

    def validate(self) -> "SampleConfig":
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("sampling steps and batch_size must be >= 1")
        if not self.eta >= 0 or not self.guidance >= 0:
            raise ValueError("eta and guidance must be >= 0")
        return self


@dataclass
class AttackConfig:
    """The attack run over a dataset (``ddmini attack`` and the pipeline's attack stage).

    Defaults: the paper's PGD-L2, deterministic (no random start), 10 steps; eps chosen with the eps
    sweep so that the success rate on the training set is close to the paper's 86.5 % (see README).
    """

    attack: str = "pgd_l2"
    eps: float = 1.6             # 86.25 % success on the training set with the default classifier
    alpha: float | None = None   # step size; None -> 2.5 * eps / steps (Madry et al.)
    steps: int = 10
    random_start: bool = False
    c: float = 1.0               # cw_l2 only
    kappa: float = 0.0           # cw_l2 only
    lr: float = 0.01             # cw_l2 only
    batch_size: int = 128
    chunk_size: int = 5000       # images per resumable chunk
    seed: int = 0

    def validate(self) -> "AttackConfig":
        if self.attack not in ATTACK_NAMES:
            raise ValueError(f"attack must be one of {', '.join(ATTACK_NAMES)}; got {self.attack!r}")
        if not self.eps >= 0:
            raise ValueError(f"attack eps must be >= 0; got {self.eps}")
        if self.alpha is not None and not self.alpha >= 0:
            raise ValueError(f"attack alpha must be >= 0; got {self.alpha}")
        for name in ("steps", "batch_size", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"attack {name} must be >= 1; got {getattr(self, name)}")
        return self

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps


def to_dict(cfg) -> dict:
    return asdict(cfg)


def key_dict(cfg) -> dict:
    """``to_dict`` for cache keys: a field added after artefacts were cached carries
    ``metadata={"key_neutral": True}`` and is left out while it has its default value (which must
    reproduce the old behaviour exactly), so adding a knob does not invalidate existing caches."""
    d = asdict(cfg)
    for f in fields(cfg):
        if f.metadata.get("key_neutral") and getattr(cfg, f.name) == f.default:
            del d[f.name]
    return d


def from_dict(cls, d: dict):
    """Build ``cls`` from a dict, ignoring unknown keys (checkpoints from newer versions); nested
    dataclass fields are rebuilt and lists become tuples where the default is a tuple."""
    kw = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        sub = _nested(cls, f.name)
        if sub is not None and isinstance(v, dict):
            v = from_dict(sub, v)
        elif isinstance(v, list):
            v = tuple(v)
        kw[f.name] = v
    return cls(**kw)


def _nested(cls, name: str):
    default = getattr(cls, "__dataclass_fields__")[name]
    if default.default_factory is not MISSING_FACTORY:
        obj = default.default_factory()
        return type(obj) if hasattr(obj, "__dataclass_fields__") else None
    return None


# The headline guidance scale of `ddmini run` (every preset): the one that maximises the p = 1 - p = 0
# gap in misclassified samples, measured at 1, 2 and 3 (README): guidance pulls samples toward clean
# class prototypes, away from the learned perturbation, so the study's default is no guidance.
RUN_GUIDANCE = 1.0


def run_sample_config(**kw) -> SampleConfig:
    """The sampling config of a run (RunConfig's default and every preset's): headline RUN_GUIDANCE."""
    return SampleConfig(guidance=RUN_GUIDANCE, **kw)


@dataclass
class RunConfig:
    """The whole experiment (``ddmini run``): one sub-config per stage plus the poisoning fraction."""

    poison: float = 0.3                  # fraction p of training images replaced by their attacked versions
    only_successful: bool = False        # leave out images whose attack failed (the paper's 51,918 set)
    data_limit: int = 0                  # use the first N training images only (0: all)
    test_limit: int = 0                  # evaluate against the first N test images only (0: all)
    num_samples: int = 1000              # generated images per guidance scale (balanced over classes)
    guidance_scales: tuple[float, ...] = (1.0, 2.0, 3.0)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    sample: SampleConfig = field(default_factory=run_sample_config)

    SECTIONS = ("classifier", "attack", "unet", "train", "sample")

    def validate(self) -> "RunConfig":
        if isinstance(self.poison, bool) or not 0.0 <= float(self.poison) <= 1.0:
            raise ValueError(f"poison fraction p must be in [0, 1]; got {self.poison}")
        if self.data_limit < 0 or self.test_limit < 0 or self.num_samples < 1:
            raise ValueError("data_limit and test_limit must be >= 0 and num_samples >= 1")
        self.guidance_scales = tuple(float(g) for g in self.guidance_scales)
        if not self.guidance_scales or min(self.guidance_scales) < 0:
            raise ValueError("guidance_scales must be a non-empty list of numbers >= 0")
        for name in self.SECTIONS:
            getattr(self, name).validate()
        if float(self.sample.guidance) not in self.guidance_scales:
            raise ValueError(f"the headline guidance scale (sample guidance {self.sample.guidance:g}) must be one "
                             f"of the guidance scales sampled ({', '.join(f'{g:g}' for g in self.guidance_scales)})")
        return self

    def with_seed(self, seed: int) -> "RunConfig":
        for name in ("classifier", "attack", "train", "sample"):
            getattr(self, name).seed = seed
        return self


def preset(name: str) -> RunConfig:
    """Named presets: "smoke" (seconds, tests), "cpu" (the whole run <= 60 min on 2 cores),
    "paper" (paper-scale model and data, for a GPU)."""
    if name == "smoke":
        return RunConfig(
            data_limit=600, test_limit=300, num_samples=40, guidance_scales=(1.0, 3.0),
            classifier=ClassifierConfig(width=8, feature_dim=32, epochs=3, batch_size=32),
            attack=AttackConfig(steps=2, chunk_size=256),
            unet=replace(UNET_PRESETS["tiny"]),
            train=DiffusionTrainConfig(steps=6, batch_size=16, warmup=2, checkpoint_every=3, T=100),
            sample=run_sample_config(steps=4, batch_size=64))
    if name == "cpu":
        # 12,000 steps: 35-42 min of training at the 5.7-4.8 steps/s measured in two whole runs on the
        # 2-core dev machine (bf16 autocast; README); only successfully attacked images, as in the paper.
        # Half of each batch at t < 100 and a cosine learning-rate decay: chosen by measurement
        # (docs/experiments.md): the p = 1 - p = 0 gap grows from 59.2 (uniform t, constant rate) to
        # 68.0 points on 5,000 samples each, p = 0 stays inside 5 %, the sweep stays linear.
        return RunConfig(only_successful=True, unet=replace(UNET_PRESETS["small"]),
                         train=DiffusionTrainConfig(low_t_share=0.5, lr_schedule="cosine"),
                         sample=run_sample_config(steps=50))
    if name == "paper":
        return RunConfig(only_successful=True, num_samples=10000, unet=replace(UNET_PRESETS["paper"]),
                         train=DiffusionTrainConfig(steps=40000, lr=2e-4, warmup=1000, ema_decay=0.9999),
                         sample=run_sample_config(steps=100, batch_size=500))
    raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {name!r}")


PRESETS = ("smoke", "cpu", "paper")
