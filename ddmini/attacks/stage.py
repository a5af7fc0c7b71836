"""Attack a whole dataset: chunked, resumable, stored as float with success mask and norms.

Layout of ``out_dir``::

    chunks/000000.pt ...   one per finished chunk (kept until the merge; a stale key is discarded)
    attacked.pt            the merged result (written atomically once every chunk is done)

An interrupted run leaves its finished chunks; running again with the same key recomputes nothing
that was finished. Under torchrun chunk i is attacked by rank i mod N (each chunk's randomness is
keyed by its first image, so the split changes nothing) and rank 0 merges: the same bytes at any
world size, resumable at any other. The stored images are float32: quantising them to 8 bits moves each pixel by up
to 1/510 and flips some successes back, which ``success_uint8`` measures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import checkpoint, distributed
from ..classifier import fast_copy
from ..config import REFERENCE_IMAGES, AttackConfig, from_dict, key_dict, to_dict
from ..runtime import progress
from . import ATTACKS
from .base import (
    MARGIN_SCALES,
    check_inputs,
    logit_margin,
    norms,
    num_outputs,
    predict_logits,
    prediction_shares,
    scaled_predictions,
)

RESULT_NAME = "attacked.pt"


@dataclass
class AttackedSet:
    """The attacked dataset: images in [0, 1] with their ORIGINAL labels, and what the attack did."""

    x_adv: torch.Tensor  # (N, C, H, W) float32
    y: torch.Tensor  # (N,) int64, original labels
    pred: torch.Tensor  # (N,) int64, classifier prediction on x_adv
    success: torch.Tensor  # (N,) bool, pred != y
    success_uint8: torch.Tensor  # (N,) bool, the same after rounding x_adv to 8 bits
    l2: torch.Tensor  # (N,) float32, ||x_adv - x||_2
    linf: torch.Tensor  # (N,) float32, ||x_adv - x||_inf
    config: AttackConfig
    seconds: float = 0.0
    key: str = ""
    extra: dict = field(default_factory=dict)
    target: torch.Tensor | None = None  # (N,) int64 for a targeted attack: success is pred == target

    def __len__(self) -> int:
        return self.y.shape[0]

    def summary(self) -> dict:
        n = max(len(self), 1)
        l2 = self.l2.double()
        return {
            "images": len(self),
            "success_rate": float(self.success.sum()) / n,
            "success_rate_uint8": float(self.success_uint8.sum()) / n,
            "successful": int(self.success.sum()),
            "l2_mean": float(l2.mean()) if len(self) else float("nan"),
            "l2_median": float(l2.median()) if len(self) else float("nan"),
            "l2_max": float(l2.max()) if len(self) else float("nan"),
            "linf_mean": float(self.linf.double().mean()) if len(self) else float("nan"),
            "linf_max": float(self.linf.max()) if len(self) else float("nan"),
            "seconds": self.seconds,
            "images_per_second": len(self) / self.seconds if self.seconds > 0 else float("nan"),
        }

    def margin(self, model: nn.Module, x: torch.Tensor, limit: int = REFERENCE_IMAGES, scales=MARGIN_SCALES) -> dict:
        """``scaled_success`` on the successful attacks (the first ``limit`` of them): the share still
        misclassified with s times their perturbation, per scale s, and for a targeted attack the share still
        classified as their target (``in_target``). ``x``: the clean images attacked."""
        if x.shape != self.x_adv.shape:
            raise ValueError(f"clean images {tuple(x.shape)} do not match the attacked set {tuple(self.x_adv.shape)}")
        idx = self.success.nonzero().flatten()[:limit]
        device = next(model.parameters()).device if isinstance(model, nn.Module) else x.device
        y = self.y[idx].to(device)
        target = None if self.target is None else self.target[idx].to(device)
        preds = scaled_predictions(model, x[idx].to(device), self.x_adv[idx].to(device), y, scales, target=target)
        out = {"images": int(idx.numel()), "scales": list(scales), "still_misclassified": prediction_shares(preds, y)}
        if target is not None:
            out["in_target"] = prediction_shares(preds, y, target)
        return out

    def summary_line(self, cfg: AttackConfig, split: str = "train") -> str:
        """One line of what the attack ``cfg`` did on this set (``ddmini attack``)."""
        s = self.summary()
        return (
            f"{cfg.describe()} on {s['images']} {split} images: success {100 * s['success_rate']:.2f}% (8-bit: "
            f"{100 * s['success_rate_uint8']:.2f}%), L2 mean {s['l2_mean']:.3f} max {s['l2_max']:.3f}, Linf mean "
            f"{s['linf_mean']:.3f}, {s['images_per_second']:.0f} img/s"
        )

    def margin_line(self, model: nn.Module, x: torch.Tensor) -> str | None:
        """One line of :meth:`margin` (None when no attack succeeded)."""
        m = self.margin(model, x)
        if not m["images"]:
            return None

        def per_scale(values):
            return ", ".join(f"s={sc:g} {100 * v:.1f}%" for sc, v in zip(m["scales"], values))

        line = f"  with s x its perturbation, still misclassified ({m['images']} successful images): "
        line += per_scale(m["still_misclassified"])
        if "in_target" in m:
            line += "\n  still in their target class: " + per_scale(m["in_target"])
        return line

    def save(self, path: str | Path) -> None:
        checkpoint.save(
            {
                "kind": "attacked",
                "key": self.key,
                "config": to_dict(self.config),
                "seconds": self.seconds,
                "extra": self.extra,
                "target": self.target,
                **{k: getattr(self, k) for k in _TENSORS},
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> AttackedSet:
        d = checkpoint.load_kind(path, "attacked", "attacked-set file", (*_TENSORS, "config"))
        n = d["y"].shape[0]
        target = d.get("target")
        if any(d[k].shape[0] != n for k in _TENSORS) or (target is not None and target.shape != (n,)):
            raise ValueError(f"{path}: attacked-set arrays disagree in length")
        return cls(
            **{k: d[k] for k in _TENSORS},
            config=from_dict(AttackConfig, d["config"]),
            seconds=float(d.get("seconds", 0.0)),
            key=d.get("key", ""),
            extra=d.get("extra", {}),
            target=target,
        )


_TENSORS = ("x_adv", "y", "pred", "success", "success_uint8", "l2", "linf")


def attack_key(cfg: AttackConfig, classifier_key: str, n: int, split: str = "train") -> str:
    """The attack stage's cache key: its config, the classifier's key (a digest of its checkpoint) and
    the images attacked (the first n of a split; the training split's keys are those of earlier runs)."""
    parts = (key_dict(cfg), classifier_key, int(n)) + (() if split == "train" else (split,))
    return checkpoint.fingerprint(*parts)


def run_attack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply the attack ``cfg`` describes to (x, y) (towards ``target`` when given) and return x_adv (same
    shape)."""
    fn = ATTACKS[cfg.attack]
    if cfg.attack == "fgsm":
        return fn(model, x, y, cfg.eps, batch_size=cfg.batch_size, target=target, objective=cfg.objective)
    if cfg.attack == "cw_l2":
        return fn(
            model, x, y, c=cfg.c, kappa=cfg.kappa, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, target=target
        )
    return fn(
        model,
        x,
        y,
        cfg.eps,
        cfg.step_size,
        cfg.steps,
        random_start=cfg.random_start,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        target=target,
        objective=cfg.objective,
        margin=cfg.margin,
    )


def targets(cfg: AttackConfig, y: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """The target class of each image under ``cfg.target`` (None when untargeted): shift, y + 1 mod C;
    random, a class other than y drawn with ``cfg.seed``; K, class K for every image (an image of class K
    itself is left out of the attack's successes). One ValueError line for a K that is no class or a set whose
    every image is of class K."""
    mode = cfg.target
    if not mode:
        return None
    if mode == "shift":
        return (y + 1) % num_classes
    if mode == "random":
        g = torch.Generator().manual_seed(cfg.seed)
        return (y + torch.randint(1, num_classes, y.shape, generator=g)) % num_classes
    k = int(mode)
    if k >= num_classes:
        raise ValueError(f"attack target {k} is not a class: the classifier has {num_classes} (0 to {num_classes - 1})")
    if y.numel() and bool((y == k).all()):
        raise ValueError(f"attack target {k}: every image is of class {k} already; nothing to attack")
    return torch.full_like(y, k)


def succeeded(logits: torch.Tensor, y: torch.Tensor, cfg: AttackConfig, target: torch.Tensor | None) -> torch.Tensor:
    """Per image: the attack ``cfg`` worked, by the classifier's ``logits`` on the attacked image: misclassified
    (or classified as its target, never its own class), with a logit margin of at least ``cfg.margin``."""
    if cfg.margin > 0:
        ok = logit_margin(logits, y, target) >= cfg.margin
    else:
        ok = logits.argmax(1) != y if target is None else logits.argmax(1) == target
    return ok if target is None else ok & (target != y)


def load_done(out_dir: str | Path, key: str, n: int) -> AttackedSet | None:
    """The finished attack in ``out_dir`` if it is there, intact, and made with ``key`` on ``n`` images;
    None otherwise (missing, corrupt or stale: to be recomputed)."""
    path = Path(out_dir) / RESULT_NAME
    if not path.exists():
        return None
    try:
        done = AttackedSet.load(path)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError):  # corrupt or edited: recomputed
        return None
    return done if done.key == key and len(done) == n else None


def load_done_on_all(out_dir: str | Path, key: str, n: int, world: distributed.World) -> AttackedSet | None:
    """:func:`load_done` decided by rank 0 for every rank (so ranks never disagree on whether to attack)."""
    done = load_done(out_dir, key, n) if world.is_main else None
    if not world.broadcast_object(done is not None):
        return None
    return done if world.is_main else _read_merged(out_dir, key, n)


def _read_merged(out_dir, key: str, n: int) -> AttackedSet:
    """On a rank other than 0: the attacked set rank 0 found or wrote."""
    done = load_done(out_dir, key, n)
    if done is None:
        raise RuntimeError(
            f"{Path(out_dir) / RESULT_NAME}: rank 0 reads it but this rank cannot; "
            "is the run directory on a file system every rank sees?"
        )
    return done


def attack_dataset(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    out_dir: str | Path,
    *,
    key: str = "",
    device: torch.device | str = "cpu",
    desc: str = "attack",
    world: distributed.World | None = None,
) -> AttackedSet:
    """Attack every image of (x, y) in chunks of ``cfg.chunk_size``, resuming from finished chunks in
    ``out_dir`` whose key matches; returns (and stores in out_dir/attacked.pt) the merged result.
    ``world`` (default: the one :func:`ddmini.distributed.init` joined) deals the chunks out to its ranks;
    rank 0 merges and every rank returns the merged result."""
    world = world or distributed.current()
    cfg.validate()
    check_inputs(model, x, y)
    out_dir = Path(out_dir)
    n = x.shape[0]
    done = load_done_on_all(out_dir, key, n, world)
    if done is not None:
        return done
    device = torch.device(device)
    chunk_dir = out_dir / "chunks"
    if world.is_main:
        chunk_dir.mkdir(parents=True, exist_ok=True)
    world.barrier()
    fast = fast_copy(model, device)
    tgt = targets(cfg, y, num_outputs(fast, x[:1].to(device))) if cfg.target else None
    starts = list(range(0, n, cfg.chunk_size))
    mine = [starts[i] for i in distributed.shares(len(starts), world)]
    bar = progress(
        total=sum(min(s + cfg.chunk_size, n) - s for s in mine),
        desc=desc,
        unit="img",
        disable=True if not world.is_main else None,
    )
    for start in mine:
        stop = min(start + cfg.chunk_size, n)
        _chunk(fast, x, y, tgt, cfg, key, start, stop, chunk_dir, device)
        bar.update(stop - start)
        bar.set_postfix(done=f"{stop}/{n}")
    bar.close()
    world.barrier()  # every rank's chunks are on disk
    if world.is_main:
        result = _merge(fast, x, y, tgt, cfg, key, starts, chunk_dir, device)
        result.save(out_dir / RESULT_NAME)
        for p in chunk_dir.glob("*.pt"):
            p.unlink(missing_ok=True)
    world.barrier()
    return result if world.is_main else _read_merged(out_dir, key, n)


def _chunk(fast, x, y, tgt, cfg: AttackConfig, key: str, start: int, stop: int, chunk_dir: Path, device) -> dict:
    """Chunk [start, stop) of the attack: read back if finished, else computed and written."""
    path = chunk_dir / f"{start:06d}.pt"
    part = _load_chunk(path, key, start, stop)
    if part is None:
        t0 = time.perf_counter()
        xb = x[start:stop].to(device)
        if device.type == "cpu" and xb.ndim == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        chunk_cfg = AttackConfig(**{**to_dict(cfg), "seed": cfg.seed + start})
        tb = None if tgt is None else tgt[start:stop].to(device)
        xa = run_attack(fast, xb, y[start:stop].to(device), chunk_cfg, target=tb)
        xa = xa.float().cpu().contiguous()
        part = {"key": key, "start": start, "stop": stop, "x_adv": xa, "seconds": time.perf_counter() - t0}
        checkpoint.save(part, path)
    return part


def _merge(fast, x, y, tgt, cfg: AttackConfig, key: str, starts: list[int], chunk_dir: Path, device) -> AttackedSet:
    """The attacked set from its chunks (a chunk missing or unreadable is computed here)."""
    n = x.shape[0]
    parts = [_chunk(fast, x, y, tgt, cfg, key, s, min(s + cfg.chunk_size, n), chunk_dir, device) for s in starts]
    seconds = sum(float(p["seconds"]) for p in parts)
    x_adv = torch.cat([p["x_adv"] for p in parts]) if parts else torch.empty_like(x)
    logits = predict_logits(fast, x_adv.to(device)).float().cpu()
    logits_q = predict_logits(fast, (torch.round(x_adv * 255) / 255).to(device)).float().cpu()
    l2, linf = norms(x_adv, x.float().cpu())
    y = y.cpu().clone()
    return AttackedSet(
        x_adv=x_adv,
        y=y,
        pred=logits.argmax(1) if n else torch.empty(0, dtype=torch.int64),
        success=succeeded(logits, y, cfg, tgt) if n else torch.empty(0, dtype=torch.bool),
        success_uint8=succeeded(logits_q, y, cfg, tgt) if n else torch.empty(0, dtype=torch.bool),
        l2=l2,
        linf=linf,
        config=cfg,
        seconds=seconds,
        key=key,
        target=None if tgt is None else tgt.cpu().clone(),
    )


def _load_chunk(path: Path, key: str, start: int, stop: int) -> dict | None:
    if not path.exists():
        return None
    try:
        part = checkpoint.load(path)
    except ValueError:
        return None  # half-written or corrupt: recompute
    ok = (
        isinstance(part, dict)
        and part.get("key") == key
        and part.get("start") == start
        and part.get("stop") == stop
        and isinstance(part.get("x_adv"), torch.Tensor)
        and part["x_adv"].shape[0] == stop - start
    )
    return part if ok else None
