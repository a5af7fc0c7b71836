"""Purification with the clean diffusion model (DiffPure, Nie et al. 2022, arXiv 2205.07460): how much
accuracy noising an input to t* and denoising it back recovers on attacked images and deceptive samples,
and what it costs on clean images. Non-adaptive: the attacks did not see the purifier."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import classifier

NON_ADAPTIVE = (
    "Non-adaptive evaluation: the attacks were made against the classifier alone, without the "
    "purifier in the loop; an attacker who differentiates through it would do better."
)


@dataclass
class PurificationTable:
    """Accuracy of the target classifier per source (rows) without purification and at each t* (columns)."""

    sources: list[str]
    t_stars: list[int]
    images: list[int]
    accuracy_before: list[float]
    accuracy_after: list[list[float]]  # [source][t*]
    seconds_per_image: list[float]  # per t*, over every source

    def markdown(self) -> str:
        head = "| images | n | no purification | " + " | ".join(f"t* = {t}" for t in self.t_stars) + " |"
        rows = [head, "|---" * (len(self.t_stars) + 3) + "|"]
        for s, n, b, a in zip(self.sources, self.images, self.accuracy_before, self.accuracy_after):
            rows.append(f"| {s} | {n} | {100 * b:.1f} % | " + " | ".join(f"{100 * v:.1f} %" for v in a) + " |")
        rows.append("| seconds per image | | | " + " | ".join(f"{v:.3f}" for v in self.seconds_per_image) + " |")
        return "\n".join(rows)


def purification_table(
    diff, model, clf, sources: dict, t_stars: list[int], steps: int, *, seed: int = 0, device="cpu"
) -> PurificationTable:
    """Purify every source's images (x, labels) at every t* and measure the target's accuracy."""
    before = [classifier.accuracy(clf, x, y) for x, y in sources.values()]
    after, secs = [[] for _ in sources], []
    for t in t_stars:
        t0, n = time.perf_counter(), 0
        for i, (_name, (x, y)) in enumerate(sources.items()):
            px = diff.purify(model, x, t, steps, seed=seed, device=device, desc=f"purify t*={t}")
            after[i].append(classifier.accuracy(clf, px, y))
            n += x.shape[0]
        secs.append((time.perf_counter() - t0) / max(n, 1))
    return PurificationTable(
        list(sources), list(t_stars), [int(x.shape[0]) for x, _ in sources.values()], before, after, secs
    )


def write_purification(t: PurificationTable, where: Path, title: str) -> None:
    from .report import write_json, write_text

    where.mkdir(parents=True, exist_ok=True)
    write_text(
        f"# {title}\n\nAccuracy of the target classifier (generated images: against their conditioning "
        f"label).\n\n{t.markdown()}\n\n{NON_ADAPTIVE}\n",
        where / "purify.md",
    )
    write_json({**asdict(t), "note": NON_ADAPTIVE}, where / "purify.json")


#: t* (for T = 1000 steps; scaled to a model's T) and the DDIM steps back, where the command is not told.
DEFAULT_T_STARS, DEFAULT_STEPS = (50, 100, 200, 300), 20


def default_t_stars(T: int) -> list[int]:
    """DEFAULT_T_STARS scaled from 1000 timesteps to ``T`` (each at least 1, below T, without repeats)."""
    return sorted({min(T - 1, max(1, round(t * T / 1000))) for t in DEFAULT_T_STARS})


def run(pipe, ckpt: str | Path, t_stars, steps: int | None, limit: int, samples=()) -> PurificationTable:
    """``ddmini purify``: purify ``limit`` clean test images, as many PGD-L2 attacks on them made against
    the target, and the deceptive ``samples`` ([NAME=]PATH) with the clean model at ``ckpt`` at every t*;
    writes RUN_DIR/purify/purify.md and purify.json."""
    from . import samples as samples_io, train
    from .diffusion import Diffusion

    if not 1 <= limit <= 10**6:
        raise ValueError(f"--limit must be in [1, 1000000]; got {limit}")
    model, tcfg, _ = train.load_ema(ckpt, pipe.device, pipe.cfg.dataset)
    diff = Diffusion(schedule_name=tcfg.schedule, T=tcfg.T)
    t_stars = default_t_stars(diff.T) if t_stars is None else t_stars
    steps = min(DEFAULT_STEPS, min(t_stars) + 1) if steps is None else steps
    if len(set(t_stars)) != len(t_stars):
        raise ValueError(f"--t-star values must differ; got {','.join(map(str, t_stars))}")
    for t in t_stars:
        if not 1 <= t < diff.T:
            raise ValueError(f"--t-star values must be in [1, {diff.T}); got {t}")
    if not 1 <= steps <= min(t_stars) + 1:
        raise ValueError(f"--steps must be in [1, {min(t_stars) + 1}] (the smallest t* + 1); got {steps}")
    clf, ckey, _ = pipe.classifier()
    xt, yt = pipe.data().xt[:limit], pipe.data().yt[:limit]
    adv = pipe.attacked(clf, ckey, images=(xt, yt), split="test").result
    sources = {"clean test images": (xt, yt), f"PGD-L2 test attacks ({pipe.cfg.attack.describe()})": (adv.x_adv, yt)}
    for name, s in samples_io.load_named(samples, clf.num_classes, limit).items():
        sources[f"deceptive samples: {name}"] = s
    table = purification_table(
        diff, model, clf, sources, list(t_stars), steps, seed=pipe.cfg.sample.seed, device=pipe.device
    )
    write_purification(
        table, pipe.run_dir / "purify", f"Purification with {Path(ckpt).name} ({pipe.cfg.dataset}, DDIM-{steps} back)"
    )
    return table
