"""The command line's options, generated from the config dataclasses' knobs (ddmini.config.knob), and the
options every command shares. A knob's option carries its help text and choices; its default is None
(unset: the preset's value), so no default is written twice. :func:`overrides` turns the parsed values
back into the dotted names that :func:`ddmini.config.apply_overrides` sets."""

from __future__ import annotations

import click

from .config import (
    DATASET_SHAPES,
    HARDEN_ARMS,
    UNET_PRESETS,
    AttackConfig,
    ClassifierConfig,
    DiffusionTrainConfig,
    HardenConfig,
    RunConfig,
    SampleConfig,
    knobs,
    parse_floats,
)
from .presets import PRESETS
from .runtime import DEVICE_CHOICES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
PRESET_DEFAULT = (
    "[default: paper on a GPU (cifar10 for CIFAR-10); on a CPU without native bf16 cpu-hour; with native "
    "bf16, run and sweep time the cpu preset's step once per run dir and take cpu where its 12,000 steps fit "
    "48 min, else cpu-hour; other commands take cpu]"
)


def data_dir_option(f):
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Folder holding the dataset's files [default: $DDMINI_DATA (MNIST), $DDMINI_DATA_ROOT/<dataset>, "
        "else the user cache (`ddmini data where`), downloaded there on first use].",
    )(f)


def no_download_option(f):
    return click.option(
        "--no-download",
        is_flag=True,
        default=False,
        help="Never download: a missing dataset is an error naming the folder to fill (also DDMINI_OFFLINE=1).",
    )(f)


def dataset_option(f):
    return click.option(
        "--dataset",
        type=click.Choice([*DATASET_SHAPES, "folder"]),
        default="mnist",
        show_default=True,
        help="Which dataset (folder: your own images, --data-dir DIR with DIR/<class>/*.png).",
    )(f)


def device_option(f):
    return click.option(
        "--device",
        type=click.Choice(DEVICE_CHOICES),
        default="auto",
        show_default=True,
        help="Where to compute: auto picks cuda when a GPU is present.",
    )(f)


def seed_option(f):
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(f)


def run_dir_option(f):
    # no file_okay=False: checkpoint.writable_dir says what is wrong, and under torchrun on every rank together
    return click.option(
        "--run-dir",
        type=click.Path(),
        default="runs",
        show_default=True,
        help="Folder for outputs: cached stages in RUN_DIR/cache, reports in RUN_DIR/<run>/.",
    )(f)


def preset_option(f, help: str = "Take unset options from this preset (smoke: seconds; docs/presets.md)."):
    return click.option("--preset", type=click.Choice(PRESETS), default=None, help=f"{help} {PRESET_DEFAULT}")(f)


def given_classifier_option(f):
    help_ = (
        "The target: your classifier (a torch.export .pt2 program or TorchScript file taking [N, C, H, W] "
        "floats in [0, 1] and returning logits, or a ddmini checkpoint) [default: the classifier stage's]."
    )
    return opt("--classifier", "given", type=click.Path(exists=True, dir_okay=False), help=help_)(f)


def png_dir_option(f):
    help_ = "Also write the samples as an image folder: DIR/<class>/<index>.png and DIR/manifest.csv."
    return opt("--png-dir", type=click.Path(file_okay=False), help=help_)(f)


def stack(*decorators):
    """One decorator applying ``decorators`` so that their options appear in the order given."""

    def deco(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return deco


#: The options every stage command shares: data and run folders, device, seed, preset and dataset.
stage_options = stack(
    data_dir_option, no_download_option, run_dir_option, device_option, seed_option, preset_option, dataset_option
)


def _parse_list(ctx, param, value):
    return None if value is None else parse_floats(value, param.opts[0])


def _knob_option(f, flags: tuple[str, ...], dest: str):
    default, meta = f.default, f.metadata
    help_ = f"{meta['help']} [preset]"
    if isinstance(default, bool):
        off = meta.get("off_flag") or f"--no-{flags[0][2:]}"
        return click.option(f"{flags[0]}/{off}", dest, default=None, help=help_)
    if isinstance(default, tuple):  # parsed here, so every command receives the list (a bad one: ValueError)
        return click.option(*flags, dest, default=None, metavar="A,B,..", help=help_, callback=_parse_list)
    if meta.get("choices"):
        return click.option(*flags, dest, type=click.Choice(meta["choices"]), default=None, help=help_)
    if isinstance(default, str):  # free-form, checked by the config (the attack's target: shift, random or K)
        return click.option(*flags, dest, default=None, metavar="MODE", help=help_)
    return click.option(*flags, dest, type=float if default is None else type(default), default=None, help=help_)


def knob_options(cls, section: str | None = None, exclude: tuple[str, ...] = ()):
    """Decorator: one option per knob of config class ``cls`` (--SECTION-KNOB, or --KNOB without a section);
    values land in keyword arguments SECTION__KNOB (cfg__KNOB without a section)."""

    def deco(fn):
        for f in reversed(knobs(cls)):
            if f.name in exclude:
                continue
            flag = "--" + (f"{section}-" if section else "") + f.name.replace("_", "-")
            flags = (flag, "--attack") if (section, f.name) == ("attack", "attack") else (flag,)
            fn = _knob_option(f, flags, f"{section or 'cfg'}__{f.name}")(fn)
        return fn

    return deco


def overrides(kw: dict, section: str = "cfg", prefix: str = "") -> dict:
    """The knob values given in ``kw`` for ``section``, named ``prefix + knob``."""
    out = {}
    for k, v in kw.items():
        if v is None or not k.startswith(section + "__"):
            continue
        name = k.split("__", 1)[1]
        out[prefix + name] = v
    return out


def run_overrides(kw: dict) -> dict:
    """Every knob given to ``run`` or ``sweep``, by its dotted name (ddmini.config.apply_overrides)."""
    out = overrides(kw, "cfg")
    for section in RunConfig.SECTIONS:
        out.update(overrides(kw, section, section + "."))
    return out


def _section_options(fn):
    base = RunConfig()
    for section in reversed(RunConfig.SECTIONS):
        fn = knob_options(type(getattr(base, section)), section)(fn)
    return fn


#: ``run`` and ``sweep``: the run's own knobs (but p and the dataset), then one option per knob of every
#: stage (--attack-eps, --train-steps, ...; --attack is --attack-attack).
run_options = stack(
    preset_option,
    click.option("--overwrite", is_flag=True, help="Replace a report folder that holds a run of other settings."),
    png_dir_option,
    given_classifier_option,
    knob_options(RunConfig, exclude=("poison", "dataset")),
    data_dir_option,
    no_download_option,
    dataset_option,
    run_dir_option,
    device_option,
    seed_option,
    _section_options,
)
FILE_IN = click.Path(dir_okay=False, exists=True)
FILE_OUT = click.Path(dir_okay=False)


def opt(*decl, help: str, **kw):
    """A click option with its help text last (the command option sets below read as a table)."""
    return click.option(*decl, help=help, **kw)


def samples_option(help: str):
    return opt("--samples", "samples_paths", multiple=True, metavar="[NAME=]PATH", help=help)


def limit_of(limit: int | None, default: int | None = None) -> int | None:
    """A --limit given (>= 1), else ``default`` (0 or None: no limit)."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1; got {limit}")
    return limit if limit is not None else (default or None)


def limit_option(help: str, default: int | None = None):
    return opt("--limit", type=int, default=default, show_default=default is not None, help=help)


#: ``ddmini train-classifier``
train_classifier_options = stack(
    stage_options,
    knob_options(ClassifierConfig, exclude=("seed",)),
    limit_option("Train on the first N training images only. [preset]"),
    opt("--out", type=FILE_OUT, help="Checkpoint written [default: RUN_DIR/classifier.pt]."),
)

#: ``ddmini attack``
attack_options = stack(
    stage_options,
    knob_options(AttackConfig, exclude=("eps", "seed")),
    opt("--eps", help="Attack radius; a list (1.0,1.5,2.0) runs an eps sweep. [preset]"),
    opt("--split", type=click.Choice(["train", "test"]), default="train", show_default=True, help="Which images."),
    limit_option("Attack the first N images only. [preset's data limit]"),
    opt("--classifier", "classifier_path", type=FILE_OUT,
        help="Target classifier checkpoint [default: the preset's classifier stage, trained if not cached]."),
    opt("--out", type=click.Path(file_okay=False),
        help="Output folder [default: RUN_DIR/cache/attack-<key>, where `ddmini run` finds it]."),
)  # fmt: skip

#: ``ddmini train-diffusion``
train_diffusion_options = stack(
    stage_options,
    opt("--unet", "unet_preset", type=click.Choice(list(UNET_PRESETS)),
        help="U-Net size. [preset: small for cpu, paper for paper, tiny for smoke]"),
    knob_options(DiffusionTrainConfig, exclude=("seed",)),
    opt("--attacked", type=FILE_IN, help="attacked.pt from `ddmini attack`: train on attacked images (their labels)."),
    opt("--poison", type=float, help="With --attacked: fraction of images replaced by their attacked versions [1]."),
    opt("--only-successful", is_flag=True, help="With --attacked: leave out images whose attack failed."),
    limit_option("Train on the first N images only. [preset's data limit]"),
    opt("--out", type=FILE_OUT, help="Checkpoint written [default: RUN_DIR/diffusion.pt]."),
    opt("--resume/--no-resume", default=True, show_default=True, help="Continue from the checkpoint at --out."),
)  # fmt: skip


#: ``ddmini sample``
sample_options = stack(
    device_option,
    opt("--checkpoint", "ckpt", type=click.Path(exists=True), required=True,
        help="A diffusion checkpoint, or a folder of `ddmini export`."),
    opt("-n", "--num", type=int, default=100, show_default=True, help="Number of images."),
    opt("--labels", help="Comma-separated labels (repeated to --num) [default: balanced]."),
    opt("--preset", type=click.Choice(PRESETS), help="Take unset options from this preset's sampling (guidance 1, "
        "as the study reports) [default: the sampling defaults: DDIM-100 at guidance 2]."),
    knob_options(SampleConfig, exclude=("seed",)),
    seed_option,
    opt("--classifier", "classifier_path", type=click.Path(exists=True),
        help="A classifier checkpoint (or an export folder): also report the share it labels as their "
        "conditioning class, and its predictions in --png-dir's manifest."),
    opt("--out", type=FILE_OUT, default="samples.pt", show_default=True,
        help="Tensor file written (images in [0, 1], labels); a grid PNG is written beside it."),
    png_dir_option,
)  # fmt: skip

#: ``ddmini export``
export_options = stack(
    click.argument("report_dir", type=click.Path(exists=True, file_okay=False)),
    opt("--format", "fmt", type=click.Choice(["safetensors"]), default="safetensors", show_default=True,
        help="Weights format."),
    opt("--out", type=click.Path(file_okay=False), required=True, help="Folder to write."),
)  # fmt: skip

#: ``ddmini compare``
compare_options = stack(
    click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True)),
    opt("--out", "out_path", type=FILE_OUT, help="Also write the table to this markdown file."),
)

#: ``ddmini transfer``
transfer_options = stack(
    stage_options,
    given_classifier_option,
    samples_option("A samples file from `ddmini sample` or a run's cache (repeatable), e.g. p1=S1.pt."),
    opt("--autoattack-limit", type=click.IntRange(0),
        help="Also each classifier's AutoAttack accuracy (L-inf and L2, `ddmini robust`) on this many test images "
        "(0: none) [the preset's harden autoattack_limit: 1,000; smoke 10]."),
)  # fmt: skip

#: ``ddmini purify``
purify_options = stack(
    stage_options,
    opt("--checkpoint", "ckpt", type=FILE_IN, required=True,
        help="The purifier: a clean (p = 0) diffusion model of this dataset."),
    opt("--t-star", "t_stars", help="Comma-separated timesteps to noise the inputs to [default: 50,100,200,300 "
        "for a model of 1,000 timesteps, scaled to the model's T]."),
    opt("--steps", type=int, help="DDIM steps back from t* to 0 [default: 20, at most the smallest t* + 1]."),
    limit_option("Test images (clean and PGD-L2-attacked) and samples per source to purify.", 1000),
    samples_option("Deceptive samples to purify (their conditioning labels are the ground truth); repeatable."),
    opt("--adaptive", is_flag=True, help="Also attack the purified target adaptively (BPDA and full gradients "
        "through the chain, EOT; worst of --attempts purifications) on the --limit clean test images."),
    opt("--norm", type=click.Choice(["linf", "l2"]), default="l2", show_default=True, help="--adaptive: threat model."),
    opt("--eps", type=float, help="--adaptive: its radius [MNIST: 0.3 (linf), 1.5 (l2)]."),
    opt("--attack-steps", type=click.IntRange(1), default=100, show_default=True, help="--adaptive: APGD iterations."),
    opt("--eot", type=click.IntRange(1), default=20, show_default=True,
        help="--adaptive: purifications each gradient is averaged over."),
    opt("--attempts", type=click.IntRange(1), default=10, show_default=True,
        help="--adaptive: purifications of each attacked image; it stands only if all classify it right."),
)  # fmt: skip

#: ``ddmini robust``
robust_options = stack(
    stage_options,
    given_classifier_option,
    opt("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True, help="The threat model."),
    opt("--eps", type=float, help="Its radius [MNIST: 0.3 (linf), 1.5 (l2); Fashion-MNIST 0.1, 1.5; CIFAR-10 8/255, "
        "0.5]."),
    opt("--version", type=click.Choice(["standard", "rand"]), default="standard", show_default=True,
        help="standard: APGD-CE, APGD-T, FAB-T, Square; rand (a model with random outputs): APGD-CE and APGD-DLR "
        "with 20-draw EOT."),
    limit_option("Test images attacked.", 1000),
)  # fmt: skip

#: ``ddmini harden``
harden_options = stack(
    stage_options,
    opt("--checkpoint", "ckpt", type=FILE_IN, required=True,
        help="The deceptive (p = 1) diffusion model whose samples join the training set."),
    opt("--arms", default=",".join(HARDEN_ARMS), show_default=True,
        help="Comma-separated arms: clean (the target), pgd (PGD-L2 adversarial training at the attack's eps), "
        "deceptive (clean images plus the deceptive pool), pgd+deceptive, deceptive-fresh (a fresh pool every "
        "epoch)."),
    knob_options(HardenConfig, exclude=("seed",)),
)  # fmt: skip

#: ``ddmini evaluate``
evaluate_options = stack(
    data_dir_option,
    dataset_option,
    opt("--samples", "samples_path", type=FILE_IN, required=True, help="A samples file from `ddmini sample`."),
    opt("--classifier", "classifier_path", type=FILE_IN, required=True, help="The classifier checkpoint."),
    opt("--attacked", type=FILE_IN, help="attacked.pt: also compare with the attacked set."),
    opt("--out", type=FILE_OUT, help="Also write the figures to this JSON file."),
)

#: ``ddmini data download``
data_download_options = stack(
    click.argument("dest", type=click.Path(file_okay=False), required=False),
    dataset_option,
    opt("--mirror", "mirrors", multiple=True, metavar="URL",
        help="Base URL to fetch from (repeatable, tried in order) [default: $DDMINI_MIRRORS, else the dataset's]."),
    opt("--timeout", type=click.FloatRange(0, 3600, min_open=True), default=30.0, show_default=True,
        help="Seconds per connection."),
)  # fmt: skip

#: ``ddmini run``'s p
run_poison_option = opt("--poison", type=float, default=0.3, show_default=True,
                        help="Fraction p of training images replaced by their attacked versions.")  # fmt: skip
