"""Pieces both fused Parzen kernels share (``parzen_lse``: float32 distances, ``parzen_int8``:
exact integer distances): where a program's tile lies, folding a tile's row minima into the
running ones, storing a split's partials, and the autotuning configs built from a kernel's
candidate tiles.

The partials are those of ``ganbench.scoring.partials``: per query its running minimum squared
distance, the bank index of that minimum and, per sigma, the sum shifted by the minimum.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Tiles autotuning chose on an NVIDIA H200 (sm_90) at 10,000 x 10,000 x 784 with 16 sigmas
# (``python benchmarks/gpu_check.py --targets``, results/bench-gpu-targets-NVIDIA-H200.json), with
# the candidates' times. Shipped so that the first call on a new sm_90 machine compiles one tile
# instead of compiling and timing every candidate (6 to 12 s on an H200); other GPUs, and any
# GPU with GANBENCH_AUTOTUNE=1, tune. Keys: (kernel, compute capability); the kernels are "int8"
# (``parzen_int8``) and "tf32" (``parzen_lse`` with tl.dot in tf32, which tf32x3 operands use).
SHIPPED_TILES = {
    # 64 x 32 x 64, its four digit products STACKED, the UNBRANCHED sigma epilogue: the kernel alone at
    # 16 sigmas 3.10 ms against 3.26 (separate products), 3.29 (the branched epilogue) and 3.39 (both:
    # the tile shipped before), and 3.54 for the best 8-warp tile, 128 x 32 x 64 stacked; the same
    # integer distances and indices bit for bit (``python benchmarks/gpu_breakdown.py --sweep-only``,
    # an H200, 2026-11-28).
    ("int8", (9, 0)): {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3,
                       "STACKED": True, "UNBRANCHED": True},
    # 64 x 128 x 32: 2.64 ms; 128 x 128 x 64 2.80, 128 x 128 x 32 2.92, 128 x 64 x 32 3.65.
    ("tf32", (9, 0)): {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32, "num_warps": 4, "num_stages": 4},
}


@triton.jit
def program_tile(query_ptr, n_queries, n_bank, rows_per_split, stride_query_row, stride_bank_row,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Where program (query block, split) works: (split, rows, row_ok, local_columns, query_block_ptr,
    query_offsets, bank_offsets, split_start, split_end).

    ``rows`` are its BLOCK_M query rows (``row_ok`` those that exist); the query operand of a K
    step is at query_block_ptr + query_offsets + k, a bank block's at its row pointer +
    bank_offsets + k; its bank rows are [split_start, split_end).
    """
    query_block = tl.program_id(0)
    split = tl.program_id(1)
    local_rows = tl.arange(0, BLOCK_M)
    local_columns = tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    rows = query_block * BLOCK_M + local_rows
    row_ok = rows < n_queries
    # 64-bit row offsets, once per block: a 3 x 784-wide bank of a million rows is past 2^31 elements.
    query_block_ptr = query_ptr + (query_block * BLOCK_M).to(tl.int64) * stride_query_row
    query_offsets = local_rows[:, None] * stride_query_row + ks[None, :]     # (BLOCK_M, BLOCK_K)
    bank_offsets = local_columns[None, :] * stride_bank_row + ks[:, None]    # (BLOCK_K, BLOCK_N)
    split_start = split * rows_per_split
    split_end = split_start + rows_per_split
    if split_end > n_bank:
        split_end = n_bank
    return split, rows, row_ok, local_columns, query_block_ptr, query_offsets, bank_offsets, split_start, split_end


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


def autotune_configs(candidates, variants=({},)) -> list:
    """triton.Config per candidate (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) and per variant (more
    meta-parameters, as {"STACKED": True})."""
    return [triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, **variant},
                          num_warps=warps, num_stages=stages)
            for block_m, block_n, block_k, warps, stages in candidates for variant in variants]


def bucket(count: int) -> int:
    """``count`` rounded up to a power of two: the autotuning key, so a new size in the same
    range reuses the tuned tile instead of tuning again."""
    return 1 << max(count - 1, 0).bit_length()


def shipped_tiles(kernel: str, device: torch.device) -> dict | None:
    """The shipped tile of ``kernel`` for this GPU, or None (then the launcher autotunes)."""
    if device.type != "cuda" or os.environ.get("GANBENCH_AUTOTUNE") == "1":
        return None
    return SHIPPED_TILES.get((kernel, torch.cuda.get_device_capability(device)))
