"""Fused Parzen pass: blocked squared distances, a whole sigma grid's log-sum-exp, and the nearest neighbour.

For a block of queries X (BLOCK_M x d) against the bank S (m x d), one program
- accumulates X S^T over d in BLOCK_K chunks with ``tl.dot`` (float32 accumulate),
- forms D = ||x||^2 + ||s||^2 - 2 x.s on bank-centred data, clamped at 0,
- keeps one running minimum of D per row, the shift shared by every sigma: the
  largest term of -D / (2 sigma^2) is the nearest point whatever sigma is, so each
  sigma keeps only its own rescaled sum (the online log-sum-exp of fused attention,
  with log2(e) folded into the scale so the exponential is one ``exp2``),
- keeps the argmin, the nearest bank index, ties going to the lowest index.

The bank is split across programs (split-K style over m) so a few hundred queries
still fill the GPU; the float64 host side merges the splits exactly
(``ganbench.partials.merge``) and adds the normalising constant.

File layout: kernel, float64 reference, launcher (checks, allocation, launch), public function.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import triton
import triton.language as tl

from ganbench import partials
from ganbench.errors import GanbenchError

MAX_SIGMAS = 32            # the grid is unrolled at compile time
LOG2_E = 1.4426950408889634
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"  # read when triton.jit decorates below
PRECISIONS = ("tf32x3", "ieee", "tf32")
SPLIT_ROWS_MULTIPLE = 256  # splits of the bank are a multiple of every BLOCK_N candidate
INTERPRETER_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32}


@triton.jit
def _parzen_lse_kernel(
    # pointers
    query_ptr, bank_ptr, query_norm_ptr, bank_norm_ptr, scale_ptr,
    min_out_ptr, index_out_ptr, sums_out_ptr,
    # sizes
    n_queries, n_bank, dim, rows_per_split,
    # strides
    stride_query_row, stride_query_col, stride_bank_row, stride_bank_col,
    # meta-parameters
    NUM_SIGMAS: tl.constexpr, SIGMA_PAD: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    query_block = tl.program_id(0)
    split = tl.program_id(1)
    rows = query_block * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_queries
    query_norm = tl.load(query_norm_ptr + rows, mask=row_ok, other=0.0)
    sigma_columns = tl.arange(0, SIGMA_PAD)
    # log2(e) / (2 sigma^2); padding columns hold 1.0 so -inf * scale stays -inf, never NaN.
    scales = tl.load(scale_ptr + sigma_columns, mask=sigma_columns < NUM_SIGMAS, other=1.0)

    running_min = tl.full([BLOCK_M], float("inf"), tl.float32)
    running_index = tl.zeros([BLOCK_M], tl.int32)
    sums = tl.zeros([BLOCK_M, SIGMA_PAD], tl.float32)

    split_start = split * rows_per_split
    split_end = split_start + rows_per_split
    if split_end > n_bank:
        split_end = n_bank
    # The trip count comes from arguments only (a bound derived from program_id breaks the
    # interpreter); blocks past the end of the last split are skipped by the test below.
    for block in range(0, tl.cdiv(rows_per_split, BLOCK_N)):
        bank_start = split_start + block * BLOCK_N
        if bank_start < split_end:
            columns = bank_start + tl.arange(0, BLOCK_N)
            column_ok = columns < split_end
            dots = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for k_start in range(0, dim, BLOCK_K):
                ks = k_start + tl.arange(0, BLOCK_K)
                k_ok = ks < dim
                queries = tl.load(query_ptr + rows[:, None] * stride_query_row + ks[None, :] * stride_query_col,
                                  mask=row_ok[:, None] & k_ok[None, :], other=0.0)        # (BLOCK_M, BLOCK_K)
                samples = tl.load(bank_ptr + columns[None, :] * stride_bank_row + ks[:, None] * stride_bank_col,
                                  mask=column_ok[None, :] & k_ok[:, None], other=0.0)     # (BLOCK_K, BLOCK_N)
                dots = tl.dot(queries, samples, dots, input_precision=PRECISION)
            bank_norm = tl.load(bank_norm_ptr + columns, mask=column_ok, other=0.0)
            distances = tl.maximum(query_norm[:, None] + bank_norm[None, :] - 2.0 * dots, 0.0)
            distances = tl.where(column_ok[None, :], distances, float("inf"))  # (BLOCK_M, BLOCK_N)

            block_min = tl.min(distances, axis=1)
            block_index = tl.argmin(distances, axis=1, tie_break_left=True)
            new_min = tl.minimum(running_min, block_min)
            # Strictly smaller only: an equal distance in a later block keeps the lower index.
            running_index = tl.where(block_min < running_min, bank_start + block_index, running_index)
            # Move the old sums to the new shift (factor <= 1; 0 on the first block, where the old min is inf).
            sums = sums * tl.exp2((new_min - running_min)[:, None] * scales[None, :])
            shifted = new_min[:, None] - distances  # <= 0, shared by every sigma
            for sigma in tl.static_range(NUM_SIGMAS):
                scale = tl.load(scale_ptr + sigma)
                block_sum = tl.sum(tl.exp2(shifted * scale), axis=1)
                sums += tl.where(sigma_columns[None, :] == sigma, block_sum[:, None], 0.0)
            running_min = new_min

    out_rows = split * n_queries + rows
    tl.store(min_out_ptr + out_rows, running_min, mask=row_ok)
    tl.store(index_out_ptr + out_rows, running_index, mask=row_ok)
    sum_offsets = (split * NUM_SIGMAS + sigma_columns[None, :]) * n_queries + rows[:, None]
    tl.store(sums_out_ptr + sum_offsets, sums, mask=row_ok[:, None] & (sigma_columns[None, :] < NUM_SIGMAS))


def _autotune_configs():
    """Candidate tiles: large enough for tensor-core GEMM, few enough to tune in seconds."""
    configs = [
        triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k}, num_warps=warps, num_stages=stages)
        for block_m in (64, 128) for block_n in (64, 128) for block_k in (32, 64)
        for warps in (4, 8) for stages in (2, 3)
    ]
    return [config for config in configs if _keep(config)]


def _keep(config) -> bool:
    """Prune to one warp count per tile size and drop deep pipelines of wide K (shared-memory bound)."""
    block_m, block_n, block_k = (config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    tile = block_m * block_n
    # The (M, N) tile and its exponentials live in registers: 8 warps for 128x128, else 4.
    if config.num_warps != (8 if tile >= 128 * 128 else 4):
        return False
    if block_k == 64 and config.num_stages == 3:
        return False
    if tile <= 64 * 64 and block_k == 32:
        return False
    return True


_parzen_lse_autotuned = triton.autotune(configs=_autotune_configs(),
                                        key=["n_queries", "n_bank", "dim", "NUM_SIGMAS"])(_parzen_lse_kernel)


# ---- float64 reference -----------------------------------------------------------------------------

def parzen_lse_reference(query: torch.Tensor, bank: torch.Tensor, sigmas) -> partials.BankPartial:
    """What the kernel computes, by brute force in float64: direct differences, no expansion.

    Returns min squared distance, nearest index (lowest among ties) and the shifted sums.
    Memory grows as n * m * d / chunk; for tests and checks, not for production sizes.
    """
    query64, bank64 = query.detach().double().cpu(), bank.detach().double().cpu()
    chunks = []
    for start in range(0, len(query64), 64):
        block = query64[start:start + 64]
        distances = ((block[:, None, :] - bank64[None, :, :]) ** 2).sum(-1)
        chunks.append(partials.from_distances(distances, sigmas))
    return partials.BankPartial(*(torch.cat([getattr(c, f) for c in chunks], dim=-1)
                                  for f in ("min_sq_distance", "nearest_index", "shifted_sums")))


# ---- launcher --------------------------------------------------------------------------------------

def _split_rows(n_queries: int, n_bank: int, device: torch.device, block_n: int | None) -> int:
    """Bank rows per split: enough splits that (query blocks x splits) fills every SM about twice."""
    if device.type != "cuda":
        return n_bank  # the interpreter runs programs one by one: splitting buys nothing
    multiprocessors = torch.cuda.get_device_properties(device).multi_processor_count
    query_blocks = triton.cdiv(n_queries, 128)
    splits = max(1, triton.cdiv(2 * multiprocessors, query_blocks))
    multiple = block_n or SPLIT_ROWS_MULTIPLE
    rows = triton.cdiv(triton.cdiv(n_bank, splits), multiple) * multiple
    return max(rows, multiple)


def parzen_lse_launch(query: torch.Tensor, bank: torch.Tensor, query_norms: torch.Tensor,
                      bank_norms: torch.Tensor, sigmas, *, precision: str = "tf32x3",
                      rows_per_split: int | None = None, block_m: int | None = None,
                      block_n: int | None = None, block_k: int | None = None):
    """Check, allocate, launch. Returns per-split (min, index, shifted sums) as float32/int32 tensors.

    ``query`` (n, d) and ``bank`` (m, d) float32 on one device, already centred; norms float32.
    Block sizes, when given, replace autotuning (tests use them for odd sizes).
    """
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise GanbenchError(f"query {tuple(query.shape)} and bank {tuple(bank.shape)} must be (n, d) and (m, d)")
    for name, tensor in (("query", query), ("bank", bank), ("query_norms", query_norms), ("bank_norms", bank_norms)):
        if tensor.dtype != torch.float32:
            raise GanbenchError(f"{name} must be float32, got {tensor.dtype}")
        if tensor.device != query.device:
            raise GanbenchError(f"{name} is on {tensor.device} but query is on {query.device}")
    if query_norms.shape != (query.shape[0],) or bank_norms.shape != (bank.shape[0],):
        raise GanbenchError("norms must be one per row of query and bank")
    if not query_norms.is_contiguous() or not bank_norms.is_contiguous():
        raise GanbenchError("norms must be contiguous")
    grid_sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if not 1 <= grid_sigmas.size <= MAX_SIGMAS:
        raise GanbenchError(f"the kernel takes 1 to {MAX_SIGMAS} sigmas per pass, got {grid_sigmas.size}")
    if precision not in PRECISIONS:
        raise GanbenchError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    for name, block in (("block_m", block_m), ("block_n", block_n), ("block_k", block_k)):
        if block is not None and (block < 16 or block & (block - 1)):
            raise GanbenchError(f"{name} must be a power of two >= 16 (tl.dot tiles), got {block}")
    if query.device.type == "cpu" and not INTERPRETED:
        raise GanbenchError("the triton backend needs a CUDA GPU; on the CPU set TRITON_INTERPRET=1 "
                            "(Triton's interpreter, slow, for tests) or use --backend torch")
    n_queries, dim = query.shape
    n_bank = bank.shape[0]
    device = query.device
    rows_per_split = rows_per_split or _split_rows(n_queries, n_bank, device, block_n)
    splits = triton.cdiv(n_bank, rows_per_split)
    num_sigmas = grid_sigmas.size
    scales = torch.tensor(LOG2_E * 0.5 / grid_sigmas**2, dtype=torch.float32, device=device)
    min_out = torch.empty(splits, n_queries, dtype=torch.float32, device=device)
    index_out = torch.empty(splits, n_queries, dtype=torch.int32, device=device)
    sums_out = torch.empty(splits, num_sigmas, n_queries, dtype=torch.float32, device=device)
    arguments = (query, bank, query_norms, bank_norms, scales, min_out, index_out, sums_out,
                 n_queries, n_bank, dim, rows_per_split,
                 query.stride(0), query.stride(1), bank.stride(0), bank.stride(1))
    meta = {"NUM_SIGMAS": num_sigmas, "SIGMA_PAD": triton.next_power_of_2(num_sigmas), "PRECISION": precision}
    if INTERPRETED or block_m or block_n or block_k:
        blocks = {"BLOCK_M": block_m or INTERPRETER_BLOCKS["BLOCK_M"], "BLOCK_N": block_n or INTERPRETER_BLOCKS["BLOCK_N"],
                  "BLOCK_K": block_k or INTERPRETER_BLOCKS["BLOCK_K"]}
        if rows_per_split % blocks["BLOCK_N"] and splits > 1:
            raise GanbenchError("rows_per_split must be a multiple of BLOCK_N")
        grid = (triton.cdiv(n_queries, blocks["BLOCK_M"]), splits)
        _parzen_lse_kernel[grid](*arguments, **meta, **blocks)
    else:
        grid = lambda config: (triton.cdiv(n_queries, config["BLOCK_M"]), splits)  # noqa: E731
        _parzen_lse_autotuned[grid](*arguments, **meta)
    return min_out, index_out, sums_out


# ---- public function -------------------------------------------------------------------------------

def parzen_partial_triton(query: torch.Tensor, bank: torch.Tensor, sigmas, *, device: torch.device,
                          precision: str = "tf32x3", block_n: int | None = None, rows_per_split: int | None = None,
                          block_m: int | None = None, block_k: int | None = None) -> partials.BankPartial:
    """The ``triton`` backend of ``ganbench.parzen``: the whole bank's partial, float64, on ``device``.

    ``ganbench.parzen.finish_pass`` turns it into log-likelihoods (and refines the nearest
    distance) on the same device.
    """
    from ganbench.parzen import centre_by_bank_mean, squared_norms

    grid = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    query32, bank32 = centre_by_bank_mean(query, bank, torch.float32, device)
    query32, bank32 = query32.contiguous(), bank32.contiguous()
    # Norms summed in float64 and rounded once, so the dot products are the only float32 error.
    query_norms, bank_norms = squared_norms(query32), squared_norms(bank32)
    pieces = [grid[start:start + MAX_SIGMAS] for start in range(0, grid.size, MAX_SIGMAS)] or [grid[:0]]
    merged = []
    for piece in pieces:
        launch_sigmas = piece if piece.size else np.ones(1)  # nearest only: any one sigma will do
        min_out, index_out, sums_out = parzen_lse_launch(
            query32, bank32, query_norms, bank_norms, launch_sigmas, precision=precision,
            rows_per_split=rows_per_split, block_m=block_m, block_n=block_n, block_k=block_k)
        merged.append(_merge_splits(min_out, index_out, sums_out, launch_sigmas))
    if not grid.size:
        return partials.BankPartial(merged[0].min_sq_distance, merged[0].nearest_index,
                                    merged[0].shifted_sums[:0])
    # Passes of more than 32 sigmas may be tuned to other tiles, so their float32 minima can differ
    # in the last bits: move every piece's sums to the smallest minimum, as partials.merge does.
    minima = torch.stack([piece.min_sq_distance for piece in merged])
    first = minima.argmin(dim=0)  # lowest piece among ties
    common = minima.min(dim=0).values
    sums = [piece.shifted_sums * torch.exp(-(piece.min_sq_distance - common) * partials.half_inverse_variances(
        sigmas_piece, piece.shifted_sums)) for piece, sigmas_piece in zip(merged, pieces)]
    nearest = torch.stack([piece.nearest_index for piece in merged]).gather(0, first[None, :])[0]
    return partials.BankPartial(common, nearest, torch.cat(sums))


def _merge_splits(min_out, index_out, sums_out, sigmas) -> partials.BankPartial:
    """Second pass, in float64 on the device: merge the splits in bank order (ties keep the lower index)."""
    mins, indices, sums = min_out.double(), index_out.long(), sums_out.double()
    merged = partials.BankPartial(mins[0], indices[0], sums[0])
    for split in range(1, mins.shape[0]):
        merged = partials.merge(merged, partials.BankPartial(mins[split], indices[split], sums[split]), sigmas)
    return merged
