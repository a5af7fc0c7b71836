"""The target classifier: a small CNN for 28x28 images in [0, 1], and its training loop.

``Classifier.features(x)`` returns the penultimate activations (``feature_dim`` wide), the space in
which ddmini's Fréchet metrics are computed; ``forward(x)`` returns logits (N, 10).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint
from .config import ClassifierConfig, from_dict, to_dict
from .runtime import progress

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class Classifier(nn.Module):
    """conv-BN-ReLU x2, pool, conv-BN-ReLU x2, pool, linear -> features, linear -> logits."""

    def __init__(
        self,
        *,
        width: int = ClassifierConfig.width,
        feature_dim: int = ClassifierConfig.feature_dim,
        num_classes: int = 10,
        in_channels: int = 1,
    ):
        super().__init__()
        w = width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(in_channels, w),
            *block(w, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.LazyLinear(feature_dim), nn.ReLU(inplace=True), nn.Dropout(0.2))
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, feature_dim) for images (N, C, H, W) in [0, 1]."""
        return self.embed(self.body((x - MNIST_MEAN) / MNIST_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) for images (N, C, H, W) in [0, 1]."""
        return self.head(self.features(x))


class _Zoo(nn.Module):
    """A zoo member: ``body`` maps normalised images to ``feature_dim`` features, a linear head to logits
    (the interface of Classifier: features(x), forward(x), num_classes, feature_dim)."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.body, self.head = body, nn.Linear(feature_dim, num_classes)
        self.feature_dim, self.num_classes = feature_dim, num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - MNIST_MEAN) / MNIST_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(_Zoo):
    """Two hidden layers on the flattened image (a zoo member with no convolution at all)."""

    def __init__(
        self,
        *,
        width: int = ClassifierConfig.width,
        feature_dim: int = ClassifierConfig.feature_dim,
        num_classes: int = 10,
        in_features: int = 784,
    ):
        hidden = 32 * width
        super().__init__(
            nn.Sequential(
                nn.Flatten(),
                nn.Linear(in_features, hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, feature_dim),
                nn.ReLU(inplace=True),
            ),
            feature_dim,
            num_classes,
        )


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class ResNet(_Zoo):
    """A small residual CNN, twice the target's width: stem, residual blocks at full, half and quarter
    resolution, global average pooling (a zoo member of another design than the target)."""

    def __init__(
        self,
        *,
        width: int = ClassifierConfig.width,
        feature_dim: int = ClassifierConfig.feature_dim,
        num_classes: int = 10,
        in_channels: int = 1,
    ):
        w = 2 * width
        super().__init__(
            nn.Sequential(
                nn.Conv2d(in_channels, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                _Residual(w, w, 1),
                _Residual(w, 2 * w, 2),
                _Residual(2 * w, 4 * w, 2),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(4 * w, feature_dim),
                nn.ReLU(inplace=True),
            ),
            feature_dim,
            num_classes,
        )


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every Conv2d followed by a BatchNorm2d (inside any
    nn.Sequential) folded into one Conv2d. Same outputs up to float rounding, about 1.4x faster
    forward+backward on a CPU: the attacks use it (the original model is left untouched)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()

    def fold(seq: nn.Sequential) -> nn.Sequential:
        layers, out, i = list(seq), [], 0
        while i < len(layers):
            a = layers[i]
            b = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d) and b.track_running_stats:
                out.append(fuse_conv_bn_eval(a, b))
                i += 2
            else:
                out.append(fold(a) if isinstance(a, nn.Sequential) else a)
                i += 1
        return nn.Sequential(*out)

    for name, child in list(model.named_children()):
        if isinstance(child, nn.Sequential):
            setattr(model, name, fold(child))
    return model


def fast_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """The model prepared for attacking: BatchNorm folded into the convolutions, on ``device``, and
    channels-last on a CPU (oneDNN's faster layout for these convolutions). Outputs equal the original's
    up to float rounding. A classifier made elsewhere (:class:`External`) is used as it is, on ``device``."""
    if isinstance(model, External):
        return model.to(device)
    m = fold_batchnorm(model).to(device)
    if device.type == "cpu":
        m = m.to(memory_format=torch.channels_last)
    return m


def build(cfg: ClassifierConfig, image_shape=(1, 28, 28), num_classes: int = 10) -> nn.Module:
    """The classifier ``cfg.arch`` names, for images of ``image_shape`` and ``num_classes`` classes."""
    k = num_classes
    if cfg.arch == "mlp":
        return MLP(width=cfg.width, feature_dim=cfg.feature_dim, in_features=math.prod(image_shape), num_classes=k)
    if cfg.arch == "resnet":
        return ResNet(width=cfg.width, feature_dim=cfg.feature_dim, in_channels=image_shape[0], num_classes=k)
    model = Classifier(width=cfg.width, feature_dim=cfg.feature_dim, in_channels=image_shape[0], num_classes=k)
    with torch.no_grad():  # materialise the lazy layer
        model.eval()(torch.zeros(1, *image_shape))
    return model


@torch.inference_mode()
def predict(
    model: nn.Module, x: torch.Tensor, batch_size: int = 1000, device=None, features: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Logits for ``x`` in batches (and the features too when ``features=True``), on CPU."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    logits, feats = [], []
    try:
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(device, non_blocking=True)
            if features:
                f = model.features(xb)
                feats.append(f.float().cpu())
                logits.append(model.head(f).float().cpu())
            else:
                logits.append(model(xb).float().cpu())
    finally:
        model.train(was_training)
    out = torch.cat(logits) if logits else torch.empty(0, getattr(model, "num_classes", 10))
    if features:
        return out, (torch.cat(feats) if feats else torch.empty(0, getattr(model, "feature_dim", 0)))
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of ``x`` that ``model`` labels as ``y``."""
    if x.shape[0] == 0:
        return float("nan")
    return (predict(model, x, batch_size).argmax(1) == y).float().mean().item()


@dataclass
class TrainResult:
    model: Classifier
    test_accuracy: float
    train_seconds: float


def train(
    cfg: ClassifierConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    epoch_extra: tuple | None = None,
    num_classes: int = 10,
) -> TrainResult:
    """Train a classifier on (x, y) with AdamW and a one-cycle learning rate; reproducible by cfg.seed.
    ``epoch_extra`` = (images, labels), ``cfg.epochs`` equal parts of them: epoch e trains on (x, y) plus
    part e only (e.g. fresh deceptive samples every epoch)."""
    cfg.validate()
    if x.ndim != 4 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x must be (N, C, H, W) with N == len(y); got {tuple(x.shape)} and {tuple(y.shape)}")
    parts = None
    if epoch_extra is not None:
        ex, ey = epoch_extra
        if ex.shape[0] != ey.shape[0] or ex.shape[0] % cfg.epochs or ex.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"epoch_extra must be {cfg.epochs} equal parts of images shaped like x; "
                f"got {tuple(ex.shape)} and {tuple(ey.shape)}"
            )
        k = ex.shape[0] // cfg.epochs
        parts = [(ex[e * k : (e + 1) * k].to(x.dtype), ey[e * k : (e + 1) * k]) for e in range(cfg.epochs)]
    device = torch.device(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build(cfg, tuple(x.shape[1:]), num_classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_epoch = x.shape[0] + (parts[0][0].shape[0] if parts else 0)
    steps_per_epoch = math.ceil(n_epoch / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    start = time.perf_counter()
    bar = progress(total=cfg.epochs * steps_per_epoch, desc="train classifier", unit="step")
    model.train()
    for epoch in range(cfg.epochs):
        xe, ye = (torch.cat([x, parts[epoch][0]]), torch.cat([y, parts[epoch][1]])) if parts else (x, y)
        perm = torch.randperm(n_epoch, generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb, yb = xe[idx].to(device, non_blocking=True), ye[idx].to(device, non_blocking=True)
            if cfg.adv_eps > 0:  # Madry: train on the PGD-L2 attack of the current model (random start)
                from .attacks import pgd_l2

                xb = pgd_l2(
                    fast_copy(model, device),
                    xb,
                    yb,
                    cfg.adv_eps,
                    2.5 * cfg.adv_eps / cfg.adv_steps,
                    cfg.adv_steps,
                    random_start=True,
                    seed=int(torch.randint(0, 2**62, (1,), generator=gen)),
                    batch_size=xb.shape[0],
                )
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            if i % 50 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
    bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    acc = accuracy(model, x_test, y_test) if x_test is not None else float("nan")
    return TrainResult(model, acc, seconds)


def save(
    model: Classifier,
    cfg: ClassifierConfig,
    path: str | Path,
    dataset: str = "mnist",
    image_shape=(1, 28, 28),
    key: str | None = None,
    **metrics,
) -> None:
    """Write the classifier checkpoint atomically, with the dataset and image shape it was trained on (and
    the cache key of the stage that made it, ``key``)."""
    checkpoint.save(
        {
            "kind": "classifier",
            "key": key,
            "config": to_dict(cfg),
            "dataset": dataset,
            "image_shape": list(image_shape),
            "num_classes": int(getattr(model, "num_classes", 10)),
            "state_dict": model.state_dict(),
            "metrics": metrics,
        },
        path,
    )


def load(
    path: str | Path, device: torch.device | str = "cpu", dataset: str | None = None, key: str | None = None
) -> tuple[Classifier, ClassifierConfig, dict]:
    """Load a classifier checkpoint (eval mode); a wrong or corrupt file, one trained on another dataset than
    ``dataset`` or made for another cache key than ``key`` (when given) raises one ValueError line."""
    ckpt = checkpoint.load_kind(path, "classifier", "classifier checkpoint", ("config", "state_dict"), key)
    trained_on = ckpt.get("dataset", "mnist")  # checkpoints from before datasets were named: MNIST
    if dataset is not None and trained_on != dataset:
        raise ValueError(f"{path}: a classifier trained on {trained_on}, not {dataset}")
    cfg = from_dict(ClassifierConfig, ckpt["config"])
    shape, k = tuple(ckpt.get("image_shape", (1, 28, 28))), int(ckpt.get("num_classes", 10))
    model = checkpoint.load_weights(build(cfg, shape, k), ckpt["state_dict"], path)
    return model.to(device).eval(), cfg, ckpt.get("metrics", {})


class External(nn.Module):
    """A classifier made outside ddmini (a ``torch.export`` program or a TorchScript file) with the interface
    of ddmini's: logits for [N, C, H, W] floats in [0, 1]; its features (for the Fréchet metrics) are its
    logits. Its mode was fixed when it was exported: ``train``/``eval`` leave it as it is."""

    def __init__(self, inner: nn.Module, num_classes: int):
        super().__init__()
        self.inner, self.head = inner, nn.Identity()
        self.num_classes = self.feature_dim = num_classes

    def forward(self, x):
        return self.inner(x)

    def features(self, x):
        return self.inner(x)

    def train(self, mode: bool = True):
        self.training = mode
        return self


EXPORTED = (".pt2",)  # torch.export.save; anything else that is not a ddmini checkpoint is tried as TorchScript


def load_external(path: str | Path, image_shape, num_classes: int, device="cpu") -> External:
    """The classifier in ``path`` (a ``.pt2`` torch.export program, else TorchScript), checked on three
    images of ``image_shape`` to return ``num_classes`` logits each. Nothing in it is unpickled beyond
    tensors: torch.export's loader is held to weights-only loading, TorchScript has its own format."""
    import os

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: classifier file not found")
    try:
        if path.suffix in EXPORTED:
            saved = {k: os.environ.pop(k, None) for k in ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",)}
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
            try:
                inner = torch.export.load(str(path)).module()
            finally:
                os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
                os.environ.update({k: v for k, v in saved.items() if v is not None})
        else:
            inner = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001 (torch raises many types for a foreign or damaged file)
        kind = "torch.export program" if path.suffix in EXPORTED else "TorchScript file (or ddmini classifier)"
        raise ValueError(f"{path}: not a loadable {kind} ({type(e).__name__})") from None
    model = External(inner, num_classes)
    try:
        with torch.no_grad():  # 3: not a batch size a program is usually exported with
            out = model(torch.rand(3, *image_shape))
    except Exception as e:  # noqa: BLE001
        why = " ".join(str(e).split())[:120]
        raise ValueError(f"{path}: fails on a batch of 3 images {tuple(image_shape)} ({why}); export it for this "
                         "image shape with a dynamic batch dimension (torch.export.Dim)") from None  # fmt: skip
    if tuple(out.shape) != (3, num_classes):
        raise ValueError(f"{path}: returns {tuple(out.shape)} for 3 images; expected (3, {num_classes}) logits")
    return model.to(device)


def load_any(path: str | Path, image_shape, num_classes: int, device="cpu", dataset: str | None = None) -> nn.Module:
    """A ddmini classifier checkpoint (:func:`load`) or a classifier made elsewhere (:func:`load_external`)."""
    try:
        return load(path, device, dataset)[0]
    except ValueError as e:
        if "not a ddmini checkpoint" not in str(e):  # a ddmini file of another kind, a damaged one: said as it is
            raise
    return load_external(path, image_shape, num_classes, device)
