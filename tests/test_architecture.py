"""The shape of the package: no import circles (imports inside functions count), a thin command line whose
options are generated from the configs' knobs, and the presets table in docs/presets.md generated from the
presets themselves."""

import ast
import os
from pathlib import Path

import click
import pytest
import torch
from conftest import ALL_THREADS, REPO, WORKERS

PKG = REPO / "ddmini"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """ddmini module -> the ddmini modules it imports anywhere in its body."""
    mods = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                base = base[: len(base) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                for a in node.names:
                    deps.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_import_graph_sees_inside_functions():
    g = import_graph()
    assert "ddmini.fit" in g["ddmini.presets"]  # choose_preset imports it inside the function
    assert "ddmini.attacks.stage" in g["ddmini.poison"]


def test_no_import_circles():
    g = import_graph()

    def reach(start):
        seen, todo = set(), list(g[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += g[m]
        return seen

    circles = sorted(m for m in g if m in reach(m))
    assert not circles, f"modules on an import circle: {circles}"


def _private_cli_uses(path: Path) -> list[str]:
    """Private names of ddmini.cli a Python file imports or reaches (``from ddmini.cli import _x``, ``cli._x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("cli"):
            found += [a.name for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cli":
            found += [node.attr] if node.attr.startswith("_") else []
    return found


def test_the_cli_is_thin_and_the_tests_use_no_private_cli_name():
    assert len((PKG / "cli.py").read_text().splitlines()) <= 400
    for path in (REPO / "tests").glob("*.py"):
        assert not _private_cli_uses(path), f"{path}: {_private_cli_uses(path)}"
    for path in (REPO / "bench").glob("*"):
        assert "ddmini.cli" not in path.read_text(), f"{path} imports CLI code"


def test_every_knob_is_an_option_with_its_help():
    from ddmini.cli import cli
    from ddmini.config import RunConfig, knobs

    run = cli.commands["run"]
    opts = {o.name: o for o in run.params}
    for section in RunConfig.SECTIONS:
        for f in knobs(type(getattr(RunConfig(), section))):
            opt = opts[f"{section}__{f.name}"]
            assert f.metadata["help"] in opt.help
            if f.metadata["choices"]:
                assert isinstance(opt.type, click.Choice) and tuple(opt.type.choices) == f.metadata["choices"]
    assert "--all-attacked" in opts["cfg__only_successful"].secondary_opts


def test_docs_presets_table_is_generated_from_the_presets():
    from ddmini.presets import PRESETS, markdown_table

    table = markdown_table()
    assert (REPO / "docs" / "presets.md").exists(), "docs/presets.md is missing"
    assert table in (REPO / "docs" / "presets.md").read_text(), "docs/presets.md: run `python -m ddmini.presets`"
    for name in PRESETS:
        assert name in table.splitlines()[0]
    assert "| run_minutes | 0 | 0 | 58 |" in table


@pytest.mark.parametrize(
    "given, expect",
    [({"train.steps": 9000}, (9000, 0.0)), ({"train.steps": 9000, "train.fit_minutes": 30.0}, (9000, 30.0))],
)
def test_overrides_by_dotted_name(given, expect):
    from ddmini.presets import run_config

    cfg = run_config("cpu-hour", overrides=given).config
    assert (cfg.train.steps, cfg.train.fit_minutes) == expect
    with pytest.raises(ValueError, match="unknown setting 'train.nope'"):
        run_config("cpu", overrides={"train.nope": 1})


def test_each_test_worker_takes_its_share_of_the_threads():
    """pytest-xdist workers split torch's threads (tests/conftest.py), and the processes tests start get the same
    share: two workers of all the threads each would oversubscribe the cores and slow the suite down."""
    assert torch.get_num_threads() == max(1, ALL_THREADS // WORKERS)
    if WORKERS > 1:
        assert os.environ["OMP_NUM_THREADS"] == str(torch.get_num_threads())
