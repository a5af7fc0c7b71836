"""Generated images as an artefact: ``{"kind": "samples", "images", "labels", ...}`` written by
``ddmini sample`` and the run's sampling stage, read by ``ddmini evaluate`` and the pipeline.

What is saved or scored is checked first: images finite and in [0, 1], (N, C, H, W) float; labels
int64 (N,) in [0, num_classes). A sampler that produced NaN (absurd guidance, NaN weights) or a file
holding images in [0, 255] is refused with one line, never scored.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from . import checkpoint

KIND = "samples"


def check_images(images, what: str = "images") -> None:
    """ValueError/TypeError naming ``what`` unless images are float (N, C, H, W), finite, in [0, 1]."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(
            f"{what} must be a floating-point tensor; got {getattr(images, 'dtype', type(images).__name__)}"
        )
    if images.ndim != 4:
        raise ValueError(f"{what} must be (N, C, H, W); got shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise ValueError(f"{what}: {bad} of {images.shape[0]} images hold NaN or infinity")
    if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
        raise ValueError(
            f"{what} must lie in [0, 1]; got values in [{float(images.min()):.4g}, {float(images.max()):.4g}]"
        )


def check_labels(labels, n: int, num_classes: int, what: str = "labels") -> None:
    """ValueError/TypeError unless labels are int64 (n,) in [0, num_classes)."""
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
        raise TypeError(f"{what} must be an int64 tensor; got {getattr(labels, 'dtype', type(labels).__name__)}")
    if labels.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), one per image; got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{what} must be in [0, {num_classes}); got values from {int(labels.min())} to {int(labels.max())}"
        )


def generate(model, tcfg, labels: torch.Tensor, cfg, *, device, desc: str = "sample") -> tuple[torch.Tensor, float]:
    """The sampling stage's compute: images for ``labels`` from the EMA ``model`` trained with ``tcfg``
    (its schedule), by the sampling config ``cfg``; returns (images in [0, 1], seconds).

    On a CPU the U-Net samples in channels_last with its fused GroupNorm + SiLU (``UNet.set_fused_norm``):
    1.3-1.9x the images per second of the contiguous eager model (bench/diffusion.py --only sample), the
    same function to float32 rounding; the model's memory format stays channels_last after the call."""
    from .diffusion import Diffusion

    cpu = torch.device(device).type == "cpu" and hasattr(model, "set_fused_norm")
    before = getattr(model, "fused_norm", False)
    if cpu:
        model.to(memory_format=torch.channels_last).set_fused_norm(True)
    t0 = time.perf_counter()
    try:
        x = Diffusion(schedule_name=tcfg.schedule, T=tcfg.T).sample(
            model,
            labels,
            cfg,
            image_shape=(model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size),
            device=device,
            desc=desc,
        )
    finally:
        if cpu:
            model.set_fused_norm(before)
    return x, time.perf_counter() - t0


def save(path: str | Path, images: torch.Tensor, labels: torch.Tensor, num_classes: int, **extra) -> None:
    """Write a samples file atomically (with its digest) after checking what it holds."""
    check_images(images)
    check_labels(labels, images.shape[0], num_classes)
    checkpoint.save({"kind": KIND, "images": images, "labels": labels, "num_classes": num_classes, **extra}, path)


def load(path: str | Path, num_classes: int | None = None, key: str | None = None) -> dict:
    """Read a samples file, verified (digest, CRC) and checked as :func:`save` checks; ``num_classes``
    (e.g. the classifier's) bounds the labels when given; ``key``: the cache key it must have been made for."""
    d = checkpoint.load_kind(path, KIND, "samples file", ("images", "labels"), key)
    check_images(d["images"], f"{path}: images")
    k = num_classes or int(d.get("num_classes", 0)) or None
    check_labels(d["labels"], d["images"].shape[0], k if k else 2**62, f"{path}: labels")
    return d


def load_named(specs, num_classes: int, limit: int | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Samples files named on the command line as ``[NAME=]PATH`` (NAME: the file's stem when left out):
    {name: (images, labels)}, the first ``limit`` of each when given."""
    out = {}
    for spec in specs:
        name, _, path = str(spec).rpartition("=")
        d = load(path, num_classes)
        out[name or Path(path).stem] = (d["images"][:limit], d["labels"][:limit])
    return out


def labels_for(num: int, num_classes: int, text: str | None = None) -> torch.Tensor:
    """``num`` conditioning labels: ``text`` (comma-separated, repeated to ``num``), or balanced over the
    classes when None."""
    from .config import parse_ints
    from .diffusion import balanced_labels

    if not 1 <= num <= 10**7:
        raise ValueError(f"--num must be in [1, 10000000]; got {num}")
    if not text:
        return balanced_labels(num, num_classes)
    vals = parse_ints(text, "--labels")
    if min(vals) < 0 or max(vals) >= num_classes:
        raise ValueError(f"--labels must be in [0, {num_classes}) for this model; got {text!r}")
    return torch.tensor(vals, dtype=torch.long).repeat((num + len(vals) - 1) // len(vals))[:num]


def write_folder(images: torch.Tensor, labels: torch.Tensor, out, names, clf=None, pred=None) -> Path:
    """Samples as an image folder (ddmini.images.save_folder): OUT/<class name>/<index>.png named by the
    class ``names``, and OUT/manifest.csv with the classifier's predictions (``pred``, or ``clf``'s)."""
    from . import classifier, images as img

    if pred is None and clf is not None:
        pred = classifier.predict(clf, images).argmax(1)
    return img.save_folder(images, labels, out, names, pred)
