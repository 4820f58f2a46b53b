"""Exact nearest neighbours by squared Euclidean distance, for the memorisation checks and k-means."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from ganbench.defaults import DEFAULT_PRECISION
from ganbench.devices import resolve_device
from ganbench.errors import GanbenchError
from ganbench.scoring import bounds, byte_distances, fused_rows, parzen
from ganbench.scoring.centring import centre_by_bank_mean
from ganbench.scoring.inputs import as_matrix, finite_magnitude, is_whole_number
from ganbench.scoring.reference import exact_sq_distances

# Top-k tiles (query rows, reference rows). On the CPU a 2048 x 2048 float32 tile (16 MB) keeps the
# GEMM near its rate: 10,000 generated samples against MNIST's 50,000 training images took 5.6 s
# against 6.2 s with 1024 x 8192 (32 MB) tiles on a 2-core AMD EPYC (docs/performance.md).
BLOCKS = {"cpu": (2048, 2048), "cuda": (1024, 8192)}


def nearest(queries, reference, k: int = 1, *, backend: str = "auto", device=None, exact_ranking: bool = True,
            query_block: int | None = None, reference_block: int | None = None,
            names: tuple[str, str] = ("x (the points searched)", "the bank"),
            precision: str = DEFAULT_PRECISION) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by squared Euclidean distance: (distances, indices), each (n, k).

    For each row of ``queries``, its k nearest rows of ``reference`` (the bank); ``names``
    call the two in errors ("samples", "training data").

    By default (``exact_ranking=True``, and always for k > 1) the neighbours and their order are those of
    float64 arithmetic (ties go to the lowest reference index) and the distances are float64 sums of
    squared differences, so identical vectors are at distance exactly 0. A float32 GEMM pass only picks
    candidates, with a margin that cannot leave out a true neighbour (``distance_margins``).

    ``exact_ranking=False`` with k = 1 reuses the Parzen pass instead (the fused kernel on CUDA gives it
    with no extra distance loop; Lloyd's k-means takes it): the distance is the float64 distance of the
    neighbour chosen in float32, which may be another point within the float32 error
    (tests/tolerances.py) of the nearest, and exact ties may go to any of the tied points.
    ``precision`` is the triton backend's for that pass (``int8``: exact distances for 8-bit queries).
    """
    if not (is_whole_number(k) and k >= 1):
        raise GanbenchError(f"k must be a whole number >= 1, got {k!r}")
    parzen.check_options(backend, precision)
    if not isinstance(exact_ranking, (bool, np.bool_)):  # "no" is truthy: it would rank exactly, unasked
        raise GanbenchError(f"exact_ranking must be True or False, got {exact_ranking!r}")
    if not (isinstance(names, (tuple, list)) and len(names) == 2 and all(isinstance(name, str) for name in names)):
        raise GanbenchError(f"names must be two strings (the points', the bank's), got {names!r}")
    points_name, bank_name = names
    reference_tensor = as_matrix(bank_name, reference, check_finite=False)
    query_tensor = as_matrix(points_name, queries, dimension=reference_tensor.shape[1], dimension_of=bank_name,
                             check_finite=False)
    # NaN/inf (named as the caller names the data) and the range in one pass; the scaling below reads the range.
    magnitude = finite_magnitude({bank_name: reference_tensor, points_name: query_tensor})
    if k > reference_tensor.shape[0]:
        raise GanbenchError(f"k = {k} exceeds the number of points in {bank_name} ({reference_tensor.shape[0]})")
    for name, block in (("query_block", query_block), ("reference_block", reference_block)):
        if block is not None and not (is_whole_number(block) and block >= 1):
            raise GanbenchError(f"{name} must be a positive integer, got {block!r}")
    if k == 1 and not exact_ranking:
        result = parzen.parzen_pass(query_tensor, reference_tensor, [], backend=backend, device=device,
                                    precision=precision)
        return result.min_sq_distance[:, None], result.nearest_index[:, None]
    target = resolve_device(device)
    default_query_block, default_reference_block = BLOCKS["cpu" if target.type == "cpu" else "cuda"]
    # Data and distances scaled by one power of two, as the Parzen pass does, so that the float32 candidates'
    # squared distances neither overflow (entries past ~1e19) nor lose their resolution (past ~1e-30). The
    # scaling is of float64 copies, where it is exact (float32 would push entries 1e-30 beside 1e30 into
    # subnormals, and the float64 ranking would rank other data), and is undone on the float64 distances.
    parzen.check_float64_range(magnitude, reference_tensor.shape[1], np.zeros(0))
    exponent = parzen.float32_exponent(magnitude, reference_tensor.shape[1], np.zeros(0))
    if exponent:
        query_tensor, reference_tensor = (parzen.scale_by_power_of_two(tensor.to(torch.float64), exponent)
                                          for tensor in (query_tensor, reference_tensor))
    distances, indices = _top_k(query_tensor, reference_tensor, k, target, query_block or default_query_block,
                                reference_block or default_reference_block)
    return np.ldexp(distances, 2 * exponent), indices


def distance_margins(query_norms: torch.Tensor, reference_norm_max: float, dimension: int) -> torch.Tensor:
    """Per query, a bound E on |D_float32 - D| for every reference point (float64, on the queries' device).

    The float32 GEMM form here is the Parzen pass's (centred by the bank mean m, norms summed in
    float64 and rounded once, the product accumulated with its addend ||s - m||^2, clamped at 0),
    so its error is the one ``ganbench.scoring.bounds`` derives for every float32 path, in any
    summation order: K u (A + B) with K = 2 gamma_(d+1) / u + 9, A = ||x - m||^2 and
    B = max ||s - m||^2. A and B are read from the rounded centred values
    (each off by at most (2u + u^2) of itself), hence the factor 1 + 2^-10.
    """
    coefficient = bounds.distance_coefficient("float32", dimension) * bounds.UNIT_ROUNDOFF["float32"]
    return coefficient * (1 + 2.0 ** -10) * (query_norms + reference_norm_max)


def _top_k(queries, reference, k, device: torch.device, query_block, reference_block):
    """Blocked exact top-k: float32 GEMM distances choose candidates, float64 ranks them.

    Reference blocks are visited in index order, keeping per query the running top k in
    float64 (value, index) order, whose k-th distance is T. A point j of the current block
    belongs to the final top k only if
    - D_j < T (it comes after every kept point, so a tie with T loses to the lower index),
      hence D32_j < T + E; and
    - it is among the block's own k nearest, so D_j <= (the block's k-th true distance)
      <= t + E, where t is the block's k-th float32 distance (k of its points have D32 <= t),
      hence D32_j <= t + 2E,
    with E the bound of ``distance_margins``. Every point passing both tests gets its exact
    float64 distance; float32 rounding can reorder near-ties, never drop a true neighbour.
    """
    target = device
    if target.type == "cpu":
        queries, reference = queries.cpu(), reference.cpu()  # GPU tensors scored on the CPU, as asked
        sides = byte_distances.exact_operands(queries, reference)
        if sides is not None:
            return _top_k_bytes(queries, reference, *sides, k, query_block, reference_block)
        rounded = byte_distances.rounded_operands(queries, reference)
        if rounded is not None:
            return _top_k_rounded(queries, reference, *rounded, k, query_block, reference_block)
    fused = target.type == "cpu" and fused_rows.available()  # ganbench.scoring.fused_rows.near_candidates
    query32, reference32 = centre_by_bank_mean(queries, reference, torch.float32, target)
    reference_norms = parzen.squared_norms(reference32)
    reference_norm_max = float(torch.sum(reference32 * reference32, dim=1, dtype=torch.float64).max())
    distances_out, indices_out = [], []
    with torch.no_grad(), _float32_matmul_in_full_precision():
        for start in range(0, len(query32), query_block):
            block = query32[start:start + query_block]
            margins = distance_margins(torch.sum(block * block, dim=1, dtype=torch.float64),
                                         reference_norm_max, block.shape[1])
            best = _Running(len(block), k, target)
            block_norms = parzen.squared_norms(block)
            for ref_start in range(0, len(reference32), reference_block):
                chunk = reference32[ref_start:ref_start + reference_block]
                chunk_norms = reference_norms[ref_start:ref_start + len(chunk)]
                if fused:  # the distances and the candidates in one compiled read of each row
                    d32 = parzen.sq_distance_tile_less_query_norms(block, chunk, chunk_norms)
                    found = fused_rows.near_candidates(d32, block_norms, best.kth, margins, k)  # d32: D now
                    rows, columns = found if found is not None else _candidates(d32, best.kth, margins, k)
                else:
                    d32 = parzen.sq_distance_tile(block, block_norms, chunk, chunk_norms)
                    rows, columns = _candidates(d32, best.kth, margins, k)
                if len(rows):
                    exact = exact_sq_distances(queries, reference, rows.cpu() + start, columns.cpu() + ref_start)
                    best.add(rows, columns + ref_start, exact.to(target))
            distances_out.append(best.distances.cpu().numpy())
            indices_out.append(best.indices.cpu().numpy())
    return np.concatenate(distances_out), np.concatenate(indices_out)


def _top_k_bytes(queries, reference, query_bytes, reference_bytes, k, query_block, reference_block):
    """``_top_k`` for 8-bit queries and reference on the CPU: exact int8 distances choose the candidates.

    E = 255^2 D_bytes is exact (``byte_distances``), and the float64 distance D of the values is
    within r D_bytes of D_bytes (r = ``byte_distances.relative_error``). So D_j < T needs
    D_bytes_j < T / (1 - r), and D_j <= (the block's k-th true distance) <= t (1 + r), with t the
    block's k-th byte distance, needs D_bytes_j <= t (1 + r) / (1 - r): integer comparisons of E
    against the limits times 255^2, rounded up. The float64 ranking is ``_top_k``'s.
    """
    # The float64 distances ranked are off by at most (d + 2) 2^-53 of themselves: counted too.
    relative = byte_distances.relative_error(queries.dtype) + (queries.shape[1] + 2) * 2.0**-52
    fused = fused_rows.available()

    def candidates(exact_bytes, kth, first_row):
        # The rule in one compiled read of each row where the library runs (ganbench.scoring.fused_rows).
        found = fused_rows.near_byte_candidates(exact_bytes, kth, relative, k) if fused else None
        return found if found is not None else _byte_candidates(exact_bytes, kth, relative, k)

    return _top_k_over_byte_tiles(queries, reference, query_bytes, reference_bytes, k, query_block, reference_block,
                                  candidates)


def _top_k_rounded(queries, reference, query_bytes, reference_bytes, slack, k, query_block, reference_block):
    """``_top_k`` on the CPU for queries in [0, 1] against 8-bit reference data: the queries' values rounded
    to bytes give exact int8 distances, and the rounding's size bounds how far they can be from the true ones.

    With q = round(255 s) for a query s, and the reference's values a / 255 + e (|e| <= h per entry),
    the triangle inequality bounds the true distance by the bytes' one in root space:
        | ||x - s|| - ||a / 255 - q / 255|| | <= ||s - q / 255|| + ||e|| <= eps_i,
    eps_i (``rounded_operands``) from each query's own rounding, computed, plus sqrt(d) h. So with rho_j
    = sqrt(E_j) / 255 the bytes' root distance, D_j < T needs rho_j < sqrt(T) + eps_i, and D_j <= (the
    block's k-th true distance) <= (rho_t + eps_i)^2 needs rho_j <= rho_t + 2 eps_i, rho_t the block's
    k-th rho; the float64 ranking's own rounding, (d + 2) 2^-52 of a distance, widens both (a factor
    1 + 2 delta on the roots). Compared as integers: E_j <= (255 limit)^2, rounded up. A query rounded
    by half a byte in each of MNIST's 784 entries has eps ~ 0.03, so near its nearest training image
    (root distance ~ 4.3) the window is ~0.5 in D: a few candidates, where the float32 GEMM it replaces
    costs four times the int8 product. The float64 ranking, and so every result, is ``_top_k``'s.
    """
    delta = (queries.shape[1] + 2) * 2.0**-52
    widen = 1 + 2 * delta
    fused = fused_rows.available()

    def candidates(exact_bytes, kth, first_row):
        eps = slack[first_row:first_row + len(exact_bytes)]
        # The rule in one compiled read of each row where the library runs (ganbench.scoring.fused_rows).
        found = fused_rows.near_rounded_candidates(exact_bytes, kth, eps, widen, k) if fused else None
        return found if found is not None else _rounded_candidates(exact_bytes, kth, eps, widen, k)

    return _top_k_over_byte_tiles(queries, reference, query_bytes, reference_bytes, k, query_block, reference_block,
                                  candidates)


def _top_k_over_byte_tiles(queries, reference, query_bytes, reference_bytes, k, query_block, reference_block,
                           candidates):
    """The blocked loop of the byte paths: exact int32 tiles of E, ``candidates(tile, kth, first row)``'s
    (row, column) pairs ranked in float64 against the values as given."""
    distances_out, indices_out = [], []
    tile_buffer = torch.empty(min(query_block, len(queries)) * min(reference_block, len(reference)), dtype=torch.int32)
    with torch.no_grad():
        for start in range(0, len(queries), query_block):
            block = query_bytes.rows(slice(start, start + query_block))
            best = _Running(len(block.norms), k, torch.device("cpu"))
            for ref_start in range(0, len(reference), reference_block):
                chunk = reference_bytes.rows(slice(ref_start, ref_start + reference_block))
                tile = tile_buffer[:len(block.norms) * len(chunk.norms)].view(len(block.norms), len(chunk.norms))
                exact_bytes = byte_distances.sq_distance_tile(block, chunk, out=tile)  # E, int32
                rows, columns = candidates(exact_bytes, best.kth, start)
                if len(rows):
                    exact = exact_sq_distances(queries, reference, rows + start, columns + ref_start)
                    best.add(rows, columns + ref_start, exact)
            distances_out.append(best.distances.numpy())
            indices_out.append(best.indices.numpy())
    return np.concatenate(distances_out), np.concatenate(indices_out)


def _byte_candidates(exact_bytes: torch.Tensor, kth: torch.Tensor, relative: float, k: int):
    """(row, column) pairs of an int32 tile of E that may enter the running top k (see ``_top_k_bytes``)."""
    limit = kth / (1 - relative)
    if exact_bytes.shape[1] >= k:
        block_kth = torch.topk(exact_bytes, k, dim=1, largest=False).values[:, -1].double()
        limit = torch.minimum(limit, block_kth / byte_distances.DISTANCE_SCALE * (1 + relative) / (1 - relative))
    return _within_distance(exact_bytes, kth, limit)


def _rounded_candidates(exact_bytes: torch.Tensor, kth: torch.Tensor, eps: torch.Tensor, widen: float, k: int):
    """(row, column) pairs of an int32 tile of E that may enter the running top k (see ``_top_k_rounded``)."""
    limit = torch.sqrt(kth) * widen + eps
    if exact_bytes.shape[1] >= k:
        block_kth = torch.topk(exact_bytes, k, dim=1, largest=False).values[:, -1].double()
        limit = torch.minimum(limit, (torch.sqrt(block_kth) / byte_distances.LEVELS + eps) * widen + eps)
    return _within_distance(exact_bytes, kth, limit.square())


def _within_distance(exact_bytes: torch.Tensor, kth: torch.Tensor, limit: torch.Tensor):
    """(row, column) pairs of an int32 tile of E whose D_bytes is at most the row's ``limit`` (float64, in
    units of D), none in a row whose running k-th distance is 0 (k exact copies kept: nothing can enter)."""
    # In units of E, raised by 2^-40 over the few float64 roundings of the limit, then its integer part.
    limit_e = torch.floor(limit * (byte_distances.DISTANCE_SCALE * (1 + 2.0**-40)))
    limit_e = limit_e.clamp(max=2**31 - 1).to(torch.int32)  # +inf (nothing kept yet): every E
    mask = exact_bytes <= limit_e[:, None]
    mask &= (kth > 0)[:, None]
    return torch.nonzero(mask, as_tuple=True)


def _candidates(d32: torch.Tensor, kth: torch.Tensor, margins: torch.Tensor, k: int):
    """(row, column) pairs of a tile that may enter the running top k (see ``_top_k``)."""
    if d32.shape[1] >= k:
        block_kth = torch.topk(d32, k, dim=1, largest=False).values[:, -1].double()
        limit = torch.minimum(kth + margins, block_kth + 2 * margins)
    else:  # a block with fewer than k points: every one may enter
        limit = kth + margins
    # Rounded up to float32 so that the comparison in float32 keeps every point below the float64 limit.
    limit32 = torch.nextafter(limit.float(), torch.tensor(float("inf"), device=d32.device))
    mask = d32 <= limit32[:, None]
    mask &= (kth > 0)[:, None]  # the running top k already holds k exact copies: nothing can enter
    return torch.nonzero(mask, as_tuple=True)


class _Running:
    """Per query, the k smallest (float64 distance, index) pairs seen so far, in that order."""

    def __init__(self, queries: int, k: int, device: torch.device):
        self.k = k
        self.distances = torch.full((queries, k), float("inf"), dtype=torch.float64, device=device)
        self.indices = torch.full((queries, k), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)

    @property
    def kth(self) -> torch.Tensor:
        return self.distances[:, -1]

    def add(self, rows: torch.Tensor, indices: torch.Tensor, distances: torch.Tensor) -> None:
        """Merge candidate pairs (``rows`` ascending, as ``torch.nonzero`` gives them)."""
        counts = torch.bincount(rows, minlength=len(self.distances))
        width = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        slots = torch.arange(len(rows), device=rows.device) - starts[rows]
        new_distances = torch.full((len(self.distances), width), float("inf"), dtype=torch.float64,
                                   device=rows.device)
        new_indices = torch.full((len(self.distances), width), torch.iinfo(torch.int64).max, dtype=torch.int64,
                                 device=rows.device)
        new_distances[rows, slots], new_indices[rows, slots] = distances, indices
        all_distances = torch.cat([self.distances, new_distances], 1)
        all_indices = torch.cat([self.indices, new_indices], 1)
        # Lexicographic (distance, index) order: sort by index, then stably by distance.
        by_index = torch.sort(all_indices, dim=1, stable=True).indices
        all_distances, all_indices = all_distances.gather(1, by_index), all_indices.gather(1, by_index)
        order = torch.sort(all_distances, dim=1, stable=True).indices[:, :self.k]
        self.distances, self.indices = all_distances.gather(1, order), all_indices.gather(1, order)


@contextlib.contextmanager
def _float32_matmul_in_full_precision():
    """Keep float32 GEMMs in float32 (no TF32) while candidates are chosen: the margin of
    ``distance_margins`` assumes float32 products."""
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)
