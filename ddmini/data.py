"""MNIST from IDX files (gzip or raw): reading, validation, checksums and a resumable download.

The directory comes from ``--data-dir`` or the ``DDMINI_DATA`` environment variable. Every problem
with a file — missing, bad magic, truncated, wrong dimensions, images/labels disagreeing — raises
:class:`DataError` (a ValueError) with one line naming the file and the problem.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .checkpoint import fsync_dir

ENV_VAR = "DDMINI_DATA"
IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
NUM_CLASSES = 10
IMAGE_SIZE = 28

# split -> (images file, labels file, number of examples)
SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
# sha256 of the UNCOMPRESSED content: mirrors re-compress, the bytes inside do not change.
CONTENT_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


class DataError(ValueError):
    """A data file is missing, malformed or inconsistent."""


# ---------------------------------------------------------------------------------------------
# IDX reading
# ---------------------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except EOFError:
            raise DataError(f"{path}: truncated gzip stream") from None
        except (gzip.BadGzipFile, zlib.error, OSError) as e:
            raise DataError(f"{path}: corrupt gzip data ({e})") from None
    return raw


def parse_idx(buf: bytes, name: str = "<buffer>", expect_magic: int | None = None) -> np.ndarray:
    """Parse an IDX byte string of unsigned bytes into an array, checking header and length."""
    if len(buf) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(buf)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", buf[:4])
    magic = struct.unpack(">I", buf[:4])[0]
    if zero != 0 or dtype_code != 0x08 or ndim == 0:
        raise DataError(f"{name}: bad magic number {magic:#010x} (not an unsigned-byte IDX file)")
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{name}: bad magic number {magic} (expected {expect_magic})")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{name}: truncated header")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    expected = math.prod(dims)  # Python ints: a header whose product overflows int64 is just "too big"
    have = len(buf) - header
    if have < expected:
        raise DataError(f"{name}: truncated: {have} data bytes, header dims {dims} need {expected}")
    if have > expected:
        raise DataError(f"{name}: {have - expected} trailing bytes after the data for dims {dims}")
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file, gzip-compressed or raw."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path), expect_magic)


def content_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's uncompressed content."""
    return hashlib.sha256(_read_bytes(Path(path))).hexdigest()


# ---------------------------------------------------------------------------------------------
# MNIST splits
# ---------------------------------------------------------------------------------------------
def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else $DDMINI_DATA; it must be an existing directory."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR)
        if not data_dir:
            raise DataError(f"no MNIST directory: pass --data-dir or set {ENV_VAR}")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: MNIST directory not found")
    return path


def _locate(data_dir: Path, name: str) -> Path:
    """The file as named, or its uncompressed twin without the .gz suffix."""
    for candidate in (data_dir / name, data_dir / name.removesuffix(".gz")):
        if candidate.exists():
            return candidate
    return data_dir / name


@dataclass(frozen=True)
class Split:
    """One MNIST split: uint8 images (N, 28, 28) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def float_images(self) -> torch.Tensor:
        """Images as float32 (N, 1, 28, 28) in [0, 1]."""
        return self.images.unsqueeze(1).float().div_(255.0)


def load_split(data_dir: str | os.PathLike | None, split: str = "train", verify: bool = False) -> Split:
    """Read and validate one split; ``verify`` also checks the content sha256 of both files."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}; got {split!r}")
    root = resolve_data_dir(data_dir)
    img_name, lbl_name, _ = SPLITS[split]
    img_path, lbl_path = _locate(root, img_name), _locate(root, lbl_name)
    img_buf, lbl_buf = _read_bytes(img_path), _read_bytes(lbl_path)
    if verify:
        for name, path, buf in ((img_name, img_path, img_buf), (lbl_name, lbl_path, lbl_buf)):
            got = hashlib.sha256(buf).hexdigest()
            if got != CONTENT_SHA256[name]:
                raise DataError(f"{path}: content checksum mismatch (sha256 {got[:16]}…)")
    images = parse_idx(img_buf, str(img_path), IMAGE_MAGIC)
    labels = parse_idx(lbl_buf, str(lbl_path), LABEL_MAGIC)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{img_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{lbl_path}: {labels.shape[0]} labels for {images.shape[0]} images in {img_path.name}"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{lbl_path}: label {int(labels.max())} outside 0..9")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def load_mnist(data_dir: str | os.PathLike | None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): float32 images (N, 1, 28, 28) in [0, 1] and int64 labels (N,)."""
    s = load_split(data_dir, split)
    return s.float_images(), s.labels


def check(data_dir: str | os.PathLike | None, verify: bool = False) -> dict[str, int]:
    """Validate both splits; returns {split: number of examples}."""
    return {split: len(load_split(data_dir, split, verify=verify)) for split in SPLITS}


# ---------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------
def _file_is_good(path: Path, name: str) -> bool:
    try:
        return path.is_file() and content_sha256(path) == CONTENT_SHA256[name]
    except DataError:
        return False


# The largest MNIST file is under 10 MB compressed, 47 MB raw: a server sending more is not serving it.
MAX_DOWNLOAD_BYTES = 64 << 20


def _fetch(url: str, part: Path, timeout: float, on_bytes: Callable[[int], None] | None) -> None:
    """Download ``url`` into ``part``, continuing from its current size with an HTTP Range request."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "ddmini"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range not satisfiable: the part file is already complete
            return
        raise
    with resp:
        mode = "ab" if have and resp.status == 206 else "wb"
        size = have if mode == "ab" else 0
        with open(part, mode) as f:
            while chunk := resp.read(1 << 16):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise ValueError(f"more than {MAX_DOWNLOAD_BYTES >> 20} MiB, larger than any file it should be")
                f.write(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
            f.flush()
            os.fsync(f.fileno())


def download(
    dest: str | os.PathLike,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    *,
    timeout: float = 30.0,
    log: Callable[[str], None] = print,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, str]:
    """Fetch the four MNIST files into ``dest``, trying ``mirrors`` in order.

    Files whose content checksum is already right are skipped; an interrupted download continues
    from its ``.part`` file; a file is renamed into place only after its checksum matches.
    Returns {file name: "present" | "downloaded from <mirror>"}; raises DataError if a file
    cannot be had from any mirror.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if not mirrors:
        raise ValueError("mirrors: need at least one URL")
    outcome: dict[str, str] = {}
    for name in CONTENT_SHA256:
        target = dest / name
        if _file_is_good(target, name):
            outcome[name] = "present"
            log(f"{name}: present, checksum ok")
            continue
        part = dest / (name + ".part")
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                _fetch(url, part, timeout, on_bytes)
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                if isinstance(e, ValueError):  # oversized: nothing to resume from
                    part.unlink(missing_ok=True)
                continue
            if _file_is_good(part, name):
                os.replace(part, target)
                fsync_dir(dest)
                outcome[name] = f"downloaded from {mirror}"
                log(f"{name}: downloaded from {mirror}, checksum ok")
                break
            errors.append(f"{url}: checksum mismatch")
            part.unlink(missing_ok=True)  # a bad file is not something to resume from
        else:
            raise DataError(f"{name}: could not be downloaded ({'; '.join(errors)})")
    return outcome
