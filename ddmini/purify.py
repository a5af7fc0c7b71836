"""Purification with the clean diffusion model (DiffPure, Nie et al. 2022, arXiv 2205.07460): how much
accuracy noising an input to t* and denoising it back recovers on attacked images and deceptive samples,
and what it costs on clean images. The table's attacks did not see the purifier (non-adaptive); ``--adaptive``
adds attacks that do (:func:`adaptive_table`: BPDA and full gradients through the chain, with EOT, and the worst
of several purifications per image: Lee & Kim, ICCV 2023; DiffHammer, NeurIPS 2024)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import classifier
from .attacks.base import check_positive

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


def write_purification(t: PurificationTable, where: Path, title: str, adaptive: AdaptiveTable | None = None) -> None:
    from .report import write_json, write_text

    where.mkdir(parents=True, exist_ok=True)
    more = ""
    if adaptive is not None:
        a = adaptive
        more = (
            f"\n## Adaptive attacks ({a.norm} eps {a.eps:g}, {a.images} clean test images)\n\nAccuracy of the purified "
            f"target. Non-adaptive: AutoAttack ({a.attack_steps} iterations, Square {a.attack_steps * 50} queries) "
            f"on the classifier alone, its images purified once. BPDA + EOT and full gradient + EOT: APGD-CE "
            f"({a.attack_steps} iterations) on the classifier behind the purifier, each gradient averaged over "
            f"{a.eot} purifications (BPDA: the purifier's backward pass as the identity; full: exact gradients "
            f"through every denoising step). Worst of {a.attempts}: the full-gradient attack's images purified "
            f"{a.attempts} times, right only if every time. ± one binomial standard error.\n\n{a.markdown()}\n"
        )
    write_text(
        f"# {title}\n\nAccuracy of the target classifier (generated images: against their conditioning "
        f"label).\n\n{t.markdown()}\n\n{NON_ADAPTIVE}\n{more}",
        where / "purify.md",
    )
    extra = {} if adaptive is None else {"adaptive": asdict(adaptive)}
    write_json({**asdict(t), "note": NON_ADAPTIVE, **extra}, where / "purify.json")


class Purified(nn.Module):
    """The target behind the purifier, as an adaptive attacker sees it: ``clf(purify(x))`` with a fresh noise
    draw per call, so its outputs are random (attack it with AutoAttack's rand version: EOT). ``gradient``:
    ``full``, exact gradients through every denoising step (:meth:`ddmini.diffusion.Diffusion.purify_differentiable`,
    checkpointed per step); ``bpda``, the purifier's backward pass taken as the identity (BPDA, Athalye et al.
    2018, arXiv 1802.00420): the cheaper baseline."""

    def __init__(self, diff, unet, clf, t_star: int, steps: int, gradient: str = "full", seed: int = 0):
        super().__init__()
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}; got {gradient!r}")
        self.diff, self.unet, self.clf = diff, unet, clf
        self.t_star, self.steps, self.gradient = t_star, steps, gradient
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.gen).to(x.device)
        if self.gradient == "full":
            return self.clf(self.diff.purify_differentiable(self.unet, x, self.t_star, self.steps, noise))
        with torch.no_grad():
            p = self.diff.purify_differentiable(self.unet, x, self.t_star, self.steps, noise, checkpointed=False)
        return self.clf(x + (p - x).detach())


GRADIENTS = ("full", "bpda")


@dataclass
class AdaptiveTable:
    """Accuracy of the purified target per t* under attacks that ignore the purifier (non-adaptive: AutoAttack
    on the classifier alone, its images purified once) and that see it (BPDA + EOT, full gradient + EOT: APGD
    with ``eot`` draws per gradient), the last also judged as the worst of ``attempts`` purifications per image
    (an image counts as robust only if every draw classifies it right)."""

    norm: str
    eps: float
    images: int
    t_stars: list[int]
    attack_steps: int
    eot: int
    attempts: int
    non_adaptive: list[float]
    bpda: list[float]
    full: list[float]
    worst_of_n: list[float]
    seconds: list[float]  # per t*: every attack on it

    def markdown(self) -> str:
        from .report import rate_with_se

        n = self.images
        rows = [
            f"| t* | non-adaptive | BPDA + EOT | full gradient + EOT | full gradient, worst of {self.attempts} | s |",
            "|---|---|---|---|---|---|",
        ]
        for i, t in enumerate(self.t_stars):
            cells = [rate_with_se(v[i], n) for v in (self.non_adaptive, self.bpda, self.full, self.worst_of_n)]
            rows.append(f"| {t} | " + " | ".join(cells) + f" | {self.seconds[i]:.0f} |")
        return "\n".join(rows)


def adaptive_table(
    diff, unet, clf, x, y, t_stars, steps: int, *, norm: str, eps: float, attack_steps: int = 100, eot: int = 20,
    attempts: int = 10, seed: int = 0, log=lambda m: None,
) -> AdaptiveTable:  # fmt: skip
    """The adaptive evaluation of purification at every t* on images (x, y) (see :class:`AdaptiveTable`)."""
    from .attacks import auto

    check_positive("attempts", attempts, integer=True)
    check_positive("attack steps", attack_steps, integer=True)
    queries = attack_steps * auto.QUERIES // auto.STEPS  # Square's queries scale with the iterations (5,000 at 100)
    clean_adv, _ = auto.evaluate(clf, x, y, norm=norm, eps=eps, seed=seed, steps=attack_steps, queries=queries)
    cols = {k: [] for k in ("non_adaptive", "bpda", "full", "worst_of_n", "seconds")}
    for t in t_stars:
        t0 = time.perf_counter()
        judge = Purified(diff, unet, clf, t, steps, "bpda", seed=seed + 1)
        with torch.no_grad():
            cols["non_adaptive"].append((judge(clean_adv).argmax(1) == y).float().mean().item())
        found = {}
        for g in GRADIENTS:
            attacked = Purified(diff, unet, clf, t, steps, g, seed=seed + 2)
            found[g], r = auto.evaluate(attacked, x, y, norm=norm, eps=eps, version="rand", seed=seed,
                                        steps=attack_steps, eot=eot, attacks=("apgd-ce",))  # fmt: skip
            cols[g].append(r.robust)
            log(f"  t* = {t}, {g} gradient + EOT-{eot}: {100 * r.robust:.1f}% still right")
        adv, ok = found["full"], torch.ones_like(y, dtype=torch.bool)
        judge = Purified(diff, unet, clf, t, steps, "bpda", seed=seed + 3)
        with torch.no_grad():
            for _ in range(attempts):  # the full-gradient attack's images, purified again and again
                ok &= judge(adv).argmax(1) == y
        cols["worst_of_n"].append(ok.float().mean().item())
        cols["seconds"].append(time.perf_counter() - t0)
    return AdaptiveTable(
        auto.check_norm(norm), float(eps), int(x.shape[0]), list(t_stars), attack_steps, eot, attempts, **cols
    )


#: t* (for T = 1000 steps; scaled to a model's T) and the DDIM steps back, where the command is not told.
DEFAULT_T_STARS, DEFAULT_STEPS = (50, 100, 200, 300), 20


def default_t_stars(T: int) -> list[int]:
    """DEFAULT_T_STARS scaled from 1000 timesteps to ``T`` (each at least 1, below T, without repeats)."""
    return sorted({min(T - 1, max(1, round(t * T / 1000))) for t in DEFAULT_T_STARS})


def run(
    pipe, ckpt: str | Path, t_stars, steps: int | None, limit: int, samples=(), adaptive: dict | None = None
) -> tuple[PurificationTable, AdaptiveTable | None]:
    """``ddmini purify``: purify ``limit`` clean test images, as many PGD-L2 attacks on them made against
    the target, and the deceptive ``samples`` ([NAME=]PATH) with the clean model at ``ckpt`` at every t*;
    with ``adaptive`` (norm, eps, attack_steps, eot, attempts: :func:`adaptive_table`'s), the adaptive
    evaluation on the same clean test images too; writes RUN_DIR/purify/purify.md and purify.json."""
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
    adapt = None
    if adaptive:
        from .robust import default_eps

        if adaptive.get("eps") is None:
            adaptive = {**adaptive, "eps": default_eps(pipe.cfg.dataset, adaptive["norm"])}
        pipe.log(f"adaptive attacks on the purified target ({limit} test images; every t*)")
        x, y = xt.to(pipe.device), yt.to(pipe.device)
        adapt = adaptive_table(diff, model, clf, x, y, list(t_stars), steps, seed=pipe.cfg.sample.seed, log=pipe.log,
                               **adaptive)  # fmt: skip
    write_purification(
        table,
        pipe.run_dir / "purify",
        f"Purification with {Path(ckpt).name} ({pipe.cfg.dataset}, DDIM-{steps} back)",
        adapt,
    )
    return table, adapt
