"""What a misleading image costs: deceptive sampling vs PGD-L2 on the same classifier, same machine.

    python bench/cost.py --classifier C [--checkpoint D] [--num 1000] [--limit 5000] [--train-seconds S]

PGD-L2 (the run's attack stage, cached-nothing: timed on the first --limit training images) gives
successful adversarial examples per second. Deceptive sampling (DDIM-50, guidance 1, batches of 128: the
cpu preset's sampling) gives generated images per second; with a trained p = 1 model (--checkpoint D) the
classifier scores them, so misleading images per second are measured too. Without --checkpoint the
sampler runs an untrained U-Net of the preset's size (the time per image does not depend on the weights)
and only the speeds are printed. Break-even: the number N of misleading images after which the one-off
diffusion training (--train-seconds, default: the checkpoint's own training time) plus sampling costs
less than attacking, N = T_train / (1 / r_pgd - 1 / r_gen); "never" when sampling is the slower of the two.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from ddmini import classifier, data, samples, train, unet  # noqa: E402
from ddmini.attacks.stage import attack_dataset  # noqa: E402
from ddmini.config import DiffusionTrainConfig  # noqa: E402
from ddmini.diffusion import balanced_labels  # noqa: E402
from ddmini.presets import preset  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier", required=True, help="the target classifier (e.g. the run's cached one)")
    p.add_argument("--checkpoint", default=None, help="a p = 1 diffusion model (measures the misleading share)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=5000, help="training images attacked for the PGD timing")
    p.add_argument("--num", type=int, default=1000, help="images sampled for the sampling timing")
    p.add_argument("--train-seconds", type=float, default=None, help="one-off diffusion training time")
    a = p.parse_args()
    cfg = preset("cpu")
    model, _, _ = classifier.load(a.classifier)
    x, y = data.load_mnist(a.data_dir, "train")
    x, y = x[: a.limit], y[: a.limit]
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = attack_dataset(model, x, y, cfg.attack, tmp, key="bench")
        t_pgd = time.perf_counter() - t0
    ok = int(res.success.sum())
    r_pgd = ok / t_pgd
    if a.checkpoint:
        net, tcfg, ckpt = train.load_ema(a.checkpoint)
        t_train = a.train_seconds if a.train_seconds is not None else float(ckpt["seconds"])
    else:
        torch.manual_seed(0)
        net, tcfg, t_train = unet.UNet(cfg.unet).eval(), DiffusionTrainConfig(), a.train_seconds
    labels = balanced_labels(a.num)
    imgs, t_gen = samples.generate(net, tcfg, labels, cfg.sample, device="cpu")
    r_img = a.num / t_gen
    print(
        "\n| method | images | seconds | images / s | misleading | misleading images / s |\n|---|---|---|---|---|---|"
    )
    print(
        f"| PGD-L2 eps {cfg.attack.eps:g}, {cfg.attack.steps} steps (training images) | {len(y)} | {t_pgd:.1f} "
        f"| {len(y) / t_pgd:.0f} | {100 * ok / len(y):.1f} % | {r_pgd:.0f} |"
    )
    if a.checkpoint:
        share = 1 - classifier.accuracy(model, imgs, labels)
        r_gen = r_img * share
        print(
            f"| deceptive sampling, DDIM-{cfg.sample.steps}, guidance 1, batch {cfg.sample.batch_size} | {a.num} "
            f"| {t_gen:.1f} | {r_img:.1f} | {100 * share:.1f} % | {r_gen:.1f} |"
        )
    else:
        r_gen = None
        print(
            f"| deceptive sampling, DDIM-{cfg.sample.steps}, guidance 1, batch {cfg.sample.batch_size} "
            f"(untrained U-Net: speed only) | {a.num} | {t_gen:.1f} | {r_img:.1f} | - | {r_img:.1f} x share |"
        )
    if r_gen is not None and t_train is not None:
        if r_gen <= r_pgd:
            print(
                f"\nbreak-even: never. Sampling makes {r_gen:.1f} misleading images/s, PGD {r_pgd:.0f}/s: each "
                f"generated one costs more than an attack, before the {t_train:.0f} s of training."
            )
        else:
            n = t_train / (1 / r_pgd - 1 / r_gen)
            print(f"\nbreak-even after {n:,.0f} misleading images ({t_train:.0f} s of training paid off)")
    elif r_img <= r_pgd:
        print(
            f"\nbreak-even: never. Even if every generated image misled, sampling ({r_img:.1f} images/s) is "
            f"slower than PGD ({r_pgd:.0f} successful adversarial examples/s) on this machine."
        )


if __name__ == "__main__":
    main()
