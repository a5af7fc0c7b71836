"""Do deceptive samples fool other classifiers? The classifier zoo and the transfer matrix.

The zoo (``ddmini zoo``): the target's architecture with two other seeds, an MLP, a residual CNN and the
target's architecture adversarially trained with PGD-L2 at the attack's eps (Madry et al. 1706.06083),
each a classifier stage of the run (cached by its config in RUN_DIR/cache). The transfer matrix
(``ddmini transfer``): the misclassified share, on the target and on every zoo member, of generated
images (samples files, scored against their conditioning labels), of the attacked training images the
diffusion model learns from, and of fresh PGD-L2 attacks on test images made against the target: do
generated images transfer more or less than the perturbations they imitate?
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from . import classifier
from .config import REFERENCE_IMAGES, ClassifierConfig
from .report import matrix_png, write_json, write_text
from .result import Transfer


def zoo_configs(target: ClassifierConfig, attack_eps: float) -> dict[str, ClassifierConfig]:
    """The zoo's members, by name: other seeds, other architectures, and adversarial training."""
    return {
        f"cnn seed {target.seed + 1}": replace(target, seed=target.seed + 1),
        f"cnn seed {target.seed + 2}": replace(target, seed=target.seed + 2),
        "mlp": replace(target, arch="mlp"),
        "resnet": replace(target, arch="resnet"),
        f"cnn PGD-L2 trained (eps {attack_eps:g})": replace(target, adv_eps=attack_eps),
    }


def zoo_table(pipe) -> str:
    """Train (or find cached) the target and every zoo member as classifier stages of ``pipe``: a markdown
    table of each one's architecture, seed, adversarial radius, test accuracy and training seconds."""
    rows = [
        f"| classifier (preset {getattr(pipe, 'preset', '?')}) | architecture | seed | adversarial eps "
        "| test accuracy | train s |",
        "|---|---|---|---|---|---|",
    ]
    for member, cfg in {"target": pipe.cfg.classifier, **zoo_configs(pipe.cfg.classifier, pipe.cfg.attack.eps)}.items():
        m = pipe.classifier(cfg).metrics
        rows.append(
            f"| {member} | {cfg.arch} | {cfg.seed} | {cfg.adv_eps:g} | {100 * m['test_accuracy']:.2f}% "
            f"| {m.get('train_seconds') or 0:.0f} |"
        )
    return "\n".join(rows)


def matrix(models: dict[str, torch.nn.Module], sources: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Transfer:
    """The share of each source's images (x, labels) that each model labels otherwise."""
    rates, counts = [], []
    for name, (x, y) in sources.items():
        if x.shape[0] == 0:
            raise ValueError(f"transfer: the source '{name}' has no images (an attack that succeeded on none?)")
        counts.append(int(x.shape[0]))
        rates.append([1.0 - classifier.accuracy(m, x, y) for m in models.values()])
    return Transfer(list(sources), list(models), rates, counts)


def attacked_source(adv, limit: int = REFERENCE_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """The successfully attacked images of an attacked set (the first ``limit``), with their true labels."""
    idx = adv.success.nonzero().flatten()[:limit]
    return adv.x_adv[idx], adv.y[idx]


def zoo_matrix(pipe, target, ckey: str, generated: dict, autoattack_limit: int | None = 0) -> Transfer:
    """The transfer matrix of a run (``pipe``, a :class:`ddmini.pipeline.Pipeline`): the target and every zoo
    member (cached classifier stages, trained if missing) on each generated source (name -> (images,
    labels)), the run's successfully attacked training images and fresh attacks on its test images (None on
    ranks other than 0 under torchrun, which still take part in the stages). With ``autoattack_limit``, each
    classifier's AutoAttack accuracy (L-inf and L2 at the dataset's radii, on that many test images: cached
    ``ddmini.robust`` records; None: the preset's harden ``autoattack_limit``) joins the matrix, so what fools a
    member reads against how robust it is."""
    from . import robust
    from .attacks import auto as aa
    from .presets import harden_config

    hcfg = harden_config(getattr(pipe, "preset", None))  # the AutoAttack sizes (reduced in the smoke preset)
    if autoattack_limit is None:
        autoattack_limit = hcfg.autoattack_limit

    cfg = pipe.cfg
    models, keys = {"target": target}, {"target": ckey}
    for member, mcfg in zoo_configs(cfg.classifier, cfg.attack.eps).items():
        models[member], keys[member], _ = pipe.classifier(mcfg)
    sources = dict(generated)
    adv, _ = pipe.attacked(target, ckey)
    sources["attacked training images"] = attacked_source(adv)
    _, _, xt, yt, _ = pipe.data()
    fresh, _ = pipe.attacked(target, ckey, images=(xt, yt), split="test")
    title = {"pgd_l2": "PGD-L2", "pgd_linf": "PGD-Linf", "fgsm": "FGSM", "cw_l2": "CW-L2"}[cfg.attack.attack]
    sources[f"fresh {title} on test images"] = attacked_source(fresh)
    auto, n = {}, min(autoattack_limit, xt.shape[0])
    for norm in ("linf", "l2") if n and pipe.world.is_main else ():
        e = robust.default_eps(cfg.dataset, norm)
        sizes = {"steps": hcfg.autoattack_steps, "queries": hcfg.autoattack_queries}
        got = [robust.robust(pipe, m, keys[k], norm=norm, eps=e, limit=n, **sizes)[0] for k, m in models.items()]
        auto[f"{norm} {e:g}"] = [r.robust for r in got]
    if not pipe.world.is_main:
        return None
    note = aa.reduced(hcfg.autoattack_steps, hcfg.autoattack_queries) if auto else ""
    t = matrix(models, sources)
    return replace(t, autoattack=auto, autoattack_images=n if auto else 0, autoattack_reduced=note)


def write(t: Transfer, where: Path, title: str) -> None:

    where.mkdir(parents=True, exist_ok=True)
    write_text(
        f"# {title}\n\nShare of each source's images that each classifier gets wrong (generated images: "
        f"against their conditioning label; attacked images: against their true label).\n\n"
        f"{t.markdown()}\n\nPicture: `transfer.png`.\n",
        where / "transfer.md",
    )
    write_json(
        {
            "sources": t.sources,
            "classifiers": t.classifiers,
            "misclassified": t.rates,
            "images": t.images,
            "autoattack_accuracy": t.autoattack,
            "autoattack_images": t.autoattack_images,
            "autoattack_reduced": t.autoattack_reduced.strip(" []"),
        },
        where / "transfer.json",
    )
    matrix_png(t.sources, t.classifiers, t.rates, where / "transfer.png")
