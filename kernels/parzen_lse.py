"""Fused Parzen pass: blocked squared distances, a whole sigma grid's log-sum-exp, and the nearest neighbour.

For a block of queries X (BLOCK_M x d) against the bank S (m x d), one program
- accumulates X S^T over the operands' width in BLOCK_K steps with ``tl.dot`` (float32
  accumulate), each step in a fresh accumulator added once in float32;
- forms D = ||x||^2 + ||s||^2 - 2 x.s on bank-centred data, clamped at 0;
- keeps one running minimum of D per row, the shift shared by every sigma: the
  largest term of -D / (2 sigma^2) is the nearest point whatever sigma is, so each
  sigma keeps only its own rescaled sum (the online log-sum-exp of fused attention,
  with log2(e) folded into the scale so the exponential is one ``exp2``); the sums are
  a tuple of (BLOCK_M,) rows unrolled at compile time;
- keeps the argmin, the nearest bank index, ties going to the lowest index.

Precision: the default tf32x3 reads operands already split into tf32 parts
(``kernels/parzen_operands.py``), so the three products are one plain TF32 dot of width 3d
with both operands in shared memory; splitting every tile in registers instead (Triton's own
tf32x3) ran the 16-sigma case at 3.2x a float32 matmul on an H100, against 1.37x now on an
H200 (results/bench-gpu-NVIDIA-H200.json).

The bank is split across programs (split-K style over m) so a few hundred queries
still fill the GPU; the splits are merged exactly in float64 on the device.

Tried and measured slower on the H200: computing one sigma in three's exponentials with a
polynomial on the FMA units (the special-function unit's 16 exponentials per clock bound the
16-sigma case) spilled registers and lost on every tile (the FMA_EXP_PERIOD rows of the
H200 JSON's candidate timings).

File layout: kernel, float64 reference, launcher (checks, allocation, launch), public function.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl
from ganbench.kernels import launches, partial_tiles, parzen_operands, prebuilt

from ganbench.errors import GanbenchError
from ganbench.scoring import partials
from ganbench.scoring.centring import centre_by_bank_mean

MAX_SIGMAS = 32            # the grid is unrolled at compile time
LOG2_E = 1.4426950408889634
INTERPRETED, PRECISIONS = parzen_operands.INTERPRETED, parzen_operands.PRECISIONS
SPLIT_ROWS_MULTIPLE = 256  # splits of the bank are a multiple of every BLOCK_N candidate
INTERPRETER_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32}
BANK_PIECE_ROWS = 1 << 20  # bank rows per launch: the tf32x3 operand of a piece is ~10 GB at d = 784


# The row counts bound the masks and offset the partials' stores (once a row a split): not specialized on,
# so one compiled kernel (and one shipped with ganbench, kernels/prebuilt.py) serves every n and m.
@triton.jit(do_not_specialize=["n_queries", "n_bank", "query_bucket", "bank_bucket"])
def _parzen_lse_kernel(
    # pointers
    query_ptr, bank_ptr, query_norm_ptr, bank_norm_ptr, scale_ptr,
    min_out_ptr, index_out_ptr, sums_out_ptr,
    # sizes: operands are padded (rows to whole blocks, width to whole BLOCK_K), so loads need no mask
    n_queries, n_bank, width, rows_per_split,
    # row strides (columns are contiguous)
    stride_query_row, stride_bank_row,
    # the autotuning key only: n and m rounded up to a power of two, so a new size does not re-tune
    query_bucket, bank_bucket,
    # meta-parameters
    NUM_SIGMAS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # tl.arange and tl.dot need powers of two, tl.dot at least 16 on every side (parzen_lse_launch
    # checks the same before a launch, with a clear error).
    tl.static_assert(BLOCK_M >= 16 and (BLOCK_M & (BLOCK_M - 1)) == 0, "BLOCK_M must be a power of two >= 16")
    tl.static_assert(BLOCK_N >= 16 and (BLOCK_N & (BLOCK_N - 1)) == 0, "BLOCK_N must be a power of two >= 16")
    tl.static_assert(BLOCK_K >= 16 and (BLOCK_K & (BLOCK_K - 1)) == 0, "BLOCK_K must be a power of two >= 16")
    split, rows, row_ok, local_columns, query_block_ptr, query_offsets, bank_offsets, split_start, split_end = \
        partial_tiles.program_tile(query_ptr, n_queries, n_bank, rows_per_split, stride_query_row, stride_bank_row,
                                   BLOCK_M, BLOCK_N, BLOCK_K)
    query_norm = tl.load(query_norm_ptr + rows, mask=row_ok, other=0.0)

    # One scalar scale log2(e) / (2 sigma^2) and one (BLOCK_M,) running sum per sigma, as tuples
    # unrolled at compile time: each sum stays in the row layout of the distance tile, so a
    # tile's row sums are added with one add per row (a (BLOCK_M, SIGMA_PAD) tile would cost
    # a select over every column for every sigma).
    scales = ()
    sums = ()
    for sigma in tl.static_range(NUM_SIGMAS):
        scales = scales + (tl.load(scale_ptr + sigma),)
        sums = sums + (tl.zeros([BLOCK_M], tl.float32),)
    running_min = tl.full([BLOCK_M], float("inf"), tl.float32)
    running_index = tl.zeros([BLOCK_M], tl.int32)

    # The trip count comes from arguments only (a bound derived from program_id breaks the
    # interpreter); blocks past the end of the last split are skipped by the test below.
    for block in range(0, tl.cdiv(rows_per_split, BLOCK_N)):
        bank_start = split_start + block * BLOCK_N
        if bank_start < split_end:
            bank_block_ptr = bank_ptr + bank_start.to(tl.int64) * stride_bank_row
            minus_dots = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for k_start in range(0, width, BLOCK_K):
                queries = tl.load(query_block_ptr + query_offsets + k_start)   # (BLOCK_M, BLOCK_K)
                samples = tl.load(bank_block_ptr + bank_offsets + k_start)     # (BLOCK_K, BLOCK_N)
                # Each K step's products go to a fresh accumulator and then one rounded float32
                # subtraction: tensor cores truncate every addition into their accumulator, so a
                # chain over the whole width drifts (26x this form's error on an H200). Triton
                # folds "acc + dot(a, b)" back into one chain, but not "acc - dot(a, b)".
                minus_dots -= tl.dot(queries, samples, input_precision=PRECISION)
            columns = bank_start + local_columns
            column_ok = columns < split_end
            bank_norm = tl.load(bank_norm_ptr + columns, mask=column_ok, other=0.0)
            distances = tl.maximum(query_norm[:, None] + bank_norm[None, :] + 2.0 * minus_dots, 0.0)
            distances = tl.where(column_ok[None, :], distances, float("inf"))  # (BLOCK_M, BLOCK_N)

            block_min, new_min, running_index = partial_tiles.fold_row_minima(distances, running_min, running_index,
                                                                              bank_start)
            # Old sums move to the new shift (factor <= 1; 0 on the first block, where the old min is inf).
            drop = new_min - running_min
            shifted = new_min[:, None] - distances  # <= 0, shared by every sigma
            moved = ()
            for sigma in tl.static_range(NUM_SIGMAS):
                block_sum = tl.sum(tl.exp2(shifted * scales[sigma]), axis=1)
                moved = moved + (sums[sigma] * tl.exp2(drop * scales[sigma]) + block_sum,)
            sums = moved
            running_min = new_min

    partial_tiles.store_partials(min_out_ptr, index_out_ptr, sums_out_ptr, split, n_queries, rows, row_ok,
                                 running_min, running_index, sums, NUM_SIGMAS)


# Candidate tiles, few enough to tune in seconds: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages).
# Both operands are staged in shared memory, (BLOCK_M + BLOCK_N) x BLOCK_K float32 a stage, so
# deep pipelines go with narrow K; the (M, N) tile and its exponentials live in registers,
# so 128 x 128 takes 8 warps. Checked offline with ptxas for sm_90: none of these spills at
# 16 sigmas with every exponential on the SFU. On an H200 the 128 x 128 tiles won at
# 10,000 x 10,000 and 10,000 x 1,000,000; 128 x 64 tied them with 256 queries.
TUNING_CANDIDATES = [
    (128, 128, 32, 8, 3), (128, 128, 32, 8, 4), (128, 128, 64, 8, 3),
    (64, 128, 32, 4, 4), (64, 128, 64, 4, 3), (128, 64, 32, 4, 4),
]
BLOCK_NAMES = ("BLOCK_M", "BLOCK_N", "BLOCK_K")


def check_tiles(blocks: dict) -> None:
    """The tile invariants the kernel's unmasked loads rely on, as one clear error each.

    Every side is a power of two >= 16 (tl.arange, tl.dot). The launcher checks that the operands
    are padded to whole tiles of ``blocks`` and that splits start on whole BLOCK_N blocks; when
    autotuning, operands and splits are padded to MAX_BLOCKS, which every candidate's tile
    divides (powers of two no larger than it).
    """
    for name in BLOCK_NAMES:
        if not parzen_operands.is_power_of_two(blocks.get(name), smallest=16):
            raise GanbenchError(f"{name} must be a power of two >= 16 (tl.arange and tl.dot need it), "
                                f"got {blocks.get(name)!r}")


# The largest tile of any candidate: operands are padded to it when the kernel autotunes.
MAX_BLOCKS = {name: max(candidate[index] for candidate in TUNING_CANDIDATES) for index, name in enumerate(BLOCK_NAMES)}
for _config in partial_tiles.autotune_configs(TUNING_CANDIDATES):
    check_tiles(_config.kwargs)  # a bad candidate fails at import, not as an out-of-bounds read on some GPU
check_tiles(MAX_BLOCKS)
check_tiles(INTERPRETER_BLOCKS)

# Keyed on sizes rounded up to powers of two, and cache_results stores the chosen tile in Triton's
# cache: only the first call with a new size range, in any process, pays for tuning (about a
# minute on an H200).
_parzen_lse_autotuned = triton.autotune(configs=partial_tiles.autotune_configs(TUNING_CANDIDATES),
                                        key=["query_bucket", "bank_bucket", "width", "NUM_SIGMAS"],
                                        cache_results=True)(_parzen_lse_kernel)


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

def _split_rows(n_queries: int, n_bank: int, device: torch.device, block_n: int) -> int:
    """Bank rows per split: enough splits that (query blocks x splits) fills every SM about twice."""
    if device.type != "cuda":
        return triton.cdiv(n_bank, block_n) * block_n  # the interpreter runs programs one by one
    multiprocessors = torch.cuda.get_device_properties(device).multi_processor_count
    query_blocks = triton.cdiv(n_queries, MAX_BLOCKS["BLOCK_M"])
    splits = max(1, triton.cdiv(2 * multiprocessors, query_blocks))
    multiple = max(block_n, SPLIT_ROWS_MULTIPLE)
    return max(triton.cdiv(triton.cdiv(n_bank, splits), multiple) * multiple, multiple)


def parzen_lse_launch(query: torch.Tensor, bank: torch.Tensor, query_norms: torch.Tensor,
                      bank_norms: torch.Tensor, sigmas, *, n_queries: int, n_bank: int, dot_precision: str = "tf32",
                      rows_per_split: int | None = None, blocks: dict | None = None):
    """Check, allocate, launch. Returns per-split (min, index, shifted sums) as float32/int32 tensors.

    ``query`` and ``bank`` are operands from ``parzen_operands`` (padded, float32, one device);
    ``n_queries`` and ``n_bank`` their real row counts; ``dot_precision`` is tl.dot's input
    precision (what the tensor cores do), which ``parzen_operands`` derives from the user's
    precision: the user's tf32x3 is a plain tf32 dot over split operands.
    ``blocks`` (BLOCK_M, BLOCK_N, BLOCK_K), when given, replaces autotuning.
    """
    # No tiles asked for: the shipped tile of this GPU, else autotuning over the candidates.
    blocks = blocks or partial_tiles.shipped_tiles(dot_precision, query.device) or MAX_BLOCKS
    check_tiles(blocks)
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise GanbenchError(f"query {tuple(query.shape)} and bank {tuple(bank.shape)} must be (n, w) and (m, w)")
    for name, tensor in (("query", query), ("bank", bank), ("query_norms", query_norms), ("bank_norms", bank_norms)):
        if tensor.dtype != torch.float32:
            raise GanbenchError(f"{name} must be float32, got {tensor.dtype}")
        if tensor.device != query.device:
            raise GanbenchError(f"{name} is on {tensor.device} but query is on {query.device}")
        if tensor.stride(-1) != 1:
            raise GanbenchError(f"{name} must have contiguous rows")
    if query_norms.shape != (n_queries,) or bank_norms.shape != (n_bank,):
        raise GanbenchError("norms must be one per row of query and bank")
    # Unmasked loads read whole blocks: the operands must be padded to them.
    if (query.shape[0] < triton.cdiv(n_queries, blocks["BLOCK_M"]) * blocks["BLOCK_M"]
            or bank.shape[0] < triton.cdiv(n_bank, blocks["BLOCK_N"]) * blocks["BLOCK_N"]
            or query.shape[1] % blocks["BLOCK_K"]):
        raise GanbenchError("operands must be padded to whole blocks: build them with parzen_operands")
    grid_sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if not 1 <= grid_sigmas.size <= MAX_SIGMAS:
        raise GanbenchError(f"the kernel takes 1 to {MAX_SIGMAS} sigmas per pass, got {grid_sigmas.size}")
    parzen_operands.check_dot_launch(dot_precision, query.device)
    device = query.device
    rows_per_split = rows_per_split or _split_rows(n_queries, n_bank, device, blocks["BLOCK_N"])
    if rows_per_split < 1 or rows_per_split % blocks["BLOCK_N"]:
        raise GanbenchError(f"rows_per_split must be a positive multiple of BLOCK_N, got {rows_per_split}")
    splits = triton.cdiv(n_bank, rows_per_split)
    num_sigmas = grid_sigmas.size
    if splits * num_sigmas * n_queries >= 2**31:  # the sums' output offsets are int32
        raise GanbenchError(f"{splits} splits x {num_sigmas} sigmas x {n_queries} queries exceed int32 offsets; "
                            "score fewer queries at a time")
    call, outputs = parzen_lse_call(query, bank, query_norms, bank_norms, grid_sigmas, n_queries=n_queries,
                                    n_bank=n_bank, dot_precision=dot_precision, rows_per_split=rows_per_split,
                                    tiles=blocks)
    if blocks is MAX_BLOCKS and not INTERPRETED:
        call.launch_tuned(_parzen_lse_autotuned, n_queries, AUTOTUNED_META)
    else:
        call.launch()
    return outputs


AUTOTUNED_META = ("NUM_SIGMAS", "PRECISION")  # the autotuner adds the tiles and launch options


def parzen_lse_call(query: torch.Tensor, bank: torch.Tensor, query_norms: torch.Tensor, bank_norms: torch.Tensor,
                    sigmas: np.ndarray, *, n_queries: int, n_bank: int, dot_precision: str, rows_per_split: int,
                    tiles: dict):
    """The launch ``parzen_lse_launch`` makes with ``tiles`` (BLOCK_M, BLOCK_N, BLOCK_K, optionally num_warps
    and num_stages), its outputs allocated: (call, (min_out, index_out, sums_out))."""
    device = query.device
    splits = triton.cdiv(n_bank, rows_per_split)
    # log2(e) / (2 sigma^2): exp2 in the kernel (an error, never inf, if float32 cannot hold it)
    scales = partials.half_inverse_variances(sigmas, query, factor=LOG2_E)[:, 0].contiguous()
    min_out = torch.empty(splits, n_queries, dtype=torch.float32, device=device)
    index_out = torch.empty(splits, n_queries, dtype=torch.int32, device=device)
    sums_out = torch.empty(splits, sigmas.size, n_queries, dtype=torch.float32, device=device)
    arguments = (query, bank, query_norms, bank_norms, scales, min_out, index_out, sums_out,
                 n_queries, n_bank, query.shape[1], rows_per_split, query.stride(0), bank.stride(0),
                 partial_tiles.bucket(n_queries), partial_tiles.bucket(n_bank))
    meta = {"NUM_SIGMAS": sigmas.size, "PRECISION": dot_precision, **tiles}
    grid = (triton.cdiv(n_queries, tiles["BLOCK_M"]), splits)
    return launches.KernelCall(_parzen_lse_kernel, grid, arguments, meta), (min_out, index_out, sums_out)


# ---- public function -------------------------------------------------------------------------------

def parzen_partial_triton(query: torch.Tensor, bank: torch.Tensor, sigmas, *, device: torch.device,
                          precision: str = "tf32x3", rows_per_split: int | None = None,
                          blocks: dict | None = None, bank_piece_rows: int = BANK_PIECE_ROWS) -> partials.BankPartial:
    """The ``triton`` backend of ``ganbench.scoring.parzen``: the whole bank's partial, float64, on ``device``.

    The bank goes through in pieces of ``bank_piece_rows`` (the tf32x3 operand is three times
    the bank's size), merged exactly in float64. ``ganbench.scoring.parzen.finish_pass`` turns the
    result into log-likelihoods (and refines the nearest distance) on the same device.
    """
    if blocks is None and INTERPRETED:
        blocks = INTERPRETER_BLOCKS
    padding = blocks or MAX_BLOCKS
    check_tiles(padding)
    prebuilt.install(device)  # on sm_90 the kernels ship compiled (a cold start loads them)
    grid = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    query, bank, centre = _centring(query, bank, device)
    operands = functools.partial(parzen_operands.parzen_operands, centre=centre, precision=precision,
                                 width_multiple=padding["BLOCK_K"])
    query_operand, query_norms, dot_precision = operands(query, role="query", row_multiple=padding["BLOCK_M"])
    pieces = [grid[start:start + MAX_SIGMAS] for start in range(0, grid.size, MAX_SIGMAS)] or [grid[:0]]
    result = None
    for first in range(0, len(bank), bank_piece_rows):
        rows = bank[first:first + bank_piece_rows]
        # Whole BLOCK_N blocks and whole splits (both powers of two: the larger is a multiple of the other).
        bank_operand, bank_norms, _ = operands(rows, role="bank",
                                               row_multiple=max(SPLIT_ROWS_MULTIPLE, padding["BLOCK_N"]))
        launch = functools.partial(parzen_lse_launch, query_operand, bank_operand, query_norms, bank_norms,
                                   n_queries=len(query), n_bank=len(rows), dot_precision=dot_precision,
                                   rows_per_split=rows_per_split, blocks=blocks)
        piece = _sigma_pieces([_merge_splits(*launch(piece if piece.size else np.ones(1)), piece)
                               for piece in pieces], pieces)
        if first:  # a launch less for the first piece (and for every bank of one piece)
            piece.nearest_index += first
        result = piece if result is None else partials.merge(result, piece, grid)
    result.centred_query_norms = query_norms  # every piece shares the whole bank's centre
    return result


def _centring(query: torch.Tensor, bank: torch.Tensor, device: torch.device):
    """(query, bank, centre) for the operands kernel, which subtracts the centre itself.

    float32 data is centred in the kernel by the bank mean rounded to float32: the same vector
    leaves every distance unchanged and only shrinks the norms of the expanded form, so its own
    rounding does not matter. Other dtypes are centred here in float64 and rounded once
    (ganbench.scoring.centring.centre_by_bank_mean), with a zero centre for the kernel.
    """

    query, bank = query.to(device), bank.to(device)
    if query.dtype == torch.float32 and bank.dtype == torch.float32:
        return query, bank, bank.mean(dim=0)
    query32, bank32 = centre_by_bank_mean(query, bank, torch.float32, device)
    return query32, bank32, torch.zeros(bank.shape[1], dtype=torch.float32, device=device)


def _sigma_pieces(merged: list, pieces: list) -> partials.BankPartial:
    """One partial from passes over the same bank with different sigmas (more than 32 in all).

    Their float32 minima may differ in the last bits (each pass may be tuned to other tiles), so
    every pass's sums move to the smallest minimum, as partials.merge does.
    """
    if not pieces[0].size:  # nearest only: the pass ran with one stand-in sigma
        return partials.BankPartial(merged[0].min_sq_distance, merged[0].nearest_index,
                                    merged[0].shifted_sums[:0])
    if len(merged) == 1:  # one pass (up to 32 sigmas): nothing to move, and each factor below would be exactly 1
        return merged[0]
    minima = torch.stack([piece.min_sq_distance for piece in merged])
    first = minima.argmin(dim=0)  # lowest piece among ties
    common = minima.min(dim=0).values
    sums = [piece.shifted_sums * torch.exp(-(piece.min_sq_distance - common) * partials.half_inverse_variances(
        sigmas_piece, piece.shifted_sums)) for piece, sigmas_piece in zip(merged, pieces)]
    nearest = torch.stack([piece.nearest_index for piece in merged]).gather(0, first[None, :])[0]
    return partials.BankPartial(common, nearest, torch.cat(sums))


def _merge_splits(min_out, index_out, sums_out, sigmas) -> partials.BankPartial:
    """Second pass, in float64 on the device: all splits at once, as partials.merge does pairwise.

    Every split's sums move to the smallest minimum; the nearest index comes from the first
    split holding it (torch.min returns the first of equal minima), so ties keep the lower index.
    """
    sigmas = sigmas if len(sigmas) else np.ones(1)
    split_minima = min_out.double()
    minima, first = split_minima.min(dim=0)
    scales = partials.half_inverse_variances(sigmas, minima)
    factors = torch.exp(-(split_minima - minima)[:, None, :] * scales[None])  # (splits, S, n), <= 1
    sums = (sums_out.double() * factors).sum(dim=0)
    nearest = index_out.gather(0, first[None, :])[0].long()
    return partials.BankPartial(minima, nearest, sums)
