"""Margin-seeking and targeted attacks (issue 44): the logit margin, PGD's margin and scale-robust objectives with
per-image stopping at kappa, targets (shift, random, K) through the attack stage, and a run's targeted section.
Each mode is checked against a plain implementation written here from the definitions, on a model ddmini never
trained (a seeded random MLP): a second reading of the same maths, not the code under test."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_one_line, run_cli

from ddmini import attacks
from ddmini.attacks.base import OBJECTIVE_SCALES, logit_margin
from ddmini.attacks.stage import succeeded, targets
from ddmini.config import AttackConfig


@pytest.fixture(scope="module")
def mlp_and_batch():
    torch.manual_seed(7)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 5))
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)  # the model's own labels: every image starts correctly classified
    return model.eval(), x, y


def _margin_ref(logits, y, target=None):
    """Top-2 reading of the margin: the best class other than k against k."""
    k = y if target is None else target
    top2 = logits.topk(2, dim=1)
    best_other = torch.where(top2.indices[:, 0] == k, top2.values[:, 1], top2.values[:, 0])
    own = logits[torch.arange(len(k)), k]
    return best_other - own if target is None else own - best_other


def _pgd_l2_ref(model, x, y, eps, alpha, steps, *, objective, kappa=0.0, target=None):
    """Plain PGD-L2 written from the definitions: ascend the objective, normalised step, project, clamp; an image
    whose margin has reached kappa (> 0) stays."""
    x0, xa = x.clone(), x.clone()
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        logits = model(xa)
        m = _margin_ref(logits, y, target)
        if objective == "ce":
            loss = F.cross_entropy(logits, y if target is None else target, reduction="sum")
            loss = loss if target is None else -loss
        else:
            terms = []
            for s in OBJECTIVE_SCALES if objective == "scaled" else (1.0,):
                ms = _margin_ref(model(x0 + s * (xa - x0)), y, target)
                terms.append(torch.minimum(ms, torch.tensor(kappa)) if kappa > 0 else ms)
            loss = torch.stack(terms).mean(0).sum()
        (g,) = torch.autograd.grad(loss, xa)
        step = xa + alpha * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        d = step - x0
        d = d * (eps / d.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0).view(-1, 1, 1, 1)
        new = (x0 + d).clamp(0, 1)
        if kappa > 0:
            new = torch.where((m >= kappa).view(-1, 1, 1, 1), xa, new)
        xa = new.detach()
    return xa


def test_the_logit_margin_is_the_best_other_class_against_the_own_or_the_target_against_the_best_other():
    z = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    y, t = torch.tensor([1, 0]), torch.tensor([2, 2])
    assert logit_margin(z, y).tolist() == [-3.0, 3.0]  # first correct by 3, second wrong by 3
    assert logit_margin(z, y, t).tolist() == [-4.0, 3.0]  # the target wins only in the second
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(100, 10, generator=g), torch.randint(0, 10, (100,), generator=g)
    t = torch.randint(0, 10, (100,), generator=g)
    assert torch.allclose(logit_margin(z, y), _margin_ref(z, y))
    assert torch.allclose(logit_margin(z, y, t), _margin_ref(z, y, t))


@pytest.mark.parametrize("objective, kappa", [("margin", 0.0), ("margin", 1.0), ("scaled", 0.0), ("scaled", 2.0)])
def test_pgd_l2_margin_objectives_agree_with_a_plain_implementation(mlp_and_batch, objective, kappa):
    model, x, y = mlp_and_batch
    got = attacks.pgd_l2(model, x, y, 1.0, 0.25, 6, objective=objective, margin=kappa)
    ref = _pgd_l2_ref(model, x, y, 1.0, 0.25, 6, objective=objective, kappa=kappa)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    if kappa > 0:  # kappa reached: the image stopped; never pushed far past it
        with torch.no_grad():
            m = logit_margin(model(got), y)
        assert bool((m > -100).all())


def test_the_margin_objective_goes_further_past_the_boundary_than_cross_entropy(mlp_and_batch):
    model, x, y = mlp_and_batch
    with torch.no_grad():
        ce = logit_margin(model(attacks.pgd_l2(model, x, y, 1.5, 0.3, 10)), y)
        mg = logit_margin(model(attacks.pgd_l2(model, x, y, 1.5, 0.3, 10, objective="margin")), y)
    assert float(mg.mean()) > float(ce.mean())


def test_targeted_pgd_agrees_with_a_plain_targeted_pgd_and_reaches_its_targets(mlp_and_batch):
    model, x, y = mlp_and_batch
    t = (y + 1) % 5
    got = attacks.pgd_l2(model, x, y, 3.0, 0.5, 10, target=t)
    torch.testing.assert_close(got, _pgd_l2_ref(model, x, y, 3.0, 0.5, 10, objective="ce", target=t))
    assert float(attacks.success(model, got, y, target=t).float().mean()) > 0.5
    got_m = attacks.pgd_l2(model, x, y, 3.0, 0.5, 10, target=t, objective="margin", margin=0.5)
    ref_m = _pgd_l2_ref(model, x, y, 3.0, 0.5, 10, objective="margin", kappa=0.5, target=t)
    torch.testing.assert_close(got_m, ref_m, rtol=1e-5, atol=1e-5)


def test_the_scaled_share_in_the_target_class_against_direct_predictions(mlp_and_batch):
    model, x, y = mlp_and_batch
    t = (y + 1) % 5
    xa = attacks.pgd_l2(model, x, y, 3.0, 0.5, 10, target=t)
    scales = (0.0, 0.5, 0.8, 1.0)
    got = attacks.scaled_success(model, x, xa, y, scales, batch_size=7, target=t)
    with torch.no_grad():
        want = [float((model((x + s * (xa - x)).clamp(0, 1)).argmax(1) == t).double().mean()) for s in scales]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[0] == 0.0 and got[-1] > 0.5  # none in the target without the perturbation, most with all of it
    wrong = attacks.scaled_success(model, x, xa, y, scales)
    assert all(a <= b for a, b in zip(got, wrong))  # in the target class is misclassified, not the other way round


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_targeted_pgd_agrees_with_torchattacks_targeted_pgd(mlp_and_batch, norm):
    """A peer's targeted PGD (torchattacks 3.5.1's PGDL2 / PGD in targeted mode, no random start) at equal
    parameters: the same images to float precision, and so the same share reaching its target."""
    ta = pytest.importorskip("torchattacks")
    model, x, y = mlp_and_batch
    t = (y + 1) % 5
    if norm == "l2":
        peer = ta.PGDL2(model, eps=3.0, alpha=0.5, steps=10, random_start=False)
        got = attacks.pgd_l2(model, x, y, 3.0, 0.5, 10, target=t)
    else:
        peer = ta.PGD(model, eps=0.3, alpha=0.05, steps=10, random_start=False)
        got = attacks.pgd_linf(model, x, y, 0.3, 0.05, 10, target=t, random_start=False)
    peer.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 5)
    theirs = peer(x, y)
    torch.testing.assert_close(got, theirs, rtol=1e-4, atol=1e-4)
    ours, peers = (float(attacks.success(model, a, y, target=t).float().mean()) for a in (got, theirs))
    assert ours == peers and ours > 0.5


def test_pgd_linf_and_fgsm_take_the_objective_too(mlp_and_batch):
    model, x, y = mlp_and_batch
    for fn in (
        lambda **kw: attacks.pgd_linf(model, x, y, 0.1, 0.02, 5, random_start=False, **kw),
        lambda **kw: attacks.fgsm(model, x, y, 0.1, **kw),
    ):
        plain, margin = fn(), fn(objective="margin")
        assert plain.shape == margin.shape and not torch.equal(plain, margin)
        assert float((margin - x).abs().max()) <= 0.1 + 1e-6
    with pytest.raises(ValueError, match="objective must be one of ce, margin, scaled"):
        attacks.pgd_l2(model, x, y, 1.0, 0.1, 2, objective="hinge")
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        attacks.pgd_l2(model, x, y, 1.0, 0.1, 2, margin=-1.0)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        attacks.pgd_l2(model, x, y, 1.0, 0.1, 2, margin=float("nan"))


def test_targets_shift_random_and_a_class_and_their_bad_inputs():
    y = torch.tensor([0, 1, 2, 9, 9])
    assert targets(AttackConfig(target="shift"), y, 10).tolist() == [1, 2, 3, 0, 0]
    r = targets(AttackConfig(target="random", seed=3), y, 10)
    assert bool((r != y).all()) and torch.equal(r, targets(AttackConfig(target="random", seed=3), y, 10))
    assert targets(AttackConfig(target="4"), y, 10).tolist() == [4] * 5
    assert targets(AttackConfig(), y, 10) is None
    with pytest.raises(ValueError, match="attack target 10 is not a class: the classifier has 10"):
        targets(AttackConfig(target="10"), y, 10)
    with pytest.raises(ValueError, match="every image is of class 9 already"):
        targets(AttackConfig(target="9"), torch.tensor([9, 9]), 10)
    for bad in ("left", "-1", "1.5"):
        with pytest.raises(ValueError, match="attack target must be shift, random or a class index K"):
            AttackConfig(target=bad).validate()
    with pytest.raises(ValueError, match="cw_l2 has its own margin"):
        AttackConfig(attack="cw_l2", margin=1.0).validate()
    # success: the target reached (never an image's own class), the margin reached where one is asked
    logits = torch.tensor([[0.0, 3.0, 0.0], [0.0, 1.0, 0.5], [4.0, 0.0, 0.0]])
    y, t = torch.tensor([0, 0, 0]), torch.tensor([1, 1, 0])
    assert succeeded(logits, y, AttackConfig(target="shift"), t).tolist() == [True, True, False]
    assert succeeded(logits, y, AttackConfig(target="shift", margin=1.0), t).tolist() == [True, False, False]
    assert succeeded(logits, y, AttackConfig(margin=1.0), None).tolist() == [True, True, False]  # 1 - 0 >= 1


def test_a_targeted_smoke_run_reports_the_share_in_the_target_class(data_dir, tmp_path, capsys):
    base = ["run", "--preset", "smoke", "--device", "cpu", "--data-dir", data_dir, "--run-dir", tmp_path]
    code, out, err = run_cli([*base, "--poison", "1", "--attack-target", "shift", "--attack-margin", "0.5"], capsys)
    assert code == 0, err
    where = tmp_path / "p1-margin0.5-target-shift"
    rep = json.loads((where / "report.json").read_text())
    t = rep["targeted"]
    assert t["mode"] == "shift" and set(t["by_guidance"]) == {"1", "3"}
    v = t["by_guidance"]["1"]
    assert v["n"] == 40 and 0 <= v["rate"] <= 1 and len(v["per_class"]) == 10
    assert rep["attack"]["target"] == "shift"
    md = (where / "report.md").read_text()
    assert "## Targeted (shift)" in md and "| still in their target class |" in md
    m = rep["attack"]["margin"]
    assert len(m["in_target"]) == len(m["scales"]) and all(
        a <= b for a, b in zip(m["in_target"], m["still_misclassified"])
    )
    assert "margin=0.5 target=shift" in out
    code, out, err = run_cli([*base, "--poison", "1", "--attack-target", "12"], capsys)
    assert_one_line(code, err, "attack target 12 is not a class: the classifier has 10")
    code, out, err = run_cli([*base, "--poison", "1", "--attack-margin", "-1"], capsys)
    assert_one_line(code, err, "margin")


def test_a_targeted_sweep_fits_the_share_in_the_target_class_against_p(data_dir, tmp_path, capsys):
    args = ["sweep", "--preset", "smoke", "--device", "cpu", "--data-dir", data_dir, "--run-dir", tmp_path]
    code, out, err = run_cli([*args, "--poison", "0,1", "--attack-target", "3", "--guidance-scales", "1"], capsys)
    assert code == 0, err
    (sweep,) = tmp_path.glob("sweep*/sweep.json")
    t = json.loads(sweep.read_text())["targeted"]
    assert t["mode"] == "3" and len(t["share"]) == 2 and "slope" in t["fit"]
    assert "## In their target class (3)" in sweep.with_name("sweep.md").read_text()
    assert "in their target class = " in out
    from PIL import Image

    with Image.open(sweep.with_name("sweep.png")) as im:  # a third panel: the share in the target class against p
        assert im.width == 3 * 420
