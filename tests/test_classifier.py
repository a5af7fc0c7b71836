import pytest
import torch

from ddmini import classifier
from ddmini.cli import main
from ddmini.config import ClassifierConfig


def test_shapes():
    m = classifier.build(ClassifierConfig(width=8, feature_dim=32)).eval()
    x = torch.rand(5, 1, 28, 28)
    assert m(x).shape == (5, 10)
    assert m.features(x).shape == (5, 32)
    logits, feats = classifier.predict(m, x, batch_size=2, features=True)
    torch.testing.assert_close(logits, m(x).detach())
    assert feats.shape == (5, 32)


def test_tiny_training_learns_and_roundtrips(mnist_small, tmp_path):
    x, y, xt, yt = mnist_small
    cfg = ClassifierConfig(width=8, epochs=1, batch_size=64, seed=3)
    r1 = classifier.train(cfg, x, y, xt, yt)
    assert r1.test_accuracy > 0.7  # chance is 0.1
    r2 = classifier.train(cfg, x, y, xt, yt)
    assert r1.test_accuracy == r2.test_accuracy  # same seed, same model
    path = tmp_path / "c.pt"
    classifier.save(r1.model, cfg, path, test_accuracy=r1.test_accuracy)
    m, cfg2, metrics = classifier.load(path)
    assert cfg2 == cfg and metrics["test_accuracy"] == r1.test_accuracy
    torch.testing.assert_close(m(xt[:50]), r1.model.eval()(xt[:50]))


def test_epoch_extra_adds_one_part_per_epoch(mnist_small):
    x, y, xt, yt = mnist_small
    x, y = x[:300], y[:300]
    cfg = ClassifierConfig(width=4, feature_dim=8, epochs=2, batch_size=64, seed=1)
    px, py = xt[:40], yt[:40]
    pooled = classifier.train(cfg, torch.cat([x, px]), torch.cat([y, py])).model
    # the same part every epoch is the pool joined once: the same steps on the same images
    same = classifier.train(cfg, x, y, epoch_extra=(torch.cat([px, px]), torch.cat([py, py]))).model
    for a, b in zip(pooled.state_dict().values(), same.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # another part in the second epoch trains another model
    fresh = classifier.train(cfg, x, y, epoch_extra=(torch.cat([px, xt[40:80]]), torch.cat([py, yt[40:80]]))).model
    assert any(not torch.equal(a, b) for a, b in zip(pooled.state_dict().values(), fresh.state_dict().values()))
    with pytest.raises(ValueError, match="2 equal parts"):
        classifier.train(cfg, x, y, epoch_extra=(xt[:41], yt[:41]))


def test_load_rejects_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        classifier.load(bad)
    with pytest.raises(FileNotFoundError):
        classifier.load(tmp_path / "none.pt")


def test_cli_train_classifier(data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "train-classifier",
                "--data-dir",
                str(data_dir),
                "--run-dir",
                str(tmp_path),
                "--epochs",
                "1",
                "--limit",
                "1000",
                "--width",
                "4",
                "--device",
                "cpu",
            ]
        )
    out = capsys.readouterr().out
    assert e.value.code == 0 and "test accuracy" in out
    assert (tmp_path / "classifier.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for cmd in ("data", "train-classifier"):
        assert cmd in out
