"""Robust accuracy by AutoAttack (ddmini.attacks.auto) on the test set: the stage behind ``ddmini robust``.
One record per classifier, data, norm, eps, version, number of images and seed (RUN_DIR/cache/robust-<key>.json),
so a second command (or harden, or the transfer matrix) finds it instead of attacking again."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from . import checkpoint, classifier
from .attacks import auto as aa
from .attacks.base import check_positive


def default_eps(dataset: str, norm: str) -> float:
    """The radius ``ddmini robust`` attacks at on ``dataset`` under ``norm`` (presets.ROBUST_EPS)."""
    from .presets import ROBUST_EPS

    norm = aa.check_norm(norm)
    if (dataset, norm) not in ROBUST_EPS:
        raise ValueError(f"no default {norm} radius for dataset {dataset!r}: give --eps")
    return ROBUST_EPS[dataset, norm]


def robust_key(
    ckey: str, dkey: str, norm: str, eps: float, version: str, images: int, seed: int, sizes=(aa.STEPS, aa.QUERIES)
) -> str:
    extra = () if tuple(sizes) == (aa.STEPS, aa.QUERIES) else tuple(sizes)  # the protocol's keys stay as they were
    return checkpoint.fingerprint("autoattack", ckey, dkey, norm, float(eps), version, images, seed, *extra)


def robust(
    pipe,
    model,
    ckey: str,
    *,
    norm: str,
    eps: float | None,
    version: str = "standard",
    limit: int = 1000,
    seed: int = 0,
    steps: int = aa.STEPS,
    queries: int = aa.QUERIES,
) -> tuple[aa.AutoAttackResult, Path]:
    """AutoAttack on the first ``limit`` test images of ``pipe``'s data (0: all) against ``model`` (cache key
    ``ckey``) at radius ``eps`` (None: :func:`default_eps`): (the result, its record). The attack runs on a
    BatchNorm-folded copy of the model (:func:`ddmini.classifier.fast_copy`); each attack's robust accuracy is
    logged as it finishes. ``steps`` and ``queries`` below the protocol's (100, 5,000) are for quick looks
    (the smoke preset): the result says it was reduced."""
    norm = aa.check_norm(norm)
    eps = default_eps(pipe.cfg.dataset, norm) if eps is None else eps
    check_positive("eps", eps, allow_zero=False)
    if version not in aa.VERSIONS:
        raise ValueError(f"version must be one of {', '.join(aa.VERSIONS)}; got {version!r}")
    _, _, xt, yt, dkey = pipe.data()
    n = min(limit or len(xt), len(xt))
    key = robust_key(ckey, dkey, norm, eps, version, n, seed, (steps, queries))
    path = pipe.cache / f"robust-{key}.json"

    def read(d: dict) -> dict:
        if d.get("key") != key:
            raise ValueError("made for other settings")
        r = aa.AutoAttackResult(**d["result"])
        shares = [r.clean, r.robust, *r.after.values()]
        if (r.images, r.steps, r.queries) != (n, steps, queries) or not all(
            isinstance(v, float) and 0 <= v <= 1 for v in shares
        ):
            raise ValueError("its figures are not shares of the images attacked")
        if list(r.after) != list(aa.ATTACKS[version]) or r.robust != r.after[aa.ATTACKS[version][-1]]:
            raise ValueError("it does not hold every attack of the version")
        return d

    def make() -> dict:
        pipe.log(
            f"AutoAttack ({version}, {norm} eps {eps:g}) on {n} test images; each attack on the images still standing"
            + aa.reduced(steps, queries)
        )
        m = classifier.fast_copy(model, pipe.device)

        def said(a: str, acc: float) -> None:
            pipe.log(f"  after {a}: {100 * acc:.2f}% still classified correctly")

        _, r = aa.evaluate(
            m, xt[:n].to(pipe.device), yt[:n].to(pipe.device), norm=norm, eps=eps, version=version, seed=seed,
            steps=steps, queries=queries, on_attack=said,
        )  # fmt: skip
        return {"key": key, "result": asdict(r)}

    rec = checkpoint.record(path, read, make, pipe.log, "attacking again", pipe.world)
    return aa.AutoAttackResult(**rec["result"]), path
