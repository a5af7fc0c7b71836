"""One dataclass per concern; the CLI maps its options onto these, so each default lives here only."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


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

    steps: int = 6000            # optimiser steps (the run also stops at time_budget)
    time_budget: float = 0.0     # minutes; 0 = no limit
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 200            # linear learning-rate warm-up steps, then constant
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1   # share of labels replaced by the null label (classifier-free guidance)
    loss_weighting: str = "min_snr"
    schedule: str = "linear"
    T: int = 1000
    checkpoint_every: int = 500
    amp: bool = True             # bfloat16 autocast on CUDA (ignored on a CPU)
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
        if self.loss_weighting not in ("mse", "min_snr"):
            raise ValueError(f"diffusion loss_weighting must be mse or min_snr; got {self.loss_weighting!r}")
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"diffusion schedule must be linear or cosine; got {self.schedule!r}")
        return self


@dataclass
class SampleConfig:
    """How images are sampled from a trained diffusion model."""

    sampler: str = "ddim"        # ddim | ddpm (ancestral, all T steps)
    steps: int = 100             # DDIM steps
    eta: float = 0.0
    guidance: float = 1.0        # classifier-free guidance scale; 1 = plain conditional model
    batch_size: int = 500
    seed: int = 0

    def validate(self) -> "SampleConfig":
        if self.sampler not in ("ddim", "ddpm"):
            raise ValueError(f"sampler must be ddim or ddpm; got {self.sampler!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("sampling steps and batch_size must be >= 1")
        if not self.eta >= 0 or not self.guidance >= 0:
            raise ValueError("eta and guidance must be >= 0")
        return self


ATTACK_NAMES = ("pgd_l2", "pgd_linf", "fgsm", "cw_l2")


@dataclass
class AttackConfig:
    """The attack run over a dataset (``ddmini attack`` and the pipeline's attack stage).

    Defaults: the paper's PGD-L2, deterministic (no random start), 10 steps; eps chosen with the eps
    sweep so that the success rate on the training set is close to the paper's 86.5 % (see README).
    """

    attack: str = "pgd_l2"
    eps: float = 1.5
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


def from_dict(cls, d: dict):
    """Build ``cls`` from a dict, ignoring unknown keys (checkpoints from newer versions)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
