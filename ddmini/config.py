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


def to_dict(cfg) -> dict:
    return asdict(cfg)


def from_dict(cls, d: dict):
    """Build ``cls`` from a dict, ignoring unknown keys (checkpoints from newer versions)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
