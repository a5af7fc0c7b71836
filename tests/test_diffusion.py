import os
import signal
from dataclasses import replace

import pytest
import torch

from ddmini import diffusion, kernels, schedule, train, unet
from ddmini.config import UNET_PRESETS, DiffusionTrainConfig, SampleConfig


def live_unet(name="tiny", seed=0):
    """A U-Net whose predictions depend on x, t and the label: a fresh one outputs zeros (its output layer
    starts at zero), with which every sampler and guidance scale would give the same images."""
    torch.manual_seed(seed)
    m = unet.build(name).eval()
    with torch.no_grad():
        for w in m.parameters():
            w.add_(0.05 * torch.randn_like(w))
    return m


def test_one_training_step_reduces_loss_on_fixed_batch():
    torch.manual_seed(0)
    m = unet.build("tiny")
    d = diffusion.Diffusion(T=100)
    x0 = torch.rand(16, 1, 28, 28) * 2 - 1
    y = torch.arange(16) % 10
    t = torch.randint(0, 100, (16,))
    noise = torch.randn_like(x0)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    first = d.loss(m, x0, y, t, noise)
    first.backward()
    opt.step()  # one small gradient step
    assert d.loss(m, x0, y, t, noise) < first.detach()


def test_training_timesteps_low_t_share():
    def g():
        return torch.Generator().manual_seed(3)

    plain = train._timesteps(_tiny_train_cfg(batch_size=4000, T=1000), g())
    # share 0 draws exactly what uniform sampling draws (old runs and their resume stay reproducible)
    assert torch.equal(plain, torch.randint(0, 1000, (4000,), generator=g()))
    assert 0.07 < (plain < 100).float().mean() < 0.13
    all_low = train._timesteps(_tiny_train_cfg(batch_size=4000, T=1000, low_t_share=1.0, low_t_max=40), g())
    assert int(all_low.max()) < 40 and int(all_low.min()) >= 0
    half = train._timesteps(_tiny_train_cfg(batch_size=4000, T=1000, low_t_share=0.5, low_t_max=100), g())
    assert 0.5 < (half < 100).float().mean() < 0.6  # 0.5 + 0.5 * 0.1 expected
    assert int(half.max()) >= 900  # the rest still covers [0, T)


@pytest.mark.parametrize(
    "bad", [dict(low_t_share=-0.1), dict(low_t_share=1.5), dict(low_t_max=0), dict(low_t_share=0.5, low_t_max=51)]
)
def test_training_timestep_config_errors(bad):
    with pytest.raises(ValueError, match="low_t"):
        _tiny_train_cfg(**bad).validate()


def _tiny_train_cfg(**kw):
    return DiffusionTrainConfig(**{**dict(steps=8, batch_size=8, warmup=2, checkpoint_every=3, T=50), **kw})


def test_learning_rate_schedules():
    const = _tiny_train_cfg(steps=100, warmup=10, lr=1e-3)
    assert [train.learning_rate(const, s) for s in (0, 4, 9)] == pytest.approx([1e-4, 5e-4, 1e-3])
    assert train.learning_rate(const, 10) == train.learning_rate(const, 99) == 1e-3
    # the default reproduces the rates of runs cached before lr_schedule existed, bit for bit
    plain = _tiny_train_cfg(steps=12000, warmup=200, lr=2e-3)
    assert all(train.learning_rate(plain, s) == plain.lr * min(1.0, (s + 1) / plain.warmup) for s in range(400))
    cos = replace(const, lr_schedule="cosine")
    assert [train.learning_rate(cos, s) for s in (0, 9, 10)] == pytest.approx([1e-4, 1e-3, 1e-3])
    assert train.learning_rate(cos, 55) == pytest.approx(5e-4)  # half-way through the decay
    assert train.learning_rate(cos, 100) == pytest.approx(0.0, abs=1e-15)
    rates = [train.learning_rate(cos, s) for s in range(10, 101)]
    assert all(a > b for a, b in zip(rates, rates[1:]))  # strictly decreasing after warm-up
    assert train.learning_rate(replace(cos, warmup=0), 0) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="lr_schedule"):
        replace(cos, lr_schedule="step").validate()


def test_every_named_choice_is_implemented():
    """config names each choice once; the implementations must offer exactly those names."""
    from ddmini.attacks import ATTACKS
    from ddmini.config import ATTACK_NAMES, LOSS_WEIGHTINGS, SAMPLERS, SCHEDULES

    assert set(ATTACKS) == set(ATTACK_NAMES)
    for name in SCHEDULES:
        table = schedule.make(name, 10)
        assert table.dtype == torch.float64 and table.shape == (10,)
    d, net = diffusion.Diffusion(T=10), unet.UNet(UNET_PRESETS["tiny"]).eval()
    for name in SAMPLERS:
        x = d.sample(net, torch.tensor([0, 1]), SampleConfig(sampler=name, steps=2, guidance=1.0))
        assert x.shape == (2, 1, 28, 28)
    x0, t = torch.zeros(2, 1, 28, 28), torch.tensor([1, 5])
    for name in LOSS_WEIGHTINGS:
        assert torch.isfinite(d.loss(net, x0, torch.tensor([0, 1]), t, torch.randn(2, 1, 28, 28), name))


def test_new_knob_at_its_default_keeps_cache_keys():
    from ddmini.config import key_dict, to_dict

    cfg = DiffusionTrainConfig()
    knobs = ("lr_schedule", "snr_gamma", "fit_minutes", "fused_norm")  # added after runs were cached
    old = {k: v for k, v in to_dict(cfg).items() if k not in knobs}  # a config from before the knobs
    assert key_dict(cfg) == old
    assert key_dict(replace(cfg, lr_schedule="cosine"))["lr_schedule"] == "cosine"
    assert key_dict(replace(cfg, snr_gamma=2.0))["snr_gamma"] == 2.0
    assert key_dict(replace(cfg, fused_norm=False))["fused_norm"] is False


@pytest.mark.parametrize("lr_schedule", ["constant", "cosine"])
def test_exact_resume(tmp_path, monkeypatch, lr_schedule):
    x = torch.rand(40, 1, 28, 28)
    y = torch.arange(40) % 10
    mcfg = UNET_PRESETS["tiny"]

    def tcfg():
        return _tiny_train_cfg(lr_schedule=lr_schedule)

    full = train.train(mcfg, tcfg(), x, y, tmp_path / "full.pt", resume=False)
    calls = {"n": 0}
    real = train._ema_update

    def interrupt_at_5(ema, model, decay):  # Ctrl-C arrives in the middle of step 5
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        real(ema, model, decay)

    monkeypatch.setattr(train, "_ema_update", interrupt_at_5)
    with pytest.raises(KeyboardInterrupt):
        train.train(mcfg, tcfg(), x, y, tmp_path / "part.pt")
    monkeypatch.setattr(train, "_ema_update", real)
    assert train.load_checkpoint(tmp_path / "part.pt")["step"] == 5  # step 5 finished, then saved
    resumed = train.train(mcfg, tcfg(), x, y, tmp_path / "part.pt")
    assert resumed.step == full.step == 8
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("flag,native,want", [(True, True, True), (True, False, False), (False, True, False)])
def test_cpu_bf16_autocast_only_where_native(tmp_path, monkeypatch, flag, native, want):
    seen = []
    real_loss = diffusion.Diffusion.loss

    def spy(self, *a, **kw):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return real_loss(self, *a, **kw)

    monkeypatch.setattr(diffusion.Diffusion, "loss", spy)
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    st = train.train(
        UNET_PRESETS["tiny"], _tiny_train_cfg(steps=2, cpu_bf16=flag), x, y, tmp_path / "a.pt", resume=False
    )
    assert seen == [want, want]
    assert all(p.dtype == torch.float32 for p in st.model.parameters())  # weights stay float32
    assert all(torch.isfinite(p).all() for p in st.ema.parameters())


def test_train_rejects_bad_input(tmp_path):
    mcfg = UNET_PRESETS["tiny"]
    with pytest.raises(ValueError, match="images must be"):
        train.train(
            mcfg, _tiny_train_cfg(), torch.rand(4, 1, 20, 20), torch.zeros(4, dtype=torch.long), tmp_path / "a.pt"
        )
    with pytest.raises(ValueError, match="labels must be in"):
        train.train(mcfg, _tiny_train_cfg(), torch.rand(4, 1, 28, 28), torch.full((4,), 10), tmp_path / "a.pt")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a ddmini checkpoint"):
        train.train(
            mcfg, _tiny_train_cfg(), torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long), tmp_path / "bad.pt"
        )


def test_ddim_full_eta1_matches_ancestral():
    """DDIM with S = T and eta = 1 is the ancestral sampler (variance "small"), step for step."""
    ac = schedule.make("linear", 50)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 5, 5, generator=g)
    a, b = x.clone(), x.clone()
    for t in range(49, -1, -1):
        eps = torch.randn(x.shape, generator=g)
        noise = torch.randn(x.shape, generator=g)
        a = kernels.ddpm_step(a, eps, t, ac, noise)
        b = kernels.ddim_step(b, eps, t, t - 1, ac, eta=1.0, noise=noise)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_samplers_agree_and_stay_in_range():
    m = live_unet()
    d = diffusion.Diffusion(T=20)
    labels = diffusion.balanced_labels(6)
    # DDIM with all T steps and eta = 1 is the ancestral sampler; both draw the same Philox noise per step
    a = d.sample(m, labels, SampleConfig(sampler="ddpm", guidance=1.0, seed=5))
    b = d.sample(m, labels, SampleConfig(sampler="ddim", steps=20, eta=1.0, guidance=1.0, seed=5))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    outs = {}
    for kw in (
        dict(sampler="ddim", steps=5, guidance=3.0),
        dict(sampler="ddim", steps=5, guidance=1.0),
        dict(sampler="ddpm", guidance=1.0),
    ):
        out = d.sample(m, labels, SampleConfig(seed=1, **kw))
        assert out.shape == (6, 1, 28, 28) and float(out.min()) >= 0 and float(out.max()) <= 1
        assert torch.equal(out, d.sample(m, labels, SampleConfig(seed=1, **kw)))  # seeded
        outs[kw["sampler"], kw["guidance"]] = out
    # guidance and the sampler change the images (a dead U-Net would make all three equal)
    assert (outs["ddim", 3.0] - outs["ddim", 1.0]).abs().max() > 1e-3
    assert (outs["ddpm", 1.0] - outs["ddim", 1.0]).abs().max() > 1e-3
    assert not torch.equal(
        outs["ddim", 1.0], d.sample(m, labels, SampleConfig(sampler="ddim", steps=5, guidance=1.0, seed=2))
    )


@pytest.mark.parametrize("split", [True, False])
def test_guided_prediction_one_call_or_two(split):
    m = live_unet()
    d = diffusion.Diffusion(T=50)
    d.guided_split = split
    x, y = torch.randn(5, 1, 28, 28), torch.tensor([0, 3, 9, 1, 1])
    with torch.no_grad():
        tt = torch.full((5,), 17)
        cond, uncond = m(x, tt, y), m(x, tt, torch.full_like(y, m.null_label))
        got = d._eps(m, x, 17, y, 2.5, m.null_label)
    assert not torch.allclose(cond, uncond)
    torch.testing.assert_close(got, uncond + 2.5 * (cond - uncond), atol=1e-5, rtol=1e-5)


def test_sampler_errors():
    m = unet.build("tiny")
    d = diffusion.Diffusion(T=20)
    for kw, msg in (
        (dict(sampler="euler"), "sampler"),
        (dict(steps=21), "steps"),
        (dict(guidance=-1.0), "guidance"),
        (dict(guidance=float("inf")), "guidance"),
        (dict(guidance=1e30), "guidance"),
        (dict(eta=float("inf")), "eta"),
        (dict(eta=float("nan")), "eta"),
    ):
        with pytest.raises(ValueError, match=msg):
            d.sample(m, diffusion.balanced_labels(2), SampleConfig(**kw))
    with pytest.raises(ValueError, match="labels"):
        d.sample(m, torch.tensor([10]))


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_sampler_refuses_to_return_nan(guidance):
    m = unet.build("tiny")
    with torch.no_grad():
        next(m.parameters()).fill_(float("nan"))  # weights gone bad: every prediction NaN
    with pytest.raises(ValueError, match="NaN or infinity in 4 of 4 images"):
        diffusion.Diffusion(T=20).sample(m, diffusion.balanced_labels(4), SampleConfig(steps=3, guidance=guidance))


def test_every_sampler_update_goes_through_the_kernels(monkeypatch):
    m = unet.build("tiny")
    d = diffusion.Diffusion(T=10)
    calls = {"ddpm": 0, "ddim": 0}
    for name in calls:
        real = getattr(kernels, f"{name}_step")

        def spy(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(kernels, f"{name}_step", spy)
    d.sample(m, diffusion.balanced_labels(2), SampleConfig(sampler="ddpm"))
    d.sample(m, diffusion.balanced_labels(2), SampleConfig(sampler="ddim", steps=4))
    assert calls == {"ddpm": 10, "ddim": 4}


def test_sampling_stage_runs_the_fused_channels_last_model_and_gives_the_plain_models_images(monkeypatch):
    """samples.generate samples on a CPU with channels_last and the fused GroupNorm + SiLU: the images of the
    plain model to float32 rounding (same seeds), and the model's own fused setting is restored after."""
    from ddmini import samples

    torch.manual_seed(0)
    net = unet.UNet(UNET_PRESETS["tiny"]).eval()
    for p in net.parameters():
        if not p.abs().sum():
            torch.nn.init.normal_(p, std=0.05)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    cfg = SampleConfig(steps=5, batch_size=4, guidance=2.0, seed=3)
    plain = diffusion.Diffusion().sample(net, labels, cfg)
    fused, calls = kernels.group_norm_silu, []
    monkeypatch.setattr(kernels, "group_norm_silu", lambda *a, **k: calls.append(1) or fused(*a, **k))
    imgs, secs = samples.generate(net, DiffusionTrainConfig(), labels, cfg, device="cpu")
    assert calls and net.fused_norm is False and secs > 0
    assert any(
        p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in net.parameters()
    )  # the convolutions' weights went channels_last
    assert (imgs - plain).abs().max() < 1e-4
