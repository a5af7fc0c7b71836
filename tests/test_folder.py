"""`--dataset folder`: your own images in the ImageFolder layout, read with Pillow, cached, refused in one line."""

import json
import shutil

import numpy as np
import pytest
from conftest import assert_one_line, run_cli
from PIL import Image

from ddmini import data, folder

CLASSES = ("cat", "dog", "owl")


def make_folder(root, per_class=40, split=False, sizes=((30, 34), (33, 31), (36, 36)), mode="RGB"):
    """Three classes of odd-sized images, each class its own colour pattern (a classifier can learn them)."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        for i in range(per_class):
            sub = ("test" if i % 5 == 0 else "train") if split else ""
            d = root / sub / name
            d.mkdir(parents=True, exist_ok=True)
            w, h = sizes[i % len(sizes)]
            arr = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            arr[..., k] += 150  # class k: channel k bright
            img = Image.fromarray(arr, "RGB")
            (img.convert("L") if mode == "L" else img).save(d / f"{i}.png")
    return root


def test_a_folder_is_scanned_read_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "imgs")
    s = folder.scan(root)
    assert s.classes == CLASSES and s.shape == (3, 32, 32)  # commonest shorter side 30..36 -> 32
    assert len(s.files["test"]) == 12 and len(s.files["train"]) == 108  # a seeded tenth of each class
    x, y = data.load(root, "train", "folder")
    assert x.shape == (108, 3, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1 and set(y.tolist()) == {0, 1, 2}
    assert list((tmp_path / "cache" / "ddmini" / "data" / "folders").glob("folder-*.pt"))  # cached, verified
    x2, _ = data.load(root, "train", "folder")
    assert (x2 == x).all()
    assert folder.scan(make_folder(tmp_path / "gray", mode="L")).channels == 1
    # a shape asked for once is not kept when the next command asks for none; the readers keep the registered one
    assert data.register_folder(root, image_size=24).shape == (3, 24, 24)
    assert data.register_folder(root, reuse=True).shape == (3, 24, 24)
    assert data.register_folder(root).shape == (3, 32, 32)


def _one_class(r):
    make_folder(r, 3)
    shutil.rmtree(r / "dog")
    shutil.rmtree(r / "owl")


def _class_only_in_test(r):
    make_folder(r, 10, split=True)
    shutil.copytree(r / "test" / "cat", r / "test" / "eel")


def _truncated_png(r):
    make_folder(r, 10)
    (r / "dog" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 20)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: None, "no class folders with images"),
        (_one_class, "one class (cat)"),
        (_class_only_in_test, "class 'eel' is in test but not in train"),
        (_truncated_png, "3.png: unreadable image"),
    ],
)
def test_bad_folders_are_one_line(tmp_path, capsys, damage, message):
    root = tmp_path / "imgs"
    root.mkdir()
    damage(root)
    code, _, err = run_cli(["data", "check", "--dataset", "folder", "--data-dir", root], capsys)
    assert_one_line(code, err, message)


def test_a_smoke_run_on_a_folder_of_odd_sized_rgb_pngs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "imgs", split=True)
    args = ["run", "--preset", "smoke", "--dataset", "folder", "--data-dir", root, "--run-dir", tmp_path / "runs"]
    code, out, err = run_cli([*args, "--device", "cpu", "--png-dir", tmp_path / "png"], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "runs" / "folder-p0.3" / "report.json").read_text())
    assert r["config"]["unet"]["in_channels"] == 3 and r["config"]["unet"]["num_classes"] == 3
    assert (
        len(r["clean_test"]["per_class"]) == 3
        and "| owl |" in (tmp_path / "runs" / "folder-p0.3" / "report.md").read_text()
    )
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["cat", "dog", "manifest.csv", "owl"]
    code, _, err = run_cli([*args, "--image-size", 24, "--device", "cpu", "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "runs" / "folder-p0.3" / "config.json").read_text())["unet"]["image_size"] == 24
