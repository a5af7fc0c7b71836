"""Sample quality of a trained diffusion model: conditional accuracy and Fréchet distance.

    python bench/quality.py --checkpoint D.pt --classifier C.pt [--num 1000] [--steps 100]
                            [--guidance 1,2,3] [--fd-num 2000]

Conditional accuracy = share of samples the target classifier labels as their conditioning class
(DDIM with --steps steps, eta 0, balanced labels, seed 0). Fréchet distance in the classifier's
feature space against the MNIST test set, for --fd-num samples (guidance 1, and every scale sampled
with at least --fd-num images), and, for scale, for the
same number of training images and of uniform-noise images. Everything is computed by ddmini's own
functions (ddmini.diffusion, ddmini.metrics).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from ddmini import classifier, data, metrics, train  # noqa: E402
from ddmini.config import SampleConfig  # noqa: E402
from ddmini.diffusion import Diffusion, balanced_labels  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--classifier", required=True)
    p.add_argument("--data-dir", default=os.environ.get("DDMINI_DATA", "../shared/data/mnist"))
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--guidance", default="1,2,3")
    p.add_argument("--fd-num", type=int, default=2000)
    a = p.parse_args()
    model, tcfg, ckpt = train.load_ema(a.checkpoint)
    clf, _, _ = classifier.load(a.classifier)
    diff = Diffusion(schedule_name=tcfg.schedule, T=tcfg.T)
    print(f"machine: {machine()}")
    print(f"model: {a.checkpoint} ({ckpt['step']} steps, {ckpt['seconds']:.0f} s of training)")
    print("\n| guidance | samples | DDIM steps | conditional accuracy | seconds |\n|---|---|---|---|---|")
    samples = {}
    for g in [float(v) for v in a.guidance.split(",")]:
        labels = balanced_labels(a.num)
        t0 = time.perf_counter()
        # batches of 256 and seed 0, as when the README's figures were measured (noise seeds go per batch)
        x = diff.sample(model, labels, SampleConfig(steps=a.steps, guidance=g, batch_size=256, seed=0))
        secs = time.perf_counter() - t0
        samples[g] = x
        acc = classifier.accuracy(clf, x, labels)
        print(f"| {g:g} | {a.num} | {a.steps} | {100 * acc:.2f}% | {secs:.0f} |", flush=True)
    xt, _ = data.load_mnist(a.data_dir, "test")
    xtr, _ = data.load_mnist(a.data_dir, "train")
    _, ft = classifier.predict(clf, xt, features=True)
    n = a.fd_num
    # every guidance scale sampled with >= n images; guidance 1 always (sampled here if it was not)
    sets = {f"generated (guidance {w:g})": x[:n] for w, x in samples.items() if x.shape[0] >= n}
    if "generated (guidance 1)" not in sets:
        sets["generated (guidance 1)"] = diff.sample(
            model, balanced_labels(n), SampleConfig(steps=a.steps, guidance=1.0, batch_size=256, seed=1)
        )
    g = torch.Generator().manual_seed(0)
    sets["MNIST training images"] = xtr[torch.randperm(xtr.shape[0], generator=g)[:n]]
    sets["uniform noise"] = torch.rand(n, 1, 28, 28, generator=g)
    print(f"\n| {n} images vs the 10,000 test images | Fréchet distance (classifier features) |\n|---|---|")
    for name, imgs in sets.items():
        _, f = classifier.predict(clf, imgs, features=True)
        print(f"| {name} | {metrics.frechet_from_features(f, ft).item():.3f} |")


if __name__ == "__main__":
    main()
