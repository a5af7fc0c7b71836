"""The run's plan (ddmini.fit: Rates, work, expected, budget; ddmini.train.Deadline): every run says what each
stage is expected to take and records it beside what it took; --run-minutes gives training what the other
stages leave of the run's budget, once per run directory, and stops training at the run's deadline."""

import json

import pytest
import torch
from conftest import assert_one_line, run_cli

SMOKE = ["run", "--preset", "smoke", "--device", "cpu", "--guidance-scales", "1", "--no-train-cpu-bf16"]


def _rates(**kw):
    from ddmini import fit

    base = dict(
        machine=fit.machine(torch.device("cpu")),
        classifier_batch=0.01,
        attack_image=0.001,
        sample_step=0.0001,
        guided_step=0.0002,
        predict_image=0.0001,
        train_step=0.05,
    )
    return fit.Rates(**{**base, **kw})


def test_a_run_says_its_expected_minutes_and_records_each_stage_beside_them(data_dir, tmp_path, capsys):
    args = [*SMOKE, "--poison", "0.5", "--data-dir", data_dir, "--run-dir", tmp_path]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "timing a slice of each stage here" in out
    line = next(s for s in out.splitlines() if s.startswith("expected minutes:"))
    for stage in ("classifier", "attack", "training", "sampling", "evaluation", "in all, done ≈"):
        assert stage in line
    (rates,) = (tmp_path / "cache").glob("rates-*.json")
    rep = json.loads((tmp_path / "p0.5" / "report.json").read_text())
    assert list(rep["estimates"]) == ["classifier", "attack", "training", "sampling", "evaluation"]
    assert all(v > 0 for v in rep["estimates"].values())  # nothing was cached
    for stage in ("plan", "classifier", "attack", "training", "sampling", "evaluation", "total"):
        assert rep["timings"][stage] >= 0, stage
    t = rep["timings"]
    assert t["total"] >= t["classifier"] + t["attack"] + t["training"] + t["sampling"] + t["evaluation"]
    md = (tmp_path / "p0.5" / "report.md").read_text()
    assert "| stage | expected min | actual min |" in md and "| expected in all |" in md
    # again: the rates are found, and every stage but the evaluation is expected to cost nothing (cached)
    stamp = rates.stat().st_mtime_ns
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "timing a slice" not in out and rates.stat().st_mtime_ns == stamp, out
    rep = json.loads((tmp_path / "p0.5" / "report.json").read_text())
    assert {k for k, v in rep["estimates"].items() if v > 0} == {"evaluation"}


def test_the_work_counts_only_what_is_not_cached():
    from ddmini import fit
    from ddmini.presets import preset

    cfg = preset("cpu-hour").validate()  # 3 epochs of 128; 1,000 samples at 1, 250 at 2 and 3; 50 DDIM steps
    assert [cfg.samples_at(g) for g in cfg.guidance_scales] == [1000, 250, 250]
    w = fit.work(cfg, 60000, 10000, {})
    assert w.classifier_batches == 3 * 469 and w.attack_images == 60000 and w.train_steps == cfg.train.steps
    assert (w.sample_steps, w.guided_steps) == (50 * 1000, 2 * 50 * 250)
    assert w.predict_images == 10000 + 2 * 10000 + 1000 + 2 * 250
    some = fit.work(cfg, 60000, 10000, {"classifier": True, "attack": True, "samples_w2": True}, steps_done=100)
    assert (some.classifier_batches, some.attack_images, some.train_steps) == (0, 0, cfg.train.steps - 100)
    assert (some.sample_steps, some.guided_steps) == (50 * 1000, 50 * 250)
    r = _rates()
    e = fit.expected(some, r, seconds_per_step=0.5)  # sustained: SUSTAINED(_TRAIN) times the brief timings
    assert e["classifier"] == 0 and e["training"] == pytest.approx(fit.SUSTAINED_TRAIN * (cfg.train.steps - 100) * 0.5)
    assert e["sampling"] == pytest.approx(fit.SUSTAINED * 50 * (1000 * r.sample_step + 250 * r.guided_step))
    line = fit.estimate_line({"classifier": 60.0, "training": 1800.0}, 0.0, 57)
    assert line.startswith("expected minutes: classifier 1.0, training 30.0; 31.0 in all, done ≈ ")
    assert line.endswith("(budget 57 min)")


def test_run_minutes_gives_training_what_the_other_stages_leave_once_per_run_dir(
    data_dir, tmp_path, capsys, monkeypatch
):
    """Fixed rates and a fixed training step (the timings faked): the classifier's 57 batches of 32 at 0.48 s and
    the attack's 600 images at 0.0544 s are 60 s, sustained 75 s, of a 2-minute budget; with 3 % kept back and
    the seconds the run spent before (data, timings: under 6 s), 0.59-0.69 min are left, which the fit's brief
    timing buys as 0.5 minutes (over SUSTAINED_TRAIN, to 0.1 min below): 0.5 * 60 / 1.0 = 30 steps. The p = 1 run in
    the same directory, whose classifier and attack are cached, trains the same steps (its model's key: the
    sweep's runs compare)."""
    from ddmini import fit

    rates = _rates(classifier_batch=0.48, attack_image=0.0544)
    monkeypatch.setattr(fit, "measure_rates", lambda cfg, device, path: rates)
    monkeypatch.setattr(fit, "measure", lambda unet, cfg, device, path: (1.0, 25, cfg.fused_norm, None))
    monkeypatch.setattr("ddmini.train.Deadline.passed", lambda self: False)  # the real steps take ms, not 1 s
    base = [*SMOKE, "--data-dir", data_dir, "--run-dir", tmp_path, "--run-minutes", "2"]
    code, out, err = run_cli([*base, "--poison", "0.5"], capsys)
    assert code == 0, err
    (budget,) = (tmp_path / "cache").glob("budget-*.json")
    assert fit.SUSTAINED_TRAIN == 1.17 and json.loads(budget.read_text())["train_minutes"] == 0.5
    assert "fitted to 0.5 min here: 1.000 s/step" in out and "-> 30 steps" in out
    assert "(budget 2 min)" in out
    cfg = json.loads((tmp_path / "p0.5" / "config.json").read_text())
    assert (cfg["run_minutes"], cfg["train"]["steps"]) == (2.0, 30)
    code, out, err = run_cli([*base, "--poison", "1"], capsys)
    assert code == 0 and "-> 30 steps" in out, out
    rep = json.loads((tmp_path / "p1" / "report.json").read_text())
    assert rep["training_set"]["diffusion_steps"] == 30 and not rep["training_set"]["stopped_at_deadline"]
    assert rep["estimates"]["classifier"] == 0 and rep["estimates"]["attack"] == 0  # cached: they cost nothing


def test_training_stops_at_the_runs_deadline_unfinished_and_a_later_run_resumes_it(
    data_dir, tmp_path, capsys, monkeypatch
):
    from ddmini import train

    calls = {"n": 0}

    def passed(self):
        calls["n"] += 1
        return calls["n"] > 3  # the deadline passes after three steps

    monkeypatch.setattr(train.Deadline, "passed", passed)
    args = [*SMOKE, "--poison", "0.5", "--data-dir", data_dir, "--run-dir", tmp_path, "--train-fit-minutes", "0"]
    args += ["--run-minutes", "5", "--train-fit-minutes", "1"]
    code, out, err = run_cli(args, capsys)
    assert_one_line(code, err, "give the whole run's minutes (--run-minutes 5) or the training's")  # not both
    monkeypatch.setattr("ddmini.fit.measure", lambda unet, cfg, device, path: (2.0, 25, cfg.fused_norm, None))
    args = [*SMOKE, "--poison", "0.5", "--data-dir", data_dir, "--run-dir", tmp_path, "--run-minutes", "2"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "training stopped at the run's deadline after 3 of " in out
    rep = json.loads((tmp_path / "p0.5" / "report.json").read_text())
    ts = rep["training_set"]
    assert ts["stopped_at_deadline"] and ts["diffusion_steps"] == 3 < ts["planned_steps"]
    assert "Training stopped at the run's deadline after 3 of" in (tmp_path / "p0.5" / "report.md").read_text()
    (ckpt,) = (tmp_path / "cache").glob("diffusion-*.pt")
    assert not train.load_checkpoint(ckpt)["done"]
    monkeypatch.setattr(train.Deadline, "passed", lambda self: False)
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "resuming at step 3" in out, out
    ts = json.loads((tmp_path / "p0.5" / "report.json").read_text())["training_set"]
    assert not ts["stopped_at_deadline"] and ts["diffusion_steps"] == ts["planned_steps"]


def test_the_deadline_warns_once_when_the_loops_rate_projects_past_it():
    import time

    from ddmini.train import Deadline

    said = []
    d = Deadline(time.time() + 100, said.append)
    d.check_rate(100, 1000, 0.1)  # 90 s left of work: in time
    assert not said
    d.check_rate(100, 1000, 0.2)  # 180 s: late, reaches ≈ step 600
    d.check_rate(150, 1000, 0.3)
    assert len(said) == 1 and "of 1,000 steps" in said[0]
    assert 595 <= int(said[0].split("after ≈ ")[1].split(" of")[0]) <= 600


def test_an_edited_rates_record_is_timed_again(data_dir, tmp_path, capsys, monkeypatch):
    from ddmini import fit

    timed = []
    monkeypatch.setattr(fit, "measure_rates", lambda cfg, device, path: timed.append(1) or _rates())
    args = [*SMOKE, "--poison", "0.5", "--data-dir", data_dir, "--run-dir", tmp_path]
    assert run_cli(args, capsys)[0] == 0 and timed == [1]
    (rates,) = (tmp_path / "cache").glob("rates-*.json")
    rates.write_text(json.dumps({**json.loads(rates.read_text()), "attack_image": -1}))
    code, out, err = run_cli(args, capsys)
    assert code == 0 and timed == [1, 1] and "attack_image -1 is not a positive time; timing again" in out, out
    assert rates.with_name(rates.name + ".rejected").exists()


def test_the_cpu_hour_preset_budgets_the_whole_run_and_steps_or_training_minutes_given_turn_that_off():
    from ddmini.presets import run_config

    cpu = torch.device("cpu")
    cfg = run_config("cpu-hour", poison=0.3, device=cpu).config
    assert (cfg.run_minutes, cfg.train.fit_minutes) == (58.0, 48.0)  # a run fits the run; train-diffusion 48 min
    cfg = run_config("cpu-hour", poison=0.3, device=cpu, overrides={"train.steps": 9000}).config
    assert (cfg.run_minutes, cfg.train.fit_minutes, cfg.train.steps) == (0.0, 0.0, 9000)
    cfg = run_config("cpu-hour", poison=0.3, device=cpu, overrides={"train.fit_minutes": 30.0}).config
    assert (cfg.run_minutes, cfg.train.fit_minutes) == (0.0, 30.0)
    with pytest.raises(ValueError, match="not both"):
        run_config("cpu-hour", poison=0.3, device=cpu, overrides={"train.fit_minutes": 30.0, "run_minutes": 50.0})


def test_other_samples_sizes_the_scales_besides_the_headline(data_dir, tmp_path, capsys):
    """--other-samples N: the headline scale gets num_samples images, every other scale N (0: num_samples); the
    second run finds them all cached under those counts."""
    args = ["run", "--preset", "smoke", "--device", "cpu", "--no-train-cpu-bf16", "--guidance-scales", "1,2"]
    args += ["--other-samples", "12", "--poison", "0"]
    args += ["--data-dir", data_dir, "--run-dir", tmp_path]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "p0" / "report.json").read_text())
    n = {g: r["misclassification"]["n"] for g, r in rep["generated"].items()}
    assert n == {"1": 40, "2": 12}
    code, out, err = run_cli(args, capsys)
    rep = json.loads((tmp_path / "p0" / "report.json").read_text())
    assert code == 0 and rep["cached"].get("samples_w1") and rep["cached"].get("samples_w2"), rep["cached"]
