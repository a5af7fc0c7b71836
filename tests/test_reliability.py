"""The reliability audit's cases (issue 43): an artefact is trusted only for the key it was made for, nothing a
user has is overwritten, data files cannot hang or exhaust memory, and bad environments are one line."""

import gzip
import json
import os
import shutil
import struct

import pytest
import torch
from conftest import assert_one_line, run_cli

from ddmini import attacks, checkpoint, data, fit, train
from ddmini.config import DiffusionTrainConfig
from ddmini.pipeline import Pipeline
from ddmini.presets import UNET_PRESETS, preset

FILES = list(data.CONTENT_SHA256)


# ---- data files --------------------------------------------------------------------------------
def test_project_l2_refuses_a_negative_radius():
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        attacks.project_l2(x + 0.5, x, eps=-1)


def test_a_fifo_or_a_device_is_refused_not_read(copy_dir, capsys):
    (copy_dir / FILES[0]).unlink()
    os.mkfifo(copy_dir / FILES[0])  # reading it would wait forever for a writer
    code, _, err = run_cli(["data", "check", "--data-dir", copy_dir], capsys)
    assert_one_line(code, err, "not a regular file")
    (copy_dir / FILES[0]).unlink()
    (copy_dir / FILES[0]).symlink_to("/dev/zero")  # reading it would never end
    code, _, err = run_cli(["data", "check", "--data-dir", copy_dir], capsys)
    assert_one_line(code, err, "not a regular file")


def test_a_gzip_bomb_stops_at_the_largest_file_size(copy_dir, capsys):
    header = struct.pack(">IIII", 2051, 60000, 28, 28)
    bomb = gzip.compress(header + bytes(100 << 20), compresslevel=1)  # 100 MiB of zeros in ~100 KiB
    assert len(bomb) < 1 << 20
    (copy_dir / FILES[0]).write_bytes(bomb)
    code, _, err = run_cli(["data", "check", "--data-dir", copy_dir], capsys)
    assert_one_line(code, err, "inflates to more than 64 MiB")


def test_trailing_data_after_the_gzip_stream_is_an_error(copy_dir):
    path = copy_dir / FILES[1]
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(data.DataError, match="trailing data"):
        data.load(copy_dir, "train")


# ---- artefacts bound to their keys ---------------------------------------------------------------
def _pipe(root, data_dir, seed=0, logs=None):
    log = logs.append if logs is not None else (lambda m: None)
    return Pipeline(preset("smoke").with_seed(seed), root, data_dir, "cpu", log=log)


def test_a_classifier_copied_from_another_slot_is_set_aside_and_recomputed(data_dir, tmp_path):
    root = tmp_path / "runs"
    first = _pipe(root, data_dir).classifier()
    other = _pipe(root, data_dir, seed=1).classifier()
    mine = sorted(root.glob("cache/classifier-*.pt"))
    assert len(mine) == 2
    target = next(p for p in mine if checkpoint.file_digest(p)[:16] == first.key)
    source = next(p for p in mine if p != target)
    shutil.copy(source, target)  # the bytes and the digest of the other seed's classifier
    shutil.copy(checkpoint.digest_path(source), checkpoint.digest_path(target))
    logs = []
    again = _pipe(root, data_dir, logs=logs).classifier()
    assert "made for another stage" in " ".join(logs) and (target.parent / (target.name + ".rejected")).is_file()
    assert again.metrics["test_accuracy"] == first.metrics["test_accuracy"] != other.metrics["test_accuracy"]


def test_a_deleted_digest_means_recompute(data_dir, tmp_path):
    root = tmp_path / "runs"
    _pipe(root, data_dir).classifier()
    path = next(root.glob("cache/classifier-*.pt"))
    checkpoint.digest_path(path).unlink()
    logs = []
    pipe = _pipe(root, data_dir, logs=logs)
    pipe.classifier()
    assert not pipe.stages.cached.get("classifier") and "no sha256 recorded beside it" in " ".join(logs)


def test_swapped_samples_files_are_recomputed(smoke_run, data_dir, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(smoke_run["root"], root)
    files = sorted(root.glob("cache/samples-*.pt"))
    assert len(files) == 2  # guidance 1 and 3
    a, b = files
    tmp = a.with_suffix(".swap")
    for src, dst in ((a, tmp), (b, a), (tmp, b)):
        os.replace(src, dst)
        os.replace(checkpoint.digest_path(src), checkpoint.digest_path(dst))
    logs = []
    out = _pipe(root, data_dir, logs=logs).run(overwrite=True)
    assert "made for another stage" in " ".join(logs)
    for g, r in out.generated.items():
        assert r.misclassification.rate == smoke_run["report"].generated[g].misclassification.rate


def test_a_checkpoint_beyond_its_steps_or_with_a_list_for_extra_is_one_line(smoke_run, tmp_path):
    ckpt = checkpoint.load(smoke_run["diffusion"])
    for change, msg in [({"step": 10**12}, "is not within its"), ({"extra": ["x"]}, "must be objects")]:
        checkpoint.save({**ckpt, **change}, tmp_path / "d.pt")
        with pytest.raises(ValueError, match=msg):
            train.load_checkpoint(tmp_path / "d.pt")


def test_an_edited_fit_record_is_timed_again(tmp_path, monkeypatch):
    timed = []
    monkeypatch.setattr(fit, "_time", lambda *a, **k: (timed.append(1), (0.5, 30))[1])
    unet, cfg = UNET_PRESETS["tiny"], DiffusionTrainConfig(batch_size=4, fit_minutes=1.0, warmup=2, fused_norm=False)
    rec = fit.fitted(unet, cfg, torch.device("cpu"), tmp_path)
    assert rec.steps == 120 and len(timed) == 1
    path = next(tmp_path.glob("fit-*.json"))
    for edit in ({"steps": 2}, {"steps": 10**8}, {"seconds_per_step": -1.0}):
        path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
        assert fit.fitted(unet, cfg, torch.device("cpu"), tmp_path).steps == 120
        assert (tmp_path / (path.name + ".rejected")).is_file()
    assert len(timed) == 4


def test_train_diffusion_resumes_only_its_own_checkpoint(data_dir, tmp_path, capsys):
    base = ["train-diffusion", "--preset", "smoke", "--data-dir", data_dir, "--run-dir", tmp_path, "--steps", 2]
    out = tmp_path / "d.pt"
    code, _, err = run_cli([*base, "--out", out], capsys)
    assert code == 0, err
    code, _, err = run_cli([*base, "--out", out, "--lr", "0.01", "--steps", 3], capsys)
    assert_one_line(code, err, "checkpoint was trained with lr 0.002, not 0.01; cannot resume")
    code, _, err = run_cli([*base, "--out", out, "--lr", "0.01", "--no-resume"], capsys)
    assert code == 0, err


# ---- nothing a user has is overwritten ---------------------------------------------------------------
def test_runs_of_other_settings_never_overwrite_a_report(smoke_run, data_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(smoke_run["root"], root)
    before = (root / "p0.3" / "report.json").read_bytes()
    common = ["run", "--preset", "smoke", "--device", "cpu", "--data-dir", data_dir, "--run-dir", root]
    code, out, err = run_cli([*common, "--seed", 1, "--train-steps", 2], capsys)
    assert code == 0 and (root / "p0.3-seed1" / "report.json").is_file(), err
    code, _, err = run_cli([*common, "--num-samples", 20], capsys)
    assert_one_line(code, err, "holds a run with other settings (num_samples 40 there, 20 now); pass --overwrite")
    assert (root / "p0.3" / "report.json").read_bytes() == before
    code, _, err = run_cli([*common, "--num-samples", 20, "--overwrite"], capsys)
    assert code == 0 and json.loads((root / "p0.3" / "config.json").read_text())["num_samples"] == 20
    # a folder written before a knob existed: the knob missing there counts as its default, not as a difference
    saved = json.loads((root / "p0.3" / "config.json").read_text())
    del saved["channels"], saved["train"]["snr_gamma"]
    (root / "p0.3" / "config.json").write_text(json.dumps(saved))
    code, _, err = run_cli([*common, "--num-samples", 20], capsys)
    assert code == 0, err


def test_a_run_that_fails_on_its_inputs_writes_no_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("XDG_CACHE_HOME", "DDMINI_DATA", "DDMINI_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    code, _, err = run_cli(["run", "--preset", "smoke", "--no-download", "--run-dir", tmp_path / "runs"], capsys)
    assert code == 1 and "downloads are off" in err
    assert not list((tmp_path / "runs").glob("*/config.json"))


def test_out_equal_to_an_input_is_refused(smoke_run, data_dir, tmp_path, capsys):
    ckpt = tmp_path / "d.pt"
    shutil.copy(smoke_run["diffusion"], ckpt)
    shutil.copy(checkpoint.digest_path(smoke_run["diffusion"]), checkpoint.digest_path(ckpt))
    before = ckpt.read_bytes()
    code, _, err = run_cli(["sample", "--checkpoint", ckpt, "-n", 2, "--steps", 2, "--out", ckpt], capsys)
    assert_one_line(code, err, "would overwrite the input")
    assert ckpt.read_bytes() == before
    (tmp_path / "link.pt").symlink_to(ckpt)
    code, _, err = run_cli(
        ["sample", "--checkpoint", ckpt, "-n", 2, "--steps", 2, "--out", tmp_path / "link.pt"], capsys
    )
    assert_one_line(code, err, "would overwrite the input")
    report = smoke_run["root"] / "p0.3" / "report.json"
    code, _, err = run_cli(["compare", report.parent, "--out", report], capsys)
    assert_one_line(code, err, "would overwrite the input")


# ---- one line, never a traceback ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda r: r.pop("attack"), "attack must be a non-empty object"),
        (lambda r: r.update(generated={}), "generated must be a non-empty object"),
        (lambda r: r.pop("config"), "config must be a non-empty object"),
        (lambda r: r.pop("headline_guidance"), "headline_guidance must be a finite number"),
        (lambda r: r.pop("training_set"), "training_set must be a non-empty object"),
        (lambda r: r["generated"]["1"].pop("cafd"), "generated.1.cafd.clean_test_soft must be"),
        (lambda r: r.update(poison=float("nan")), "poison must be a finite number"),
    ],
)
def test_compare_names_the_file_and_the_field(smoke_run, tmp_path, capsys, edit, field):
    r = json.loads((smoke_run["root"] / "p0.3" / "report.json").read_text())
    edit(r)
    (tmp_path / "report.json").write_text(json.dumps(r))
    code, _, err = run_cli(["compare", tmp_path / "report.json"], capsys)
    assert_one_line(code, err, f"{tmp_path / 'report.json'}: not a report.json of `ddmini run` ({field}")


def test_compare_escapes_table_cells(smoke_run, tmp_path, capsys):
    r = json.loads((smoke_run["root"] / "p0.3" / "report.json").read_text())
    r["config"]["dataset"] = "mnist\n| injected | row |"
    (tmp_path / "report.json").write_text(json.dumps(r))
    code, out, _ = run_cli(["compare", tmp_path / "report.json"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 3 and "mnist \\| injected \\| row \\|" in out


@pytest.mark.parametrize(
    "env, msg",
    [
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK is not"),
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE must be an integer; got 'abc'"),
        ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK must be in [0, 1]; got 5"),
        ({"WORLD_SIZE": "2", "RANK": "0", "DDMINI_DIST_TIMEOUT": "inf"}, "DDMINI_DIST_TIMEOUT must be a number"),
        ({"DDMINI_PROGRESS_SECONDS": "abc"}, "DDMINI_PROGRESS_SECONDS must be a number of seconds >= 0; got 'abc'"),
        ({"DDMINI_PROGRESS_SECONDS": "-5"}, "DDMINI_PROGRESS_SECONDS must be a number of seconds >= 0; got '-5'"),
    ],
)
def test_bad_launch_environments_are_one_line(data_dir, tmp_path, capsys, monkeypatch, env, msg):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, _, err = run_cli(["run", "--preset", "smoke", "--data-dir", data_dir, "--run-dir", tmp_path], capsys)
    assert_one_line(code, err, msg)


def test_bad_values_are_one_line(tmp_path, capsys):
    code, _, err = run_cli(["data", "download", tmp_path, "--timeout", "inf"], capsys)
    assert_one_line(code, err, "--timeout", exit_code=2)
    code, _, err = run_cli(["sweep", "--poison", "0.5", "--preset", "smoke", "--run-dir", tmp_path], capsys)
    assert_one_line(code, err, "a sweep needs two or more fractions")
    code, _, err = run_cli(["run", "--preset", "smoke", "--guidance-scales", "", "--run-dir", tmp_path], capsys)
    assert_one_line(code, err, "--guidance-scales: no values given")


def test_purify_defaults_fit_the_models_timesteps():
    from ddmini.purify import default_t_stars

    assert default_t_stars(1000) == [50, 100, 200, 300]
    assert default_t_stars(100) == [5, 10, 20, 30]  # the smoke preset's T
    assert default_t_stars(10) == [1, 2, 3]


def test_purify_runs_with_its_defaults_on_the_smoke_preset(smoke_run, data_dir, tmp_path, capsys):
    args = ["purify", "--preset", "smoke", "--checkpoint", smoke_run["diffusion"], "--limit", 8]
    code, out, err = run_cli([*args, "--data-dir", data_dir, "--run-dir", tmp_path], capsys)
    assert code == 0, err
    assert "| t* = 5 | t* = 10 | t* = 20 | t* = 30 |" in out
    code, _, err = run_cli([*args, "--t-star", "5,5", "--data-dir", data_dir, "--run-dir", tmp_path], capsys)
    assert_one_line(code, err, "--t-star values must differ")
