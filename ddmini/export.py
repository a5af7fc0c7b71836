"""A run's models in the ecosystem's format (``ddmini export``): the classifier's and the diffusion model's
(EMA) weights as ``.safetensors`` plus one JSON config (architectures, training config, dataset, class names,
cache keys, each file's sha256), which ``ddmini sample --checkpoint DIR`` loads back. Loading reads tensors
and JSON only, never a pickle. ddmini's own checkpoints stay torch files: they also hold optimiser and RNG
state for exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import checkpoint, classifier, data, train
from .config import ClassifierConfig, DiffusionTrainConfig, UNetConfig, from_dict, to_dict
from .unet import UNet

FORMAT = "ddmini-safetensors/1"
CONFIG = "config.json"


def _save_tensors(state: dict, path: Path) -> str:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    tmp.replace(path)
    return checkpoint.file_digest(path)


def export_run(report_dir: str | Path, out: str | Path) -> Path:
    """Write the classifier and diffusion model of the run whose report folder is ``report_dir`` (its
    report.json names them) into ``out``: classifier.safetensors, diffusion.safetensors, config.json."""
    report_dir, out = Path(report_dir), Path(out)
    try:
        report = json.loads((report_dir / "report.json").read_text())
        paths = {k: Path(report["artefacts"][k]) for k in ("classifier", "diffusion")}
        dataset = report["config"]["dataset"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"{report_dir}: not a report folder of `ddmini run` (no report.json naming its models)"
        ) from None
    model, tcfg, ckpt = train.load_ema(paths["diffusion"])
    try:
        clf, ccfg, metrics = classifier.load(paths["classifier"])
    except ValueError as e:  # the run's target was given (--classifier FILE): that file is already portable
        if "not a ddmini checkpoint" not in str(e):
            raise
        clf = None
    out.mkdir(parents=True, exist_ok=True)
    shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
    cfg = {
        "format": FORMAT,
        "dataset": dataset,
        "class_names": report.get("class_names") or data.class_names(dataset, model.cfg.num_classes),
        "run": report["config"],
        "classifier": None if clf is None else {"file": "classifier.safetensors", "config": to_dict(ccfg),
            "image_shape": list(shape), "num_classes": clf.num_classes, "test_accuracy": metrics.get("test_accuracy"),
            "cache_key": checkpoint.file_digest(paths["classifier"])[:16],
            "sha256": _save_tensors(clf.state_dict(), out / "classifier.safetensors")},
        "diffusion": {"file": "diffusion.safetensors", "unet": to_dict(model.cfg), "train": to_dict(tcfg),
                      "step": int(ckpt["step"]), "cache_key": checkpoint.file_digest(paths["diffusion"])[:16],
                      "sha256": _save_tensors(model.state_dict(), out / "diffusion.safetensors")},
    }  # fmt: skip
    with checkpoint.atomic_open(out / CONFIG, "w") as f:
        f.write(json.dumps(cfg, indent=2) + "\n")
    return out / CONFIG


def _read(folder: Path, part: str) -> tuple[dict, dict]:
    """(the part's config, its tensors), its file's sha256 checked against the config's."""
    from safetensors.torch import load_file

    try:
        cfg = json.loads((folder / CONFIG).read_text())
        entry = cfg[part]
        if entry is None:
            raise ValueError(f"{folder}: this export holds no {part} (the run's was given as a file)")
        path = folder / entry["file"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{folder}: not a folder of `ddmini export` (no {CONFIG} naming a {part})") from None
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{folder / CONFIG}: format {cfg.get('format')!r}, not {FORMAT}")
    if not path.is_file() or checkpoint.file_digest(path) != entry.get("sha256"):
        raise ValueError(f"{path}: missing, or its sha256 differs from the one in {CONFIG}")
    return {**entry, "dataset": cfg.get("dataset", "mnist"), "class_names": cfg.get("class_names")}, load_file(
        str(path)
    )


def load_diffusion(folder: str | Path, device="cpu") -> tuple[UNet, DiffusionTrainConfig, dict]:
    """The exported diffusion model (eval mode), its training config and {"extra": {"dataset": ...}} (as
    :func:`ddmini.train.load_ema` returns them)."""
    entry, state = _read(Path(folder), "diffusion")
    model = checkpoint.load_weights(UNet(from_dict(UNetConfig, entry["unet"]).validate()), state, folder)
    tcfg = from_dict(DiffusionTrainConfig, entry["train"])
    state = {"step": entry.get("step"), "extra": {"dataset": entry["dataset"]}, "class_names": entry["class_names"]}
    return model.to(device).eval(), tcfg, state


def load_classifier(folder: str | Path, device="cpu") -> torch.nn.Module:
    """The exported classifier (eval mode)."""
    entry, state = _read(Path(folder), "classifier")
    cfg = from_dict(ClassifierConfig, entry["config"]).validate()
    shape, k = tuple(entry["image_shape"]), int(entry.get("num_classes", 10))
    model = checkpoint.load_weights(classifier.build(cfg, shape, k), state, folder)
    return model.to(device).eval()
