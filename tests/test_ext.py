import pytest
import torch

import ddmini
from ddmini import kernels
from ddmini._ext import HAS_CPP, HAS_CUDA

# The OpenMP kernels run on several threads here even in a one-thread test worker (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("all_threads")

CUDA = pytest.mark.skipif(not (HAS_CUDA and torch.cuda.is_available()), reason="needs CUDA kernels and a GPU")


def test_compiled_module_is_built():
    # Tests must run against the installed package with its extension, never a bare source tree.
    assert HAS_CPP, f"ddmini._C missing (imported from {ddmini.__file__}); install with `pip install .`"
    from ddmini import _C

    assert isinstance(_C.has_cuda(), bool) and _C.has_cuda() == HAS_CUDA
    assert isinstance(_C.has_openmp(), bool)


@pytest.mark.parametrize("n", [1, 7, 4096, 1_000_003])
def test_axpy_cpp_matches_torch(n):
    x, y = torch.randn(n), torch.randn(n)
    expect = kernels.axpy(1.7, x, y.clone(), backend="torch")
    got = kernels.axpy(1.7, x, y.clone(), backend="cpp")
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-6)


@CUDA
def test_axpy_cuda_matches_torch():
    x, y = torch.randn(100_003, device="cuda"), torch.randn(100_003, device="cuda")
    expect = kernels.axpy(-0.5, x, y.clone(), backend="torch")
    torch.testing.assert_close(kernels.axpy(-0.5, x, y.clone(), backend="cuda"), expect)


def test_axpy_bad_input():
    x = torch.randn(8)
    with pytest.raises(TypeError, match="float32"):
        kernels.axpy(1.0, x.double(), torch.randn(8))
    with pytest.raises(ValueError, match="same shape"):
        kernels.axpy(1.0, x, torch.randn(9))
    with pytest.raises(ValueError, match="contiguous"):
        kernels.axpy(1.0, torch.randn(4, 4).t(), torch.randn(4, 4))
    with pytest.raises(ValueError, match="backend"):
        kernels.axpy(1.0, x, torch.randn(8), backend="nope")


def test_binding_rejects_wrong_dtype_without_copying():
    from ddmini import _C

    y = torch.zeros(4)
    with pytest.raises(TypeError):
        _C.axpy_cpu(1.0, torch.ones(4, dtype=torch.float64).numpy(), y.numpy())
    assert y.eq(0).all()


def test_cpu_variants_are_listed_and_forced():
    from ddmini._ext import cpu_isa, cpu_isas, forced_cpu_isa, set_cpu_isa

    names = cpu_isas()
    assert names[-1] == "baseline" and set(names) <= {"avx512", "avx2", "baseline"}
    before = cpu_isa()
    assert before == names[0]  # the widest runs unless forced
    for name in names:
        with forced_cpu_isa(name):
            assert cpu_isa() == name
    assert cpu_isa() == before
    with pytest.raises(ValueError, match="one of avx512, avx2, baseline"):
        set_cpu_isa("sse9")
    if "avx512" not in names:
        with pytest.raises(ValueError, match="not supported"):
            set_cpu_isa("avx512")


@pytest.mark.parametrize("value, expect", [("baseline", "baseline"), ("auto", None), ("sse9", "error")])
def test_cpu_variant_environment_variable(value, expect, tmp_path):
    import os
    import subprocess
    import sys

    from ddmini._ext import cpu_isas

    code = "from ddmini._ext import cpu_isa; print(cpu_isa())"
    env = {**os.environ, "DDMINI_CPU_ISA": value}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    if expect == "error":
        assert r.returncode != 0 and "DDMINI_CPU_ISA" in r.stderr and "sse9" in r.stderr
    else:
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == (expect or cpu_isas()[0])


def test_openmp_build_is_what_ci_asked_for():
    # .ci/run also builds with -DDDMINI_OPENMP=OFF and runs the kernel tests on it with DDMINI_EXPECT_OPENMP=0,
    # so a build that quietly kept (or lost) OpenMP fails here
    import os

    from ddmini import _C

    want = os.environ.get("DDMINI_EXPECT_OPENMP")
    if want is None:
        pytest.skip("DDMINI_EXPECT_OPENMP not set (set by .ci/run for its no-OpenMP build)")
    assert _C.has_openmp() == (want == "1")
