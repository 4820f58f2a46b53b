"""k-means centroids as a Parzen bank (the sanity row of Theis, van den Oord and Bethge, ICLR 2016).

Lloyd's algorithm; each assignment step is one nearest-neighbour pass of the scorer
(the fused kernel on CUDA). Centroids are cached in the user cache, keyed by every input.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ganbench import cache
from ganbench.errors import GanbenchError
from ganbench.scoring import neighbours

ALGORITHM_VERSION = 1  # bump when the algorithm changes, so old cache entries are not reused


def fit(points: np.ndarray, clusters: int, iterations: int = 10, seed: int = 0, *, backend: str = "auto",
        device=None, progress: bool = True) -> np.ndarray:
    """Lloyd's k-means from ``clusters`` distinct random points; an empty cluster keeps its centroid."""
    points = np.asarray(points, dtype=np.float32)
    if not 1 <= clusters <= len(points):
        raise GanbenchError(f"clusters must be in 1..{len(points)}, got {clusters}")
    rng = np.random.default_rng(seed)
    centroids = points[rng.choice(len(points), size=clusters, replace=False)].copy()
    for _ in tqdm(range(iterations), desc="k-means", disable=not progress, file=sys.stderr):
        _, assignment = neighbours.nearest(points, centroids, backend=backend, device=device)
        assignment = assignment[:, 0]
        counts = np.bincount(assignment, minlength=clusters)
        sums = np.zeros((clusters, points.shape[1]), dtype=np.float64)
        np.add.at(sums, assignment, points)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return centroids


def cached_fit(points: np.ndarray, clusters: int, iterations: int = 10, seed: int = 0, *,
               cache_dir: str | Path | None = None, **options) -> tuple[np.ndarray, str]:
    """``fit`` through the user cache; returns the centroids and the cache key."""
    key_fields = {"data_sha256": cache.digest(points), "clusters": clusters, "iterations": iterations, "seed": seed,
                  "version": ALGORITHM_VERSION}
    return cache.cached_array("kmeans", key_fields, (clusters, points.shape[1]),
                              lambda: fit(points, clusters, iterations, seed, **options), cache_dir)
