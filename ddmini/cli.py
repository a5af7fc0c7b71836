"""The ``ddmini`` command line (Click). Thin: parse options, call the library, print results.

Errors from bad input (ValueError, TypeError, OSError) become one line on stderr and exit code 1;
set DDMINI_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import click

from . import __version__
from .config import ClassifierConfig
from .runtime import DEVICE_CHOICES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# --------------------------------------------------------------------------------------------
# shared options
# --------------------------------------------------------------------------------------------
def data_dir_option(f):
    return click.option("--data-dir", type=click.Path(file_okay=False), envvar="DDMINI_DATA",
                        show_envvar=True, help="Directory holding the four MNIST IDX files.")(f)


def device_option(f):
    return click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
                        help="Where to compute: auto picks cuda when a GPU is present.")(f)


def seed_option(f):
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(f)


def run_dir_option(f):
    return click.option("--run-dir", type=click.Path(file_okay=False), default="runs", show_default=True,
                        help="Directory for outputs (checkpoints, reports).")(f)


def _writable_dir(path: str) -> Path:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"{p}: cannot create run directory ({e.strerror})") from None
    if not os.access(p, os.W_OK):
        raise OSError(f"{p}: run directory is not writable")
    return p


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------
@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="ddmini")
def cli():
    """ddmini: Deceptive Diffusion (arXiv 2406.19807), small and fast.

    Attack a classifier's training set, train a class-conditional diffusion model on the attacked
    images, and sample new images the classifier gets wrong.
    """


@cli.group(context_settings=CONTEXT)
def data():
    """Check or download the MNIST files."""


@data.command("check", context_settings=CONTEXT)
@data_dir_option
@click.option("--verify/--no-verify", default=False, help="Also check the content sha256 of every file.")
def data_check(data_dir, verify):
    """Validate the MNIST files and print what was found."""
    from . import data as ddata

    root = ddata.resolve_data_dir(data_dir)
    counts = ddata.check(root, verify=verify)
    click.echo(f"MNIST in {root}: {counts['train']} train / {counts['test']} test images, 28x28, 10 classes"
               + (", checksums ok" if verify else ""))


@data.command("download", context_settings=CONTEXT)
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--mirror", "mirrors", multiple=True, metavar="URL",
              help="Base URL to fetch from (repeatable, tried in order). Default: the usual MNIST mirrors.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per connection.")
def data_download(dest, mirrors, timeout):
    """Download the four MNIST files into DEST, verify checksums, skip files already good."""
    from . import data as ddata
    from .runtime import progress

    with progress(desc="download", unit="B", total=None) as bar:
        ddata.download(dest, mirrors or ddata.DEFAULT_MIRRORS, timeout=timeout,
                       log=lambda m: bar.write(m), on_bytes=bar.update)
    counts = ddata.check(dest, verify=True)
    click.echo(f"MNIST in {dest}: {counts['train']} train / {counts['test']} test images, checksums ok")


@cli.command("train-classifier", context_settings=CONTEXT)
@data_dir_option
@run_dir_option
@device_option
@seed_option
@click.option("--epochs", type=int, default=ClassifierConfig.epochs, show_default=True)
@click.option("--batch-size", type=int, default=ClassifierConfig.batch_size, show_default=True)
@click.option("--lr", type=float, default=ClassifierConfig.lr, show_default=True, help="Peak learning rate.")
@click.option("--width", type=int, default=ClassifierConfig.width, show_default=True, help="Channels of the first conv block.")
@click.option("--limit", type=int, default=None, help="Train on the first N training images only (quick runs).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint path (default: RUN_DIR/classifier.pt).")
def train_classifier(data_dir, run_dir, device, seed, epochs, batch_size, lr, width, limit, out):
    """Train the target classifier on MNIST and print its test accuracy."""
    from . import classifier, data as ddata
    from .runtime import resolve_device, seed_everything

    dev = resolve_device(device)
    cfg = ClassifierConfig(epochs=epochs, batch_size=batch_size, lr=lr, width=width, seed=seed).validate()
    out = Path(out) if out else _writable_dir(run_dir) / "classifier.pt"
    seed_everything(seed)
    x, y = ddata.load_mnist(data_dir, "train")
    xt, yt = ddata.load_mnist(data_dir, "test")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1; got {limit}")
        x, y = x[:limit], y[:limit]
    res = classifier.train(cfg, x, y, xt, yt, device=dev)
    classifier.save(res.model, cfg, out, test_accuracy=res.test_accuracy, train_seconds=res.train_seconds,
                    train_images=int(x.shape[0]))
    click.echo(f"test accuracy {100 * res.test_accuracy:.2f}% after {res.train_seconds:.0f} s "
               f"({cfg.epochs} epochs on {x.shape[0]} images, {dev}); saved {out}")


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    debug = os.environ.get("DDMINI_DEBUG") == "1"
    try:
        cli.main(args=argv, prog_name="ddmini", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
