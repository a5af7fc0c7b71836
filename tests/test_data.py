import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cifar_batch, http_server, run_cli, write_cifar

from ddmini import data

FILES = list(data.CONTENT_SHA256)


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def test_check_reports_counts(data_dir, capsys):
    assert data.check(data_dir) == {"train": 60000, "test": 10000}
    code, out, _ = run_cli(["data", "check", "--data-dir", str(data_dir), "--verify"], capsys)
    assert code == 0 and "60000 train / 10000 test" in out and "checksums ok" in out


def test_env_var_and_missing_dir(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("DDMINI_DATA", str(data_dir))
    assert data.resolve_data_dir(None) == data_dir
    monkeypatch.delenv("DDMINI_DATA")
    monkeypatch.setenv("DDMINI_DATA_ROOT", str(data_dir.parent))
    assert data.resolve_data_dir(None) == data_dir
    with pytest.raises(data.DataError, match="not found"):
        data.resolve_data_dir(tmp_path / "nope")


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """A machine with no data: an empty HOME, no data variables; the user cache is HOME/.cache/ddmini/data."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CACHE_HOME", "DDMINI_DATA", "DDMINI_DATA_ROOT", "DDMINI_OFFLINE", "DDMINI_MIRRORS"):
        monkeypatch.delenv(var, raising=False)
    return home / ".cache" / "ddmini" / "data"


def test_a_missing_dataset_is_downloaded_into_the_user_cache(no_data, data_dir, monkeypatch, capsys):
    assert data.default_root() == no_data
    with http_server(data_dir) as (base, log):
        monkeypatch.setenv("DDMINI_MIRRORS", f"{base}/missing/, {base}/")  # tried in order
        assert data.resolve_data_dir(None) == no_data / "mnist"
        assert sorted(p.name for p in (no_data / "mnist").iterdir()) == sorted(FILES)  # no .part left
        assert "downloading into" in capsys.readouterr().err
        log.clear()
        x, _ = data.load(None, "test")  # found there now: nothing fetched
        assert x.shape == (10000, 1, 28, 28) and log == []
        code, out, _ = run_cli(["data", "where"], capsys)
        assert code == 0 and out.strip() == str(no_data / "mnist")


def test_a_half_downloaded_cache_is_completed_not_read(no_data, data_dir, monkeypatch):
    dest = no_data / "mnist"
    dest.mkdir(parents=True)
    shutil.copy(data_dir / FILES[0], dest / FILES[0])
    full = (data_dir / FILES[2]).read_bytes()
    (dest / (FILES[2] + ".part")).write_bytes(full[:1000])  # interrupted: never read as the file
    assert not data.is_present(dest, "mnist")
    with http_server(data_dir) as (base, _):
        monkeypatch.setenv("DDMINI_MIRRORS", base)
        assert data.check(None, verify=True) == {"train": 60000, "test": 10000}


def test_offline_or_unreachable_is_one_line(no_data, monkeypatch, capsys):
    from conftest import assert_one_line

    code, _, err = run_cli(["train-classifier", "--preset", "smoke", "--no-download"], capsys)
    assert_one_line(code, err, f"MNIST is not in {no_data / 'mnist'} and downloads are off: run `ddmini data download")
    monkeypatch.setenv("DDMINI_OFFLINE", "1")
    code, _, err = run_cli(["data", "check", "--dataset", "fashion-mnist"], capsys)
    assert_one_line(code, err, "fashion-mnist is not in")
    monkeypatch.delenv("DDMINI_OFFLINE")
    monkeypatch.setenv("DDMINI_MIRRORS", "http://127.0.0.1:9/")  # nothing listens on the discard port
    code, _, err = run_cli(["run", "--preset", "smoke", "--device", "cpu", "--run-dir", str(no_data.parent)], capsys)
    said, error = err.strip().splitlines()  # where it was downloading to, then the one error line
    assert said.startswith("MNIST: not found, downloading into") and code == 1 and "Traceback" not in err
    assert error.startswith("error: train-images-idx3-ubyte.gz: could not be downloaded into")
    assert "127.0.0.1:9" in error
    assert not list((no_data / "mnist").glob("*.gz"))


def test_loaded_tensors(data_dir):
    s = data.load_split(data_dir, "test")
    assert s.images.shape == (10000, 1, 28, 28) and s.images.dtype.is_floating_point is False
    assert s.labels.dtype.is_signed and set(s.labels.unique().tolist()) == set(range(10))
    x = s.float_images()
    assert x.shape == (10000, 1, 28, 28) and x.min() >= 0 and x.max() <= 1


def test_raw_uncompressed_files_are_read(copy_dir):
    for name in FILES:
        raw = gzip.decompress((copy_dir / name).read_bytes())
        (copy_dir / name).unlink()
        (copy_dir / name.removesuffix(".gz")).write_bytes(raw)
    assert data.check(copy_dir, verify=True) == {"train": 60000, "test": 10000}


def test_parse_idx_roundtrip():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(data.parse_idx(idx_bytes(arr, 2051)), arr)


def test_idx_header_whose_size_overflows_is_named():
    # 2^32-1 cubed overflows int64: the size must still be "too big", with the file named
    buf = struct.pack(">I", 2051) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1) + b"\0" * 16
    with pytest.raises(data.DataError, match=r"t10k\.idx: truncated"):
        data.parse_idx(buf, "t10k.idx")


@pytest.mark.parametrize(
    "corruption,message",
    [
        ("bad_magic", "bad magic"),
        ("truncated_gzip", "truncated gzip"),
        ("truncated_data", "truncated"),
        ("label_count", "labels for"),
        ("missing", "file not found"),
    ],
)
def test_corrupt_files_give_one_line_errors(copy_dir, capsys, corruption, message):
    labels = copy_dir / "t10k-labels-idx1-ubyte.gz"
    if corruption == "bad_magic":
        raw = bytearray(gzip.decompress(labels.read_bytes()))
        raw[3] = 0x07
        labels.write_bytes(gzip.compress(bytes(raw)))
    elif corruption == "truncated_gzip":
        b = labels.read_bytes()
        labels.write_bytes(b[: len(b) // 2])
    elif corruption == "truncated_data":
        raw = gzip.decompress(labels.read_bytes())
        labels.write_bytes(gzip.compress(raw[:-10]))
    elif corruption == "label_count":
        arr = data.read_idx(labels)[:9999]
        labels.write_bytes(gzip.compress(idx_bytes(arr, 2049)))
    elif corruption == "missing":
        labels.unlink()
    with pytest.raises(data.DataError, match=message):
        data.check(copy_dir)
    code, out, err = run_cli(["data", "check", "--data-dir", str(copy_dir)], capsys)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "t10k-labels" in err and message in err


def test_verify_detects_changed_content(copy_dir):
    labels = copy_dir / "t10k-labels-idx1-ubyte.gz"
    arr = data.read_idx(labels).copy()
    arr[0] = (arr[0] + 1) % 10
    labels.write_bytes(gzip.compress(idx_bytes(arr, 2049)))
    assert data.check(copy_dir) == {"train": 60000, "test": 10000}  # structurally fine
    with pytest.raises(data.DataError, match="checksum mismatch"):
        data.check(copy_dir, verify=True)


# ---------------------------------------------------------------------------------------------
# download against a local HTTP server on 127.0.0.1 (never the internet)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def server(data_dir, tmp_path):
    """Serves /good/ (the real files) and /bad/ (a corrupted copy of the labels) on 127.0.0.1."""
    root = tmp_path / "www"
    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    for name in FILES:
        shutil.copy(data_dir / name, root / "good" / name)
        shutil.copy(data_dir / name, root / "bad" / name)
    (root / "bad" / FILES[1]).write_bytes(gzip.compress(b"\x00" * 100))
    with http_server(root) as served:
        yield served


def test_download_verify_skip_and_resume(server, tmp_path, capsys):
    base, log = server
    dest = tmp_path / "dl"
    # a dead mirror first, then the good one
    code, out, err = run_cli(
        ["data", "download", str(dest), "--mirror", base + "/missing/", "--mirror", base + "/good/"], capsys
    )
    assert code == 0, err
    assert "60000 train / 10000 test" in out
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)
    # second run: everything already good, nothing fetched
    log.clear()
    assert set(data.download(dest, [base + "/good/"], log=lambda m: None).values()) == {"present"}
    assert log == []
    # resume: a half-downloaded .part continues with a Range request
    name = FILES[0]
    full = (dest / name).read_bytes()
    (dest / name).unlink()
    (dest / (name + ".part")).write_bytes(full[: len(full) // 2])
    assert data.download(dest, [base + "/good/"], log=lambda m: None)[name].startswith("downloaded")
    assert log == [("/good/" + name, f"bytes={len(full) // 2}-")]
    assert (dest / name).read_bytes() == full and not (dest / (name + ".part")).exists()


def test_download_rejects_bad_checksum(server, tmp_path, capsys):
    base, _ = server
    dest = tmp_path / "dl"
    with pytest.raises(data.DataError, match="checksum mismatch"):
        data.download(dest, [base + "/bad/"], log=lambda m: None)
    assert (dest / FILES[0]).is_file()  # good files land
    assert not (dest / FILES[1]).exists() and not (dest / (FILES[1] + ".part")).exists()  # the bad one never does
    code, _, err = run_cli(["data", "download", str(dest), "--mirror", base + "/bad/"], capsys)
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1


def test_download_caps_what_it_reads(data_dir, tmp_path, monkeypatch):
    root = tmp_path / "www"
    root.mkdir()
    for name in FILES:
        (root / name).write_bytes(b"\0" * 4096)
    monkeypatch.setattr(data, "MAX_DOWNLOAD_BYTES", 1000)
    with http_server(root) as (base, _), pytest.raises(data.DataError, match="more than 0 MiB"):
        data.download(tmp_path / "dl", [base + "/"], log=lambda m: None)
    assert not any(p.suffix == ".part" for p in (tmp_path / "dl").iterdir())


# ---------------------------------------------------------------------------------------------
# The dataset registry: Fashion-MNIST (shared data) and CIFAR-10 (small files in the official binary layout)
# ---------------------------------------------------------------------------------------------


def test_registry_names_and_one_line_for_unknown():
    assert list(data.DATASETS)[:3] == ["mnist", "fashion-mnist", "cifar10"]  # and "folder" once one was read
    assert data.get("cifar10").shape == (3, 32, 32) and data.get("fashion-mnist").class_names[9] == "Ankle boot"
    with pytest.raises(ValueError, match="dataset must be one of mnist, fashion-mnist, cifar10, folder; got 'svhn'"):
        data.get("svhn")


def test_fashion_mnist_reads_and_verifies_and_is_told_from_mnist(data_dir, fashion_dir):
    counts = data.check(fashion_dir, verify=True, dataset="fashion-mnist")
    assert counts == {"train": 60000, "test": 10000}
    x, y = data.load(fashion_dir, "test", "fashion-mnist")
    assert x.shape == (10000, 1, 28, 28) and int(y.max()) == 9
    with pytest.raises(data.DataError, match="these are mnist files, not fashion-mnist"):
        data.check(data_dir, verify=True, dataset="fashion-mnist")


def cifar_tar(path: Path, files: dict[str, bytes], skip: str | None = None) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, buf in files.items():
            if name != skip:
                info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
                info.size = len(buf)
                tar.addfile(info, io.BytesIO(buf))
    return path


@pytest.mark.parametrize("layout", ["flat", "folder", "targz"])
def test_cifar10_binary_layout_is_read_exactly(tmp_path, layout):
    root = tmp_path / "cifar10"
    files = write_cifar(root / "src")
    if layout == "flat":
        for n, b in files.items():
            (root / n).write_bytes(b)
    elif layout == "folder":
        write_cifar(root / "cifar-10-batches-bin")
    else:
        cifar_tar(root / "cifar-10-binary.tar.gz", files)
    s = data.load_split(root, "train", dataset="cifar10")
    assert s.images.shape == (35, 3, 32, 32) and s.labels.shape == (35,)
    rec = np.frombuffer(files["data_batch_2.bin"], np.uint8).reshape(7, 3073)
    assert int(s.labels[7]) == rec[0, 0]  # batch 2's first record follows batch 1's seven
    img = s.images[7].numpy()
    assert (img[0].reshape(-1) == rec[0, 1:1025]).all() and (img[2].reshape(-1) == rec[0, 2049:]).all()  # R ... B
    x, y = data.load(root, "test", "cifar10")
    assert x.shape == (7, 3, 32, 32) and x.dtype == torch.float32 and float(x.max()) <= 1


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated", "not a whole number of 3073-byte records"),
        ("label", "label byte 12 outside 0..9"),
        ("missing_member", "no member cifar-10-batches-bin/data_batch_3.bin"),
        ("mnist_folder", "no CIFAR-10 binary files"),
    ],
)
def test_cifar10_bad_files_are_one_line(tmp_path, capsys, data_dir, damage, message):
    root = tmp_path / "c"
    files = write_cifar(tmp_path / "src")
    root.mkdir()
    if damage == "truncated":
        write_cifar(root)
        (root / "data_batch_4.bin").write_bytes(files["data_batch_4.bin"][:-100])
    elif damage == "label":
        write_cifar(root)
        (root / "test_batch.bin").write_bytes(cifar_batch(3, 1, labels=[1, 12, 0]))
    elif damage == "missing_member":
        cifar_tar(root / "cifar-10-binary.tar.gz", files, skip="data_batch_3.bin")
    else:
        root = data_dir
    code, out, err = run_cli(["data", "check", "--dataset", "cifar10", "--data-dir", str(root)], capsys)
    assert code == 1 and message in err and err.count("\n") == 1, err


def test_cifar10_download_checks_the_archive(tmp_path, monkeypatch, capsys):
    import dataclasses

    files = write_cifar(tmp_path / "src")
    www = tmp_path / "www"
    www.mkdir()
    good = cifar_tar(www / "cifar-10-binary.tar.gz", files)
    with http_server(www) as (base, _):
        # the registered checksum is the real archive's: this small one is refused, nothing left behind
        with pytest.raises(data.DataError, match="checksum mismatch"):
            data.download(tmp_path / "dl", [base + "/"], log=lambda m: None, dataset="cifar10")
        assert list((tmp_path / "dl").iterdir()) == []
        # registered as this archive (size and sha256), it downloads and reads
        from ddmini.checkpoint import file_digest

        spec = dataclasses.replace(data.CIFAR10, archive_sha256=file_digest(good), archive_bytes=good.stat().st_size)
        monkeypatch.setitem(data.DATASETS, "cifar10", spec)
        code, out, err = run_cli(
            ["data", "download", str(tmp_path / "dl"), "--dataset", "cifar10", "--mirror", base + "/"], capsys
        )
    assert code == 0, err
    assert "cifar10 in" in out and "35 train / 7 test" in out


def test_config_knows_every_dataset_as_the_registry_does():
    from ddmini.config import DATASET_SHAPES

    assert {n: (d.shape, d.num_classes) for n, d in data.DATASETS.items()} == DATASET_SHAPES
