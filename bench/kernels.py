"""Microbenchmarks of ddmini's kernels against the obvious alternatives, measured in the same run.

    python bench/kernels.py                 # step ops (CPU) + sampler-size steps vs diffusers + Fréchet
    python bench/kernels.py --only steps --no-compile
    python bench/kernels.py --only inplace          # the steps as samplers call them (out = x_t)
    python bench/kernels.py --only frechet --dims 16,64,128,512,2048
    python bench/kernels.py --device cuda --no-compile   # on a GPU (Fréchet: eigvals / eigh on the device)
    python bench/kernels.py --only noise,sampler,inplace --sizes 22,24 --cpu-isa all   # every CPU variant
    python bench/kernels.py --only norm --cpu-isa avx2      # GroupNorm + SiLU at the U-Net's shapes
    python bench/kernels.py --only load --cpu-isa avx2      # the noise and a step beside a busy torch process

CPU variants: the compiled kernels' hot loops exist for AVX-512, AVX2 + FMA and baseline x86-64.
``--cpu-isa all`` (the default on a CPU) runs the chosen tables once per variant this machine supports,
side by side; ``--cpu-isa avx2`` one of them. Torch's side of each ratio uses torch's own kernels: set
``ATEN_CPU_CAPABILITY=avx2`` (and ``ONEDNN_MAX_CPU_ISA=AVX2``) in the environment to make it AVX2 too.

Step ops: torch eager reference (allocates), the best in-place chain into a preallocated out,
torch.compile of the reference (steady state), ddmini with out=; ms, effective GB/s (bytes read +
written) and each one's fraction of this machine's copy bandwidth measured at the same size.
Every kernel is checked against the reference before it is timed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, timeit  # noqa: E402

from ddmini import kernels, metrics, reference, schedule  # noqa: E402

T = 1000


def step_cases(n_elems: int, device: str):
    B = 16
    shape = (B, n_elems // B)
    g = torch.Generator().manual_seed(0)
    x, e, z = (torch.randn(shape, generator=g).to(device) for _ in range(3))
    out = torch.empty_like(x)
    ac = schedule.make("linear", T).to(device)
    t = torch.randint(1, T, (B,), generator=g).to(device)
    t_prev = (t - 20).clamp(min=-1)
    ab = ac[t].view(B, 1)
    ab_prev = torch.where(t_prev >= 0, ac[t_prev.clamp(min=0)], torch.ones_like(ab.view(-1))).view(B, 1)
    alpha = ab / torch.cat([ac.new_ones(1), ac])[t].view(B, 1)
    beta = 1 - alpha
    # float32 per-sample coefficients for the in-place chains (precomputed: the chain's best case)
    q_a, q_b = ab.sqrt().float(), (1 - ab).sqrt().float()
    p_a = (1 / alpha.sqrt()).float()
    p_b = (-beta / (1 - ab).sqrt() / alpha.sqrt()).float()
    p_c = (beta * (1 - ab / alpha) / (1 - ab)).sqrt().float()
    s = (ab_prev / ab).sqrt()
    d_a, d_b = s.float(), ((1 - ab_prev).sqrt() - s * (1 - ab).sqrt()).float()

    def chain3(ca, a, cb, b, cc=None, c=None):
        torch.mul(a, ca, out=out)
        out.addcmul_(b, cb)
        if c is not None:
            out.addcmul_(c, cc)
        return out

    return [
        dict(
            name="q_sample",
            bytes=12,
            ref=lambda: reference.q_sample(x, z, t, ac),
            chain=lambda: chain3(q_a, x, q_b, z),
            ddmini=lambda: kernels.q_sample(x, z, t, ac, out=out),
            compile_fn=lambda f: f(x, z, t, ac),
            compile_target=reference.q_sample,
        ),
        dict(
            name="ddpm_step",
            bytes=16,
            ref=lambda: reference.ddpm_step(x, e, t, ac, z),
            chain=lambda: chain3(p_a, x, p_b, e, p_c, z),
            ddmini=lambda: kernels.ddpm_step(x, e, t, ac, z, out=out),
            compile_fn=lambda f: f(x, e, t, ac, z),
            compile_target=reference.ddpm_step,
        ),
        dict(
            name="ddim_step",
            bytes=12,
            ref=lambda: reference.ddim_step(x, e, t, t_prev, ac),
            chain=lambda: chain3(d_a, x, d_b, e),
            ddmini=lambda: kernels.ddim_step(x, e, t, t_prev, ac, out=out),
            compile_fn=lambda f: f(x, e, t, t_prev, ac),
            compile_target=reference.ddim_step,
        ),
    ], (x, out)


def bench_steps(sizes, device, use_compile):
    sync = torch.cuda.synchronize if device == "cuda" else None
    print(f"\n## Fused step ops on {device} (B = 16; medians after warm-up)\n")
    print(
        "| op | elements | copy GB/s | eager ms | in-place chain ms | compile ms | ddmini ms | ddmini GB/s "
        "| ddmini / copy | vs chain | vs compile | vs eager |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for log2 in sizes:
        n = 1 << log2
        cases, (x, out) = step_cases(n, device)
        t_copy = timeit(lambda: out.copy_(x), sync=sync)
        copy_bw = 8 * n / t_copy / 1e9
        for c in cases:
            expect = c["ref"]().clone()
            torch.testing.assert_close(c["ddmini"](), expect, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(c["chain"](), expect, rtol=1e-4, atol=1e-4)
            t_ref = timeit(c["ref"], sync=sync)
            t_chain = timeit(c["chain"], sync=sync)
            t_dd = timeit(c["ddmini"], sync=sync)
            t_comp = float("nan")
            if use_compile:
                try:
                    f = torch.compile(c["compile_target"], dynamic=False)
                    torch.testing.assert_close(c["compile_fn"](f), expect, rtol=1e-5, atol=1e-5)
                    t_comp = timeit(lambda: c["compile_fn"](f), sync=sync)
                except Exception as ex:  # noqa: BLE001 - report and go on
                    print(f"(torch.compile failed for {c['name']}: {type(ex).__name__})", file=sys.stderr)
            bw = c["bytes"] * n / t_dd / 1e9
            print(
                f"| {c['name']} | 2^{log2} | {copy_bw:.0f} | {t_ref * 1e3:.3f} | {t_chain * 1e3:.3f} | "
                f"{t_comp * 1e3:.3f} | {t_dd * 1e3:.3f} | {bw:.0f} | {bw / copy_bw:.0%} | "
                f"{t_chain / t_dd:.2f}x | {t_comp / t_dd:.2f}x | {t_ref / t_dd:.2f}x |",
                flush=True,
            )


def bench_steps_in_place(sizes, device, rounds: int = 5):
    """The steps as the samplers call them: out= aliasing x_t (x0 for q_sample), so q_sample and DDIM
    touch two buffers, as the copy does (DDPM three, or two with in-kernel Philox noise, which is
    compute-bound: the Gaussian draw costs more than the memory traffic). Baseline: the in-place
    chain (mul_, addcmul_) with precomputed per-sample coefficients; for DDPM it reads a noise
    tensor in both rows (plain PyTorch cannot make the noise inside the pass).

    At 2^22 two 16 MB buffers just fill a 32 MB L3, so a timing depends on where the buffers' pages
    happen to land in the cache; each of ``rounds`` rounds therefore allocates fresh buffers and times
    the copy, every chain and every op on them (chain and op back to back). The table gives medians
    over the rounds and the smallest and largest per-round ratio."""
    sync = torch.cuda.synchronize if device == "cuda" else None
    print(
        f"\n## Fused step ops in place on {device} (out = x_t; B = 16; medians over {rounds} rounds of fresh "
        "buffers, each a median after warm-up)\n"
    )
    print(
        "| op | elements | copy GB/s | in-place chain ms | ddmini ms | ddmini GB/s | ddmini / copy | vs chain "
        "| vs chain, per round min-max |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ac = schedule.make("linear", T).to(device)
    names = ("q_sample", "ddpm_step", "ddpm_step, Philox noise", "ddim_step")
    nbytes = dict(zip(names, (12, 16, 12, 12)))  # bytes moved per element: x read and written, others read
    med = statistics.median
    for log2 in sizes:
        n, B = 1 << log2, 16
        g = torch.Generator().manual_seed(0)
        t = torch.randint(1, T, (B,), generator=g).to(device)
        # t_prev = t - 1 (a 1000-step DDIM): every coefficient that scales x stays <= 1.01, so
        # hundreds of repeated in-place updates neither overflow nor reach denormals
        t_prev = t - 1
        ab, ab_prev = ac[t].view(B, 1), ac[t_prev].view(B, 1)
        alpha = ab / ab_prev
        s_ = (ab_prev / ab).sqrt()
        q_a, q_b = ab.sqrt().float(), (1 - ab).sqrt().float()
        p_a = (1 / alpha.sqrt()).float()
        p_b = (-(1 - alpha) / (1 - ab).sqrt() / alpha.sqrt()).float()
        p_c = ((1 - alpha) * (1 - ab_prev) / (1 - ab)).sqrt().float()
        d_a, d_b = s_.float(), ((1 - ab_prev).sqrt() - s_ * (1 - ab).sqrt()).float()
        noise = kernels.PhiloxNoise(3, 0)
        copies, times = [], {name: ([], []) for name in names}
        for r in range(rounds):
            x, e, z = (torch.randn((B, n // B), generator=g).to(device) for _ in range(3))
            out = torch.empty_like(x)
            if r == 0:  # correctness of the in-place forms, on a copy
                for got, want in [
                    (kernels.q_sample(x.clone(), z, t, ac, out=None), reference.q_sample(x, z, t, ac)),
                    (kernels.ddim_step(x, e, t, t_prev, ac), reference.ddim_step(x, e, t, t_prev, ac)),
                ]:
                    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
                y = x.clone()
                kernels.ddpm_step(y, e, t, ac, noise, out=y)
                zz = kernels.philox_normal(x, 3, 0)
                torch.testing.assert_close(y, reference.ddpm_step(x, e, t, ac, zz), rtol=1e-4, atol=1e-4)
            copies.append(timeit(lambda: out.copy_(x), sync=sync))
            ddpm_chain = lambda: x.mul_(p_a).addcmul_(e, p_b).addcmul_(z, p_c)  # noqa: E731
            rows = [  # name, chain, ddmini
                (lambda: x.mul_(q_a).addcmul_(z, q_b), lambda: kernels.q_sample(x, z, t, ac, out=x)),
                (ddpm_chain, lambda: kernels.ddpm_step(x, e, t, ac, z, out=x)),
                (ddpm_chain, lambda: kernels.ddpm_step(x, e, t, ac, noise, out=x)),
                (lambda: x.mul_(d_a).addcmul_(e, d_b), lambda: kernels.ddim_step(x, e, t, t_prev, ac, out=x)),
            ]
            for name, (chain, ours) in zip(names, rows):
                times[name][0].append(timeit(chain, sync=sync, min_time=0.15))
                times[name][1].append(timeit(ours, sync=sync, min_time=0.15))
                x.copy_(torch.randn(x.shape, generator=g))  # fresh values for the next op
        copy_bw = 8 * n / med(copies) / 1e9
        for name in names:
            tc, to = times[name]
            ratios = [c / o for c, o in zip(tc, to)]
            bw = nbytes[name] * n / med(to) / 1e9
            print(
                f"| {name} | 2^{log2} | {copy_bw:.0f} | {med(tc) * 1e3:.3f} | {med(to) * 1e3:.3f} | {bw:.0f} | "
                f"{bw / copy_bw:.0%} | {med(tc) / med(to):.2f}x | {min(ratios):.2f}-{max(ratios):.2f}x |",
                flush=True,
            )


def bench_sampler_steps(device):
    """Per-step time at a sampler's size (256x1x28x28) against diffusers' schedulers."""
    try:
        from diffusers import DDIMScheduler, DDPMScheduler
    except ImportError:
        print("\n(diffusers not installed: `pip install diffusers` for the scheduler comparison)")
        return
    sync = torch.cuda.synchronize if device == "cuda" else None
    g = torch.Generator().manual_seed(0)
    x, e, z = (torch.randn(256, 1, 28, 28, generator=g).to(device) for _ in range(3))
    out = torch.empty_like(x)
    ac = schedule.make("linear", T).to(device)
    ddpm = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", variance_type="fixed_small", clip_sample=False)
    ddim = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True)
    ddim.set_timesteps(50)
    t, t_prev = 500, 480
    # correctness first: same update given the same noise (diffusers draws it with torch.randn)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(device)
    dd = ddpm.step(e, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    torch.testing.assert_close(kernels.ddpm_step(x, e, t, ac, z), dd, rtol=1e-4, atol=1e-4)
    di = ddim.step(e, t, x, eta=0.0).prev_sample
    torch.testing.assert_close(kernels.ddim_step(x, e, t, t_prev, ac), di, rtol=1e-4, atol=1e-4)
    rows = [
        (
            "DDPM step, torch.randn noise",
            lambda: ddpm.step(e, t, x, generator=g),
            lambda: kernels.ddpm_step(x, e, t, ac, None, out=out),
        ),  # both draw the noise with torch
        (
            "DDPM step, in-kernel Philox noise",
            lambda: ddpm.step(e, t, x, generator=g),
            lambda: kernels.ddpm_step(x, e, t, ac, kernels.PhiloxNoise(1, 2), out=out),
        ),
        ("DDIM step", lambda: ddim.step(e, t, x, eta=0.0), lambda: kernels.ddim_step(x, e, t, t_prev, ac, out=out)),
    ]
    print(f"\n## Sampler-size step (256x1x28x28) on {device}: diffusers scheduler.step vs ddmini\n")
    print("| step | diffusers us | ddmini us | ddmini / diffusers |")
    print("|---|---|---|---|")
    # the noise alone: torch.randn vs the Philox stream
    gdev = torch.Generator(device=device).manual_seed(0)
    t_r = timeit(lambda: torch.randn(x.shape, generator=gdev, device=device, out=z), sync=sync, min_time=0.5)
    t_p = timeit(lambda: kernels.philox_normal(x, 1, 2, out=z), sync=sync, min_time=0.5)
    for name, theirs, ours in rows:
        t_d = timeit(theirs, sync=sync, min_time=0.5)
        t_o = timeit(ours, sync=sync, min_time=0.5)
        print(f"| {name} | {t_d * 1e6:.1f} | {t_o * 1e6:.1f} | {t_o / t_d:.2f} |", flush=True)
    print(
        f"\nnoise alone (200,704 normals): torch.randn {t_r * 1e6:.1f} us, ddmini philox_normal {t_p * 1e6:.1f} us "
        f"({t_r / t_p:.2f}x)"
    )


def bench_noise(device, sizes=(200_704, 1 << 22)):
    """Gaussian noise alone: torch.randn into a preallocated tensor vs ddmini's Philox stream
    (philox_normal), checked against the float64 reference first."""
    sync = torch.cuda.synchronize if device == "cuda" else None
    print(f"\n## Gaussian noise on {device}: torch.randn vs ddmini philox_normal (Philox4x32-10 + Box-Muller)\n")
    print("| normals | torch.randn us | ddmini us | ddmini vs randn | ddmini Gnormals/s |")
    print("|---|---|---|---|---|")
    for n in sizes:
        z = torch.empty(n, device=device)
        got = kernels.philox_normal(z, 1, 2).cpu()
        assert (got - reference.philox_normal(n, 1, 2)).abs().max() < 2e-5
        gdev = torch.Generator(device=device).manual_seed(0)
        t_r = timeit(lambda: torch.randn(z.shape, generator=gdev, device=device, out=z), sync=sync, min_time=0.5)
        t_p = timeit(lambda: kernels.philox_normal(z, 1, 2, out=z), sync=sync, min_time=0.5)
        print(f"| {n:,} | {t_r * 1e6:.1f} | {t_p * 1e6:.1f} | {t_r / t_p:.2f}x | {n / t_p / 1e9:.2f} |", flush=True)


def frechet_pairs(d, B, g):
    """B pairs of d x d covariances of 2d + 10 correlated samples (CPU, float64) and the float64
    symmetric-eigh reference of their trace sqrt."""
    n = 2 * d + 10
    feats = [
        torch.randn(n, d, generator=g, dtype=torch.float64)
        @ (torch.eye(d, dtype=torch.float64) + 0.2 * torch.randn(d, d, generator=g, dtype=torch.float64))
        for _ in range(2 * B)
    ]
    covs = torch.stack([metrics.mean_cov(f)[1] for f in feats])
    c1, c2 = covs[:B].contiguous(), covs[B:].contiguous()
    return c1, c2, metrics.trace_sqrt_product_reference(c1, c2)


def max_rel_err(v, ref):
    """Largest relative error of trace-sqrt values v (a list, or a tensor on any device) against ref."""
    return float(((torch.as_tensor(v, dtype=torch.float64).cpu() - ref).abs() / ref.abs()).max())


def bench_frechet(dims, B=10, slow_limit=512):
    import numpy as np

    try:
        import scipy.linalg
    except ImportError:
        scipy = None
    print(f"\n## Trace sqrt part of the Fréchet distance, B = {B} pairs, float64, CPU\n")
    print(
        "| d | scipy sqrtm loop ms | eigvals(C1@C2) ms | ddmini ms | vs scipy | vs eigvals "
        "| err scipy | err eigvals | err ddmini |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for d in dims:
        c1, c2, ref = frechet_pairs(d, B, g)

        ours = lambda: metrics.trace_sqrt_product(c1, c2, backend="cpp")  # noqa: E731
        eig = lambda: torch.linalg.eigvals(c1 @ c2).sqrt().real.sum(-1)  # noqa: E731

        def sq():
            return [
                float(np.trace(scipy.linalg.sqrtm(a @ b)).real)  # noqa: E731
                for a, b in zip(c1.numpy(), c2.numpy())
            ]

        reps = dict(warmup=1, min_time=0.2, max_reps=5)
        t_o = timeit(ours, **reps)
        slow = d <= slow_limit
        t_e = timeit(eig, **reps) if slow else float("nan")
        t_s = timeit(sq, **reps) if slow and scipy else float("nan")
        err_s = max_rel_err(sq(), ref) if slow and scipy else float("nan")
        err_e = max_rel_err(eig(), ref) if slow else float("nan")
        print(
            f"| {d} | {t_s * 1e3:.1f} | {t_e * 1e3:.1f} | {t_o * 1e3:.1f} | {t_s / t_o:.1f}x | {t_e / t_o:.1f}x "
            f"| {err_s:.1e} | {err_e:.1e} | {max_rel_err(ours(), ref):.1e} |",
            flush=True,
        )


def bench_frechet_cuda(dims, B=10):
    """The trace sqrt part on a GPU: torchmetrics' eigvals(C1 @ C2) on the device, the two-eigh reference
    on the device, and ddmini's linalg backend (Cholesky + one eigvalsh); the C++ kernel on the CPU for scale."""
    sync = torch.cuda.synchronize
    print(f"\n## Trace sqrt part of the Fréchet distance on the GPU, B = {B} pairs, float64\n")
    print(
        "| d | eigvals(C1@C2) GPU ms | reference (2x eigh) GPU ms | ddmini linalg GPU ms | ddmini cpp CPU ms "
        "| vs eigvals | vs reference | err eigvals | err linalg |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for d in dims:
        c1, c2, ref = frechet_pairs(d, B, g)
        g1, g2 = c1.cuda(), c2.cuda()

        eig = lambda: torch.linalg.eigvals(g1 @ g2).sqrt().real.sum(-1)  # noqa: E731
        two = lambda: metrics.trace_sqrt_product(g1, g2, backend="torch")  # noqa: E731
        ours = lambda: metrics.trace_sqrt_product(g1, g2, backend="linalg")  # noqa: E731
        cpp = lambda: metrics.trace_sqrt_product(c1, c2, backend="cpp")  # noqa: E731
        reps = dict(warmup=2, min_time=0.3, max_reps=20, sync=sync)
        t_e, t_r, t_o = timeit(eig, **reps), timeit(two, **reps), timeit(ours, **reps)
        t_c = timeit(cpp, warmup=1, min_time=0.2, max_reps=5)
        print(
            f"| {d} | {t_e * 1e3:.1f} | {t_r * 1e3:.1f} | {t_o * 1e3:.1f} | {t_c * 1e3:.1f} | {t_e / t_o:.1f}x "
            f"| {t_r / t_o:.1f}x | {max_rel_err(eig(), ref):.1e} | {max_rel_err(ours(), ref):.1e} |",
            flush=True,
        )


SECTIONS = ("steps", "inplace", "noise", "norm", "sampler", "frechet", "load")

# What a user's machine may be doing beside a run: torch matrix products on two threads, without end.
BUSY = "import torch; torch.set_num_threads({t}); a = torch.randn(384, 384)\nwhile True: a @ a"


@contextlib.contextmanager
def competing_process(threads: int = 2):
    """A second process doing ``threads``-thread torch matmuls for as long as the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY.format(t=threads)])
    time.sleep(3.0)  # torch imported, multiplying
    try:
        if proc.poll() is not None:
            raise RuntimeError("the competing process ended early")
        yield
    finally:
        proc.kill()
        proc.wait()


def bench_under_load(device: str, rounds: int = 3):
    """Sampler-size noise (200,704 normals) and DDPM step, alone and beside a competing 2-thread torch process
    (started here): ddmini's ``philox_normal`` against ``torch.randn`` into a preallocated tensor, and
    ``ddpm_step`` with in-kernel noise against the torch reference given torch.randn noise. Median of
    ``rounds`` medians, each over 0.5 s (the competing process makes single timings jump)."""
    if device != "cpu":
        return
    g = torch.Generator().manual_seed(0)
    x, e, z = (torch.randn(256, 1, 28, 28, generator=g) for _ in range(3))
    out = torch.empty_like(x)
    ac = schedule.make("linear", T)
    gen = torch.Generator().manual_seed(0)
    got = kernels.philox_normal(z, 1, 2)
    assert (got.flatten() - reference.philox_normal(z.numel(), 1, 2)).abs().max() < 2e-5
    cases = [
        ("noise: torch.randn vs philox_normal", lambda: torch.randn(x.shape, generator=gen, out=z),
         lambda: kernels.philox_normal(x, 1, 2, out=z)),
        ("DDPM step: torch reference + randn vs in-kernel noise",
         lambda: reference.ddpm_step(x, e, 500, ac, torch.randn(x.shape, generator=gen)),
         lambda: kernels.ddpm_step(x, e, 500, ac, kernels.PhiloxNoise(1, 2), out=out)),
    ]  # fmt: skip
    print(f"\n## Under load (256x1x28x28, {torch.get_num_threads()} threads): alone, and beside a 2-thread torch "
          "process\n")  # fmt: skip
    print("| case | load | torch us | ddmini us | torch / ddmini |")
    print("|---|---|---|---|---|")
    for load in ("none", "2-thread torch matmuls"):
        with competing_process() if load != "none" else contextlib.nullcontext():
            for name, theirs, ours in cases:
                t_t = statistics.median(timeit(theirs, min_time=0.5) for _ in range(rounds))
                t_o = statistics.median(timeit(ours, min_time=0.5) for _ in range(rounds))
                print(f"| {name} | {load} | {t_t * 1e6:.0f} | {t_o * 1e6:.0f} | {t_t / t_o:.2f} |", flush=True)


def bench_norm(batch: int = 64):
    """GroupNorm + scale-shift + SiLU at the cpu preset U-Net's shapes (batch 64, channels_last, float32,
    as ddmini trains without native bf16): PyTorch's eager ops (GroupNorm module, mul, add, silu) vs
    ddmini's fused kernel (kernels.group_norm_silu), forward alone and forward + backward; both outputs
    checked against each other first. Bytes: one read of x and one write of y forward."""
    import torch.nn.functional as F

    print(f"\n## GroupNorm + scale-shift + SiLU, batch {batch}, channels_last float32: eager ops vs ddmini fused\n")
    print(
        "| shape (C x H x W) | eager fwd ms | fused fwd ms | fwd ratio | eager fwd+bwd ms | fused fwd+bwd ms "
        "| fwd+bwd ratio | fused fwd GB/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for C, H in ((16, 28), (32, 14), (64, 7)):
        x = torch.randn(batch, C, H, H, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
        gn = torch.nn.GroupNorm(8, C)
        scale = (0.1 * torch.randn(batch, C, generator=g)).requires_grad_()
        shift = torch.randn(batch, C, generator=g).requires_grad_()
        gy = torch.randn(x.shape, generator=g).contiguous(memory_format=torch.channels_last)

        def eager():
            return F.silu(gn(x) * (1 + scale[:, :, None, None]) + shift[:, :, None, None])

        def fused():
            return kernels.group_norm_silu(x, 8, gn.weight, gn.bias, scale, shift, backend="cpp")

        with torch.no_grad():
            assert (eager() - fused()).abs().max() < 1e-4
        times = []
        for fn in (eager, fused):

            def fwd(fn=fn):
                with torch.no_grad():
                    fn()

            times.append(timeit(fwd))
        for fn in (eager, fused):
            times.append(timeit(lambda fn=fn: fn().backward(gy)))
        te, tf, tbe, tbf = times
        gbs = 2 * x.numel() * 4 / tf / 1e9
        print(
            f"| {C} x {H} x {H} | {te * 1e3:.2f} | {tf * 1e3:.2f} | {tf / te:.2f} | {tbe * 1e3:.2f} | "
            f"{tbf * 1e3:.2f} | {tbf / tbe:.2f} | {gbs:.1f} |",
            flush=True,
        )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=None, help=f"comma-separated tables among {', '.join(SECTIONS)} [all]")
    p.add_argument("--sizes", default="16,18,20,22,24", help="log2 of element counts")
    p.add_argument("--dims", default="16,64,128,512", help="Fréchet dimensions (2048 takes minutes)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--rounds", type=int, default=5, help="in-place table: rounds of fresh buffers")
    p.add_argument("--cpu-isa", default="all", help="CPU kernel variant(s): all, or one of avx512, avx2, baseline")
    a = p.parse_args()
    only = set(a.only.split(",")) if a.only else set(SECTIONS)
    if not only <= set(SECTIONS):
        p.error(f"--only takes {', '.join(SECTIONS)}; got {a.only}")
    from ddmini._ext import cpu_isas, forced_cpu_isa

    isas = cpu_isas() if a.cpu_isa == "all" else [a.cpu_isa]
    if a.device == "cuda":
        isas = isas[:1]
    print(f"machine: {machine()}")
    for isa in isas:
        with forced_cpu_isa(isa):
            if a.device == "cpu":
                print(f"\n# ddmini CPU kernel variant: {isa}")
            sizes = [int(s) for s in a.sizes.split(",")]
            if "steps" in only:
                bench_steps(sizes, a.device, not a.no_compile)
            if only & {"steps", "inplace"}:
                bench_steps_in_place(sizes, a.device, a.rounds)
            if "noise" in only:
                bench_noise(a.device)
            if "norm" in only and a.device == "cpu":
                bench_norm()
            if "sampler" in only:
                bench_sampler_steps(a.device)
            if "frechet" in only:
                dims = [int(s) for s in a.dims.split(",")]
                bench_frechet_cuda(dims) if a.device == "cuda" else bench_frechet(dims)
            if "load" in only:
                bench_under_load(a.device)


if __name__ == "__main__":
    main()
