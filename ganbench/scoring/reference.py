"""The float64 reference pass: the ground truth every fast path is tested against, and the rescorer of
the rows a float32 pass cannot vouch for (``ganbench.scoring.float64_rows``).

Written apart from the fast paths, in float64 throughout, with torch on the queries' device: the
``reference`` backend runs it on the CPU; a float32 pass on a GPU rescores its flagged rows with it on
that GPU, bank and all, where copying the bank to the host and summing there ran at the host's float64
speed (a 2-D mixture of 25 Gaussians, 5,000 points against 20,000 samples at three sigmas near the
neighbour distance: 10 s in NumPy on a 2-core AMD EPYC, every row flagged).

Squared distances use the expanded form on bank-centred float64 data: its rounding error, about
1e-16 times the squared norms, is far below any float32 path's on data of one scale. Where it is
not -- data whose spread dwarfs the distances that matter (an outlier 1e8 away from points 1e-3
apart), or sigma tiny against the norms -- each such query's distances that can matter are
recomputed from direct differences (``_exact_where_loose``).
"""
from __future__ import annotations

import numpy as np
import torch

from ganbench.scoring import bounds, partials

# A pair whose expanded-form error could move a log-likelihood by more than this is recomputed from
# direct differences: the reference must stay far below every fast path's bound (~1e-4 nats on MNIST).
REFERENCE_NATS = 1e-8
# A nearest-only pass refines a row whose distances may be off by more than this share of its nearest one.
NEAREST_RELATIVE = 1e-9
DEDUPLICATE_ABOVE = 16  # candidates a loose row past which equal samples are summed once
# Queries and bank rows of one float64 distance tile. On the CPU it and its temporaries stay in cache
# (512 x 4,096 is 16 MB); on a GPU larger tiles mean fewer launches, and 2,048 x 8,192 (128 MB, about
# four times that with the per-sigma temporaries) fits beside any scoring pass.
TILES = {"cpu": (512, 4096), "cuda": (2048, 8192)}
# On a GPU a pass over few queries (the rows a float32 pass rescores: often a handful) would spend its time
# launching the same few kernels for each 8,192-row bank block, so their bank blocks grow to keep the tile
# near 2,048 x 8,192 elements, up to this many rows (65,536 x 784 float64 is 411 MB). The CPU keeps its
# blocks, which its caches size.
LARGEST_CUDA_BANK_BLOCK = 65_536
KEPT_BANK_BYTES = 2**28  # a float64 bank up to 256 MB (42,799 rows of 784) is centred once for all query blocks

# Rows per piece of the float64 work on chosen pairs: on the CPU its temporaries then stay in cache
# (on a 2-core AMD EPYC, the exact-nearest refinement of 10,000 x 784: 85 ms in one piece, 9.7 ms in
# pieces of 512). On a GPU the pieces only bound memory (8,192 x 784 float64 is 51 MB), so a data set
# full of near-ties costs time, never unbounded memory.
EXACT_PAIRS_AT_ONCE = {"cpu": 512, "cuda": 8192}


def exact_sq_distances(queries: torch.Tensor, reference: torch.Tensor, rows: torch.Tensor | None,
                       columns: torch.Tensor) -> torch.Tensor:
    """sum_k (x_k - s_k)^2 in float64 for each (query row, reference row) pair, on the queries' device,
    in bounded pieces: the exact values the fast paths are refined (``parzen.refine_nearest``) or ranked
    (exact nearest neighbours, k-means' bounds) with. ``rows`` None pairs every query row, in order,
    with ``columns``."""
    piece = EXACT_PAIRS_AT_ONCE.get(queries.device.type, EXACT_PAIRS_AT_ONCE["cuda"])
    pieces = []
    for first in range(0, len(columns), piece):
        picked = (queries[first:first + piece] if rows is None
                  else queries.index_select(0, rows[first:first + piece].to(queries.device)))
        others = reference.index_select(0, columns[first:first + piece].to(reference.device))
        difference = picked.to(torch.float64) - others.to(device=queries.device, dtype=torch.float64)
        pieces.append((difference * difference).sum(1))
    if len(pieces) == 1:  # no copy for up to EXACT_PAIRS_AT_ONCE pairs
        return pieces[0]
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.float64, device=queries.device)


def reference_partial(query: torch.Tensor, bank: torch.Tensor, grid, query_block: int | None = None,
                      bank_block: int | None = None) -> partials.BankPartial:
    """The whole bank's partial (float64 tensors on the queries' device): each query's nearest squared
    distance and index (the lowest among ties) and, per sigma of ``grid``, its shifted sum."""
    device = query.device
    # The inputs stay in their own dtype for the direct differences (converted a piece at a time).
    original_bank = bank.to(device)
    query_block = query_block or TILES.get(device.type, TILES["cuda"])[0]
    bank_block = bank_block or default_bank_block(device.type, min(len(query), query_block))
    mean = _float64_mean(original_bank, bank_block)
    query64 = query.to(torch.float64, copy=True).sub_(mean)
    # Each bank block is converted to float64 and centred as it is reached, into buffers reused from block to
    # block: the pass holds no float64 copy of the bank (rescoring 2 rows against 10^6 MNIST-like samples took
    # 8.8 s on a 2-core AMD EPYC with the copy and torch's float64 mean, 2.0 s of it converting the whole bank
    # first; 513 queries against 10^5 samples held 1.2 GB more than 512). Only a small bank read by several
    # query blocks is kept centred once for all of them (its conversion would otherwise repeat per block).
    if len(query64) > query_block and len(original_bank) * original_bank.shape[1] * 8 <= KEPT_BANK_BYTES:
        _, whole, whole_norms = next(_centred_blocks(original_bank, mean, len(original_bank)))

        def bank_blocks():
            for start in range(0, len(original_bank), bank_block):
                yield start, whole[start:start + bank_block], whole_norms[start:start + bank_block]
    else:
        def bank_blocks():
            return _centred_blocks(original_bank, mean, bank_block)
    # The grid's 1 / (2 sigma^2), ascending: widest sigma first.
    scales = torch.as_tensor(np.sort(partials.half_inverse_variances(grid, np.zeros(1))[:, 0]), device=device)
    # |fl(D) - D| <= K u (||x - c||^2 + max ||s - c||^2), the float64 bound of ganbench.scoring.bounds.
    units = bounds.distance_coefficient("float64", original_bank.shape[1]) * bounds.UNIT_ROUNDOFF["float64"]
    pieces = []
    for query_start in range(0, len(query64), query_block):
        queries = query64[query_start:query_start + query_block]
        query_norms = (queries * queries).sum(1)
        running = None
        for bank_start, samples, sample_norms in bank_blocks():
            # (||x||^2 + ||s||^2) - 2 x.s with the product formed apart, the form whose float64 bound is K u N with
            # K = d + 9 (``bounds.distance_coefficient``): a GEMM that accumulates its addend too rounds more.
            distances = (queries @ samples.T).mul_(-2.0).add_(query_norms[:, None] + sample_norms[None, :])
            distances.clamp_(min=0.0)
            original_queries = query[query_start:query_start + query_block]
            original_samples = original_bank[bank_start:bank_start + bank_block]
            # A row's expanded-form error is at most e_i = units (||x_i - c||^2 + the block's largest ||s - c||^2).
            row_errors = units * (query_norms + sample_norms.max())
            _exact_where_loose(distances, query_norms, sample_norms, units, row_errors, scales, original_queries,
                               original_samples)
            _exact_near_minimum(distances, row_errors, original_queries, original_samples)
            block = partials.from_distances(distances, grid, index_offset=bank_start)
            running = block if running is None else partials.merge(running, block, grid)
        pieces.append(running)
    found = partials.BankPartial(*(torch.cat([getattr(piece, field) for piece in pieces], dim=-1)
                                   for field in ("min_sq_distance", "nearest_index", "shifted_sums")))
    return _with_exact_nearest(found, query, original_bank, grid)


def default_bank_block(device_type: str, queries: int) -> int:
    """Bank rows per float64 tile for a query block of ``queries`` rows: the device's ``TILES``, and on a GPU as
    many more as keep the tile near its size, up to LARGEST_CUDA_BANK_BLOCK."""
    tile_queries, tile_bank = TILES.get(device_type, TILES["cuda"])
    if device_type == "cpu" or not queries:
        return tile_bank
    return min(max(tile_bank, tile_queries * tile_bank // queries), LARGEST_CUDA_BANK_BLOCK)


def _float64_mean(bank: torch.Tensor, rows_at_once: int) -> torch.Tensor:
    """The bank's column means, summed in float64 a block of rows at a time: torch's mean(dtype=float64)
    converts the whole bank first (2.0 s against 0.2 s for 10^6 x 784 float32 on a 2-core AMD EPYC)."""
    total = torch.zeros(bank.shape[1], dtype=torch.float64, device=bank.device)
    buffer = torch.empty(min(rows_at_once, len(bank)), bank.shape[1], dtype=torch.float64, device=bank.device)
    for start in range(0, len(bank), rows_at_once):
        piece = bank[start:start + rows_at_once]
        total += buffer[:len(piece)].copy_(piece).sum(0)
    return total / len(bank)


def _centred_blocks(bank: torch.Tensor, mean: torch.Tensor, rows_at_once: int):
    """(first row, centred rows, their squared norms) for each block of ``rows_at_once`` bank rows: float64 minus
    ``mean`` (copies: the caller's bank is never written), written into two buffers reused from block to block
    (fresh blocks cost the host a page fault per 4 KB each time): each block's tensors hold until the next is
    asked for."""
    rows = min(rows_at_once, len(bank))
    centred = torch.empty(rows, bank.shape[1], dtype=torch.float64, device=bank.device)
    squares = torch.empty_like(centred)
    for start in range(0, len(bank), rows_at_once):
        piece = bank[start:start + rows_at_once]
        block = centred[:len(piece)].copy_(piece).sub_(mean)
        yield start, block, torch.mul(block, block, out=squares[:len(piece)]).sum(1)


def _with_exact_nearest(found: partials.BankPartial, query: torch.Tensor, bank: torch.Tensor, grid) -> partials.BankPartial:
    """Each row's nearest distance as the direct float64 sum of squared differences (the value every other path
    reports: 0.625 where the expanded form gave 0.6249999999999998), and its term in the shifted sums moved with
    it: S' = 1 + (S - 1) exp((D' - D) / 2 sigma^2), so the nearest term stays exactly 1."""
    exact = exact_sq_distances(query, bank, None, found.nearest_index)
    sums = found.shifted_sums
    if len(grid):
        scales = partials.half_inverse_variances(grid, sums)
        sums = 1.0 + (sums - 1.0) * torch.exp((exact - found.min_sq_distance)[None, :] * scales)
    return partials.BankPartial(exact, found.nearest_index, sums)


def _exact_where_loose(distances: torch.Tensor, query_norms: torch.Tensor, bank_norms: torch.Tensor, units: float,
                       row_errors: torch.Tensor, scales: torch.Tensor, queries: torch.Tensor,
                       samples: torch.Tensor) -> None:
    """Recompute in place, from direct differences of the inputs, the distances whose expanded-form
    error could move a log-sum-exp by more than REFERENCE_NATS.

    A pair's error is at most e_ij = ``units`` (||x_i - c||^2 + ||s_j - c||^2) (``bounds``: K u N with
    the pair's own norms), a row's at most e_i (``row_errors``) with the block's largest bank norm. ``scales`` are the
    grid's 1 / (2 sigma^2), ascending. A row is loose at the sigmas where e_i x scale exceeds
    REFERENCE_NATS; at the widest of those, scale s, a term whose distance exceeds the row's by more
    than 40 / s (``partials.NEGLIGIBLE_EXPONENT``) is below e^-40 of its largest, before and after. So the
    candidates are the pairs with D~_ij - e_ij <= min_k (D~_ik + e_ik) + 40 / s, and of those only the
    pairs whose own error e_ij could move a term by more than REFERENCE_NATS at the smallest sigma are
    recomputed (one far sample no longer makes every pair of its block look loose). A nearest-only
    pass (no sigma) recomputes the candidates (reach 0) of the rows whose error exceeds NEAREST_RELATIVE
    of their nearest distance: their argmin is then exact.
    """
    if len(scales):
        widest_loose = torch.searchsorted(scales, REFERENCE_NATS / row_errors.clamp(min=1e-300), right=True)
        rows = torch.nonzero(widest_loose < len(scales)).squeeze(1)
        reach = partials.NEGLIGIBLE_EXPONENT / scales[widest_loose[rows]]
    else:
        rows = torch.nonzero(row_errors > NEAREST_RELATIVE * distances.min(dim=1).values).squeeze(1)
        reach = distances.new_zeros(len(rows))
    if not len(rows):
        return
    block = distances[rows]
    pair_errors = units * (query_norms[rows, None] + bank_norms[None, :])
    upper = (block + pair_errors).min(dim=1).values  # at least the exact minimum of the row's block
    candidates = block - pair_errors <= (upper + reach)[:, None]
    if len(scales):
        candidates &= pair_errors * scales[-1] > REFERENCE_NATS
    picked_rows, picked_columns = torch.nonzero(candidates, as_tuple=True)
    _recompute(distances, rows[picked_rows], picked_columns, len(rows), queries, samples)


def _exact_near_minimum(distances: torch.Tensor, row_errors: torch.Tensor, queries: torch.Tensor,
                        samples: torch.Tensor) -> None:
    """Recompute in place, from direct differences, every distance of a row that could be its block's minimum:
    those within twice the row's error bound e_i (``_exact_where_loose``) of the smallest. The block's minimum
    and its index are then exact, the lowest index among exact ties, and so are the minima merged across
    blocks: identical samples' expanded-form distances round differently by position, which made the reference
    name a later copy as the nearest (17 rows of 1,000 in a review's trials with 300 copies). Usually one
    distance a row: n d work against the block's n N d."""
    within = distances.min(dim=1).values + 2 * row_errors
    picked_rows, picked_columns = torch.nonzero(distances <= within[:, None], as_tuple=True)
    _recompute(distances, picked_rows, picked_columns, len(distances), queries, samples)


def _recompute(distances: torch.Tensor, picked_rows: torch.Tensor, picked_columns: torch.Tensor, rows: int,
               queries: torch.Tensor, samples: torch.Tensor) -> None:
    """distances[picked_rows, picked_columns] from direct differences of ``queries`` and ``samples``, in place."""
    if len(picked_rows) > DEDUPLICATE_ABOVE * rows:
        # Many candidates a row: copies of a few samples (a collapsed generator's bank). Equal samples are at
        # equal distances, so each (row, distinct sample) pair is summed once and copied to the others.
        distinct, copy_of = torch.unique(samples, dim=0, return_inverse=True)
        representative = _first_of_each(copy_of, len(distinct))
        keys = picked_rows * len(distinct) + copy_of[picked_columns]
        distinct_keys, pair_of = torch.unique(keys, return_inverse=True)
        first_pair = _first_of_each(pair_of, len(distinct_keys))
        exact = exact_sq_distances(queries, samples, picked_rows[first_pair],
                                   representative[copy_of[picked_columns[first_pair]]])
        distances[picked_rows, picked_columns] = exact[pair_of]
    else:
        distances[picked_rows, picked_columns] = exact_sq_distances(queries, samples, picked_rows, picked_columns)


def _first_of_each(group: torch.Tensor, groups: int) -> torch.Tensor:
    """For labels ``group`` in 0..groups-1 (each present), the first position holding each label."""
    positions = torch.arange(len(group), device=group.device)
    return torch.full((groups,), len(group), device=group.device).scatter_reduce_(0, group, positions, "amin")
