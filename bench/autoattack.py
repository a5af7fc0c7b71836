"""AutoAttack, ddmini's against torchattacks' at equal parameters, on an adversarially trained CNN ddmini never saw.

    python bench/autoattack.py [--limit 1000] [--norm linf] [--eps 0.3] [--epochs 3] [--model PATH] [--seed 0]
    python bench/autoattack.py --square-seeds 0,1,2 [same options]

The model: a plain PyTorch CNN (two conv layers, 32 and 64 channels, no BatchNorm) trained here with PGD
adversarial training (Madry et al.: 7 steps of L-inf PGD at eps 0.3, step 0.1, random start) for --epochs on the
MNIST training set; saved to --model (bench-autoattack-cnn.pt) and loaded from there on the next run. The
protocol, both sides: APGD-CE 100 iterations, APGD-T 100 iterations x 9 targets, FAB-T 100 iterations x 9
targets, Square 5,000 queries, each on the images still standing (torchattacks' own AutoAttack runs 10 APGD
steps: its classes are set to these parameters here). Prints the clean and robust accuracy after each attack on
both sides, their seconds, and the ratio torchattacks / ddmini. torchattacks is installed with `pip install
--no-deps torchattacks scipy` (its torchvision requirement is never imported).

--square-seeds compares the two Squares alone, seed by seed: ddmini's APGD-CE, APGD-T and FAB-T (at --seed) pick the
images still standing, then each side's Square (5,000 queries) runs on those at each seed; prints how many each
fools.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from ddmini import data  # noqa: E402
from ddmini.attacks import auto as aa  # noqa: E402

#: torchattacks' names of the norms.
TA_NORM = {"linf": "Linf", "l2": "L2"}


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def pgd_train(model, x, y, epochs, eps=0.3, alpha=0.1, steps=7, batch=128, seed=0):
    """Madry et al.'s adversarial training, written out: every batch replaced by its L-inf PGD attack."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for ep in range(epochs):
        t0, order = time.perf_counter(), torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            xb, yb = x[idx], y[idx]
            model.eval()
            xa = (xb + eps * (2 * torch.rand(xb.shape, generator=g) - 1)).clamp(0, 1)
            for _ in range(steps):
                xa.requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(xa), yb), xa)
                xa = torch.min(torch.max(xa.detach() + alpha * grad.sign(), xb - eps), xb + eps).clamp(0, 1)
            model.train()
            loss = F.cross_entropy(model(xa), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  epoch {ep + 1}/{epochs}: {time.perf_counter() - t0:.0f} s, last loss {loss.item():.3f}", flush=True)
    return model.eval()


def torchattacks_aa(model, x, y, norm, eps, seed=0):
    """torchattacks' four attacks at the standard parameters, each on the images still standing."""
    import torchattacks as ta

    tn = TA_NORM[norm]
    attacks = {
        "apgd-ce": ta.APGD(model, norm=tn, eps=eps, steps=100, loss="ce", n_restarts=1, seed=seed),
        "apgd-t": ta.APGDT(model, norm=tn, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=seed),
        "fab-t": ta.FAB(model, norm=tn, eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=10, seed=seed),
        "square": ta.Square(model, norm=tn, eps=eps, n_queries=5000, n_restarts=1, seed=seed),
    }
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    after, secs = {}, {}
    for name, atk in attacks.items():
        t0 = time.perf_counter()
        idx = ok.nonzero().squeeze(1)
        for i in range(0, idx.numel(), 500):
            b = idx[i : i + 500]
            adv = atk(x[b], y[b])
            with torch.no_grad():
                ok[b] &= model(adv).argmax(1) == y[b]
        after[name], secs[name] = ok.float().mean().item(), time.perf_counter() - t0
        print(f"  torchattacks {name}: {100 * after[name]:.2f} % ({secs[name]:.0f} s)", flush=True)
    return after, secs


def square_seeds(model, x, y, norm, eps, seeds, seed=0):
    """Each side's Square alone at each seed on the images ddmini's first three attacks leave standing."""
    import torchattacks as ta

    adv, _ = aa.evaluate(model, x, y, norm=norm, eps=eps, seed=seed, attacks=aa.ATTACKS["standard"][:3])
    with torch.no_grad():
        ok = model(adv).argmax(1) == y
    x, y = x[ok], y[ok]
    print(f"Square alone, {norm} eps {eps:g}, on the {len(x)} images standing after ddmini's apgd-ce, apgd-t, fab-t")
    print("| seed | ddmini fools | torchattacks fools | ddmini s | torchattacks s |\n|---|---|---|---|---|")
    for s in seeds:
        t0 = time.perf_counter()
        _, res = aa.evaluate(model, x, y, norm=norm, eps=eps, seed=s, attacks=("square",))
        t1 = time.perf_counter()
        theirs = ta.Square(model, norm=TA_NORM[norm], eps=eps, n_queries=5000, seed=s)(x, y)
        with torch.no_grad():
            fooled = int((model(theirs).argmax(1) != y).sum())
        ours = round((1 - res.robust) * len(x))
        print(f"| {s} | {ours} | {fooled} | {t1 - t0:.0f} | {time.perf_counter() - t1:.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--norm", choices=aa.NORMS, default="linf")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--model", default="bench-autoattack-cnn.pt")
    p.add_argument("--seed", type=int, default=0, help="both sides' random draws (Square, restarts)")
    p.add_argument("--square-seeds", default=None, help="e.g. 0,1,2: only the two Squares alone, at each seed")
    a = p.parse_args()
    print(machine())
    x, y = data.load_mnist(a.data_dir, "train")
    xt, yt = data.load_mnist(a.data_dir, "test")
    model = cnn()
    if Path(a.model).is_file():
        model.load_state_dict(torch.load(a.model, weights_only=True))
        print(f"model: {a.model}")
    else:
        print(f"PGD adversarial training, {a.epochs} epochs (not timed)", flush=True)
        torch.save(pgd_train(model, x, y, a.epochs).state_dict(), a.model)
    model.eval()
    xt, yt = xt[: a.limit], yt[: a.limit]
    if a.square_seeds:
        seeds = [int(v) for v in a.square_seeds.split(",")]
        return square_seeds(model, xt, yt, a.norm, a.eps, seeds, seed=a.seed)
    print(f"ddmini AutoAttack, {a.norm} eps {a.eps:g}, {a.limit} test images", flush=True)
    t0 = time.perf_counter()

    def progress(name, acc):
        print(f"  ddmini {name}: {100 * acc:.2f} % ({time.perf_counter() - t0:.0f} s so far)", flush=True)

    _, res = aa.evaluate(model, xt, yt, norm=a.norm, eps=a.eps, seed=a.seed, on_attack=progress)
    ours = time.perf_counter() - t0
    print("torchattacks at equal parameters", flush=True)
    t0 = time.perf_counter()
    after, secs = torchattacks_aa(model, xt, yt, a.norm, a.eps, seed=a.seed)
    theirs = time.perf_counter() - t0
    print(f"\nclean accuracy {100 * res.clean:.2f} %")
    print("| after | ddmini % | torchattacks % | ddmini s | torchattacks s |\n|---|---|---|---|---|")
    for n in aa.ATTACKS["standard"]:
        print(f"| {n} | {100 * res.after[n]:.2f} | {100 * after[n]:.2f} | {res.seconds[n]:.0f} | {secs[n]:.0f} |")
    print(f"\nrobust accuracy: ddmini {100 * res.robust:.2f} %, torchattacks {100 * after['square']:.2f} %")
    print(f"time: ddmini {ours:.0f} s, torchattacks {theirs:.0f} s: ratio {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
