"""Training-loop throughput of ``ddmini.train.train``: the loop as it is (no host-device sync per step:
pinned non-blocking copies, the loss summed on the device and read every 50 steps, no range check of
the timesteps it drew itself) against the same loop made to sync once per step the way it used to
(pageable host-to-device copies and a ``loss.item()`` per step).

    python bench/train_loop.py [--device cuda] [--unet paper] [--batch 256] [--seconds 30]

Synthetic images (the speed does not depend on them); each variant trains from scratch for
``--seconds`` of training time after a short warm-up run; steps/s = steps / training seconds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from ddmini import train  # noqa: E402
from ddmini.config import UNET_PRESETS, DiffusionTrainConfig  # noqa: E402
from ddmini.diffusion import Diffusion  # noqa: E402


def run(variant: str, model_cfg, batch: int, seconds: float, device: str, x, y) -> float:
    to_device, loss = train._to_device, Diffusion.loss
    if variant == "sync per step":
        train._to_device = lambda t, dev: t.to(dev)  # pageable copy: waits for the GPU to drain

        def synced_loss(self, *a, **k):
            out = loss(self, *a, **k)
            out.item()
            return out
        Diffusion.loss = synced_loss
    try:
        cfg = DiffusionTrainConfig(steps=10 ** 7, time_budget=seconds / 60, batch_size=batch, lr=5e-4,
                                   warmup=100, checkpoint_every=10 ** 7)
        with tempfile.TemporaryDirectory() as d:
            state = train.train(model_cfg, cfg, x, y, Path(d) / "ckpt.pt", device=device, resume=False)
        return state.step / state.seconds
    finally:
        train._to_device, Diffusion.loss = to_device, loss


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--unet", default="paper", choices=sorted(UNET_PRESETS))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args()
    print("machine:", machine())
    model_cfg = UNET_PRESETS[args.unet]
    g = torch.Generator().manual_seed(0)
    x = torch.rand((20000, 1, 28, 28), generator=g)
    y = torch.randint(0, 10, (20000,), generator=g)
    run("as it is", model_cfg, args.batch, min(5.0, args.seconds), args.device, x, y)  # warm-up (autotuning)
    print(f"\n## Training loop, {args.unet} U-Net, batch {args.batch}, {args.device}, {args.seconds:.0f} s each\n")
    print("| loop | steps/s |\n|---|---|")
    rates = {}
    for variant in ("as it is", "sync per step"):
        rates[variant] = run(variant, model_cfg, args.batch, args.seconds, args.device, x, y)
        print(f"| {variant} | {rates[variant]:.2f} |", flush=True)
    print(f"\nratio: {rates['as it is'] / rates['sync per step']:.2f}x")


if __name__ == "__main__":
    main()
