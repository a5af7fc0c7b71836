"""Fitting the training steps to a time budget on this machine (ddmini.fit, --train-fit-minutes)."""

import json

import pytest
from conftest import run_cli


def test_fitted_run_records_its_steps_and_repeats_them(data_dir, tmp_path, capsys, monkeypatch):
    from ddmini import fit as fit_module

    monkeypatch.setattr(fit_module, "MIN_SECONDS", 0.0)  # one chunk of 25 steps: the smoke step takes ms
    # float32 on every machine, so that both norms are timed for real
    base = [
        "run",
        "--preset",
        "smoke",
        "--poison",
        "0.5",
        "--data-dir",
        data_dir,
        "--run-dir",
        tmp_path,
        "--device",
        "cpu",
        "--guidance-scales",
        "1",
        "--no-train-cpu-bf16",
    ]
    code, out, err = run_cli(base + ["--train-fit-minutes", "0.02"], capsys)
    assert code == 0, err
    (fit_file,) = (tmp_path / "cache").glob("fit-*.json")
    fit = json.loads(fit_file.read_text())
    assert fit["minutes"] == 0.02 and fit["seconds_per_step"] > 0 and fit["timed_steps"] == 25
    assert fit["steps"] == max(3, int(0.02 * 60 / fit["seconds_per_step"]))  # warm-up + 1 at least
    assert fit["seconds_per_step"] == min(fit["norm_seconds"].values())
    assert fit["fused_norm"] is (fit["norm_seconds"]["fused"] <= fit["norm_seconds"]["eager"])
    cfg = json.loads((tmp_path / "p0.5" / "config.json").read_text())
    assert cfg["train"]["steps"] == fit["steps"] and cfg["train"]["fit_minutes"] == 0.02
    rep = json.loads((tmp_path / "p0.5" / "report.json").read_text())
    assert rep["training_set"]["diffusion_steps"] == fit["steps"] and rep["training_set"]["fit"] == fit
    md = (tmp_path / "p0.5" / "report.md").read_text()
    # the smoke preset's batch has no measured floor: the warning says so and names the floors there are
    assert "training fitted to 0.02 min" in md and "Warning: no quality floor was measured at batch 16" in md
    assert "warning: " in out and "fitted to 0.02 min here" in out
    stamp = fit_file.stat().st_mtime_ns
    # again: the fit is found, not re-measured, and so is the model it trained
    code, out, err = run_cli(base + ["--train-fit-minutes", "0.02"], capsys)
    assert code == 0, err
    assert fit_file.stat().st_mtime_ns == stamp and "diffusion model: cached" in out
    # the model is keyed by its steps: a run given those steps explicitly finds it too
    norm = [] if fit["fused_norm"] else ["--no-train-fused-norm"]  # the norm the fit chose trained it
    code, out, err = run_cli(base + ["--train-steps", str(fit["steps"]), "--overwrite"] + norm, capsys)
    assert code == 0 and "diffusion model: cached" in out, out
    assert not list((tmp_path / "cache").glob("*.timing.pt*"))


def test_cpu_hour_preset_is_the_cpu_recipe_at_half_the_batch_with_the_lean_unet_fitted_to_a_58_minute_run():
    from dataclasses import replace

    from ddmini.checkpoint import fingerprint
    from ddmini.config import UNET_PRESETS, key_dict
    from ddmini.presets import preset

    hour, cpu = preset("cpu-hour"), preset("cpu")
    assert hour.train == replace(cpu.train, batch_size=64, fit_minutes=48.0) and hour.run_minutes == 58.0
    assert hour.sample == replace(cpu.sample, eta=1.0) and hour.other_samples == 250 and cpu.other_samples == 0
    assert hour.unet == replace(cpu.unet, upsample="shuffle", top_blocks=1) == UNET_PRESETS["lean"]
    # classifier and attack are shared: a cpu run's cached stages serve a cpu-hour run
    assert fingerprint(key_dict(hour.classifier)) == fingerprint(key_dict(cpu.classifier))
    assert fingerprint(key_dict(hour.attack)) == fingerprint(key_dict(cpu.attack))


def test_the_fit_warns_below_its_batch_sizes_measured_floor():
    from ddmini.fit import Fit

    def fit(steps):
        return Fit(minutes=48, seconds_per_step=0.4, timed_steps=25, steps=steps, machine="cpu test")

    assert fit(9000).warning(64) is None and fit(12000).warning(128) is None
    low = fit(8999).warning(64)
    assert "8,999 steps" in low and "9,000" in low and "batch 64" in low
    assert "12,000" in fit(11000).warning(128) and "9,000" not in fit(11000).warning(128)
    other = fit(10**6).warning(32)  # no floor known there: said, whatever the steps
    assert "no quality floor was measured at batch 32" in other and "12,000 steps at batch 128" in other


@pytest.mark.parametrize("native, name", [(True, "cpu"), (False, "cpu-hour")])
def test_the_default_preset_on_a_cpu_without_a_run_dir_depends_on_native_bf16(native, name, monkeypatch):
    import torch

    import ddmini.runtime
    from ddmini.presets import default_preset, run_config

    monkeypatch.setattr(ddmini.runtime, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert default_preset(cpu) == name and default_preset(cpu, "cifar10") == name
    assert run_config(None, poison=0.3, device=cpu)[1] == name
    assert run_config("cpu", poison=0.3, device=cpu)[1] == "cpu"  # a preset given is the preset used
    gpu = torch.device("cuda")
    assert (default_preset(gpu), default_preset(gpu, "cifar10")) == ("paper", "cifar10")


@pytest.mark.parametrize("seconds, name", [(0.18, "cpu"), (0.376, "cpu-hour")])
def test_with_native_bf16_the_cpu_presets_timed_step_chooses_the_default(seconds, name, tmp_path, monkeypatch):
    """Native bf16 is not speed enough: the cpu preset where its 12,000 steps fit cpu-hour's 48 minutes of
    training here (0.18 s/step: ≈ 36 min, Zen 5), else cpu-hour (0.376 s: ≈ 75 min, an AMX Xeon). The
    timing is the fit stage's, cached in the run directory, so the choice repeats; torchrun keeps the rule."""
    import torch

    import ddmini.runtime
    from ddmini import fit
    from ddmini.presets import choose_preset, run_config

    monkeypatch.setattr(ddmini.runtime, "cpu_has_native_bf16", lambda: True)
    timed = []

    def fake_measure(unet, cfg, device, path):
        timed.append((cfg.batch_size, unet.in_channels))
        return seconds, 25, cfg.fused_norm, None

    monkeypatch.setattr(fit, "measure", fake_measure)
    cpu = torch.device("cpu")
    chosen, why = choose_preset(cpu, "mnist", tmp_path / "run")
    assert chosen == name and timed == [(128, 1)]  # the cpu preset's batch, MNIST's one channel
    minutes = round(12000 * seconds / 60)
    assert f"the cpu preset's 12,000 steps take ≈ {minutes} min here at {seconds:.3f} s/step" in why
    assert ("within 48" in why) is (name == "cpu") and ("--preset cpu for them" in why) is (name == "cpu-hour")
    (rec,) = (tmp_path / "run" / "cache").glob("fit-*.json")
    assert json.loads(rec.read_text())["seconds_per_step"] == seconds
    # the same run directory chooses the same without timing again; the run's config follows the choice
    assert run_config(None, poison=0.3, device=cpu, run_dir=tmp_path / "run")[1:] == (name, why) and len(timed) == 1
    assert choose_preset(cpu, "cifar10", tmp_path / "run")[0] == name and timed[-1] == (128, 3)
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun the ranks would time apart: the rule, no timing
    assert choose_preset(cpu, "mnist", tmp_path / "other") == ("cpu", "") and len(timed) == 2


def test_steps_given_replace_a_presets_fit_unless_the_fit_is_given_too():
    import torch

    from ddmini.presets import run_config

    cpu = torch.device("cpu")
    cfg, _, _ = run_config("cpu-hour", poison=0.3, device=cpu, overrides={"train.steps": 9000})
    assert (cfg.train.steps, cfg.train.fit_minutes) == (9000, 0.0)
    cfg, _, _ = run_config(
        "cpu-hour", poison=0.3, device=cpu, overrides={"train.steps": 9000, "train.fit_minutes": 30.0}
    )
    assert cfg.train.fit_minutes == 30.0
    cfg, _, _ = run_config("cpu-hour", poison=0.3, device=cpu)
    assert (cfg.train.fit_minutes, cfg.run_minutes) == (48.0, 58.0)


def test_the_fit_trains_with_the_faster_norm_where_float32_trains_on_a_cpu(data_dir, tmp_path, capsys, monkeypatch):
    """Float32 on a CPU the fit times the fused GroupNorm + SiLU and the eager ops, and trains with the
    faster (here made the eager ones); the choice is recorded, reported and repeated from the cache."""
    from ddmini import fit

    timed = []

    def fake_time(unet, cfg, x, y, device, path):
        timed.append(cfg.fused_norm)
        return (0.5, 25) if cfg.fused_norm else (0.4, 50)

    monkeypatch.setattr(fit, "_time", fake_time)
    base = [
        "run",
        "--preset",
        "smoke",
        "--poison",
        "0",
        "--data-dir",
        data_dir,
        "--run-dir",
        tmp_path,
        "--device",
        "cpu",
        "--guidance-scales",
        "1",
        "--no-train-cpu-bf16",
        "--train-fit-minutes",
        "0.02",
    ]
    code, out, err = run_cli(base, capsys)
    assert code == 0, err
    assert timed == [True, False]
    (fit_file,) = (tmp_path / "cache").glob("fit-*.json")
    rec = json.loads(fit_file.read_text())
    assert rec["fused_norm"] is False and rec["norm_seconds"] == {"fused": 0.5, "eager": 0.4}
    assert rec["seconds_per_step"] == 0.4 and rec["steps"] == max(3, int(0.02 * 60 / 0.4))
    assert rec["timed_steps"] == 50  # the chosen norm's
    cfg = json.loads((tmp_path / "p0" / "config.json").read_text())
    assert cfg["train"]["fused_norm"] is False and cfg["train"]["steps"] == rec["steps"]
    md = (tmp_path / "p0" / "report.md").read_text()
    assert "with the eager GroupNorm + SiLU (fused 0.500 vs eager 0.400 s per step)" in md
    assert "with the eager norm (fused 0.500 vs eager 0.400 s/step)" in out
    code, out, err = run_cli(base, capsys)  # again: the choice comes from the cache, nothing is timed
    assert code == 0 and timed == [True, False] and "diffusion model: cached" in out, out


@pytest.mark.parametrize("fused_wins", [True, False])
def test_measure_picks_the_faster_norm_and_times_one_where_no_choice_applies(tmp_path, monkeypatch, fused_wins):
    import torch

    from ddmini import fit
    from ddmini.config import UNET_PRESETS, DiffusionTrainConfig

    monkeypatch.setattr(fit, "_time", lambda unet, cfg, *a: (0.3, 60) if cfg.fused_norm == fused_wins else (0.6, 25))
    cpu, unet = torch.device("cpu"), UNET_PRESETS["tiny"]
    sec, timed, fused, norms = fit.measure(unet, DiffusionTrainConfig(cpu_bf16=False), cpu, tmp_path / "t.pt")
    assert (sec, timed, fused) == (0.3, 60, fused_wins) and set(norms) == {"fused", "eager"}
    # the user's --no-train-fused-norm is kept: one timing, no choice
    assert fit.measure(unet, DiffusionTrainConfig(cpu_bf16=False, fused_norm=False), cpu, tmp_path / "t.pt") == (
        (0.6, 25, False, None) if fused_wins else (0.3, 60, False, None)
    )


@pytest.mark.parametrize("min_seconds, max_timed, expect", [(0.0, 1000, 25), (1e9, 75, 75)])
def test_the_timing_runs_in_chunks_until_its_seconds_or_its_most_steps(
    tmp_path, monkeypatch, min_seconds, max_timed, expect
):
    """A 25-step timing sampled a shared machine's speed once (0.335 s/step against the loop's 0.399): the
    fit times chunks of 25 steps until MIN_SECONDS have passed, or MAX_TIMED steps."""
    import torch

    from ddmini import fit, train
    from ddmini.config import UNET_PRESETS, DiffusionTrainConfig

    monkeypatch.setattr(fit, "MIN_SECONDS", min_seconds)
    monkeypatch.setattr(fit, "MAX_TIMED", max_timed)
    chunks = []
    real = train.train
    monkeypatch.setattr(train, "train", lambda *a, **k: chunks.append(a[1].steps) or real(*a, **k))
    x, y = torch.rand(16, 1, 28, 28), torch.zeros(16, dtype=torch.long)
    sec, timed = fit._time(
        UNET_PRESETS["tiny"], DiffusionTrainConfig(batch_size=4), x, y, torch.device("cpu"), tmp_path / "t.pt"
    )
    assert timed == expect and sec > 0
    assert chunks == [fit.WARM] + [fit.WARM + 25 * k for k in range(1, expect // 25 + 1)]


def test_a_fit_record_from_before_the_norm_was_timed_loads_as_fused():
    from ddmini.fit import Fit

    old = {"minutes": 48, "seconds_per_step": 0.4, "timed_steps": 25, "steps": 7200, "machine": "cpu x"}
    rec = Fit(**old)
    assert rec.fused_norm is True and rec.norm_seconds is None
