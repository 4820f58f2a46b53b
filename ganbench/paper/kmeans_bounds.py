"""Lloyd's assignment step with Elkan's lower bounds (Elkan, ICML 2003), for k-means on the CPU.

Plain Lloyd recomputes every point's distance to every centroid in each iteration: for the
k-means row of Table 1 (50,000 images, 10,000 centroids, d = 784) one float32 GEMM of 3.9 s on
two cores, 39 s for ten iterations. Most of it proves again what the last iteration showed:
after the first updates few centroids move far, and a point's own centroid stays the nearest.

Per point x and centroid c, ``lower[x, c]`` is a lower bound on the distance |x - c| (not
squared). A centroid that moves by delta_c lowers every bound on it by delta_c (triangle
inequality). Every other centroid whose bound stays above the point's exact distance to its own
centroid, u(x) = |x - c_a(x)| (computed in float64 every iteration), is strictly farther than its
own in exact arithmetic. The centroids are grouped once, by the nearest of ``GROUPS`` pivots, into
contiguous columns of the bounds (Yinyang k-means' grouping, Ding et al., ICML 2015, with Elkan's
per-centroid bounds kept); a point recomputes only the groups where some bound fell to u(x): one
GEMM tile per group over the points that need it, with fresh bounds. Its new centroid is the
nearest of those groups' by their float32 distances (the lowest centroid index among ties) if
nearer than u(x)^2, else its own: within 2E + 8uN of the exact nearest (E and N below), as plain
Lloyd's float32 argmin is within 2E, so near-ties may go either way; a point no group needs keeps
its centroid, as exact Lloyd would.
When a point moves, its old centroid gets its exact distance, lowered, as bound. Where that 2E + 8uN dwarfs
the distances (a point far from the points' mean against them: an outlier moves the mean) the point takes
the exact nearest instead (``settle_far_points``), as the Parzen pass rescores such rows.

Rounding never makes a bound too high. The GEMM tile G = ||c - m||^2 - 2 (x - m).(c - m) plus
||x - m||^2 is the torch backend's float32 distance D32, within E of the exact D
(``neighbours.distance_margins``, the float32 bound of ganbench.scoring.bounds, with N = ||x - m||^2
+ max ||c - m||^2 >= D / 2). Adding instead the float64 ||x - m||^2 - E - 12uN rounded down (u = 2^-24)
makes the same one float32 addition, so V <= (D - 12uN)(1 + u) <= D - 10uN <= D (1 - 5u); then
V (1 + 2u)^2 <= D, so even a square root off by one ulp (torch's float32 sqrt on the CPU is, for about
a fifth of values: it is faithfully, not correctly, rounded) of max(V, 0) is at most the exact distance.
Each drift is rounded up, and so is the float32 subtraction from every bound (``subtract_drift``, one
compiled pass with the groups' smallest bounds where ``fused_rows`` is built).
u(x) and the drifts are float64 sums of d squared differences, off by at most (d + 2) 2^-53 of
themselves (Higham's gamma_d, the differences and the squares), and raised by (d + 3) 2^-52
(``exact_raise``) or, for a bound, lowered by (d + 4) 2^-52 (``exact_lower``) before rounding down
to float32.

On MNIST's Table 1 configuration the share of points that need some group is 0.93, 0.91, 0.95,
0.79, 0.61, 0.54, 0.14, 0.17 and 0.002 in iterations 2 to 10, but the share of distances they
recompute only 0.16, 0.17, 0.16, 0.05, 0.04, 0.04, 0.005, 0.008 and 0.0001 (docs/performance.md).
The bounds are one float32 per point and centroid: ``MAX_BOUND_BYTES`` caps them, past which k-means
runs plain Lloyd.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ganbench.memory import physical_memory
from ganbench.scoring import byte_distances, centring, float64_rows, fused_rows, neighbours, parzen, reference

MAX_BOUND_BYTES = 4 * 2**30  # 50,000 x 10,000 float32 bounds are 2 GB
ROW_BLOCK = 2048            # points whose distances one GEMM computes at once
# Centroid groups: a tile is one group's columns (about 250 of Table 1's 10,000). With 40 groups the
# GEMM computes 0.16, 0.17, 0.16, 0.05 ... of the distances in steps 2, 3, 4, 5 ..., where whole rows
# were 0.93, 0.44, 0.53, 0.39 ... of them (docs/performance.md).
GROUPS = 40


def exact_raise(dimension: int) -> float:
    """The factor that lifts a float64 distance over d coordinates above the exact one (module docstring)."""
    return 1.0 + (dimension + 3) * 2.0**-52


def exact_distances(rows: torch.Tensor, others: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """|rows[i] - others[columns[i]]| in float64 for every row, raised above the exact distance."""
    return reference.exact_sq_distances(rows, others, None, columns).sqrt() * exact_raise(rows.shape[1])


def fits(points: int, clusters: int) -> bool:
    """Whether the bounds for these sizes stay within ``MAX_BOUND_BYTES`` and a quarter of this
    machine's memory (an allocation past it would not fail at once but page out, or be killed, later)."""
    bound_bytes = points * clusters * 4
    return bound_bytes <= MAX_BOUND_BYTES and bound_bytes <= physical_memory() // 4


def exact_lower(dimension: int) -> float:
    """The factor that lowers a float64 distance over d coordinates below the exact one (module docstring)."""
    return 1.0 - (dimension + 4) * 2.0**-52


def centroid_groups(centroids: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Centroids grouped by their nearest of ``GROUPS`` pivots (centroids drawn with a fixed seed):
    the column order (centroid indices by group, ascending inside each) and each group's first column.

    Any grouping keeps the assignments exact; nearby centroids in one group make the groups a point
    must recompute few (docs/performance.md)."""
    count = min(GROUPS, len(centroids))
    pivots = torch.randperm(len(centroids), generator=torch.Generator().manual_seed(0))[:count]
    nearest = torch.cdist(centroids.double(), centroids.double()[pivots]).argmin(dim=1)
    order = torch.argsort(nearest * len(centroids) + torch.arange(len(centroids)))
    sizes = torch.bincount(nearest, minlength=count)
    sizes = sizes[sizes > 0]  # a pivot equal to another leaves its group empty
    return order, [0] + torch.cumsum(sizes, dim=0).tolist()


@dataclass
class AssignmentStats:
    """How much of the distance matrix one assignment step recomputed."""

    points: int       # all points
    recomputed: int   # points whose bounds did not prove their assignment
    pairs: int = 0    # (point, centroid) distances computed: the GEMM's share is pairs / (points x centroids)


class BoundedAssigner:
    """Lloyd's assignments for fixed points and moving centroids, skipping what the bounds prove.

    The bounds' columns hold the centroids grouped (``centroid_groups``, fixed at the first step): a
    point recomputes only the groups in which some bound fell to its own distance, so it pays GEMM
    columns for the few centroids near it, in whole tiles, instead of a whole row.
    """

    def __init__(self, points: torch.Tensor):
        self.points = points                                   # (n, d) float32
        self.centre = centring.column_mean(points).to(torch.float32)
        self.centred = points - self.centre                    # float32, as the torch backend centres
        self.centred_norms64 = torch.sum(self.centred * self.centred, dim=1, dtype=torch.float64)
        self.lower: torch.Tensor | None = None                 # (n, k) float32 lower bounds on |x - c|, by column
        self.largest_bound = 0.0                               # above every finite bound in ``lower``
        self.order: torch.Tensor | None = None                 # (k,) int64: the centroid of each column
        self.edges: list[int] = []                             # each group's first column, then k
        self.assignment: torch.Tensor | None = None            # (n,) int64: each point's centroid's column
        self.previous: torch.Tensor | None = None              # the last call's centroids, by column
        self.nearest_estimate: torch.Tensor | None = None      # (n,) float64: the chosen centroid's squared distance
        self.estimate_is_exact = False                         # True after a first step of exact int8 distances

    def assign(self, centroids: torch.Tensor) -> tuple[torch.Tensor, AssignmentStats]:
        """Each point's nearest centroid (float32 (k, d) centroids), as Lloyd's assignment step."""
        count = len(self.points)
        if self.lower is None:
            self.order, self.edges = centroid_groups(centroids)
            columns = centroids.index_select(0, self.order)
            # Zeros, not empty: filled in one sequential pass the pages are faulted in order (0.11 s for
            # Table 1's 2 GB on huge pages), where the first step's tiles, each touching 2,048 rows
            # 40 KB apart, faulted them in scattered (2.3 s on huge pages, 0.8 s on 4 KB pages).
            self.lower = torch.zeros((count, len(centroids)), dtype=torch.float32)
            self.assignment = torch.zeros(count, dtype=torch.int64)
            pairs = self.first_rows(columns)
            recomputed = count
        else:
            columns = centroids.index_select(0, self.order)
            # How far each centroid moved: a float64 sum of d squares, raised to cover its rounding.
            drift = exact_distances(columns, self.previous, torch.arange(len(centroids)))
            group_minima = subtract_drift(self.lower, drift, self.largest_bound, self.edges)
            own = self.own_distance(columns)
            need = group_minima <= own[:, None]
            pairs = self.recompute(need, columns, own)
            recomputed = int(need.any(dim=1).sum())
        self.settle_far_points(centroids, columns)
        self.previous = columns.clone()
        return self.order[self.assignment], AssignmentStats(count, recomputed, pairs)

    def settle_far_points(self, centroids: torch.Tensor, columns: torch.Tensor) -> None:
        """Exact assignments for the points float32 cannot vouch for, far from the points' mean against their
        distances (``ganbench.scoring.float64_rows``, as the Parzen pass rescores its rows).

        The float32 choice is within 2E + 8uN of the nearest, and E grows with the point's squared distance R
        to the mean: one point at 1e6 among 300 in [0, 1]^8 moved the mean by 3e3, and 252 points took a centroid
        at D = 3.3 with one at 0.45. Points whose chosen centroid lies within 2^-10 of that cost (the nearest
        estimate, then its exact distance) take the exact nearest centroid (float64 ranking); their other
        bounds stay valid, and a point that moves gets its old centroid's exact distance, lowered. Exact int8
        distances (the first step on 8-bit points) need none of this. On MNIST no point is far: the suspects
        are the ~1,070 points alone in their cluster (estimate 0), at exact distance 0.
        """
        if self.estimate_is_exact:
            return
        near = self.nearest_estimate.clamp(min=0.0)
        suspects = torch.nonzero(float64_rows.centre_cost(self.centred_norms64, near)
                                 > float64_rows.CENTRING_EXCESS_LIMIT * near).squeeze(1)
        if not len(suspects):
            return
        chosen = self.assignment.index_select(0, suspects)
        own = reference.exact_sq_distances(self.points, columns, suspects, chosen)
        far = float64_rows.far_from_centre(float64_rows.centre_cost(self.centred_norms64[suspects], own), own)
        rows, chosen, own = suspects[far], chosen[far], own[far]
        if not len(rows):
            return
        _, nearest = neighbours.nearest(self.points.index_select(0, rows), centroids, exact_ranking=True,
                                        backend="torch", device="cpu")
        new = torch.argsort(self.order)[torch.from_numpy(nearest[:, 0])]   # centroid index to column
        moved = new != chosen
        if moved.any():
            lowered = round_down_to_float32(own[moved].sqrt() * exact_lower(columns.shape[1]))
            self.lower[rows[moved], chosen[moved]] = lowered
            self.largest_bound = max(self.largest_bound, float(lowered.max()))
        self.lower[rows, new] = math.inf
        self.assignment[rows] = new

    def bounds_by_centroid(self) -> torch.Tensor:
        """The lower bounds with columns in the centroids' own order, (n, k)."""
        return self.lower.index_select(1, torch.argsort(self.order))

    def own_distance(self, columns: torch.Tensor) -> torch.Tensor:
        """u(x) = |x - c_a(x)| in float64, raised to cover its rounding, as float32 rounded up."""
        return round_up_to_float32(exact_distances(self.points, columns, self.assignment))

    def groups(self):
        return zip(self.edges[:-1], self.edges[1:])

    def first_rows(self, columns: torch.Tensor) -> int:
        """Every point's full row (exact int8 distances for 8-bit points and centroids), written in place."""
        count = len(self.points)
        distances = ByteDistances.applicable(self.points, columns) or Float32Distances(self, columns)
        best = Best(torch.full((count,), math.inf, dtype=torch.float64), torch.zeros(count, dtype=torch.int64))
        buffer = torch.empty(ROW_BLOCK * max(b - a for a, b in self.groups()), dtype=distances.tile_dtype)
        for start in range(0, count, ROW_BLOCK):
            chosen = torch.arange(start, min(start + ROW_BLOCK, count))
            prepared = distances.prepare(chosen)
            for first, last in self.groups():
                bounds = self.lower[start:start + len(chosen), first:last]  # written in place
                self.tile(distances, prepared, chosen, first, last, buffer, bounds, best)
        self.assignment, self.nearest_estimate = best.column, best.value
        self.estimate_is_exact = isinstance(distances, ByteDistances)
        self.lower.scatter_(1, best.column[:, None], math.inf)  # own centroids: tracked by u(x), exactly
        return count * len(columns)

    def recompute(self, need: torch.Tensor, columns: torch.Tensor, own_distance: torch.Tensor) -> int:
        """The groups ``need`` (n, groups) marks, for each point: fresh bounds, and the nearest among
        them and its own centroid (at ``own_distance``, u(x)). Returns the pairs computed."""
        rows = torch.nonzero(need.any(dim=1)).squeeze(1)
        self.nearest_estimate, self.estimate_is_exact = own_distance.double() ** 2, False
        if not len(rows):
            return 0
        distances = Float32Distances(self, columns)
        own = self.assignment.clone()
        # Each point starts from its own centroid at its exact distance (raised): a candidate replaces
        # it only when nearer in float32, so the choice stays within 2E + 8uN of the exact nearest.
        best = Best(own_distance.double() ** 2, own.clone())
        width = max(b - a for a, b in self.groups())
        buffer = torch.empty(ROW_BLOCK * width, dtype=distances.tile_dtype)
        bounds_buffer = torch.empty((ROW_BLOCK, width))
        pairs = 0
        for group, (first, last) in enumerate(self.groups()):
            members = torch.nonzero(need[:, group]).squeeze(1)
            pairs += len(members) * (last - first)
            for start in range(0, len(members), ROW_BLOCK):
                chosen = members[start:start + ROW_BLOCK]
                bounds = bounds_buffer[:len(chosen), :last - first]
                self.tile(distances, distances.prepare(chosen), chosen, first, last, buffer, bounds, best)
                self.lower[:, first:last].index_copy_(0, chosen, bounds)
        self.nearest_estimate = best.value
        new = best.column.index_select(0, rows)
        old = own.index_select(0, rows)
        moved = rows[new != old]
        if len(moved):
            # The old centroid's bound: its exact distance, lowered (a fresh tile may have written one too).
            former = own.index_select(0, moved)
            lowered = round_down_to_float32(reference.exact_sq_distances(self.points, columns, moved, former).sqrt()
                                            * exact_lower(columns.shape[1]))
            self.lower[moved, former] = lowered
            self.largest_bound = max(self.largest_bound, float(lowered.max()))
        self.lower[rows, new] = math.inf
        self.assignment.index_copy_(0, rows, new)
        return pairs

    def tile(self, distances, prepared, chosen: torch.Tensor, first: int, last: int, buffer: torch.Tensor,
             bounds: torch.Tensor, best: Best) -> None:
        """Distances of ``chosen`` to the columns first..last: lower bounds into ``bounds``, nearer ones into ``best``."""
        tile = buffer[:len(chosen) * (last - first)].view(len(chosen), last - first)
        value, column = distances.tile(prepared, slice(first, last), tile, bounds)
        self.largest_bound = max(self.largest_bound, float(bounds.max()))
        best.take(chosen, value, column + first, self.order)


@dataclass
class Best:
    """Each point's nearest centroid so far: its distance (float64) and column."""

    value: torch.Tensor
    column: torch.Tensor

    def take(self, rows: torch.Tensor, value: torch.Tensor, column: torch.Tensor, order: torch.Tensor) -> None:
        """Keep the nearer of the current and the new; ties go to the lower centroid index (a group's
        columns ascend by index, so a tile's first minimum is its lowest-index one)."""
        current, current_column = self.value.index_select(0, rows), self.column.index_select(0, rows)
        closer = (value < current) | ((value == current) & (order[column] < order[current_column]))
        self.value.index_copy_(0, rows, torch.where(closer, value, current))
        self.column.index_copy_(0, rows, torch.where(closer, column, current_column))


class Float32Distances:
    """Distance rows from the torch backend's float32 GEMM form, bank-centred by the points' mean."""

    tile_dtype = torch.float32

    def __init__(self, assigner: BoundedAssigner, centroids: torch.Tensor):
        self.assigner = assigner
        self.centroids = centroids - assigner.centre
        self.centroid_norms = parzen.squared_norms(self.centroids)
        self.largest_centroid_norm = float(torch.sum(self.centroids * self.centroids, dim=1, dtype=torch.float64).max())

    def prepare(self, chosen: torch.Tensor):
        """The rows' centred points and ||x - m||^2 - E - 12uN, rounded down to float32 (module docstring);
        N is read from rounded values like E, hence the same factor 1 + 2^-10."""
        query_norms = self.assigner.centred_norms64.index_select(0, chosen)
        margins = neighbours.distance_margins(query_norms, self.largest_centroid_norm, self.centroids.shape[1])
        slack = 12 * 2.0**-24 * (1 + 2.0**-10) * (query_norms + self.largest_centroid_norm)
        query_shift = round_down_to_float32(query_norms - margins - slack)
        return self.assigner.centred.index_select(0, chosen), query_shift, query_norms - query_shift.double()

    def tile(self, prepared, block: slice, tile: torch.Tensor, bounds: torch.Tensor):
        """D32 - E for one tile (in one pass after the GEMM: E is one number per row, so the row
        minimum is at D32's); writes its square roots, lower bounds, and returns the row minima with
        E added back in float64 (D32 to within float32's rounding of the sum) and their columns."""
        queries, query_shift, restore = prepared
        lowered = torch.addmm(self.centroid_norms[block][None, :], queries, self.centroids[block].T, alpha=-2.0, out=tile)
        lowered.add_(query_shift[:, None])
        block_min, block_arg = lowered.min(dim=1)   # first index among ties
        torch.sqrt(lowered.clamp_(min=0.0), out=bounds)
        return block_min.double() + restore, block_arg


class ByteDistances:
    """Exact distance rows when points and centroids are 8-bit (the first step, from chosen MNIST images).

    One int8 product per tile gives E = 255^2 D_bytes exactly (ganbench.scoring.byte_distances), four
    times faster than the float32 GEMM on a CPU with int8 dot products. The argmin is the exact one of
    the bytes; the values differ from a / 255 by float32's rounding, so the true distance is within
    510u of D_bytes (byte_distances' docstring), and sqrt(E) / 255 within 255u of the true |x - c|. The
    bound written is sqrt(float32(E)) (1 - 2^-15) / 255 with the factor rounded down: three more
    roundings of at most 2u each (torch's square root is faithfully rounded), and 2^-15 = 512u covers them all.
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


def subtract_drift(lower: torch.Tensor, drift: torch.Tensor, largest_bound: float, edges: list[int]) -> torch.Tensor:
    """lower[:, c] -= drift[c], rounded so that no bound rises above the exact lower bound; returns each
    group's smallest bound per point, (n, groups) float32 (``edges``: each group's first column, then k).

    float32's subtraction rounds by at most 2^-24 of its result. A positive result is below
    ``largest_bound`` (every finite bound starts below it and only falls), so subtracting 2^-23 of
    it more, and the drift rounded up, keeps every positive result below the exact difference; a
    result <= 0 already makes its point recompute its row. Infinite bounds (own centroids) stay infinite.
    """
    moved = round_up_to_float32(drift + largest_bound * 2.0**-23)
    if fused_rows.available():  # both in one pass over the bounds (ganbench.scoring.fused_rows)
        return fused_rows.drift_and_group_minima(lower, moved, torch.tensor(edges, dtype=torch.int64))
    lower.sub_(moved[None, :])
    # Each group's smallest bound per point: one contiguous pass (NumPy's reduceat, 0.09 s for Table 1's
    # 2 GB of bounds, where 40 strided column minima took 0.25 s).
    return torch.from_numpy(np.minimum.reduceat(lower.numpy(), edges[:-1], axis=1))


def round_up_to_float32(values: torch.Tensor) -> torch.Tensor:
    """float64 values as float32 numbers never below them."""
    single = values.float()
    return torch.where(single.double() < values, torch.nextafter(single, torch.tensor(math.inf)), single)


def round_down_to_float32(values: torch.Tensor) -> torch.Tensor:
    """float64 values as float32 numbers never above them."""
    return -round_up_to_float32(-values)
