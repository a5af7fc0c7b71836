import numpy as np
import pytest
import torch
from conftest import cpu_variants

from ddmini import metrics

# The OpenMP kernels run on several threads here even in a one-thread test worker (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("all_threads")

scipy_linalg = pytest.importorskip("scipy.linalg")
BACKENDS = cpu_variants() + ["linalg", "torch"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_cov(d, n=None, gen=None, scale=1.0):
    n = n or 3 * d
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) @ (
        torch.eye(d, dtype=torch.float64) + 0.3 * torch.randn(d, d, generator=gen, dtype=torch.float64)
    )
    return metrics.mean_cov(x * scale)


def scipy_trace_sqrt(c1, c2):
    return float(np.trace(scipy_linalg.sqrtm(c1.numpy() @ c2.numpy())).real)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("d", [1, 2, 16, 64, 128])
def test_trace_sqrt_matches_scipy(backend, d):
    g = torch.Generator().manual_seed(d)
    pairs = [(random_cov(d, gen=g)[1], random_cov(d, gen=g)[1]) for _ in range(4)]
    c1 = torch.stack([p[0] for p in pairs])
    c2 = torch.stack([p[1] for p in pairs])
    got = metrics.trace_sqrt_product(c1, c2, backend=backend)
    ref = torch.tensor([scipy_trace_sqrt(a, b) for a, b in pairs], dtype=torch.float64)
    assert got.dtype == torch.float64 and got.shape == (4,)
    assert ((got - ref).abs() / ref.abs()).max() <= 1e-6


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_analytic_cases(backend):
    d = 5
    mu1 = torch.randn(d, dtype=torch.float64)
    mu2 = torch.randn(d, dtype=torch.float64)
    c = random_cov(d)[1]
    # equal covariances: FD = |mu1 - mu2|^2
    fd = metrics.frechet_distance(mu1, c, mu2, c, backend=backend)
    assert fd.ndim == 0
    torch.testing.assert_close(fd, ((mu1 - mu2) ** 2).sum(), rtol=1e-9, atol=1e-9)
    # diagonal covariances: FD = sum (sqrt(a) - sqrt(b))^2
    a, b = torch.rand(d, dtype=torch.float64) + 0.1, torch.rand(d, dtype=torch.float64) + 0.1
    fd = metrics.frechet_distance(mu1, torch.diag(a), mu1, torch.diag(b), backend=backend)
    torch.testing.assert_close(fd, ((a.sqrt() - b.sqrt()) ** 2).sum(), rtol=1e-9, atol=1e-12)
    # a zero covariance: tr sqrt = 0
    z = torch.zeros(d, d, dtype=torch.float64)
    assert float(metrics.trace_sqrt_product(z, c, backend=backend)) == 0.0


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_rank_deficient_is_finite_and_nonnegative(backend):
    g = torch.Generator().manual_seed(1)
    d = 64
    feats_a = torch.randn(20, d, generator=g)  # n < d: singular covariances
    feats_b = torch.randn(30, d, generator=g) + 0.5
    fd = metrics.frechet_from_features(feats_a, feats_b, backend=backend)
    assert torch.isfinite(fd) and fd >= 0
    mu_a, ca = metrics.mean_cov(feats_a)
    mu_b, cb = metrics.mean_cov(feats_b)
    ts = metrics.trace_sqrt_product(ca, cb, backend=backend)
    ref = scipy_trace_sqrt(ca, cb)
    assert abs(float(ts) - ref) / ref < 1e-5  # scipy's sqrtm is itself inexact here
    # identical features: distance ~ 0
    assert float(metrics.frechet_from_features(feats_a, feats_a, backend=backend)) < 1e-6


def test_backends_agree_on_batches():
    g = torch.Generator().manual_seed(2)
    c1 = torch.stack([random_cov(32, gen=g)[1] for _ in range(10)])
    c2 = torch.stack([random_cov(32, gen=g)[1] for _ in range(10)])
    torch.testing.assert_close(
        metrics.trace_sqrt_product(c1, c2, backend="cpp"),
        metrics.trace_sqrt_product(c1, c2, backend="torch"),
        rtol=1e-9,
        atol=1e-9,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_linalg_backend_on_device_matches_reference(device, monkeypatch):
    # well-conditioned pairs take the Cholesky path; rank-deficient ones (n < d) the eigh fallback,
    # mixed in one batch so that both paths are filled in the same call
    g = torch.Generator().manual_seed(5)
    full = [random_cov(48, gen=g)[1] for _ in range(4)]
    low = [random_cov(48, n=20, gen=g)[1] for _ in range(3)]
    c1 = torch.stack([full[0], low[0], full[1], low[1]])
    c2 = torch.stack([full[2], full[3], low[2], low[2]])
    ref = metrics.trace_sqrt_product(c1, c2, backend="torch")
    got = metrics.trace_sqrt_product(c1.to(device), c2.to(device))  # auto: cpp on CPU, linalg on CUDA
    eigh_inputs = []
    real_eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda a: eigh_inputs.append(a.clone()) or real_eigh(a))
    lin = metrics.trace_sqrt_product(c1.to(device), c2.to(device), backend="linalg")
    monkeypatch.undo()
    for out in (got, lin):
        assert out.device.type == device and torch.isfinite(out).all() and (out >= 0).all()
        assert ((out.cpu() - ref).abs() / ref.abs()).max() <= 1e-6
    # the fallback ran, on exactly the pairs whose C1 is rank-deficient (entries 1 and 3), in one call
    assert len(eigh_inputs) == 1 and torch.equal(eigh_inputs[0].cpu(), c1[[1, 3]])


@pytest.mark.parametrize("d,n", [(37, 111), (100, 300), (203, 609), (100, 45), (203, 70)])
def test_blocked_cpp_matches_reference_off_tile_sizes(d, n):
    # sizes that are not multiples of the C++ code's 4 x 8 tiles and 32-column Cholesky panels, and
    # ranks (n - 1 < d) that end the pivoted Cholesky in the middle of a panel
    g = torch.Generator().manual_seed(d + n)
    c1 = torch.stack([random_cov(d, n=n, gen=g)[1] for _ in range(3)])
    c2 = torch.stack([random_cov(d, n=n, gen=g)[1] for _ in range(3)])
    got = metrics.trace_sqrt_product(c1, c2, backend="cpp")
    ref = metrics.trace_sqrt_product(c1, c2, backend="torch")
    assert torch.isfinite(got).all() and (got >= 0).all()
    rtol = 1e-9 if n > d else 1e-6
    assert ((got - ref).abs() / ref.abs()).max() <= rtol


def test_class_aware_frechet_distance():
    g = torch.Generator().manual_seed(3)
    K, d = 4, 6
    centers = torch.randn(K, d, generator=g) * 3
    labels_a = torch.arange(400) % K
    labels_b = torch.arange(300) % K
    fa = centers[labels_a] + torch.randn(400, d, generator=g)
    fb = centers[labels_b] + torch.randn(300, d, generator=g)
    mean, per_class = metrics.class_aware_frechet_distance(fa, labels_a, fb, labels_b)
    assert per_class.shape == (K,) and torch.isclose(mean, per_class.mean())
    # hard weights = per-class FD of the per-class samples (biased covariance: weights sum to 1)
    for k in range(K):
        xa, xb = fa[labels_a == k].double(), fb[labels_b == k].double()
        mua, mub = xa.mean(0), xb.mean(0)
        ca = (xa - mua).T @ (xa - mua) / len(xa)
        cb = (xb - mub).T @ (xb - mub) / len(xb)
        ref = metrics.frechet_distance(mua, ca, mub, cb, backend="torch")
        torch.testing.assert_close(per_class[k], ref, rtol=1e-9, atol=1e-9)
    # soft weights equal to one-hot give the same answer
    soft = torch.nn.functional.one_hot(labels_a, K).float()
    m2, _ = metrics.class_aware_frechet_distance(fa, soft, fb, labels_b)
    torch.testing.assert_close(m2, mean)
    # shifting one class's features raises only that class's distance
    fb2 = fb.clone()
    fb2[labels_b == 2] += 2.0
    _, pc2 = metrics.class_aware_frechet_distance(fa, labels_a, fb2, labels_b)
    assert pc2[2] > per_class[2] + 10 and torch.allclose(pc2[[0, 1, 3]], per_class[[0, 1, 3]])


def test_metric_bad_inputs():
    c = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="symmetric"):
        metrics.trace_sqrt_product(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.eye(2))
    with pytest.raises(ValueError, match="same shape"):
        metrics.trace_sqrt_product(c, torch.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        metrics.trace_sqrt_product(c * float("nan"), c)
    with pytest.raises(TypeError, match="floating"):
        metrics.trace_sqrt_product(torch.eye(3, dtype=torch.int64), c)
    with pytest.raises(ValueError, match="square"):
        metrics.trace_sqrt_product(torch.ones(3, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.mean_cov(torch.randn(1, 3))
    with pytest.raises(ValueError, match="zero total weight"):
        metrics.class_aware_frechet_distance(
            torch.randn(10, 3), torch.zeros(10, dtype=torch.long), torch.randn(10, 3), torch.arange(10) % 2
        )
    with pytest.raises(ValueError, match="non-negative"):
        metrics.class_aware_frechet_distance(torch.randn(4, 3), -torch.ones(4, 2), torch.randn(4, 3), torch.ones(4, 2))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("which", ["cov1", "cov2"])
@pytest.mark.parametrize("bad", ["swap", "indefinite", "negative_direction"])
def test_covariance_that_is_not_psd_is_refused(backend, which, bad):
    # symmetric but not PSD: every backend used to clamp these to a distance of 0 or 1
    d = 6
    good = random_cov(d, gen=torch.Generator().manual_seed(1))[1]
    if bad == "swap":
        c = torch.zeros(d, d, dtype=torch.float64)
        c[0, 1] = c[1, 0] = 1.0
    elif bad == "indefinite":
        c = torch.ones(d, d, dtype=torch.float64) + torch.eye(d, dtype=torch.float64) * 0.5
        c[0, 0] = -0.5
    else:  # PSD but for one direction with eigenvalue -1e-3 of the largest
        w, V = torch.linalg.eigh(good)
        w[0] = -1e-3 * w[-1]
        c = (V * w) @ V.T
        c = 0.5 * (c + c.T)
    c1, c2 = (c, good) if which == "cov1" else (good, c)
    with pytest.raises(ValueError, match=f"{which} must be positive semi-definite"):
        metrics.frechet_distance(torch.zeros(d), c1, torch.zeros(d), c2, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_psd_within_round_off_is_accepted(backend):
    # rank-deficient covariances (fewer samples than dimensions) are PSD up to round-off
    g = torch.Generator().manual_seed(5)
    fa, fb = torch.randn(20, 64, generator=g), torch.randn(30, 64, generator=g)
    assert float(metrics.frechet_from_features(fa, fb, backend=backend)) > 0


def test_confusion_and_misclassification_refuse_out_of_range():
    with pytest.raises(ValueError, match=r"pred must be in \[0, 10\)"):
        metrics.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 10]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        metrics.misclassification(torch.tensor([10, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"pred must be in"):
        metrics.confusion_matrix(torch.tensor([0, 1]), torch.tensor([-1, 1]))
    with pytest.raises(TypeError, match="integer"):
        metrics.confusion_matrix(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    cm = metrics.confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]


def test_empty_inputs_are_value_errors():
    with pytest.raises(ValueError, match="at least 2"):
        metrics.frechet_from_features(torch.randn(0, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="feature dimension"):
        metrics.frechet_from_features(torch.randn(5, 0), torch.randn(5, 0))
    with pytest.raises(ValueError, match="must not be empty"):
        metrics.trace_sqrt_product(torch.zeros(0, 3, 3, dtype=torch.float64), torch.zeros(0, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-empty"):
        metrics.class_aware_frechet_distance(
            torch.randn(0, 3), torch.zeros(0, dtype=torch.long), torch.randn(4, 3), torch.arange(4) % 2
        )
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        metrics.class_weights(torch.tensor([0, 1, 2]), 2)
