"""Fused Parzen pass for 8-bit queries: exact int8 tensor-core distances, a sigma grid's log-sum-exp, the nearest neighbour.

8-bit data are integers. A query x = (a + rho 2^-31) / 255 (a byte a, and float32's rounding rho of
a / 255; ``kernels/parzen_int8_operands.py``) and a bank row s in [0, 1] whose t = 255 s is rounded to
T = round(2^24 t) = T' + 2^31, T' in balanced base-256 digits q0..q3, give the squared distance in
integer units E = 2^24 255^2 D:

    E = R_x + C_s - 2 P,   P = 2^24 (a-128).q0 + 2^16 (a-128).q1 + 2^8 (a-128).q2 + (a-128).q3 + h.q0

with per-row int64 terms R_x, C_s (the exact norms and the shift corrections). Each product is an
int8 ``tl.dot`` with int32 accumulation over the whole width (|terms| <= 128 * 128, so exact for
d < 2^31 / 2^15 = 65,536), combined once per tile in int64: E is exact integer arithmetic, and
D = E / 2^24 255^2 is off only by the rounding of t to 2^-24 and the part of rho that h leaves out.
A bank whose low digits are all zero (8-bit values held in float64) takes one product a.q0 (plus
h.q0 when the queries carry float32 rounding): ``DIGITS`` and ``CORRECTION`` are compile-time.

For a block of queries against the bank, one program
- accumulates the int32 products over the width in BLOCK_K steps (one query tile; up to four digit tiles, or STACKED one);
- forms E in int64, masks columns past the split with 2^62;
- keeps one running integer minimum of E per row (the shift shared by every sigma), its argmin
  (lowest index among exact ties), and per sigma a float64 running sum of exp2((min - E) c),
  c = log2(e) / (2 sigma^2 2^24 255^2): the exponentials run in float32 on the exact integer
  difference, the tile's row sums are added in float64, and a new minimum rescales the sums with
  a float64 exp2 (BLOCK_M per tile and sigma);
- with UNBRANCHED (the default) skips nothing and rescales every sigma's sums in one branch a tile
  with a branch-free float64 exp2 (``_exp2_nonpositive``), so the grid is straight-line code the
  compiler can interleave. With UNBRANCHED off it instead skips, per sigma, a tile's exponentials
  when every term of every row is below e^-36 of its row's largest (since the running minimum only
  decreases, such a term stays below e^-36 of a sum >= 1), at the price of a branch per sigma (the
  skip, the rescale, libdevice's exp2): a sigma's exponentials cannot start until the previous
  sigma's reductions and float64 chain are done (``benchmarks/gpu_sass.py``). On MNIST at the
  shipped tile the skip leaves out only 2-6% of the tiles' exponentials (``benchmarks/skip_rates.py``),
  and on an H200 the straight-line grid was faster at every tile tried (3.26 against 3.39 ms at 16
  sigmas for separate products at 64 x 32, 3.10 against 3.29 stacked; ``benchmarks/gpu_breakdown.py
  --sweep-only``).

Error bound, per query and sigma, of log sum_j exp(-D_j / 2 sigma^2) against exact arithmetic on
the inputs as given (``per_point_bound`` computes it):
- distances: |E~ - E| <= sum_k (a_k + 1.004 |h_k| + 2 |l_k| + 2^-31 |rho_k|) + 2 (the rounding of
  t, |tau| <= 1/2, against a, twice; what h leaves out of rho, 0.502 |h| + |l|, twice; the two rounded
  norms) plus the norms' float64 sums (d + 1) 2^-53 2^24 255^2 (||x||^2 + ||s||^2). For a float64
  query off the byte grid by less than MAX_RHO, rho's own rounding adds 2 d 2^-32 / 255 in D.
  log-sum-exp is 1-Lipschitz, so this over 2^24 255^2 2 sigma^2, in nats;
- the sum S (>= 1: the nearest term is exactly 1) in float32 then float64: a tile's row sum of
  BLOCK_N terms in (0, 1] in any order, (BLOCK_N - 1) u of S; each exponent (min - E) c rounded three
  times (int64 to float32, c to float32, the product), 3 u alpha on a term e^-alpha, and
  sum_j alpha_j e^-alpha_j / S <= ln m (the entropy of the weights), so 3 u ln m; exp2's own
  2^-22 (4 u); the skipped terms, m e^-36 of S; float64 rescaling and additions, at most two
  events a tile of the bank (a rescale and an addition in the kernel; the splits' merges are fewer),
  each off by the exp2 (EXP2_ULPS), the product, the addition and the rounding of its exponent x
  (3 u |x| ln 2 of a part of S that weighs at most m 2^-|x|: <= 3 u ln 2 (log2 m + 1.5)), in units
  of 2^-53. The merges take their exponents from float64 distances rounded from E, off by
  2^-53 D / 2 sigma^2 at most, inside the distances' float64 term above.
  u = 2^-24.
On MNIST's 10,000 test images against 10,000 samples of the shipped generator (sum a <= 65,413,
sum |h| <= 8,012, sum |l| <= 3,539 per image; BLOCK_N <= 64) the bound is at most 9.0e-6 nats at
sigma = 0.1 (3.4e-6 from the distances, 5.6e-6 from the sums) and 1.9e-5 at sigma = 0.05, against
4e-5 nats at sigma = 0.1 for scoring a / 255 without rho.

The bank is split across programs (split-K over m) as in ``kernels/parzen_lse.py``, whose float64
merges of splits and sigma pieces this file reuses. Triton's tl.dot takes int8 but not uint8
("only int8 supported"), hence the shifted bytes and balanced digits.

File layout: kernel, float64 reference, launcher (checks, allocation, launch), public function.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl
from ganbench.kernels import launches, partial_tiles, parzen_lse, parzen_operands, prebuilt
from ganbench.kernels import parzen_int8_operands as operands

from ganbench.errors import GanbenchError
from ganbench.scoring import partials

MAX_SIGMAS = parzen_lse.MAX_SIGMAS
INTERPRETED = parzen_lse.INTERPRETED
LOG2_E = 1.4426950408889634
SKIP_NATS = 36.0                          # a term below e^-36 of its row's largest cannot change the sum
SKIP_LOG2 = tl.constexpr(SKIP_NATS * LOG2_E)
NOT_A_DISTANCE = tl.constexpr(2**62)      # columns past the split; above any E (d < 65,536 keeps E < 2^57)
MAX_WIDTH = 65_535                        # 2 x 128 x 128 x width < 2^31: the int32 accumulators are exact
WIDTH_MULTIPLE = 64                       # operand blocks are padded to whole BLOCK_K of every candidate
INTERPRETER_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32}
BANK_PIECE_ROWS = parzen_lse.BANK_PIECE_ROWS
SPLIT_ROWS_MULTIPLE = parzen_lse.SPLIT_ROWS_MULTIPLE
UNIT_ROUNDOFF_FLOAT32 = 2.0**-24
TILE_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K")
# Where the queries' and the bank's operands report (``parzen_int8_operands``) in a queued counts tensor.
QUERY_REPORT = slice(0, operands.COUNT_SLOTS)
BANK_REPORT = slice(operands.COUNT_SLOTS, 2 * operands.COUNT_SLOTS)


class NotInt8Data(GanbenchError):
    """Queries that are not 8-bit, or a bank outside [0, 1]: precision ``auto`` then scores with tf32x3."""


# 2^f = sum_k (f ln 2)^k / k! on |f| <= 1/2, to degree 13 (highest first, for Horner's rule): the first
# term left out is (ln(2) / 2)^14 / 14! < 5e-18.
EXP2_TAYLOR = tl.constexpr(tuple(math.log(2.0) ** k / math.factorial(k) for k in range(13, -1, -1)))
EXP2_TERMS = tl.constexpr(len(EXP2_TAYLOR.value))
ROUNDING_MAGIC = tl.constexpr(6755399441055744.0)        # 1.5 2^52: x + it - it rounds x to an integer
ROUNDING_MAGIC_BITS = tl.constexpr(0x4338000000000000)   # its bits; those of x + it exceed them by round(x)
EXP2_ULPS = 11                                           # |_exp2_nonpositive(x) / 2^x - 1| <= 11 2^-53 (below)


@triton.jit
def _exp2_nonpositive(x):
    """2^x for float64 x <= 0 with no branch (libdevice's exp2 branches for large |x|), 0 below 2^-1022.

    n = round(x) and f = x - n are exact (|x| < 2^51), |f| <= 1/2; 2^f by Horner's rule on the Taylor
    series, 2^n by writing the exponent's bits (n + 1023 >= 1: a normal number, so the product is 2^f
    rounded once, or exact). Error of 2^f, in u = 2^-53: the truncation, 0.05 u; each of the 13 steps
    rounds twice (a multiply and an add, once when fused) a value of size <= 1.5, and the later steps
    scale that by |f|^k <= 2^-k: <= 2 * 1.5 u * 2 = 6 u; the rounded coefficients, u sum |c_k f^k|
    <= 1.42 u. Over 2^f >= 0.707: <= 10.6 u, hence EXP2_ULPS = 11.
    """
    clamped = tl.maximum(x, -1022.0)   # keeps n + 1023 >= 1 and every intermediate finite (the result is 0 there)
    rounded = clamped + ROUNDING_MAGIC
    n = rounded - ROUNDING_MAGIC
    f = clamped - n
    p = tl.full(f.shape, EXP2_TAYLOR[0], tl.float64)
    for k in tl.static_range(1, EXP2_TERMS):
        p = p * f + EXP2_TAYLOR[k]
    exponent = rounded.to(tl.int64, bitcast=True) - ROUNDING_MAGIC_BITS + 1023   # n + 1023 >= 1: a normal 2^n
    return tl.where(x < -1022.0, 0.0, p * (exponent << 52).to(tl.float64, bitcast=True))


@triton.jit
def _stacked_offsets(bank_offsets, stride_bank_row, width, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     STACKED: tl.constexpr):
    """Where a STACKED tile's (BLOCK_K, 4 BLOCK_N) bank operand lies; ``bank_offsets`` when not stacked."""
    if STACKED:
        # The four digit blocks of a tile's BLOCK_N bank rows as one (BLOCK_K, 4 BLOCK_N) operand: one
        # product a step instead of four (Triton 3.6 waits for each int8 product before the next; this
        # one is four times as wide). Column c = 8 g + 2 t + e holds digit 2 (g % 2) + e of bank row
        # 4 (g // 2) + t: a thread of the tensor cores' accumulator holds columns 2 t and 2 t + 1 of
        # every eight, so each bank row's four digits land in one thread, and splitting them out
        # moves no data (ptxas for sm_90: no shared-memory round trip).
        stacked = tl.arange(0, 4 * BLOCK_N)
        stacked_offsets = ((stacked // 16) * 4 + (stacked % 8) // 2)[None, :] * stride_bank_row \
            + (((stacked // 8) % 2) * 2 + stacked % 2)[None, :] * width + tl.arange(0, BLOCK_K)[:, None]
    else:
        stacked_offsets = bank_offsets
    return stacked_offsets


@triton.jit
def _tile_distances(query_block_ptr, query_offsets, bank_ptr, bank_start, split_end, bank_offsets, stacked_offsets,
                   query_terms, bank_terms_ptr, local_columns, width, stride_bank_row,
                   DIGITS: tl.constexpr, CORRECTION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr, STACKED: tl.constexpr):
    """The exact integer distances E (int64, BLOCK_M x BLOCK_N) of a query block against the bank rows from
    ``bank_start``; columns at or past ``split_end`` hold NOT_A_DISTANCE. The module docstring's products,
    combined in int64."""
    bank_block_ptr = bank_ptr + bank_start.to(tl.int64) * stride_bank_row
    if DIGITS == 4 and STACKED:
        all_digits = tl.zeros([BLOCK_M, 4 * BLOCK_N], tl.int32)   # (a - 128).q_d, columns as above
        low = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)              # h.q0
        for k_start in range(0, width, BLOCK_K):
            queries = tl.load(query_block_ptr + query_offsets + k_start)
            all_digits = tl.dot(queries, tl.load(bank_block_ptr + stacked_offsets + k_start), all_digits,
                                out_dtype=tl.int32)
            if CORRECTION:
                highs = tl.load(query_block_ptr + query_offsets + width + k_start)
                low = tl.dot(highs, tl.load(bank_block_ptr + bank_offsets + k_start), low, out_dtype=tl.int32)
        by_row = tl.permute(all_digits.reshape(BLOCK_M, BLOCK_N // 4, 2, 4, 2), (0, 1, 3, 2, 4))
        even, odd = tl.split(by_row.reshape(BLOCK_M, BLOCK_N, 2, 2))   # digits 0 and 2, 1 and 3
        high0, high2 = tl.split(even)
        high1, digit3 = tl.split(odd)
        low += digit3   # |(a - 128).q3| and |h.q0| <= 128 * 128 * 65,535 each: the int32 sum is exact
    else:
        high0 = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)   # (a - 128).q0
        high1 = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)   # (a - 128).q1
        high2 = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)   # (a - 128).q2
        low = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)     # (a - 128).q3 + h.q0: both weigh 1
        for k_start in range(0, width, BLOCK_K):
            queries = tl.load(query_block_ptr + query_offsets + k_start)   # (BLOCK_M, BLOCK_K) int8
            digits = bank_block_ptr + bank_offsets + k_start              # (BLOCK_K, BLOCK_N) int8 each
            digit0 = tl.load(digits)
            high0 = tl.dot(queries, digit0, high0, out_dtype=tl.int32)
            if DIGITS == 4:
                high1 = tl.dot(queries, tl.load(digits + width), high1, out_dtype=tl.int32)
                high2 = tl.dot(queries, tl.load(digits + 2 * width), high2, out_dtype=tl.int32)
                low = tl.dot(queries, tl.load(digits + 3 * width), low, out_dtype=tl.int32)
            if CORRECTION:
                highs = tl.load(query_block_ptr + query_offsets + width + k_start)
                low = tl.dot(highs, digit0, low, out_dtype=tl.int32)
    products = high0.to(tl.int64) * 16777216
    if DIGITS == 4:
        products += high1.to(tl.int64) * 65536 + high2.to(tl.int64) * 256
    if DIGITS == 4 or CORRECTION:
        products += low.to(tl.int64)
    columns = bank_start + local_columns
    column_ok = columns < split_end
    bank_terms = tl.load(bank_terms_ptr + columns, mask=column_ok, other=0)
    distances = query_terms[:, None] + bank_terms[None, :] - 2 * products   # E, exact int64
    return tl.where(column_ok[None, :], distances, NOT_A_DISTANCE)


# The row counts bound the masks and offset the partials' stores (once a row a split): not specialized on,
# so one compiled kernel (and one shipped with ganbench, kernels/prebuilt.py) serves every n and m.
@triton.jit(do_not_specialize=["n_queries", "n_bank", "query_bucket", "bank_bucket"])
def _parzen_int8_kernel(
    # pointers
    query_ptr, bank_ptr, query_terms_ptr, bank_terms_ptr, scale32_ptr, scale64_ptr,
    min_out_ptr, index_out_ptr, sums_out_ptr,
    # sizes: operands are padded (rows to whole blocks, each digit block to whole BLOCK_K), so loads need no mask
    n_queries, n_bank, width, rows_per_split,
    stride_query_row, stride_bank_row,
    # the autotuning key only: n and m rounded up to a power of two, so a new size does not re-tune
    query_bucket, bank_bucket,
    # meta-parameters
    NUM_SIGMAS: tl.constexpr, DIGITS: tl.constexpr, CORRECTION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STACKED: tl.constexpr = False,
    UNBRANCHED: tl.constexpr = True,
):
    tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16, "tl.dot needs tiles of at least 16 x 16")
    tl.static_assert(BLOCK_K >= 32, "int8 tensor-core products take K in steps of 32")
    tl.static_assert(DIGITS == 1 or DIGITS == 4, "the bank is one digit (8-bit values) or four")
    split, rows, row_ok, local_columns, query_block_ptr, query_offsets, bank_offsets, split_start, split_end = \
        partial_tiles.program_tile(query_ptr, n_queries, n_bank, rows_per_split, stride_query_row, stride_bank_row,
                                   BLOCK_M, BLOCK_N, BLOCK_K)
    query_terms = tl.load(query_terms_ptr + rows, mask=row_ok, other=0)

    # Per sigma a float64 running sum. The scales log2(e) / (2 sigma^2 2^24 255^2), float32 for the tile
    # and float64 for rescaling the sums, are read where they are used: held in registers for the
    # whole pass they made every 16-sigma tile spill (ptxas for sm_90).
    sums = ()
    for _ in tl.static_range(NUM_SIGMAS):
        sums = sums + (tl.zeros([BLOCK_M], tl.float64),)
    running_min = tl.full([BLOCK_M], NOT_A_DISTANCE, tl.int64)
    running_index = tl.zeros([BLOCK_M], tl.int32)
    stacked_offsets = _stacked_offsets(bank_offsets, stride_bank_row, width, BLOCK_N, BLOCK_K, DIGITS == 4 and STACKED)

    for block in range(0, tl.cdiv(rows_per_split, BLOCK_N)):
        bank_start = split_start + block * BLOCK_N
        if bank_start < split_end:
            distances = _tile_distances(query_block_ptr, query_offsets, bank_ptr, bank_start, split_end, bank_offsets,
                                       stacked_offsets, query_terms, bank_terms_ptr, local_columns, width,
                                       stride_bank_row, DIGITS, CORRECTION, BLOCK_M, BLOCK_N, BLOCK_K, STACKED)
            block_min, new_min, running_index = partial_tiles.fold_row_minima(distances, running_min, running_index,
                                                                              bank_start)
            if NUM_SIGMAS > 0:
                # Exact integer differences, rounded once to float32 for the exponentials.
                shifted = (new_min[:, None] - distances).to(tl.float32)   # <= 0, shared by every sigma
                if bank_start + BLOCK_N > split_end:
                    # The split's last tile: columns past it are no samples. Their NOT_A_DISTANCE keeps
                    # them from every minimum, but at a large enough sigma (~500 for 8-bit data) its
                    # term exp2(-2^62 c) is not 0: -inf makes it 0 at every sigma.
                    shifted = tl.where(local_columns[None, :] < split_end - bank_start, shifted, float("-inf"))
                drop = (running_min - new_min).to(tl.float64)              # >= 0; huge on the first block
                # The tile's smallest gap between a row's terms and its running minimum (rows that exist):
                # when it is 0 some row gained a new minimum, so nothing is skipped and no sum needs rescaling.
                gap = tl.min(tl.where(row_ok, block_min - new_min, NOT_A_DISTANCE), axis=0).to(tl.float32)
                if UNBRANCHED:
                    # The whole grid as straight-line code, so the compiler can overlap one sigma's
                    # exponentials with another's reductions: one branch a tile for rescaling (every
                    # sigma's factor from a branch-free exp2), and no per-sigma skip.
                    if gap == 0:
                        rescaled = ()
                        for sigma in tl.static_range(NUM_SIGMAS):
                            factor = _exp2_nonpositive(-drop * tl.load(scale64_ptr + sigma))
                            rescaled = rescaled + (sums[sigma] * factor,)
                        sums = rescaled
                    moved = ()
                    for sigma in tl.static_range(NUM_SIGMAS):
                        terms = tl.exp2(shifted * tl.load(scale32_ptr + sigma))
                        moved = moved + (sums[sigma] + tl.sum(terms, axis=1).to(tl.float64),)
                    sums = moved
                else:
                    moved = ()
                    for sigma in tl.static_range(NUM_SIGMAS):
                        total = sums[sigma]
                        scale32 = tl.load(scale32_ptr + sigma)
                        if gap == 0:
                            # Some row has a new minimum: every sum moves to its row's (a factor of 1 where
                            # the minimum stayed). Otherwise no minimum moved and the float64 exp2 is skipped.
                            total = total * tl.exp2(-drop * tl.load(scale64_ptr + sigma))
                        if gap * scale32 <= SKIP_LOG2:
                            total = total + tl.sum(tl.exp2(shifted * scale32), axis=1).to(tl.float64)
                        moved = moved + (total,)
                    sums = moved
            running_min = new_min

    partial_tiles.store_partials(min_out_ptr, index_out_ptr, sums_out_ptr, split, n_queries, rows, row_ok,
                                 running_min, running_index, sums, NUM_SIGMAS)


# Candidate tiles (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages). While the K loop runs, the four
# digit accumulators of the (M, N) tile are int32 registers, then the int64 distances. Compiled
# offline for sm_90 (ptxas, no GPU), a four-digit tile spills at 16 sigmas unless it keeps at most 16
# of its elements per thread: 64 x 32 with 4 warps takes 249 registers and no spill (204 for a
# nearest-only pass; 32 sigmas spill 356 bytes), and one digit runs 64 x 64 with 4 warps in 233-244.
# Shared memory holds (2 BLOCK_M + 4 BLOCK_N) BLOCK_K bytes a stage.
# A four-digit tile is also tried STACKED (its four digit products as one, four times as wide): on an
# H200 it beat the separate products at most tiles, and at 64 x 32 with 4 warps the two traded places
# between two sweeps (3.10 against 3.26 ms at 16 sigmas, then 3.27 against 3.16); ptxas spills 16
# bytes there with the branched epilogue, 8 with the unbranched one (results/int8-sass-sm_90.json).
TUNING_CANDIDATES = [
    (64, 32, 64, 4, 3), (64, 32, 64, 4, 4), (128, 32, 64, 8, 3),   # any bank
    (64, 64, 64, 4, 3), (128, 64, 64, 8, 3),                         # one digit (8-bit banks) only
]
DIGIT_LAYOUTS = ({"STACKED": False}, {"STACKED": True})
FOUR_DIGIT_ELEMENTS_PER_THREAD = 16


def _prune_configs(configs, named_args, **kwargs):
    """Four-digit banks keep only the tiles whose accumulators fit in registers, each stacked and
    separate; a one-digit bank has no stacked layout (its one product is the same either way)."""
    if named_args.get("DIGITS", kwargs.get("DIGITS")) != 4:
        return [config for config in configs if not config.kwargs["STACKED"]]
    return [config for config in configs if config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_N"]
            <= FOUR_DIGIT_ELEMENTS_PER_THREAD * 32 * config.num_warps]


# Keyed on rounded sizes, and cache_results keeps the choice on disk: a new n or m in the same
# power-of-two range reuses the tuned tile, in this process and the next.
_parzen_int8_autotuned = triton.autotune(
    configs=partial_tiles.autotune_configs(TUNING_CANDIDATES, DIGIT_LAYOUTS),
    key=["query_bucket", "bank_bucket", "width", "NUM_SIGMAS", "DIGITS", "CORRECTION"],
    prune_configs_by={"early_config_prune": _prune_configs},
    cache_results=True)(_parzen_int8_kernel)
MAX_BLOCKS = {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64}  # the largest tile of any config: operands pad to it


# ---- float64 reference -----------------------------------------------------------------------------

def parzen_int8_reference(query: torch.Tensor, bank: torch.Tensor, sigmas) -> tuple[partials.BankPartial, torch.Tensor]:
    """What the kernel computes, from the reference operands in exact int64 arithmetic, then float64.

    Returns the partial (min squared distance, nearest index, shifted sums, all float64 on the
    CPU) and the integer distances E (n, m). The kernel's E agree up to the order of the two norms'
    float64 sums (``norm_units``). For tests (memory n x m).
    """
    query_blocks, query_terms, _, _ = operands.int8_operands_reference(query.cpu(), "query")
    bank_blocks, bank_terms, _, _ = operands.int8_operands_reference(bank.cpu(), "bank")
    shifted_bytes, high = query_blocks
    products = sum(2 ** (24 - 8 * k) * (shifted_bytes @ digit.T) for k, digit in enumerate(bank_blocks))
    products = products + high @ bank_blocks[0].T
    distances = query_terms[:, None] + bank_terms[None, :] - 2 * products   # (n, m) int64
    minima, nearest = distances.min(dim=1)  # first index among ties
    scaled = (distances - minima[:, None]).double() / operands.DISTANCE_SCALE
    scales = partials.half_inverse_variances(sigmas, scaled)
    sums = torch.stack([torch.exp(-scaled * scale).sum(1) for scale in scales[:, 0]]) if len(scales) \
        else scaled.new_zeros((0, len(query)))
    return partials.BankPartial(minima.double() / operands.DISTANCE_SCALE, nearest, sums), distances


def norm_units(query, bank) -> torch.Tensor:
    """Per query, how far the kernel's E may be from the reference's: the two rounded norms (1 each)
    and their float64 sums in another order, (d + 1) 2^-53 2^24 255^2 (||x||^2 + max ||s||^2)."""
    query64, bank64 = torch.as_tensor(query).double().cpu(), torch.as_tensor(bank).double().cpu()
    norms = query64.pow(2).sum(1) + bank64.pow(2).sum(1).max()
    return 2 + (query64.shape[1] + 1) * 2.0**-53 * operands.DISTANCE_SCALE * norms


def per_point_bound(query, bank, sigmas, block_n: int = MAX_BLOCKS["BLOCK_N"]) -> np.ndarray:
    """The module docstring's bound on |kernel - exact| of log-sum-exp, (S, n) in nats, from the inputs."""
    query64 = torch.as_tensor(query).double().cpu()
    bank64 = torch.as_tensor(bank).double().cpu()
    byte, rho, rho_exact = operands.query_split(query64)
    high = operands.high_byte(rho)
    leftover = (rho - 128 * high).abs()
    units = (byte + 1.004 * high.abs() + 2 * leftover + 2.0**-31 * rho.abs()).sum(1) + 2
    dimension = query64.shape[1]
    norms = query64.pow(2).sum(1) + bank64.pow(2).sum(1).max()
    distance = (units / operands.DISTANCE_SCALE + (dimension + 1) * 2.0**-53 * norms
                + 2 * (rho_exact - rho).abs().sum(1) * 2.0**-31 / 255)          # in D
    grid = np.asarray(sigmas, dtype=np.float64).reshape(-1, 1)
    rows = len(bank64)
    rescalings = 2 * math.ceil(rows / block_n) * (EXP2_ULPS + 2 + 3 * math.log(2) * (math.log2(rows) + 1.5))
    sums = ((block_n - 1 + 3 * math.log(rows) + 4) * UNIT_ROUNDOFF_FLOAT32 + rows * math.exp(-SKIP_NATS)
            + rescalings * 2.0**-53)
    return distance.numpy()[None, :] / (2 * grid**2) + sums


# ---- launcher --------------------------------------------------------------------------------------

def check_tiles(blocks: dict, width: int) -> None:
    """One-line errors for tiles the kernel cannot run (its static_asserts say the same at compile time)."""
    for key in TILE_KEYS:
        value = blocks.get(key)
        if not isinstance(value, int) or value < 1 or value & (value - 1):
            raise GanbenchError(f"tile {key} must be a power of two, got {value!r}")
    if blocks["BLOCK_M"] < 16 or blocks["BLOCK_N"] < 16 or blocks["BLOCK_K"] < 32:
        raise GanbenchError(f"tiles need BLOCK_M, BLOCK_N >= 16 and BLOCK_K >= 32, got {blocks}")
    if width % blocks["BLOCK_K"]:
        raise GanbenchError(f"BLOCK_K = {blocks['BLOCK_K']} must divide the operand width {width}")


def parzen_int8_launch(query: torch.Tensor, bank: torch.Tensor, query_terms: torch.Tensor, bank_terms: torch.Tensor,
                       sigmas, *, n_queries: int, n_bank: int, width: int, digits: int, correction: bool,
                       rows_per_split: int | None = None, blocks: dict | None = None):
    """Check, allocate, launch. Returns per-split (integer minima E int64, index int32, shifted sums float64).

    ``query`` and ``bank`` are int8 operands from ``parzen_int8_operands`` ([a - 128 | h] and
    [q0 | q1 | q2 | q3], each block ``width`` wide); ``digits`` (1 or 4) bank blocks are read and
    ``correction`` adds h.q0. ``blocks`` (BLOCK_M, BLOCK_N, BLOCK_K; optionally num_warps,
    num_stages, STACKED, UNBRANCHED), when given, replaces autotuning.
    """
    if query.dtype != torch.int8 or bank.dtype != torch.int8:
        raise GanbenchError(f"operands must be int8, got {query.dtype} and {bank.dtype}")
    if query_terms.dtype != torch.int64 or bank_terms.dtype != torch.int64:
        raise GanbenchError("row terms must be int64")
    for name, tensor in (("bank", bank), ("query_terms", query_terms), ("bank_terms", bank_terms)):
        if tensor.device != query.device:
            raise GanbenchError(f"{name} is on {tensor.device} but query is on {query.device}")
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != operands.QUERY_BLOCKS * width \
            or bank.shape[1] != operands.BANK_BLOCKS * width or query.stride(1) != 1 or bank.stride(1) != 1:
        raise GanbenchError(f"query {tuple(query.shape)} and bank {tuple(bank.shape)} must be contiguous "
                            f"(n, 2 x {width}) and (m, 4 x {width}): build them with parzen_int8_operands")
    if not 1 <= width <= MAX_WIDTH:
        raise GanbenchError(f"the int8 kernel takes up to {MAX_WIDTH} columns (exact int32 sums), got {width}")
    if query_terms.shape != (n_queries,) or bank_terms.shape != (n_bank,):
        raise GanbenchError("row terms must be one per row of query and bank")
    if digits not in (1, 4):
        raise GanbenchError(f"digits must be 1 or 4, got {digits}")
    # No tiles asked for: the shipped tile of this GPU, else autotuning over the candidates.
    blocks = blocks or partial_tiles.shipped_tiles("int8", query.device)
    tiles = blocks or MAX_BLOCKS
    check_tiles(tiles, width)
    if (query.shape[0] < triton.cdiv(n_queries, tiles["BLOCK_M"]) * tiles["BLOCK_M"]
            or bank.shape[0] < triton.cdiv(n_bank, tiles["BLOCK_N"]) * tiles["BLOCK_N"]):
        raise GanbenchError("operands must be padded to whole blocks: build them with parzen_int8_operands")
    grid_sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if grid_sigmas.size > MAX_SIGMAS:
        raise GanbenchError(f"the kernel takes up to {MAX_SIGMAS} sigmas per pass, got {grid_sigmas.size}")
    device = query.device
    parzen_operands.check_launch("int8", device)
    rows_per_split = rows_per_split or parzen_lse._split_rows(n_queries, n_bank, device, tiles["BLOCK_N"])
    if rows_per_split % tiles["BLOCK_N"]:
        raise GanbenchError("rows_per_split must be a multiple of BLOCK_N")
    call, outputs = parzen_int8_call(query, bank, query_terms, bank_terms, grid_sigmas, n_queries=n_queries,
                                     n_bank=n_bank, width=width, digits=digits, correction=correction,
                                     rows_per_split=rows_per_split, tiles=tiles)
    if blocks is None and not INTERPRETED:
        call.launch_tuned(_parzen_int8_autotuned, n_queries, AUTOTUNED_META)
    else:
        call.launch()
    return outputs


AUTOTUNED_META = ("NUM_SIGMAS", "DIGITS", "CORRECTION")  # the autotuner adds the tiles and launch options


def parzen_int8_call(query: torch.Tensor, bank: torch.Tensor, query_terms: torch.Tensor, bank_terms: torch.Tensor,
                     sigmas: np.ndarray, *, n_queries: int, n_bank: int, width: int, digits: int, correction: bool,
                     rows_per_split: int, tiles: dict):
    """The launch ``parzen_int8_launch`` makes with ``tiles`` (BLOCK_M, BLOCK_N, BLOCK_K, optionally
    num_warps and num_stages), its outputs allocated: (call, (min_out, index_out, sums_out))."""
    device = query.device
    splits = triton.cdiv(n_bank, rows_per_split)
    scales = partials.half_inverse_variances(sigmas, np.zeros(1), factor=LOG2_E)[:, 0] / operands.DISTANCE_SCALE
    scale32 = partials.device_constant(scales, torch.float32, device)
    scale64 = partials.device_constant(scales, torch.float64, device)
    min_out = torch.empty(splits, n_queries, dtype=torch.int64, device=device)
    index_out = torch.empty(splits, n_queries, dtype=torch.int32, device=device)
    sums_out = torch.empty(splits, sigmas.size, n_queries, dtype=torch.float64, device=device)
    arguments = (query, bank, query_terms, bank_terms, scale32, scale64, min_out, index_out, sums_out,
                 n_queries, n_bank, width, rows_per_split, query.stride(0), bank.stride(0),
                 partial_tiles.bucket(n_queries), partial_tiles.bucket(n_bank))
    meta = {"NUM_SIGMAS": sigmas.size, "DIGITS": digits, "CORRECTION": bool(correction), **tiles}
    grid = (triton.cdiv(n_queries, tiles["BLOCK_M"]), splits)
    return launches.KernelCall(_parzen_int8_kernel, grid, arguments, meta), (min_out, index_out, sums_out)


# ---- public function -------------------------------------------------------------------------------

@dataclass
class QueuedOperands:
    """The int8 operands of the queries and of the bank's first piece, their kernels queued, not waited for.

    ``counts`` (int64, on the device): the queries' report (``parzen_int8_operands``: entries off the
    byte grid, entries needing h, the largest |value|) in slots QUERY_REPORT, the first piece's (values
    outside [0, 1], values needing four digits, the largest |value|) in BANK_REPORT; NaN and inf are
    off the grid and outside. ``ganbench.scoring.parzen`` reads them in its one wait before the Parzen
    kernel (its range check too); ``parzen_partial_int8`` decides from them.
    """

    query: torch.Tensor | None
    query_terms: torch.Tensor | None
    width: int
    bank: torch.Tensor | None      # the first piece's operand: the bank goes in pieces of piece_rows rows
    bank_terms: torch.Tensor | None
    first_rows: int
    counts: torch.Tensor
    piece_rows: int

    def release(self) -> None:
        """Drop the operands (a bank piece's holds 4 bytes a value): once taken by the launches, or when
        the call scores another way."""
        self.query = self.query_terms = self.bank = self.bank_terms = None


def queue_operands(query: torch.Tensor, bank: torch.Tensor, *, device: torch.device, blocks: dict | None = None,
                   bank_piece_rows: int = BANK_PIECE_ROWS) -> QueuedOperands:
    """Queue the operands kernels for ``query`` and the first ``bank_piece_rows`` rows of ``bank``."""
    blocks = blocks or (INTERPRETER_BLOCKS if INTERPRETED else MAX_BLOCKS)
    parzen_operands.check_launch("int8", device)
    prebuilt.install(device)  # on sm_90 the kernels ship compiled (a cold start loads them)
    counts = torch.zeros(2 * operands.COUNT_SLOTS, dtype=torch.int64, device=device)
    query_operand, query_terms, _, width = operands.int8_operands_launch(
        _floating(query).to(device), "query", blocks["BLOCK_M"], WIDTH_MULTIPLE, INTERPRETED, counts[QUERY_REPORT])
    rows, bank_operand, bank_terms, _ = _bank_piece(bank, 0, bank_piece_rows, device, counts[BANK_REPORT])
    return QueuedOperands(query_operand, query_terms, width, bank_operand, bank_terms, rows, counts, bank_piece_rows)


def _bank_piece(bank: torch.Tensor, first: int, piece_rows: int, device: torch.device,
                counts: torch.Tensor | None = None):
    """The operands kernel queued for the bank's rows from ``first`` (at most ``piece_rows``):
    (rows, operand, row terms, counts on the device)."""
    rows = _floating(bank[first:first + piece_rows]).to(device)
    operand, terms, counts, _ = operands.int8_operands_launch(rows, "bank", SPLIT_ROWS_MULTIPLE, WIDTH_MULTIPLE,
                                                              INTERPRETED, counts)
    return len(rows), operand, terms, counts


def parzen_partial_int8(query: torch.Tensor, bank: torch.Tensor, sigmas, *, device: torch.device,
                        rows_per_split: int | None = None, blocks: dict | None = None,
                        bank_piece_rows: int = BANK_PIECE_ROWS, queued: QueuedOperands | None = None,
                        counts: list[int] | None = None) -> partials.BankPartial:
    """The triton backend's ``int8`` precision: the whole bank's partial, float64, on ``device``.

    ``query`` must be 8-bit (``parzen_int8_operands.is_8bit``) and ``bank`` in [0, 1]; otherwise a
    one-line error says to use tf32x3. The bank goes through in pieces of ``bank_piece_rows`` rows,
    merged exactly in float64; ``ganbench.scoring.parzen.finish_pass`` finishes it as for tf32x3.
    ``queued`` (from ``queue_operands`` on the same query and bank) and its ``counts`` read as a list,
    when given, are used instead of queuing and reading them here (its piece size then cuts the bank);
    it is released either way.
    """
    if blocks is None and INTERPRETED:
        blocks = INTERPRETER_BLOCKS
    grid = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if queued is None:
        queued = queue_operands(query, bank, device=device, blocks=blocks, bank_piece_rows=bank_piece_rows)
        counts = queued.counts.tolist()  # the one wait before the kernel: every decision below needs these
    query_operand, query_terms, width = queued.query, queued.query_terms, queued.width
    first_piece = (queued.first_rows, queued.bank, queued.bank_terms)
    bank_piece_rows = queued.piece_rows
    queued.release()
    query_report, bank_report = counts[QUERY_REPORT], counts[BANK_REPORT]
    if query_report[operands.REFUSED]:
        raise NotInt8Data(f"precision int8 needs 8-bit queries (every value a / 255 for a byte a, as MNIST's); "
                          f"{query_report[operands.REFUSED]} values are not: use --precision tf32x3 (or auto)")
    correction = bool(query_report[operands.EXTENDED])
    pieces = [grid[start:start + MAX_SIGMAS] for start in range(0, grid.size, MAX_SIGMAS)] or [grid[:0]]
    result = None
    for first in range(0, len(bank), bank_piece_rows):
        if first:
            rows, bank_operand, bank_terms, piece_counts = _bank_piece(bank, first, bank_piece_rows, device)
            bank_report = piece_counts.tolist()
        else:
            (rows, bank_operand, bank_terms), first_piece = first_piece, None
        outside, low_digits = bank_report[operands.REFUSED], bank_report[operands.EXTENDED]
        if outside:
            raise NotInt8Data(f"precision int8 needs bank values in [0, 1]; {outside} are outside: "
                              "use --precision tf32x3 (or auto)")
        launch = lambda piece: parzen_int8_launch(  # noqa: E731
            query_operand, bank_operand, query_terms, bank_terms, piece, n_queries=len(query), n_bank=rows,
            width=width, digits=4 if low_digits else 1, correction=correction, rows_per_split=rows_per_split,
            blocks=blocks)
        merged = [parzen_lse._merge_splits(*_in_distance_units(*launch(piece)), piece) for piece in pieces]
        piece = parzen_lse._sigma_pieces(merged, pieces)
        if first:  # a launch less for the first piece (and for every bank of one piece)
            piece.nearest_index += first
        result = piece if result is None else partials.merge(result, piece, grid)
    return result


def _floating(values: torch.Tensor) -> torch.Tensor:
    """float32 and float64 go to the operands kernel as they are (its rule reads their exact values)."""
    return values if values.dtype in (torch.float32, torch.float64) else values.double()


def _in_distance_units(min_out, index_out, sums_out):
    """Integer minima E to squared distances D = E / 2^24 255^2 (float64, one rounding)."""
    return min_out.double() / operands.DISTANCE_SCALE, index_out, sums_out
