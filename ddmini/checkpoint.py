"""Atomic writes: nothing half-written is ever read back.

Every artefact is written to a temporary file in the destination directory, flushed to disk and
renamed over the target (rename is atomic on POSIX), so an interrupted write leaves either the old
file or none. Loading uses ``torch.load(..., weights_only=True)``: checkpoints hold tensors and plain
Python containers only, never pickled code.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open a temporary file beside ``path``; on clean exit fsync and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save ``obj`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint written by :func:`save`; a missing or corrupt file raises ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises a zoo of types for truncated/corrupt files
        raise ValueError(f"{path}: corrupt or unreadable checkpoint ({type(e).__name__}: {e})") from None


def fingerprint(*parts: Any) -> str:
    """A short, stable hash of JSON-able parts (configs, file digests): the cache key of an artefact."""
    import hashlib
    import json

    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (identifies the exact checkpoint an artefact was made from)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_kind(path: str | os.PathLike, kind: str, what: str) -> dict:
    """Load a ddmini artefact dict whose "kind" is ``kind``; anything else raises ValueError."""
    obj = load(path)
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise ValueError(f"{path}: not a ddmini {what}")
    return obj


def load_weights(model: torch.nn.Module, state_dict: dict, path: str | os.PathLike) -> torch.nn.Module:
    """``model.load_state_dict`` with a mismatch reported as one ValueError line naming the file."""
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{path}: weights do not match the stored config ({str(e).splitlines()[0]})") from None
    return model
