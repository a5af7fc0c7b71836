"""The fused noise-schedule steps and the fused GroupNorm + SiLU against their pure-PyTorch references
(ddmini.reference), forward and (GroupNorm + SiLU) backward.

Accuracy rule (as flash-attention's): a kernel's error against a float64 evaluation of the formula is
at most twice the float32 torch reference's error, plus a few ulps of the result's scale.
"""

import pytest
import torch
from conftest import cpu_variants

from ddmini import kernels, reference, schedule
from ddmini._ext import HAS_CPP, HAS_CUDA

# The OpenMP kernels run on several threads here even in a one-thread test worker (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("all_threads")

BACKENDS = cpu_variants() + (["cuda"] if HAS_CUDA and torch.cuda.is_available() else [])
SIZES = [1, 7, 4096, 1_000_003]
T = 1000


def device_of(backend):
    return "cuda" if backend == "cuda" else "cpu"


def f64(*ts):
    return [None if t is None else t.double() for t in ts]


def assert_kernel_accuracy(got, ref32, ref64):
    scale = ref64.abs().max().item() + 1e-30
    err_kernel = (got.double() - ref64).abs().max().item()
    err_torch = (ref32.double() - ref64).abs().max().item()
    assert err_kernel <= 2 * err_torch + 4 * 1.2e-7 * scale, (err_kernel, err_torch, scale)


def inputs(size, backend, per_sample, batch=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = batch or (1 if size < 8 else 4)
    n = max(1, size // B) if size >= 8 else size
    shape = (B, n) if size >= 8 else (1, size)
    dev = device_of(backend)
    x, e, z = (torch.randn(shape, generator=g).to(dev) for _ in range(3))
    Bs = shape[0]
    t = torch.randint(0, T, (Bs,), generator=g).to(dev) if per_sample else int(torch.randint(0, T, (1,), generator=g))
    return x, e, z, t


@pytest.fixture(params=["linear", "cosine"])
def table(request):
    return schedule.make(request.param, T)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("per_sample", [True, False])
def test_q_sample(backend, size, per_sample, table):
    x, _, z, t = inputs(size, backend, per_sample)
    ac = table.to(device_of(backend))
    got = kernels.q_sample(x, z, t, ac, backend=backend)
    ref32 = reference.q_sample(x, z, t, ac)
    ref64 = reference.q_sample(*f64(x, z), t, ac)
    assert_kernel_accuracy(got, ref32, ref64)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_step(backend, size, per_sample, variance, table):
    x, e, z, t = inputs(size, backend, per_sample)
    ac = table.to(device_of(backend))
    got = kernels.ddpm_step(x, e, t, ac, z, variance, backend=backend)
    ref32 = reference.ddpm_step(x, e, t, ac, z, variance)
    ref64 = reference.ddpm_step(*f64(x, e), t, ac, z.double(), variance)
    assert_kernel_accuracy(got, ref32, ref64)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step(backend, size, per_sample, eta, table):
    x, e, z, t = inputs(size, backend, per_sample)
    t_prev = t - 37  # some negative: abar_prev = 1
    ac = table.to(device_of(backend))
    got = kernels.ddim_step(x, e, t, t_prev, ac, eta, z, backend=backend)
    ref32 = reference.ddim_step(x, e, t, t_prev, ac, eta, z)
    ref64 = reference.ddim_step(*f64(x, e), t, t_prev, ac, eta, z.double())
    assert_kernel_accuracy(got, ref32, ref64)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_timestep_extremes(backend, table):
    dev = device_of(backend)
    ac = table.to(dev)
    x, e, z = (torch.randn(3, 50, device=dev) for _ in range(3))
    for t in (0, T - 1):
        for op, args in [
            ("q_sample", lambda *v: (v[0], v[2], t, ac)),
            ("ddpm_step", lambda *v: (v[0], v[1], t, ac, v[2])),
            ("ddim_step", lambda *v: (v[0], v[1], t, t - 1, ac, 1.0, v[2])),
        ]:
            got = getattr(kernels, op)(*args(x, e, z), backend=backend)
            assert_kernel_accuracy(
                got, getattr(reference, op)(*args(x, e, z)), getattr(reference, op)(*args(*f64(x, e, z)))
            )
    # no noise is added at t = 0: the noise tensor must not matter
    a = kernels.ddpm_step(x, e, 0, ac, z, backend=backend)
    b = kernels.ddpm_step(x, e, 0, ac, torch.zeros_like(z), backend=backend)
    assert torch.equal(a, b)
    # mixed per-sample t with 0 and T-1
    t = torch.tensor([0, T - 1, 500], device=dev)
    assert_kernel_accuracy(
        kernels.ddpm_step(x, e, t, ac, z, backend=backend),
        reference.ddpm_step(x, e, t, ac, z),
        reference.ddpm_step(*f64(x, e), t, ac, z.double()),
    )


def test_q_sample_analytic():
    ac = torch.tensor([0.25, 0.04], dtype=torch.float64)
    x0, z = torch.full((2, 3), 2.0), torch.full((2, 3), 1.0)
    got = kernels.q_sample(x0, z, torch.tensor([0, 1]), ac)
    expect = torch.tensor([[0.5 * 2 + 0.75**0.5] * 3, [0.2 * 2 + 0.96**0.5] * 3])
    torch.testing.assert_close(got, expect)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("alias", ["x", "eps", "noise"])
def test_out_aliasing(backend, alias, table):
    # t = 999 of the cosine schedule has alphas_cumprod 2.4e-9: DDIM's x0 estimate divides by ~5e-5,
    # so results are judged against float64 math (assert_kernel_accuracy), not a fixed tolerance
    dev = device_of(backend)
    ac = table.to(dev)
    x, e, z = (torch.randn(4, 1, 28, 28, device=dev) for _ in range(3))
    t = torch.tensor([1, 10, 100, 999], device=dev)
    refs = [
        (reference.ddpm_step, lambda *v: (v[0], v[1], t, ac, v[2])),
        (reference.ddim_step, lambda *v: (v[0], v[1], t, t - 50, ac, 0.7, v[2])),
        (reference.q_sample, lambda *v: (v[0], v[2], t, ac)),
    ]
    for fn, (ref, args) in zip(
        [
            lambda x_, e_, z_, o: kernels.ddpm_step(x_, e_, t, ac, z_, out=o, backend=backend),
            lambda x_, e_, z_, o: kernels.ddim_step(x_, e_, t, t - 50, ac, 0.7, z_, out=o, backend=backend),
            lambda x_, e_, z_, o: kernels.q_sample(x_, z_, t, ac, out=o, backend=backend),
        ],
        refs,
    ):
        xs, es, zs = x.clone(), e.clone(), z.clone()
        target = {"x": xs, "eps": es, "noise": zs}[alias]
        res = fn(xs, es, zs, target)
        assert res.data_ptr() == target.data_ptr()
        assert_kernel_accuracy(res, ref(*args(x, e, z)), ref(*args(*f64(x, e, z))))


def test_ddim_full_chain_equals_ddpm_when_eta_is_one():
    # With S = T and eta = 1, DDIM's sigma equals DDPM's "small" sigma, so the steps coincide.
    ac = schedule.make("linear", T)
    x, e, z = (torch.randn(2, 100) for _ in range(3))
    for t in (0, 1, 500, T - 1):
        torch.testing.assert_close(
            kernels.ddim_step(x, e, t, t - 1, ac, 1.0, z),
            kernels.ddpm_step(x, e, t, ac, z, "small"),
            rtol=2e-5,
            atol=2e-5,
        )


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_bad_inputs(backend):
    ac = schedule.make("linear", T)
    x = torch.randn(4, 10)
    e, z = torch.randn_like(x), torch.randn_like(x)
    cases = [
        (TypeError, "float32", lambda: kernels.q_sample(x.double(), z, 3, ac, backend=backend)),
        (TypeError, "float32", lambda: kernels.ddpm_step(x, e.half(), 3, ac, z, backend=backend)),
        (ValueError, "contiguous", lambda: kernels.q_sample(torch.randn(10, 4).t(), z, 3, ac, backend=backend)),
        (ValueError, "shape", lambda: kernels.ddpm_step(x, torch.randn(4, 11), 3, ac, z, backend=backend)),
        (ValueError, "shape", lambda: kernels.ddim_step(x, e, 3, 2, ac, out=torch.empty(5, 10), backend=backend)),
        (ValueError, r"\[0, 1000\)", lambda: kernels.q_sample(x, z, 1000, ac, backend=backend)),
        (ValueError, r"\[0, 1000\)", lambda: kernels.q_sample(x, z, -1, ac, backend=backend)),
        (
            ValueError,
            r"\[0, 1000\)",
            lambda: kernels.ddpm_step(x, e, torch.tensor([0, 1, 2, 1000]), ac, z, backend=backend),
        ),
        (
            ValueError,
            r"\[0, 1000\)",
            lambda: kernels.ddpm_step(x, e, torch.tensor([0, -3, 2, 9]), ac, z, backend=backend),
        ),
        (ValueError, "t_prev", lambda: kernels.ddim_step(x, e, 5, 1000, ac, backend=backend)),
        (
            ValueError,
            "one timestep per sample",
            lambda: kernels.q_sample(x, z, torch.tensor([1, 2]), ac, backend=backend),
        ),
        (
            TypeError,
            "int64",
            lambda: kernels.q_sample(x, z, torch.tensor([1, 2, 3, 4], dtype=torch.int32), ac, backend=backend),
        ),
        (TypeError, "int", lambda: kernels.q_sample(x, z, 1.5, ac, backend=backend)),
        (TypeError, "float64", lambda: kernels.q_sample(x, z, 3, ac.float(), backend=backend)),
        (TypeError, "1-D", lambda: kernels.q_sample(x, z, 3, ac[None], backend=backend)),
        (
            ValueError,
            r"\(0, 1\]",
            lambda: kernels.q_sample(x, z, 3, torch.cat([ac[:-1], ac.new_zeros(1)]), backend=backend),
        ),
        (ValueError, r"\(0, 1\]", lambda: kernels.q_sample(x, z, 3, ac + 0.5, backend=backend)),
        (ValueError, "variance", lambda: kernels.ddpm_step(x, e, 3, ac, z, "medium", backend=backend)),
        (ValueError, "eta", lambda: kernels.ddim_step(x, e, 3, 2, ac, -0.1, backend=backend)),
        (ValueError, "eta must be finite", lambda: kernels.ddim_step(x, e, 3, 2, ac, float("inf"), z, backend=backend)),
        (ValueError, "eta must be finite", lambda: kernels.ddim_step(x, e, 3, 2, ac, float("nan"), z, backend=backend)),
        (TypeError, "Tensor", lambda: kernels.q_sample(x.numpy(), z, 3, ac, backend=backend)),
        (
            ValueError,
            "batch dimension",
            lambda: kernels.q_sample(torch.tensor(1.0), torch.tensor(1.0), 3, ac, backend=backend),
        ),
    ]
    for exc, msg, call in cases:
        with pytest.raises(exc, match=msg):
            call()


def test_device_mismatch_and_backend_errors():
    ac = schedule.make("linear", T)
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="backend"):
        kernels.q_sample(x, x, 1, ac, backend="fortran")
    with pytest.raises((ValueError, RuntimeError), match="cuda"):
        kernels.q_sample(x, x, 1, ac, backend="cuda")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="alphas_cumprod is on"):
            kernels.q_sample(x.cuda(), x.cuda(), 1, ac)
        with pytest.raises(ValueError, match="noise is on"):
            kernels.q_sample(x.cuda(), x, 1, ac.cuda())


def test_auto_picks_compiled_kernel_on_cpu():
    assert HAS_CPP
    assert kernels._pick_backend("auto", torch.device("cpu")) == "cpp"


def test_empty_batch_is_fine():
    ac = schedule.make("linear", T)
    x = torch.empty(0, 5)
    assert kernels.q_sample(x, x, 3, ac).shape == (0, 5)


# ---- in-kernel Philox noise -------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("seed, offset", [(0, 0), (7, 3), (2**40 + 5, 2**33 + 1)])
def test_philox_normal_matches_reference(backend, size, seed, offset):
    like = torch.empty(size, device=device_of(backend))
    got = kernels.philox_normal(like, seed, offset, backend=backend).cpu()
    want = reference.philox_normal(size, seed, offset)
    assert (got - want).abs().max().item() < 2e-5  # float32 polynomials vs float64 log/cos/sin


def test_philox_reference_words_known_answer():
    """Philox4x32-10 known-answer vector (Random123 kat_vectors: counter 0, key 0)."""
    x = reference.philox4x32_10(torch.zeros(1, dtype=torch.int64), 0, 0)
    assert [int(v) for v in x] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def test_philox_statistics_and_thread_independence():
    big = torch.empty(2_000_000)
    n1 = kernels.philox_normal(big, 3, 9).clone()
    assert abs(n1.mean().item()) < 5e-3 and abs(n1.std().item() - 1) < 5e-3
    assert abs((n1 > 1.96).float().mean().item() - 0.025) < 1e-3
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        n2 = kernels.philox_normal(big, 3, 9)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(n1, n2)
    assert not torch.equal(n1[:1000], kernels.philox_normal(big, 3, 10)[:1000])


@pytest.mark.parametrize("backend", BACKENDS + ["torch"], indirect=True)
@pytest.mark.parametrize("size", [7, 4096, 1_000_003])
def test_steps_with_philox_noise_equal_steps_with_the_same_noise_tensor(backend, size, table):
    dev = device_of(backend)
    x, eps = torch.randn(size, device=dev), torch.randn(size, device=dev)
    ac = table.to(dev)
    p = kernels.PhiloxNoise(11, 4)
    noise = kernels.philox_normal(torch.empty(size, device=dev), 11, 4, backend="torch")
    for t in (0, 1, 500, T - 1):
        a = kernels.ddpm_step(x, eps, t, ac, p, backend=backend)
        b = kernels.ddpm_step(x, eps, t, ac, noise, backend=backend)
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-5)
    a = kernels.ddim_step(x, eps, 500, 400, ac, eta=0.7, noise=p, backend=backend)
    b = kernels.ddim_step(x, eps, 500, 400, ac, eta=0.7, noise=noise, backend=backend)
    torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize("bad", [(-1, 0), (0, 2**64), (1.5, 0), (True, 0)])
def test_philox_bad_seed(bad, table):
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="PhiloxNoise"):
        kernels.ddpm_step(x, x, 5, table, kernels.PhiloxNoise(*bad))


@pytest.mark.parametrize("backend", BACKENDS + ["torch"], indirect=True)
def test_table_and_inputs_made_in_inference_mode(backend):
    # samplers run under torch.inference_mode, so the schedule table they move to the device is an
    # inference tensor (no version counter); the table check must accept it, and the results must
    # equal those from ordinary tensors
    dev = device_of(backend)
    ac = schedule.make("linear", T).to(dev)
    g = torch.Generator().manual_seed(3)
    x, e = (torch.randn(4, 50, generator=g).to(dev) for _ in range(2))
    t = torch.tensor([0, 10, 500, T - 1], device=dev)
    expect = [
        kernels.ddim_step(x, e, t, t - 20, ac, backend=backend),
        kernels.ddpm_step(x, e, 7, ac, e, backend=backend),
    ]
    with torch.inference_mode():
        ac_inf = schedule.make("linear", T).to(dev)
        assert ac_inf.is_inference()
        for _ in range(2):  # the second call finds the table already checked
            got = [
                kernels.ddim_step(x, e, t, t - 20, ac_inf, backend=backend),
                kernels.ddpm_step(x, e, 7, ac_inf, e, backend=backend),
            ]
            for a, b in zip(got, expect):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        with pytest.raises(ValueError, match="t must lie"):
            kernels.q_sample(x, e, torch.tensor([0, 1, T, 2], device=dev), ac_inf, backend=backend)
        with pytest.raises(ValueError, match="t_prev must"):  # checked in the same read as t
            kernels.ddim_step(x, e, t, torch.tensor([-1, 0, T, 2], device=dev), ac_inf, backend=backend)


def test_philox_noise_agrees_across_cpu_variants():
    """Every CPU variant (AVX-512, AVX2 intrinsics, baseline) gives the same stream: the Philox words are
    exact integers, the normals differ only by float rounding of the same polynomials (FMA or not)."""
    from ddmini._ext import cpu_isas, forced_cpu_isa

    like = torch.empty(100_003)
    streams = {}
    for isa in cpu_isas():
        with forced_cpu_isa(isa):
            streams[isa] = kernels.philox_normal(like, 2**40 + 3, 17).clone()
    base = streams["baseline"]
    for isa, s in streams.items():
        assert (s - base).abs().max().item() <= 5e-6, isa
    assert len(streams) >= 1


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_philox_noise_is_standard_normal(backend):
    """10^6 draws: moments and a Kolmogorov-Smirnov test against N(0, 1) (fixed seed: deterministic)."""
    stats = pytest.importorskip("scipy.stats")
    n = kernels.philox_normal(torch.empty(1_000_000, device=device_of(backend)), 12345, 0).cpu().double().numpy()
    assert abs(n.mean()) < 4e-3 and abs(n.var() - 1) < 4e-3
    assert abs(stats.skew(n)) < 1e-2 and abs(stats.kurtosis(n)) < 2e-2
    ks = stats.kstest(n, "norm")
    assert ks.pvalue > 1e-3, ks


# ---- GroupNorm + affine + SiLU ---------------------------------------------------------------
GNS_SHAPES = [(4, 16, 28, 28, 8), (3, 64, 7, 7, 8), (5, 32, 14, 14, 8), (2, 6, 5, 3, 3), (2, 4, 1, 1, 2)]


def _gns_run(x, params, groups, backend, channels_last, gy):
    """Output and gradients (x, weight, bias, scale, shift) of group_norm_silu at x's dtype."""
    x = x.clone().requires_grad_()
    ps = [p.clone().requires_grad_() for p in params]
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = kernels.group_norm_silu(xin, groups, *ps, backend=backend)
    (y * gy.to(y.dtype)).sum().backward()
    return [y] + [x.grad] + [p.grad for p in ps]


def _gns_inputs(N, C, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=g, dtype=torch.float64) * 3 + 1
    params = [
        torch.randn(C, generator=g, dtype=torch.float64),
        torch.randn(C, generator=g, dtype=torch.float64),
        0.5 * torch.randn(N, C, generator=g, dtype=torch.float64),
        torch.randn(N, C, generator=g, dtype=torch.float64),
    ]
    return x, params, torch.randn(N, C, H, W, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("backend", cpu_variants(), indirect=True)
@pytest.mark.parametrize("shape", GNS_SHAPES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_group_norm_silu_forward_and_gradients(backend, shape, channels_last):
    *dims, groups = shape
    x, params, gy = _gns_inputs(*dims)
    ref64 = _gns_run(x, params, groups, "torch", channels_last, gy)
    ref32 = _gns_run(x.float(), [p.float() for p in params], groups, "torch", channels_last, gy)
    got = _gns_run(x.float(), [p.float() for p in params], groups, backend, channels_last, gy)
    assert got[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for g, r32, r64 in zip(got, ref32, ref64):
        assert g.dtype == torch.float32
        assert_kernel_accuracy(g, r32, r64)


@pytest.mark.parametrize("backend", cpu_variants(), indirect=True)
@pytest.mark.parametrize("shape", GNS_SHAPES[:2] + GNS_SHAPES[3:4])
@pytest.mark.parametrize("channels_last", [True, False])
def test_group_norm_silu_bfloat16(backend, shape, channels_last):
    """bfloat16 activations (a convolution's output under CPU autocast): computed in float32 and rounded once,
    as the reference (autocast's float32 GroupNorm, then bfloat16) does; coefficient gradients in float32."""
    *dims, groups = shape
    x, params, gy = _gns_inputs(*dims)
    xb, gyb = x.bfloat16(), gy.bfloat16()
    ref64 = _gns_run(xb.double(), params, groups, "torch", channels_last, gyb.double())
    ref32 = _gns_run(xb, [p.float() for p in params], groups, "torch", channels_last, gyb)
    got = _gns_run(xb, [p.float() for p in params], groups, backend, channels_last, gyb)
    assert [t.dtype for t in got] == [torch.bfloat16, torch.bfloat16] + [torch.float32] * 4
    for g, r32, r64 in zip(got, ref32, ref64):
        assert_kernel_accuracy(g, r32, r64)
    # rounded to nearest as torch rounds: the bfloat16 outputs differ only where float32 noise straddles a
    # rounding boundary (truncating instead would change about half of them)
    assert (got[0] != ref32[0]).float().mean() < 0.02


@pytest.mark.parametrize("backend", cpu_variants(), indirect=True)
@pytest.mark.parametrize("channels_last", [True, False])
def test_group_norm_silu_without_scale_and_saturation(backend, channels_last):
    """GroupNorm's affine only (the blocks' first norm); |z| up to ~1e4: silu(z) = z or 0, never inf/NaN."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 16, 9, 9, generator=g) * 5
    w, b = torch.randn(16, generator=g) * 2000, torch.randn(16, generator=g) * 10
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = kernels.group_norm_silu(x, 4, w, b, backend=backend)
    ref = reference.group_norm_silu(x.double(), 4, w.double().expand(3, 16), b.double().expand(3, 16))
    assert torch.isfinite(got).all()
    assert torch.allclose(got.double(), ref, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("backend", cpu_variants(), indirect=True)
@pytest.mark.parametrize("channels_last", [True, False])
def test_group_norm_silu_nan_stays_in_its_group(backend, channels_last):
    x = torch.randn(2, 8, 5, 5)
    x[1, 5, 2, 3] = float("nan")  # sample 1, group 2 of 4 (channels 4, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = kernels.group_norm_silu(x, 4, torch.ones(8), torch.zeros(8), backend=backend)
    bad = torch.isnan(y)
    assert bad[1, 4:6].all() and not bad[0].any() and not bad[1, :4].any() and not bad[1, 6:].any()


def test_group_norm_silu_auto_and_fallbacks():
    x = torch.randn(2, 8, 6, 6)
    w, b = torch.randn(8), torch.randn(8)
    if HAS_CPP:
        assert torch.allclose(
            kernels.group_norm_silu(x, 4, w, b), kernels.group_norm_silu(x, 4, w, b, backend="torch"), atol=1e-5
        )
    # a layout or dtype the kernel does not take goes to the torch reference under "auto"
    odd = torch.randn(2, 8, 6, 12)[..., ::2]
    assert torch.allclose(
        kernels.group_norm_silu(odd, 4, w, b),
        reference.group_norm_silu(odd, 4, w.expand(2, 8), b.expand(2, 8)),
        atol=1e-6,
    )
    assert kernels.group_norm_silu(x.double(), 4, w.double(), b.double()).dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(groups=3), "positive divisor"),
        (dict(groups=0), "positive divisor"),
        (dict(weight=torch.ones(4)), "weight must have shape"),
        (dict(scale=torch.ones(8)), "scale must have shape"),
        (dict(eps=0.0), "eps must be positive"),
        (dict(eps=float("nan")), "eps must be positive"),
        (dict(backend="nope"), "backend must be one of"),
        (dict(backend="cuda"), "CUDA|cuda"),
    ],
)
def test_group_norm_silu_bad_inputs(kwargs, match):
    args = dict(groups=4, weight=torch.ones(8), bias=torch.zeros(8), scale=None, shift=None)
    backend = kwargs.pop("backend", "auto")
    eps = kwargs.pop("eps", 1e-5)
    args.update(kwargs)
    with pytest.raises((ValueError, RuntimeError), match=match):
        kernels.group_norm_silu(torch.randn(2, 8, 4, 4), args.pop("groups"), **args, eps=eps, backend=backend)


@pytest.mark.skipif(not HAS_CPP, reason="ddmini._C not built")
def test_group_norm_silu_empty_batch():
    x = torch.randn(0, 8, 4, 4, requires_grad=True)
    y = kernels.group_norm_silu(x, 4, torch.ones(8), torch.zeros(8), backend="cpp")
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape


@pytest.mark.skipif(not HAS_CPP, reason="ddmini._C not built")
def test_group_norm_silu_cpp_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="float32 or bfloat16 CPU tensors"):
        kernels.group_norm_silu(torch.randn(2, 8, 4, 4, dtype=torch.float64), 4, backend="cpp")
    with pytest.raises(ValueError, match="4-D"):
        kernels.group_norm_silu(torch.randn(8, 4, 4), 4, backend="cpp")
