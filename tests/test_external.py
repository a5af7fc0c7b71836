"""`--classifier FILE`: a classifier made outside ddmini (torch.export .pt2 or TorchScript) as the target."""

import json

import pytest
import torch
from conftest import assert_one_line, run_cli
from torch import nn


def outside_model(channels=1, classes=10):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, classes)
    ).eval()


def save_export(path, model, shape=(1, 28, 28), dynamic=True):
    dims = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(model, (torch.rand(2, *shape),), dynamic_shapes=dims), str(path))
    return path


def test_a_run_against_a_pt2_and_a_torchscript_classifier(data_dir, tmp_path, capsys):
    pt2 = save_export(tmp_path / "m.pt2", outside_model())
    ts = tmp_path / "m.ts"
    torch.jit.trace(outside_model(), torch.rand(2, 1, 28, 28)).save(str(ts))
    for i, path in enumerate((pt2, ts)):
        run_dir = tmp_path / f"runs{i}"
        args = ["run", "--preset", "smoke", "--classifier", path, "--data-dir", data_dir, "--run-dir", run_dir]
        code, out, err = run_cli([*args, "--device", "cpu"], capsys)
        assert code == 0, err
        assert f"given ({path.name})" in out
        r = json.loads((run_dir / "p0.3" / "report.json").read_text())
        assert r["artefacts"]["classifier"] == str(path) and 0 <= r["classifier"]["test_accuracy"] <= 1
        assert not list(run_dir.glob("cache/classifier-*.pt"))  # nothing trained


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: save_export(p, outside_model(channels=3), (3, 28, 28)), "fails on a batch of 3 images (1, 28, 28)"),
        (lambda p: save_export(p, outside_model(classes=7)), "expected (3, 10) logits"),
        (lambda p: save_export(p, outside_model(), dynamic=False), "dynamic batch dimension"),
        (lambda p: p.write_bytes(b"not a program"), "not a loadable torch.export program"),
    ],
)
def test_a_classifier_that_does_not_fit_is_one_line(data_dir, tmp_path, capsys, make, message):
    path = tmp_path / "m.pt2"
    make(path)
    args = ["attack", "--preset", "smoke", "--classifier", path, "--limit", 10, "--data-dir", data_dir]
    code, _, err = run_cli([*args, "--run-dir", tmp_path], capsys)
    assert_one_line(code, err, message)
