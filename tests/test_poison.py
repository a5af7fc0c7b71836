import pytest
import torch

from ddmini.poison import poisoned_set


def _sets(n=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x_adv = (x + 0.5).clamp(0, 1)
    ok = torch.rand(n, generator=g) < 0.8
    return (x, y), (x_adv, y.clone(), ok)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.5, 0.77, 1.0])
def test_exact_fraction_per_class(p):
    clean, attacked = _sets()
    s = poisoned_set(clean, attacked, p, seed=1)
    assert len(s) == 1000 and torch.equal(s.y, clean[1])
    for k in range(10):
        m = s.y == k
        assert int(s.attacked[m].sum()) == round(p * int(m.sum()))
    assert torch.equal(s.x[s.attacked], attacked[0][s.attacked])
    assert torch.equal(s.x[~s.attacked], clean[0][~s.attacked])
    if p == 0:
        assert torch.equal(s.x, clean[0])
    if p == 1:
        assert torch.equal(s.x, attacked[0])


def test_reproducible_and_nested():
    clean, attacked = _sets()
    a = poisoned_set(clean, attacked, 0.3, seed=4)
    b = poisoned_set(clean, attacked, 0.3, seed=4)
    c = poisoned_set(clean, attacked, 0.3, seed=5)
    big = poisoned_set(clean, attacked, 0.6, seed=4)
    assert torch.equal(a.attacked, b.attacked) and not torch.equal(a.attacked, c.attacked)
    assert bool((big.attacked | ~a.attacked).all())  # attacked at 0.3 stays attacked at 0.6


def test_only_successful():
    clean, attacked = _sets()
    ok = attacked[2]
    s = poisoned_set(clean, attacked, 1.0, only_successful=True)
    assert len(s) == int(ok.sum()) and bool(s.attacked.all())
    assert torch.equal(s.index, ok.nonzero().squeeze(1))
    assert torch.equal(s.x, attacked[0][ok])
    s0 = poisoned_set(clean, attacked, 0.0, only_successful=True)
    assert torch.equal(s0.x, clean[0][ok]) and not bool(s0.attacked.any())


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.3", True])
def test_bad_fraction(p):
    clean, attacked = _sets(20)
    with pytest.raises(ValueError, match="p must be in"):
        poisoned_set(clean, attacked, p)


def test_mismatched_inputs():
    clean, attacked = _sets(20)
    with pytest.raises(ValueError, match="labels"):
        poisoned_set(clean, (attacked[0], (attacked[1] + 1) % 10), 0.5)
    with pytest.raises(ValueError, match="do not match"):
        poisoned_set(clean, (attacked[0][:10], attacked[1][:10]), 0.5)
    with pytest.raises(ValueError, match="success mask"):
        poisoned_set(clean, attacked[:2], 0.5, only_successful=True)
