"""More than one process (ddmini.distributed): 2 ranks on gloo give what 1 process gives.

Ranks are started as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment),
one subprocess each, so a test can give one rank other options or kill it; one test goes through
torchrun itself. Every process runs one thread (what torchrun sets), so the single-process reference
computes the same float operations; only the order of the gradient reduction differs.
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO

from ddmini import checkpoint

#: Two ranks vs one process after 6 float32 training steps (smoke U-Net, weights up to ~3.7): the
#: parameters agree to this (absolute). Only the order of the gradient reduction differs; measured on
#: Zen 5 (2 cores, 1 thread per process): 1.6e-7 after 6 steps, 3.3e-6 after 200 (model), the EMA less.
PARAM_ATOL = 1e-5
#: ...and after the resume test's RESUME_STEPS, where the rounding has had time to grow.
PARAM_ATOL_RESUME = 1e-4
#: Steps of the resume test: the interrupt comes once the first checkpoint (step 3) is on disk, a few
#: steps in, so each launch after the first trains most of them again; a launch's start-up costs more.
RESUME_STEPS = 60


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    return {**os.environ, "DDMINI_QUIET": "1", "OMP_NUM_THREADS": "1", "DDMINI_DIST_TIMEOUT": "60", **extra}


def start(argvs, cwds=None):
    """Start one `python -m ddmini` per argv as the ranks of one group (rank r in cwds[r] if given)."""
    port, n = _port(), len(argvs)
    return [
        subprocess.Popen(
            [sys.executable, "-m", "ddmini", *map(str, a)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwds[r] if cwds else None,
            env=_env(
                RANK=str(r),
                LOCAL_RANK=str(r),
                WORLD_SIZE=str(n),
                LOCAL_WORLD_SIZE=str(n),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
            ),
        )
        for r, a in enumerate(argvs)
    ]


def spawn(argvs, timeout=240, cwds=None):
    """start() and wait: [(rc, stdout, stderr)] per rank."""
    procs = start(argvs, cwds)
    out = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append((p.returncode, o, e))
    return out


def single(argv, timeout=240):
    p = subprocess.run(
        [sys.executable, "-m", "ddmini", *map(str, argv)], capture_output=True, text=True, env=_env(), timeout=timeout
    )
    assert p.returncode == 0, p.stderr
    return p


def train_args(data_dir, out, steps=6, *extra):
    return [
        "train-diffusion",
        "--preset",
        "smoke",
        "--no-cpu-bf16",
        "--steps",
        steps,
        "--batch-size",
        16,
        "--checkpoint-every",
        3,
        "--device",
        "cpu",
        "--data-dir",
        data_dir,
        "--out",
        out,
        *extra,
    ]


def _max_diff(a, b, part="model"):
    return max(float((a[part][k] - b[part][k]).abs().max()) for k in a[part])


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "d.pt"
    single(train_args(data_dir, out))
    return checkpoint.load(out)


def test_two_ranks_train_what_one_process_trains(data_dir, tmp_path, one_process):
    out = tmp_path / "d.pt"
    res = spawn([train_args(data_dir, out)] * 2)
    assert all(rc == 0 for rc, _, _ in res), res
    assert "trained 6 steps" in res[0][1] and res[1][1] == ""  # rank 0 speaks for both
    two = checkpoint.load(out)
    assert two["step"] == one_process["step"] == 6
    # the same samples were drawn: the generator ends in the same state
    assert torch.equal(two["gen"], one_process["gen"])
    for part in ("model", "ema"):
        d = _max_diff(two, one_process, part)
        assert d < PARAM_ATOL, (part, d)
    # ...and the difference is only rounding: other data (another seed) moves the weights far more
    other = tmp_path / "other.pt"
    single(train_args(data_dir, other, 6, "--seed", 1))
    assert _max_diff(checkpoint.load(other), one_process) > 100 * PARAM_ATOL


def test_interrupted_under_two_ranks_resumes_under_two_or_one(data_dir, tmp_path):
    full = tmp_path / "full.pt"
    assert all(rc == 0 for rc, _, _ in spawn([train_args(data_dir, full, RESUME_STEPS)] * 2))
    ref = checkpoint.load(full)
    cut = tmp_path / "cut.pt"
    procs = start([train_args(data_dir, cut, RESUME_STEPS)] * 2)
    deadline = time.monotonic() + 120
    while not cut.exists():  # training runs once its first checkpoint is on disk
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
        time.sleep(0.005)
    procs[1].send_signal(signal.SIGINT)  # Ctrl-C reaching one rank stops both
    res = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [130, 130], res
    assert "checkpoint saved" in res[0][1] + res[0][0], res[0]
    step = checkpoint.load(cut)["step"]
    assert 0 < step < RESUME_STEPS, "the interrupt came too late or too early to test anything"
    one = tmp_path / "one.pt"
    one.write_bytes(cut.read_bytes())
    assert all(rc == 0 for rc, _, _ in spawn([train_args(data_dir, cut, RESUME_STEPS)] * 2))
    for part in ("model", "ema"):  # resumed under 2: exactly the uninterrupted run
        b = checkpoint.load(cut)
        for k in ref[part]:
            assert torch.equal(ref[part][k], b[part][k]), (part, k)
    single(train_args(data_dir, one, RESUME_STEPS))  # resumed under 1: the same to the reduction-order tolerance
    assert _max_diff(checkpoint.load(one), ref) < PARAM_ATOL_RESUME


def test_a_rank_that_dies_stops_the_other_and_leaves_the_last_checkpoint(data_dir, tmp_path):
    out = tmp_path / "d.pt"
    procs = start([train_args(data_dir, out, 100000)] * 2)
    deadline = time.monotonic() + 120
    while not out.exists():
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.3)
    procs[1].kill()
    t0 = time.monotonic()
    _, err = procs[0].communicate(timeout=90)
    assert procs[0].returncode not in (0, None), err
    assert time.monotonic() - t0 < 60
    ck = checkpoint.load(out)  # digest verified: a whole checkpoint, at a checkpoint step
    assert ck["step"] % 3 == 0 and ck["step"] > 0


def test_attack_and_sampling_under_two_ranks_equal_one_process(data_dir, tmp_path, smoke_run):
    clf, ckpt = smoke_run["classifier"], smoke_run["diffusion"]
    a_args = [
        "attack",
        "--preset",
        "smoke",
        "--device",
        "cpu",
        "--data-dir",
        data_dir,
        "--classifier",
        clf,
        "--limit",
        200,
        "--chunk-size",
        32,
    ]
    single(a_args + ["--run-dir", tmp_path / "one", "--out", tmp_path / "a1"])
    res = spawn([a_args + ["--run-dir", tmp_path / "two", "--out", tmp_path / "a2"]] * 2)
    assert all(rc == 0 for rc, _, _ in res), res
    a1, a2 = (checkpoint.load(tmp_path / d / "attacked.pt") for d in ("a1", "a2"))
    for k in ("x_adv", "pred", "success", "l2", "linf"):
        assert torch.equal(a1[k], a2[k]), k
    assert a1["key"] == a2["key"]
    assert not list((tmp_path / "a2" / "chunks").glob("*.pt"))  # merged and cleaned up
    # resumable at any world size: a chunk one process finished is taken, not recomputed, by two ranks
    (tmp_path / "a3" / "chunks").mkdir(parents=True)
    checkpoint.save(
        {"key": a1["key"], "start": 32, "stop": 64, "x_adv": a1["x_adv"][32:64], "seconds": 1000.0},
        tmp_path / "a3" / "chunks" / "000032.pt",
    )
    res = spawn([a_args + ["--run-dir", tmp_path / "two", "--out", tmp_path / "a3"]] * 2)
    assert all(rc == 0 for rc, _, _ in res), res
    a3 = checkpoint.load(tmp_path / "a3" / "attacked.pt")
    assert torch.equal(a3["x_adv"], a1["x_adv"]) and a3["seconds"] >= 1000.0

    s_args = ["sample", "--checkpoint", ckpt, "-n", 50, "--batch-size", 8, "--steps", 5, "--device", "cpu"]
    single(s_args + ["--out", tmp_path / "s1.pt"])
    res = spawn([s_args + ["--out", tmp_path / "s2.pt"]] * 2)
    assert all(rc == 0 for rc, _, _ in res), res
    s1, s2 = checkpoint.load(tmp_path / "s1.pt"), checkpoint.load(tmp_path / "s2.pt")
    assert torch.equal(s1["images"], s2["images"]) and torch.equal(s1["labels"], s2["labels"])


def test_ranks_with_different_settings_stop_with_one_line(data_dir, tmp_path):
    res = spawn([train_args(data_dir, tmp_path / "d.pt", 6), train_args(data_dir, tmp_path / "d.pt", 7)])
    assert [rc for rc, _, _ in res] == [1, 1], res
    err = res[0][2].strip()
    assert len(err.splitlines()) == 1 and "different settings" in err and "steps" in err, err
    assert "6" in err and "7" in err and "rank 1" in err
    assert res[1][2].strip() == ""  # rank 0 speaks for all


def test_a_batch_that_does_not_split_over_the_ranks_is_one_line(data_dir, tmp_path):
    res = spawn([train_args(data_dir, tmp_path / "d.pt", 6, "--batch-size", 15)] * 2)
    assert [rc for rc, _, _ in res] == [1, 1], res
    assert "must split evenly over 2 ranks" in res[0][2] and len(res[0][2].strip().splitlines()) == 1


def test_a_run_dir_one_rank_cannot_write_is_one_line(data_dir, tmp_path):
    """The same relative run directory seen from two working directories (as two hosts see one path on
    different disks): on rank 1 it is a file. Rank 0 names rank 1 and the path; both exit 1, nothing ran."""
    for r in (0, 1):
        (tmp_path / f"host{r}").mkdir()
    (tmp_path / "host1" / "runs").write_text("")
    res = spawn(
        [["run", "--preset", "smoke", "--data-dir", data_dir, "--run-dir", "runs"]] * 2,
        cwds=[tmp_path / "host0", tmp_path / "host1"],
    )
    assert [rc for rc, _, _ in res] == [1, 1], res
    err = res[0][2].strip()
    assert "rank 1" in err and "runs" in err and "not a directory" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "host0" / "runs" / "cache").exists()


def test_commands_that_run_in_one_process_refuse_torchrun(data_dir, tmp_path):
    res = spawn([["zoo", "--preset", "smoke", "--data-dir", data_dir, "--run-dir", tmp_path]] * 2)
    assert [rc for rc, _, _ in res] == [2, 2], res
    assert "runs in one process" in res[0][2] and res[1][2] == ""


def readme_torchrun() -> list[str]:
    """The torchrun commands of docs/distributed.md."""
    blocks = re.findall(r"^```bash\n(.*?)^```", (REPO / "docs" / "distributed.md").read_text(), re.M | re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip().startswith("torchrun ")]


#: docs/distributed.md's torchrun commands: which one this file runs (with --data-dir added), and why the other
#: is not run here.
README_TORCHRUN = {
    "torchrun --standalone --nproc-per-node 2 -m ddmini run --preset smoke --poison 0.3": "run below",
    "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m ddmini run "
    "--preset paper --device cuda --poison 1": "skip: needs two hosts with 8 GPUs each",
}


def test_every_readme_torchrun_command_is_classified():
    assert sorted(readme_torchrun()) == sorted(README_TORCHRUN)


def test_torchrun_smoke_run_matches_the_single_process_run(data_dir, tmp_path):
    """README's command (torchrun, 2 processes, the smoke run): its report matches one process's."""
    cmd = next(c for c, how in README_TORCHRUN.items() if how == "run below")
    assert cmd in readme_torchrun()
    args = shlex.split(cmd) + ["--data-dir", str(data_dir)]
    one = tmp_path / "one"
    single(args[args.index("ddmini") + 1 :] + ["--run-dir", one, "--device", "cpu"])
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            *args[1:],
            "--run-dir",
            str(tmp_path / "two"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("ddmini run:") == 1 and "2 processes" in p.stdout
    r1, r2 = (json.loads((d / "p0.3" / "report.json").read_text()) for d in (one, tmp_path / "two"))
    assert r2["versions"]["processes"] == 2
    assert r1["attack"]["success_rate"] == r2["attack"]["success_rate"]
    assert r1["attack"]["l2_mean"] == r2["attack"]["l2_mean"]
    for g in r1["generated"]:
        m1, m2 = r1["generated"][g]["misclassification"], r2["generated"][g]["misclassification"]
        assert abs(m1["rate"] - m2["rate"]) <= 2 / m1["n"], g  # bf16 training: a sample or two may flip
    a1 = checkpoint.load(next((one / "cache").glob("attack-*/attacked.pt")))
    a2 = checkpoint.load(next((tmp_path / "two" / "cache").glob("attack-*/attacked.pt")))
    assert torch.equal(a1["x_adv"], a2["x_adv"])
    assert Path(tmp_path / "two" / "p0.3" / "report.md").is_file()
