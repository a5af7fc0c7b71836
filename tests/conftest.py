import contextlib
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

# The README's `pytest` runs the tests in parallel (pytest-xdist, `-n auto` in pyproject.toml): each worker gets
# an equal share of torch's threads (one each on 2 cores; more workers on one pool oversubscribe OpenMP), and the
# processes the tests start inherit it through OMP_NUM_THREADS. Tests of threading set their own counts.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
ALL_THREADS = torch.get_num_threads()
if WORKERS > 1:
    torch.set_num_threads(max(1, ALL_THREADS // WORKERS))
    os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())


@pytest.fixture
def all_threads():
    """The machine's threads (at least 2) for this test, whatever the worker's share: the kernel tests run
    their OpenMP loops split as a user's process splits them (`pytestmark = pytest.mark.usefixtures(...)`)."""
    share = torch.get_num_threads()
    torch.set_num_threads(max(2, ALL_THREADS))
    yield
    torch.set_num_threads(share)


def _data_root() -> Path:
    """Where the shared datasets lie: $DDMINI_DATA_ROOT, else ../shared/data beside the repo."""
    root = os.environ.get("DDMINI_DATA_ROOT")
    return Path(root) if root else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The MNIST directory: $DDMINI_DATA, else $DDMINI_DATA_ROOT/mnist, else ../shared/data/mnist beside the repo."""
    path = Path(os.environ.get("DDMINI_DATA") or _data_root() / "mnist")
    if not (path / "train-labels-idx1-ubyte.gz").exists() and not (path / "train-labels-idx1-ubyte").exists():
        pytest.skip(f"MNIST not found in {path}; set DDMINI_DATA")
    return path


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The Fashion-MNIST directory: $DDMINI_DATA_ROOT/fashion-mnist, else ../shared/data/fashion-mnist."""
    path = _data_root() / "fashion-mnist"
    if not (path / "train-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found in {path}; set DDMINI_DATA_ROOT")
    return path


@pytest.fixture
def copy_dir(data_dir, tmp_path):
    """A writable copy of the MNIST directory to corrupt."""
    dst = tmp_path / "mnist"
    dst.mkdir()
    from ddmini import data

    for name in data.CONTENT_SHA256:
        shutil.copy(data_dir / name, dst / name)
    return dst


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


def run_cli(args, capsys):
    """Run the ddmini command line in-process: (exit code, stdout, stderr)."""
    from ddmini.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def assert_one_line(code, err, msg, exit_code=1):
    assert code == exit_code, (code, err)
    assert msg in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "weights_only" not in err


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("DDMINI_QUIET", "1")
    monkeypatch.setenv("DDMINI_OFFLINE", "1")  # no test reaches the internet: download tests serve on 127.0.0.1
    torch.manual_seed(0)


def pytest_report_header(config):
    from ddmini._ext import HAS_CPP, HAS_CUDA

    return f"ddmini._C built: {HAS_CPP}; CUDA kernels compiled: {HAS_CUDA}; GPU: {torch.cuda.is_available()}"


@pytest.fixture(scope="session")
def smoke_run(data_dir, tmp_path_factory):
    """One smoke-preset run (seconds): {"root": run dir, "classifier" / "attack" / "diffusion": paths}."""
    from ddmini.pipeline import Pipeline
    from ddmini.presets import preset

    root = tmp_path_factory.mktemp("smoke-run")
    out = Pipeline(preset("smoke").with_seed(0), root, data_dir, "cpu", log=lambda m: None).run()
    return {"root": root, "report": out, **{k: Path(v) for k, v in out.artefacts.items()}}


@pytest.fixture(scope="session")
def small_classifier(mnist_small):
    """A width-8 classifier trained for one epoch on 2,000 images (~90 % test accuracy), eval mode."""
    from ddmini import classifier
    from ddmini.config import ClassifierConfig

    x, y, _, _ = mnist_small
    return classifier.train(ClassifierConfig(width=8, epochs=1, batch_size=64, seed=1), x, y).model.eval()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files under ``root`` with HTTP Range support; records (path, Range header) in ``log``."""

    root: Path
    log: list

    def do_GET(self):  # noqa: N802
        path = self.root / self.path.lstrip("/")
        rng = self.headers.get("Range")
        self.log.append((self.path, rng))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def http_server(root: Path):
    """A local HTTP server on 127.0.0.1 (never the internet) serving ``root``: yields (base URL, request log)."""
    handler = type("H", (RangeHandler,), {"root": root, "log": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.log
    finally:
        httpd.shutdown()
        httpd.server_close()


def cifar_batch(n: int, seed: int, labels=None) -> bytes:
    """n records of the official layout: 1 label byte, then 1,024 R, 1,024 G and 1,024 B bytes."""
    g = np.random.default_rng(seed)
    lab = g.integers(0, 10, n) if labels is None else np.asarray(labels)
    pix = g.integers(0, 256, (n, 3072))
    return np.concatenate([lab[:, None], pix], 1).astype(np.uint8).tobytes()


def write_cifar(folder: Path, n: int = 7) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {f"data_batch_{i}.bin": cifar_batch(n, i) for i in range(1, 6)}
    files["test_batch.bin"] = cifar_batch(n, 9)
    for name, buf in files.items():
        (folder / name).write_bytes(buf)
    return files
