"""Arrays computed once per input and kept in the user cache (k-means centroids, baseline sample banks).

The key is a digest of every input that decides the array (data digests, seeds, algorithm
versions), so a changed input never reuses a stale entry; entries are written atomically and a
damaged one is recomputed.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ganbench import atomic
from ganbench.data import default_cache_dir
from ganbench.errors import GanbenchError


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def cached_array(prefix: str, key_fields: dict, shape: tuple[int, ...], compute: Callable[[], np.ndarray],
                 cache_dir: str | Path | None = None) -> tuple[np.ndarray, str]:
    """``compute()`` through the cache file ``<prefix>-<key>.npy``; returns the array and the key."""
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:24]
    path = (Path(cache_dir) if cache_dir else default_cache_dir()) / f"{prefix}-{key}.npy"
    if path.exists():
        try:
            array = np.load(path, allow_pickle=False)
            if array.shape == tuple(shape) and np.all(np.isfinite(array)):
                return array, key
        except (ValueError, OSError, EOFError):
            pass  # a damaged entry is recomputed and replaced below
        print(f"ganbench: recomputing damaged cache entry {path}", file=sys.stderr)
    array = compute()
    try:
        atomic.write_npy(path, array)
    except GanbenchError as error:  # a read-only cache only costs the next run the computation
        print(f"ganbench: warning: {prefix} not cached ({error})", file=sys.stderr)
    return array, key
