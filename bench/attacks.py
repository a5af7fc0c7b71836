"""PGD-L2 throughput on the MNIST training set: ddmini vs a straightforward reference loop.

    python bench/attacks.py [--classifier runs/classifier.pt] [--limit N] [--steps 10] [--eps 1.5]

The reference is the loop a user would write first (torchattacks style): batches of 256, the model as
trained (BatchNorm, parameters requiring grad), ``loss.backward()`` then ``x.grad``. ddmini's
``attack_dataset`` folds BatchNorm into the convolutions, freezes the parameters (no weight
gradients), runs channels-last and keeps each batch through all steps. Both are timed in the same run
on the same images; the outputs are compared before the figures are printed.
Without --classifier the default classifier is trained first (about a minute, not timed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from ddmini import attacks, classifier, data  # noqa: E402
from ddmini.attacks.stage import attack_dataset  # noqa: E402
from ddmini.config import AttackConfig, ClassifierConfig  # noqa: E402


def reference_pgd_l2(model, x, y, eps, alpha, steps, batch_size=256):
    """The textbook loop: per batch, per step, backward through the model as it is."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        x0, yb = x[i : i + batch_size], y[i : i + batch_size]
        xa = x0.clone()
        for _ in range(steps):
            xa.requires_grad_(True)
            loss = F.cross_entropy(model(xa), yb, reduction="sum")
            model.zero_grad()
            loss.backward()
            g = xa.grad.detach()
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            d = xa.detach() + alpha * g - x0
            d = d * torch.clamp(eps / d.flatten(1).norm(dim=1).clamp_min(1e-12), max=1.0).view(-1, 1, 1, 1)
            xa = torch.clamp(x0 + d, 0, 1).detach()
        out.append(xa)
    return torch.cat(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("DDMINI_DATA", "../shared/data/mnist"))
    p.add_argument("--classifier", default=None)
    p.add_argument("--limit", type=int, default=None, help="images to attack (default: all 60,000)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eps", type=float, default=AttackConfig.eps)
    p.add_argument("--no-reference", action="store_true", help="time ddmini only")
    a = p.parse_args()
    x, y = data.load_mnist(a.data_dir, "train")
    if a.limit:
        x, y = x[: a.limit], y[: a.limit]
    if a.classifier:
        model, _, _ = classifier.load(a.classifier)
    else:
        print("training the default classifier (not timed) ...", flush=True)
        model = classifier.train(ClassifierConfig(), *data.load_mnist(a.data_dir, "train")).model.eval()
    cfg = AttackConfig(eps=a.eps, steps=a.steps)
    n = x.shape[0]
    print(f"machine: {machine()}")
    print(f"PGD-L2 eps={cfg.eps} alpha={cfg.step_size} steps={cfg.steps} on {n} training images")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = attack_dataset(model, x, y, cfg, tmp, key="bench")
        t_ddmini = time.perf_counter() - t0
    print(
        f"ddmini attack_dataset : {t_ddmini:7.1f} s  {n / t_ddmini:7.0f} img/s  "
        f"success {100 * res.success.float().mean():.2f}%"
    )
    if a.no_reference:
        return
    t0 = time.perf_counter()
    ref = reference_pgd_l2(model, x, y, cfg.eps, cfg.step_size, cfg.steps)
    t_ref = time.perf_counter() - t0
    ok_ref = attacks.success(model, ref, y).float().mean()
    diff = (ref - res.x_adv).flatten(1).norm(dim=1)
    print(f"reference loop        : {t_ref:7.1f} s  {n / t_ref:7.0f} img/s  success {100 * ok_ref:.2f}%")
    print(
        f"agreement: median L2 distance between the two adversarial sets {diff.median():.2e} "
        f"(float rounding; BatchNorm folded), success rates differ by "
        f"{100 * abs(ok_ref - res.success.float().mean()):.2f} points"
    )
    print(f"speed-up: {t_ref / t_ddmini:.2f}x")


if __name__ == "__main__":
    main()
