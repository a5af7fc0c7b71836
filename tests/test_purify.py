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


def _noisy_tiny(seed=0):
    torch.manual_seed(seed)
    m = unet.build("tiny").eval()
    with torch.no_grad():
        for w in m.parameters():
            w.add_(0.05 * torch.randn_like(w))
    return m


def test_the_differentiable_chain_is_the_purifiers_and_checkpointing_keeps_its_gradient():
    """Diffusion.purify_differentiable gives purify's images from the same noise (purify draws its Philox noise
    from the seed's generator), and the input gradient through every step is the same with and without
    recomputing each step in the backward pass."""
    from ddmini import kernels

    m, d = _noisy_tiny(), diffusion.Diffusion(T=50)
    x = torch.rand(4, 1, 28, 28)
    gen = torch.Generator().manual_seed(3)
    bseed = int(torch.randint(0, 2**62, (1,), generator=gen))
    noise = kernels.philox_normal(torch.empty_like(x), bseed, 0)
    with torch.no_grad():
        got = d.purify_differentiable(m, x, 10, 4, noise)
    assert torch.allclose(got, d.purify(m, x, 10, 4, seed=3), atol=1e-5)
    grads = []
    for ck in (True, False):
        xv = x.clone().requires_grad_(True)
        (d.purify_differentiable(m, xv, 10, 4, noise, checkpointed=ck) ** 2).sum().backward()
        grads.append(xv.grad)
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)
    with pytest.raises(ValueError, match="noise must have the images' shape"):
        d.purify_differentiable(m, x, 10, 4, noise[:2])


def test_the_purified_target_is_random_and_bpda_passes_the_classifiers_gradient_straight_through():
    from torch import nn

    from ddmini.purify import Purified

    m, d = _noisy_tiny(), diffusion.Diffusion(T=50)
    torch.manual_seed(1)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x = torch.rand(3, 1, 28, 28)
    full, bpda = Purified(d, m, clf, 10, 3, "full"), Purified(d, m, clf, 10, 3, "bpda")
    with torch.no_grad():
        assert not torch.equal(full(x), full(x))  # a fresh purification every call
    xv = x.clone().requires_grad_(True)
    bpda(xv)[:, 2].sum().backward()
    # BPDA: d logit_2 / dx is the linear classifier's row, whatever the purifier did
    assert torch.allclose(xv.grad, clf[1].weight[2].reshape(1, 1, 28, 28).expand_as(x), atol=1e-6)
    xv = x.clone().requires_grad_(True)
    full(xv)[:, 2].sum().backward()
    assert not torch.allclose(xv.grad, clf[1].weight[2].reshape(1, 1, 28, 28).expand_as(x), atol=1e-4)
    with pytest.raises(ValueError, match="gradient must be one of full, bpda"):
        Purified(d, m, clf, 10, 3, "exact")


def test_purify_adaptive_adds_the_adaptive_table(smoke_run, data_dir, tmp_path, capsys):
    args = ["purify", "--preset", "smoke", "--data-dir", data_dir, "--run-dir", tmp_path, "--device", "cpu",
            "--checkpoint", smoke_run["diffusion"], "--limit", "6", "--t-star", "5,20", "--steps", "3", "--adaptive",
            "--attack-steps", "2", "--eot", "2", "--attempts", "3"]  # fmt: skip
    code, out, err = _run(args, capsys)
    assert code == 0, err
    a = json.loads((tmp_path / "purify" / "purify.json").read_text())["adaptive"]
    assert (a["norm"], a["eps"], a["images"], a["t_stars"], a["eot"], a["attempts"]) == ("l2", 1.5, 6, [5, 20], 2, 3)
    for k in ("non_adaptive", "bpda", "full", "worst_of_n"):
        assert len(a[k]) == 2 and all(0 <= v <= 1 for v in a[k]), k
    md = (tmp_path / "purify" / "purify.md").read_text()
    assert "## Adaptive attacks (l2 eps 1.5, 6 clean test images)" in md and "worst of 3" in md
