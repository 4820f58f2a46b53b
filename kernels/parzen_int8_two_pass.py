"""Two passes for 8-bit queries: exact int8 distances written out, then each row's log-sum-exp over a sigma grid.

A candidate beside the fused kernel (``kernels/parzen_int8.py``), off by default until a GPU times
it (``benchmarks/gpu_breakdown.py --sweep-only``). The fused kernel's sigma epilogue runs inside the
product loop's tile: its exponentials wait for the products and its row sums need shuffles across
the tensor cores' accumulator threads, and it carries a running minimum that moves (rescaling).
Written out, the distances cost one more write and read of 8 n m bytes (0.8 GB at 10,000 x 10,000,
about 0.2 ms each way on an H200's 4.8 TB/s), and then
- pass 1 (``_distances_kernel``), one program a (query block, bank block) tile: the exact integer
  distances E of ``parzen_int8.tile_distances`` (the same products and bits as the fused kernel),
  stored as int64, and each row's minimum folded into ``minima`` with an atomic min (exact: integers);
- pass 2 (``_row_sums_kernel``), one program a block of query rows, with each row's exact minimum
  known before its first term: the nearest index (the lowest among exact ties) and per sigma
  sum_j exp2((min - E_j) c), nothing skipped and nothing rescaled; each BLOCK_C columns' terms
  summed in float32, those sums added in float64.

Error bound: ``parzen_int8.per_point_bound`` at block_n = BLOCK_C. Its terms for the distances and
for a float32 block sum are this pass's; its terms for skipped terms and float64 rescaling are
events this pass does not have, so here it over-estimates.

The outputs are the fused launcher's with one split (minimum E, index, shifted sums), so
``parzen_int8.parzen_partial_int8(two_pass=True)`` merges them the same way.

File layout: kernels, launcher (checks, allocation, launch). The float64 reference is the fused
kernel's (``parzen_int8.parzen_int8_reference``: the same E and sums), and the public function too
(``parzen_int8.parzen_partial_int8``, ``two_pass=True``).
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl
from ganbench.kernels import launches, partial_tiles, parzen_int8

from ganbench.errors import GanbenchError

# Tiles: pass 1 as the fused kernel's (its products, without the sums' registers); pass 2 BLOCK_R rows a
# program, BLOCK_C columns a step (the float32 block sum the bound counts: (BLOCK_C - 1) u).
DISTANCE_TILES = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3, "STACKED": True}
ROW_TILES = {"BLOCK_R": 16, "BLOCK_C": 64, "num_warps": 4}
INTERPRETER_DISTANCE_TILES = parzen_int8.INTERPRETER_BLOCKS
INTERPRETER_ROW_TILES = {"BLOCK_R": 4, "BLOCK_C": 16}
BUFFER_BYTES = 1 << 30   # the distances of one bank piece: 8 n m bytes at most (the caller sizes its pieces)
NOT_A_DISTANCE = parzen_int8.NOT_A_DISTANCE
DISTANCE_META = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "STACKED", "FP16_PRODUCTS")


@triton.jit(do_not_specialize=["n_queries", "n_bank"])
def _distances_kernel(query_ptr, bank_ptr, query_terms_ptr, bank_terms_ptr, distances_ptr, minima_ptr,
                      n_queries, n_bank, width, stride_query_row, stride_bank_row,
                      DIGITS: tl.constexpr, CORRECTION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr, STACKED: tl.constexpr = False, FP16_PRODUCTS: tl.constexpr = False):
    # A split of BLOCK_N rows: program (query block, bank block) works on one tile.
    _, rows, row_ok, local_columns, query_block_ptr, query_offsets, bank_offsets, bank_start, bank_end = \
        partial_tiles.program_tile(query_ptr, n_queries, n_bank, BLOCK_N, stride_query_row, stride_bank_row,
                                   BLOCK_M, BLOCK_N, BLOCK_K)
    query_terms = tl.load(query_terms_ptr + rows, mask=row_ok, other=0)
    stacked_offsets = parzen_int8._stacked_offsets(bank_offsets, stride_bank_row, width, BLOCK_N, BLOCK_K,
                                                   DIGITS == 4 and STACKED)
    distances = parzen_int8.tile_distances(query_block_ptr, query_offsets, bank_ptr, bank_start, bank_end,
                                           bank_offsets, stacked_offsets, query_terms, bank_terms_ptr, local_columns,
                                           width, stride_bank_row, DIGITS, CORRECTION, BLOCK_M, BLOCK_N, BLOCK_K,
                                           STACKED, FP16_PRODUCTS)
    columns = bank_start + local_columns
    stored = row_ok[:, None] & (columns < bank_end)[None, :]
    tl.store(distances_ptr + rows.to(tl.int64)[:, None] * n_bank + columns[None, :], distances, mask=stored)
    tl.atomic_min(minima_ptr + rows, tl.min(distances, axis=1), mask=row_ok)


@triton.jit(do_not_specialize=["n_queries", "n_bank"])
def _row_sums_kernel(distances_ptr, minima_ptr, scale32_ptr, index_out_ptr, sums_out_ptr, n_queries, n_bank,
                     NUM_SIGMAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_queries
    minima = tl.load(minima_ptr + rows, mask=row_ok, other=0)
    row_starts = distances_ptr + rows.to(tl.int64) * n_bank
    sums = ()
    for _ in tl.static_range(NUM_SIGMAS):
        sums = sums + (tl.zeros([BLOCK_R], tl.float64),)
    nearest = tl.full([BLOCK_R], n_bank, tl.int32)
    for start in range(0, n_bank, BLOCK_C):
        columns = start + tl.arange(0, BLOCK_C)
        inside = row_ok[:, None] & (columns < n_bank)[None, :]
        distances = tl.load(row_starts[:, None] + columns[None, :], mask=inside, other=NOT_A_DISTANCE)
        # The first column holding the exact minimum: blocks run in order, so a later one never wins a tie.
        at_minimum = tl.min(tl.where(distances == minima[:, None], columns[None, :], n_bank), axis=1)
        nearest = tl.minimum(nearest, at_minimum)
        shifted = (minima[:, None] - distances).to(tl.float32)   # <= 0, exact integers rounded once
        moved = ()
        for sigma in tl.static_range(NUM_SIGMAS):
            terms = tl.exp2(shifted * tl.load(scale32_ptr + sigma))
            moved = moved + (sums[sigma] + tl.sum(terms, axis=1).to(tl.float64),)
        sums = moved
    tl.store(index_out_ptr + rows, nearest, mask=row_ok)
    for sigma in tl.static_range(NUM_SIGMAS):
        tl.store(sums_out_ptr + sigma * n_queries + rows, sums[sigma], mask=row_ok)


# ---- launcher --------------------------------------------------------------------------------------

def piece_rows(n_queries: int, block_n: int) -> int:
    """Bank rows a piece may have so that its distances fit in BUFFER_BYTES (whole BLOCK_N blocks, at least one)."""
    return max(block_n, BUFFER_BYTES // (8 * max(n_queries, 1)) // block_n * block_n)


def parzen_int8_two_pass_launch(query: torch.Tensor, bank: torch.Tensor, query_terms: torch.Tensor,
                                bank_terms: torch.Tensor, sigmas, *, n_queries: int, n_bank: int, width: int,
                                digits: int, correction: bool, blocks: dict | None = None,
                                row_blocks: dict | None = None):
    """Check, allocate, launch both passes. Returns (minimum E (1, n) int64, index (1, n) int32, shifted sums
    (1, S, n) float64): the fused launcher's outputs with one split.

    The operands and terms are ``parzen_int8.parzen_int8_launch``'s; ``blocks`` the first pass's tile
    (BLOCK_M, BLOCK_N, BLOCK_K; optionally num_warps, num_stages, STACKED, FP16_PRODUCTS), ``row_blocks``
    the second's (BLOCK_R, BLOCK_C, optionally num_warps).
    """
    interpreted = parzen_int8.INTERPRETED
    tiles = blocks or (INTERPRETER_DISTANCE_TILES if interpreted else DISTANCE_TILES)
    row_tiles = row_blocks or (INTERPRETER_ROW_TILES if interpreted else ROW_TILES)
    parzen_int8.check_operands(query, bank, query_terms, bank_terms, n_queries=n_queries, n_bank=n_bank, width=width,
                               digits=digits, tiles=tiles)
    for key in ("BLOCK_R", "BLOCK_C"):
        value = row_tiles.get(key)
        if not isinstance(value, int) or value < 1 or value & (value - 1):
            raise GanbenchError(f"row tile {key} must be a power of two, got {value!r}")
    if 8 * n_queries * n_bank > 2 * BUFFER_BYTES:
        raise GanbenchError(f"{n_queries} x {n_bank} distances need {8 * n_queries * n_bank / 2**30:.1f} GiB: "
                            "pass the bank in pieces of piece_rows() rows")
    grid_sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if grid_sigmas.size > parzen_int8.MAX_SIGMAS:
        raise GanbenchError(f"the kernel takes up to {parzen_int8.MAX_SIGMAS} sigmas per pass, got {grid_sigmas.size}")
    device = query.device
    query, bank, tiles = parzen_int8.product_operands(query, bank, tiles, width)
    distances = torch.empty(n_queries, n_bank, dtype=torch.int64, device=device)
    min_out = torch.full((1, n_queries), 2**62, dtype=torch.int64, device=device)
    index_out = torch.empty(1, n_queries, dtype=torch.int32, device=device)
    sums_out = torch.empty(1, grid_sigmas.size, n_queries, dtype=torch.float64, device=device)
    scale32, _ = parzen_int8.sigma_scales(grid_sigmas, device)
    # The fused kernel's tiles may carry its own meta-parameters (UNBRANCHED): the first pass takes its tile,
    # layout and products only (a GPU launch refuses a keyword its kernel does not have).
    kernel_tiles = {key: value for key, value in tiles.items() if key in DISTANCE_META}
    launches.KernelCall(
        _distances_kernel, (triton.cdiv(n_queries, tiles["BLOCK_M"]), triton.cdiv(n_bank, tiles["BLOCK_N"])),
        (query, bank, query_terms, bank_terms, distances, min_out, n_queries, n_bank, width, query.stride(0),
         bank.stride(0)),
        {"DIGITS": digits, "CORRECTION": bool(correction), **kernel_tiles,
         **{key: tiles[key] for key in ("num_warps", "num_stages") if key in tiles}}).launch()
    launches.KernelCall(
        _row_sums_kernel, (triton.cdiv(n_queries, row_tiles["BLOCK_R"]),),
        (distances, min_out, scale32, index_out, sums_out, n_queries, n_bank),
        {"NUM_SIGMAS": grid_sigmas.size, **row_tiles}).launch()
    return min_out, index_out, sums_out
