"""Poisoned training sets: a fraction p of the training images replaced by their attacked versions,
labels kept (the deceptive diffusion model's training data; the poisoning study varies p)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PoisonedSet:
    """A training set in which some images were replaced by their attacked versions (labels kept)."""

    x: torch.Tensor  # (M, C, H, W) float32
    y: torch.Tensor  # (M,) int64, the ORIGINAL labels
    attacked: torch.Tensor  # (M,) bool, which images are the attacked versions
    index: torch.Tensor  # (M,) int64, position of each image in the source set

    def __len__(self) -> int:
        return self.y.shape[0]

    @property
    def fraction(self) -> float:
        return float(self.attacked.float().mean()) if len(self) else 0.0


def poisoned_set(clean, attacked, p: float, seed: int = 0, only_successful: bool = False) -> PoisonedSet:
    """Replace a fraction ``p`` of the training images by their attacked versions, keeping labels.

    ``clean`` is (x, y); ``attacked`` is an ``AttackedSet`` (ddmini.attacks.stage) or a tuple
    (x_adv, y) / (x_adv, y, success) aligned with ``clean``. Stratified: in every class k with n_k
    candidate images exactly round(p * n_k) are replaced, chosen by a permutation seeded with ``seed``
    (reproducible, and the images attacked at a smaller p stay attacked at a larger one).
    p = 0 gives the clean set, p = 1 the fully attacked set. With ``only_successful=True`` the images
    whose attack failed are left out altogether, so p = 1 is the paper's set of successful adversarial
    images only (51,918 of 60,000 there) and p = 0 the clean versions of the same images.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"poison fraction p must be in [0, 1]; got {p!r}")
    x, y = clean
    if hasattr(attacked, "x_adv"):
        x_adv, y_adv, ok = attacked.x_adv, attacked.y, attacked.success
    else:
        if len(attacked) not in (2, 3):
            raise ValueError("attacked must be an AttackedSet or a tuple (x_adv, y[, success])")
        x_adv, y_adv = attacked[0], attacked[1]
        ok = attacked[2] if len(attacked) == 3 else None
    if x_adv.shape != x.shape:
        raise ValueError(f"attacked images {tuple(x_adv.shape)} do not match the clean ones {tuple(x.shape)}")
    if y.shape != (x.shape[0],) or not torch.equal(y_adv.cpu(), y.cpu()):
        raise ValueError("attacked labels must equal the clean labels (same images, same order)")
    if only_successful and ok is None:
        raise ValueError("only_successful=True needs the success mask (pass an AttackedSet or (x_adv, y, success))")
    keep = ok.cpu().bool() if only_successful else torch.ones(x.shape[0], dtype=torch.bool)
    index = keep.nonzero().squeeze(1)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(x.shape[0], generator=gen)  # one permutation, nested across p
    rank = torch.empty_like(order)
    rank[order] = torch.arange(x.shape[0])
    attacked_mask = torch.zeros(x.shape[0], dtype=torch.bool)
    ycpu = y.cpu()
    for k in torch.unique(ycpu[index]).tolist():
        members = index[ycpu[index] == k]
        members = members[torch.argsort(rank[members])]
        attacked_mask[members[: int(round(p * members.numel()))]] = True
    mask = attacked_mask[index]
    xs = torch.where(mask.view(-1, *([1] * (x.ndim - 1))), x_adv[index].to(x.dtype), x[index])
    return PoisonedSet(x=xs, y=y[index].clone(), attacked=mask, index=index)


def training_set(
    data_dir,
    attacked=None,
    poison: float | None = None,
    *,
    only_successful: bool = False,
    seed: int = 0,
    limit: int | None = None,
    dataset: str = "mnist",
):
    """(x, y) to train a diffusion model on (``ddmini train-diffusion``): the clean training set, or a
    poisoned mix with the attacked set in the file ``attacked`` (an attacked.pt of ``ddmini attack``; p
    defaults to 1); the first ``limit`` images when given."""
    from . import data
    from .attacks.stage import AttackedSet

    x, y = data.load(data_dir, "train", dataset)
    if attacked:
        adv = AttackedSet.load(attacked)
        if len(adv) != x.shape[0]:
            x, y = x[: len(adv)], y[: len(adv)]
        ps = poisoned_set((x, y), adv, 1.0 if poison is None else poison, seed=seed, only_successful=only_successful)
        x, y = ps.x, ps.y
    elif poison is not None:
        raise ValueError("--poison needs --attacked (an attacked.pt from `ddmini attack`)")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1; got {limit}")
        x, y = x[:limit], y[:limit]
    return x, y
