"""The ``ddmini`` command line (Click). Thin: parse options, call the library, print results.

Errors from bad input (ValueError, TypeError, OSError) become one line on stderr and exit code 1;
set DDMINI_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

from dataclasses import fields
import os
import sys
from pathlib import Path

import click

from . import __version__
from .config import (PRESETS, UNET_PRESETS, AttackConfig, ClassifierConfig, DiffusionTrainConfig,
                     HARDEN_ARMS, HardenConfig, SampleConfig, to_dict)
from .runtime import DEVICE_CHOICES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# --------------------------------------------------------------------------------------------
# shared options
# --------------------------------------------------------------------------------------------
def data_dir_option(f):
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help="Directory holding the dataset's files [default: $DDMINI_DATA for MNIST, else "
                             "$DDMINI_DATA_ROOT/<dataset>].")(f)


def dataset_option(f):
    from .config import DATASET_SHAPES

    return click.option("--dataset", type=click.Choice(list(DATASET_SHAPES)), default="mnist", show_default=True,
                        help="Which dataset (ddmini.data.DATASETS: files, checksums, mirrors, image shape).")(f)


def device_option(f):
    return click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
                        help="Where to compute: auto picks cuda when a GPU is present.")(f)


def seed_option(f):
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(f)


def run_dir_option(f):
    # no file_okay=False: _writable_dir says what is wrong, and under torchrun on every rank together
    return click.option("--run-dir", type=click.Path(), default="runs", show_default=True,
                        help="Directory for outputs (checkpoints, reports).")(f)


def _writable_dir(path: str) -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OSError(f"{p}: is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"{p}: cannot create run directory ({e.strerror})") from None
    if not os.access(p, os.W_OK):
        raise OSError(f"{p}: run directory is not writable")
    return p


def _field_option(cls, name: str, flags: tuple[str, ...], dest: str):
    """The click option of config field ``cls.name``: its type from the default, click.Choice for named
    choices, the field's help text; default None (unset: the preset's or the config's value)."""
    from .config import CHOICES

    default = getattr(cls(), name)
    help_ = f"{cls.HELP.get(name, '')} [preset]".strip()
    if isinstance(default, bool):
        return click.option(f"{flags[0]}/--no-{flags[0][2:]}", dest, default=None, help=help_)
    if isinstance(default, tuple):
        return click.option(*flags, dest, type=str, default=None, metavar="A,B,..", help=help_)
    if name in CHOICES:
        return click.option(*flags, dest, type=click.Choice(CHOICES[name]), default=None, help=help_)
    return click.option(*flags, dest, type=float if default is None else type(default), default=None, help=help_)


def config_options(cls, section: str | None = None, exclude: tuple[str, ...] = ()):
    """Decorator: one option per field of the config dataclass ``cls`` (--SECTION-FIELD, or --FIELD without
    a section; fields that the data decide, ``cls.DERIVED``, are not options). Values land in keyword
    arguments named SECTION__FIELD (cfg__FIELD without a section); :func:`_apply` sets them on a config."""
    def deco(f):
        for fld in reversed(fields(cls)):
            if fld.name in exclude or fld.name in getattr(cls, "DERIVED", ()):
                continue
            flag = "--" + (f"{section}-" if section else "") + fld.name.replace("_", "-")
            flags = (flag, "--attack") if (section, fld.name) == ("attack", "attack") else (flag,)
            f = _field_option(cls, fld.name, flags, f"{section or 'cfg'}__{fld.name}")(f)
        return f
    return deco


def _apply(cfg, kw: dict, section: str = "cfg"):
    """Set the options given for ``section`` on the config object ``cfg`` (lists parsed; the config's
    own check refuses what does not fit). Returns cfg."""
    for k, v in kw.items():
        if v is None or not k.startswith(section + "__"):
            continue
        name = k.split("__", 1)[1]
        if isinstance(getattr(cfg, name), tuple):
            flag = f"--{'' if section == 'cfg' else section + '-'}{name.replace('_', '-')}"
            v = tuple(_float_list(v, flag))
        setattr(cfg, name, v)
    given = {k.split("__", 1)[1] for k, v in kw.items() if v is not None and k.startswith(section + "__")}
    if "steps" in given and "fit_minutes" not in given and getattr(cfg, "fit_minutes", 0):
        cfg.fit_minutes = 0.0  # steps given are trained as given: a preset's fit (cpu-hour) gives way
    return cfg


def preset_option(f):
    return click.option("--preset", type=click.Choice(PRESETS), default=None,
                        help="Take unset options from this preset (smoke: seconds). [default: cpu (cpu-hour on a "
                             "CPU without native bf16), or paper on a GPU]")(f)


def stage_options(f):
    """The options every stage command shares: data and run folders, device, seed, preset and dataset."""
    for opt in reversed([data_dir_option, run_dir_option, device_option, seed_option, preset_option, dataset_option]):
        f = opt(f)
    return f


def default_preset(dev, dataset: str = "mnist", run_dir=None) -> str:
    """The preset a command uses when none is given (``choose_preset``'s name)."""
    return choose_preset(dev, dataset, run_dir)[0]


def choose_preset(dev, dataset: str = "mnist", run_dir=None) -> tuple[str, str]:
    """The preset a command uses when none is given, and why: the GPU presets on a GPU; on a CPU without
    native bf16 cpu-hour (the cpu preset's float32 steps would take ~1.5-2.5 h). Where bf16 is native the
    cpu preset's step decides (with ``run_dir``, outside torchrun): the cpu preset where its 12,000 steps
    fit cpu-hour's 48 minutes of training here (≈ 36 min on the 2-core Zen 5 measured), else cpu-hour (a
    2-core Intel Xeon with AMX-BF16: ≈ 75 min; docs/experiments.md). The timing is the fit stage's
    (ddmini.fit), cached in RUN_DIR/cache, so the same run directory on the same machine chooses the same.
    Without ``run_dir`` (every command but run and sweep, the main job) or under torchrun, native bf16 means
    the cpu preset."""
    from . import distributed
    from .runtime import cpu_has_native_bf16

    if dev.type == "cuda":
        return ("cifar10" if dataset == "cifar10" else "paper"), ""
    if not cpu_has_native_bf16():
        return "cpu-hour", "the default on a CPU without native bf16; --preset cpu for the 12,000-step recipe"
    if run_dir is None or distributed.launched():
        return "cpu", ""
    from dataclasses import replace

    from . import fit
    from .config import preset

    cpu = preset("cpu")
    cpu.dataset = dataset
    cpu.validate()  # the U-Net's shape from the dataset
    budget = preset("cpu-hour").train.fit_minutes
    t = replace(cpu.train, fit_minutes=budget)
    rec = fit.fitted(cpu.unet, t, dev, _writable_dir(run_dir) / "cache", on_measure=lambda: click.echo(
        "default preset: timing the cpu preset's training step here (once per run directory)"))
    minutes = cpu.train.steps * rec.seconds_per_step / 60
    said = (f"the cpu preset's {cpu.train.steps:,} steps take ≈ {minutes:.0f} min here at "
            f"{rec.seconds_per_step:.3f} s/step")
    if rec.steps >= cpu.train.steps:
        return "cpu", f"the default here: {said}, within {budget:g}"
    return "cpu-hour", f"the default here: {said}, more than {budget:g}; --preset cpu for them"


def _run_preset(name, dev, dataset: str = "mnist", run_dir=None):
    """The preset ``name`` (or the default, ``choose_preset``) for ``dataset``: (config, name, why the
    default was chosen: "" when a preset was given)."""
    from .config import DATASET_CLASSIFIER_ARCH, DATASET_PGD_EPS, preset

    why = ""
    if not name:
        name, why = choose_preset(dev, dataset, run_dir)
    cfg = preset(name)
    if name == "cifar10" and dataset != "cifar10":
        raise ValueError(f"--preset cifar10 is made for --dataset cifar10; got --dataset {dataset}")
    cfg.dataset = dataset
    if cfg.attack.attack == "pgd_l2" and dataset in DATASET_PGD_EPS:
        cfg.attack.eps = DATASET_PGD_EPS[dataset]
    cfg.classifier.arch = DATASET_CLASSIFIER_ARCH.get(dataset, cfg.classifier.arch)
    return cfg, name, why


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------
#: The commands that share their work out over the ranks under torchrun (ddmini.distributed).
DISTRIBUTED = ("run", "sweep", "train-diffusion", "attack", "sample")


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="ddmini")
@click.pass_context
def cli(ctx):
    """ddmini: Deceptive Diffusion (arXiv 2406.19807), small and fast.

    Attack a classifier's training set, train a class-conditional diffusion model on the attacked
    images, and sample new images the classifier gets wrong. Under torchrun, run, sweep,
    train-diffusion, attack and sample share their work out over the processes.
    """
    from .distributed import launched

    if launched() and ctx.invoked_subcommand not in DISTRIBUTED:
        raise click.UsageError(f"`ddmini {ctx.invoked_subcommand}` runs in one process; start it without "
                               f"torchrun (these run under it: {', '.join(DISTRIBUTED)})")


def _join(dev, settings: dict, run_dirs=()):
    """Under torchrun: join the process group, check that every rank was launched with the same
    ``settings`` and can write ``run_dirs`` (one line naming the difference or the rank, on every rank);
    returns (world, this rank's device, echo: click.echo on rank 0, silent elsewhere)."""
    from . import distributed

    world = distributed.init(dev)
    dev = distributed.device_for(dev, world)
    distributed.check_same_config(world, {**settings, "run_dirs": [str(d) for d in run_dirs]})
    if world.distributed:  # one process checks its outputs itself, as each command does
        err = None
        try:
            for d in run_dirs:
                _writable_dir(d)
        except OSError as e:
            err = str(e)
        world.agree(err)
    return world, dev, (click.echo if world.is_main else (lambda *a, **k: None))


@cli.group(context_settings=CONTEXT)
def data():
    """Check or download a dataset's files (MNIST, Fashion-MNIST, CIFAR-10)."""


@data.command("check", context_settings=CONTEXT)
@data_dir_option
@dataset_option
@click.option("--verify/--no-verify", default=False, help="Also check the content sha256 of every file.")
def data_check(data_dir, dataset, verify):
    """Validate a dataset's files and print what was found."""
    from . import data as ddata

    spec = ddata.get(dataset)
    root = ddata.resolve_data_dir(data_dir, dataset)
    counts = ddata.check(root, verify=verify, dataset=dataset)
    c, h, w = spec.shape
    click.echo(f"{'MNIST' if dataset == 'mnist' else dataset} in {root}: {counts['train']} train / {counts['test']} "
               f"test images, {h}x{w}{'' if c == 1 else f'x{c}'}, {spec.num_classes} classes"
               + (", checksums ok" if verify else ""))


@data.command("download", context_settings=CONTEXT)
@click.argument("dest", type=click.Path(file_okay=False))
@dataset_option
@click.option("--mirror", "mirrors", multiple=True, metavar="URL",
              help="Base URL to fetch from (repeatable, tried in order). Default: the dataset's usual mirrors.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per connection.")
def data_download(dest, dataset, mirrors, timeout):
    """Download a dataset's files into DEST, verify checksums, skip files already good."""
    from . import data as ddata
    from .runtime import progress

    with progress(desc="download", unit="B", total=None) as bar:
        ddata.download(dest, mirrors or None, timeout=timeout, log=lambda m: bar.write(m), on_bytes=bar.update,
                       dataset=dataset)
    counts = ddata.check(dest, verify=True, dataset=dataset)
    click.echo(f"{'MNIST' if dataset == 'mnist' else dataset} in {dest}: {counts['train']} train / {counts['test']} "
               "test images, checksums ok")


@cli.command("train-classifier", context_settings=CONTEXT)
@stage_options
@config_options(ClassifierConfig, exclude=("seed",))
@click.option("--limit", type=int, default=None, help="Train on the first N training images only. [preset]")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint path (default: RUN_DIR/classifier.pt).")
def train_classifier(data_dir, run_dir, device, seed, preset, dataset, limit, out, **kw):
    """Train the target classifier on the dataset and print its test accuracy. It is the classifier stage of
    `ddmini run` (cached in RUN_DIR/cache, where `ddmini attack` and the run find it), copied to --out."""
    from . import checkpoint, classifier
    from .pipeline import Pipeline
    from .runtime import resolve_device, seed_everything

    dev = resolve_device(device)
    base, _, _ = _run_preset(preset, dev, dataset)
    base.with_seed(seed)
    _apply(base.classifier, kw)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1; got {limit}")
        base.data_limit = limit
    root = _writable_dir(run_dir)
    out = checkpoint.check_writable(out if out else root / "classifier.pt", "classifier checkpoint")
    seed_everything(seed)
    pipe = Pipeline(base.validate(), root, data_dir, dev, log=lambda m: None)
    model, _, m = pipe.classifier()
    cfg, x = base.classifier, pipe.data()[0]
    n = x.shape[0]
    classifier.save(model, cfg, out, base.dataset, tuple(x.shape[1:]),
                    test_accuracy=m["test_accuracy"], train_seconds=m.get("train_seconds"),
                    train_images=int(n))
    how = "cached" if pipe.stages.cached.get("classifier") else f"after {m.get('train_seconds', 0):.0f} s"
    click.echo(f"test accuracy {100 * m['test_accuracy']:.2f}% {how} ({cfg.epochs} epochs on {n} images, {dev}); "
               f"saved {out}")


def _float_list(text: str, name: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be a number or a comma-separated list of numbers; got {text!r}") from None
    if not values:
        raise ValueError(f"{name}: no values given")
    return values


def _int_list(text: str, name: str) -> list[int]:
    """Comma-separated integers, e.g. --labels 3,5: one clear line for anything else."""
    vals = []
    for v in str(text).split(","):
        if not v.strip():
            continue
        try:
            vals.append(int(v))
        except ValueError:
            raise ValueError(f"{name} must be comma-separated integers; got {text!r}") from None
    if not vals:
        raise ValueError(f"{name}: no values given")
    return vals


def _load_classifier(path, run_dir, dev, dataset="mnist"):
    from . import classifier

    path = Path(path) if path else Path(run_dir) / "classifier.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no classifier checkpoint (train one with `ddmini train-classifier`"
                                " or pass --classifier)")
    model, _, _ = classifier.load(path, dev, dataset)
    return model, path


@cli.command("attack", context_settings=CONTEXT)
@stage_options
@config_options(AttackConfig, exclude=("eps", "seed"))
@click.option("--eps", default=None,
              help="Attack radius; a comma-separated list (1.0,1.5,2.0) runs an eps sweep and prints a table. [preset]")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--limit", type=int, default=None, help="Attack the first N images only. [preset's data limit]")
@click.option("--classifier", "classifier_path", type=click.Path(dir_okay=False), default=None,
              help="Target classifier checkpoint [default: the preset's classifier, cached in RUN_DIR/cache as "
                   "`ddmini run` makes it (trained first if it is not there)].")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory [default: RUN_DIR/cache/attack-<key>, where `ddmini run` finds it].")
def attack(data_dir, run_dir, device, seed, preset, dataset, eps, split, limit, classifier_path, out, **kw):
    """Attack the training (or test) set with the target classifier; store float images, labels,
    success mask and norms. Interrupted runs resume from their finished chunks. It is the attack stage of
    `ddmini run`: with the same preset and options, the run finds this attack cached."""
    from dataclasses import replace

    from . import checkpoint, data as ddata
    from .pipeline import Pipeline
    from .runtime import resolve_device

    dev = resolve_device(device)
    base, _, _ = _run_preset(preset, dev, dataset)
    base.with_seed(seed)
    if kw.get("cfg__attack"):  # a named attack brings its own calibrated strength; given options win
        base.attack = base.attack.with_attack(kw["cfg__attack"])
    acfg = _apply(base.attack, kw)
    eps_list = _float_list(eps, "--eps") if eps is not None else [acfg.eps]
    if out and len(eps_list) > 1:
        raise ValueError("--out names one directory; leave it out for an eps sweep")
    world, dev, echo = _join(dev, {"run": to_dict(base), "attack": to_dict(acfg), "eps": eps_list, "split": split,
                                   "limit": limit, "classifier": classifier_path, "out": out,
                                   "data_dir": data_dir}, [run_dir])
    root = _writable_dir(run_dir)
    pipe = Pipeline(base.validate(), root, data_dir, dev, log=click.echo)
    if classifier_path:
        model, cpath = _load_classifier(classifier_path, run_dir, dev, dataset)
        ckey = checkpoint.file_digest(cpath)[:16]
    else:
        model, ckey, _ = pipe.classifier()
    x, y = ddata.load(data_dir, split, dataset)
    limit = limit if limit is not None else (base.data_limit or None)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1; got {limit}")
        x, y = x[:limit], y[:limit]
    rows = []
    for e in eps_list:
        cfg = replace(acfg, eps=e).validate()
        res, key = pipe.attacked(model, ckey, cfg=cfg, images=(x, y), split=split, out_dir=out)
        s = res.summary()
        rows.append((e, s))
        if not world.is_main:
            continue  # rank 0 reports
        where = Path(out) if out else pipe.attack_dir(key)
        click.echo(f"{cfg.describe()} on {s['images']} {split} images: success {100 * s['success_rate']:.2f}% (8-bit: {100 * s['success_rate_uint8']:.2f}%), "
                   f"L2 mean {s['l2_mean']:.3f} max {s['l2_max']:.3f}, Linf mean {s['linf_mean']:.3f}, "
                   f"{s['images_per_second']:.0f} img/s; saved {where / 'attacked.pt'}")
        m = res.margin(model, x)
        if m["images"]:
            click.echo(f"  with s x its perturbation, still misclassified ({m['images']} successful images): "
                       + ", ".join(f"s={sc:g} {100 * v:.1f}%" for sc, v in zip(m["scales"], m["still_misclassified"])))
    if len(rows) > 1 and world.is_main:
        click.echo("\n| eps | success % | 8-bit success % | mean L2 | mean Linf |\n|---|---|---|---|---|")
        for e, s in rows:
            click.echo(f"| {e:g} | {100 * s['success_rate']:.2f} | {100 * s['success_rate_uint8']:.2f} "
                       f"| {s['l2_mean']:.3f} | {s['linf_mean']:.3f} |")


def _training_set(data_dir, attacked, poison, only_successful, seed, limit, dataset="mnist"):
    """(x, y) to train the diffusion model on: the clean dataset, or a poisoned mix with an attacked set."""
    from . import data as ddata

    x, y = ddata.load(data_dir, "train", dataset)
    if attacked:
        from .attacks.stage import AttackedSet
        from .poison import poisoned_set

        adv = AttackedSet.load(attacked)
        if len(adv) != x.shape[0]:
            x, y = x[:len(adv)], y[:len(adv)]
        ps = poisoned_set((x, y), adv, 1.0 if poison is None else poison, seed=seed, only_successful=only_successful)
        x, y = ps.x, ps.y
    elif poison is not None:
        raise ValueError("--poison needs --attacked (an attacked.pt from `ddmini attack`)")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1; got {limit}")
        x, y = x[:limit], y[:limit]
    return x, y


@cli.command("train-diffusion", context_settings=CONTEXT)
@stage_options
@click.option("--unet", "unet_preset", type=click.Choice(list(UNET_PRESETS)), default=None,
              help="U-Net size. [preset: small for cpu, paper for paper, tiny for smoke]")
@config_options(DiffusionTrainConfig, exclude=("seed",))
@click.option("--attacked", type=click.Path(dir_okay=False, exists=True), default=None,
              help="attacked.pt from `ddmini attack`: train on attacked images (original labels).")
@click.option("--poison", type=float, default=None,
              help="With --attacked: fraction of images replaced by their attacked versions [default: 1].")
@click.option("--only-successful", is_flag=True, help="With --attacked: leave out images whose attack failed.")
@click.option("--limit", type=int, default=None, help="Train on the first N images only. [preset's data limit]")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint [default: RUN_DIR/diffusion.pt].")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the checkpoint at --out if there is one.")
def train_diffusion(data_dir, run_dir, device, seed, preset, dataset, unet_preset, attacked, poison, only_successful,
                    limit, out, resume, **kw):
    """Train the class-conditional diffusion model (EMA weights sample). Ctrl-C saves; --resume continues."""
    from dataclasses import replace

    from . import checkpoint, train, unet
    from .runtime import resolve_device

    dev = resolve_device(device)
    base, _, _ = _run_preset(preset, dev, dataset)
    cfg = _apply(base.train, kw)
    cfg.seed = seed
    cfg.validate()
    world, dev, echo = _join(dev, {"train": to_dict(cfg), "unet": unet_preset, "data_dir": data_dir, "limit": limit,
                                   "attacked": attacked, "poison": poison, "out": out, "dataset": dataset},
                             [run_dir] if not out else [str(Path(out).parent)])
    if unet_preset:
        base.unet = replace(UNET_PRESETS[unet_preset])
    base.validate()  # the U-Net's channels, image size and classes come from the dataset
    mcfg = base.unet
    name = unet_preset or next((k for k, v in UNET_PRESETS.items() if v.base_channels == mcfg.base_channels
                                and v.channel_mult == mcfg.channel_mult), "custom")
    limit = limit if limit is not None else (base.data_limit or None)
    out = checkpoint.check_writable(out if out else _writable_dir(run_dir) / "diffusion.pt", "diffusion checkpoint")
    if cfg.fit_minutes > 0:  # the steps that fit the budget on this machine (cached in RUN_DIR/cache)
        from . import fit

        rec = fit.fitted(mcfg, cfg, dev, Path(run_dir) / "cache")
        cfg = replace(cfg, steps=rec.steps, fused_norm=rec.fused_norm)
        echo(f"fitted to {rec.minutes:g} min here: {rec.seconds_per_step:.3f} s/step -> {rec.steps:,} steps")
        if warning := rec.warning(cfg.batch_size):
            echo(f"warning: {warning}", err=True)
    x, y = _training_set(data_dir, attacked, poison, only_successful, seed, limit, dataset)
    echo(f"U-Net '{name}': {unet.num_parameters(unet.UNet(mcfg)):,} parameters; "
         f"{x.shape[0]} training images; {dev}" + (f"; {world.size} processes" if world.distributed else ""))
    try:
        st = train.train(mcfg, cfg, x, y, out, device=dev, resume=resume, extra={"dataset": dataset})
    except KeyboardInterrupt:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the checkpoint is on disk: a late Ctrl-C changes nothing
        saved = f"checkpoint saved to {out} (run again to resume)" if out.is_file() else "no checkpoint was saved"
        echo(f"interrupted; {saved}", err=True)
        sys.exit(130)
    last = st.losses[-1][1] if st.losses else float("nan")
    echo(f"trained {st.step} steps in {st.seconds:.0f} s ({st.step / max(st.seconds, 1e-9):.2f} steps/s), "
               f"last loss {last:.4f}; saved {out}")


@cli.command("sample", context_settings=CONTEXT)
@device_option
@click.option("--checkpoint", "ckpt", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("-n", "--num", type=int, default=100, show_default=True, help="Number of images.")
@click.option("--labels", default=None, help="Comma-separated labels (repeated to --num) [default: balanced].")
@click.option("--preset", type=click.Choice(PRESETS), default=None,
              help="Take unset options from this preset's sampling (guidance 1, as the study reports) "
                   "[default: the sampling defaults: DDIM-100 at guidance 2].")
@config_options(SampleConfig, exclude=("seed",))
@seed_option
@click.option("--classifier", "classifier_path", type=click.Path(dir_okay=False), default=None,
              help="Also report the share the classifier labels as their conditioning class.")
@click.option("--out", type=click.Path(dir_okay=False), default="samples.pt", show_default=True,
              help="Tensor file (images in [0, 1], labels); a grid PNG is written beside it.")
def sample(device, ckpt, num, labels, preset, seed, classifier_path, out, **kw):
    """Sample images from a trained diffusion model; save a tensor file and an image grid."""
    import torch

    from . import checkpoint, images, samples, train
    from .config import preset as run_preset
    from .diffusion import balanced_labels
    from .runtime import resolve_device

    dev = resolve_device(device)
    scfg = _apply(run_preset(preset).sample if preset else SampleConfig(), kw)
    scfg.seed = seed
    scfg.validate()
    if not 1 <= num <= 10**7:
        raise ValueError(f"--num must be in [1, 10000000]; got {num}")
    out = Path(out)
    png = out.with_suffix(".png")
    if png == out:
        raise ValueError(f"--out {out}: name the tensor file (e.g. samples.pt); the PNG grid is written beside it")
    world, dev, echo = _join(dev, {"sample": to_dict(scfg), "num": num, "labels": labels, "checkpoint": ckpt,
                                   "classifier": classifier_path, "out": str(out)}, [str(out.parent)])
    if world.is_main:
        checkpoint.check_writable(out, "samples file")
    model, tcfg, state = train.load_ema(ckpt, dev)
    k = model.cfg.num_classes
    clf = None
    if classifier_path:
        from . import classifier

        clf, _, _ = classifier.load(classifier_path, dataset=state.get("extra", {}).get("dataset", "mnist"))
    if labels:
        vals = _int_list(labels, "--labels")
        if min(vals) < 0 or max(vals) >= k:
            raise ValueError(f"--labels must be in [0, {k}) for this model; got {labels!r}")
        lab = torch.tensor(vals, dtype=torch.long).repeat((num + len(vals) - 1) // len(vals))[:num]
    else:
        lab = balanced_labels(num, k)
    x, secs = samples.generate(model, tcfg, lab, scfg, device=dev)
    if not world.is_main:
        return  # rank 0 gathered the images
    samples.save(out, x, lab, k, config=to_dict(scfg), seconds=secs)
    images.save_grid(x, png, nrow=min(10, num))
    n_steps = tcfg.T if scfg.sampler == "ddpm" else scfg.steps
    msg = (f"{num} images ({scfg.sampler}, {n_steps} steps, guidance {scfg.guidance:g}) in {secs:.1f} s "
           f"({num / secs:.1f} img/s); saved {out} and {png}")
    if clf is not None:
        from . import classifier

        acc = classifier.accuracy(clf, x, lab)
        msg += f"; classifier agrees with the conditioning label on {100 * acc:.2f}%"
    click.echo(msg)


# --------------------------------------------------------------------------------------------
# the whole experiment
# --------------------------------------------------------------------------------------------
def _stage_options(f):
    """One option per field of every stage's config (--attack-eps, --train-steps, ...; --attack is
    --attack-attack); unset options keep the preset's value. Generated from the dataclasses, so no
    default is written twice."""
    from .config import RunConfig

    base = RunConfig()
    for section in reversed(RunConfig.SECTIONS):
        f = config_options(type(getattr(base, section)), section)(f)
    return f


def _run_options(f):
    for opt in reversed([
        click.option("--preset", type=click.Choice(PRESETS), default=None,
                     help="smoke (seconds), cpu (2 cores), cpu-hour (half the batch, fitted to 48 min of training here, "
                          "stochastic DDIM), paper (GPU), "
                          "paper-short, cifar10 (GPU, unmeasured). "
                          "[default: on a CPU cpu where its bf16 step fits 12,000 steps in 48 min here (timed once "
                          "per run dir), else cpu-hour; paper on a GPU (cifar10 for --dataset cifar10)]"),
        click.option("--only-successful/--all-attacked", default=None,
                     help="Leave out training images whose attack failed (the paper's set). [preset]"),
        click.option("--zoo/--no-zoo", default=None,
                     help="Also score the run's images on the classifier zoo (`ddmini zoo`; trained if not cached): "
                          "a transfer section and transfer.png in the report. [off]"),
        click.option("--data-limit", type=int, default=None, help="Use the first N training images. [preset]"),
        click.option("--test-limit", type=int, default=None, help="Evaluate on the first N test images. [preset]"),
        click.option("--num-samples", type=int, default=None, help="Generated images per guidance scale. [preset]"),
        click.option("--guidance-scales", default=None, metavar="A,B,..",
                     help="Guidance scales to sample and report (1: none). [preset]"),
        data_dir_option, dataset_option, run_dir_option, device_option, seed_option, _stage_options,
    ]):
        f = opt(f)
    return f


def _build_run_config(poison, preset_name, dev, seed, kw, run_dir=None):
    """The run's config, its preset's name and why that preset was the default ("" when given)."""
    cfg, name, why = _run_preset(preset_name, dev, kw.get("dataset") or "mnist", run_dir)
    cfg.with_seed(seed)
    cfg.poison = poison
    for key in ("only_successful", "data_limit", "test_limit", "num_samples", "zoo"):
        if kw.get(key) is not None:
            setattr(cfg, key, kw[key])
    if kw.get("guidance_scales"):
        cfg.guidance_scales = tuple(_float_list(kw["guidance_scales"], "--guidance-scales"))
    if kw.get("attack__attack"):  # a named attack brings its own calibrated strength; given options win
        cfg.attack = cfg.attack.with_attack(kw["attack__attack"])
    for section in cfg.SECTIONS:
        _apply(getattr(cfg, section), kw, section)
    if kw.get("guidance_scales") and kw.get("sample__guidance") is None \
            and cfg.sample.guidance not in cfg.guidance_scales:
        cfg.sample.guidance = cfg.guidance_scales[0]  # only the scales were given: the first is the headline
    return cfg.validate(), name, why


@cli.command("run", context_settings=CONTEXT)
@click.option("--poison", type=float, default=0.3, show_default=True,
              help="Fraction p of training images replaced by their attacked versions.")
@_run_options
def run(poison, data_dir, run_dir, device, seed, preset, **kw):
    """The whole experiment: classifier, attack, poisoned set, diffusion model, samples, evaluation,
    report. Stages are cached in RUN_DIR/cache; the report goes to RUN_DIR/p<POISON>/."""
    from .pipeline import Pipeline
    from .report import summary_lines
    from .runtime import resolve_device, seed_everything

    dev = resolve_device(device)
    cfg, name, why = _build_run_config(poison, preset, dev, seed, kw, run_dir)
    world, dev, echo = _join(dev, {"run": to_dict(cfg), "data_dir": data_dir}, [run_dir])
    root = _writable_dir(run_dir)
    seed_everything(seed)
    procs = f", {world.size} processes" if world.distributed else ""
    why = f" ({why})" if why else ""
    echo(f"ddmini run: preset {name}{why}, p = {cfg.poison:g}, seed {seed}, {dev}{procs}, run dir {root}")
    r = Pipeline(cfg, root, data_dir, dev, log=click.echo).run()
    if r is not None:  # rank 0
        echo("\n" + "\n".join(summary_lines(r)))
        echo(f"report: {root / cfg.folder() / 'report.md'}")


@cli.command("sweep", context_settings=CONTEXT)
@click.option("--poison", default="0,0.25,0.5,0.75,1", show_default=True, help="Comma-separated fractions p.")
@_run_options
def sweep(poison, data_dir, run_dir, device, seed, preset, **kw):
    """Run the experiment for each p (sharing cached stages) and fit misclassification and CAFD
    against p by least squares: table, plot and fit in RUN_DIR/sweep/."""
    from .pipeline import Pipeline
    from .report import write_sweep
    from .runtime import resolve_device, seed_everything

    dev = resolve_device(device)
    ps = _float_list(poison, "--poison")
    world, dev, echo = _join(dev, {"run": [to_dict(_build_run_config(p, preset, dev, seed, kw, run_dir)[0])
                                           for p in ps],
                                   "data_dir": data_dir}, [run_dir])
    root = _writable_dir(run_dir)
    rows = []
    for p in ps:
        cfg, name, why = _build_run_config(p, preset, dev, seed, kw, run_dir)
        seed_everything(seed)
        echo(f"--- p = {p:g} (preset {name}{f'; {why}' if why else ''}) ---")
        rows.append(Pipeline(cfg, root, data_dir, dev, log=click.echo).run())
    if not world.is_main:
        return  # rank 0 fits and writes the sweep
    g = rows[0].headline()[0]
    out = write_sweep(rows, root / cfg.folder("sweep"), g)
    fm = out["fits"]["misclassification"]
    click.echo("\n| p | misclassified | CAFD |\n|---|---|---|")
    for p, m, c in zip(out["poison"], out["misclassification"], out["cafd_clean_test_soft"]):
        click.echo(f"| {p:g} | {100 * m:.2f}% | {c:.2f} |")
    click.echo(f"misclassification = {fm['slope']:.4f} p + {fm['intercept']:.4f} (R^2 = {fm['r2']:.4f}); "
               f"see {root / cfg.folder('sweep') / 'sweep.md'}")


@cli.command("compare", context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the table to this markdown file.")
def compare(runs, out_path):
    """Runs side by side: each RUN (a run's report folder, e.g. runs/p1 and runs/p1-fgsm, or its
    report.json) as a row: dataset, p, attack, its success, size and margin, misclassified samples at
    every guidance scale (± standard error), CAFD and training time."""
    import json

    from .report import compare_table, write_text

    reports = {}
    for run in runs:
        path = Path(run) / "report.json" if Path(run).is_dir() else Path(run)
        try:
            r = json.loads(path.read_text())
            if not isinstance(r, dict) or not {"attack", "generated", "config", "poison"} <= set(r):
                raise ValueError
        except (OSError, ValueError):
            raise ValueError(f"{path}: not a report.json of `ddmini run`") from None
        name = path.parent.name
        reports[name if name not in reports else str(path.parent)] = r
    table = compare_table(reports)
    click.echo(table)
    if out_path:
        write_text(table + "\n", Path(out_path))
        click.echo(f"written: {out_path}")


@cli.command("zoo", context_settings=CONTEXT)
@stage_options
def zoo(data_dir, run_dir, device, seed, preset, dataset):
    """Train (or find cached) the classifier zoo of the transfer study: the target's architecture with two
    other seeds, an MLP, a residual CNN, and the target adversarially trained with PGD-L2 at the attack's eps."""
    from .pipeline import Pipeline
    from .runtime import resolve_device
    from .transfer import zoo_configs

    dev = resolve_device(device)
    base, name, _ = _run_preset(preset, dev, dataset)
    pipe = Pipeline(base.with_seed(seed).validate(), _writable_dir(run_dir), data_dir, dev, log=lambda m: None)
    click.echo(f"| classifier (preset {name}) | architecture | seed | adversarial eps | test accuracy | train s |\n"
               "|---|---|---|---|---|---|")
    for member, cfg in {"target": base.classifier, **zoo_configs(base.classifier, base.attack.eps)}.items():
        _, _, m = pipe.classifier(cfg)
        click.echo(f"| {member} | {cfg.arch} | {cfg.seed} | {cfg.adv_eps:g} | {100 * m['test_accuracy']:.2f}% "
                   f"| {m.get('train_seconds') or 0:.0f} |")


@cli.command("transfer", context_settings=CONTEXT)
@stage_options
@click.option("--samples", "samples_paths", multiple=True, metavar="[NAME=]PATH",
              help="A samples file from `ddmini sample` or a run's cache (repeatable), e.g. p1=S1.pt.")
def transfer(data_dir, run_dir, device, seed, preset, dataset, samples_paths):
    """The transfer matrix: how often the target and every zoo member (`ddmini zoo`, trained here if not
    cached) misclassify generated images, the attacked training images, and fresh PGD-L2 attacks on test
    images made against the target. Writes RUN_DIR/transfer/transfer.md, .json and .png."""
    from . import samples as samples_io
    from . import transfer as tr
    from .pipeline import Pipeline
    from .runtime import resolve_device

    dev = resolve_device(device)
    base, name, _ = _run_preset(preset, dev, dataset)
    root = _writable_dir(run_dir)
    pipe = Pipeline(base.with_seed(seed).validate(), root, data_dir, dev, log=lambda m: None)
    target, ckey, _ = pipe.classifier()
    sources = {}
    for spec in samples_paths:
        label, _, path = spec.rpartition("=")
        s = samples_io.load(path, target.num_classes)
        sources[f"generated: {label or Path(path).stem}"] = (s["images"], s["labels"])
    t = tr.zoo_matrix(pipe, target, ckey, sources)
    tr.write(t, root / "transfer", f"Transfer matrix (preset {name}, attack {base.attack.describe()})")
    click.echo(t.markdown())
    click.echo(f"written: {root / 'transfer' / 'transfer.md'}, transfer.json, transfer.png")


@cli.command("purify", context_settings=CONTEXT)
@stage_options
@click.option("--checkpoint", "ckpt", type=click.Path(dir_okay=False, exists=True), required=True,
              help="The purifier: a clean (p = 0) diffusion model of this dataset.")
@click.option("--t-star", "t_stars", default="50,100,200,300", show_default=True,
              help="Comma-separated timesteps to noise the inputs to.")
@click.option("--steps", type=int, default=20, show_default=True, help="DDIM steps back from t* to 0.")
@click.option("--limit", type=int, default=1000, show_default=True,
              help="Test images (clean and PGD-L2-attacked) and samples per source to purify.")
@click.option("--samples", "samples_paths", multiple=True, metavar="[NAME=]PATH",
              help="Deceptive samples to purify (their conditioning labels are the ground truth); repeatable.")
def purify(data_dir, run_dir, device, seed, preset, dataset, ckpt, t_stars, steps, limit, samples_paths):
    """Diffusion purification with the clean model (DiffPure, non-adaptive): noise each input to t*, run
    DDIM back with the null label, classify. Accuracy of the target on clean test images, on PGD-L2 test
    attacks made against it and on deceptive samples, per t*, and seconds per image: RUN_DIR/purify/."""
    from . import samples as samples_io
    from . import train
    from .diffusion import Diffusion
    from .pipeline import Pipeline
    from .purify import purification_table, write_purification
    from .runtime import resolve_device

    dev = resolve_device(device)
    base, name, _ = _run_preset(preset, dev, dataset)
    if not 1 <= limit <= 10**6:
        raise ValueError(f"--limit must be in [1, 1000000]; got {limit}")
    ts = [int(t) for t in _int_list(t_stars, "--t-star")]
    model, tcfg, _ = train.load_ema(ckpt, dev, dataset)
    diff = Diffusion(schedule_name=tcfg.schedule, T=tcfg.T)
    for t in ts:
        if not 1 <= t < diff.T:
            raise ValueError(f"--t-star values must be in [1, {diff.T}); got {t}")
    if not 1 <= steps <= min(ts) + 1:
        raise ValueError(f"--steps must be in [1, {min(ts) + 1}] (the smallest t* + 1); got {steps}")
    root = _writable_dir(run_dir)
    pipe = Pipeline(base.with_seed(seed).validate(), root, data_dir, dev, log=lambda m: None)
    clf, ckey, _ = pipe.classifier()
    _, _, xt, yt, _ = pipe.data()
    xt, yt = xt[:limit], yt[:limit]
    adv, _ = pipe.attacked(clf, ckey, images=(xt, yt), split="test")
    sources = {"clean test images": (xt, yt), f"PGD-L2 test attacks ({base.attack.describe()})": (adv.x_adv, yt)}
    for spec in samples_paths:
        label, _, path = spec.rpartition("=")
        s = samples_io.load(path, clf.num_classes)
        sources[f"deceptive samples: {label or Path(path).stem}"] = (s["images"][:limit], s["labels"][:limit])
    table = purification_table(diff, model, clf, sources, ts, steps, seed=seed, device=dev)
    write_purification(table, root / "purify", f"Purification with {Path(ckpt).name} ({dataset}, DDIM-{steps} back)")
    click.echo(table.markdown())
    click.echo(f"written: {root / 'purify' / 'purify.md'} and purify.json")


@cli.command("harden", context_settings=CONTEXT)
@stage_options
@click.option("--checkpoint", "ckpt", type=click.Path(dir_okay=False, exists=True), required=True,
              help="The deceptive (p = 1) diffusion model whose samples join the training set.")
@click.option("--arms", default=",".join(HARDEN_ARMS), show_default=True,
              help="Comma-separated arms: clean (the target), pgd (PGD-L2 adversarial training at the attack's eps), "
                   "deceptive (clean images plus the deceptive pool), pgd+deceptive, deceptive-fresh (a fresh "
                   "pool every epoch).")
@config_options(HardenConfig, exclude=("seed",))
def harden(data_dir, run_dir, device, seed, preset, dataset, ckpt, arms, **kw):
    """Adversarial training with deceptive samples: train each arm (cached classifier stages) and score it on
    clean accuracy, robust accuracy under PGD-L2 (multi-restart), held-out deceptive samples and PGD attacks
    transferred from the undefended target. Writes RUN_DIR/harden/harden.md and harden.json."""
    from dataclasses import replace

    import torch

    from . import checkpoint, train
    from . import harden as hd
    from .config import HARDEN_SMOKE
    from .pipeline import Pipeline
    from .runtime import resolve_device
    from .transfer import attacked_source

    dev = resolve_device(device)
    base, name, _ = _run_preset(preset, dev, dataset)
    hcfg = _apply(replace(HARDEN_SMOKE) if name == "smoke" else HardenConfig(), kw)
    hcfg.seed = seed
    if kw.get("cfg__eval_eps") is not None:
        hcfg.eval_eps = tuple(_float_list(kw["cfg__eval_eps"], "--eval-eps"))
    hcfg.validate()
    arm_names = hd.parse_arms(arms)
    model, tcfg, _ = train.load_ema(ckpt, dev, dataset)
    root = _writable_dir(run_dir)
    pipe = Pipeline(base.with_seed(seed).validate(), root, data_dir, dev, log=lambda m: None)
    target, ckey, _ = pipe.classifier()
    x, _, xt, yt, _ = pipe.data()
    if tuple(x.shape[1:]) != (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size):
        raise ValueError(f"{ckpt}: makes {model.cfg.in_channels}x{model.cfg.image_size}x{model.cfg.image_size} "
                         f"images; {dataset} has {tuple(x.shape[1:])}")
    dkey = checkpoint.file_digest(ckpt)[:16]
    need_pool = any(hd.ARMS[a][1] for a in arm_names)
    pool = pipe.samples(model, tcfg, dkey, 1.0, num=hcfg.pool, seed=seed + 1) if need_pool else None
    heldout = pipe.samples(model, tcfg, dkey, 1.0, num=hcfg.heldout, seed=seed + 2)
    fresh, _ = pipe.attacked(target, ckey, images=(xt[:hcfg.eval_limit], yt[:hcfg.eval_limit]), split="test")
    transfer = attacked_source(fresh)
    if transfer[0].shape[0] == 0:
        raise ValueError("the PGD-L2 attack on the test images succeeded on none: no transfer row to score")
    epochs = base.classifier.epochs
    more = (pipe.samples(model, tcfg, dkey, 1.0, num=(epochs - 1) * hcfg.pool, seed=seed + 3)
            if epochs > 1 and any(hd.ARMS[a][2] for a in arm_names) else None)
    rows = []
    for arm in arm_names:
        cfg = hd.arm_config(base.classifier, arm, base.attack.eps)
        _, with_pool, fresh_pools = hd.ARMS[arm]
        extra, pool_seconds = None, 0.0
        if with_pool:
            extra, pool_seconds = (pool[0], pool[1], f"deceptive-pool-{dkey}-{hcfg.pool}-{seed + 1}"), pool[2]
        if fresh_pools and more is not None:  # the pool for the first epoch, fresh samples for the others
            extra = (torch.cat([pool[0], more[0]]), torch.cat([pool[1], more[1]]),
                     f"{extra[2]}-fresh-{(epochs - 1) * hcfg.pool}-{seed + 3}")
            pool_seconds += more[2]
        clf, _, m = pipe.classifier(cfg, extra=extra, per_epoch=fresh_pools)
        n_train = x.shape[0] + (hcfg.pool if with_pool else 0)
        rows.append(hd.evaluate_arm(arm, clf, m, hcfg, (xt, yt), heldout[:2], transfer,
                                    pool_seconds=pool_seconds, examples_seen=cfg.epochs * n_train, device=dev))
        click.echo(f"arm {arm}: clean {100 * rows[-1].clean_accuracy:.2f}%, robust "
                   + ", ".join(f"eps {e} {100 * v:.1f}%" for e, v in rows[-1].robust_accuracy.items()))
    table = hd.HardenTable(rows, to_dict(hcfg), base.attack.eps)
    hd.write(table, root / "harden", f"Adversarial training with deceptive samples ({dataset}, preset {name}, "
                                     f"pool from {Path(ckpt).name})")
    click.echo(table.markdown())
    click.echo(f"written: {root / 'harden' / 'harden.md'} and harden.json")


@cli.command("evaluate", context_settings=CONTEXT)
@data_dir_option
@dataset_option
@click.option("--samples", "samples_path", type=click.Path(dir_okay=False, exists=True), required=True,
              help="A samples file from `ddmini sample`.")
@click.option("--classifier", "classifier_path", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--attacked", type=click.Path(dir_okay=False, exists=True), default=None,
              help="attacked.pt: also compare with the attacked set.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the figures as JSON.")
def evaluate(data_dir, dataset, samples_path, classifier_path, attacked, out):
    """Misclassification (overall, per class, confusion) and CAFD of generated images."""
    from . import checkpoint, classifier, data as ddata, report, samples
    from .attacks.stage import AttackedSet
    from .evaluate import Evaluator

    if out:
        checkpoint.check_writable(out, "JSON report")
    clf, _, _ = classifier.load(classifier_path, dataset=dataset)
    s = samples.load(samples_path, clf.num_classes)
    xt, yt = ddata.load(data_dir, "test", dataset)
    ev = Evaluator(clf, xt, yt, AttackedSet.load(attacked) if attacked else None)
    r = ev.generated(s["images"], s["labels"], "samples")
    m = r.misclassification
    click.echo(f"{m.n} generated images: misclassified {100 * m.rate:.2f}% "
               f"(clean test images: {100 * ev.clean_test.rate:.2f}%)")
    click.echo("per class: " + ", ".join(f"{k}: {100 * v:.1f}%" for k, v in enumerate(m.per_class)))
    for name, v in r.cafd.items():
        click.echo(f"CAFD {name}: {v.mean:.3f}")
    if out:
        from dataclasses import asdict

        report.write_json({"generated": asdict(r), "clean_test": asdict(ev.clean_test)}, Path(out))


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit. Under torchrun
    only rank 0 prints the line; every rank exits non-zero."""
    debug = os.environ.get("DDMINI_DEBUG") == "1"
    quiet = os.environ.get("RANK", "0") != "0"

    def fail(msg: str, code: int):
        if not quiet:
            click.echo(msg, err=True)
        sys.exit(code)

    try:
        try:
            cli.main(args=argv, prog_name="ddmini", standalone_mode=False)
        finally:
            if "ddmini.distributed" in sys.modules:
                sys.modules["ddmini.distributed"].shutdown()
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.UsageError as e:  # an unknown option, a value of the wrong type: one line, exit 2
        cmd = e.ctx.command_path if e.ctx else "ddmini"
        fail(f"error: {' '.join(e.format_message().split())} (see `{cmd} --help`)", e.exit_code)
    except click.ClickException as e:
        fail(f"error: {' '.join(e.format_message().split())}", e.exit_code)
    except (click.Abort, KeyboardInterrupt):
        fail("interrupted", 130)
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        if debug:
            raise
        fail(f"error: {' '.join(str(e).split())}", 1)  # one line, whatever the message held
    sys.exit(0)


if __name__ == "__main__":
    main()
