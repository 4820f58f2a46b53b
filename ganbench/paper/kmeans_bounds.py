"""Lloyd's assignment step with Elkan's lower bounds (Elkan, ICML 2003), for k-means on the CPU.

Plain Lloyd recomputes every point's distance to every centroid in each iteration: for the
k-means row of Table 1 (50,000 images, 10,000 centroids, d = 784) one float32 GEMM of 3.9 s on
two cores, 39 s for ten iterations. Most of it proves again what the last iteration showed:
after the first updates few centroids move far, and a point's own centroid stays the nearest.

Per point x and centroid c, ``lower[x, c]`` is a lower bound on the distance |x - c| (not
squared). A centroid that moves by delta_c lowers every bound on it by delta_c (triangle
inequality). A point needs its distances recomputed only when some other centroid's bound is
not above its exact distance to its own centroid, u(x) = |x - c_a(x)|, computed in float64 every
iteration. Otherwise every other centroid is strictly farther than its own in exact arithmetic,
so its assignment stands, as exact Lloyd would have it. Points that need it get a full row of
float32 GEMM distances (the torch backend's form, bank-centred, norms summed in float64) and fresh
bounds; their argmin is a float32 one (the first index among ties), within 2E + 8uN of the exact
nearest (E and N below) as plain Lloyd's float32 argmin is within 2E, so near-ties may go either way.

Rounding never makes a bound too high. The GEMM tile G = ||c - m||^2 - 2 (x - m).(c - m) plus
||x - m||^2 is the torch backend's float32 distance D32, within E of the exact D
(``neighbours.distance_margins``, the float32 bound of ganbench.scoring.bounds, with N = ||x - m||^2
+ max ||c - m||^2 >= D / 2). Adding instead the float64 ||x - m||^2 - E - 8uN rounded down (u = 2^-24)
makes the same one float32 addition, so V <= (D - 8uN)(1 + u) <= D - 6uN; then V (1 + u)^2 <= D, so
the float32 square root of max(V, 0) is at most the exact distance. Each drift is rounded up, and so
is the float32 subtraction from every bound (``subtract_drift``). u(x) and the drifts are float64 sums
of d squared differences, off by at most (d + 2) 2^-53 of themselves (Higham's gamma_d, the
differences and the squares), and raised by (d + 3) 2^-52 (``exact_raise``).

On MNIST's Table 1 configuration the share of points that need their row is 0.93, 0.44, 0.53,
0.39, 0.22, 0.11, 0.02, 0.07 and 0.001 in iterations 2 to 10 (docs/performance.md), so about
3.7 GEMMs instead of 10. The bounds are one float32 per point and centroid: ``MAX_BOUND_BYTES``
caps them, past which k-means runs plain Lloyd.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from ganbench.scoring import byte_distances, neighbours, parzen

MAX_BOUND_BYTES = 4 * 2**30  # 50,000 x 10,000 float32 bounds are 2 GB
ROW_BLOCK = 2048            # points whose distances one GEMM computes at once
CENTROID_BLOCK = 2048       # centroids per tile: the tile (2048 x 2048 float32, 16 MB) stays near the cache


def exact_raise(dimension: int) -> float:
    """The factor that lifts a float64 distance over d coordinates above the exact one (module docstring)."""
    return 1.0 + (dimension + 3) * 2.0**-52


def exact_distances(rows: torch.Tensor, others: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """|rows[i] - others[columns[i]]| in float64 for every row, raised above the exact distance."""
    return parzen.exact_sq_distances(rows, others, None, columns).sqrt() * exact_raise(rows.shape[1])


def fits(points: int, clusters: int) -> bool:
    """Whether the bounds for these sizes stay within ``MAX_BOUND_BYTES`` and a quarter of this
    machine's memory (an allocation past it would not fail at once but page out, or be killed, later)."""
    bound_bytes = points * clusters * 4
    return bound_bytes <= MAX_BOUND_BYTES and bound_bytes <= physical_memory() // 4


def physical_memory() -> int:
    """Bytes of physical memory, or a very large number where the platform does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 2**62


@dataclass
class AssignmentStats:
    """How many points needed their distances recomputed in one assignment step."""

    points: int       # all points
    recomputed: int   # points whose bounds did not prove their assignment: each took a GEMM row


class BoundedAssigner:
    """Lloyd's assignments for fixed points and moving centroids, skipping what the bounds prove."""

    def __init__(self, points: torch.Tensor):
        self.points = points                                   # (n, d) float32
        self.centre = points.mean(dim=0, dtype=torch.float64).to(torch.float32)
        self.centred = points - self.centre                    # float32, as the torch backend centres
        self.centred_norms64 = torch.sum(self.centred * self.centred, dim=1, dtype=torch.float64)
        self.lower: torch.Tensor | None = None                 # (n, k) float32 lower bounds on |x - c|
        self.largest_bound = 0.0                               # above every finite bound in ``lower``
        self.assignment: torch.Tensor | None = None            # (n,) int64
        self.previous: torch.Tensor | None = None              # the centroids of the last call

    def assign(self, centroids: torch.Tensor) -> tuple[torch.Tensor, AssignmentStats]:
        """Each point's nearest centroid (float32 (k, d) centroids), as Lloyd's assignment step."""
        count = len(self.points)
        if self.lower is None:
            self.lower = torch.empty((count, len(centroids)), dtype=torch.float32)
            self.assignment = torch.zeros(count, dtype=torch.int64)
            need = torch.arange(count)
        else:
            # How far each centroid moved: a float64 sum of d squares, raised to cover its rounding.
            drift = exact_distances(centroids, self.previous, torch.arange(len(centroids)))
            subtract_drift(self.lower, drift, self.largest_bound)
            own = self.own_distance(centroids)
            need = torch.nonzero(self.lower.amin(dim=1) <= own).squeeze(1)
        self.recompute(need, centroids)
        self.previous = centroids.clone()
        return self.assignment, AssignmentStats(count, len(need))

    def own_distance(self, centroids: torch.Tensor) -> torch.Tensor:
        """u(x) = |x - c_a(x)| in float64, raised to cover its rounding, as float32 rounded up."""
        return round_up_to_float32(exact_distances(self.points, centroids, self.assignment))

    def recompute(self, rows: torch.Tensor, centroids: torch.Tensor) -> None:
        """Full distance rows for ``rows``: their argmin and fresh lower bounds."""
        if not len(rows):
            return
        every_point = len(rows) == len(self.points)
        distances = (ByteDistances.applicable(self.points, centroids) if every_point else None) \
            or Float32Distances(self, centroids)
        # A flat buffer: each tile is a contiguous prefix of it (the products write contiguous outputs in place).
        tile_buffer = torch.empty(min(ROW_BLOCK, len(rows)) * min(CENTROID_BLOCK, len(centroids)),
                                  dtype=distances.tile_dtype)
        bounds_buffer = None if every_point else torch.empty((min(ROW_BLOCK, len(rows)), len(centroids)))
        for start in range(0, len(rows), ROW_BLOCK):
            chosen = rows[start:start + ROW_BLOCK]
            # Every point (the first call): the rows are written in place, not copied there.
            bounds = self.lower[start:start + len(chosen)] if every_point else bounds_buffer[:len(chosen)]
            prepared = distances.prepare(chosen)
            best = torch.full((len(chosen),), math.inf, dtype=torch.float64)
            best_index = torch.zeros(len(chosen), dtype=torch.int64)
            for column in range(0, len(centroids), CENTROID_BLOCK):
                block = slice(column, column + CENTROID_BLOCK)
                width = min(CENTROID_BLOCK, len(centroids) - column)
                tile = tile_buffer[:len(chosen) * width].view(len(chosen), width)
                block_min, block_arg = distances.tile(prepared, block, tile, bounds[:, block])
                closer = block_min < best                   # strictly: ties keep the earlier block
                best = torch.where(closer, block_min, best)
                best_index = torch.where(closer, block_arg + column, best_index)
            self.largest_bound = max(self.largest_bound, float(bounds.max()))
            # A point's own centroid is tracked by u(x), exactly; its bound would only ever stop the skip.
            bounds.scatter_(1, best_index[:, None], math.inf)
            if not every_point:
                self.lower.index_copy_(0, chosen, bounds)
            self.assignment.index_copy_(0, chosen, best_index)


class Float32Distances:
    """Distance rows from the torch backend's float32 GEMM form, bank-centred by the points' mean."""

    tile_dtype = torch.float32

    def __init__(self, assigner: BoundedAssigner, centroids: torch.Tensor):
        self.assigner = assigner
        self.centroids = centroids - assigner.centre
        self.centroid_norms = parzen.squared_norms(self.centroids)
        self.largest_centroid_norm = float(torch.sum(self.centroids * self.centroids, dim=1, dtype=torch.float64).max())

    def prepare(self, chosen: torch.Tensor):
        """The rows' centred points and ||x - m||^2 - E - 8uN, rounded down to float32 (module docstring);
        N is read from rounded values like E, hence the same factor 1 + 2^-10."""
        query_norms = self.assigner.centred_norms64.index_select(0, chosen)
        margins = neighbours.distance_margins(query_norms, self.largest_centroid_norm, self.centroids.shape[1])
        slack = 8 * 2.0**-24 * (1 + 2.0**-10) * (query_norms + self.largest_centroid_norm)
        return self.assigner.centred.index_select(0, chosen), round_down_to_float32(query_norms - margins - slack)

    def tile(self, prepared, block: slice, tile: torch.Tensor, bounds: torch.Tensor):
        """D32 - E for one tile (in one pass after the GEMM: E is one number per row, so the row
        minimum is at D32's); writes its square roots, lower bounds, and returns the row minima."""
        queries, query_shift = prepared
        lowered = torch.addmm(self.centroid_norms[block][None, :], queries, self.centroids[block].T, alpha=-2.0, out=tile)
        lowered.add_(query_shift[:, None])
        block_min, block_arg = lowered.min(dim=1)   # first index among ties
        torch.sqrt(lowered.clamp_(min=0.0), out=bounds)
        return block_min.double(), block_arg


class ByteDistances:
    """Exact distance rows when points and centroids are 8-bit (the first step, from chosen MNIST images).

    One int8 product per tile gives E = 255^2 D_bytes exactly (ganbench.scoring.byte_distances), four
    times faster than the float32 GEMM on a CPU with int8 dot products. The argmin is the exact one of
    the bytes; the values differ from a / 255 by float32's rounding, so the true distance is within
    510u of D_bytes (byte_distances' docstring), and sqrt(E) / 255 within 255u of the true |x - c|. The
    bound written is sqrt(float32(E)) (1 - 2^-15) / 255 with the factor rounded down: three more
    roundings of u each, and 2^-15 = 512u covers them all.
    """

    tile_dtype = torch.int32
    SCALE = (1.0 - 2.0**-15) / byte_distances.LEVELS

    def __init__(self, points: byte_distances.ByteOperands, centroids: byte_distances.ByteOperands):
        self.points, self.centroids = points, centroids
        self.scale = float(round_down_to_float32(torch.tensor([self.SCALE], dtype=torch.float64))[0])

    @classmethod
    def applicable(cls, points: torch.Tensor, centroids: torch.Tensor) -> ByteDistances | None:
        """The exact distances when points and centroids are both 8-bit (``byte_distances.exact_operands``)."""
        sides = byte_distances.exact_operands(points, centroids)
        return None if sides is None else cls(*sides)

    def prepare(self, chosen: torch.Tensor) -> byte_distances.ByteOperands:
        return self.points.rows(chosen)

    def tile(self, prepared: byte_distances.ByteOperands, block: slice, tile: torch.Tensor, bounds: torch.Tensor):
        byte_distances.sq_distance_tile(prepared, self.centroids.rows(block), out=tile)  # E, exact
        block_min, block_arg = tile.min(dim=1)      # first index among ties
        torch.sqrt(tile.float(), out=bounds).mul_(self.scale)
        return block_min.double() / byte_distances.DISTANCE_SCALE, block_arg


def subtract_drift(lower: torch.Tensor, drift: torch.Tensor, largest_bound: float) -> None:
    """lower[:, c] -= drift[c], rounded so that no bound rises above the exact lower bound.

    float32's subtraction rounds by at most 2^-24 of its result. A positive result is below
    ``largest_bound`` (every finite bound starts below it and only falls), so subtracting 2^-23 of
    it more, and the drift rounded up, keeps every positive result below the exact difference; a
    result <= 0 already makes its point recompute its row. Infinite bounds (own centroids) stay infinite.
    """
    lower.sub_(round_up_to_float32(drift + largest_bound * 2.0**-23)[None, :])


def round_up_to_float32(values: torch.Tensor) -> torch.Tensor:
    """float64 values as float32 numbers never below them."""
    single = values.float()
    return torch.where(single.double() < values, torch.nextafter(single, torch.tensor(math.inf)), single)


def round_down_to_float32(values: torch.Tensor) -> torch.Tensor:
    """float64 values as float32 numbers never above them."""
    return -round_up_to_float32(-values)
