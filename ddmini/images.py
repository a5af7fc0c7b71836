"""Image grids as PNG files (Pillow), optionally with a coloured frame per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import atomic_open

RED, GREEN, GREY = (220, 40, 40), (40, 170, 60), (90, 90, 90)


def grid(x: torch.Tensor, nrow: int = 10, pad: int = 2, frames=None, scale: int = 2) -> Image.Image:
    """A grid of images x (N, C, H, W) in [0, 1]; ``frames``: optional list of N RGB colours (or None)."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W); got {tuple(x.shape)}")
    n, c, h, w = x.shape
    nrow = max(1, min(nrow, n))
    rows = (n + nrow - 1) // nrow
    arr = (x.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    if c == 1:
        arr = np.repeat(arr, 3, axis=1)
    canvas = np.full((rows * (h + 2 * pad), nrow * (w + 2 * pad), 3), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = r * (h + 2 * pad), col * (w + 2 * pad)
        if frames is not None and frames[i] is not None:
            canvas[y0 : y0 + h + 2 * pad, x0 : x0 + w + 2 * pad] = frames[i]
        canvas[y0 + pad : y0 + pad + h, x0 + pad : x0 + pad + w] = arr[i].transpose(1, 2, 0)
    img = Image.fromarray(canvas)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def save_png(img: Image.Image, path: str | Path) -> None:
    with atomic_open(path, "wb") as f:
        img.save(f, format="PNG")


def save_grid(x: torch.Tensor, path: str | Path, nrow: int = 10, frames=None) -> None:
    save_png(grid(x, nrow=nrow, frames=frames), path)


def folder_name(class_name: str) -> str:
    """A class name as a folder name (``T-shirt/top`` -> ``T-shirt-top``)."""
    name = "".join(c if c.isalnum() or c in "-_. " else "-" for c in class_name).strip(" .")
    return name or "class"


def save_folder(x: torch.Tensor, labels: torch.Tensor, out: str | Path, class_names, pred=None) -> Path:
    """Images x (N, C, H, W) in [0, 1] as an image folder any tool reads: OUT/<class name>/<index>.png (by
    conditioning label), and OUT/manifest.csv (file, conditioning class, classifier prediction: empty without
    ``pred``), written last. Returns the manifest's path."""
    import csv
    import io

    if x.ndim != 4 or x.shape[1] not in (1, 3) or labels.shape[0] != x.shape[0]:
        raise ValueError(f"images must be (N, 1 or 3, H, W) with N labels; got {tuple(x.shape)}")
    out = Path(out)
    arr = (x.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    rows = []
    for i, k in enumerate(labels.tolist()):
        rel = f"{folder_name(class_names[k])}/{i:06d}.png"
        img = Image.fromarray(arr[i, 0] if arr.shape[1] == 1 else arr[i].transpose(1, 2, 0))
        save_png(img, out / rel)
        rows.append([rel, class_names[k], "" if pred is None else class_names[int(pred[i])]])
    buf = io.StringIO()
    csv.writer(buf).writerows([["file", "conditioning_class", "classifier_prediction"], *rows])
    with atomic_open(out / "manifest.csv", "w") as f:
        f.write(buf.getvalue())
    return out / "manifest.csv"
