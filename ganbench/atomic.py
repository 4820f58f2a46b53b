"""Atomic writes: a file is either the old one or the complete new one, never half of each.

Every result, cache entry and checkpoint goes through here (temporary file in the
same folder, fsync, then ``os.replace``, which is atomic on POSIX).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(temporary_path)`` and move the result into place atomically."""
    with atomic_path(path) as temporary:
        writer(temporary)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return write_with(path, lambda temporary: temporary.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_with(path, lambda temporary: temporary.write_text(text))
