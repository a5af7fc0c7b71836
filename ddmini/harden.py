"""Does training on deceptive samples make a classifier harder to fool? ``ddmini harden``.

Five arms, each the target's architecture trained as the run's classifier stage (cached in RUN_DIR/cache):

- ``clean``: the run's target itself (the baseline);
- ``pgd``: PGD-L2 adversarial training at the attack's eps (Madry et al., arXiv 1706.06083);
- ``deceptive``: the clean training images plus a pool of deceptive samples from the p = 1 model, each
  labelled with its conditioning label (the label it was generated to look like);
- ``pgd+deceptive``: both;
- ``deceptive-fresh``: as ``deceptive``, but every epoch adds a fresh pool of the same size (the first
  epoch the pool itself, the others new samples of another seed): more distinct samples for a sampling
  pass per epoch.

The pool is sampled once (a cached samples stage) and joins the training set for every epoch; the fresh
arm's extra pools are one more cached samples stage, cut into one part per epoch. Every arm is scored on:
clean test accuracy; robust accuracy under PGD-L2 at each ``eval_eps`` (``eval_steps`` steps, worst case
over ``eval_restarts`` random restarts, the first ``eval_limit`` test images); the misclassified share of
held-out deceptive samples (another sampling seed); the misclassified share of PGD-L2 attacks made against
the undefended target (transfer); AutoAttack's robust accuracy, L-inf and L2 at the dataset's radii, on the
first ``autoattack_limit`` test images (:mod:`ddmini.robust`, cached per arm); and wall seconds per training
example, pool sampling included. Rates come with their binomial standard errors (``report.rate_with_se``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from . import classifier
from .attacks import pgd_l2, robust_accuracy
from .attacks.auto import reduced
from .classifier import fast_copy
from .config import HARDEN_ARMS, ClassifierConfig, HardenConfig
from .report import rate_with_se, write_json, write_text


class Arm(NamedTuple):
    """What an arm trains on."""

    adversarial: bool  # PGD-L2 adversarial training at the attack's eps
    pool: bool  # the deceptive pool in the training set
    fresh: bool  # a fresh pool every epoch


ARMS = dict(
    zip(
        HARDEN_ARMS,
        [
            Arm(False, False, False),
            Arm(True, False, False),
            Arm(False, True, False),
            Arm(True, True, False),
            Arm(False, True, True),
        ],
    )
)

#: Published anchor (not run here): an L2-PGD-trained small MNIST CNN in locuslab/robust_union (Maini et
#: al. 2020), first 1,000 test images, 10 restarts.
ANCHOR = {
    "source": "locuslab/robust_union, L2-PGD-trained small CNN (published, not run here)",
    "clean_accuracy": 0.994,
    "robust": {"1.5": 0.87},
}


def parse_arms(text: str) -> list[str]:
    arms = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise ValueError(f"--arms: unknown arm {bad[0] if bad else repr(text)}; choose from {', '.join(ARMS)}")
    return list(dict.fromkeys(arms))


def arm_config(target: ClassifierConfig, arm: str, eps: float) -> ClassifierConfig:
    """The classifier config of an arm: the target's, with PGD-L2 adversarial training at ``eps`` for the
    PGD arms (the deceptive pool is an input of the stage, not a config field)."""
    return replace(target, adv_eps=eps) if ARMS[arm].adversarial else replace(target)


@dataclass
class ArmResult:
    arm: str
    clean_accuracy: float
    clean_images: int
    robust_accuracy: dict  # eps (text) -> accuracy on robust_images
    robust_images: int
    heldout_misclassified: float  # held-out deceptive samples, against their conditioning labels
    heldout_images: int
    transfer_misclassified: float  # PGD-L2 attacks made against the undefended target
    transfer_images: int
    train_seconds: float
    pool_seconds: float  # sampling the deceptive pool (0 for arms without it)
    examples_seen: int  # epochs x training-set size
    autoattack: dict = field(default_factory=dict)  # "linf 0.3" / "l2 1.5" -> AutoAttack accuracy (ddmini.robust)
    autoattack_images: int = 0

    def summary_line(self) -> str:
        rob = ", ".join(f"eps {e} {100 * v:.1f}%" for e, v in self.robust_accuracy.items())
        auto = "".join(f", AutoAttack {k} {100 * v:.1f}%" for k, v in self.autoattack.items())
        return f"arm {self.arm}: clean {100 * self.clean_accuracy:.2f}%, robust (PGD-L2) {rob}{auto}"

    @property
    def seconds_per_example(self) -> float:
        return (self.train_seconds + self.pool_seconds) / max(self.examples_seen, 1)


@dataclass
class HardenTable:
    arms: list[ArmResult]
    config: dict
    attack_eps: float
    anchor: dict = field(default_factory=lambda: dict(ANCHOR))

    def markdown(self) -> str:
        eps = list(self.arms[0].robust_accuracy) if self.arms else []
        auto = list(self.arms[0].autoattack) if self.arms else []
        norm_name = {"linf": "L-inf", "l2": "L2"}
        head = (
            "| arm | clean test accuracy | "
            + " | ".join(f"robust, L2 eps {e}" for e in eps)
            + "".join(f" | AutoAttack, {norm_name[k.split()[0]]} eps {k.split()[1]}" for k in auto)
            + " | held-out deceptive misclassified | transferred PGD misclassified | s per training example |"
        )
        rows = [head, "|---" * (5 + len(eps) + len(auto)) + "|"]

        for a in self.arms:
            rows.append(
                f"| {a.arm} | {rate_with_se(a.clean_accuracy, a.clean_images)} | "
                + " | ".join(rate_with_se(a.robust_accuracy[e], a.robust_images) for e in eps)
                + "".join(f" | {rate_with_se(a.autoattack[k], a.autoattack_images)}" for k in auto)
                + f" | {rate_with_se(a.heldout_misclassified, a.heldout_images)}"
                f" | {rate_with_se(a.transfer_misclassified, a.transfer_images)}"
                f" | {1e3 * a.seconds_per_example:.2f} ms |"
            )
        anc = self.anchor
        published = ", ".join(f"{100 * v:.0f} % at eps {e}" for e, v in anc["robust"].items())
        rows.append(
            f"| anchor: {anc['source']} | {100 * anc['clean_accuracy']:.1f} % | {published} |"
            + " - |" * (len(eps) - 1 + len(auto))
            + " - | - | - |"
        )
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return {
            "arms": [{**asdict(a), "seconds_per_example": a.seconds_per_example} for a in self.arms],
            "config": self.config,
            "attack_eps": self.attack_eps,
            "anchor": self.anchor,
        }


def evaluate_arm(
    arm: str,
    model,
    metrics: dict,
    cfg: HardenConfig,
    test: tuple,
    heldout: tuple,
    transfer: tuple,
    *,
    pool_seconds: float,
    examples_seen: int,
    device="cpu",
    autoattack: tuple[dict, int] = ({}, 0),
) -> ArmResult:
    """Score one arm's classifier (see the module docstring); ``autoattack``: its AutoAttack accuracies (measured
    by :func:`ddmini.robust.robust`) and on how many images."""
    xt, yt = test
    x, y = xt[: cfg.eval_limit].to(device), yt[: cfg.eval_limit].to(device)
    fast = fast_copy(model, torch.device(device))
    robust = {}
    for e in cfg.eval_eps:

        def attack(m, xb, yb, seed, e=e):
            return pgd_l2(m, xb, yb, e, 2.5 * e / cfg.eval_steps, cfg.eval_steps, random_start=True, seed=seed)

        robust[f"{e:g}"] = robust_accuracy(fast, x, y, attack, cfg.eval_restarts, seed=cfg.seed)
    return ArmResult(
        arm=arm,
        clean_accuracy=classifier.accuracy(model, xt, yt),
        clean_images=int(xt.shape[0]),
        robust_accuracy=robust,
        robust_images=int(x.shape[0]),
        heldout_misclassified=1.0 - classifier.accuracy(model, *heldout),
        heldout_images=int(heldout[0].shape[0]),
        transfer_misclassified=1.0 - classifier.accuracy(model, *transfer),
        transfer_images=int(transfer[0].shape[0]),
        train_seconds=float(metrics.get("train_seconds") or 0.0),
        pool_seconds=pool_seconds,
        examples_seen=examples_seen,
        autoattack=dict(autoattack[0]),
        autoattack_images=autoattack[1],
    )


def write(t: HardenTable, where: Path, title: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    c = t.config
    cut = reduced(c["autoattack_steps"], c["autoattack_queries"])
    write_text(
        f"# {title}\n\nEvery arm is the target's architecture. Robust accuracy: PGD-L2, {c['eval_steps']} steps of "
        f"2.5 eps / steps from a random start, worst case over {c['eval_restarts']} restarts, first "
        f"{c['eval_limit']} test images. Held-out deceptive samples: another sampling seed than the pool's, "
        f"scored against their conditioning labels. Transferred PGD: PGD-L2 (eps {t.attack_eps:g}) attacks "
        f"made against the undefended target that fooled it. AutoAttack (`ddmini robust`): the standard protocol "
        f"(APGD-CE, APGD-T, FAB-T, Square){cut}, first {c['autoattack_limit']} test images. ± one binomial "
        f"standard error. Seconds per "
        f"training example include sampling the deceptive pool.\n\n{t.markdown()}\n",
        where / "harden.md",
    )
    write_json(t.to_dict(), where / "harden.json")


def run(
    pipe,
    ckpt: str | Path,
    arm_names: list[str],
    hcfg: HardenConfig,
    on_arm: Callable[[ArmResult], None] = lambda r: None,
) -> HardenTable:
    """``ddmini harden``: train every arm of ``arm_names`` as a cached classifier stage of ``pipe`` (the pool
    sampled from the deceptive diffusion model at ``ckpt``), score each (``on_arm`` sees each result) and
    write RUN_DIR/harden/harden.md and harden.json."""
    from . import checkpoint, robust, train
    from .transfer import attacked_source

    dev, base = pipe.device, pipe.cfg
    model, tcfg, _ = train.load_ema(ckpt, dev, base.dataset)
    x, _, xt, yt, _ = pipe.data()
    shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"{ckpt}: makes {'x'.join(map(str, shape))} images; {base.dataset} has {tuple(x.shape[1:])}")
    target, ckey, _ = pipe.classifier()
    dkey = checkpoint.file_digest(ckpt)[:16]
    seed, arms = hcfg.seed, [ARMS[a] for a in arm_names]
    pool = pipe.samples(model, tcfg, dkey, 1.0, num=hcfg.pool, seed=seed + 1) if any(a.pool for a in arms) else None
    heldout = pipe.samples(model, tcfg, dkey, 1.0, num=hcfg.heldout, seed=seed + 2)
    fresh = pipe.attacked(target, ckey, images=(xt[: hcfg.eval_limit], yt[: hcfg.eval_limit]), split="test")
    transfer = attacked_source(fresh.result)
    if transfer[0].shape[0] == 0:
        raise ValueError("the PGD-L2 attack on the test images succeeded on none: no transfer row to score")
    epochs = base.classifier.epochs
    more = None
    if epochs > 1 and any(a.fresh for a in arms):
        more = pipe.samples(model, tcfg, dkey, 1.0, num=(epochs - 1) * hcfg.pool, seed=seed + 3)
    rows = []
    for name in arm_names:
        arm, extra, pool_seconds = ARMS[name], None, 0.0
        if arm.pool:
            extra, pool_seconds = (
                (pool.images, pool.labels, f"deceptive-pool-{dkey}-{hcfg.pool}-{seed + 1}"),
                pool.seconds,
            )
        if arm.fresh and more is not None:  # the pool for the first epoch, fresh samples for the others
            key = f"{extra[2]}-fresh-{(epochs - 1) * hcfg.pool}-{seed + 3}"
            extra = (torch.cat([pool.images, more.images]), torch.cat([pool.labels, more.labels]), key)
            pool_seconds += more.seconds
        cfg = arm_config(base.classifier, name, base.attack.eps)
        clf, akey, m = pipe.classifier(cfg, extra=extra, per_epoch=arm.fresh)
        auto, n_auto = {}, min(hcfg.autoattack_limit, xt.shape[0])
        for norm in ("linf", "l2") if n_auto else ():
            e = robust.default_eps(base.dataset, norm)
            got, _ = robust.robust(pipe, clf, akey, norm=norm, eps=e, limit=n_auto, seed=seed,
                                   steps=hcfg.autoattack_steps, queries=hcfg.autoattack_queries)  # fmt: skip
            auto[f"{norm} {e:g}"] = got.robust
        n_train = x.shape[0] + (hcfg.pool if arm.pool else 0)
        rows.append(
            evaluate_arm(
                name,
                clf,
                m,
                hcfg,
                (xt, yt),
                heldout[:2],
                transfer,
                pool_seconds=pool_seconds,
                examples_seen=cfg.epochs * n_train,
                device=dev,
                autoattack=(auto, n_auto),
            )
        )
        on_arm(rows[-1])
    table = HardenTable(rows, asdict(hcfg), base.attack.eps)
    write(
        table,
        pipe.run_dir / "harden",
        f"Adversarial training with deceptive samples ({base.dataset}, preset "
        f"{getattr(pipe, 'preset', '?')}, pool from {Path(ckpt).name})",
    )
    return table
