"""Adversarial training per example: ddmini's PGD-L2 training epoch vs the plain loop a user writes first.

    python bench/harden.py [--limit 6400] [--eps 1.6] [--steps 7]

ddmini: ``classifier.train`` with ``adv_eps`` (the harden stage's PGD arms and the zoo's adversarially
trained member): per batch, ``ddmini.attacks.pgd_l2`` from a random start against the current model (eval
mode, parameters frozen), then one AdamW step on the attacked batch. The plain loop (Madry et al.
1706.06083, as tutorials write it): per batch, the same PGD written out with ``loss.backward()`` and
``x.grad`` through the model as it is (parameters requiring grad), then the same optimiser step. One epoch
of each on the same first --limit training images, same config, timed in the same run; the ratio is
ddmini's seconds per training example over the plain loop's (below 1: ddmini is faster).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from ddmini import classifier, data  # noqa: E402
from ddmini.config import ClassifierConfig  # noqa: E402


def plain_adversarial_epoch(cfg: ClassifierConfig, x, y) -> float:
    """The textbook loop; returns its wall seconds."""
    torch.manual_seed(cfg.seed)
    model = classifier.build(cfg, tuple(x.shape[1:]))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(x.shape[0] / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps_per_epoch)
    eps, k = cfg.adv_eps, cfg.adv_steps
    alpha = 2.5 * eps / k
    t0 = time.perf_counter()
    perm = torch.randperm(x.shape[0])
    for i in range(steps_per_epoch):
        idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        xb, yb = x[idx], y[idx]
        model.eval()
        delta = torch.randn_like(xb)
        delta = delta * (eps * torch.rand(len(xb), 1, 1, 1) / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        xa = (xb + delta).clamp(0, 1)
        for _ in range(k):
            xa = xa.detach().requires_grad_(True)
            F.cross_entropy(model(xa), yb).backward()
            g = xa.grad
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            d = (xa.detach() + alpha * g) - xb
            d = d * torch.clamp(eps / d.flatten(1).norm(dim=1).clamp_min(1e-12), max=1).view(-1, 1, 1, 1)
            xa = (xb + d).clamp(0, 1)
        model.train()
        loss = F.cross_entropy(model(xa.detach()), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("DDMINI_DATA", "../shared/data/mnist"))
    p.add_argument("--limit", type=int, default=6400)
    p.add_argument("--eps", type=float, default=1.6)
    p.add_argument("--steps", type=int, default=ClassifierConfig.adv_steps)
    a = p.parse_args()
    x, y = data.load(a.data_dir, "train")
    x, y = x[: a.limit], y[: a.limit]
    cfg = replace(ClassifierConfig(), epochs=1, adv_eps=a.eps, adv_steps=a.steps).validate()
    print(f"machine: {machine()}")
    t_plain = plain_adversarial_epoch(cfg, x, y)
    res = classifier.train(cfg, x, y)
    t_ours = res.train_seconds
    n = x.shape[0]
    print(
        f"\nPGD-L2 adversarial training, one epoch of {n} images (batch {cfg.batch_size}, eps {a.eps:g}, "
        f"{a.steps} steps from a random start, the target CNN):\n"
    )
    print("| loop | s per training example | ratio (ddmini / plain) |\n| --- | --- | --- |")
    print(f"| plain (backward through the model as it is) | {1e3 * t_plain / n:.3f} ms | |")
    print(f"| ddmini `classifier.train(adv_eps=...)` | {1e3 * t_ours / n:.3f} ms | {t_ours / t_plain:.2f}x |")


if __name__ == "__main__":
    main()
