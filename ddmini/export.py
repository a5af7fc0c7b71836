"""A run's models in the ecosystem's format (``ddmini export``): the classifier's and the diffusion model's
(EMA) weights as ``.safetensors`` plus one JSON config (architectures, training config, dataset, class names,
cache keys, each file's sha256), which ``ddmini sample --checkpoint DIR`` loads back. Loading reads tensors
and JSON only, never a pickle. ddmini's own checkpoints stay torch files: they also hold optimiser and RNG
state for exact resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from . import checkpoint, classifier, data, train
from .config import ClassifierConfig, DiffusionTrainConfig, UNetConfig, from_dict, to_dict
from .unet import UNet

FORMAT = "ddmini-safetensors/1"
CONFIG = "config.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _save_tensors(state: dict, path: Path) -> str:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    tmp.replace(path)
    return _sha256(path)


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
    clf, ccfg, metrics = classifier.load(paths["classifier"])
    model, tcfg, ckpt = train.load_ema(paths["diffusion"])
    out.mkdir(parents=True, exist_ok=True)
    shape = tuple(checkpoint.load(paths["classifier"]).get("image_shape", (1, 28, 28)))
    cfg = {
        "format": FORMAT,
        "dataset": dataset,
        "class_names": list(data.get(dataset).class_names),
        "run": report["config"],
        "classifier": {"file": "classifier.safetensors", "config": to_dict(ccfg), "image_shape": list(shape),
                       "test_accuracy": metrics.get("test_accuracy"),
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
        path = folder / entry["file"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{folder}: not a folder of `ddmini export` (no {CONFIG} naming a {part})") from None
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{folder / CONFIG}: format {cfg.get('format')!r}, not {FORMAT}")
    if not path.is_file() or _sha256(path) != entry.get("sha256"):
        raise ValueError(f"{path}: missing, or its sha256 differs from the one in {CONFIG}")
    return {**entry, "dataset": cfg.get("dataset", "mnist")}, load_file(str(path))


def load_diffusion(folder: str | Path, device="cpu") -> tuple[UNet, DiffusionTrainConfig, dict]:
    """The exported diffusion model (eval mode), its training config and {"extra": {"dataset": ...}} (as
    :func:`ddmini.train.load_ema` returns them)."""
    entry, state = _read(Path(folder), "diffusion")
    model = checkpoint.load_weights(UNet(from_dict(UNetConfig, entry["unet"]).validate()), state, folder)
    tcfg = from_dict(DiffusionTrainConfig, entry["train"])
    return model.to(device).eval(), tcfg, {"step": entry.get("step"), "extra": {"dataset": entry["dataset"]}}


def load_classifier(folder: str | Path, device="cpu") -> torch.nn.Module:
    """The exported classifier (eval mode)."""
    entry, state = _read(Path(folder), "classifier")
    cfg = from_dict(ClassifierConfig, entry["config"]).validate()
    model = checkpoint.load_weights(classifier.build(cfg, tuple(entry["image_shape"])), state, folder)
    return model.to(device).eval()
