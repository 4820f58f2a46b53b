"""Exact squared distances between 8-bit data from int8 matrix products: the torch backend on the CPU.

MNIST images are x = a / 255 for bytes a. When the queries and the bank are both 8-bit, with
a' = a - 128 and b' = b - 128 in int8,
    E = 255^2 ||a / 255 - b / 255||^2 = ||a' - b'||^2 = ||a'||^2 + ||b'||^2 - 2 a'.b',
and one int8 matrix product with int32 accumulation gives every a'.b' exactly (|a'.b'| <= d 128^2,
below 2^31 for d < 131,072), so every squared distance between the bytes is exact where the float32
GEMM form rounds it. On a CPU with int8 dot-product instructions (VNNI) that product also runs
about 4x faster than the float32 one (2-core AMD EPYC: 3.8 ms against 16.5 ms for a 2048 x 1024 x
784 tile), so the GEMM stops being the scorer's floor (docs/performance.md).

Which data are 8-bit (``byte_values``): every value equals a / 255 rounded to its own dtype for a
byte a, in float32 or float64, the two tensors of one dtype; that is what dividing uint8 images by
255 gives. The values then differ from a / 255 by e with |e| <= h (half an ulp at 1: 2^-25 in
float32, 2^-54 in float64), and equal bytes carry equal values. With Delta_k = (a_k - b_k) / 255
and eps_k = e_k - f_k, nonzero only where a_k != b_k, so where |Delta_k| >= 1 / 255:
    D - D_bytes = sum_k (2 Delta_k eps_k + eps_k^2),
    |D - D_bytes| <= 4h sum |Delta_k| + 4h^2 #(a_k != b_k) <= (1020 h + 260100 h^2) D_bytes,
since |Delta_k| <= 255 Delta_k^2 and each differing coordinate adds at least 1 / 255^2 to D_bytes.
In float32 that is 510u of the distance (u = 2^-24). The float32 path's bound (ganbench.scoring.bounds)
is K u N with K = 2 (d + 1) / (1 - (d + 1) u) + 9 and N >= D / 2, so this error lies inside it once
K >= 1021, from d = 505 on (``min_dimension``): results scored either way carry the same bound. Below
that the float32 GEMM's bound is the tighter one, and the GEMM scores. For float64 values (h = 2^-54)
the bytes' error is 2^-29 of that and the path applies from d = 1.

The exponents: the shifted E is an exact integer; converting it to float32, the scale 1 / (2 sigma^2
255^2) (rounded once from float64) and the product are three roundings, as on the float32 path.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ganbench.scoring import fused_rows, partials

LEVELS = 255               # a byte's largest value: x = a / 255
OFFSET = 128               # a' = a - 128 fits int8
DISTANCE_SCALE = LEVELS**2  # E = 255^2 D, the integer unit of squared distance here
# |E| <= 255^2 d and |a'.b'| <= 128^2 d must fit int32; 2^31 / 255^2 = 33,025 dimensions.
MAX_DIMENSION = (2**31 - 1) // DISTANCE_SCALE
# Half an ulp at 1 of the dtypes whose 8-bit values qualify: x = a / 255 + e with |e| <= this.
# float16 and bfloat16 are left out: their rounding of a / 255 is far larger (the float32 path scores them).
HALF_ULP_AT_ONE = {torch.float32: 2.0**-25, torch.float64: 2.0**-54}
# The product's inner dimension is padded with zero columns (they add nothing to a'.b') to a
# multiple of this: torch's CPU int8 product returns garbage for an inner dimension of 1 (torch 2.13,
# seen on an AMD EPYC), and no shape outside the common ones is trusted without the check below.
WIDTH_MULTIPLE = 16


@dataclass
class ByteOperands:
    """One side's bytes, shifted to int8 and padded, and their squared norms ||a'||^2."""

    shifted: torch.Tensor  # (n, width) int8: a - 128 in the first d columns, 0 after
    norms: torch.Tensor    # (n,) int32: ||a - 128||^2 over the first d columns

    def rows(self, part) -> ByteOperands:
        """The operands of some rows (a slice or an index tensor)."""
        if isinstance(part, slice):
            return ByteOperands(self.shifted[part], self.norms[part])
        return ByteOperands(self.shifted.index_select(0, part), self.norms.index_select(0, part))


def byte_values(values: torch.Tensor) -> torch.Tensor | None:
    """round(255 x) in the dtype of ``values`` when every value is a / 255 rounded to that dtype
    (float32 or float64), else None.

    255 x in the working dtype is within 2^-16 of the byte it came from, so rounding recovers the
    byte; dividing it by 255 again (correctly rounded in IEEE arithmetic) must give the value back
    bit for bit.
    """
    if values.dtype not in HALF_ULP_AT_ONE:
        return None
    candidate = (values * LEVELS).round_().clamp_(0, LEVELS)
    return candidate if torch.equal(candidate / LEVELS, values) else None


# Rows per piece when bytes are checked and shifted: each piece's temporaries stay in cache (MNIST's
# 50,000 training images: 0.08 s in pieces of 1,024 rows, 0.3-0.7 s for the same passes over the whole).
PIECE_ROWS = 1024


def operands(byte_rows: torch.Tensor) -> ByteOperands:
    """Shifted int8 bytes padded to ``WIDTH_MULTIPLE`` columns, and their squared norms."""
    return _shifted_operands(byte_rows, lambda part, first: part)


def byte_operands(values: torch.Tensor) -> ByteOperands | None:
    """``operands(byte_values(values))`` in cache-sized pieces: None as soon as a piece is not 8-bit."""
    if values.dtype not in HALF_ULP_AT_ONE:
        return None
    return _shifted_operands(values, lambda part, first: byte_values(part))


def _shifted_operands(rows: torch.Tensor, to_bytes) -> ByteOperands | None:
    """The operands of ``to_bytes(piece, its first row)`` of each piece of ``rows`` (None when it gives None for one)."""
    count, dimension = rows.shape
    width = math.ceil(dimension / WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    shifted = torch.zeros((count, width), dtype=torch.int8)
    norms = torch.empty(count, dtype=torch.int32)
    for first in range(0, count, PIECE_ROWS):
        piece = to_bytes(rows[first:first + PIECE_ROWS], first)
        if piece is None:
            return None
        target = shifted[first:first + PIECE_ROWS]
        target[:, :dimension] = piece - OFFSET  # exact: integers in -128..127
        norms[first:first + PIECE_ROWS] = target.to(torch.int32).pow_(2).sum(dim=1, dtype=torch.int32)  # <= 128^2 d
    return ByteOperands(shifted, norms)


def parzen_operands(query: torch.Tensor, bank: torch.Tensor) -> tuple[ByteOperands, ByteOperands] | None:
    """Both sides' operands when the Parzen byte path applies to these data on this CPU, else None:
    ``exact_operands``' rule, and d >= ``min_dimension`` (so that results keep the float32 bound)."""
    if query.dtype not in HALF_ULP_AT_ONE or query.shape[1] < min_dimension(query.dtype):
        return None
    return exact_operands(query, bank)


@functools.cache
def min_dimension(dtype: torch.dtype) -> int:
    """The smallest d from which the bytes' rounding, r D_bytes (``relative_error``), lies inside the
    float32 bound K u N (ganbench.scoring.bounds): with N >= D / 2 and D_bytes <= D / (1 - r), that is
    K >= 2 r / (u (1 - r)). 505 for float32 values; 1 for float64 ones, whose rounding is 2^-29 of it."""
    from ganbench.scoring import bounds  # late: bounds reads the bank module, not needed to score

    unit = bounds.UNIT_ROUNDOFF["float32"]
    relative = relative_error(dtype)
    needed = 2 * relative / (unit * (1 - relative))
    dimension = 1
    while bounds.distance_coefficient("float32", dimension) < needed:
        dimension += 1
    return dimension


def exact_operands(query: torch.Tensor, bank: torch.Tensor) -> tuple[ByteOperands, ByteOperands] | None:
    """Both sides' operands when both are 8-bit in one dtype, d <= MAX_DIMENSION and this CPU's
    int8 product is exact, else None. Their distances are then within ``relative_error`` of the values'."""
    if query.dtype != bank.dtype or query.dtype not in HALF_ULP_AT_ONE or query.shape[1] > MAX_DIMENSION:
        return None
    # First rows first: 8-bit queries against a generator's bank fail on the bank's first row,
    # before a pass over all the queries.
    if any(byte_values(side[:1]) is None for side in (query, bank)) or not int8_product_is_exact():
        return None
    query_operands = byte_operands(query)
    bank_operands = None if query_operands is None else byte_operands(bank)
    if bank_operands is None:
        return None
    return query_operands, bank_operands


def rounded_operands(query: torch.Tensor, reference: torch.Tensor) -> tuple[ByteOperands, ByteOperands, torch.Tensor] | None:
    """For queries in [0, 1] against 8-bit reference data (float32 or float64, d <= MAX_DIMENSION, this
    CPU's int8 product exact): the queries rounded to bytes, the reference's bytes, and per query a bound
    eps_i on how far any root distance moves between the values and the bytes (``neighbours._top_k_rounded``);
    else None.

    eps_i = ||s_i - q_i / 255|| + sqrt(d) h, h the reference's half ulp at 1 (its values' distance from
    a / 255). The first term is computed in float64: each entry's difference is off by at most 2^-52
    (q / 255 rounded, then the subtraction of numbers below 1), the norm by (d + 2) 2^-53 of itself,
    so sqrt(d) 2^-52 and (d + 2) 2^-52 of it are added.
    """
    dimension = query.shape[1]
    if (query.dtype not in HALF_ULP_AT_ONE or reference.dtype not in HALF_ULP_AT_ONE or dimension > MAX_DIMENSION
            or byte_values(reference[:1]) is None):
        return None
    low, high = torch.aminmax(query)
    if low < 0 or high > 1 or not int8_product_is_exact():
        return None
    reference_operands = byte_operands(reference)
    if reference_operands is None:
        return None
    residuals = torch.empty(len(query), dtype=torch.float64)

    def rounded(part, first):
        part_bytes = (part * LEVELS).round_().clamp_(0, LEVELS)
        residuals[first:first + len(part)] = torch.linalg.vector_norm(part.double() - part_bytes.double() / LEVELS,
                                                                      dim=1)
        return part_bytes

    query_operands = _shifted_operands(query, rounded)
    root_d = math.sqrt(dimension)
    slack = residuals * (1 + (dimension + 2) * 2.0**-52) + root_d * (2.0**-52 + HALF_ULP_AT_ONE[reference.dtype])
    return query_operands, reference_operands, slack


def relative_error(dtype: torch.dtype) -> float:
    """r with |D - D_bytes| <= r D_bytes for 8-bit values of ``dtype`` (module docstring):
    1020 h + 260100 h^2, h half an ulp at 1 (2^-25 in float32, 2^-54 in float64; no other dtype)."""
    half_ulp = HALF_ULP_AT_ONE[dtype]
    return 1020 * half_ulp + 260100 * half_ulp**2


def sq_distance_tile(queries: ByteOperands, samples: ByteOperands, out: torch.Tensor) -> torch.Tensor:
    """E = 255^2 D_bytes for a block, exact, in the int32 tensor ``out`` (contiguous)."""
    return sq_distance_tile_less_query_norms(queries, samples, out).add_(queries.norms[:, None])


def sq_distance_tile_less_query_norms(queries: ByteOperands, samples: ByteOperands, out: torch.Tensor) -> torch.Tensor:
    """E - ||a'||^2 = ||b'||^2 - 2 a'.b' for a block, exact, in ``out``: a row's minimum and its shifted
    values need no row term, so the Parzen pass adds it to the minima alone (one pass less)."""
    torch._int_mm(queries.shifted, samples.shifted.T, out=out)                  # a'.b'
    return torch.add(samples.norms[None, :], out, alpha=-2, out=out)


@functools.cache
def int8_product_is_exact() -> bool:
    """Whether this torch build's CPU int8 product agrees with int64 arithmetic, checked once a process.

    The shapes cover a partial register block in every dimension and the padded widths used here;
    the extremes -128 and 127 test the accumulation's range. A build that fails leaves the byte
    path unused (the float32 path scores instead): a fast wrong product is never used.
    """
    generator = torch.Generator().manual_seed(0)
    for rows, width, columns in ((37, WIDTH_MULTIPLE, 29), (5, 49 * WIDTH_MULTIPLE, 131), (70, 2 * WIDTH_MULTIPLE, 3),
                                 (1, WIDTH_MULTIPLE, 1), (3, 50 * WIDTH_MULTIPLE, 1), (1, 50 * WIDTH_MULTIPLE, 40)):
        left = torch.randint(-128, 128, (rows, width), dtype=torch.int8, generator=generator)
        right = torch.randint(-128, 128, (columns, width), dtype=torch.int8, generator=generator)
        left[0], right[0] = -128, -128
        try:
            product = torch._int_mm(left, right.T)
        except RuntimeError:
            return False
        if not torch.equal(product.long(), left.long() @ right.long().T):
            return False
    return True


def accumulate(running: partials.BankPartial, queries: ByteOperands, samples: ByteOperands, scales_e: torch.Tensor,
               index_offset: int, tile: torch.Tensor, term: torch.Tensor, skip_negligible: bool) -> None:
    """Fold one block of the bank into ``running``, whose minima are exact integers E (float64).

    ``tile`` is an int32 buffer of the block's shape, ``term`` a float32 one; ``scales_e`` holds
    1 / (2 sigma^2 255^2) per sigma, so that E times it is the exponent.
    """
    sq_distance_tile_less_query_norms(queries, samples, out=tile)
    block_min, block_arg = tile.min(dim=1)                                      # first index among ties
    block_min = (block_min + queries.norms).double()                            # exact integers
    new_min = partials.move_to_minimum(running, block_min, block_arg + index_offset, scales_e)
    if not len(scales_e):
        return
    # E - min E >= 0, exact in int32; the exponents follow in float32.
    torch.sub(tile, (new_min - queries.norms).to(torch.int32)[:, None], out=tile)
    partials.add_terms(running.shifted_sums, tile, scales_e, term, skip_negligible)


def scales_in_bytes(grid) -> torch.Tensor:
    """1 / (2 sigma^2) per sigma in units of E, (S,) float32: 1 / (2 sigma^2 255^2) in float64, rounded once.

    Raised to float32's smallest normal scale like ``partials.half_inverse_variances`` (an empty side of a
    merge must get the factor exp(-inf * scale) = 0): E <= 255^2 d < 2^31 times 2^-126 moves no term.
    """
    scales = partials.half_inverse_variances(grid, torch.zeros(1, dtype=torch.float64), 1.0 / DISTANCE_SCALE)
    return scales[:, 0].float().clamp(min=partials.SCALE_FLOORS[np.dtype(np.float32)])


def pass_over_bank(query: ByteOperands, bank: ByteOperands, grid, query_block: int,
                   bank_block: int) -> partials.BankPartial:
    """The torch backend's blocked pass with exact byte distances: minima returned in D units (float64)."""
    scales = scales_in_bytes(grid)
    count = query.shifted.shape[0]
    fused = fused_rows.available()  # one compiled read of each tile row (ganbench.scoring.fused_rows)
    sigma_rows = torch.argsort(scales)
    sorted_scales = scales[sigma_rows].contiguous()
    # Flat buffers, each block a contiguous prefix of them (the int8 product writes only contiguous outputs).
    tile_buffer = torch.empty(query_block * bank_block, dtype=torch.int32)
    term_buffer = None if fused else torch.empty(query_block * bank_block)
    minima, nearest, sums = [], [], []
    with torch.no_grad():
        for query_start in range(0, count, query_block):
            queries = query.rows(slice(query_start, query_start + query_block))
            rows = len(queries.norms)
            running = partials.BankPartial(torch.full((rows,), math.inf, dtype=torch.float64),
                                           torch.zeros(rows, dtype=torch.int64), torch.zeros(len(grid), rows))
            for bank_start in range(0, bank.shifted.shape[0], bank_block):
                samples = bank.rows(slice(bank_start, bank_start + bank_block))
                columns = len(samples.norms)
                tile = tile_buffer[:rows * columns].view(rows, columns)
                if fused:
                    sq_distance_tile_less_query_norms(queries, samples, out=tile)
                    fused_rows.fold_byte_tile(running, tile, queries.norms, sorted_scales, sigma_rows, bank_start)
                    continue
                accumulate(running, queries, samples, scales, bank_start, tile,
                           term_buffer[:rows * columns].view(rows, columns), skip_negligible=True)
            minima.append(running.min_sq_distance / DISTANCE_SCALE)  # float64 of the exact E / 255^2
            nearest.append(running.nearest_index)
            sums.append(running.shifted_sums)
    return partials.BankPartial(torch.cat(minima), torch.cat(nearest), torch.cat(sums, dim=1))
