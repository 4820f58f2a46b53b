"""Pieces both fused Parzen kernels share (``parzen_lse``: float32 distances, ``parzen_int8``:
exact integer distances): folding a tile's row minima into the running ones, storing a split's
partials, and the autotuning configs built from a kernel's candidate tiles.

The partials are those of ``ganbench.scoring.partials``: per query its running minimum squared
distance, the bank index of that minimum and, per sigma, the sum shifted by the minimum.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def fold_row_minima(distances, running_min, running_index, bank_start):
    """(block_min, new_min, running_index): a (BLOCK_M, BLOCK_N) tile's row minima folded in.

    The first column among equal distances of the tile wins (tie_break_left), and a later tile
    replaces the index only when strictly closer: every tie goes to the lowest bank index, as
    in the float64 reference.
    """
    block_min = tl.min(distances, axis=1)
    block_index = tl.argmin(distances, axis=1, tie_break_left=True)
    new_min = tl.minimum(running_min, block_min)
    running_index = tl.where(block_min < running_min, bank_start + block_index, running_index)
    return block_min, new_min, running_index


@triton.jit
def store_partials(min_out_ptr, index_out_ptr, sums_out_ptr, split, n_queries, rows, row_ok,
                   running_min, running_index, sums, NUM_SIGMAS: tl.constexpr):
    """One split's partials: (splits, n) minima and indices, (splits, S, n) shifted sums."""
    out_rows = split * n_queries + rows
    tl.store(min_out_ptr + out_rows, running_min, mask=row_ok)
    tl.store(index_out_ptr + out_rows, running_index, mask=row_ok)
    for sigma in tl.static_range(NUM_SIGMAS):
        tl.store(sums_out_ptr + (split * NUM_SIGMAS + sigma) * n_queries + rows, sums[sigma], mask=row_ok)


def autotune_configs(candidates) -> list:
    """triton.Config per candidate (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)."""
    return [triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k},
                          num_warps=warps, num_stages=stages)
            for block_m, block_n, block_k, warps, stages in candidates]


def bucket(count: int) -> int:
    """``count`` rounded up to a power of two: the autotuning key, so a new size in the same
    range reuses the tuned tile instead of tuning again."""
    return 1 << max(count - 1, 0).bit_length()
