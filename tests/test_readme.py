"""README.md runs as written, on a machine with no data: the first command downloads MNIST into an empty
user cache from a local HTTP server (``DDMINI_MIRRORS``), as a new user's machine would from the internet.

Every ```python block of README.md runs as its own fresh script (a subprocess in a temporary
directory). Every ``ddmini ...`` command of README's quick start and data sections (fenced bash blocks)
and of its command table is listed in COMMANDS below with how it is run here, or why it is skipped.
Substitutions, all visible here and nowhere else:

- ``HOME`` is an empty folder and ``DDMINI_MIRRORS`` a server on 127.0.0.1 holding the MNIST files: nothing
  else tells ddmini where data is (no ``--data-dir``, ``DDMINI_DATA``, ``DDMINI_DATA_ROOT``);
- commands that would run the full experiment get ``--preset smoke`` (seconds, not an hour);
- synopsis rows of the command table (``[--option V]``) are run with concrete smoke-sized options.

A README command that is not in COMMANDS fails the test, so a new one must be classified here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, http_server

from ddmini.cli import cli, main

README = REPO / "README.md"

# README command -> the arguments run here ({run}, {clf}, ... filled in below), or "skip: why".
# "{readme}" stands for the README command's own arguments.
_TABLE = [  # (README command, how it runs here)
    ("ddmini run [--poison P] [--preset smoke|cpu|cpu-hour|paper] [--<stage>-<knob> V]...",
     "run --poison 0.5 --preset smoke --run-dir {run}"),
    ("ddmini sweep --poison 0,0.25,0.5,0.75,1", "{readme} --preset smoke --run-dir {run}"),
    ("ddmini compare RUN... [--out F.md]", "compare {run}/p0.3 {run}/p0.5 --out {run}/compare.md"),
    ("ddmini train-classifier [--epochs --batch-size --lr --width --limit --out]",
     "train-classifier --preset smoke --out {clf}"),
    ("ddmini attack [--attack pgd_l2|pgd_linf|fgsm|cw_l2] [--eps 1.0,1.5,2.0] [--steps --split --limit]",
     "attack --eps 1.0,1.5 --steps 2 --limit 300 --classifier {clf} --run-dir {run}"),
    ("ddmini train-diffusion [--unet small|paper|tiny] [--steps --lr ...] [--attacked attacked.pt --poison P]",
     "train-diffusion --unet tiny --steps 4 --batch-size 16 --limit 200 --attacked {attacked} --poison 0.5 "
     "--out {ckpt}"),
    ("ddmini sample --checkpoint D.pt [-n N] [--steps --eta --guidance --labels] [--classifier C.pt] [--png-dir DIR]",
     "sample --checkpoint {ckpt} -n 20 --steps 3 --classifier {clf} --out {samples} --png-dir {run}/png"),
    ("ddmini export RUN_DIR/p0.3 --out DIR", "export {run}/p0.3 --out {run}/exported"),
    ("ddmini evaluate --samples S.pt --classifier C.pt [--attacked A.pt]",
     "evaluate --samples {samples} --classifier {clf} --attacked {attacked}"),
    ("ddmini zoo [--preset P]", "zoo --preset smoke --run-dir {run}"),
    ("ddmini transfer [--samples NAME=S.pt]...",
     "transfer --preset smoke --samples generated={samples} --run-dir {run}"),
    ("ddmini purify --checkpoint D0.pt [--t-star 50,100,200,300] [--samples NAME=S.pt]...",
     "purify --preset smoke --checkpoint {ckpt} --t-star 5,20 --steps 4 --limit 30 --samples generated={samples} "
     "--run-dir {run}"),
    ("ddmini robust [--classifier C] [--norm linf|l2] [--eps E] [--limit N]",
     "robust --preset smoke --classifier {clf} --norm l2 --limit 8 --run-dir {run}"),
    ("ddmini harden --checkpoint D1.pt [--arms clean,pgd,deceptive] [--pool N]",
     "harden --preset smoke --checkpoint {ckpt} --arms clean,deceptive --run-dir {run}"),
    ("ddmini data where", "{readme}"),
    ("ddmini data check [--verify]", "data check --verify"),
    ("ddmini data download [DIR]", "data download {dl2}"),
]  # fmt: skip
COMMANDS = {
    # quick start
    "ddmini run --poison 0.3": "{readme} --preset smoke --run-dir {run}",
    # data section
    "ddmini data download": "{readme}",
    "ddmini data check --verify": "{readme}",
    # command table
    **dict(_TABLE),
}
# Shell steps of the quick start that are not ddmini commands: what runs them instead.
NOT_DDMINI = {
    "python3 -m venv .venv": ".ci/run makes a fresh venv on a clean clone",
    ". .venv/bin/activate": ".ci/run",
    "pip install torch==2.13.0": ".ci/run installs exactly this first",
    "pip install .": ".ci/run builds and installs the package",
    "pip install '.[test]'": ".ci/run",
    "pytest": "this suite is that command",
}


def _section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README has no section '{title}'"
    return m.group(1)


def fenced(text: str, lang: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```lang block."""
    out = []
    for m in re.finditer(rf"^```{lang}\n(.*?)^```", text, re.M | re.S):
        out.append((text[: m.start()].count("\n") + 1, m.group(1)))
    return out


def readme_commands(text: str) -> list[str]:
    """The ddmini commands of the quick start and data sections' bash blocks, then the command table's."""
    cmds, other = [], []
    for title in ("Quick start", "Data"):
        for _, code in fenced(_section(text, title), "bash"):
            for line in code.splitlines():
                line = line.split("  #")[0].strip()
                for part in (p.strip() for p in line.split("&&")):
                    (cmds if part.startswith("ddmini ") else other).append(part)
    for row in _section(text, "Command line").splitlines():
        cells = row.replace("\\|", "\0").split("|")
        if len(cells) > 2:  # the first cell's code spans: `ddmini a ...` / `ddmini b ...`
            cmds += [c.replace("\0", "|") for c in re.findall(r"`(ddmini [^`]*)`", cells[1])]
    return cmds, [p for p in other if p]


def test_every_readme_command_is_classified():
    cmds, other = readme_commands(README.read_text())
    assert len(cmds) >= 10, cmds
    missing = [c for c in cmds if c not in COMMANDS]
    assert not missing, f"README commands not in tests/test_readme.py COMMANDS: {missing}"
    assert not [c for c in other if c not in NOT_DDMINI], other
    stale = [c for c in COMMANDS if c not in cmds]
    assert not stale, f"COMMANDS lists commands README no longer has: {stale}"


@pytest.fixture(scope="module")
def served_mnist(data_dir, tmp_path_factory):
    with http_server(data_dir) as (base, _):
        yield base + "/"


def _run(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out + out.err


def test_readme_commands_run(data_dir, served_mnist, tmp_path, monkeypatch, capsys):
    """Runs every README command in README order (the table's rows need what earlier rows made, so the
    order below puts producers first) on a machine with no data; prints what ran and what was skipped."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CACHE_HOME", "DDMINI_DATA", "DDMINI_DATA_ROOT", "DDMINI_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DDMINI_MIRRORS", served_mnist)
    monkeypatch.chdir(tmp_path)
    fill = {
        "run": str(tmp_path / "runs"),
        "clf": str(tmp_path / "C.pt"),
        "ckpt": str(tmp_path / "D.pt"),
        "samples": str(tmp_path / "S.pt"),
        "dl2": str(tmp_path / "dl2"),
    }
    cmds, other = readme_commands(README.read_text())
    order = [
        "train-classifier",
        "attack",
        "train-diffusion",
        "sample",
        "zoo",
        "transfer",
        "purify",
        "robust",
        "harden",
        "evaluate",
        "compare",
    ]
    cmds.sort(key=lambda c: next((i for i, w in enumerate(order) if c.startswith(f"ddmini {w}")), -1))
    ran = [f"NOT RUN HERE {c}: {NOT_DDMINI[c]}" for c in other]
    for cmd in cmds:
        spec = COMMANDS[cmd]
        if spec.startswith("skip:"):
            ran.append(f"SKIPPED {cmd}: {spec[5:].strip()}")
            continue
        readme_args = shlex.split(cmd)[1:]
        attacked = sorted((tmp_path / "runs").glob("cache/attack-*/attacked.pt"), key=lambda p: p.stat().st_mtime)
        fill["attacked"] = str(attacked[-1]) if attacked else "(no attacked.pt yet)"
        args = []
        for tok in shlex.split(spec):
            args += readme_args if tok == "{readme}" else [tok.format(**fill)]
        code, out = _run(args + (["--device", "cpu"] if args[0] in ("run", "sweep") else []), capsys)
        assert code == 0, f"README command `{cmd}` (run as `ddmini {' '.join(args)}`) failed:\n{out}"
        ran.append(f"RAN {cmd}  as  ddmini {' '.join(args)}")
    print("\n".join(ran))
    assert (tmp_path / "runs" / "p0.3" / "report.json").is_file()
    assert (tmp_path / "runs" / "sweep" / "sweep.md").is_file()
    assert (home / ".cache" / "ddmini" / "data" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_readme_is_short_and_starts_with_its_commands():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 250, len(lines)
    first = next(i for i, line in enumerate(lines) if "ddmini run --poison 0.3" in line)
    assert first < 40 and "pytest" in "\n".join(lines[:40])
    assert "--data-dir ../" not in text and "../shared" not in text
    assert "docs/mnist-p1-comparison.png" in "\n".join(lines[:40])
    for link in re.findall(r"\]\(((?:docs|bench)/[^)#]+)", text):
        assert (REPO / link).exists(), link


def test_readme_command_table_lists_every_command():
    table = _section(README.read_text(), "Command line")
    listed = set(re.findall(r"`ddmini ((?:data )?[a-z][a-z-]*)", table))
    have = {n for n in cli.commands if n != "data"} | {f"data {n}" for n in cli.commands["data"].commands}
    assert listed == have, (listed - have, have - listed)


# ---------------------------------------------------------------------------------------------
# Python blocks
# ---------------------------------------------------------------------------------------------
BLOCKS = fenced(README.read_text(), "python")


@pytest.fixture(scope="module")
def block_dir(data_dir, tmp_path_factory):
    """A working directory for the blocks, with the runs/classifier.pt that README says
    `ddmini train-classifier` writes (made here by that command on the smoke preset)."""
    d = tmp_path_factory.mktemp("readme-blocks")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddmini",
            "train-classifier",
            "--preset",
            "smoke",
            "--data-dir",
            str(data_dir),
            "--run-dir",
            str(d / "runs"),
        ],
        cwd=d,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return d


def run_block(code: str, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    script = cwd / "block.py"
    script.write_text(code)
    env = {**os.environ, "DDMINI_QUIET": "1", "DDMINI_DATA": str(data_dir)}  # the user's data folder
    return subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_readme_python_block_runs(line, code, block_dir, data_dir, tmp_path):
    for f in block_dir.iterdir():  # a fresh copy of the directory for every block
        (shutil.copytree if f.is_dir() else shutil.copy)(f, tmp_path / f.name)
    r = run_block(code, tmp_path, data_dir)
    assert r.returncode == 0, f"README.md python block at line {line} failed:\n{r.stderr[-3000:]}"


def test_a_broken_block_fails(block_dir, data_dir, tmp_path):
    # the check itself can fail: README's second block without its ddmini import stops with a NameError
    code = BLOCKS[-1][1].replace("from ddmini import attacks, classifier, data, diffusion, poison, unet", "")
    r = run_block(code, tmp_path, data_dir)
    assert r.returncode != 0 and "NameError" in r.stderr
