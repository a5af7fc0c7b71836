"""The datasets (MNIST, Fashion-MNIST from IDX files, gzip or raw; CIFAR-10's binary version): reading,
validation, checksums and a resumable download.

The folder comes from ``--data-dir``, ``DDMINI_DATA`` / ``DDMINI_DATA_ROOT``, or the user's cache, where a
missing dataset is downloaded on first use (:func:`resolve_data_dir`). Every problem
with a file — missing, bad magic, truncated, wrong dimensions, images/labels disagreeing — raises
:class:`DataError` (a ValueError) with one line naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .checkpoint import file_digest, fsync_dir
from .errors import DataError

ENV_VAR = "DDMINI_DATA"  # MNIST's folder
ROOT_ENV_VAR = "DDMINI_DATA_ROOT"  # a folder holding <dataset>/ folders
MIRRORS_ENV_VAR = "DDMINI_MIRRORS"  # comma-separated base URLs, tried in order, instead of a dataset's own
OFFLINE_ENV_VAR = "DDMINI_OFFLINE"  # 1: never download
IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

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


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset ddmini reads: name, image shape (C, H, W), class names, on-disk format, files per split,
    content checksums and download mirrors. ``format`` "idx" is MNIST's layout (images file, labels
    file, examples per split); "cifar10-binary" is CIFAR-10's binary version (records of 1 label byte
    and 3,072 pixel bytes, R then G then B planes, in the batch files of each split, read from the
    extracted folder or straight from the tar.gz ``archive``, never from the pickled Python version)."""

    name: str
    shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    format: str
    splits: dict
    content_sha256: dict
    mirrors: tuple[str, ...]
    archive: str = ""  # cifar10-binary: the official tar.gz
    archive_sha256: str = ""
    archive_bytes: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


MNIST = DatasetSpec(
    "mnist", (1, 28, 28), tuple(str(k) for k in range(10)), "idx", SPLITS, CONTENT_SHA256, DEFAULT_MIRRORS
)
# Xiao, Rasul and Vollgraf 2017 (arXiv 1708.07747): MNIST's layout and file names, clothing classes.
FASHION_MNIST = DatasetSpec(
    "fashion-mnist",
    (1, 28, 28),
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "idx",
    SPLITS,
    {
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
)
# Krizhevsky 2009; the binary version's archive as the authors publish it (170,052,171 bytes).
CIFAR10 = DatasetSpec(
    "cifar10",
    (3, 32, 32),
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "cifar10-binary",
    {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
    {},
    ("https://www.cs.toronto.edu/~kriz/",),
    archive="cifar-10-binary.tar.gz",
    archive_sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    archive_bytes=170052171,
)
DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST, CIFAR10)}
CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_FOLDER = "cifar-10-batches-bin"  # the folder inside the archive


def get(name: str) -> DatasetSpec:
    """The registered dataset ``name``; one line listing the names otherwise. "folder" is the image folder
    :func:`register_folder` last read."""
    if name == FOLDER and FOLDER not in DATASETS:
        raise DataError("--dataset folder needs --data-dir DIR: an image folder (DIR/<class>/*.png)")
    if name not in DATASETS and name != FOLDER:
        names = [*(n for n in DATASETS if n != FOLDER), FOLDER]
        raise ValueError(f"dataset must be one of {', '.join(names)}; got {name!r}")
    return DATASETS[name]


def class_names(dataset: str, num_classes: int) -> list[str]:
    """The class names of ``dataset`` where it is known in this process ("0", "1", ... otherwise: an image
    folder not read here)."""
    spec = DATASETS.get(dataset)
    names = list(spec.class_names) if spec is not None else []
    return names if len(names) == num_classes else [str(k) for k in range(num_classes)]


FOLDER = "folder"  # your own images (ddmini.folder)
_folder_scan = None
_folder_asked = None  # (root, channels, image_size) the registered scan was made for


def register_folder(data_dir=None, channels: int = 0, image_size: int = 0, *, reuse: bool = False) -> DatasetSpec:
    """Scan the image folder ``data_dir`` (ddmini.folder) for the shape asked (0: detected) and register it as
    the dataset "folder": its class names, and its image shape and class count where the configs look them up
    (config.DATASET_SHAPES). With ``reuse`` (the readers, which know no shape), the folder registered for the
    same root (or any, without ``data_dir``) is kept with the shape it was registered for."""
    global _folder_scan, _folder_asked
    from . import config, folder

    s = _folder_scan
    if data_dir is None and reuse and s is not None:
        data_dir = s.root
    if data_dir is None:
        raise DataError("--dataset folder needs --data-dir DIR: an image folder (DIR/<class>/*.png)")
    asked = (Path(data_dir), channels, image_size)
    if s is None or s.root != asked[0] or (not reuse and asked != _folder_asked):
        s, _folder_asked = folder.scan(*asked), asked
        _folder_scan = s
    splits = {"train": ("", "", len(s.files["train"])), "test": ("", "", len(s.files["test"]))}
    DATASETS[FOLDER] = DatasetSpec(FOLDER, s.shape, s.classes, "folder", splits, {}, ())
    config.DATASET_SHAPES[FOLDER] = (s.shape, len(s.classes))
    return DATASETS[FOLDER]


# ---------------------------------------------------------------------------------------------
# IDX reading
# ---------------------------------------------------------------------------------------------
# The largest file any registered dataset has, uncompressed (MNIST's training images: 47 MB): a file that
# would inflate beyond this is not one of them, and is refused before it is inflated.
MAX_FILE_BYTES = 64 << 20


def _open_regular(path: Path):
    """``path`` opened for reading if it is a regular file (a FIFO, a device or a folder would hang or never
    end; a symlink counts as what it points to)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file (a FIFO, device or folder); refusing to read it")
    if st.st_size > MAX_FILE_BYTES:
        raise DataError(f"{path}: {st.st_size:,} bytes, larger than any dataset file ({MAX_FILE_BYTES >> 20} MiB)")
    return open(path, "rb")  # noqa: SIM115 (the caller closes it)


def _inflate(raw: bytes, path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """gzip ``raw``, inflated to at most ``limit`` bytes (a gzip bomb stops there, as one line), one member
    followed by nothing but padding."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, limit)
    except zlib.error as e:
        raise DataError(f"{path}: corrupt gzip data ({e})") from None
    if d.unconsumed_tail:
        raise DataError(f"{path}: inflates to more than {limit >> 20} MiB, larger than any dataset file")
    if not d.eof:
        raise DataError(f"{path}: truncated gzip stream")
    if d.unused_data.strip(b"\x00"):
        raise DataError(f"{path}: trailing data after the gzip stream")
    return out


def _read_raw(path: Path) -> bytes:
    """The bytes of the regular file ``path`` (at most MAX_FILE_BYTES)."""
    try:
        with _open_regular(path) as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _read_bytes(path: Path) -> bytes:
    """The content of an IDX file, gzip or raw (inflated within MAX_FILE_BYTES)."""
    raw = _read_raw(path)
    return _inflate(raw, path) if raw[:2] == b"\x1f\x8b" else raw


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
def default_root() -> Path:
    """The folder holding one folder per dataset when none is named: the user's cache
    (``~/.cache/ddmini/data`` on Linux, platformdirs' cache folder elsewhere)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("ddmini")) / "data"


def offline() -> bool:
    """Whether downloads are off (``--no-download`` or DDMINI_OFFLINE=1)."""
    return os.environ.get(OFFLINE_ENV_VAR, "") not in ("", "0")


def mirrors_for(dataset: str) -> tuple[str, ...]:
    """The base URLs a dataset is fetched from, in order: DDMINI_MIRRORS (comma-separated) where set,
    else the dataset's own."""
    env = [m.strip() for m in os.environ.get(MIRRORS_ENV_VAR, "").split(",") if m.strip()]
    return tuple(env) or get(dataset).mirrors


def is_present(root: Path, dataset: str) -> bool:
    """Every file of ``dataset`` is in ``root`` (under its name, uncompressed, or as CIFAR-10's archive or
    extracted folder). The downloader renames a file into place only once its checksum matched, so a
    half-downloaded file (a ``.part``) never counts."""
    spec = get(dataset)
    if spec.format == "cifar10-binary":
        names = [n for split in spec.splits.values() for n in split]
        return (root / spec.archive).is_file() or any(
            all((f / n).is_file() for n in names) for f in (root, root / CIFAR_FOLDER)
        )
    return all(_locate(root, n).is_file() for n in spec.content_sha256)


def _env_dir(dataset: str) -> Path | None:
    """The folder the environment names for ``dataset``: $DDMINI_DATA (MNIST), else $DDMINI_DATA_ROOT/<dataset>."""
    env = os.environ.get(ENV_VAR) if dataset == "mnist" else None
    root = os.environ.get(ROOT_ENV_VAR)
    return Path(env) if env else (Path(root) / dataset if root else None)


def default_dir(dataset: str = "mnist") -> Path:
    """The folder ``dataset`` is read from when no folder is named: the environment's (:func:`_env_dir`), else
    the user's cache (:func:`default_root`)/<dataset>."""
    return (_env_dir(dataset) or default_root() / dataset).expanduser()


def resolve_data_dir(data_dir: str | os.PathLike | None = None, dataset: str = "mnist") -> Path:
    """The folder of ``dataset``'s files: ``data_dir`` if given, else $DDMINI_DATA (MNIST), else
    $DDMINI_DATA_ROOT/<dataset>; each must exist. With none of them, the user's cache
    (:func:`default_root`)/<dataset>, where a missing dataset is downloaded (one line on stderr says where)
    unless :func:`offline`, which makes it one line naming the folder to fill and the command that fills it."""
    if dataset == FOLDER:  # your own images: never downloaded, never looked for elsewhere
        register_folder(data_dir, reuse=True)
        return _folder_scan.root
    label = get(dataset).name if dataset != "mnist" else "MNIST"
    if data_dir is None or str(data_dir) == "":
        data_dir = _env_dir(dataset)
        if data_dir is None:
            return _cached(dataset, label)
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: {label} directory not found")
    return path


def _cached(dataset: str, label: str) -> Path:
    root = default_root() / dataset
    if is_present(root, dataset):
        return root
    if offline():
        raise DataError(
            f"{label} is not in {root} and downloads are off: run `ddmini data download --dataset "
            f"{dataset}` (or copy its files there), or pass --data-dir"
        )
    import sys

    print(f"{label}: not found, downloading into {root}", file=sys.stderr)
    fetch(root, dataset, log=lambda m: None)
    return root


def _locate(data_dir: Path, name: str) -> Path:
    """The file as named, or its uncompressed twin without the .gz suffix."""
    for candidate in (data_dir / name, data_dir / name.removesuffix(".gz")):
        if candidate.exists():
            return candidate
    return data_dir / name


@dataclass(frozen=True)
class Split:
    """One split of a dataset: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def float_images(self) -> torch.Tensor:
        """Images as float32 (N, C, H, W) in [0, 1]."""
        return self.images.float().div_(255.0)


def _spec(dataset: str, data_dir) -> DatasetSpec:
    """The registered ``dataset``; an image folder is registered (scanned) from ``data_dir`` first."""
    return register_folder(data_dir, reuse=True) if dataset == FOLDER else get(dataset)


def load_split(
    data_dir: str | os.PathLike | None, split: str = "train", verify: bool = False, dataset: str = "mnist"
) -> Split:
    """Read and validate one split of ``dataset``; ``verify`` also checks the content checksums."""
    spec = _spec(dataset, data_dir)
    if split not in spec.splits:
        raise ValueError(f"split must be one of {sorted(spec.splits)}; got {split!r}")
    if spec.format == "folder":
        from . import folder

        return Split(*folder.read(_folder_scan, split, default_root() / "folders"))
    root = resolve_data_dir(data_dir, dataset)
    if spec.format == "cifar10-binary":
        return _load_cifar10(root, split, spec, verify)
    img_name, lbl_name, _ = spec.splits[split]
    img_path, lbl_path = _locate(root, img_name), _locate(root, lbl_name)
    img_buf, lbl_buf = _read_bytes(img_path), _read_bytes(lbl_path)
    for name, path, buf in ((img_name, img_path, img_buf), (lbl_name, lbl_path, lbl_buf)):
        # always: another registered dataset's files (MNIST and Fashion-MNIST share file names) are refused;
        # with verify, anything but this dataset's own content is
        got = hashlib.sha256(buf).hexdigest()
        if got != spec.content_sha256[name]:
            other = next((d.name for d in DATASETS.values() if d.content_sha256.get(name) == got), None)
            if other or verify:
                raise DataError(
                    f"{path}: content checksum mismatch (sha256 {got[:16]}…)"
                    + (f": these are {other} files, not {dataset}" if other else "")
                )
    images = parse_idx(img_buf, str(img_path), IMAGE_MAGIC)
    labels = parse_idx(lbl_buf, str(lbl_path), LABEL_MAGIC)
    if images.shape[1:] != spec.shape[1:]:
        raise DataError(
            f"{img_path}: images are {images.shape[1]}x{images.shape[2]}, expected {spec.shape[1]}x{spec.shape[2]}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{lbl_path}: {labels.shape[0]} labels for {images.shape[0]} images in {img_path.name}")
    if labels.size and labels.max() >= spec.num_classes:
        raise DataError(f"{lbl_path}: label {int(labels.max())} outside 0..{spec.num_classes - 1}")
    return Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def _cifar_members(root: Path, names: tuple[str, ...], spec: DatasetSpec, verify: bool) -> list[tuple[str, bytes]]:
    """The bytes of the batch files ``names``: from the extracted folder (root, or root/cifar-10-batches-bin)
    or from the tar.gz in root, read member by member (no extraction, no other member touched)."""
    for folder in (root, root / CIFAR_FOLDER):
        if all((folder / n).is_file() for n in names):
            return [(str(folder / n), _read_raw(folder / n)) for n in names]
    archive = root / spec.archive
    if archive.is_file():
        import tarfile

        if verify:
            got = file_digest(archive)
            if got != spec.archive_sha256:
                raise DataError(f"{archive}: checksum mismatch (sha256 {got[:16]}…)")
        out = []
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for n in names:
                    try:
                        member = tar.getmember(f"{CIFAR_FOLDER}/{n}")
                    except KeyError:
                        raise DataError(f"{archive}: no member {CIFAR_FOLDER}/{n}") from None
                    if member.size > MAX_FILE_BYTES:
                        raise DataError(f"{archive}: {CIFAR_FOLDER}/{n} claims {member.size:,} bytes, too many")
                    f = tar.extractfile(member) if member.isfile() else None
                    if f is None:
                        raise DataError(f"{archive}: {CIFAR_FOLDER}/{n} is not a regular file")
                    out.append((f"{archive}:{n}", f.read()))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DataError(f"{archive}: corrupt archive ({e})") from None
        return out
    found = "MNIST-layout IDX files" if any(root.glob("*-idx?-ubyte*")) else "none of its files"
    raise DataError(
        f"{root}: no CIFAR-10 binary files (looked for {names[0]}, {CIFAR_FOLDER}/ and {spec.archive}); "
        f"it holds {found}"
    )


def _load_cifar10(root: Path, split: str, spec: DatasetSpec, verify: bool) -> Split:
    images, labels = [], []
    for where, buf in _cifar_members(root, spec.splits[split], spec, verify):
        if not buf or len(buf) % CIFAR_RECORD:
            raise DataError(
                f"{where}: {len(buf)} bytes is not a whole number of {CIFAR_RECORD}-byte records "
                "(truncated or not a CIFAR-10 batch)"
            )
        rec = np.frombuffer(buf, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
        if rec[:, 0].max() >= spec.num_classes:
            raise DataError(f"{where}: label byte {int(rec[:, 0].max())} outside 0..{spec.num_classes - 1}")
        labels.append(rec[:, 0].astype(np.int64))
        images.append(rec[:, 1:].reshape(-1, *spec.shape))
    return Split(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def load(data_dir: str | os.PathLike | None, split: str = "train", dataset: str = "mnist"):
    """(x, y): float32 images (N, C, H, W) in [0, 1] and int64 labels (N,) of a split of ``dataset``."""
    s = load_split(data_dir, split, dataset=dataset)
    return s.float_images(), s.labels


def load_mnist(data_dir: str | os.PathLike | None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): float32 images (N, 1, 28, 28) in [0, 1] and int64 labels (N,)."""
    return load(data_dir, split, "mnist")


def check(data_dir: str | os.PathLike | None, verify: bool = False, dataset: str = "mnist") -> dict[str, int]:
    """Validate every split; returns {split: number of examples}."""
    return {
        split: len(load_split(data_dir, split, verify=verify, dataset=dataset))
        for split in _spec(dataset, data_dir).splits
    }


# ---------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------
def _file_is_good(path: Path, name: str, spec: DatasetSpec = MNIST) -> bool:
    """The file's checksum is the registered one: the uncompressed content's for IDX files (mirrors
    re-compress), the archive's own bytes for CIFAR-10."""
    try:
        if not path.is_file():
            return False
        if name == spec.archive:
            return path.stat().st_size == spec.archive_bytes and file_digest(path) == spec.archive_sha256
        return content_sha256(path) == spec.content_sha256[name]
    except DataError:
        return False


# The largest MNIST file is under 10 MB compressed, 47 MB raw: a server sending more is not serving it.
MAX_DOWNLOAD_BYTES = 64 << 20


def _fetch(
    url: str, part: Path, timeout: float, on_bytes: Callable[[int], None] | None, limit: int = MAX_DOWNLOAD_BYTES
) -> None:
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
                if size > limit:
                    raise ValueError(f"more than {limit >> 20} MiB, larger than the file it should be")
                f.write(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
            f.flush()
            os.fsync(f.fileno())


def fetch(dest, dataset: str = "mnist", mirrors=None, timeout: float = 30.0, log: Callable[[str], None] | None = None):
    """:func:`download` with a progress bar of the bytes fetched (``log``: each file's line, above the bar)."""
    from .runtime import progress

    with progress(desc="download", unit="B", total=None) as bar:
        return download(dest, mirrors, timeout=timeout, log=log or bar.write, on_bytes=bar.update, dataset=dataset)


def download(
    dest: str | os.PathLike,
    mirrors: Sequence[str] | None = None,
    *,
    timeout: float = 30.0,
    log: Callable[[str], None] = print,
    on_bytes: Callable[[int], None] | None = None,
    dataset: str = "mnist",
) -> dict[str, str]:
    """Fetch the files of ``dataset`` into ``dest`` (MNIST's and Fashion-MNIST's four IDX files, CIFAR-10's
    binary archive), trying ``mirrors`` (default: the dataset's) in order.

    Files whose content checksum is already right are skipped; an interrupted download continues
    from its ``.part`` file; a file is renamed into place only after its checksum matches.
    Returns {file name: "present" | "downloaded from <mirror>"}; raises DataError if a file
    cannot be had from any mirror.
    """
    spec = get(dataset)
    mirrors = mirrors_for(dataset) if mirrors is None else mirrors
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if not mirrors:
        raise ValueError("mirrors: need at least one URL")
    limit = max(MAX_DOWNLOAD_BYTES, spec.archive_bytes)
    outcome: dict[str, str] = {}
    for name in [spec.archive] if spec.archive else list(spec.content_sha256):
        target = dest / name
        if _file_is_good(target, name, spec):
            outcome[name] = "present"
            log(f"{name}: present, checksum ok")
            continue
        part = dest / (name + ".part")
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                _fetch(url, part, timeout, on_bytes, limit)
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                if isinstance(e, ValueError):  # oversized: nothing to resume from
                    part.unlink(missing_ok=True)
                continue
            if _file_is_good(part, name, spec):
                os.replace(part, target)
                fsync_dir(dest)
                outcome[name] = f"downloaded from {mirror}"
                log(f"{name}: downloaded from {mirror}, checksum ok")
                break
            errors.append(f"{url}: checksum mismatch")
            part.unlink(missing_ok=True)  # a bad file is not something to resume from
        else:
            raise DataError(
                f"{name}: could not be downloaded into {dest} ({'; '.join(errors)}); set "
                f"{MIRRORS_ENV_VAR} to a mirror that serves it, or copy the file there"
            )
    return outcome
