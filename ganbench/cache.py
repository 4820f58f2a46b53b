"""Arrays computed once per input and kept in the user cache (k-means centroids, baseline sample banks, the
memorisation check's held-out distances).

The key is a digest of every input that decides the array (data digests, seeds, algorithm versions),
so a changed input never reuses a stale entry. Each entry is written atomically with the SHA-256 of
its bytes beside it (``<entry>.sha256``), and read only when they still agree: a damaged entry
(truncated, or altered into another valid array) is recomputed, never trusted. Entries whose inputs
changed are never read again, so the cache keeps at most GANBENCH_CACHE_LIMIT_MB of them (2,048 MB
by default; MNIST's file is not counted): each read marks its entry as used, and after each write
the entries used longest ago are removed until the rest fit.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ganbench import atomic
from ganbench.data import default_cache_dir
from ganbench.errors import GanbenchError


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def exact_digest(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes as they are (``digest`` rounds to float32 first, so
    float64 values that differ below float32's resolution would share its key); hashed in place."""
    contiguous = np.ascontiguousarray(array)
    hashed = hashlib.sha256(f"{contiguous.dtype.str}{contiguous.shape}".encode())
    hashed.update(memoryview(contiguous).cast("B"))
    return hashed.hexdigest()


def cached_array(prefix: str, key_fields: dict, shape: tuple[int, ...], compute: Callable[[], np.ndarray],
                 cache_dir: str | Path | None = None) -> tuple[np.ndarray, str]:
    """``compute()`` through the cache file ``<prefix>-<key>.npy``; returns the array and the key."""
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:24]
    path = (Path(cache_dir) if cache_dir else default_cache_dir()) / f"{prefix}-{key}.npy"
    if path.exists():
        try:
            stored = path.read_bytes()
            if hashlib.sha256(stored).hexdigest() == checksum_path(path).read_text().strip():
                array = np.load(io.BytesIO(stored), allow_pickle=False)
                if array.shape == tuple(shape) and np.all(np.isfinite(array)):
                    _mark_used(path)
                    return array, key
        except (ValueError, OSError, EOFError):
            pass  # a damaged entry (or one without its checksum) is recomputed and replaced below
        print(f"ganbench: recomputing cache entry {path}: damaged or without its checksum", file=sys.stderr)
    array = compute()
    try:
        encoded = io.BytesIO()
        np.save(encoded, array, allow_pickle=False)
        # Both in full, then renamed, the checksum last: an entry is only ever read beside its own checksum.
        atomic.write_set({path: encoded.getvalue(), checksum_path(path): hashlib.sha256(encoded.getvalue()).hexdigest()})
    except GanbenchError as error:  # a read-only cache only costs the next run the computation
        reason = (f"the cache folder {path.parent} is a file: point the cache (GANBENCH_CACHE) at a folder"
                  if path.parent.is_file() else str(error))
        print(f"ganbench: warning: {prefix} not cached ({reason})", file=sys.stderr)
    else:
        prune(path.parent, keep=path)
    return array, key


ENTRY_NAME = re.compile(r"^[a-z0-9_-]+-[0-9a-f]{24}\.npy$")   # what cached_array writes
DEFAULT_LIMIT_MB = 2048


def checksum_path(entry: Path) -> Path:
    """Where the SHA-256 of an entry's bytes is kept."""
    return entry.with_name(entry.name + ".sha256")


def _mark_used(path: Path) -> None:
    """Used now: the last entry to be removed when the cache is over its limit. A cache the user may
    only read (or an entry another process removed meanwhile) keeps its times: the array is good."""
    try:
        os.utime(path)
    except OSError:
        pass


def limit_bytes() -> float:
    """GANBENCH_CACHE_LIMIT_MB in bytes (inf: no limit; empty: unset, as an empty GANBENCH_CACHE is); a one-line
    error for anything but a number >= 0."""
    value = os.environ.get("GANBENCH_CACHE_LIMIT_MB", "").strip() or str(DEFAULT_LIMIT_MB)
    try:
        megabytes = float(value)
    except ValueError:
        megabytes = math.nan
    if math.isnan(megabytes) or megabytes < 0:
        raise GanbenchError(f"GANBENCH_CACHE_LIMIT_MB must be a number of megabytes >= 0 (inf: no limit), "
                            f"got {value!r}")
    return megabytes * 2**20


def prune(folder: Path, keep: Path | None = None) -> list[Path]:
    """Remove the cache entries used longest ago until the rest fit in the limit; ``keep`` stays.
    Returns what was removed. Another process's entry removed under it is only recomputed."""
    entries = []
    for path in folder.glob("*.npy"):
        if ENTRY_NAME.match(path.name):
            try:
                status = path.stat()
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            entries.append((status.st_mtime, status.st_size, path))
    total, limit, removed = sum(size for _, size, _ in entries), limit_bytes(), []
    for _, size, path in sorted(entries, key=lambda entry: entry[0]):
        if total <= limit:
            break
        if keep is not None and path == keep:
            continue
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed
