import pytest
import torch

from ddmini import attacks, classifier
from ddmini.attacks.stage import AttackedSet, attack_dataset
from ddmini.config import AttackConfig

ALL = ["fgsm", "pgd_linf", "pgd_l2", "cw_l2"]


def _run(name, model, x, y, eps, **kw):
    if name == "fgsm":
        return attacks.fgsm(model, x, y, eps, **kw)
    if name == "pgd_linf":
        return attacks.pgd_linf(model, x, y, eps, eps / 4, 5, seed=0, **kw)
    if name == "pgd_l2":
        return attacks.pgd_l2(model, x, y, eps, eps / 4, 5, **kw)
    return attacks.cw_l2(model, x, y, c=5.0, steps=30, lr=0.05, **kw)


@pytest.fixture(scope="module")
def batch(mnist_small):
    _, _, xt, yt = mnist_small
    return xt[:200], yt[:200]


@pytest.mark.parametrize("name", ALL)
def test_box_and_ball(name, small_classifier, batch):
    x, y = batch
    eps = {"fgsm": 0.1, "pgd_linf": 0.1, "pgd_l2": 1.5, "cw_l2": None}[name]
    xa = _run(name, small_classifier, x, y, eps)
    assert xa.shape == x.shape and xa.dtype == x.dtype
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1
    l2, linf = attacks.norms(xa, x)
    if name in ("fgsm", "pgd_linf"):
        assert float(linf.max()) <= eps + 1e-6
    elif name == "pgd_l2":
        assert float(l2.max()) <= eps * (1 + 1e-5)
    assert (
        attacks.success(small_classifier, xa, y).float().mean() > attacks.success(small_classifier, x, y).float().mean()
    )


def test_model_left_untouched(small_classifier, batch):
    x, y = batch
    small_classifier.train()
    small_classifier.zero_grad(set_to_none=True)
    try:
        before = {k: v.clone() for k, v in small_classifier.state_dict().items()}
        attacks.pgd_l2(small_classifier, x[:20], y[:20], 1.0, 0.25, 3)
        assert small_classifier.training  # mode restored
        assert all(p.requires_grad and p.grad is None for p in small_classifier.parameters())
        after = small_classifier.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics not updated
    finally:
        small_classifier.eval()


@pytest.mark.parametrize("name", ["fgsm", "pgd_linf", "pgd_l2"])
def test_success_grows_with_eps(name, small_classifier, batch):
    x, y = batch
    scale = {"fgsm": [0.02, 0.1, 0.3], "pgd_linf": [0.02, 0.1, 0.3], "pgd_l2": [0.25, 1.0, 3.0]}[name]
    rates = [
        attacks.success(small_classifier, _run(name, small_classifier, x, y, e), y).float().mean().item() for e in scale
    ]
    assert rates[0] < rates[1] < rates[2], rates
    assert rates[2] > 0.8


def test_pgd_l2_deterministic_and_seeded(small_classifier, batch):
    x, y = batch
    a = attacks.pgd_l2(small_classifier, x, y, 1.0, 0.25, 4)
    b = attacks.pgd_l2(small_classifier, x, y, 1.0, 0.25, 4, batch_size=37)
    torch.testing.assert_close(a, b)  # deterministic, independent of batching
    r1 = attacks.pgd_l2(small_classifier, x, y, 1.0, 0.25, 4, random_start=True, seed=5)
    r2 = attacks.pgd_l2(small_classifier, x, y, 1.0, 0.25, 4, random_start=True, seed=5)
    r3 = attacks.pgd_l2(small_classifier, x, y, 1.0, 0.25, 4, random_start=True, seed=6)
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)
    l1, l2 = (
        attacks.pgd_linf(small_classifier, x, y, 0.1, 0.02, 3, seed=1),
        attacks.pgd_linf(small_classifier, x, y, 0.1, 0.02, 3, seed=1),
    )
    assert torch.equal(l1, l2)


def test_pgd_l2_matches_textbook_loop(small_classifier, batch):
    """One step by hand: normalised gradient, step, projection, clamp."""
    x, y = batch
    x, y = x[:10], y[:10]
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(small_classifier(xg), y, reduction="sum").backward()
    g = xg.grad
    step = x + 3.0 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    d = step - x
    d = d * torch.clamp(0.7 / d.flatten(1).norm(dim=1), max=1).view(-1, 1, 1, 1)
    want = (x + d).clamp(0, 1)
    small_classifier.zero_grad(set_to_none=True)
    torch.testing.assert_close(attacks.pgd_l2(small_classifier, x, y, 0.7, 3.0, 1), want)


@pytest.mark.parametrize("name", ALL)
def test_targeted_hits_targets(name, small_classifier, batch):
    x, y = batch
    x, y = x[:100], y[:100]
    target = (y + 1) % 10
    eps = {"fgsm": 0.3, "pgd_linf": 0.3, "pgd_l2": 4.0, "cw_l2": None}[name]
    if name == "pgd_linf":
        xa = attacks.pgd_linf(small_classifier, x, y, eps, 0.05, 20, seed=0, target=target)
    elif name == "pgd_l2":
        xa = attacks.pgd_l2(small_classifier, x, y, eps, 0.5, 20, target=target)
    elif name == "cw_l2":
        xa = attacks.cw_l2(small_classifier, x, y, c=50.0, steps=100, lr=0.1, target=target)
    else:
        xa = _run(name, small_classifier, x, y, eps, target=target)
    hit = attacks.success(small_classifier, xa, y, target=target).float().mean().item()
    assert hit > (0.2 if name == "fgsm" else 0.9), hit


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(eps=-1.0), "eps"),
        (dict(steps=0), "steps"),
        (dict(x=2.0), r"\[0, 1\]"),
        (dict(x=float("nan")), "NaN"),
        (dict(y="short"), "shape"),
        (dict(y="float"), "int64"),
        (dict(target="short"), "target"),
        (dict(alpha=float("inf")), "alpha"),
        (dict(eps=True), "not a bool"),
        (dict(steps=True), "not a bool"),
        (dict(y="ten"), r"\[0, 10\) \(the model has 10 outputs\)"),
    ],
)
def test_bad_inputs(small_classifier, bad, match):
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    kw = dict(eps=1.0, alpha=0.1, steps=2)
    if "x" in bad:
        x[0, 0, 0, 0] = bad["x"]
    if bad.get("y") == "short":
        y = y[:3]
    if bad.get("y") == "float":
        y = y.float()
    if bad.get("y") == "ten":
        y = torch.tensor([0, 1, 2, 10])
    target = y[:2] if bad.get("target") == "short" else None
    kw.update({k: v for k, v in bad.items() if k in kw})
    with pytest.raises((ValueError, TypeError), match=match):
        attacks.pgd_l2(small_classifier, x, y, kw["eps"], kw["alpha"], kw["steps"], target=target)


def test_fold_batchnorm_same_outputs(small_classifier, batch):
    x, _ = batch
    fast = classifier.fold_batchnorm(small_classifier)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    torch.testing.assert_close(fast(x), small_classifier(x), atol=1e-4, rtol=1e-4)


def test_scaled_success_against_direct_predictions(small_classifier, batch):
    x, y = batch
    xa = attacks.pgd_l2(small_classifier, x, y, 2.0, 0.5, 5)
    ok = attacks.success(small_classifier, xa, y) & ~attacks.success(small_classifier, x, y)
    x, xa, y = x[ok], xa[ok], y[ok]  # turned from right to wrong by the attack
    scales = (0.0, 0.3, 0.7, 1.0)
    got = attacks.scaled_success(small_classifier, x, xa, y, scales, batch_size=17)
    with torch.no_grad():
        want = [
            float((small_classifier((x + s * (xa - x)).clamp(0, 1)).argmax(1) != y).double().mean()) for s in scales
        ]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[-1] == 1.0  # every one of them succeeded with all of its perturbation
    assert got[0] == 0.0  # and none without it
    with pytest.raises(ValueError, match="x must have x_adv's shape"):
        attacks.scaled_success(small_classifier, x[:3], xa, y)
    with pytest.raises(ValueError, match="scale must be"):
        attacks.scaled_success(small_classifier, x, xa, y, (-0.5,))
    res = AttackedSet(
        x_adv=xa,
        y=y,
        pred=y,
        success=torch.ones_like(y, dtype=torch.bool),
        success_uint8=torch.ones_like(y, dtype=torch.bool),
        l2=torch.zeros(len(y)),
        linf=torch.zeros(len(y)),
        config=AttackConfig(),
    )
    m = res.margin(small_classifier, x, limit=5, scales=scales)
    assert m["images"] == 5 and m["still_misclassified"] == pytest.approx(
        attacks.scaled_success(small_classifier, x[:5], xa[:5], y[:5], scales)
    )


def test_stage_resumes_and_caches(small_classifier, batch, tmp_path, monkeypatch):
    x, y = batch
    cfg = AttackConfig(eps=1.0, steps=3, chunk_size=64)
    calls = []
    import ddmini.attacks.stage as stage

    real = stage.run_attack

    def counting(model, xb, yb, c, target=None):
        calls.append(xb.shape[0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # interrupted during the third chunk
        return real(model, xb, yb, c, target=target)

    monkeypatch.setattr(stage, "run_attack", counting)
    with pytest.raises(KeyboardInterrupt):
        attack_dataset(small_classifier, x, y, cfg, tmp_path, key="k1")
    assert len(list((tmp_path / "chunks").glob("*.pt"))) == 2
    calls.clear()
    res = attack_dataset(small_classifier, x, y, cfg, tmp_path, key="k1")
    assert calls == [64, 8]  # only the unfinished chunks ran
    monkeypatch.setattr(stage, "run_attack", real)
    whole = attack_dataset(small_classifier, x, y, cfg, tmp_path / "uninterrupted", key="k1")
    assert torch.equal(res.x_adv, whole.x_adv)  # resumed = run in one go, bit for bit
    # the stage is PGD-L2 on the classifier with its BatchNorm folded: the same attack up to float rounding,
    # which PGD's sign-sensitive steps can amplify in a few pixels (seen: 0.0064 in 10 of 156,800 values on an
    # AMX machine), so compare each image's perturbation as a whole, not pixel by pixel
    direct = attacks.pgd_l2(small_classifier, x, y, 1.0, cfg.step_size, 3)
    diff = (res.x_adv - direct).flatten(1).norm(dim=1)
    assert diff.max() < 0.05 * cfg.eps and diff.mean() < 1e-3, (diff.max(), diff.mean())
    assert torch.equal(res.success, attacks.success(small_classifier, res.x_adv, y))
    again = attack_dataset(small_classifier, x, y, cfg, tmp_path, key="k1")  # cached, nothing runs
    assert torch.equal(again.x_adv, res.x_adv) and not list((tmp_path / "chunks").glob("*.pt"))
    (tmp_path / "attacked.pt").write_bytes(b"garbage")  # corrupt artefact: recomputed, not trusted
    fresh = attack_dataset(small_classifier, x, y, cfg, tmp_path, key="k1")
    torch.testing.assert_close(fresh.x_adv, res.x_adv)
    assert AttackedSet.load(tmp_path / "attacked.pt").summary()["images"] == 200


def test_cli_attack_sweep_and_errors(data_dir, small_classifier, tmp_path, capsys):
    from ddmini.cli import main
    from ddmini.config import ClassifierConfig

    classifier.save(small_classifier, ClassifierConfig(width=8), tmp_path / "classifier.pt")
    args = [
        "attack",
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(tmp_path),
        "--split",
        "test",
        "--limit",
        "60",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--classifier",
        str(tmp_path / "classifier.pt"),
    ]
    with pytest.raises(SystemExit) as e:
        main(args + ["--eps", "0.5,3"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "| eps | success %" in out and "| 3 |" in out
    assert "still misclassified" in out and "s=0.9" in out
    assert len(list((tmp_path / "cache").glob("attack-*/attacked.pt"))) == 2
    for bad, msg in (
        (["--eps", "x"], "--eps must be"),
        (["--eps", "-1"], "eps must be in [0, 1000]"),
        (["--classifier", str(tmp_path / "none.pt")], "no classifier checkpoint"),
    ):
        with pytest.raises(SystemExit) as e:
            main(args[:-2] + bad if bad[0] == "--classifier" else args + bad)
        assert e.value.code == 1 and msg in capsys.readouterr().err


def test_success_refuses_labels_the_model_does_not_score(small_classifier):
    x = torch.rand(3, 1, 28, 28)
    with pytest.raises(ValueError, match=r"must be in \[0, 10\)"):
        attacks.success(small_classifier, x, torch.tensor([0, 1, 10]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ALL)
def test_attacks_return_the_input_dtype(name, dtype, small_classifier, batch):
    x, y = batch[0][:16].to(dtype), batch[1][:16]
    xa = _run(name, small_classifier, x, y, 1.0)
    assert xa.dtype == dtype and xa.shape == x.shape
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1
    ref = _run(name, small_classifier, x.float(), y, 1.0)  # the same attack on the same values, in float32
    assert torch.equal(xa, ref.to(dtype))  # computed in the model's dtype, rounded to the input's at the end
    assert attacks.success(small_classifier, xa, y).shape == (16,)
