import gzip
import shutil
import struct

import numpy as np
import pytest

from ddmini import data
from ddmini.cli import main

from conftest import http_server

FILES = list(data.CONTENT_SHA256)


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


@pytest.fixture
def copy_dir(data_dir, tmp_path):
    """A writable copy of the MNIST directory to corrupt."""
    dst = tmp_path / "mnist"
    dst.mkdir()
    for name in FILES:
        shutil.copy(data_dir / name, dst / name)
    return dst


def test_check_reports_counts(data_dir, capsys):
    assert data.check(data_dir) == {"train": 60000, "test": 10000}
    code, out, _ = run_cli(["data", "check", "--data-dir", str(data_dir), "--verify"], capsys)
    assert code == 0 and "60000 train / 10000 test" in out and "checksums ok" in out


def test_env_var_and_missing_dir(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("DDMINI_DATA", str(data_dir))
    assert data.resolve_data_dir(None) == data_dir
    monkeypatch.delenv("DDMINI_DATA")
    with pytest.raises(data.DataError, match="DDMINI_DATA"):
        data.resolve_data_dir(None)
    with pytest.raises(data.DataError, match="not found"):
        data.resolve_data_dir(tmp_path / "nope")


def test_loaded_tensors(data_dir):
    s = data.load_split(data_dir, "test")
    assert s.images.shape == (10000, 28, 28) and s.images.dtype.is_floating_point is False
    assert s.labels.dtype.is_signed and set(s.labels.unique().tolist()) == set(range(10))
    x = s.float_images()
    assert x.shape == (10000, 1, 28, 28) and 0 <= x.min() and x.max() <= 1


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


@pytest.mark.parametrize("corruption,message", [
    ("bad_magic", "bad magic"),
    ("truncated_gzip", "truncated gzip"),
    ("truncated_data", "truncated"),
    ("label_count", "labels for"),
    ("missing", "file not found"),
])
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
    code, out, err = run_cli(["data", "download", str(dest), "--mirror", base + "/missing/",
                              "--mirror", base + "/good/"], capsys)
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
    with http_server(root) as (base, _):
        with pytest.raises(data.DataError, match="more than 0 MiB"):
            data.download(tmp_path / "dl", [base + "/"], log=lambda m: None)
    assert not any(p.suffix == ".part" for p in (tmp_path / "dl").iterdir())
