"""`ddmini export` (safetensors + JSON config, loaded back without unpickling) and samples as an image folder."""

import csv
import json

import pytest
import torch
from conftest import assert_one_line, run_cli

from ddmini import export, images, train


@pytest.fixture(scope="module")
def exported(smoke_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    export.export_run(smoke_run["root"] / "p0.3", out)
    return out


def test_export_writes_safetensors_and_a_config_that_load_back(smoke_run, exported):
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["format"] == "ddmini-safetensors/1" and cfg["dataset"] == "mnist"
    assert cfg["class_names"] == [str(k) for k in range(10)] and len(cfg["diffusion"]["cache_key"]) == 16
    from safetensors.torch import load_file

    model, tcfg, _ = train.load_ema(smoke_run["diffusion"])
    assert set(load_file(str(exported / "diffusion.safetensors"))) == set(model.state_dict())
    again, tcfg2, state = export.load_diffusion(exported)
    assert tcfg2 == tcfg and state["extra"]["dataset"] == "mnist"
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    clf = export.load_classifier(exported)
    x = torch.rand(4, 1, 28, 28)
    from ddmini import classifier

    ref = classifier.load(smoke_run["classifier"])[0]
    assert torch.equal(clf(x), ref(x))


def test_sample_from_an_export_folder_writes_an_image_folder(exported, tmp_path, capsys):
    png = tmp_path / "png"
    args = ["sample", "--checkpoint", exported, "-n", 20, "--steps", 2, "--classifier", exported]
    code, out, err = run_cli([*args, "--out", tmp_path / "s.pt", "--png-dir", png], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((png / "manifest.csv").open()))
    assert len(rows) == 20 and sorted(p.name for p in png.iterdir() if p.is_dir()) == [str(k) for k in range(10)]
    assert all((png / r["file"]).is_file() and r["classifier_prediction"] in set("0123456789") for r in rows)
    assert rows[0]["file"].startswith(rows[0]["conditioning_class"] + "/")


def test_a_changed_export_file_is_one_line(exported, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    (bad / "diffusion.safetensors").write_bytes((bad / "diffusion.safetensors").read_bytes()[:-8] + b"\0" * 8)
    code, _, err = run_cli(["sample", "--checkpoint", bad, "-n", 2, "--steps", 2, "--out", tmp_path / "s.pt"], capsys)
    assert_one_line(code, err, "its sha256 differs from the one in config.json")
    code, _, err = run_cli(["export", tmp_path, "--out", tmp_path / "x"], capsys)
    assert_one_line(code, err, "not a report folder of `ddmini run`")


def test_class_names_become_folder_names(tmp_path):
    x, y = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 1])
    images.save_folder(x, y, tmp_path, ["T-shirt/top", "Ankle boot"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Ankle boot", "T-shirt-top", "manifest.csv"]
    assert (tmp_path / "Ankle boot" / "000002.png").is_file()


def test_run_writes_its_headline_samples_as_an_image_folder(smoke_run, data_dir, tmp_path, capsys):
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(smoke_run["root"], root)
    args = ["run", "--preset", "smoke", "--device", "cpu", "--data-dir", data_dir, "--run-dir", root]
    code, _, err = run_cli([*args, "--png-dir", tmp_path / "png"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "png" / "manifest.csv").open()))
    assert len(rows) == 40 and all(r["classifier_prediction"] for r in rows)
