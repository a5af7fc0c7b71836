"""The command line as a hostile user tries it: every bad input is one line on stderr and a non-zero
exit, nothing NaN is scored, nothing is written over what was just written, no torch advice leaks."""

import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line, run_cli as run

from ddmini import checkpoint


@pytest.fixture
def sample_args(smoke_run, tmp_path):
    return [
        "sample",
        "--device",
        "cpu",
        "--checkpoint",
        smoke_run["diffusion"],
        "-n",
        "4",
        "--steps",
        "2",
        "--out",
        tmp_path / "s.pt",
    ]


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--guidance", "inf"], "sample guidance must be a finite number"),
        (["--guidance", "1e30"], "sample guidance must be in [0, 100]"),
        (["--guidance", "nan"], "sample guidance must be a finite number"),
        (["--eta", "inf"], "sample eta must be a finite number"),
        (["--eta", "2"], "sample eta must be in [0, 1]"),
        (["--labels", ","], "--labels: no values given"),
        (["--labels", "a,b"], "--labels must be comma-separated integers"),
        (["--labels", "3,10"], "--labels must be in [0, 10)"),
        (["--seed", "99999999999999999999999"], "sample seed must be in [0, 9223372036854775807]"),
        (["-n", "0"], "--num must be in"),
    ],
)
def test_sample_refuses_bad_settings(sample_args, extra, msg, capsys, tmp_path):
    code, _, err = run(sample_args + extra, capsys)
    assert_one_line(code, err, msg)
    assert not (tmp_path / "s.pt").exists()


def test_sample_out_png_would_overwrite_itself(sample_args, tmp_path, capsys):
    args = sample_args[:-1] + [tmp_path / "x.png"]
    code, _, err = run(args, capsys)
    assert_one_line(code, err, "name the tensor file")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "where, msg",
    [
        ("afile/s.pt", "afile is a file, not a directory"),
        ("/proc/ddmini-x/s.pt", "cannot write the samples file there"),
    ],
)
def test_sample_out_checked_before_work(sample_args, tmp_path, capsys, where, msg):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / where if not where.startswith("/") else Path(where)
    code, _, err = run(sample_args[:-1] + [target], capsys)
    assert_one_line(code, err, msg)
    assert str(target) in err and ".tmp" not in err and ".probe" not in err


def test_sample_with_nan_weights_is_refused(smoke_run, tmp_path, capsys, sample_args):
    ck = checkpoint.load(smoke_run["diffusion"])
    ck["ema"] = {k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in ck["ema"].items()}
    checkpoint.save(ck, tmp_path / "nan.pt")
    args = list(sample_args)
    args[args.index(smoke_run["diffusion"])] = tmp_path / "nan.pt"
    code, _, err = run(args, capsys)
    assert_one_line(code, err, "EMA weights hold NaN")


def test_sample_writes_both_files(sample_args, tmp_path, capsys):
    code, out, err = run(sample_args, capsys)
    assert code == 0, err
    assert (tmp_path / "s.pt").is_file() and (tmp_path / "s.png").is_file()
    assert checkpoint.digest_path(tmp_path / "s.pt").is_file()


# ---- evaluate ---------------------------------------------------------------------------------------
def _samples(path, images, labels, **kw):
    checkpoint.save({"kind": "samples", "images": images, "labels": labels, **kw}, path)
    return path


@pytest.mark.parametrize(
    "images, labels, msg",
    [
        (torch.full((4, 1, 28, 28), float("nan")), torch.arange(4), "4 of 4 images hold NaN"),
        (torch.rand(4, 1, 28, 28) * 255, torch.arange(4), "must lie in [0, 1]"),
        (torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 10]), "labels must be in [0, 10)"),
        (torch.rand(4, 1, 28, 28), torch.arange(3), "labels must have shape (4,)"),
    ],
)
def test_evaluate_refuses_what_it_cannot_score(smoke_run, data_dir, tmp_path, capsys, images, labels, msg):
    s = _samples(tmp_path / "s.pt", images, labels)
    code, _, err = run(
        ["evaluate", "--samples", s, "--classifier", smoke_run["classifier"], "--data-dir", data_dir], capsys
    )
    assert_one_line(code, err, msg)


@pytest.mark.parametrize(
    "flag, obj, msg",
    [
        ("--samples", {"kind": "samples"}, "not a complete ddmini samples file (missing images, labels)"),
        ("--classifier", {"kind": "classifier"}, "not a complete ddmini classifier checkpoint"),
        ("--classifier", {"kind": "samples"}, "not a ddmini classifier checkpoint"),
    ],
)
def test_files_of_the_right_kind_with_missing_keys(smoke_run, data_dir, tmp_path, capsys, flag, obj, msg):
    good = _samples(tmp_path / "good.pt", torch.rand(4, 1, 28, 28), torch.arange(4))
    checkpoint.save(obj, tmp_path / "bad.pt")
    args = {"--samples": good, "--classifier": smoke_run["classifier"]}
    args[flag] = tmp_path / "bad.pt"
    code, _, err = run(["evaluate", "--data-dir", data_dir] + [a for kv in args.items() for a in kv], capsys)
    assert_one_line(code, err, msg)


def test_diffusion_file_with_missing_keys(tmp_path, capsys, data_dir):
    checkpoint.save({"kind": "diffusion"}, tmp_path / "d.pt")
    code, _, err = run(["sample", "--checkpoint", tmp_path / "d.pt", "--out", tmp_path / "s.pt"], capsys)
    assert_one_line(code, err, "not a complete ddmini diffusion checkpoint")
    code, _, err = run(
        [
            "train-diffusion",
            "--unet",
            "tiny",
            "--steps",
            "2",
            "--limit",
            "50",
            "--data-dir",
            data_dir,
            "--out",
            tmp_path / "d.pt",
        ],
        capsys,
    )
    assert_one_line(code, err, "not a complete ddmini diffusion checkpoint")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/ddmini-pwned",))


@pytest.mark.parametrize("content", ["pickle", "junk", "plain-torch"])
def test_foreign_files_are_one_line_and_never_run(tmp_path, capsys, content):
    path = tmp_path / "c.pt"
    if content == "pickle":
        torch.save({"kind": "classifier", "x": _Evil()}, path)
    elif content == "junk":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    else:
        torch.save({"weights": torch.ones(3)}, path)
    code, _, err = run(["sample", "--checkpoint", path, "--out", tmp_path / "s.pt"], capsys)
    assert_one_line(code, err, "not a ddmini")
    assert not Path("/tmp/ddmini-pwned").exists()


def test_usage_errors_are_one_line_with_exit_2(capsys):
    code, _, err = run(["run", "--no-such-option"], capsys)
    assert_one_line(code, err, "No such option", exit_code=2)
    code, _, err = run(["sample", "--checkpoint"], capsys)
    assert_one_line(code, err, "requires an argument", exit_code=2)


def test_train_classifier_out_checked_before_training(tmp_path, capsys, data_dir):
    (tmp_path / "afile").write_text("x")
    code, out, err = run(
        ["train-classifier", "--preset", "smoke", "--data-dir", data_dir, "--out", tmp_path / "afile" / "c.pt"], capsys
    )
    assert_one_line(code, err, "afile is a file, not a directory")
    assert "test accuracy" not in out


def test_outputs_respect_the_umask(tmp_path, capsys, sample_args):
    old = os.umask(0o022)
    try:
        code, _, err = run(sample_args, capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    for name in ("s.pt", "s.png", "s.pt.sha256"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_nan_run_settings_refused(data_dir, tmp_path, capsys):
    base = ["run", "--preset", "smoke", "--data-dir", data_dir, "--run-dir", tmp_path, "--device", "cpu"]
    for extra, msg in [
        (["--sample-eta", "inf"], "sample eta must be a finite number"),
        (["--sample-guidance", "inf", "--guidance-scales", "inf"], "guidance_scales must be a finite"),
        (["--train-grad-clip", "nan"], "grad_clip must be a finite number"),
        (["--train-time-budget", "nan"], "time_budget must be a finite number"),
        (["--unet-channel-mult", "1.5,2"], "channel_mult must be an integer; got 1.5"),
        (["--unet-groups", "0"], "unet groups must be in [1, 1024]"),
        (["--unet-num-heads", "0"], "unet num_heads must be in [1, 64]"),
        (["--attack-steps", "99999999999999999999"], "attack steps must be in [1, 100000]"),
    ]:
        code, _, err = run(base + extra, capsys)
        assert_one_line(code, err, msg)
    assert not (tmp_path / "cache").exists()
