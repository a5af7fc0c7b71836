"""Noise schedules against values computed here from the papers' formulas (not from ddmini's code)."""

import math

import pytest
import torch

from ddmini import schedule


def test_linear_schedule_known_values():
    # Ho et al. 2020: beta_t evenly spaced from 1e-4 to 0.02 over T = 1000 steps
    ac = schedule.make("linear", 1000)
    assert ac.dtype == torch.float64 and ac.shape == (1000,)
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    prod = 1.0
    for i, b in enumerate(betas):
        prod *= 1 - b
        if i in (0, 1, 99, 499, 999):
            assert float(ac[i]) == pytest.approx(prod, rel=1e-12), i
    assert float(ac[0]) == pytest.approx(0.9999, rel=1e-15)
    assert float(ac[999]) == pytest.approx(4.0358e-05, rel=1e-4)  # the well-known final abar of DDPM
    torch.testing.assert_close(schedule.betas(ac), torch.tensor(betas, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_cosine_schedule_known_values():
    # Nichol & Dhariwal 2021, Eq. 17: abar_t = f(t) / f(0), f(t) = cos((t / T + s) / (1 + s) * pi / 2)^2,
    # s = 0.008, betas clipped at 0.999 (which only bites at the very end)
    T, s = 1000, 0.008
    ac = schedule.make("cosine", T)

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    for t in (0, 1, 250, 500, 900, 990):  # ddmini's index t is the paper's step t + 1
        assert float(ac[t]) == pytest.approx(f(t + 1) / f(0), rel=1e-10), t
    b = schedule.betas(ac)
    assert float(b.max()) == pytest.approx(0.999) and float(b[-1]) == pytest.approx(0.999)
    assert 1e-9 < float(ac[-1]) < 1e-8  # 2.4e-9: the DDIM x0 estimate divides by its square root
    assert bool((ac[1:] < ac[:-1]).all())


def test_schedule_errors():
    with pytest.raises(ValueError, match="schedule must be one of linear, cosine"):
        schedule.make("sigmoid", 10)
    with pytest.raises(ValueError, match="T must be >= 1"):
        schedule.linear_alphas_cumprod(0)
