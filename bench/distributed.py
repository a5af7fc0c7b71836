"""One process with N threads or N processes with one thread each: training and sampling under torchrun.

    python bench/distributed.py [--procs 2] [--steps 60] [--num 256] [--only train,sample,comm,project]

train:   `ddmini train-diffusion --preset cpu` for --steps steps (the steps/s it prints: training time only),
         once as one process with --procs threads, once under `torchrun --nproc-per-node --procs` with one
         thread per process; bf16 where the CPU has it natively (the preset's choice), then float32.
sample:  `ddmini sample` of --num images (DDIM-50, guidance 1, batches of 128: the cpu preset's sampling)
         from the model the training row made, the same two ways; the img/s it prints.
comm:    the share of a DDP training step spent communicating: --procs gloo ranks, each timing the cpu
         preset's step on its slice of the batch with DDP's gradient all-reduce and without it (`no_sync`);
         share = 1 - t(no_sync) / t(DDP). And the all-reduce alone of the U-Net's gradient.
project: the paper preset's training on 8 GPUs, a projection (not a measurement) from the paper U-Net's
         gradient size (counted here), the measured single-GPU step (--gpu-step-ms, H200, batch 256: 17.2
         steps/s in README's GPU section) scaled linearly to the per-GPU batch, and an assumed all-reduce bus
         bandwidth (--busbw-gbs; NCCL ring: each GPU moves 2 (N-1)/N of the gradient).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

DATA = os.environ.get("DDMINI_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")


def _ddmini(args, procs: int, threads: int) -> str:
    """stdout of `ddmini ARGS` as one process (procs = 1) or under torchrun; `threads` per process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "DDMINI_QUIET": "1"}
    head = (
        [sys.executable, "-m", "ddmini"]
        if procs == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(procs),
            "-m",
            "ddmini",
        ]
    )
    p = subprocess.run(head + [str(a) for a in args], capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"failed: {' '.join(map(str, args))}\n{p.stderr[-2000:]}")
    return p.stdout


def _rate(out: str, unit: str) -> float:
    m = re.search(r"\(([0-9.]+) " + unit + r"\)", out)
    if not m:
        sys.exit(f"no '{unit}' figure in:\n{out}")
    return float(m.group(1))


def bench_train(a, tmp: Path) -> Path:
    print(
        f"\n## Training, `ddmini train-diffusion --preset cpu --steps {a.steps}` "
        "(batch 128; steps/s of training time)\n"
    )
    print(
        f"| precision | 1 process x {a.procs} threads | {a.procs} processes x 1 thread | ratio (processes / threads) |"
    )
    print("| --- | --- | --- | --- |")
    ckpt = tmp / "bf16.pt"
    for name, flag in (("bf16 autocast (if native)", "--cpu-bf16"), ("float32", "--no-cpu-bf16")):
        out = tmp / f"{flag}.pt"
        args = [
            "train-diffusion",
            "--preset",
            "cpu",
            "--steps",
            a.steps,
            flag,
            "--no-resume",
            "--data-dir",
            DATA,
            "--out",
        ]
        one = _rate(_ddmini(args + [out], 1, a.procs), "steps/s")
        many = _rate(_ddmini(args + [out], a.procs, 1), "steps/s")
        print(f"| {name} | {one:.2f} steps/s | {many:.2f} steps/s | {many / one:.2f}x |")
        ckpt = ckpt if ckpt.exists() else out
    return ckpt


def bench_sample(a, ckpt: Path, tmp: Path):
    print(f"\n## Sampling, `ddmini sample --preset cpu -n {a.num}` (DDIM-50, guidance 1, batches of 128)\n")
    print(f"| 1 process x {a.procs} threads | {a.procs} processes x 1 thread | ratio |")
    print("| --- | --- | --- |")
    args = ["sample", "--preset", "cpu", "--checkpoint", ckpt, "-n", a.num, "--device", "cpu", "--out"]
    one = _rate(_ddmini(args + [tmp / "s1.pt"], 1, a.procs), "img/s")
    many = _rate(_ddmini(args + [tmp / "s2.pt"], a.procs, 1), "img/s")
    print(f"| {one:.2f} img/s | {many:.2f} img/s | {many / one:.2f}x |")


def _comm_worker(rank: int, size: int, port: int, steps: int, q):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ddmini.diffusion import Diffusion
    from ddmini.presets import preset
    from ddmini.unet import UNet

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    cfg = preset("cpu")
    torch.manual_seed(0)
    model = UNet(cfg.unet)
    net = DistributedDataParallel(model, gradient_as_bucket_view=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    diff = Diffusion(schedule_name=cfg.train.schedule, T=cfg.train.T)
    b = cfg.train.batch_size // size
    x0, y = torch.rand(b, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (b,))
    t, noise = torch.randint(0, cfg.train.T, (b,)), torch.randn(b, 1, 28, 28)

    def step(sync: bool):
        ctx = net.no_sync() if not sync else torch.enable_grad()
        with ctx:
            loss = diff.loss(net, x0, y, t, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()

    times = {True: [], False: []}
    for i in range(steps + 2):
        for sync in (True, False):
            dist.barrier()
            t0 = time.perf_counter()
            step(sync)
            dist.barrier()
            if i >= 2:
                times[sync].append(time.perf_counter() - t0)
    flat = torch.zeros(sum(p.numel() for p in model.parameters()))
    ar = []
    for i in range(12):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(flat)
        if i >= 2:
            ar.append(time.perf_counter() - t0)
    if rank == 0:
        q.put((statistics.median(times[True]), statistics.median(times[False]), statistics.median(ar), flat.numel()))
    dist.destroy_process_group()


def bench_comm(a):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_comm_worker, args=(r, a.procs, port, a.comm_steps, q)) for r in range(a.procs)]
    for p in procs:
        p.start()
    t_ddp, t_local, t_ar, n = q.get(timeout=600)
    for p in procs:
        p.join()
    print(
        f"\n## Communication ({a.procs} gloo ranks on this host, 1 thread each, float32, the cpu preset's step "
        f"on batch 128 / {a.procs} per rank, median of {a.comm_steps})\n"
    )
    print(
        "| DDP step | same step, no gradient all-reduce (`no_sync`) | communication share | "
        "all-reduce alone of the gradient |"
    )
    print("| --- | --- | --- | --- |")
    print(
        f"| {1e3 * t_ddp:.1f} ms | {1e3 * t_local:.1f} ms | {100 * (1 - t_local / t_ddp):.1f} % | "
        f"{1e3 * t_ar:.2f} ms ({n:,} float32, {4 * n / 1e6:.1f} MB) |"
    )


def project(a):
    from ddmini.presets import preset
    from ddmini.unet import UNet, num_parameters

    cfg = preset("paper")
    n = num_parameters(UNet(cfg.unet))
    grad_mb = 4 * n / 1e6
    B, steps = cfg.train.batch_size, cfg.train.steps
    print(f"\n## Projection, not a measurement: the paper preset ({steps:,} steps, global batch {B}) on G GPUs\n")
    print(
        f"Paper U-Net {n:,} parameters: {grad_mb:.1f} MB of float32 gradient all-reduced per step. Compute: "
        f"the measured H200 step ({a.gpu_step_ms:g} ms at batch 256) scaled linearly to B/G images per GPU "
        f"(optimistic: a small per-GPU batch leaves a GPU under-used). All-reduce: ring, 2 (G-1)/G x "
        f"{grad_mb:.1f} MB per GPU at an assumed {a.busbw_gbs:g} GB/s bus bandwidth, not overlapped with the "
        "backward pass (pessimistic).\n"
    )
    print("| GPUs | per-GPU batch | compute ms/step | all-reduce ms/step | projected training time |")
    print("| --- | --- | --- | --- | --- |")
    for g in (1, 2, 4, 8):
        comp = a.gpu_step_ms * (B / g) / 256
        comm = 0.0 if g == 1 else 2 * (g - 1) / g * grad_mb / 1e3 / a.busbw_gbs * 1e3
        print(f"| {g} | {B // g} | {comp:.1f} | {comm:.2f} | {steps * (comp + comm) / 6e4:.1f} min |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--steps", type=int, default=60, help="training steps per timing (including the first)")
    p.add_argument("--num", type=int, default=256, help="images per sampling timing")
    p.add_argument("--comm-steps", type=int, default=10)
    p.add_argument(
        "--gpu-step-ms",
        type=float,
        default=1e3 / 17.2,
        help="measured single-GPU paper U-Net step at batch 256, ms (H200: 17.2 steps/s)",
    )
    p.add_argument("--busbw-gbs", type=float, default=200.0, help="assumed all-reduce bus bandwidth, GB/s")
    p.add_argument("--only", default="train,sample,comm,project")
    a = p.parse_args()
    only = set(a.only.split(","))
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = None
        if "train" in only:
            ckpt = bench_train(a, tmp)
        if "sample" in only:
            if ckpt is None:
                ckpt = tmp / "m.pt"
                _ddmini(
                    ["train-diffusion", "--preset", "cpu", "--steps", 1, "--data-dir", DATA, "--out", ckpt], 1, a.procs
                )
            bench_sample(a, ckpt, tmp)
    if "comm" in only:
        bench_comm(a)
    if "project" in only:
        project(a)


if __name__ == "__main__":
    main()
