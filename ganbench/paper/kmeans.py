"""k-means centroids as a Parzen bank (the sanity row of Theis, van den Oord and Bethge, ICLR 2016).

Lloyd's algorithm; each update runs on the scoring device: on a GPU the points stay there and
the per-cluster sums are one ``index_add_`` on the device's tensors. Each assignment step is one
nearest-neighbour pass of the scorer (the fused kernel on CUDA); on the CPU Elkan's lower bounds
(``kmeans_bounds``) recompute only the points whose assignment could change. Centroids are
cached in the user cache, keyed by every input.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ganbench import cache
from ganbench.defaults import DEFAULT_PRECISION
from ganbench.errors import GanbenchError
from ganbench.paper import kmeans_bounds
from ganbench.progress import progress_bar
from ganbench.scoring import neighbours, parzen
from ganbench.scoring.inputs import as_matrix, finite_magnitude, is_whole_number

# Bump when the algorithm changes, so old cache entries are not reused. 2: Elkan's bounds on the CPU
# (assignments the bounds prove are exact ones, where float32 distances could break a near-tie). 3: points far
# from the mean against their distances assigned exactly (kmeans_bounds.BoundedAssigner.settle_far_points).
ALGORITHM_VERSION = 3
SUM_PIECE_ROWS = 4096  # rows converted to float64 at once for the per-cluster sums on the CPU


def fit(points: np.ndarray, clusters: int, iterations: int = 10, seed: int = 0, *, backend: str = "auto",
        device=None, precision: str = DEFAULT_PRECISION, progress: bool = True) -> np.ndarray:
    """Lloyd's k-means from ``clusters`` distinct random points; an empty cluster keeps its centroid.

    Points and centroids live on the scoring device (``parzen``'s rule for ``backend`` and
    ``device``); the same torch operations run on the CPU and on a GPU. ``precision`` is the
    triton backend's (``auto`` or ``int8`` assign 8-bit points, MNIST's, with exact int8 distances).
    """
    parzen.check_options(backend, precision)
    points = _float32_points(points)
    for name, value in (("clusters", clusters), ("iterations", iterations), ("seed", seed)):
        if not (is_whole_number(value) and value >= 0):
            raise GanbenchError(f"{name} must be a whole number >= 0, got {value!r}")
    if not 1 <= clusters <= len(points):
        raise GanbenchError(f"clusters must be in 1..{len(points)}, got {clusters}")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(points), size=clusters, replace=False)
    target = parzen.scoring_device(device, backend)
    if backend == "reference":
        target = torch.device("cpu")  # the float64 reference runs on the host
    rows = torch.from_numpy(points).to(target)
    # Per-cluster sums in float64 (exact to far below float32's rounding of the mean), added from float64
    # copies of a piece of the rows at a time on the CPU: a copy of all of MNIST's 50,000 training images
    # is 314 MB of memory touched for the first time, the pieces a few MB reused (the same sums, in the
    # same order).
    piece = SUM_PIECE_ROWS if target.type == "cpu" else len(points)
    centroids = rows[torch.from_numpy(chosen).to(target)].clone()
    bounded = None
    if target.type == "cpu" and backend in ("auto", "torch") and kmeans_bounds.fits(len(points), clusters):
        bounded = kmeans_bounds.BoundedAssigner(rows)
    # One buffer for the per-cluster sums, zeroed each iteration: a fresh 63 MB (10,000 x 784 float64)
    # every iteration is faulted in page by page again.
    sums = torch.empty((clusters, points.shape[1]), dtype=torch.float64, device=target)
    bar = progress_bar(range(iterations), enabled=progress, desc="k-means")
    for _ in bar:
        if bounded is not None:
            cluster, stats = bounded.assign(centroids)
            if progress:
                bar.set_postfix(recomputed=f"{stats.recomputed / stats.points:.0%}")
        else:
            # The Parzen pass's nearest (exact_ranking=False): Lloyd's float32 argmin, as the bounds' path vouches for.
            _, assignment = neighbours.nearest(rows, centroids, backend=backend, device=target, precision=precision,
                                               exact_ranking=False)
            cluster = torch.from_numpy(assignment[:, 0]).to(target)
        counts = torch.bincount(cluster, minlength=clusters)
        # index_add_ is one vectorised pass (np.add.at took seconds per iteration on the CPU).
        sums.zero_()
        for first in range(0, len(rows), piece):
            sums.index_add_(0, cluster[first:first + piece], rows[first:first + piece].double())
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).to(torch.float32)
    return centroids.cpu().numpy()


# Float64 points whose float32 rounding moves them by more than this share of their spread are refused.
FLOAT32_ROUNDING_SHARE = 2.0**-12


def _float32_points(points) -> np.ndarray:
    """The points as float32 (k-means' arithmetic), or a one-line error: 2-D, real, finite and in float32's range."""
    tensor = as_matrix("points", points, check_finite=False).cpu()
    largest = finite_magnitude({"points": tensor})  # the NaN/inf check and the range in one pass
    if tensor.dtype != torch.float32:
        if largest > float(np.finfo(np.float32).max):
            raise GanbenchError(f"points up to {largest:.3g} exceed float32's range (3.4e38), in which k-means "
                                "runs; divide them by one factor first")
        single, exact = tensor.float(), tensor.double()
        # Offset data lose their spread in float32 (1e8 plus values in [0, 1] all round to 1e8): refused, not fitted.
        moved = float((single.double() - exact).abs().max())
        spread = float((exact.amax(dim=0) - exact.amin(dim=0)).max())
        if moved > FLOAT32_ROUNDING_SHARE * spread > 0:
            raise GanbenchError(f"k-means runs in float32, and rounding these points to it moves them by up to {moved:.3g}, "
                                f"{moved / spread:.2g} of their spread ({spread:.3g}); subtract their mean first")
        tensor = single
    return tensor.numpy()


def cached_fit(points: np.ndarray, clusters: int, iterations: int = 10, seed: int = 0, *,
               cache_dir: str | Path | None = None, **options) -> tuple[np.ndarray, str]:
    """``fit`` through the user cache; returns the centroids and the cache key."""
    key_fields = {"data_sha256": cache.digest(points), "clusters": clusters, "iterations": iterations, "seed": seed,
                  "version": ALGORITHM_VERSION}
    return cache.cached_array("kmeans", key_fields, (clusters, points.shape[1]),
                              lambda: fit(points, clusters, iterations, seed, **options), cache_dir)
