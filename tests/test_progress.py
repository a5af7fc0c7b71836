"""Progress where stderr is not a terminal (a log file, nohup, a batch job): a plain line every few minutes of long
work with the count, the rate and the expected finish, instead of a bar nobody sees or a silent hour."""

import re

import pytest
import torch

from ddmini import runtime
from ddmini.config import UNET_PRESETS, DiffusionTrainConfig
from ddmini.runtime import LineProgress, progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _bar(clock, **kw):
    bar = LineProgress(**kw)
    bar._clock = clock
    bar.start = bar.last = clock()
    return bar


def test_a_line_every_interval_with_the_rate_and_the_time_left(capsys):
    clock = Clock()
    bar = _bar(clock, total=100, desc="train diffusion", unit="step", every=300)
    for _ in range(10):  # 10 steps of 20 s: 200 s, under the interval, no line
        clock.t += 20
        bar.update(1)
    assert capsys.readouterr().err == ""
    for _ in range(5):  # 300 s in all: one line
        clock.t += 20
        bar.update(1)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("  train diffusion: 15/100 step (15%), 20 s/step, ≈ 28.3 min left (done ≈ ")
    assert re.search(r"done ≈ \d\d:\d\d\)$", err[0])
    clock.t += 20 * 85
    bar.update(85)
    bar.close()  # the end of long work is said once, without a time left
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "  train diffusion: 100/100 step (100%), 20 s/step"


def test_short_work_prints_nothing_and_a_resumed_job_counts_only_its_own_rate(capsys):
    clock = Clock()
    bar = _bar(clock, total=1000, desc="sample", unit="img", every=300)
    clock.t += 60
    bar.update(1000)
    bar.close()
    assert capsys.readouterr().err == ""
    clock = Clock()
    bar = _bar(clock, total=1000, desc="train", unit="step", initial=900, every=10)
    clock.t += 10
    bar.update(50)  # 50 new steps in 10 s: 0.2 s/step, 50 left: 10 s
    err = capsys.readouterr().err
    assert "950/1,000 step (95%), 0.2 s/step, ≈ 0.2 min left" in err


def test_fast_units_read_per_second_and_iteration_counts(capsys):
    clock = Clock()
    items = list(range(5000))
    bar = _bar(clock, iterable=items, desc="read", unit="img", every=1)
    seen = 0
    for _ in bar:
        seen += 1
        clock.t += 0.001
    bar.close()
    assert seen == 5000 and bar.total == 5000
    assert "read: 5,000/5,000 img (100%), 1,000 img/s" in capsys.readouterr().err


def test_progress_picks_lines_off_a_terminal_and_nothing_when_quiet(monkeypatch):
    monkeypatch.delenv("DDMINI_PROGRESS", raising=False)
    assert isinstance(progress(total=3), runtime.tqdm)  # DDMINI_QUIET=1 (conftest): a disabled bar
    monkeypatch.delenv("DDMINI_QUIET")
    assert isinstance(progress(total=3), LineProgress)  # pytest's stderr is not a terminal
    monkeypatch.setenv("DDMINI_PROGRESS", "1")
    assert not isinstance(progress(total=3), LineProgress)
    monkeypatch.setenv("DDMINI_PROGRESS", "0")
    monkeypatch.setenv("DDMINI_PROGRESS_SECONDS", "7")
    assert progress(total=3).every == 7.0


def test_training_in_a_log_file_says_how_far_it_is_and_a_resumed_one_where_it_resumed(monkeypatch, capsys, tmp_path):
    from ddmini.train import train

    monkeypatch.delenv("DDMINI_QUIET")
    monkeypatch.setenv("DDMINI_PROGRESS_SECONDS", "0")  # a line at every step
    x, y = torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    for steps, want in ((2, ["1/2", "2/2", "2/2"]), (4, ["3/4", "4/4", "4/4"])):  # the second resumes at 2
        cfg = DiffusionTrainConfig(steps=steps, batch_size=4, warmup=0)
        train(UNET_PRESETS["tiny"], cfg, x, y, tmp_path / "d.pt", device="cpu")
        err = capsys.readouterr().err.strip().splitlines()
        assert [e.split(": ")[1].split()[0] for e in err if "train diffusion:" in e] == want, err


if __name__ == "__main__":
    pytest.main([__file__])
