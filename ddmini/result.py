"""What a run measured, as typed objects: the pipeline builds a :class:`RunResult`, ``ddmini.report``
renders it (report.md, the PNGs, the sweep), and :meth:`RunResult.to_dict` is report.json."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class Misclassification:
    """How often predictions differ from the labels: overall, per class (NaN for a class with no image)
    and the confusion matrix (rows: label, columns: prediction)."""

    rate: float
    n: int
    per_class: list[float]
    confusion: list[list[int]]


@dataclass
class Cafd:
    """A class-aware Fréchet distance: its mean over classes and each class's; ``error`` says why it
    could not be computed (a class without images in a tiny run), with ``mean`` NaN."""

    mean: float
    per_class: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class GeneratedResult:
    """The generated images of one guidance scale, scored by the target classifier."""

    misclassification: Misclassification
    cafd: dict[str, Cafd]  # "clean_test_soft", "clean_test_hard", "attacked_soft", "attacked_hard"
    num_classes: int
    sample_seconds: float = math.nan
    seconds_per_image: float = math.nan
    seconds_per_misleading_image: float | None = None  # None: no image misled

    def set_timing(self, seconds: float) -> None:
        n = self.misclassification.n
        self.sample_seconds = seconds
        self.seconds_per_image = seconds / max(n, 1)
        wrong = self.misclassification.rate * n
        self.seconds_per_misleading_image = seconds / wrong if wrong else None


@dataclass
class RunResult:
    """One run of the experiment (``ddmini run``): the stages' summaries and what was cached."""

    poison: float
    config: dict
    versions: dict
    classifier: dict  # {"test_accuracy": ...}
    attack: dict  # the attack stage's summary, per-class success and margin table
    clean_test: Misclassification
    training_set: dict  # images, attacked, diffusion steps and seconds
    generated: dict[str, GeneratedResult]  # by guidance scale ("1", "2", ...)
    headline_guidance: float
    cost: dict
    timings: dict
    cached: dict
    artefacts: dict
    transfer: dict | None = None  # with --zoo: sources, classifiers, misclassified, images
    class_names: list | None = None  # the dataset's (an image folder's are its folder names)
    estimates: dict | None = None  # each stage's expected seconds when the run started (ddmini.fit.expected)
    targeted: dict | None = None  # a targeted attack's: mode, share of samples in their target class per scale

    def headline(self) -> tuple[str, GeneratedResult]:
        """The headline guidance scale's name and result (the first sampled if it is not among them)."""
        g = f"{self.headline_guidance:g}"
        return (g, self.generated[g]) if g in self.generated else next(iter(self.generated.items()))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Transfer:
    """Misclassified share (rows: image sources, columns: classifiers) and each source's image count."""

    sources: list[str]
    classifiers: list[str]
    rates: list[list[float]]
    images: list[int]
    # "linf 0.3" -> each classifier's AutoAttack accuracy (ddmini.robust), on autoattack_images test images
    autoattack: dict = field(default_factory=dict)
    autoattack_images: int = 0
    autoattack_reduced: str = ""  # ddmini.attacks.auto.reduced's note where the protocol was cut (smoke)

    def markdown(self) -> str:
        head = "| images | n | " + " | ".join(self.classifiers) + " |"
        rows = [head, "|---" * (len(self.classifiers) + 2) + "|"]
        for s, n, r in zip(self.sources, self.images, self.rates):
            rows.append(f"| {s} | {n} | " + " | ".join(f"{100 * v:.1f} %" for v in r) + " |")
        for k, accs in self.autoattack.items():
            norm, eps = k.split()
            what = f"*AutoAttack accuracy, {'L-inf' if norm == 'linf' else 'L2'} eps {eps}* (test images)"
            what += self.autoattack_reduced
            rows.append(f"| {what} | {self.autoattack_images} | " + " | ".join(f"{100 * v:.1f} %" for v in accs) + " |")
        return "\n".join(rows)
