"""Verified artefacts: a flipped bit anywhere in a saved file is caught on load (digest and zip CRCs),
and a cached stage with one is recomputed, never trusted."""

import shutil

import pytest
import torch

from ddmini import checkpoint
from ddmini.pipeline import Pipeline
from ddmini.presets import preset


def flip(path, where=0.5, bit=0):
    b = bytearray(path.read_bytes())
    b[int(len(b) * where)] ^= 1 << bit
    path.write_bytes(bytes(b))


def test_roundtrip_writes_a_digest(tmp_path):
    obj = {"kind": "x", "t": torch.arange(1000.0)}
    checkpoint.save(obj, tmp_path / "a.pt")
    side = checkpoint.digest_path(tmp_path / "a.pt")
    assert side.read_text().strip() == checkpoint.file_digest(tmp_path / "a.pt")
    assert torch.equal(checkpoint.load(tmp_path / "a.pt")["t"], obj["t"])


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_flipped_bit_is_caught_with_or_without_the_digest(tmp_path, where):
    checkpoint.save({"t": torch.randn(5000)}, tmp_path / "a.pt")
    flip(tmp_path / "a.pt", where)
    with pytest.raises(ValueError, match="corrupt"):
        checkpoint.load(tmp_path / "a.pt")
    checkpoint.digest_path(tmp_path / "a.pt").unlink()  # a file from before digests: the zip CRCs catch it
    with pytest.raises(ValueError, match="corrupt|not a ddmini"):
        checkpoint.load(tmp_path / "a.pt")


def test_torch_alone_would_have_trusted_the_flipped_file(tmp_path):
    # why verify exists: torch.load does not check the zip CRCs
    checkpoint.save({"t": torch.zeros(5000)}, tmp_path / "a.pt")
    flip(tmp_path / "a.pt", 0.5, bit=6)
    t = torch.load(tmp_path / "a.pt", weights_only=True)["t"]
    assert not torch.equal(t, torch.zeros(5000))


def test_stale_digest_is_never_left_beside_new_bytes(tmp_path, monkeypatch):
    checkpoint.save({"a": 1}, tmp_path / "a.pt")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"a": 2}, tmp_path / "a.pt")
    monkeypatch.undo()
    assert not checkpoint.digest_path(tmp_path / "a.pt").exists()
    assert checkpoint.load(tmp_path / "a.pt") == {"a": 1}  # the old file, still whole
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


@pytest.mark.parametrize("stage", ["classifier", "attack"])
def test_corrupted_cached_stage_is_recomputed(smoke_run, data_dir, tmp_path, stage):
    root = tmp_path / "runs"
    shutil.copytree(smoke_run["root"], root)
    rel = smoke_run[stage].relative_to(smoke_run["root"])
    flip(root / rel, 0.6)
    logs = []
    out = Pipeline(preset("smoke").with_seed(0), root, data_dir, "cpu", log=logs.append).run()
    assert not out.cached.get(stage, False), logs
    # recomputed, it equals what the first run made
    assert out.classifier == smoke_run["report"].classifier
    assert out.attack["success_rate"] == smoke_run["report"].attack["success_rate"]
    checkpoint.verify(root / rel)


def test_corrupted_attack_chunk_is_recomputed(tmp_path, small_classifier, mnist_small):
    from ddmini.attacks.stage import attack_dataset
    from ddmini.config import AttackConfig

    x, y = mnist_small[0][:60], mnist_small[1][:60]
    cfg = AttackConfig(steps=2, chunk_size=20)
    first = attack_dataset(small_classifier, x, y, cfg, tmp_path / "a", key="k")
    # leave chunks as an interrupted run would, one of them damaged
    (tmp_path / "a" / "attacked.pt").unlink()
    for start in (0, 20, 40):
        checkpoint.save(
            {"key": "k", "start": start, "stop": start + 20, "x_adv": first.x_adv[start : start + 20], "seconds": 0.0},
            tmp_path / "a" / "chunks" / f"{start:06d}.pt",
        )
    damaged = tmp_path / "a" / "chunks" / "000020.pt"
    b = bytearray(damaged.read_bytes())
    b[len(b) // 2] ^= 0x40
    damaged.write_bytes(bytes(b))
    again = attack_dataset(small_classifier, x, y, cfg, tmp_path / "a", key="k")
    assert torch.equal(again.x_adv, first.x_adv)


def test_check_writable_names_the_users_path(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OSError, match="f is a file, not a directory"):
        checkpoint.check_writable(tmp_path / "f" / "out.pt")
    with pytest.raises(OSError, match="is a directory"):
        checkpoint.check_writable(tmp_path)
    assert checkpoint.check_writable(tmp_path / "new" / "o.pt") == tmp_path / "new" / "o.pt"
    assert list((tmp_path / "new").iterdir()) == []
