"""8-bit queries against any bank in [0, 1]: distances from int8 products of the bank's digits (torch backend, CPU).

MNIST-style queries are y = a / 255 for bytes a; a model's samples are not. A sample s in [0, 1]
rounded to T = round(255 B s), B = 256^(k - 1), is T' = T - 128 B in balanced base-256 digits
q_0 .. q_(k-1), each in -128..127:
    T' = sum_d 256^(k - 1 - d) q_d,
and with a' = a - 128 (both sides moved by 128 / 255 in every coordinate, which changes no distance)
    E = 255^2 ||y - T / (255 B)||^2 = ||a'||^2 + ||T'||^2 / B^2 - 2 sum_d 256^-d (a'.q_d),
each a'.q_d one int8 matrix product with int32 accumulation, exact (|a'.q_d| <= 128^2 d < 2^31). On a
CPU with int8 dot products (VNNI) one such product runs 4-4.5x faster than the float32 GEMM of the same
shape (2-core AMD EPYC: 4.0 against 17.6 ms for 2048 x 1024 x 800), so k = 3 digits cost about two
thirds of it (docs/performance.md). The products are combined in float64 (``fused_rows.fold_digit_tile``):
sum_d 256^-d P_d is exact there (below 2^47), and the two additions of the norms round by 2^-53 of
their size, so E is the exact distance of the rounded data to within 3 2^-53 V (V below). The
shifted exponents E - min E are rounded to float32 once, as the byte path's are.

Error, per query x = y + e (|e_k| <= h_x: float32's rounding of a / 255, or float64's) and bank row s,
against the exact D = ||x - s||^2 (Section 5's estimator is 1-Lipschitz in D / 2 sigma^2):
- the data: s = T / (255 B) + delta with |delta_k| <= h_k = 1 / (2 255 B) (+ 2^-52 for float64 rows,
  whose 255 B s may round), so with v = y - T / (255 B), w = e - delta, ||w|| <= eta = sqrt(d) (h_x + h_k):
  |D - ||v||^2| = |2 v.w + ||w||^2| <= 2 eta (sqrt(D) + eta) + eta^2 <= 2 eta sqrt(2 N) + 3 eta^2,
  for any centre c and N = ||x - c||^2 + max_j ||s_j - c||^2 >= D / 2;
- the arithmetic: 4 2^-53 V / 255^2 (E's three roundings, the minimum's division by 255^2), with
  V = M_s + 2 ||a'|| sqrt(M_s) + ||a'||^2 bounding every term in units of E (M_s >= ||T'_j||^2 / B^2).
With three digits eta = 1.7e-6 on MNIST (d = 784, float32 queries): D is off by under 5e-5 at N = 100,
where the float32 GEMM's bound is 9.4e-3 and its error measured up to ~1e-4 (``refine_nearest``).

The float32 GEMM path is off by at most K u N with N about the bank's mean (ganbench.scoring.bounds).
``within_float32_bound`` checks that the bound above is inside it for every query, so a result scored
either way carries the torch backend's one bound (``ganbench check`` re-scores a saved result, which
``--save`` scores with tf32x3, with tolerances from it); when it is not (data so tightly clustered that
the digits' rounding would matter), the float32 GEMM scores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ganbench.scoring import byte_distances, centring, fused_rows, partials

DIGITS = 3                     # 255 B s to 2^-16: eta = 1.7e-6 on MNIST (module docstring)
LEVELS = byte_distances.LEVELS
OFFSET = byte_distances.OFFSET
PIECE_ROWS = byte_distances.PIECE_ROWS
# The comparison's own float64 roundings (``centred_spread`` bounds the difference in N itself).
BOUND_SAFETY = 1.0 - 1e-9


@dataclass
class DigitOperands:
    """A bank's balanced base-256 digits of T' = round(255 B s) - 128 B and their squared norms."""

    digits: torch.Tensor   # (k, m, width) int8: digit d of every row, zero past the first d columns
    norms: torch.Tensor    # (m,) float64: ||T'||^2 / B^2, in units of E (255^2 D), rounded once

    @property
    def count(self) -> int:
        return self.digits.shape[0]


def digit_operands(bank: torch.Tensor, width: int, count: int = DIGITS) -> DigitOperands:
    """The digits of every bank row (values in [0, 1]), in cache-sized pieces, padded to ``width`` columns."""
    rows, dimension = bank.shape
    base = 256 ** (count - 1)
    scale = float(LEVELS * base)
    digits = torch.zeros((count, rows, width), dtype=torch.int8)
    norms = torch.empty(rows, dtype=torch.float64)
    for first in range(0, rows, PIECE_ROWS):
        piece = bank[first:first + PIECE_ROWS]
        # 255 B s is exact in float64 for float32 s (24 + 8 significant bits); rounded once for float64 s
        # (h covers it).
        # Every value below is an integer under 2^31, so float64 holds it exactly: T', then each digit.
        shifted = (piece.double() * scale).round_().sub_(OFFSET * base)    # T', |T'| <= 128 B (a copy: never the bank)
        norms[first:first + len(piece)] = shifted.to(torch.int64).square_().sum(dim=1).double()  # exact, rounded once
        for digit in range(count - 1, 0, -1):
            higher = (shifted + OFFSET).mul_(1 / 256).floor_()                              # balanced: low in -128..127
            digits[digit, first:first + len(piece), :dimension] = shifted.sub_(higher * 256)
            shifted = higher
        digits[0, first:first + len(piece), :dimension] = shifted                           # |q_0| <= 128, <= 127 at top
    # Trailing digits that are zero in every row add nothing: an 8-bit bank (T = b B) keeps one product.
    while count > 1 and not bool(digits[count - 1].any()):
        count -= 1
    return DigitOperands(digits[:count], norms.div_(float(base) ** 2))


# Bank dtypes whose 255 B s is exact in float64 (11, 8 and 24 significant bits against 24 of 255 B), and
# float64 itself (rounded once: ``digit_error`` adds 2^-52).
BANK_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def centred_spread(query: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """N per query, ||x - c||^2 + max_j ||s_j - c||^2 about the bank's mean c, in float64, lowered so that
    it is never above what ``ganbench.scoring.bounds.centred_norms`` finds for the same chunk of m rows.

    That expands ||x||^2 - 2 x.c' + c'.c' in float64, off by up to (d + 2) 2^-53 (2 ||x||^2 + 2 ||c||^2),
    with c' NumPy's mean, within delta = 2 (m + 1) 2^-53 ||c|| of this one (the values are >= 0), which
    moves each of N's two terms by at most 2 sqrt(N) delta + delta^2. N here, summed directly, is off by
    (d + 2) 2^-53 N. The margin is twice the sum of these."""
    dimension, rows = query.shape[1], len(bank)
    centre = centring.column_mean(bank)
    largest = max(float(((piece.double() - centre) ** 2).sum(dim=1).max()) for piece in bank.split(PIECE_ROWS))
    spreads, squares = [], []
    for piece in query.split(PIECE_ROWS):  # one float64 copy of a cache-sized piece at a time
        piece = piece.double()
        spreads.append(((piece - centre) ** 2).sum(dim=1))
        squares.append((piece * piece).sum(dim=1))
    spread, squared = torch.cat(spreads) + largest, torch.cat(squares)
    centre_squared = float(centre @ centre)
    moved = 2 * (rows + 1) * 2.0**-53 * math.sqrt(centre_squared)
    margin = 2 * ((dimension + 2) * 2.0**-53 * (2 * squared + 2 * centre_squared + spread)
                  + 4 * torch.sqrt(spread) * moved + 2 * moved**2)
    return (spread - margin).clamp_(min=0.0)


def digit_error(spread: torch.Tensor, query_norms: torch.Tensor, dimension: int, query_dtype: torch.dtype,
                bank_dtype: torch.dtype, count: int = DIGITS) -> torch.Tensor:
    """The module docstring's bound on |E / 255^2 - D| per query (float64, D units): ``spread`` N and
    ``query_norms`` ||a'||^2 per query, float64."""
    half_step = 0.5 / (LEVELS * 256 ** (count - 1)) + (2.0**-52 if bank_dtype == torch.float64 else 0.0)
    eta = math.sqrt(dimension) * (byte_distances.HALF_ULP_AT_ONE[query_dtype] + half_step)
    data = 2 * eta * torch.sqrt(2 * spread) + 3 * eta**2
    largest = OFFSET**2 * dimension  # ||T' / B||^2 <= 128^2 d whatever the digits (|T' / B| <= 128 each)
    values = largest + 2 * torch.sqrt(query_norms) * math.sqrt(largest) + query_norms
    return data + 4 * 2.0**-53 * (1 + 2.0**-20) * values / LEVELS**2


def within_float32_bound(query: torch.Tensor, bank: torch.Tensor, query_norms: torch.Tensor) -> bool:
    """Whether ``digit_error`` lies within the float32 path's bound K u N for every query
    (``query_norms``: ||a'||^2, int32)."""
    from ganbench.scoring import bounds  # late: bounds reads the bank module, not needed to score

    dimension = query.shape[1]
    spread = centred_spread(query, bank)
    allowed = bounds.distance_coefficient("float32", dimension) * bounds.UNIT_ROUNDOFF["float32"] * spread
    error = digit_error(spread, query_norms.double(), dimension, query.dtype, bank.dtype)
    return bool((error <= allowed * BOUND_SAFETY).all())


NOT_8BIT = "x is not 8-bit (every value a / 255 for a byte a, float32 or float64)"


def parzen_operands(query: torch.Tensor, bank: torch.Tensor
                    ) -> tuple[tuple[byte_distances.ByteOperands, DigitOperands] | None, str]:
    """(query bytes, bank digits) and "" when the digit path scores these data on this CPU: 8-bit float32
    or float64 queries (``byte_distances.byte_values``), a bank in [0, 1] of ``BANK_DTYPES``, d within the
    int8 products' range, this CPU's int8 product exact, and ``within_float32_bound``. Else None and why
    not, in words for a one-line notice. The cheap checks come first: the queries' first row, the bank's range."""
    if query.dtype not in byte_distances.HALF_ULP_AT_ONE or not len(query) or byte_distances.byte_values(query[:1]) is None:
        return None, NOT_8BIT
    if bank.dtype not in BANK_DTYPES or not len(bank):
        return None, f"the bank is {str(bank.dtype).removeprefix('torch.')} with {len(bank)} rows"
    if query.shape[1] > byte_distances.MAX_DIMENSION:
        return None, f"d is above {byte_distances.MAX_DIMENSION}"
    low, high = torch.aminmax(bank)
    if low < 0 or high > 1:
        return None, "the bank has values outside [0, 1]"
    if not byte_distances.int8_product_is_exact():
        return None, "this torch build's CPU int8 product is not exact"
    query_operands = byte_distances.byte_operands(query)
    if query_operands is None:
        return None, NOT_8BIT
    if not within_float32_bound(query, bank, query_operands.norms):
        return None, "the bank is so tight that its rounding to 24 bits would leave the float32 bound"
    return (query_operands, digit_operands(bank, query_operands.shifted.shape[1])), ""


def products_tile(queries: byte_distances.ByteOperands, bank: DigitOperands, columns: slice,
                  out: torch.Tensor) -> torch.Tensor:
    """P_d = a'.q_d for every digit d of a block, exact, in the int32 tensor ``out`` (k, rows, columns)."""
    for digit in range(bank.count):
        torch._int_mm(queries.shifted, bank.digits[digit, columns].T, out=out[digit])
    return out


def distances_from_products(products: torch.Tensor, column_terms: torch.Tensor,
                            query_norms: torch.Tensor) -> torch.Tensor:
    """E = (||a'||^2 + ||T'||^2 / B^2) - 2 sum_d 256^-d P_d in float64, as the fused pass computes it."""
    combined = products[0].double()
    for digit in range(1, len(products)):
        combined.add_(products[digit].double(), alpha=2.0 ** (-8 * digit))   # exact: below 2^47
    return (query_norms[:, None] + column_terms[None, :]).sub_(combined, alpha=2.0)


def pass_over_bank(query: byte_distances.ByteOperands, bank: DigitOperands, grid, query_block: int,
                   bank_block: int) -> partials.BankPartial:
    """The torch backend's blocked pass with digit products: minima returned in D units (float64)."""
    scales = byte_distances.scales_in_bytes(grid)
    count = query.shifted.shape[0]
    bank_rows = bank.digits.shape[1]
    fused = fused_rows.available()  # one compiled read of each tile row (ganbench.scoring.fused_rows)
    sigma_rows = torch.argsort(scales)
    sorted_scales = scales[sigma_rows].contiguous()
    query_norms = query.norms.double()
    # One flat buffer: each block's products are a contiguous prefix (the int8 product writes only contiguous outputs).
    product_buffer = torch.empty(bank.count * query_block * bank_block, dtype=torch.int32)
    term_buffer = None if fused else torch.empty(query_block * bank_block)
    minima, nearest, sums = [], [], []
    with torch.no_grad():
        for query_start in range(0, count, query_block):
            queries = query.rows(slice(query_start, query_start + query_block))
            norms = query_norms[query_start:query_start + query_block]
            rows = len(norms)
            running = partials.BankPartial(torch.full((rows,), math.inf, dtype=torch.float64),
                                           torch.zeros(rows, dtype=torch.int64), torch.zeros(len(grid), rows))
            for bank_start in range(0, bank_rows, bank_block):
                columns = slice(bank_start, min(bank_start + bank_block, bank_rows))
                width = columns.stop - columns.start
                products = products_tile(queries, bank, columns,
                                         product_buffer[:bank.count * rows * width].view(bank.count, rows, width))
                if fused:
                    fused_rows.fold_digit_tile(running, products, bank.norms[columns], norms, sorted_scales,
                                               sigma_rows, bank_start)
                    continue
                distances = distances_from_products(products, bank.norms[columns], norms)
                block_min, block_arg = distances.min(dim=1)                     # first index among ties
                new_min = partials.move_to_minimum(running, block_min, block_arg + bank_start, scales)
                if len(scales):
                    shifted = torch.sub(distances, new_min[:, None]).float()    # E - min E, rounded once
                    partials.add_terms(running.shifted_sums, shifted, scales,
                                       term_buffer[:rows * width].view(rows, width), skip_negligible=True)
            minima.append(running.min_sq_distance / byte_distances.DISTANCE_SCALE)
            nearest.append(running.nearest_index)
            sums.append(running.shifted_sums)
    return partials.BankPartial(torch.cat(minima), torch.cat(nearest), torch.cat(sums, dim=1))
