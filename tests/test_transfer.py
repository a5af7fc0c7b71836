"""The classifier zoo and the transfer matrix (ddmini.transfer; `ddmini zoo`, `ddmini transfer`)."""

import json

import pytest
import torch
from conftest import run_cli as _run

from ddmini import classifier, transfer
from ddmini.config import ClassifierConfig


def test_zoo_members_differ_from_the_target_in_one_thing_each():
    target = ClassifierConfig(seed=3)
    z = transfer.zoo_configs(target, 1.6)
    assert len(z) == 5
    diffs = [{k for k in vars(target) if getattr(c, k) != getattr(target, k)} for c in z.values()]
    assert diffs == [{"seed"}, {"seed"}, {"arch"}, {"arch"}, {"adv_eps"}]
    assert [c.seed for c in z.values()][:2] == [4, 5] and list(z.values())[-1].adv_eps == 1.6


@pytest.mark.parametrize("arch", ["cnn", "mlp", "resnet"])
def test_every_architecture_gives_logits_and_features(arch):
    m = classifier.build(ClassifierConfig(arch=arch, width=4, feature_dim=16)).eval()
    x = torch.rand(3, 1, 28, 28)
    assert m(x).shape == (3, 10) and m.features(x).shape == (3, 16) and m.num_classes == 10


def test_adversarial_training_attacks_every_batch(monkeypatch, mnist_small):
    from ddmini import attacks

    calls = []
    real = attacks.pgd_l2

    def spy(model, x, y, eps, *a, **k):
        calls.append((x.shape[0], eps, k.get("random_start")))
        return real(model, x, y, eps, *a, **k)

    monkeypatch.setattr(attacks, "pgd_l2", spy)
    x, y = mnist_small[0][:96], mnist_small[1][:96]
    classifier.train(ClassifierConfig(width=4, epochs=1, batch_size=32, adv_eps=1.0, adv_steps=2), x, y)
    assert calls == [(32, 1.0, True)] * 3


def test_matrix_is_the_misclassified_share(small_classifier, mnist_small):
    x, y = mnist_small[2][:50], mnist_small[3][:50]
    wrong = (y + 1) % 10
    t = transfer.matrix({"a": small_classifier}, {"true": (x, y), "shifted": (x, wrong)})
    acc = classifier.accuracy(small_classifier, x, y)
    assert t.rates[0][0] == pytest.approx(1 - acc) and t.rates[1][0] >= acc - 1e-9
    assert t.images == [50, 50] and "| true | 50 |" in t.markdown()
    with pytest.raises(ValueError, match="has no images"):
        transfer.matrix({"a": small_classifier}, {"none": (x[:0], y[:0])})


def test_zoo_and_transfer_commands(data_dir, tmp_path, capsys):
    base = ["--preset", "smoke", "--data-dir", data_dir, "--run-dir", tmp_path, "--device", "cpu"]
    code, out, err = _run(["zoo", *base], capsys)
    assert code == 0, err
    assert len([ln for ln in out.splitlines() if ln.startswith("| ")]) == 7  # header, target and 5 members
    assert "| mlp | mlp |" in out and "| resnet | resnet |" in out and "PGD-L2 trained" in out
    code, out, err = _run(["run", "--poison", "1", *base], capsys)
    assert code == 0, err
    (samples,) = [p for p in (tmp_path / "cache").glob("samples-*.pt")][:1]
    code, out, err = _run(["transfer", *base, "--samples", f"p1={samples}", "--autoattack-limit", "12"], capsys)
    assert code == 0, err
    t = json.loads((tmp_path / "transfer" / "transfer.json").read_text())
    # each classifier's AutoAttack accuracy beside what fools it: both norms, 12 test images, one record each
    assert list(t["autoattack_accuracy"]) == ["linf 0.3", "l2 1.5"] and t["autoattack_images"] == 12
    assert all(len(v) == 6 and all(0 <= a <= 1 for a in v) for v in t["autoattack_accuracy"].values())
    assert t["autoattack_reduced"] == "reduced: 5 iterations, 50 queries"  # the smoke preset's sizes, said
    assert "*AutoAttack accuracy, L-inf eps 0.3* (test images) [reduced: 5 iterations, 50 queries] | 12 |" in out
    assert len(list((tmp_path / "cache").glob("robust-*.json"))) == 12
    assert t["sources"] == ["generated: p1", "attacked training images", "fresh PGD-L2 on test images"]
    assert len(t["classifiers"]) == 6 and t["classifiers"][0] == "target"
    assert t["misclassified"][1][0] == 1.0 and t["misclassified"][2][0] == 1.0  # attacks made against the target
    assert (tmp_path / "transfer" / "transfer.png").is_file() and (tmp_path / "transfer" / "transfer.md").is_file()
    checkpoint_free = tmp_path / "bad.pt"
    from ddmini import checkpoint

    checkpoint.save({"kind": "samples", "images": torch.rand(2, 1, 28, 28)}, checkpoint_free)
    code, _, err = _run(["transfer", *base, "--samples", checkpoint_free], capsys)
    assert code == 1 and "missing labels" in err and len(err.strip().splitlines()) == 1
    # the run's own report gets the matrix with --zoo (the zoo is cached by now)
    code, out, err = _run(["run", "--poison", "1", "--zoo", "--overwrite", *base], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "p1" / "report.json").read_text())
    assert r["transfer"]["sources"] == [
        "generated (w=1)",
        "generated (w=3)",
        "attacked training images",
        "fresh PGD-L2 on test images",
    ]
    assert r["transfer"]["classifiers"] == t["classifiers"]
    assert r["transfer"]["misclassified"][2:] == t["misclassified"][1:]  # the same attacked rows as `transfer`
    assert "## Transfer to the classifier zoo" in (tmp_path / "p1" / "report.md").read_text()
    assert (tmp_path / "p1" / "transfer.png").is_file()
    assert r["config"]["zoo"] is True
