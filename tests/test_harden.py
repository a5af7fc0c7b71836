"""ddmini harden: the four arms, the multi-restart robust accuracy, and bad input."""

import json

import pytest
import torch
from conftest import assert_one_line, run_cli
from torch import nn

from ddmini.attacks import robust_accuracy


class _Threshold(nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, else class 0."""

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True) - 0.5
        return torch.cat([-m, m], 1) * 100


def test_robust_accuracy_is_the_worst_case_over_restarts():
    model = _Threshold()
    x = torch.cat([torch.full((6, 1, 4, 4), 0.2), torch.full((4, 1, 4, 4), 0.8)])
    y = torch.tensor([0] * 6 + [1] * 4)
    y[0] = 1  # one image the model gets wrong already
    calls = []

    def nothing(m, xb, yb, seed):
        calls.append(seed)
        return xb

    assert robust_accuracy(model, x, y, nothing, restarts=3, seed=7) == pytest.approx(0.9)
    assert calls == [7, 8, 9]

    def only_seed_1(m, xb, yb, seed):  # succeeds (flips every image) on the second restart only
        return 1 - xb if seed == 1 else xb

    assert robust_accuracy(model, x, y, only_seed_1, restarts=1, seed=0) == pytest.approx(0.9)
    assert robust_accuracy(model, x, y, only_seed_1, restarts=2, seed=0) == 0.0
    with pytest.raises(ValueError, match="restarts"):
        robust_accuracy(model, x, y, nothing, restarts=0)


@pytest.fixture(scope="module")
def harden_run(smoke_run, data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("harden")
    from ddmini.cli import main

    with pytest.raises(SystemExit) as e:
        main(
            [
                "harden",
                "--preset",
                "smoke",
                "--checkpoint",
                str(smoke_run["diffusion"]),
                "--data-dir",
                str(data_dir),
                "--run-dir",
                str(root),
                "--device",
                "cpu",
            ]
        )
    assert e.value.code == 0
    return root


def test_harden_smoke_trains_and_scores_every_arm(harden_run, smoke_run):
    out = json.loads((harden_run / "harden" / "harden.json").read_text())
    arms = {a["arm"]: a for a in out["arms"]}
    assert list(arms) == ["clean", "pgd", "deceptive", "pgd+deceptive", "deceptive-fresh"]
    target_acc = smoke_run["report"].classifier["test_accuracy"]
    assert arms["clean"]["clean_accuracy"] == pytest.approx(target_acc)  # the clean arm is the run's target
    for a in arms.values():
        for v in a["robust_accuracy"].values():
            assert 0 <= v <= a["clean_accuracy"] + 0.5  # robust on the first 30 images only
        assert a["heldout_images"] == 20 and a["robust_images"] == 30 and a["transfer_images"] > 0
        assert a["seconds_per_example"] > 0
    assert arms["deceptive"]["pool_seconds"] > 0 and arms["clean"]["pool_seconds"] == 0
    # the fresh arm samples a pool per epoch (smoke: 2 epochs) and sees as many examples per epoch
    assert arms["deceptive-fresh"]["pool_seconds"] > arms["deceptive"]["pool_seconds"]
    assert arms["deceptive-fresh"]["examples_seen"] == arms["deceptive"]["examples_seen"]
    # PGD training and the pools each make another classifier; two runs find all five cached
    assert len(list((harden_run / "cache").glob("classifier-*.pt"))) == 5
    assert arms["clean"]["transfer_misclassified"] == 1.0  # the transferred attacks are the ones that fooled it
    md = (harden_run / "harden" / "harden.md").read_text()
    assert "anchor" in md and "±" in md and "worst case over 2 restarts" in md
    # AutoAttack beside PGD: both norms at MNIST's radii, on the first 10 test images, one record per arm and norm
    for a in arms.values():
        assert list(a["autoattack"]) == ["linf 0.3", "l2 1.5"] and a["autoattack_images"] == 10
        assert all(0 <= v <= 1 for v in a["autoattack"].values())
    assert "| AutoAttack, L-inf eps 0.3 | AutoAttack, L2 eps 1.5 |" in md and "first 10 test images" in md
    assert "[reduced: 5 iterations, 50 queries]" in md  # the smoke preset cuts the protocol, and says so
    assert len(list((harden_run / "cache").glob("robust-*.json"))) == 10


def test_harden_bad_input_is_one_line(harden_run, smoke_run, data_dir, capsys, tmp_path):
    common = ["--preset", "smoke", "--data-dir", data_dir, "--run-dir", harden_run, "--device", "cpu"]
    code, _, err = run_cli(["harden", "--checkpoint", smoke_run["diffusion"], "--arms", "clean,mixup", *common], capsys)
    assert_one_line(code, err, "unknown arm mixup")
    code, _, err = run_cli(["harden", "--checkpoint", smoke_run["classifier"], *common], capsys)
    assert_one_line(code, err, "classifier")
    code, _, err = run_cli(["harden", "--checkpoint", smoke_run["diffusion"], "--eval-eps", "1,x", *common], capsys)
    assert_one_line(code, err, "--eval-eps", exit_code=code if code == 2 else 1)
    ck = torch.load(smoke_run["diffusion"], weights_only=True)
    ck["extra"] = {**ck.get("extra", {}), "dataset": "fashion-mnist"}
    from ddmini import checkpoint

    checkpoint.save(ck, tmp_path / "fm.pt")
    code, _, err = run_cli(["harden", "--checkpoint", tmp_path / "fm.pt", *common], capsys)
    assert_one_line(code, err, "a diffusion model of fashion-mnist, not mnist")
