import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The MNIST directory: $DDMINI_DATA, else ../shared/data/mnist beside the repo."""
    path = Path(os.environ.get("DDMINI_DATA") or DEFAULT_DATA)
    if not (path / "train-labels-idx1-ubyte.gz").exists() and not (path / "train-labels-idx1-ubyte").exists():
        pytest.skip(f"MNIST not found in {path}; set DDMINI_DATA")
    return path


@pytest.fixture(scope="session")
def mnist_small(data_dir):
    """2,000 training and 1,000 test images as float tensors."""
    from ddmini import data

    x, y = data.load_mnist(data_dir, "train")
    xt, yt = data.load_mnist(data_dir, "test")
    return x[:2000].clone(), y[:2000].clone(), xt[:1000].clone(), yt[:1000].clone()


def cpu_variants() -> list[str]:
    """Every CPU kernel variant this machine runs, as backend names: "cpp-avx512", "cpp-avx2", ..."""
    from ddmini._ext import HAS_CPP, cpu_isas

    return [f"cpp-{isa}" for isa in cpu_isas()] if HAS_CPP else []


@pytest.fixture
def backend(request):
    """Indirect parametrisation of kernel tests: "cpp-<isa>" runs the compiled CPU kernels with that
    variant forced (so every variant the machine supports is tested, whichever it would pick) and
    yields "cpp"; any other name is passed through."""
    name = request.param
    if name.startswith("cpp-"):
        from ddmini._ext import forced_cpu_isa

        with forced_cpu_isa(name[4:]):
            yield "cpp"
    else:
        yield name


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DDMINI_QUIET", "1")
    torch.manual_seed(0)


def pytest_report_header(config):
    from ddmini._ext import HAS_CPP, HAS_CUDA

    return f"ddmini._C built: {HAS_CPP}; CUDA kernels compiled: {HAS_CUDA}; GPU: {torch.cuda.is_available()}"


@pytest.fixture(scope="session")
def small_classifier(mnist_small):
    """A width-8 classifier trained for one epoch on 2,000 images (~90 % test accuracy), eval mode."""
    from ddmini import classifier
    from ddmini.config import ClassifierConfig

    x, y, _, _ = mnist_small
    return classifier.train(ClassifierConfig(width=8, epochs=1, batch_size=64, seed=1), x, y).model.eval()
