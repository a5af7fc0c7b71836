"""Fitting the training steps to a time budget on this machine (ddmini.fit, --train-fit-minutes)."""
import json

from conftest import run_cli


def test_fitted_run_records_its_steps_and_repeats_them(data_dir, tmp_path, capsys):
    base = ["run", "--preset", "smoke", "--poison", "0.5", "--data-dir", data_dir, "--run-dir", tmp_path,
            "--device", "cpu", "--guidance-scales", "1"]
    code, out, err = run_cli(base + ["--train-fit-minutes", "0.02"], capsys)
    assert code == 0, err
    (fit_file,) = (tmp_path / "cache").glob("fit-*.json")
    fit = json.loads(fit_file.read_text())
    assert fit["minutes"] == 0.02 and fit["seconds_per_step"] > 0 and fit["timed_steps"] == 25
    assert fit["steps"] == max(3, int(0.02 * 60 / fit["seconds_per_step"]))  # warm-up + 1 at least
    cfg = json.loads((tmp_path / "p0.5" / "config.json").read_text())
    assert cfg["train"]["steps"] == fit["steps"] and cfg["train"]["fit_minutes"] == 0.02
    rep = json.loads((tmp_path / "p0.5" / "report.json").read_text())
    assert rep["training_set"]["diffusion_steps"] == fit["steps"] and rep["training_set"]["fit"] == fit
    md = (tmp_path / "p0.5" / "report.md").read_text()
    assert "training fitted to 0.02 min" in md and "Warning: " in md and "12,000" in md
    assert "warning: " in out and "fitted to 0.02 min here" in out
    stamp = fit_file.stat().st_mtime_ns
    # again: the fit is found, not re-measured, and so is the model it trained
    code, out, err = run_cli(base + ["--train-fit-minutes", "0.02"], capsys)
    assert code == 0, err
    assert fit_file.stat().st_mtime_ns == stamp and "diffusion model: cached" in out
    # the model is keyed by its steps: a run given those steps explicitly finds it too
    code, out, err = run_cli(base + ["--train-steps", str(fit["steps"])], capsys)
    assert code == 0 and "diffusion model: cached" in out, out
    assert not list((tmp_path / "cache").glob("*.timing.pt*"))


def test_cpu_hour_preset_is_the_cpu_preset_fitted_to_45_minutes():
    from dataclasses import replace

    from ddmini.checkpoint import fingerprint
    from ddmini.config import key_dict, preset

    hour, cpu = preset("cpu-hour"), preset("cpu")
    assert hour.train.fit_minutes == 45 and replace(hour.train, fit_minutes=0.0) == cpu.train
    assert fingerprint(key_dict(hour.classifier)) == fingerprint(key_dict(cpu.classifier))
