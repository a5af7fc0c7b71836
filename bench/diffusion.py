"""Diffusion model speed on this machine: ddmini vs diffusers, measured in the same run.

    python bench/diffusion.py [--batch 128] [--sample-batch 256] [--steps 20]

1. Training step (forward + backward + AdamW) at batch 128: ddmini's U-Net "small" preset (with its
   fused q_sample) vs diffusers' UNet2DModel configured to a comparable parameter count
   (class-conditional through num_class_embeds, attention at the lowest resolution).
2. Sampling throughput at batch 256, DDIM: ddmini's sampler with its U-Net as the sampling stage runs
   it (samples.generate: channels_last, fused GroupNorm + SiLU) and as a plain contiguous model, vs
   diffusers' UNet2DModel driven by DDIMScheduler.
3. Guided sampling (classifier-free guidance 2): one model call on the doubled batch vs two calls.
4. Sampler loop overhead: time per step with a trivial model (eps = 0.1 x), ddmini's DDIM / DDPM
   loops vs diffusers' DDIMScheduler / DDPMScheduler loops. The target: ddmini <= 1/2 of diffusers.
5. (--only shapes) Training steps/s of other U-Net shapes than "small": the step of item 1 (forward,
   backward, AdamW; no EMA or clipping) in the precision and layout ddmini.train picks on this CPU:
   --shapes "16:1,2,4:1 16:1,2,6:1" or "small lean", each a U-Net preset or BASE:CHANNEL_MULT:NUM_RES_BLOCKS,
   the first the reference for the ratio column; --loss-steps N also trains each N steps on MNIST (the same
   draws for every shape) and prints its mean loss over the last 200: what a cheaper shape gives up.
6. (--only flops) The training step's arithmetic: FLOPs of forward + backward (torch.utils.flop_counter),
   ms per step and achieved GFLOP/s in float32 (channels_last with the fused GroupNorm + SiLU, as ddmini
   trains without native bf16, and with PyTorch's eager norm ops for the ratio) and, where the CPU has native
   bf16, bf16 autocast (fused and eager norm); and the ratio to the machine's FMA peak (cores x
   clock x FLOP per cycle of the vector ISA torch uses; assumptions printed). An AVX2-only CPU is
   approximated on an AVX-512 one with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2. With --compile,
   each precision again through torch.compile (inductor), steady state, and the first step's seconds.
diffusers is a bench-only dependency (pip install diffusers).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from ddmini import diffusion, samples, unet  # noqa: E402
from ddmini.config import DiffusionTrainConfig, SampleConfig  # noqa: E402


def diffusers_unet(params_target: int):
    from diffusers import UNet2DModel

    best = None
    for ch in (16, 24, 32, 40):  # multiples of 8: GroupNorm(8) must divide every width
        m = UNet2DModel(
            sample_size=28,
            in_channels=1,
            out_channels=1,
            layers_per_block=1,
            block_out_channels=(ch, 2 * ch, 4 * ch),
            norm_num_groups=8,
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            num_class_embeds=11,
        )
        n = sum(p.numel() for p in m.parameters())
        if best is None or abs(n - params_target) < abs(best[1] - params_target):
            best = (m, n)
    return best


def time_steps(fn, n: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def train_step(d, model, opt, x0, y, bf16: bool) -> None:
    """One ddmini training step (uniform timesteps, eps-prediction loss, AdamW)."""
    t = torch.randint(0, 1000, (x0.shape[0],))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = d.loss(model, x0, y, t, torch.randn_like(x0))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bench_train(batch: int, n: int) -> None:
    from ddmini.runtime import cpu_has_native_bf16

    ours = unet.build("small")
    n_ours = unet.num_parameters(ours)
    theirs, n_theirs = diffusers_unet(n_ours)
    d = diffusion.Diffusion()
    x0 = torch.rand(batch, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 11, (batch,))
    opt_a = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_b = torch.optim.AdamW(theirs.parameters(), lr=1e-4)
    ac = d.alphas_cumprod.float()

    def step_ours(bf16):
        train_step(d, ours, opt_a, x0, y, bf16)

    def step_theirs(bf16):
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x0)
        a = ac[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.mse_loss(theirs(x_t, t, class_labels=y).sample.float(), noise)
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        opt_b.step()

    # float32 as ddmini trains without native bf16 (channels_last, fused GroupNorm + SiLU); bf16 autocast
    # as it trains on a CPU with AVX512-BF16/AMX (contiguous, fused norm); diffusers the same two ways
    ours.to(memory_format=torch.channels_last).set_fused_norm(True)
    ta = time_steps(lambda: step_ours(False), n)
    tb = time_steps(lambda: step_theirs(False), n)
    print(f"\n## Training step, batch {batch}")
    print("| model | parameters | precision | ms / step | steps / s |\n|---|---|---|---|---|")
    print(f"| ddmini U-Net 'small' | {n_ours:,} | float32 | {1000 * ta:.0f} | {1 / ta:.2f} |")
    print(f"| diffusers UNet2DModel | {n_theirs:,} | float32 | {1000 * tb:.0f} | {1 / tb:.2f} |")
    rows = [f"float32: ddmini / diffusers time {ta / tb:.2f}x (ddmini {tb / ta:.2f}x faster)"]
    if cpu_has_native_bf16():
        ours.to(memory_format=torch.contiguous_format)
        ta16 = time_steps(lambda: step_ours(True), n)
        tb16 = time_steps(lambda: step_theirs(True), n)
        print(f"| ddmini U-Net 'small' | {n_ours:,} | bf16 autocast | {1000 * ta16:.0f} | {1 / ta16:.2f} |")
        print(f"| diffusers UNet2DModel | {n_theirs:,} | bf16 autocast | {1000 * tb16:.0f} | {1 / tb16:.2f} |")
        rows.append(
            f"bf16: ddmini / diffusers time {ta16 / tb16:.2f}x (ddmini {tb16 / ta16:.2f}x faster); "
            f"ddmini bf16 vs float32: {ta / ta16:.2f}x faster"
        )
    else:
        rows.append("(no native bf16 on this CPU: bf16 rows skipped; ddmini trains in float32 here)")
    print("\n".join(rows))


def fma_peak_gflops(bf16: bool) -> tuple[float, str]:
    """Cores x clock x FLOP per cycle for the vector ISA torch runs (two FMA pipes of that width, as on
    Zen 3/4/5 and recent Intel cores; bf16 dot products count twice a float32 FMA's work per lane)."""
    import os

    cap = torch.backends.cpu.get_cpu_capability()
    lanes = 16 if cap.startswith("AVX512") else 8 if cap.startswith("AVX2") else 4
    mhz = 0.0
    try:
        with open("/proc/cpuinfo") as f:
            mhz = next(float(line.split(":")[1]) for line in f if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        pass
    cores = torch.get_num_threads() or os.cpu_count()
    per_cycle = 2 * lanes * 2 * (2 if bf16 else 1)  # 2 pipes x lanes x (multiply + add) [x 2 for bf16 pairs]
    peak = cores * mhz / 1000 * per_cycle
    return peak, (
        f"{cores} threads x {mhz / 1000:.2f} GHz (/proc/cpuinfo) x {per_cycle} FLOP/cycle "
        f"({cap}: 2 FMA pipes of {lanes} float32 lanes{', bf16 pairs' if bf16 else ''})"
    )


def bench_flops(batch: int, n: int, compiled: bool = False) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from ddmini.runtime import cpu_has_native_bf16

    model = unet.build("small")
    d = diffusion.Diffusion()
    x0 = torch.rand(batch, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 11, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with FlopCounterMode(display=False) as fc:
        t = torch.randint(0, 1000, (batch,))
        d.loss(model, x0, y, t, torch.randn_like(x0)).backward()
    flops = fc.get_total_flops()
    opt.zero_grad(set_to_none=True)
    print(
        f"\n## Training step arithmetic, U-Net 'small', batch {batch}: {flops / 1e9:.1f} GFLOP per step "
        "(forward + backward; AdamW not counted)"
    )
    print("| precision | ms / step | achieved GFLOP/s | FMA peak GFLOP/s | share of peak | 12,000 steps |")
    print("|---|---|---|---|---|---|")
    # float32 and bf16 as ddmini trains them (fused GroupNorm + SiLU) and with the eager norm ops; the
    # modes are timed step by step in turn (median of n each), so that a machine whose speed drifts (shared
    # hosts) shifts both alike
    modes = [("float32, channels_last, fused norm", False, True), ("float32, channels_last, eager norm", False, False)]
    modes += (
        [("bf16 autocast, fused norm", True, True), ("bf16 autocast, eager norm", True, False)]
        if cpu_has_native_bf16()
        else []
    )

    def use(bf16, fused):  # the model as that mode trains it (outside the timed step)
        model.to(memory_format=torch.contiguous_format if bf16 else torch.channels_last).set_fused_norm(fused)

    for _, bf16, fused in modes:
        use(bf16, fused)
        for _ in range(3):
            train_step(d, model, opt, x0, y, bf16)
    times = [[] for _ in modes]
    for _ in range(n):
        for i, (_, bf16, fused) in enumerate(modes):
            use(bf16, fused)
            t0 = time.perf_counter()
            train_step(d, model, opt, x0, y, bf16)
            times[i].append(time.perf_counter() - t0)
    rows = [(name, bf16, statistics.median(ts)) for (name, bf16, _), ts in zip(modes, times)]
    if compiled:
        for name, bf16, fused in modes:
            if fused:
                continue
            use(bf16, False)
            net = torch.compile(model)
            t0 = time.perf_counter()
            train_step(d, net, opt, x0, y, bf16)  # the first step compiles (inductor)
            first = time.perf_counter() - t0
            rows.append(
                (
                    f"{name}, torch.compile (first step {first:.0f} s)",
                    bf16,
                    time_steps(lambda: train_step(d, net, opt, x0, y, bf16), n),
                )
            )
    notes = {}
    for label, bf16, ts in rows:
        peak, how = fma_peak_gflops(bf16)
        notes[how] = f"{'bf16' if bf16 else 'float32'}: peak = {how}"
        print(
            f"| {label} | {1000 * ts:.0f} | {flops / ts / 1e9:.0f} | {peak:.0f} | {flops / ts / 1e9 / peak:.0%} "
            f"| {12000 * ts / 60:.0f} min |",
            flush=True,
        )
    print(f"(median of {n} steps each, the modes in turn)")
    print("\n".join(notes.values()))


def mnist_loss(cfg, batch: int, steps: int, bf16: bool) -> float:
    """Train a fresh U-Net of ``cfg`` for ``steps`` steps on MNIST (seed 0: the same images, timesteps, half of
    each batch at t < 100, and noise for every shape; AdamW 2e-3 after 200 warm-up steps, clipping 1) and return
    the mean loss over the last 200 steps: how much a shape gives up for its speed."""
    from ddmini import data

    x, y = data.load_mnist(None, "train")
    x = diffusion.to_model(x.float())
    torch.manual_seed(0)
    model = unet.build(cfg).set_fused_norm(True)
    if not bf16:
        model.to(memory_format=torch.channels_last)
    opt, d, g, losses = torch.optim.AdamW(model.parameters(), lr=2e-3), diffusion.Diffusion(), torch.Generator(), []
    g.manual_seed(0)
    for s in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        t = torch.randint(0, 100 if s % 2 == 0 else 1000, (batch,), generator=g)
        noise = torch.randn((batch, 1, 28, 28), generator=g)
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (s + 1) / 200)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = d.loss(model, x[idx], y[idx], t, noise)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return statistics.fmean(losses[-200:])


def bench_shapes(batch: int, n: int, shapes: list[str], loss_steps: int = 0) -> None:
    from dataclasses import replace

    from ddmini.config import UNET_PRESETS
    from ddmini.runtime import cpu_has_native_bf16

    bf16 = cpu_has_native_bf16()
    d = diffusion.Diffusion()
    x0 = torch.rand(batch, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 11, (batch,))
    print(f"\n## Training step of U-Net shapes, batch {batch}, {'bf16 autocast' if bf16 else 'float32'}")
    more = f" | MNIST loss, last 200 of {loss_steps} steps" if loss_steps else ""
    print(f"| preset or base:channel_mult:res_blocks | parameters | ms / step | steps / s | time vs the first{more} |")
    print("|---|---|---|---|---|" + ("---|" if loss_steps else ""))
    first = None
    for spec in shapes:
        try:
            if spec in UNET_PRESETS:
                cfg = replace(UNET_PRESETS[spec]).validate()
            else:
                base, mult, blocks = spec.split(":")
                cfg = replace(
                    UNET_PRESETS["small"],
                    base_channels=int(base),
                    num_res_blocks=int(blocks),
                    channel_mult=tuple(int(m) for m in mult.split(",")),
                ).validate()
        except ValueError as e:
            raise SystemExit(f"bad shape {spec!r} (want a U-Net preset or BASE:M1,M2,..:BLOCKS): {e}") from None
        model = unet.build(cfg).set_fused_norm(True)
        if not bf16:
            model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ts = time_steps(lambda: train_step(d, model, opt, x0, y, bf16), n)
        first = first or ts
        loss = f" | {mnist_loss(cfg, batch, loss_steps, bf16):.4f}" if loss_steps else ""
        print(f"| {spec} | {unet.num_parameters(model):,} | {1000 * ts:.0f} | {1 / ts:.2f} | {ts / first:.2f}x{loss} |")


@torch.inference_mode()
def bench_sample(batch: int, steps: int) -> None:
    from diffusers import DDIMScheduler

    ours = unet.build("small").eval()
    theirs, _ = diffusers_unet(unet.num_parameters(ours))
    theirs.eval()
    d = diffusion.Diffusion()
    labels = torch.arange(batch) % 10
    scfg = SampleConfig(steps=steps, batch_size=batch, guidance=1.0)
    t0 = time.perf_counter()
    d.sample(ours, labels, scfg)  # contiguous, eager norm: the plain model
    t_plain = time.perf_counter() - t0
    # as the sampling stage runs it on a CPU (channels_last, fused GroupNorm + SiLU)
    _, ta = samples.generate(ours, DiffusionTrainConfig(), labels, scfg, device="cpu")
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    sched.set_timesteps(steps)
    x = torch.randn(batch, 1, 28, 28)
    t0 = time.perf_counter()
    for t in sched.timesteps:
        eps = theirs(x, t, class_labels=labels).sample
        x = sched.step(eps, t, x).prev_sample
    tb = time.perf_counter() - t0
    print(f"\n## Sampling, DDIM {steps} steps, batch {batch}")
    print("| sampler + model | images / s |\n|---|---|")
    print(f"| ddmini (samples.generate: channels_last, fused norm) | {batch / ta:.1f} |")
    print(f"| ddmini (plain model: contiguous, eager norm) | {batch / t_plain:.1f} |")
    print(f"| diffusers UNet2DModel + DDIMScheduler | {batch / tb:.1f} |")
    print(f"ddmini {tb / ta:.2f}x faster than diffusers; samples.generate {t_plain / ta:.2f}x the plain model")


@torch.inference_mode()
def bench_guided(batches: list[int], steps: int) -> None:
    """Classifier-free guidance needs two predictions per step: one call on the doubled batch (what
    diffusers' pipelines do) vs two calls (ddmini's choice on a CPU), same model, same seed."""
    model = unet.build("small").eval()
    torch.manual_seed(0)
    for w in model.parameters():  # a fresh U-Net outputs zeros (zero-initialised last layer)
        w.add_(0.02 * torch.randn_like(w))
    d = diffusion.Diffusion()
    rows = []
    for batch in batches:
        labels = torch.arange(batch) % 10
        times = {}
        for split in (False, True, False, True):  # interleaved, the second of each counts
            d.guided_split = split
            t0 = time.perf_counter()
            x = d.sample(model, labels, SampleConfig(steps=steps, guidance=2.0, batch_size=batch, seed=0))
            times[split] = (time.perf_counter() - t0, x)
        (tj, xj), (ts, xs) = times[False], times[True]
        rows.append((batch, batch * steps / tj, batch * steps / ts, tj / ts, (xj - xs).abs().max().item()))
    print(f"\n## Guided sampling (guidance 2), DDIM {steps} steps, {torch.get_num_threads()} threads")
    print("| batch | one call on 2 x batch: img-steps / s | two calls: img-steps / s | speed-up | max |diff| |")
    print("|---|---|---|---|---|")
    for batch, a, b, r, diff in rows:
        print(f"| {batch} | {a:.0f} | {b:.0f} | {r:.2f}x | {diff:.1e} |")


@torch.inference_mode()
def bench_overhead(batch: int) -> None:
    from diffusers import DDIMScheduler, DDPMScheduler

    class Trivial(nn.Module):
        null_label = 10

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x, t, y):
            return x * 0.1

    m = Trivial()
    d = diffusion.Diffusion()
    labels = torch.arange(batch) % 10
    rows = []
    for sampler, steps in (("ddim", 100), ("ddpm", 1000)):
        cfg = SampleConfig(sampler=sampler, steps=steps, batch_size=batch, guidance=1.0)
        d.sample(m, labels, cfg)  # warm-up
        t0 = time.perf_counter()
        d.sample(m, labels, cfg)
        ta = (time.perf_counter() - t0) / steps
        sched = (DDIMScheduler if sampler == "ddim" else DDPMScheduler)(
            num_train_timesteps=1000, beta_schedule="linear", clip_sample=False
        )
        sched.set_timesteps(steps)
        x = torch.randn(batch, 1, 28, 28)
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for t in sched.timesteps:
            eps = x * 0.1
            x = (sched.step(eps, t, x, generator=gen) if sampler == "ddpm" else sched.step(eps, t, x)).prev_sample
        tb = (time.perf_counter() - t0) / steps
        rows.append((sampler, steps, ta, tb))
    print(f"\n## Sampler loop overhead, trivial model, batch {batch}")
    print("| loop | steps | ddmini µs / step | diffusers µs / step | ratio (target <= 0.5) |\n|---|---|---|---|---|")
    for sampler, steps, ta, tb in rows:
        print(f"| {sampler} | {steps} | {1e6 * ta:.0f} | {1e6 * tb:.0f} | {ta / tb:.2f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--sample-batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    p.add_argument("--sample-steps", type=int, default=20, help="DDIM steps for the sampling throughput")
    p.add_argument("--guided-batches", default="128,256", help="batch sizes for the guided-sampling rows")
    p.add_argument("--compile", action="store_true", help="--only flops: also time torch.compile'd steps")
    p.add_argument("--only", choices=["train", "sample", "guided", "overhead", "shapes", "flops"], default=None)
    p.add_argument(
        "--shapes",
        default="16:1,2,4:1 16:1,2,6:1 16:1,2,8:1 16:1,3,6:1 16:1,4,4:1 16:1,2,4:2 20:1,2,4:1 24:1,2,4:1 32:1,1,2:1",
        help="U-Net shapes for --only shapes: presets (small, lean) or BASE:CHANNEL_MULT:RES_BLOCKS, space-separated",
    )
    p.add_argument("--loss-steps", type=int, default=0, help="--only shapes: also train each on MNIST this many steps")
    a = p.parse_args()
    print(f"machine: {machine()}")
    if a.only in (None, "train"):
        bench_train(a.batch, a.steps)
    if a.only in (None, "sample"):
        bench_sample(a.sample_batch, a.sample_steps)
    if a.only in (None, "guided"):
        bench_guided([int(b) for b in a.guided_batches.split(",")], a.sample_steps)
    if a.only in (None, "overhead"):
        bench_overhead(a.sample_batch)
    if a.only == "shapes":
        bench_shapes(a.batch, a.steps, a.shapes.split(), a.loss_steps)
    if a.only == "flops":
        bench_flops(a.batch, a.steps, a.compile)


if __name__ == "__main__":
    main()
