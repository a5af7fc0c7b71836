"""Training (ddmini.train): interrupts never leave a half-step or a missing checkpoint behind."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ddmini import checkpoint

ARGS = [
    "train-diffusion",
    "--unet",
    "tiny",
    "--batch-size",
    "8",
    "--limit",
    "64",
    "--checkpoint-every",
    "20",
    "--device",
    "cpu",
    "--seed",
    "3",
]


def _cli(args, data_dir, **kw):
    env = {**os.environ, "DDMINI_QUIET": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ddmini", *args, "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


STEPS = "80"  # 10-35 steps/s on the dev machines; the interrupt comes once the first checkpoint (step 20) is on disk


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.pt"
    ref = _cli(ARGS + ["--steps", STEPS, "--out", str(path)], data_dir)
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    return checkpoint.load(path)


@pytest.mark.parametrize("gap", [0.03, 0.2])
def test_double_ctrl_c_saves_a_whole_step_and_resumes_exactly(data_dir, tmp_path, gap, uninterrupted):
    """Two SIGINTs `gap` seconds apart: the run stops after a whole step, the checkpoint it reports is
    on disk, and resuming it gives the weights of an uninterrupted run."""
    p = _cli(ARGS + ["--steps", STEPS, "--out", str(tmp_path / "cut.pt")], data_dir)
    deadline = time.monotonic() + 120
    while not (tmp_path / "cut.pt").exists():  # the loop is running once its first checkpoint is written
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.poll() is not None else "slow"
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    time.sleep(gap)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "checkpoint saved" in err and (tmp_path / "cut.pt").is_file(), err
    cut = checkpoint.load(tmp_path / "cut.pt")
    assert 0 < cut["step"] < int(STEPS), "the interrupt came too late or too early to test anything"
    r = _cli(ARGS + ["--steps", STEPS, "--out", str(tmp_path / "cut.pt")], data_dir)
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err
    b = checkpoint.load(tmp_path / "cut.pt")
    for part in ("model", "ema"):
        for k in uninterrupted[part]:
            assert torch.equal(uninterrupted[part][k], b[part][k]), (part, k)


def test_native_bf16_needs_onednn_allowed_to_use_it(monkeypatch):
    from ddmini import runtime

    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert runtime.cpu_has_native_bf16() is False  # whatever the CPU: oneDNN may not use bf16 here
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert runtime.cpu_has_native_bf16() is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    with_flag = runtime.cpu_has_native_bf16()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert runtime.cpu_has_native_bf16() == with_flag  # then the CPU's flags decide, as without the variable


def test_compile_is_refused_on_cpu(tmp_path):
    from ddmini import train
    from ddmini.config import UNET_PRESETS, DiffusionTrainConfig

    with pytest.raises(ValueError, match="--train-compile is for CUDA"):
        train.train(
            UNET_PRESETS["tiny"],
            DiffusionTrainConfig(steps=1, compile=True),
            torch.rand(4, 1, 28, 28),
            torch.zeros(4, dtype=torch.long),
            tmp_path / "d.pt",
            device="cpu",
        )
    assert not (tmp_path / "d.pt").exists()


@pytest.mark.parametrize("cpu_bf16, fused_norm", [(False, True), (False, False), (True, True), (True, False)])
def test_fused_norm_where_training_runs_float32_on_a_cpu(tmp_path, cpu_bf16, fused_norm):
    """The fused GroupNorm + SiLU trains the float32 CPU model; under bf16 autocast (native bf16 CPUs) the
    eager ops stay. On (the default) leaves the cache key as it was before the option existed."""
    from ddmini import train
    from ddmini.config import UNET_PRESETS, DiffusionTrainConfig, key_dict
    from ddmini.runtime import cpu_has_native_bf16

    cfg = DiffusionTrainConfig(steps=2, batch_size=4, cpu_bf16=cpu_bf16, fused_norm=fused_norm)
    state = train.train(
        UNET_PRESETS["tiny"],
        cfg,
        torch.rand(8, 1, 28, 28),
        torch.zeros(8, dtype=torch.long),
        tmp_path / "d.pt",
        device="cpu",
    )
    assert state.model.fused_norm is (fused_norm and not (cpu_bf16 and cpu_has_native_bf16()))
    assert ("fused_norm" in key_dict(cfg)) is (not fused_norm)
