"""The default preset's choice and the fit stage's timing on this machine, and how steady that timing is.

    python bench/fit.py [--windows 4] [--steps 30] [--checkpoint D] [--images mnist] [--no-fit]

1. The default preset ``ddmini run`` chooses here (``presets.choose_preset``: on a native-bf16 CPU it times the
   cpu preset's step) and the steps cpu-hour's fit buys in its 48 minutes (``ddmini.fit.fitted``), both in a
   throwaway run directory.
2. Windows of ``--steps`` training steps of the cpu-hour recipe (``ddmini.train.train``, as the fit times
   them), in turn from a fresh model and, with ``--checkpoint D`` (a cpu-hour diffusion checkpoint), from
   the trained one, each with and without ``torch.set_flush_denormal``: the spread of the windows says how
   far one 25-step timing can be from the loop's sustained speed on this machine. ``--images mnist``: on MNIST's
   first 256 training images (``$DDMINI_DATA_ROOT``) as well as on the fit's random ones, in turn.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from ddmini import fit, train  # noqa: E402
from ddmini.presets import choose_preset, preset  # noqa: E402

WARM = 5


def windows(tmp: Path, n_windows: int, steps: int, checkpoint: Path | None, images=("random",)) -> None:
    cfg = preset("cpu-hour")
    cfg.validate()
    unet, t = cfg.unet, replace(cfg.train, fit_minutes=0.0, checkpoint_every=10**8)
    g = torch.Generator().manual_seed(0)
    sets = {"random": (torch.rand((256, 1, 28, 28), generator=g), torch.randint(0, 10, (256,), generator=g))}
    if "mnist" in images:
        from ddmini import data

        xm, ym = data.load(None, "train", "mnist")
        sets["mnist"] = (xm[:256].clone(), ym[:256].clone())
    kinds = ["fresh"] + (["trained"] if checkpoint else [])
    got: dict = {}
    for _ in range(n_windows):
        for kind, (which, (x, y)) in ((k, s) for k in kinds for s in sets.items()):
            for flush in (False, True):
                torch.set_flush_denormal(flush)
                p = tmp / "w.pt"
                base = 0
                if kind == "trained":
                    shutil.copy(checkpoint, p)
                    shutil.copy(str(checkpoint) + ".sha256", str(p) + ".sha256")
                    base = int(torch.load(p, map_location="cpu", weights_only=False)["step"])
                a = train.train(unet, replace(t, steps=base + WARM), x, y, p, resume=kind == "trained", desc="window")
                b = train.train(unet, replace(t, steps=base + WARM + steps), x, y, p, resume=True, desc="window")
                got.setdefault((f"{kind}, {which} images", flush), []).append(1000 * (b.seconds - a.seconds) / steps)
    torch.set_flush_denormal(False)
    print(f"\n| model | flush denormal | ms per step, {steps}-step windows in turn | min-max |")
    print("| --- | --- | --- | --- |")
    for (kind, flush), v in got.items():
        print(
            f"| {kind} | {'yes' if flush else 'no'} | {' / '.join(f'{s:.0f}' for s in v)} | {min(v):.0f}-{max(v):.0f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--checkpoint", type=Path, default=None, help="a cpu-hour diffusion checkpoint (optional)")
    ap.add_argument("--images", default="random", help="random, or random,mnist: the images the windows train on")
    ap.add_argument("--no-fit", action="store_true", help="skip the default preset's choice and the fit")
    args = ap.parse_args()
    if args.checkpoint is not None and not args.checkpoint.is_file():
        sys.exit(f"bench/fit.py: {args.checkpoint}: no such checkpoint")
    print(machine())
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.no_fit:
            windows(tmp, args.windows, args.steps, args.checkpoint, args.images.split(","))
            return
        name, why = choose_preset(cpu, "mnist", tmp / "run")
        print(f"default preset here: {name}" + (f" ({why})" if why else " (no timing: the native-bf16 rule)"))
        hour = preset("cpu-hour")
        hour.validate()
        rec = fit.fitted(hour.unet, hour.train, cpu, tmp / "run" / "cache")
        norms = (
            f", fused {rec.norm_seconds['fused']:.3f} vs eager {rec.norm_seconds['eager']:.3f} s/step"
            if rec.norm_seconds
            else ""
        )
        print(
            f"cpu-hour's fit: {rec.seconds_per_step:.3f} s/step over {rec.timed_steps} steps{norms} -> "
            f"{rec.steps:,} steps in {rec.minutes:g} min" + (f"; warning: {w}" if (w := rec.warning(64)) else "")
        )
        if args.windows > 0:
            windows(tmp, args.windows, args.steps, args.checkpoint, args.images.split(","))


if __name__ == "__main__":
    main()
