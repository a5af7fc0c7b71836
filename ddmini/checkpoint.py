"""Atomic writes and verified reads: nothing half-written or corrupted is ever read back.

Every artefact is written to a temporary file in the destination directory, flushed to disk and
renamed over the target (rename is atomic on POSIX), so an interrupted write leaves either the old
file or none. Beside each file :func:`save` records the sha256 of its bytes (``NAME.sha256``);
:func:`load` checks it when it is there, and always checks the CRC32 of every member of the zip
archive torch writes (torch itself does not), so flipped bits raise ValueError and a cached stage is
recomputed instead of trusted. Loading uses ``torch.load(..., weights_only=True)``: checkpoints hold
tensors and plain Python containers only, never pickled code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def writable_dir(path: str | os.PathLike, what: str = "run directory") -> Path:
    """``path`` as a folder that exists and can be written (created if missing); OSError naming it otherwise."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OSError(f"{p}: is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"{p}: cannot create {what} ({e.strerror})") from None
    if not os.access(p, os.W_OK):
        raise OSError(f"{p}: {what} is not writable")
    return p


def check_not_input(out: str | os.PathLike, inputs, what: str = "output") -> None:
    """OSError when the output ``out`` is (or links to) one of ``inputs`` or the digest beside one: writing
    it would destroy what the command reads."""
    real = os.path.realpath(out)
    for p in (p for p in inputs if p):
        if real in (os.path.realpath(p), os.path.realpath(digest_path(p))):
            raise OSError(f"{out}: the {what} would overwrite the input {p}; choose another --out")


def check_writable(path: str | os.PathLike, what: str = "output", inputs=()) -> Path:
    """Raise OSError naming ``path`` now, before any work, if a file cannot be written there, or if it is one of
    the command's ``inputs`` (:func:`check_not_input`)."""
    check_not_input(path, inputs, what)
    path = Path(path)
    if path.is_dir():
        raise OSError(f"{path}: is a directory, not a file for the {what}")
    parent = path.parent
    for p in [parent, *parent.parents]:
        if p.exists():
            if not p.is_dir():
                raise OSError(f"{path}: cannot write the {what} there ({p} is a file, not a directory)")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OSError(f"{path}: cannot write the {what} there ({e.strerror or e})") from None
    return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file beside ``path``; on clean exit fsync and rename it to ``path``. The file
    gets the permissions the umask gives a new file (not mkstemp's 0600)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OSError(f"{path}: cannot write there ({e.strerror or e})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:  # a full disk, a quota: name the file, leave nothing half-written
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise OSError(f"{path}: cannot write it ({e.strerror or e})") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def digest_path(path: str | os.PathLike) -> Path:
    """Where :func:`save` records the sha256 of ``path``'s bytes."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save ``obj`` to ``path`` atomically and record its digest beside it."""
    path = Path(path)
    side = digest_path(path)
    side.unlink(missing_ok=True)  # never an old digest beside new bytes, whatever is interrupted
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getbuffer()
    with atomic_open(path, "wb") as f:
        f.write(data)
    with atomic_open(side, "w") as f:
        f.write(hashlib.sha256(data).hexdigest() + "\n")


def verify(path: str | os.PathLike) -> None:
    """ValueError naming ``path`` if its bytes differ from the digest recorded when it was written, or
    if a member of its zip archive fails its CRC32 (a flipped bit anywhere in the data)."""
    path = Path(path)
    side = digest_path(path)
    if side.is_file():
        want = side.read_text().strip()
        if file_digest(path) != want:
            raise ValueError(f"{path}: corrupt (its bytes do not match the sha256 recorded when it was written)")
        return  # the digest covers every byte: no second pass for the CRCs
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError):
        raise ValueError(f"{path}: not a ddmini checkpoint (not a readable torch zip archive)") from None
    if bad is not None:
        raise ValueError(f"{path}: corrupt (member {bad} fails its CRC check)")


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint written by :func:`save` after :func:`verify`; a missing file raises
    FileNotFoundError, anything else unusable one ValueError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    verify(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises a zoo of types; its text advises weights_only=False: never pass it on
        raise ValueError(
            f"{path}: not a ddmini checkpoint (it holds more than tensors and plain containers, "
            f"or is damaged: {type(e).__name__})"
        ) from None


def fingerprint(*parts: Any) -> str:
    """A short, stable hash of JSON-able parts (configs, file digests): the cache key of an artefact."""
    import json

    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (identifies the exact checkpoint an artefact was made from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_kind(
    path: str | os.PathLike, kind: str, what: str, required: tuple[str, ...] = (), key: str | None = None
) -> dict:
    """Load a ddmini artefact dict whose "kind" is ``kind`` and which holds every key of ``required``;
    anything else raises one ValueError line naming the file. With ``key`` (a cached stage's artefact), the
    file must have its digest beside it and record that it was made for ``key`` (:func:`recorded_key`): a
    file copied from another slot or run, or with its digest deleted, is refused."""
    if key is not None and Path(path).is_file() and not digest_path(path).is_file():
        raise ValueError(f"{path}: no sha256 recorded beside it ({digest_path(path).name} is missing)")
    obj = load(path)
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise ValueError(f"{path}: not a ddmini {what}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ValueError(f"{path}: not a complete ddmini {what} (missing {', '.join(missing)})")
    if key is not None and recorded_key(obj) != key:
        raise ValueError(f"{path}: made for another stage (key {recorded_key(obj)!r}, this one is {key!r})")
    return obj


def recorded_key(obj: dict) -> str | None:
    """The cache key an artefact records it was made for (top level, or a diffusion checkpoint's extra)."""
    extra = obj.get("extra")
    return obj.get("key", extra.get("key") if isinstance(extra, dict) else None)


def set_aside(path: Path) -> Path:
    """Move a rejected artefact (and its digest) out of the way, kept for inspection: PATH.rejected."""
    to = path.with_name(path.name + ".rejected")
    os.replace(path, to)
    side = digest_path(path)
    if side.exists():
        os.replace(side, digest_path(to))
    return to


def load_weights(model: torch.nn.Module, state_dict: dict, path: str | os.PathLike) -> torch.nn.Module:
    """``model.load_state_dict`` with a mismatch reported as one ValueError line naming the file."""
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{path}: weights do not match the stored config ({str(e).splitlines()[0]})") from None
    return model


@contextlib.contextmanager
def exclusive(path: Path, world=None):
    """An advisory lock per artefact: a second run on the same run directory that needs the same one
    waits here until the first has cached it, then finds it cached instead of computing it again.
    Under torchrun rank 0 holds it for all ranks (the others follow rank 0's decisions); ``world``
    defaults to the one-process world."""
    if world is not None and not world.is_main:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # never through a symbolic link: it would create or lock a file elsewhere
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as e:
        why = "a symbolic link" if path.is_symlink() else e.strerror
        raise OSError(f"{path}: cannot take the lock ({why})") from None
    with os.fdopen(fd, "a") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock (e.g. Windows): run unlocked
            pass
        yield


def record(path: Path, read: Callable[[dict], object], make: Callable[[], object], log, again: str, world=None):
    """The JSON record at ``path`` as ``read`` takes it (which raises ValueError, TypeError or KeyError for one it
    refuses: then one line, the file set aside as PATH.rejected, and made again), else ``make()``: under torchrun
    (``world``: ``ddmini.distributed.current()``; None: one process) on every rank, rank 0's result taken by all,
    written atomically by rank 0. Under the record's lock, so a second run in the same run directory waits and
    finds it."""
    from dataclasses import asdict, is_dataclass

    main = world is None or world.is_main
    share = (lambda obj: obj) if world is None else world.broadcast_object
    with exclusive(path.with_name(f".{path.stem}.lock"), world):
        rec = None
        if main and path.exists():
            try:
                rec = read(json.loads(path.read_text()))
            except (ValueError, TypeError, KeyError) as e:
                log(f"{path.name}: {str(e)[:160]}; {again}")
                set_aside(path)  # kept for inspection
                rec = None
        rec = share(rec)
        if rec is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            rec = share(make())
            if main:
                with atomic_open(path, "w") as f:
                    f.write(json.dumps(asdict(rec) if is_dataclass(rec) else rec, indent=1))
    return rec
