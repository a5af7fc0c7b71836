"""The ``ddmini`` command line (Click). Thin: a command parses its options (generated from the configs'
knobs: ddmini.options), calls one library function, prints.

Errors from bad input (ValueError, TypeError, OSError) become one line on stderr and exit code 1;
set DDMINI_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import asdict, replace
from pathlib import Path

import click

from . import (
    __version__,
    checkpoint,
    classifier,
    data as ddata,
    distributed,
    export,
    fit,
    harden as hd,
    images,
    options as op,
    purify as pf,
    report as rp,
    robust as rb,
    samples,
    train,
)
from .config import SampleConfig, apply_overrides, parse_floats, parse_ints, to_dict
from .evaluate import evaluate_files
from .pipeline import Pipeline, open_stage
from .poison import training_set
from .presets import harden_config, preset as get_preset, unet_config
from .runtime import resolve_device, seed_everything
from .transfer import write as write_transfer, zoo_matrix, zoo_table
from .unet import describe as describe_unet

#: The commands that share their work out over the ranks under torchrun (ddmini.distributed).
DISTRIBUTED = ("run", "sweep", "train-diffusion", "attack", "sample")
STAGE_KEYS = ("data_dir", "run_dir", "device", "seed", "preset", "dataset")


def _open(o: dict, overrides_: dict | None = None, **kw) -> Pipeline:
    """The stage set-up of a command from its shared options ``o`` (ddmini.pipeline.open_stage)."""
    if o.get("no_download"):
        os.environ[ddata.OFFLINE_ENV_VAR] = "1"
    return open_stage(**{k: o[k] for k in STAGE_KEYS}, overrides=overrides_, classifier_file=o.get("given"), **kw)


def _echo(pipe: Pipeline):
    """click.echo on rank 0, silent on the other ranks under torchrun."""
    return click.echo if pipe.world.is_main else (lambda *a, **k: None)


@click.group(context_settings=op.CONTEXT)
@click.version_option(__version__, prog_name="ddmini")
@click.pass_context
def cli(ctx):
    """ddmini: Deceptive Diffusion (arXiv 2406.19807), small and fast.

    Attack a classifier's training set, train a class-conditional diffusion model on the attacked
    images, and sample new images the classifier gets wrong. Datasets are read from --data-dir, or
    downloaded on first use into the user cache (`ddmini data where`). Under torchrun, run, sweep,
    train-diffusion, attack and sample share their work out over the processes.
    """
    if distributed.launched() and ctx.invoked_subcommand not in DISTRIBUTED:
        raise click.UsageError(
            f"`ddmini {ctx.invoked_subcommand}` runs in one process; start it without "
            f"torchrun (these run under it: {', '.join(DISTRIBUTED)})"
        )


@cli.group(context_settings=op.CONTEXT)
def data():
    """Find, check or download a dataset's files (MNIST, Fashion-MNIST, CIFAR-10)."""


@data.command("where", context_settings=op.CONTEXT)
@op.dataset_option
def data_where(dataset):
    """Print the folder a dataset is read from when no --data-dir is given."""
    click.echo(ddata.default_dir(dataset))


@data.command("check", context_settings=op.CONTEXT)
@op.data_dir_option
@op.dataset_option
@click.option("--verify/--no-verify", default=False, help="Also check the content sha256 of every file.")
def data_check(data_dir, dataset, verify):
    """Validate a dataset's files (downloading them first into the user cache if no folder is named and
    they are not there) and print what was found."""
    root = ddata.resolve_data_dir(data_dir, dataset)
    counts, spec = ddata.check(root, verify=verify, dataset=dataset), ddata.get(dataset)
    c, h, w = spec.shape
    click.echo(
        f"{dataset} in {root}: {counts['train']} train / {counts['test']} test images, {h}x{w}"
        f"{'' if c == 1 else f'x{c}'}, {spec.num_classes} classes" + (", checksums ok" if verify else "")
    )


@data.command("download", context_settings=op.CONTEXT)
@op.data_download_options
def data_download(dest, dataset, mirrors, timeout):
    """Download a dataset's files into DEST [default: `ddmini data where`, the user cache], verify their
    checksums, skip files already good."""
    dest = dest or ddata.default_dir(dataset)
    ddata.fetch(dest, dataset, mirrors or None, timeout)
    counts = ddata.check(dest, verify=True, dataset=dataset)
    click.echo(f"{dataset} in {dest}: {counts['train']} train / {counts['test']} test images, checksums ok")


@cli.command("train-classifier", context_settings=op.CONTEXT)
@op.train_classifier_options
def train_classifier(limit, out, **o):
    """Train the target classifier and print its test accuracy. It is the classifier stage of `ddmini run`
    (cached in RUN_DIR/cache, where `ddmini attack` and the run find it), copied to --out."""
    pipe = _open(o, {**op.overrides(o, prefix="classifier."), "data_limit": op.limit_of(limit)})
    out = checkpoint.check_writable(out or pipe.run_dir / "classifier.pt", "classifier checkpoint")
    seed_everything(o["seed"])
    m, cfg, n = pipe.save_classifier(out).metrics, pipe.cfg.classifier, len(pipe.data().x)
    how = "cached" if pipe.stages.cached.get("classifier") else f"after {m.get('train_seconds', 0):.0f} s"
    acc = f"test accuracy {100 * m['test_accuracy']:.2f}%"
    click.echo(f"{acc} {how} ({cfg.epochs} epochs on {n} images, {pipe.device}); saved {out}")


@cli.command("attack", context_settings=op.CONTEXT)
@op.attack_options
def attack(eps, split, limit, classifier_path, out, **o):
    """Attack the training (or test) set; store float images, labels, success mask and norms in
    attacked.pt (printed). Interrupted runs resume from their finished chunks; with the same preset and
    options, `ddmini run` finds this attack cached."""
    eps_list = parse_floats(eps, "--eps") if eps is not None else None
    if out and eps_list and len(eps_list) > 1:
        raise ValueError("--out names one folder; leave it out for an eps sweep")
    settings = {"eps": eps_list, "split": split, "limit": limit, "classifier": classifier_path, "out": out}
    pipe = _open(o, op.overrides(o, prefix="attack."), settings=settings, log=click.echo)
    echo = _echo(pipe)
    if classifier_path and not Path(classifier_path).exists():
        raise FileNotFoundError(f"{classifier_path}: no classifier checkpoint (`ddmini train-classifier` makes one)")
    pipe.classifier_file = classifier_path or pipe.classifier_file
    model, ckey, _ = pipe.classifier()
    x, y = ddata.load(pipe.data_dir, split, pipe.cfg.dataset)
    n = op.limit_of(limit, pipe.cfg.data_limit)
    x, y, rows = x[:n], y[:n], []
    for e in eps_list or [pipe.cfg.attack.eps]:
        cfg = replace(pipe.cfg.attack, eps=e).validate()
        res, key = pipe.attacked(model, ckey, cfg=cfg, images=(x, y), split=split, out_dir=out)
        rows.append((e, res.summary()))
        echo(f"{res.summary_line(cfg, split)}; saved {Path(out) if out else pipe.attack_dir(key)}/attacked.pt")
        if pipe.world.is_main and (line := res.margin_line(model, x)):
            echo(line)
    if len(rows) > 1:
        echo("\n| eps | success % | 8-bit success % | mean L2 | mean Linf |\n|---|---|---|---|---|")
        for e, s in rows:
            ok, ok8 = 100 * s["success_rate"], 100 * s["success_rate_uint8"]
            echo(f"| {e:g} | {ok:.2f} | {ok8:.2f} | {s['l2_mean']:.3f} | {s['linf_mean']:.3f} |")


@cli.command("train-diffusion", context_settings=op.CONTEXT)
@op.train_diffusion_options
def train_diffusion(unet_preset, attacked, poison, only_successful, limit, out, resume, **o):
    """Train the class-conditional diffusion model and save its checkpoint (--out; EMA weights sample).
    Ctrl-C saves; run again to resume."""
    settings = {"unet": unet_preset, "limit": limit, "attacked": attacked, "poison": poison, "out": out}
    pipe = _open(o, op.overrides(o, prefix="train."), settings=settings)
    echo, cfg = _echo(pipe), pipe.cfg
    mcfg = unet_config(unet_preset, cfg.unet) if unet_preset else cfg.unet
    out = checkpoint.check_writable(out or pipe.run_dir / "diffusion.pt", "diffusion checkpoint", [attacked])
    tcfg, _ = fit.apply(mcfg, cfg.train, pipe.device, pipe.cache, log=echo)
    n = op.limit_of(limit, cfg.data_limit)
    x, y = training_set(
        pipe.data_dir, attacked, poison, only_successful=only_successful, seed=tcfg.seed, limit=n, dataset=cfg.dataset
    )
    procs = f"; {pipe.world.size} processes" if pipe.world.distributed else ""
    echo(f"{describe_unet(mcfg)}; {x.shape[0]} training images; {pipe.device}{procs}")
    try:
        st = train.train(mcfg, tcfg, x, y, out, device=pipe.device, resume=resume, extra={"dataset": cfg.dataset})
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the checkpoint is on disk: a late Ctrl-C changes nothing
        saved = f"checkpoint saved to {out} (run again to resume)" if out.is_file() else "no checkpoint was saved"
        echo(f"interrupted; {saved}", err=True)
        sys.exit(130)
    last = st.losses[-1][1] if st.losses else float("nan")
    rate = st.step / max(st.seconds, 1e-9)
    echo(f"trained {st.step} steps in {st.seconds:.0f} s ({rate:.2f} steps/s), last loss {last:.4f}; saved {out}")


@cli.command("sample", context_settings=op.CONTEXT)
@op.sample_options
def sample(device, ckpt, num, labels, preset, seed, classifier_path, out, png_dir, **kw):
    """Sample images from a trained diffusion model (a checkpoint or a folder of `ddmini export`); save a tensor
    file (--out), an image grid beside it and, with --png-dir, an image folder with a manifest.csv."""
    scfg = apply_overrides(get_preset(preset).sample if preset else SampleConfig(), {**op.overrides(kw), "seed": seed})
    out, png = Path(out), Path(out).with_suffix(".png")
    if png == out:
        raise ValueError(f"--out {out}: name the tensor file (e.g. samples.pt); the PNG grid is written beside it")
    settings = dict(sample=to_dict(scfg), num=num, labels=labels, checkpoint=ckpt, classifier=classifier_path, out=out)
    world, dev = distributed.join(resolve_device(device), settings, [out.parent])
    if world.is_main:
        checkpoint.check_not_input(png, [ckpt, classifier_path], "samples grid")
        checkpoint.check_writable(out, "samples file", [ckpt, classifier_path])
    model, tcfg, state = (export.load_diffusion if Path(ckpt).is_dir() else train.load_ema)(ckpt, dev)
    k, trained_on = model.cfg.num_classes, state.get("extra", {}).get("dataset", "mnist")
    shape = (model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
    clf = None if not classifier_path else export.load_classifier(classifier_path) if Path(classifier_path).is_dir() \
        else classifier.load_any(classifier_path, shape, k, dataset=trained_on)  # fmt: skip
    lab = samples.labels_for(num, k, labels)
    x, secs = samples.generate(model, tcfg, lab, scfg, device=dev)
    if not world.is_main:
        return  # rank 0 gathered the images
    samples.save(out, x, lab, k, config=to_dict(scfg), seconds=secs)
    images.save_grid(x, png, nrow=min(10, num))
    how = f"{scfg.sampler}, {tcfg.T if scfg.sampler == 'ddpm' else scfg.steps} steps, guidance {scfg.guidance:g}"
    msg = f"{num} images ({how}) in {secs:.1f} s ({num / secs:.1f} img/s); saved {out} and {png}"
    if clf is not None:
        msg += f"; classifier agrees with the conditioning label on {100 * classifier.accuracy(clf, x, lab):.2f}%"
    if png_dir:
        names = state.get("class_names") or ddata.class_names(trained_on, k)
        msg += f"; image folder {samples.write_folder(x, lab, png_dir, names, clf).parent}"
    click.echo(msg)


@cli.command("export", context_settings=op.CONTEXT)
@op.export_options
def export_(report_dir, fmt, out):
    """Write a run's classifier and diffusion model (EMA) as .safetensors with a config.json (architectures,
    dataset, class names, cache keys) into --out; `ddmini sample --checkpoint OUT` loads them back."""
    click.echo(f"written: {export.export_run(report_dir, out)}, classifier.safetensors, diffusion.safetensors")


@cli.command("run", context_settings=op.CONTEXT)
@op.run_poison_option
@op.run_options
def run(poison, **o):
    """The whole experiment: classifier, attack, poisoned set, diffusion model, samples, evaluation,
    report. Stages are cached in RUN_DIR/cache; report.md, report.json and the PNGs go to RUN_DIR/p<P>/."""
    pipe = _open(o, {**op.run_overrides(o), "poison": poison}, settings={}, time_default=True, log=click.echo)
    echo, procs = _echo(pipe), f", {pipe.world.size} processes" if pipe.world.distributed else ""
    echo(
        f"ddmini run: preset {pipe.preset}{f' ({pipe.why})' if pipe.why else ''}, p = {pipe.cfg.poison:g}, "
        f"seed {o['seed']}, {pipe.device}{procs}, run dir {pipe.run_dir}"
    )
    seed_everything(o["seed"])
    r = pipe.run(o["overwrite"], png_dir=o["png_dir"])
    if r is not None:  # rank 0
        echo("\n" + "\n".join(rp.summary_lines(r)) + f"\nreport: {pipe.run_dir / pipe.cfg.folder() / 'report.md'}")


@cli.command("sweep", context_settings=op.CONTEXT)
@click.option("--poison", default="0,0.25,0.5,0.75,1", show_default=True, help="Comma-separated fractions p.")
@op.run_options
def sweep(poison, **o):
    """Run the experiment for each p (sharing cached stages) and fit misclassification and CAFD against p
    by least squares: sweep.md, sweep.json and the plot in RUN_DIR/sweep/."""
    rows, ps = [], parse_floats(poison, "--poison")
    if len(set(ps)) < 2 or not all(0 <= p <= 1 for p in ps):
        raise ValueError(f"--poison: a sweep needs two or more fractions p in [0, 1]; got {poison}")
    for p in ps:
        pipe = _open(
            o, {**op.run_overrides(o), "poison": p}, settings={"poison": poison}, time_default=True, log=click.echo
        )
        _echo(pipe)(f"--- p = {p:g} (preset {pipe.preset}{f'; {pipe.why}' if pipe.why else ''}) ---")
        seed_everything(o["seed"])
        rows.append(pipe.run(o["overwrite"], png_dir=o["png_dir"] and Path(o["png_dir"]) / f"p{p:g}"))
    if not pipe.world.is_main:
        return  # rank 0 fits and writes the sweep
    where = pipe.run_dir / pipe.cfg.folder("sweep")
    out = rp.write_sweep(rows, where, rows[0].headline()[0])
    click.echo(rp.sweep_summary(out) + f"; see {where / 'sweep.md'}")


@cli.command("compare", context_settings=op.CONTEXT)
@op.compare_options
def compare(runs, out_path):
    """Runs side by side: each RUN (a run's report folder, e.g. runs/p1 and runs/p1-fgsm, or its
    report.json) as a row: dataset, p, attack, its success, size and margin, misclassified samples at
    every guidance scale (± standard error), CAFD and training time. Prints it (and writes --out)."""
    reports = rp.load_reports(runs)
    if out_path:
        checkpoint.check_not_input(out_path, [Path(r) / "report.json" if Path(r).is_dir() else r for r in runs])
    table = rp.compare_table(reports)
    click.echo(table)
    if out_path:
        rp.write_text(table + "\n", Path(out_path))
        click.echo(f"written: {out_path}")


@cli.command("zoo", context_settings=op.CONTEXT)
@op.stage_options
def zoo(**o):
    """Train (or find cached in RUN_DIR/cache) the classifier zoo of the transfer study: the target's
    architecture with two other seeds, an MLP, a residual CNN, and the target adversarially trained with
    PGD-L2 at the attack's eps. Prints each one's test accuracy."""
    click.echo(zoo_table(_open(o)))


@cli.command("transfer", context_settings=op.CONTEXT)
@op.transfer_options
def transfer(samples_paths, autoattack_limit, **o):
    """The transfer matrix: how often the target and every zoo member (`ddmini zoo`, trained here if not
    cached) misclassify generated images, the attacked training images, and fresh PGD-L2 attacks on test
    images made against the target (and each one's AutoAttack accuracy). Writes RUN_DIR/transfer/transfer.md."""
    pipe = _open(o)
    target, ckey, _ = pipe.classifier()
    named = samples.load_named(samples_paths, target.num_classes)
    t = zoo_matrix(pipe, target, ckey, {f"generated: {k}": v for k, v in named.items()}, autoattack_limit)
    write_transfer(
        t, pipe.run_dir / "transfer", f"Transfer matrix (preset {pipe.preset}, attack {pipe.cfg.attack.describe()})"
    )
    click.echo(t.markdown() + f"\nwritten: {pipe.run_dir / 'transfer' / 'transfer.md'}, transfer.json, transfer.png")


@cli.command("purify", context_settings=op.CONTEXT)
@op.purify_options
def purify(ckpt, t_stars, steps, limit, samples_paths, adaptive, norm, eps, attack_steps, eot, attempts, **o):
    """Diffusion purification with the clean model (DiffPure): noise each input to t*, run DDIM back with the
    null label, classify. Accuracy of the target on clean test images, on PGD-L2 attacks made against it and on
    deceptive samples per t* (--adaptive: and under attacks through the purifier): RUN_DIR/purify/purify.md."""
    pipe, ts = _open(o, log=click.echo), None if t_stars is None else parse_ints(t_stars, "--t-star")
    how = dict(norm=norm, eps=eps, attack_steps=attack_steps, eot=eot, attempts=attempts)
    table, adapt = pf.run(pipe, ckpt, ts, steps, limit, samples_paths, adaptive=how if adaptive else None)
    more = "" if adapt is None else "\n\nadaptive:\n" + adapt.markdown()
    click.echo(f"{table.markdown()}{more}\nwritten: {pipe.run_dir / 'purify' / 'purify.md'} and purify.json")


@cli.command("robust", context_settings=op.CONTEXT)
@op.robust_options
def robust(norm, eps, version, limit, **o):
    """Robust accuracy by AutoAttack on test images: the target's (or --classifier's) clean accuracy, and what
    stands after APGD-CE, APGD-T, FAB-T and Square, each on the images still standing (cached record)."""
    pipe, n = _open(o, log=click.echo), op.limit_of(limit)
    model, ckey, _ = pipe.classifier()
    res, path = rb.robust(pipe, model, ckey, norm=norm, eps=eps, version=version, limit=n, seed=o["seed"])
    click.echo(res.markdown() + f"\n\n{res.line()}\nrecord: {path}")


@cli.command("harden", context_settings=op.CONTEXT)
@op.harden_options
def harden(ckpt, arms, **o):
    """Adversarial training with deceptive samples: train each arm (cached classifier stages) and score it on
    clean accuracy, robust accuracy under PGD-L2 (multi-restart), held-out deceptive samples and PGD attacks
    transferred from the undefended target. Writes RUN_DIR/harden/harden.md and harden.json."""
    arm_names = hd.parse_arms(arms)
    pipe = _open(o)
    hcfg = apply_overrides(harden_config(pipe.preset), {**op.overrides(o), "seed": o["seed"]})
    table = hd.run(pipe, ckpt, arm_names, hcfg, on_arm=lambda r: click.echo(r.summary_line()))
    click.echo(table.markdown() + f"\nwritten: {pipe.run_dir / 'harden' / 'harden.md'} and harden.json")


@cli.command("evaluate", context_settings=op.CONTEXT)
@op.evaluate_options
def evaluate(data_dir, dataset, samples_path, classifier_path, attacked, out):
    """Misclassification (overall, per class, confusion) and CAFD of generated images (printed; --out: JSON)."""
    if out:
        checkpoint.check_writable(out, "JSON report", [samples_path, classifier_path, attacked])
    r, ev = evaluate_files(samples_path, classifier_path, data_dir=data_dir, dataset=dataset, attacked=attacked)
    click.echo(rp.evaluation_summary(r, ev.clean_test))
    if out:
        rp.write_json({"generated": asdict(r), "clean_test": asdict(ev.clean_test)}, Path(out))


def main(argv=None) -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit. Under torchrun
    only rank 0 prints the line; every rank exits non-zero."""
    debug, quiet = os.environ.get("DDMINI_DEBUG") == "1", distributed.is_other_rank()

    def fail(msg: str, code: int):
        if not quiet:
            click.echo(msg, err=True)
        sys.exit(code)

    try:
        try:
            cli.main(args=argv, prog_name="ddmini", standalone_mode=False)
        finally:
            distributed.shutdown()
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
