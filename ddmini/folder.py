"""Your own images (``--dataset folder --data-dir DIR``): torchvision's ImageFolder layout read with Pillow.

DIR/train/<class>/*.png|jpg|... and DIR/test/<class>/...; or one tree DIR/<class>/... of which a seeded tenth is
the test split. Class names are the sorted folder names of the training split; grayscale or RGB is detected (any
colour image makes it RGB) unless given; every image is resized and centre-cropped to a square of the commonest
size, rounded to a multiple of 4 (so the U-Net's three levels divide it) unless given. A folder with no class, one
class, a class only in test, or an unreadable image is one line naming it. The decoded images are cached as a
verified tensor file in the user cache, keyed by the folder's content and the shape.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoint
from .errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TEST_SHARE = 0.1  # one tree: this share of each class, chosen by a seeded permutation, is the test split
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass(frozen=True)
class Scan:
    """What a folder holds: its classes, each split's (file, label) list, and the shape images are read to."""

    root: Path
    classes: tuple[str, ...]
    files: dict  # split -> [(path, label)]
    channels: int
    image_size: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)


def _class_files(root: Path) -> dict[str, list[Path]]:
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
        if files:
            out[d.name] = files
    return out


def _split_one_tree(classes: dict[str, list[Path]]) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(0)
    train, test = {}, {}
    for name, files in classes.items():
        order = torch.randperm(len(files), generator=g).tolist()
        n_test = int(len(files) * TEST_SHARE) if len(files) > 1 else 0
        test[name] = [files[i] for i in sorted(order[:n_test])]
        train[name] = [files[i] for i in sorted(order[n_test:])]
    return train, {k: v for k, v in test.items() if v}


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
        return img
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({' '.join(str(e).split())[:100]})") from None


def scan(root: str | Path, channels: int = 0, image_size: int = 0) -> Scan:
    """The classes, files and image shape of the image folder ``root`` (``channels`` / ``image_size`` 0:
    detected)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    if (root / "train").is_dir():
        train = _class_files(root / "train")
        test = _class_files(root / "test") if (root / "test").is_dir() else {}
        extra = sorted(set(test) - set(train))
        if extra:
            raise DataError(f"{root / 'test' / extra[0]}: class {extra[0]!r} is in test but not in train")
    else:
        train, test = _split_one_tree(_class_files(root))
    if not train:
        raise DataError(
            f"{root}: no class folders with images (expected {root}/train/<class>/*.png or {root}/<class>/*.png)"
        )
    if len(train) == 1:
        raise DataError(f"{root}: one class ({next(iter(train))}); a classifier needs two or more")
    classes = tuple(sorted(train))
    files = {}
    for split, d in (("train", train), ("test", test)):  # classes interleaved, seeded: a limit takes every class
        pairs = [(p, classes.index(c)) for c in classes for p in d.get(c, [])]
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(1)).tolist()
        files[split] = [pairs[i] for i in order]
    if not files["test"]:
        raise DataError(f"{root}: no test images (add {root}/test/<class>/ or more images per class)")
    if not channels or not image_size:
        sizes, colour = Counter(), False
        for p, _ in files["train"] + files["test"]:
            img = _open(p)
            sizes[min(img.size)] += 1
            colour = colour or img.mode not in GRAY_MODES and not _is_gray_palette(img)
        channels = channels or (3 if colour else 1)
        image_size = image_size or max(8, 4 * round(sizes.most_common(1)[0][0] / 4))
    return Scan(root, classes, files, channels, image_size)


def _is_gray_palette(img) -> bool:
    if img.mode != "P":
        return False
    rgb = img.convert("RGB")
    r, g, b = rgb.split()
    return r.tobytes() == g.tobytes() == b.tobytes()


def _key(s: Scan, split: str) -> str:
    h = hashlib.sha256(f"{s.channels}x{s.image_size}:{split}:{','.join(s.classes)}".encode())
    for p, label in s.files[split]:
        h.update(f"{p.relative_to(s.root)}:{label}:".encode())
        h.update(checkpoint.file_digest(p).encode())
    return h.hexdigest()[:16]


def read(s: Scan, split: str, cache: Path | None = None):
    """(uint8 images (N, C, S, S), int64 labels) of ``split``: from the verified cache file when the folder's
    content and the shape are those it was made for, else decoded (and cached)."""
    from PIL import Image, ImageOps

    from .runtime import progress

    key = _key(s, split)
    path = cache / f"folder-{key}.pt" if cache else None
    if path is not None and path.is_file():
        try:
            got = checkpoint.load_kind(path, "image-folder", "image-folder cache", ("images", "labels"), key)
            return got["images"], got["labels"]
        except ValueError:
            checkpoint.set_aside(path)
    mode = "RGB" if s.channels == 3 else "L"
    out = torch.empty((len(s.files[split]), s.channels, s.image_size, s.image_size), dtype=torch.uint8)
    for i, (p, _) in enumerate(progress(s.files[split], desc=f"read {split} images", unit="img")):
        img = ImageOps.fit(_open(p).convert(mode), (s.image_size, s.image_size), method=Image.BILINEAR)
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        out[i] = t.view(s.image_size, s.image_size, s.channels).permute(2, 0, 1)
    labels = torch.tensor([label for _, label in s.files[split]], dtype=torch.long)
    if path is not None:
        checkpoint.save({"kind": "image-folder", "key": key, "images": out, "labels": labels}, path)
    return out, labels
