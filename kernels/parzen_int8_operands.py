"""The int8 Parzen kernel's operands in one pass: 8-bit queries as bytes, a bank in [0, 1] as four bytes.

``kernels/parzen_int8.py`` computes x.s with int8 tensor-core products. Its operands:

Queries (8-bit data: MNIST's x = a / 255 for a byte a). In float32, a / 255 is rounded, so a
query coordinate is x = (a + rho 2^-31) / 255 with rho = 2^31 (255 x - a) an integer, |rho| <= 16320
(255 x is exact in float64 and x a multiple of 2^-31 on [2^-8, 1]; half an ulp of x < 1 is 2^-25, and
255 * 2^-25 * 2^31 = 16320). Scoring a / 255 instead of the float32 values would move MNIST's
log-likelihoods by 4e-5 nats at sigma = 0.1, four times the error allowed, so rho stays, split as
rho = 128 h + l with h rounded half towards zero (|h| <= 127, |l| <= 64). A query row is stored as

    [a - 128 | h]                   two int8 blocks of ``width`` columns (tl.dot takes int8, not uint8).

Rule (``is_8bit``): x is 8-bit when every coordinate has a = round(255 x) in 0..255,
|rho| = |round(2^31 (255 x - a))| <= 16320 (255 x within 7.6e-6 of a byte), and the rounding of rho
is below 2^-30 of 2^31 255 x, the coordinate itself: float32 and float64 copies of a / 255 qualify,
and so does any value of that form (their rho is exact, or off by float64's rounding). The last
condition only bites where a = 0: a coordinate that is not 0 but rounds to byte 0 and rho 0 (data
of scale 1e-17, say) would be scored as 0, a relative error of 1, so such data are not 8-bit.

Bank rows s in [0, 1]: t = 255 s (exact in float64 for float32 s) is rounded to the fixed point
T = round(2^24 t) in [0, 255 * 2^24], and T' = T - 2^31 (a signed 32-bit integer) is written in
balanced base-256 digits q_k in -128..127, T' = sum_k 256^(3 - k) q_k:

    [q0 | q1 | q2 | q3]             four int8 blocks of ``width`` columns.

A bank of 8-bit values held in float64 has q1 = q2 = q3 = 0 (one product is then exact); in
float32 its rounding of b / 255 sits in q3.

Row terms (int64), so that the kernel's integer distance E = 2^24 255^2 D is
    E = R_x + C_s - 2 (sum_k 256^(3 - k) (a - 128).q_k + h.q0):
    R_x = round(2^24 255^2 ||x||^2) - 2 (2^31 sum a + sum rho),
    C_s = round(2^24 255^2 ||s||^2) - 256 sum T',
from a.T = (a - 128).T' + 128 sum T' + 2^31 sum a, and 2^-31 rho.T = h.q0 + sum rho + (what h.q0 leaves
out: 2^-31 (128 h (T' - 2^24 q0) + l T'), at most 0.502 |h| + |l| a coordinate; see parzen_int8's bound).
Norms are float64 sums of the exact squares of the inputs, rounded once to an integer.

The kernel also reports, over all rows, what the launch depends on: the entries that cannot be
represented (a query off the byte grid, a bank value outside [0, 1]; NaN and inf are both), the
entries needing more than the first block (h != 0; q1, q2 or q3 != 0), and the largest |value| as the
bits of its float64 (non-negative floats order as their bits do, NaN above inf above every number),
so the caller knows whether to refuse, how many products the kernel needs, and the inputs' range
without a reduction of its own. They go by atomic adds and maxima into COUNT_SLOTS int64 slots the
caller chooses (``REFUSED``, ``EXTENDED``, ``LARGEST_BITS``), so the queries' and the bank's share one
tensor and reach the host with one wait.

It writes every byte of the operand, the zeros of the padding too (columns d..width of each block,
rows past the data), so the operand needs no zeroing launch before it.

File layout: kernel, reference (torch, integer arithmetic), launcher, public function.
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl
from ganbench.kernels import launches

from ganbench.errors import GanbenchError

ROLES = ("query", "bank")
REFUSED, EXTENDED, LARGEST_BITS = 0, 1, 2  # a role's report slots; the fourth keeps the next role 16-byte aligned
COUNT_SLOTS = 4
DISTANCE_SCALE = 2.0**24 * 255.0**2   # E = DISTANCE_SCALE * D: the kernel's unit of squared distance
QUERY_BLOCKS, BANK_BLOCKS = 2, 4      # int8 blocks per row: [a - 128 | h], [q0 | q1 | q2 | q3]
MAX_RHO = 16320                       # 255 * 2^-25 * 2^31: float32's rounding of a / 255, in units of 2^-31 / 255
MAX_RHO_CONSTANT = tl.constexpr(MAX_RHO)  # kernels read globals only as constexpr (the interpreter does not check)
# The rounding of rho, relative to 2^31 255 x: float64's a / 255 is off by ~2^-44, a coordinate with a >= 1 by at
# most 2^-32; only a tiny coordinate that rounds to byte 0 can exceed it.
MAX_RELATIVE_ROUNDING = 2.0**-30
MAX_RELATIVE_ROUNDING_CONSTANT = tl.constexpr(MAX_RELATIVE_ROUNDING)
# As a kernel constant: Triton makes float literals float32, and 65025 x 2^24 is exact in float32.
DISTANCE_SCALE_CONSTANT = tl.constexpr(DISTANCE_SCALE)
NORM_LIMIT = tl.constexpr(2.0**62)
MAGNITUDE_MASK = tl.constexpr(2**63 - 1)  # a float64's bits but its sign
INTERPRETER_TILE = {"BLOCK_R": 16, "BLOCK_D": 32}
# About 30 registers an element (float64 and int64 temporaries, four digits): ptxas for sm_90 spills
# at 32 x 128 and 16 x 64 with 4 warps, and fits 16 x 64 with 8 warps in 141 registers.
GPU_TILE = {"BLOCK_R": 16, "BLOCK_D": 64, "num_warps": 8}


# The row count only bounds the row masks: not specialized on, so one compiled kernel (and one
# shipped with ganbench, kernels/prebuilt.py) serves every count.
@triton.jit(do_not_specialize=["count"])
def _int8_operands_kernel(rows_ptr, out_ptr, terms_ptr, counts_ptr,
                          count, dim, width, stride_rows, stride_out,
                          QUERY: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < count
    out_rows = out_ptr + rows.to(tl.int64)[:, None] * stride_out  # every program's rows exist (padded)
    squares = tl.zeros([BLOCK_R], tl.float64)
    linear = tl.zeros([BLOCK_R], tl.int64)   # query: 2^31 sum a + sum rho; bank: sum T'
    unrepresentable = tl.zeros([BLOCK_R], tl.int32)
    extended = tl.zeros([BLOCK_R], tl.int32)
    largest_bits = tl.zeros([BLOCK_R], tl.int64)  # of |value| in float64: 0 is +0.0
    for start in range(0, width, BLOCK_D):  # to the block's end: the padding's zeros are written here
        columns = start + tl.arange(0, BLOCK_D)
        column_ok = columns < dim
        inside = row_ok[:, None] & column_ok[None, :]
        written = columns[None, :] < width
        values = tl.load(rows_ptr + rows.to(tl.int64)[:, None] * stride_rows + columns[None, :],
                         mask=inside, other=0.0).to(tl.float64)
        squares += tl.sum(values * values, axis=1)
        # |value|'s bits: the sign bit cleared as an integer, so NaN counts whatever sign abs would give it.
        magnitude_bits = values.to(tl.int64, bitcast=True) & MAGNITUDE_MASK
        largest_bits = tl.maximum(largest_bits, tl.max(magnitude_bits, axis=1))
        scaled = values * 255.0  # exact for float32 inputs
        if QUERY:
            byte = tl.floor(scaled + 0.5)
            unrounded = (scaled - byte) * 2147483648.0
            rho = tl.floor(unrounded + 0.5)
            fits = (byte >= 0.0) & (byte <= 255.0) & (tl.abs(rho) <= MAX_RHO_CONSTANT) & (
                tl.abs(unrounded - rho) <= MAX_RELATIVE_ROUNDING_CONSTANT * tl.abs(byte * 2147483648.0 + unrounded))
            unrepresentable += tl.sum((inside & ~fits).to(tl.int32), axis=1)
            # Entries off the grid (NaN and inf among them) make the launcher refuse the rows: 0 keeps the
            # casts in range meanwhile.
            byte = tl.where(fits, byte, 0.0).to(tl.int64)
            rho = tl.where(fits, rho, 0.0).to(tl.int32)
            high = (tl.abs(rho) + 63) >> 7  # rho / 128 rounded half towards zero: |rho - 128 h| <= 64
            high = tl.where(rho < 0, -high, high)
            extended += tl.sum((inside & (high != 0)).to(tl.int32), axis=1)
            linear += tl.sum(tl.where(inside, byte * 2147483648 + rho.to(tl.int64), 0), axis=1)
            tl.store(out_rows + columns[None, :], tl.where(inside, byte - 128, 0).to(tl.int8), mask=written)
            tl.store(out_rows + width + columns[None, :], tl.where(inside, high, 0).to(tl.int8), mask=written)
        else:
            fits = (values >= 0.0) & (values <= 1.0)
            unrepresentable += tl.sum((inside & ~fits).to(tl.int32), axis=1)
            fixed = tl.floor(tl.where(fits, scaled, 0.0) * 16777216.0 + 0.5).to(tl.int64)  # refused rows: 0
            rest = fixed - 2147483648  # T' in [-2^31, 2^31): balanced base-256 digits below
            linear += tl.sum(tl.where(inside, rest, 0), axis=1)
            digit3 = ((rest + 128) & 255) - 128
            rest = (rest - digit3) >> 8
            digit2 = ((rest + 128) & 255) - 128
            rest = (rest - digit2) >> 8
            digit1 = ((rest + 128) & 255) - 128
            digit0 = (rest - digit1) >> 8
            low = (digit1 != 0) | (digit2 != 0) | (digit3 != 0)
            extended += tl.sum((inside & low).to(tl.int32), axis=1)
            tl.store(out_rows + columns[None, :], tl.where(inside, digit0, 0).to(tl.int8), mask=written)
            tl.store(out_rows + width + columns[None, :], tl.where(inside, digit1, 0).to(tl.int8), mask=written)
            tl.store(out_rows + 2 * width + columns[None, :], tl.where(inside, digit2, 0).to(tl.int8), mask=written)
            tl.store(out_rows + 3 * width + columns[None, :], tl.where(inside, digit3, 0).to(tl.int8), mask=written)
    # 2^24 255^2 ||row||^2, below 2^56 for any row the launchers accept (d < 65,536 entries in [0, 1]). The
    # kernel runs before the range check reads its counts, so rows they refuse (NaN, 1e30) saturate at
    # 2^62 instead of meeting a cast out of int64's range.
    scaled_norm = squares * DISTANCE_SCALE_CONSTANT
    norm = tl.floor(tl.where(scaled_norm < NORM_LIMIT, scaled_norm, NORM_LIMIT) + 0.5).to(tl.int64)
    if QUERY:
        terms = norm - 2 * linear
    else:
        terms = norm - 256 * linear
    tl.store(terms_ptr + rows, terms, mask=row_ok)
    tl.atomic_add(counts_ptr + 0, tl.sum(unrepresentable.to(tl.int64), axis=0))  # REFUSED
    tl.atomic_add(counts_ptr + 1, tl.sum(extended.to(tl.int64), axis=0))         # EXTENDED
    tl.atomic_max(counts_ptr + 2, tl.max(largest_bits, axis=0))                   # LARGEST_BITS


# ---- reference -------------------------------------------------------------------------------------

def query_split(values: torch.Tensor):
    """(a, rho, rho unrounded) of 255 x = a + rho 2^-31, float64, as the kernel computes them (exact for float32 x)."""
    scaled = values * 255.0
    byte = torch.floor(scaled + 0.5)
    unrounded = (scaled - byte) * 2.0**31
    return byte, torch.floor(unrounded + 0.5), unrounded


def query_fits(byte: torch.Tensor, rho: torch.Tensor, unrounded: torch.Tensor) -> torch.Tensor:
    """The module's rule per coordinate, from ``query_split``: a byte, |rho| <= MAX_RHO, rho's rounding
    below MAX_RELATIVE_ROUNDING of the coordinate."""
    relative = (unrounded - rho).abs() <= MAX_RELATIVE_ROUNDING * (byte * 2.0**31 + unrounded).abs()
    return (byte >= 0) & (byte <= 255) & (rho.abs() <= MAX_RHO) & relative


def high_byte(rho: torch.Tensor) -> torch.Tensor:
    """h = rho / 128 rounded half towards zero, so |rho - 128 h| <= 64 and |h| <= 127."""
    return torch.div(rho.abs() + 63, 128, rounding_mode="floor") * rho.sign()


def int8_operands_reference(rows: torch.Tensor, role: str):
    """What the kernel writes, unpadded, with torch float64 and int64 operations.

    Returns (blocks, terms, unrepresentable, extended): blocks is a list of the int8 blocks as
    int64 tensors (the query's [a - 128, h], the bank's [q0, q1, q2, q3]); every value is an exact
    function of the input, so the kernel must agree to the bit (the norm's float64 sum aside).
    """
    values = rows.double()
    norm = torch.floor(values.pow(2).sum(1) * DISTANCE_SCALE + 0.5).long()
    if role == "query":
        byte, rho, unrounded = query_split(values)
        fits = query_fits(byte, rho, unrounded)
        byte, rho = torch.where(fits, byte, 0).long(), torch.where(fits, rho, 0).long()
        high = high_byte(rho)
        terms = norm - 2 * (2**31 * byte.sum(1) + rho.sum(1))
        return [byte - 128, high], terms, (~fits).sum(1), (high != 0).sum(1)
    fits = (values >= 0) & (values <= 1)
    rest = torch.floor(torch.where(fits, values * 255.0, 0) * 2.0**24 + 0.5).long() - 2**31
    terms = norm - 256 * rest.sum(1)
    digits = []
    for _ in range(BANK_BLOCKS - 1):
        digit = ((rest + 128) & 255) - 128
        digits.insert(0, digit)
        rest = torch.div(rest - digit, 256, rounding_mode="floor")
    digits.insert(0, rest)
    extended = sum((digit != 0).long() for digit in digits[1:]) > 0
    return digits, terms, (~fits).sum(1), extended.sum(1)


# ---- launcher --------------------------------------------------------------------------------------

def int8_operands_launch(rows: torch.Tensor, role: str, row_multiple: int, width_multiple: int, interpreted: bool,
                         counts: torch.Tensor | None = None):
    """Check, allocate (rows padded to ``row_multiple``, each block's width to ``width_multiple``), launch.

    Returns (operand int8 (padded rows, blocks * width), terms int64 (n,), counts, width): ``counts``,
    int64 (COUNT_SLOTS,) on the rows' device, zeroed before the launch (a new one when None is given),
    gets the module's report added to it (``largest_magnitude`` reads its LARGEST_BITS slot).
    """
    call, outputs = int8_operands_call(rows, role, row_multiple, width_multiple,
                                       INTERPRETER_TILE if interpreted else GPU_TILE, counts)
    call.launch()
    return outputs


def int8_operands_call(rows: torch.Tensor, role: str, row_multiple: int, width_multiple: int, tile: dict,
                       counts: torch.Tensor | None = None):
    """The launch ``int8_operands_launch`` makes, checked and with its outputs allocated: (call, outputs)."""
    if rows.ndim != 2:
        raise GanbenchError(f"rows must be (n, d), got shape {tuple(rows.shape)}")
    if rows.dtype not in (torch.float32, torch.float64):
        raise GanbenchError(f"rows must be float32 or float64, got {rows.dtype}")
    if role not in ROLES:
        raise GanbenchError(f"unknown role {role!r}: choose query or bank")
    if row_multiple % tile["BLOCK_R"]:  # every program's rows must exist in the padded operand
        raise GanbenchError(f"row_multiple {row_multiple} must be a multiple of BLOCK_R = {tile['BLOCK_R']}")
    if counts is None:
        counts = torch.zeros(COUNT_SLOTS, dtype=torch.int64, device=rows.device)
    if (counts.dtype != torch.int64 or counts.shape != (COUNT_SLOTS,) or counts.device != rows.device
            or not counts.is_contiguous() or counts.data_ptr() % 16):
        raise GanbenchError(f"counts must be a contiguous, 16-byte aligned int64 ({COUNT_SLOTS},) tensor on "
                            f"{rows.device}")
    rows = rows.contiguous()
    count, dim = rows.shape
    width = triton.cdiv(dim, width_multiple) * width_multiple
    blocks = QUERY_BLOCKS if role == "query" else BANK_BLOCKS
    padded_rows = triton.cdiv(max(count, 1), row_multiple) * row_multiple
    # The kernel writes every byte, the padding's zeros too (past column d of each block they add nothing
    # to the products): no zeroing launch.
    operand = torch.empty(padded_rows, blocks * width, dtype=torch.int8, device=rows.device)
    terms = torch.empty(count, dtype=torch.int64, device=rows.device)
    grid = (padded_rows // tile["BLOCK_R"],)  # tile may also name num_warps
    call = launches.KernelCall(_int8_operands_kernel, grid,
                               (rows, operand, terms, counts, count, dim, width, rows.stride(0), operand.stride(0)),
                               {"QUERY": role == "query", **tile})
    return call, (operand, terms, counts, width)


# ---- public function -------------------------------------------------------------------------------

def largest_magnitude(bits: int) -> float:
    """The largest |value| from a LARGEST_BITS slot as read (NaN or inf where the rows hold one)."""
    return float(np.array(bits, dtype=np.int64).view(np.float64))


def is_8bit(values: torch.Tensor) -> bool:
    """The module's rule, in torch: every 255 x within MAX_RHO 2^-31 of a byte 0..255 (one wait for the device)."""
    return bool(query_fits(*query_split(values.double())).all())


def in_unit_interval(values: torch.Tensor) -> bool:
    """Whether every value lies in [0, 1], the range the bank's fixed point covers."""
    low, high = torch.aminmax(values)
    return bool((low >= 0) & (high <= 1))
