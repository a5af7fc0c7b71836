import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line, run_cli as _run

from ddmini.config import RunConfig, from_dict, to_dict
from ddmini.presets import preset


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _reject(name):
    raise ValueError(f"not strict JSON: {name}")


def _strict_json(path):
    return json.loads(path.read_text(), parse_constant=_reject)


def test_smoke_run_reports_and_caches(data_dir, smoke_dir, capsys):
    base = ["run", "--preset", "smoke", "--data-dir", str(data_dir), "--run-dir", str(smoke_dir), "--device", "cpu"]
    code, out, err = _run(base + ["--poison", "0.5"], capsys)
    assert code == 0, err
    where = smoke_dir / "p0.5"
    for name in ("report.json", "report.md", "config.json", "samples.png", "comparison.png", "confusion.png"):
        assert (where / name).is_file(), name
    r = _strict_json(where / "report.json")
    assert r["poison"] == 0.5 and set(r["generated"]) == {"1", "3"}
    assert all(Path(p).exists() for p in r["artefacts"].values())  # the cached checkpoints, by name
    assert r["training_set"]["attacked"] == sum(round(0.5 * n) for n in _class_counts(data_dir, 600))
    g = r["generated"]["1"]
    assert 0 <= g["misclassification"]["rate"] <= 1 and len(g["misclassification"]["confusion"]) == 10
    assert g["cafd"]["clean_test_soft"]["mean"] >= 0
    m = r["attack"]["margin"]
    assert 0 < m["images"] <= r["attack"]["successful"] and len(m["still_misclassified"]) == len(m["scales"])
    assert all(0 <= v <= 1 for v in m["still_misclassified"])
    assert "How much of the perturbation misleads" in (where / "report.md").read_text()
    assert "misclassified" in out and "report:" in out
    # a second p reuses the classifier and the attacked set
    code, out, _ = _run(base + ["--poison", "1"], capsys)
    assert code == 0
    r1 = json.loads((smoke_dir / "p1" / "report.json").read_text())
    assert r1["cached"]["classifier"] and r1["cached"]["attack"] and "diffusion" not in r1["cached"]
    assert r1["training_set"]["attacked"] == 600
    # an identical run is all cache; a corrupt cached artefact is recomputed, not trusted
    for f in (smoke_dir / "cache").glob("diffusion-*.pt"):
        f.write_bytes(b"garbage")
    code, out, _ = _run(base + ["--poison", "0.5"], capsys)
    assert code == 0 and "set aside as" in out
    again = json.loads((where / "report.json").read_text())
    assert again["generated"]["1"]["misclassification"] == g["misclassification"]  # same seed, same result


def test_interrupted_smoke_run_resumes(data_dir, tmp_path, capsys, monkeypatch):
    """Ctrl-C during diffusion training: exit 130 with a checkpoint; the same command again reuses the
    finished stages, resumes training where it stopped and gives the uninterrupted run's result."""
    import os
    import signal

    from ddmini import train

    base = ["run", "--preset", "smoke", "--poison", "0.5", "--data-dir", str(data_dir), "--device", "cpu"]
    code, _, err = _run(base + ["--run-dir", str(tmp_path / "whole")], capsys)
    assert code == 0, err
    real, calls = train._ema_update, {"n": 0}

    def interrupt_at_4(ema, model, decay):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        real(ema, model, decay)

    monkeypatch.setattr(train, "_ema_update", interrupt_at_4)
    part = tmp_path / "part"
    (part / "cache").mkdir(parents=True)
    for rates in (tmp_path / "whole" / "cache").glob("rates-*.json"):  # the plan's timings, found: no steps there
        shutil.copy(rates, part / "cache" / rates.name)
    code, _, err = _run(base + ["--run-dir", str(part)], capsys)
    assert code == 130 and "interrupted" in err
    assert not (part / "p0.5" / "report.json").exists()
    (ckpt,) = (part / "cache").glob("diffusion-*.pt")
    state = train.load_checkpoint(ckpt)
    assert state["step"] == 4 and not state["done"]
    monkeypatch.setattr(train, "_ema_update", real)
    code, out, err = _run(base + ["--run-dir", str(part)], capsys)
    assert code == 0, err
    assert "classifier: cached" in out and "attack: cached" in out and "resuming at step 4" in out
    whole = json.loads((tmp_path / "whole" / "p0.5" / "report.json").read_text())
    resumed = json.loads((part / "p0.5" / "report.json").read_text())
    for g in whole["generated"]:
        assert resumed["generated"][g]["misclassification"] == whole["generated"][g]["misclassification"]
        assert resumed["generated"][g]["cafd"] == whole["generated"][g]["cafd"]


def _class_counts(data_dir, n):
    from ddmini import data

    _, y = data.load_mnist(data_dir, "train")
    return [int((y[:n] == k).sum()) for k in range(10)]


def test_smoke_sweep(data_dir, smoke_dir, capsys):
    code, out, err = _run(
        [
            "sweep",
            "--preset",
            "smoke",
            "--poison",
            "0,0.5,1",
            "--data-dir",
            str(data_dir),
            "--run-dir",
            str(smoke_dir),
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0, err
    s = json.loads((smoke_dir / "sweep" / "sweep.json").read_text())
    assert s["poison"] == [0, 0.5, 1] and "r2" in s["fits"]["misclassification"]
    assert set(s["fits_by_guidance"]) == {"1", "3"} and len(s["misclassification_by_guidance"]["3"]) == 3
    assert s["fits_by_guidance"]["1"] == s["fits"]["misclassification"]  # the smoke preset's headline is 1
    assert "guidance 3" in (smoke_dir / "sweep" / "sweep.md").read_text()
    assert (smoke_dir / "sweep" / "sweep.png").is_file() and "R^2" in out


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--poison", "1.5"], "p must be in [0, 1]"),
        (["--poison", "-0.1"], "p must be in [0, 1]"),
        (["--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
        (["--run-dir", "/proc/ddmini-cannot-write"], "run directory"),
        (["--attack-eps", "-1"], "attack eps must be in [0, 1000]; got -1"),
        (["--unet-channel-mult", "1,x"], "unet-channel-mult"),
        (["--sample-guidance", "1.5"], "headline guidance scale (sample guidance 1.5) must be one of"),
    ],
)
def test_run_errors_are_one_line(data_dir, tmp_path, capsys, args, msg):
    base = ["run", "--preset", "smoke", "--data-dir", str(data_dir), "--run-dir", str(tmp_path), "--device", "cpu"]
    code, _, err = _run(base + args, capsys)
    assert_one_line(code, err, msg)


def test_every_stage_knob_is_an_option(capsys):
    code, out, _ = _run(["run", "--help"], capsys)
    assert code == 0
    for flag in (
        "--classifier-epochs",
        "--attack-eps",
        "--attack-random-start",
        "--unet-channel-mult",
        "--train-steps",
        "--train-ema-decay",
        "--sample-guidance",
        "--sample-steps",
    ):
        assert flag in out
    # named choices are choices, every option has its field's help, what the data decide is no option
    for text in (
        "--attack-attack, --attack [pgd_l2|pgd_linf|fgsm|cw_l2]",
        "--train-schedule [linear|cosine]",
        "--sample-sampler [ddim|ddpm]",
        "--train-lr-schedule [constant|cosine]",
        "--train-loss-weighting [mse|min_snr]",
        "Noise schedule.",
    ):
        assert text in " ".join(out.split()), text
    for flag in ("--unet-in-channels", "--unet-image-size", "--unet-num-classes"):
        assert flag not in out
    assert "TEXT" not in out


@pytest.mark.parametrize("command", ["train-classifier", "attack", "train-diffusion", "sample"])
def test_stage_commands_take_generated_options_and_a_preset(command, capsys):
    code, out, _ = _run([command, "--help"], capsys)
    assert code == 0 and "--preset [smoke|cpu|cpu-hour|paper|paper-short|cifar10]" in " ".join(out.split())
    flat = " ".join(out.split())
    expect = {
        "train-classifier": "--width INTEGER Channels of the first conv block",
        "attack": "--attack [pgd_l2|pgd_linf|fgsm|cw_l2]",
        "train-diffusion": "--lr-schedule [constant|cosine]",
        "sample": "--sampler [ddim|ddpm]",
    }[command]
    assert expect in flat, flat


def test_config_roundtrip_and_presets():
    for name in ("smoke", "cpu", "paper"):
        cfg = preset(name).validate()
        assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg
    with pytest.raises(ValueError, match="preset"):
        preset("huge")


def test_study_and_sampler_guidance_defaults():
    """Two defaults on purpose: `ddmini run` reports guidance 1 (the scale with the widest p = 1 - p = 0
    gap), `ddmini sample` makes images at 2 (conditional accuracy); the cache keys of runs sampled
    before the sampler's default changed stay the same."""
    import torch

    from ddmini.config import RUN_GUIDANCE, SampleConfig, key_dict
    from ddmini.presets import run_config

    assert RUN_GUIDANCE == 1.0 and SampleConfig().guidance == 2.0
    for cfg in (RunConfig(), *(preset(n) for n in ("smoke", "cpu", "paper"))):
        assert cfg.sample.guidance == RUN_GUIDANCE and RUN_GUIDANCE in cfg.validate().guidance_scales
    cfg, _, _ = run_config("smoke", poison=0.3, device=torch.device("cpu"), overrides={"guidance_scales": (2.0, 3.0)})
    assert cfg.sample.guidance == 2.0  # only the scales given: the first one is the headline
    with pytest.raises(ValueError, match="headline guidance"):
        run_config(
            "smoke",
            poison=0.3,
            device=torch.device("cpu"),
            overrides={"guidance_scales": (2.0, 3.0), "sample.guidance": 1.0},
        )
    assert key_dict(preset("cpu").sample) == {
        "sampler": "ddim",
        "steps": 50,
        "eta": 0.0,
        "guidance": 1.0,
        "batch_size": 128,
        "seed": 0,
    }


def test_earlier_cpu_recipe_reproduces_its_cache_key():
    """README: `--train-low-t-share 0 --train-lr-schedule constant` rebuilds the cpu preset's earlier
    recipe with the same diffusion cache key, so the runs cached before the recipe changed are reused."""
    import torch

    from ddmini.config import DiffusionTrainConfig, key_dict
    from ddmini.presets import run_config

    cfg, name, _ = run_config(
        "cpu",
        poison=1.0,
        device=torch.device("cpu"),
        overrides={"train.low_t_share": 0.0, "train.lr_schedule": "constant"},
    )
    earlier = {
        k: v
        for k, v in to_dict(DiffusionTrainConfig()).items()
        if k not in ("lr_schedule", "snr_gamma", "fit_minutes", "fused_norm")
    }  # key-neutral, at defaults
    assert name == "cpu" and key_dict(cfg.train) == earlier
    now = preset("cpu").train
    assert (now.low_t_share, now.lr_schedule) == (0.5, "cosine") and key_dict(now) != earlier


def test_train_diffusion_then_sample_commands(data_dir, tmp_path, capsys):
    """The stand-alone commands: train a tiny model for a few steps, sample at the default guidance (2)
    and at 1; the samples file records the settings."""
    from ddmini import checkpoint

    ckpt, out = tmp_path / "d.pt", tmp_path / "s.pt"
    code, text, err = _run(
        [
            "train-diffusion",
            "--data-dir",
            str(data_dir),
            "--unet",
            "tiny",
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--limit",
            "64",
            "--out",
            str(ckpt),
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0 and "trained 3 steps" in text, err
    code, text, err = _run(
        ["sample", "--checkpoint", str(ckpt), "-n", "12", "--steps", "4", "--out", str(out), "--device", "cpu"], capsys
    )
    assert code == 0 and "(ddim, 4 steps, guidance 2)" in text, err
    s = checkpoint.load(out)
    assert s["images"].shape == (12, 1, 28, 28) and s["config"]["guidance"] == 2.0
    assert s["images"].min() >= 0 and s["images"].max() <= 1 and out.with_suffix(".png").exists()
    code, text, _ = _run(
        [
            "sample",
            "--checkpoint",
            str(ckpt),
            "-n",
            "2",
            "--steps",
            "4",
            "--guidance",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0 and "guidance 1)" in text


def test_two_runs_on_one_run_dir_train_the_model_once(data_dir, tmp_path):
    import threading

    from ddmini.pipeline import Pipeline

    logs = [[], []]

    def go(i):
        cfg = preset("smoke").with_seed(0)
        cfg.train.steps = 30
        Pipeline(cfg, tmp_path, data_dir, "cpu", log=logs[i].append).run()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trained = [any("diffusion model: training" in m for m in lg) for lg in logs]
    cached = [any("diffusion model: cached" in m for m in lg) for lg in logs]
    assert sorted(trained) == [False, True] and sorted(cached) == [False, True], logs


def test_stage_commands_fill_the_runs_cache(data_dir, tmp_path, capsys):
    """train-classifier and attack are the run's classifier and attack stages: run after them, with the
    same preset, finds both cached (one key per stage, whichever command made it)."""
    base = ["--preset", "smoke", "--data-dir", str(data_dir), "--run-dir", str(tmp_path), "--device", "cpu"]
    code, out, err = _run(["train-classifier", *base], capsys)
    assert code == 0 and "saved" in out, err
    code, out, err = _run(["attack", *base], capsys)
    assert code == 0 and "cache/attack-" in out, err
    code, out, err = _run(["run", "--poison", "0.5", *base], capsys)
    assert code == 0, err
    assert "[1/7] classifier: cached" in out and "[2/7] attack: cached" in out, out


@pytest.mark.parametrize("attack", ["fgsm", "pgd_linf", "pgd_l2", "cw_l2"])
def test_every_attack_is_a_path_through_the_run(attack, data_dir, tmp_path, capsys):
    from ddmini.config import ATTACK_DEFAULTS

    code, out, err = _run(
        [
            "run",
            "--preset",
            "smoke",
            "--poison",
            "1",
            "--attack",
            attack,
            "--data-dir",
            str(data_dir),
            "--run-dir",
            str(tmp_path),
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0, err
    folder = "p1" if attack == "pgd_l2" else f"p1-{attack}"  # runs of other attacks keep their own reports
    assert f"report: {tmp_path / folder / 'report.md'}" in out
    r = json.loads((tmp_path / folder / "report.json").read_text())
    a = r["config"]["attack"]
    assert a["attack"] == attack and all(a[k] == v for k, v in ATTACK_DEFAULTS[attack].items())
    assert r["attack"]["successful"] > 0 and r["training_set"]["attacked"] == r["training_set"]["images"]
    if attack == "cw_l2":
        assert r["attack"]["l2_mean"] > 0  # CW moved the images (10 Adam steps of 0.01 did not)


def test_a_named_attack_brings_its_strength_and_given_options_win():
    import torch

    from ddmini.presets import run_config

    cfg, _, _ = run_config("cpu", poison=1.0, device=torch.device("cpu"), overrides={"attack.attack": "fgsm"})
    assert (cfg.attack.attack, cfg.attack.eps) == ("fgsm", 0.25)
    cfg, _, _ = run_config(
        "cpu", poison=1.0, device=torch.device("cpu"), overrides={"attack.attack": "fgsm", "attack.eps": 0.1}
    )
    assert cfg.attack.eps == 0.1
    cfg, _, _ = run_config("smoke", poison=1.0, device=torch.device("cpu"), overrides={"attack.attack": "cw_l2"})
    assert (cfg.attack.steps, cfg.attack.chunk_size) == (100, 256)  # CW's steps; the preset's chunks stay
    cfg, _, _ = run_config("cpu", poison=1.0, device=torch.device("cpu"))
    assert cfg.attack == preset("cpu").attack  # no attack named: the preset's, untouched (cache keys)


def test_fashion_mnist_run_and_its_guards(data_dir, fashion_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DDMINI_DATA", str(data_dir))  # MNIST's variable: never read for another dataset
    monkeypatch.delenv("DDMINI_DATA_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # an empty user cache
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    base = ["--preset", "smoke", "--dataset", "fashion-mnist", "--run-dir", str(tmp_path), "--device", "cpu"]
    code, _, err = _run(["run", "--poison", "0.3", *base], capsys)
    assert code == 1 and "fashion-mnist is not in" in err and "downloads are off" in err
    code, out, err = _run(["run", "--poison", "0.3", *base, "--data-dir", str(data_dir)], capsys)
    assert code == 1 and "these are mnist files, not fashion-mnist" in err
    code, out, err = _run(["run", "--poison", "0.3", *base, "--data-dir", str(fashion_dir)], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "fashion-mnist-p0.3" / "report.json").read_text())
    assert r["config"]["dataset"] == "fashion-mnist"
    assert "| Ankle boot |" in (tmp_path / "fashion-mnist-p0.3" / "report.md").read_text()
    # a classifier is used only on its own dataset
    (clf,) = (tmp_path / "cache").glob("classifier-*.pt")
    code, _, err = _run(
        [
            "attack",
            "--preset",
            "smoke",
            "--classifier",
            str(clf),
            "--data-dir",
            str(data_dir),
            "--run-dir",
            str(tmp_path),
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 1 and "a classifier trained on fashion-mnist, not mnist" in err


def test_cifar10_smoke_run_on_a_synthetic_folder(tmp_path, capsys):
    from conftest import run_cli as _run, write_cifar

    write_cifar(tmp_path / "cifar", n=130)
    code, out, err = _run(
        [
            "run",
            "--preset",
            "smoke",
            "--dataset",
            "cifar10",
            "--poison",
            "0.5",
            "--data-dir",
            str(tmp_path / "cifar"),
            "--run-dir",
            str(tmp_path / "runs"),
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0, err
    r = json.loads((tmp_path / "runs" / "cifar10-p0.5" / "report.json").read_text())
    assert r["config"]["unet"]["in_channels"] == 3 and r["config"]["unet"]["image_size"] == 32
    assert (
        r["training_set"]["images"] == 600
        and "| airplane |" in (tmp_path / "runs" / "cifar10-p0.5" / "report.md").read_text()
    )
    from ddmini import train

    (ckpt,) = (tmp_path / "runs" / "cache").glob("diffusion-*.pt")
    model, _, state = train.load_ema(ckpt)
    assert model.cfg.in_channels == 3 and state["extra"]["dataset"] == "cifar10"


def test_fashion_mnist_runs_attack_at_its_own_radius():
    import torch

    from ddmini.presets import run_config

    cfg, _, _ = run_config("cpu", poison=0.3, device=torch.device("cpu"), dataset="fashion-mnist")
    assert cfg.attack.eps == 0.75 and cfg.unet.in_channels == 1
    cfg, _, _ = run_config(
        "cpu", poison=0.3, device=torch.device("cpu"), dataset="fashion-mnist", overrides={"attack.eps": 1.0}
    )
    assert cfg.attack.eps == 1.0
    cfg, _, _ = run_config("cpu", poison=0.3, device=torch.device("cpu"))
    assert cfg.attack.eps == 1.6


def test_cifar10_preset_and_default_classifier():
    import pytest
    import torch

    from ddmini.presets import run_config

    cpu = torch.device("cpu")
    cfg, name, _ = run_config("cifar10", poison=0.3, device=cpu, dataset="cifar10")
    assert name == "cifar10" and cfg.classifier.arch == "resnet" and cfg.attack.eps == 0.5
    assert (cfg.unet.in_channels, cfg.unet.image_size, cfg.unet.channel_mult) == (3, 32, (1, 2, 2))
    assert cfg.unet.attention and cfg.train.steps == 100000
    # the MNIST CNN stays MNIST's; CIFAR-10 trains the residual network under every preset
    assert run_config("cpu", poison=0.3, device=cpu, dataset="cifar10")[0].classifier.arch == "resnet"
    assert run_config("cpu", poison=0.3, device=cpu, dataset="mnist")[0].classifier.arch == "cnn"
    with pytest.raises(ValueError, match="--preset cifar10 is made for --dataset cifar10"):
        run_config("cifar10", poison=0.3, device=cpu, dataset="mnist")
