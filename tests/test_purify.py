"""Purification with a diffusion model (ddmini.diffusion.Diffusion.purify, ddmini.purify, `ddmini purify`)."""

import json

import pytest
import torch
from conftest import run_cli as _run

from ddmini import diffusion, unet


def test_purify_keeps_shape_and_range_and_is_seeded():
    torch.manual_seed(0)
    m = unet.build("tiny").eval()
    with torch.no_grad():
        for w in m.parameters():
            w.add_(0.05 * torch.randn_like(w))
    d = diffusion.Diffusion(T=50)
    x = torch.rand(5, 1, 28, 28)
    a = d.purify(m, x, 10, 4, seed=3)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, d.purify(m, x, 10, 4, seed=3)) and not torch.equal(a, d.purify(m, x, 10, 4, seed=4))
    # a small t* keeps the image closer than a large one does
    near = (d.purify(m, x, 1, 2) - x).abs().mean()
    far = (d.purify(m, x, 45, 4) - x).abs().mean()
    assert near < far
    for bad in (0, 50, 2.5, True):
        with pytest.raises(ValueError, match=r"t\* must be an integer in \[1, 50\)"):
            d.purify(m, x, bad)
    with pytest.raises(ValueError, match="purification steps"):
        d.purify(m, x, 3, 5)


def test_purify_command(smoke_run, data_dir, tmp_path, capsys):
    base = [
        "purify",
        "--preset",
        "smoke",
        "--data-dir",
        data_dir,
        "--run-dir",
        tmp_path,
        "--device",
        "cpu",
        "--checkpoint",
        smoke_run["diffusion"],
        "--limit",
        "40",
    ]
    code, out, err = _run(base + ["--t-star", "5,20", "--steps", "4"], capsys)
    assert code == 0, err
    t = json.loads((tmp_path / "purify" / "purify.json").read_text())
    assert t["t_stars"] == [5, 20] and t["images"] == [40, 40] and "Non-adaptive" in t["note"]
    assert all(0 <= v <= 1 for row in t["accuracy_after"] for v in row)
    assert "Non-adaptive" in (tmp_path / "purify" / "purify.md").read_text()
    for extra, msg in (
        (["--t-star", "0"], "--t-star values must be in [1, 100)"),
        (["--t-star", "100"], "--t-star values must be in [1, 100)"),
        (["--t-star", "5", "--steps", "9"], "--steps must be in [1, 6]"),
        (["--dataset", "fashion-mnist"], "a diffusion model of mnist, not fashion-mnist"),
    ):
        code, _, err = _run(base + extra, capsys)
        assert code == 1 and msg in err and len(err.strip().splitlines()) == 1, err
    code, _, err = _run(base[:-4] + ["--checkpoint", smoke_run["classifier"], "--limit", "40"], capsys)
    assert code == 1 and "not a ddmini diffusion checkpoint" in err
