"""Gaussian Parzen-window log-likelihood (Section 5 of the paper; the authors' parzen_ll.py).

    log p(x_i) = logsumexp_j(-||x_i - s_j||^2 / (2 sigma^2)) - log m - d log(sigma sqrt(2 pi))

for a bank s_1..s_m of model samples. Every backend computes the squared distances
of a block once and reuses them for the whole sigma grid, so a grid costs one
distance pass, not one per sigma.

Backends
- ``reference``: float64, blocked, on the CPU (``ganbench.scoring.reference``); the ground truth every
  other path is tested against.
- ``torch``: blocked GEMM form in float32 on data centred by the bank mean, CPU or CUDA; on the
  CPU, 8-bit queries and bank take exact int8 products (``ganbench.scoring.byte_distances``).
- ``triton``: the fused kernel of ``ganbench.kernels.parzen_lse`` (CUDA, or the CPU
  under ``TRITON_INTERPRET=1``); with precision ``int8`` (or ``auto`` on 8-bit queries) the
  exact int8 kernel of ``ganbench.kernels.parzen_int8``.
- ``auto``: ``triton`` on CUDA when present, else ``torch``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ganbench.defaults import (
    BACKENDS,
    CHUNK_ROWS,
    DEFAULT_BACKEND,
    DEFAULT_PRECISION,
    PRECISIONS,
)
from ganbench.devices import resolve_device, to_device_many, to_host
from ganbench.errors import GanbenchError
from ganbench.progress import announce_once as _announce
from ganbench.scoring import byte_distances, centring, digit_distances, float64_rows, fused_rows, partials, reference
from ganbench.scoring.inputs import (
    as_matrix,
    as_sigmas,
    finite_magnitude,
    is_whole_number,
    magnitude_of_ranges,
    queued_ranges,
)

# CPU blocks: each elementwise step over a tile is one torch call, and below ~1M elements the
# calls' fixed cost outweighs keeping the tile in cache. Measured on a 2-core AMD EPYC, 10,000 x
# 10,000 MNIST, 10 sigmas (docs/performance.md): 128 x 1024 2.9x one fp32 matmul, 512 x 1024
# 2.1x, 2048 x 1024 (8 MB) 1.85x, 4096 x 1024 no better.
DEFAULTS = {
    "torch_query_block": 2048,
    "torch_bank_block": 1024,
    # On a GPU, fewer and larger launches: a 4096 x 16384 float32 tile is 256 MB.
    "torch_cuda_query_block": 4096,
    "torch_cuda_bank_block": 16384,
}


@dataclass
class ParzenPass:
    """What one pass over the bank gives, before the normalising constant."""

    log_sum_exp: np.ndarray       # (S, n) float64: logsumexp_j(-D_ij / (2 sigma_k^2))
    min_sq_distance: np.ndarray   # (n,) float64: squared distance to the nearest bank sample
    nearest_index: np.ndarray     # (n,) int64: its bank index (lowest index among ties)
    # (S, n) float64: log sum_j exp(-(D_ij - min_sq_distance_i) / (2 sigma_k^2)), in [0, log(m + 1)].
    # log_sum_exp is this minus min_sq_distance / (2 sigma^2); kept apart because at small sigma
    # that product is huge (2.5e11 at sigma 1e-5 on MNIST) and adding it back to log_sum_exp
    # would cancel every digit of this (streaming merges partials from it).
    log_shifted_sums: np.ndarray

    @classmethod
    def from_log_shifted_sums(cls, log_shifted_sums: np.ndarray, min_sq_distance: np.ndarray,
                              nearest_index: np.ndarray, grid) -> ParzenPass:
        with np.errstate(over="ignore"):  # -inf where float64 cannot hold the value: to_log_likelihood refuses it
            log_sum_exp = log_sum_exp_from_shifted(log_shifted_sums, min_sq_distance, grid)
        return cls(log_sum_exp, min_sq_distance, nearest_index, log_shifted_sums)


def log_sum_exp_from_shifted(log_shifted_sums, min_sq_distance, grid):
    """log_sum_exp = log_shifted_sums - min_sq_distance / (2 sigma^2), (S, n) float64, for NumPy arrays or
    torch tensors alike (one float64 product and one difference: the same bits in either)."""
    return log_shifted_sums - min_sq_distance[None, :] * partials.half_inverse_variances(grid, log_shifted_sums)


def log_likelihood(x, bank, sigmas, *, backend: str = DEFAULT_BACKEND, device=None, precision: str = DEFAULT_PRECISION,
                   query_block: int | None = None, bank_block: int | None = None) -> np.ndarray:
    """Parzen log-likelihood of every row of ``x`` under the bank, shape (len(sigmas), len(x)), float64."""
    grid = as_sigmas(sigmas)
    result = parzen_pass(x, bank, grid, backend=backend, device=device, precision=precision,
                         query_block=query_block, bank_block=bank_block)
    count, dimension = np.shape(bank) if not isinstance(bank, torch.Tensor) else tuple(bank.shape)
    return to_log_likelihood(result.log_sum_exp, grid, count, dimension)


def to_log_likelihood(log_sum_exp: np.ndarray, grid, count: int, dimension: int) -> np.ndarray:
    """Subtract the normalising constant, refusing a value float64 cannot hold instead of returning -inf.

    -D / (2 sigma^2) for the nearest sample is below -1.8e308 when sigma is tiny against the
    distances (MNIST: sigma ~ 1e-154): no float64 number is the answer then, and a -inf mean
    (or its NaN standard error) would look like a score.
    """
    values = log_sum_exp - normalising_constant(grid, count, dimension)[:, None]
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        points = int((~finite[row]).sum())
        if np.isnan(values[row]).any():  # every path is meant to rule this out: report, never return it
            raise GanbenchError(f"internal error: NaN log-likelihood at sigma {grid[row]:.3g} for {points} points; "
                                "please report it with the data's shape and range")
        raise GanbenchError(f"sigma {grid[row]:.3g} is too small for these data: the log-likelihood of {points} of "
                            f"{values.shape[1]} points is below float64's range (-1.8e308); choose a larger sigma")
    return values


def normalising_constant(sigmas, count: int, dimension: int) -> np.ndarray:
    """log m + d log(sigma sqrt(2 pi)) per sigma, in float64 (log sigma apart: sigma sqrt(2 pi) overflows above 7e307)."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    return math.log(count) + dimension * (np.log(sigmas) + 0.5 * math.log(2.0 * math.pi))


def check_options(backend: str, precision: str) -> None:
    """One-line errors for a backend or precision ganbench does not have."""
    if backend not in BACKENDS:
        raise GanbenchError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise GanbenchError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")


def parzen_pass(x, bank, sigmas, *, backend: str = DEFAULT_BACKEND, device=None, precision: str = DEFAULT_PRECISION,
                query_block: int | None = None, bank_block: int | None = None, refine: bool = True) -> ParzenPass:
    """One pass over the bank: shifted log-sum-exp per sigma plus each query's nearest bank sample.

    ``sigmas`` may be empty: then only the nearest neighbours are computed. ``refine``
    (default) recomputes each query's nearest distance exactly for the float32 backends;
    see ``refine_nearest``.
    """
    check_options(backend, precision)
    grid = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if grid.size:
        grid = as_sigmas(grid)
    bank_tensor = as_matrix("bank", bank, check_finite=False)
    query_tensor = as_matrix("x (the points scored)", x, dimension=bank_tensor.shape[1], check_finite=False)
    for name, block in (("query_block", query_block), ("bank_block", bank_block)):
        if block is not None and not (is_whole_number(block) and block >= 1):
            raise GanbenchError(f"{name} must be a positive integer, got {block!r}")
    target = scoring_device(device, backend, query_tensor)
    if backend == "auto":
        backend = "triton" if target.type == "cuda" else "torch"
    queued = None
    if backend == "triton":
        # Host inputs go to the GPU first: its min/max reductions take microseconds where the
        # host's take milliseconds, and the kernel and the refinement share this one copy.
        # Both through one ring of pinned buffers (ganbench.devices.to_device_many): NumPy inputs cross
        # PCIe at its rate, the copy engine busy from the queries' first piece to the bank's last.
        query_tensor, bank_tensor = to_device_many([query_tensor, bank_tensor], target)
        if precision in ("int8", "auto"):
            queued = _queue_int8(query_tensor, bank_tensor, target)
    # The NaN/inf checks and the range, with one wait for the device (not one per check); on the
    # int8 path the same wait reads what the int8 kernel's launch depends on (queued above).
    if queued is None:
        magnitude = finite_magnitude({"bank": bank_tensor, "x (the points scored)": query_tensor})
    else:
        magnitude, queued_counts = _int8_range_and_counts(queued, query_tensor, bank_tensor)
    check_float64_range(magnitude, bank_tensor.shape[1], grid)
    if backend == "reference":  # the ground truth runs on the host, whatever device the inputs are on
        return _reference_pass(query_tensor.cpu(), bank_tensor.cpu(), grid, query_block, bank_block, magnitude)
    exponent = float32_exponent(magnitude, bank_tensor.shape[1], grid)
    if exponent is None:
        _announce(f"ganbench: sigma {grid.min():.3g} against data up to {magnitude:.3g} is out of float32's range "
                  f"for the {backend} backend; scoring with the float64 reference backend instead")
        return _reference_pass(query_tensor, bank_tensor, grid, query_block, bank_block, magnitude)
    # Data and sigma scaled by one power of two: -D / (2 sigma^2) and every rounding are unchanged.
    query_tensor, bank_tensor = scale_by_power_of_two(query_tensor, exponent), scale_by_power_of_two(bank_tensor, exponent)
    scaled_grid = scaled_widths(grid, exponent)
    if backend == "torch":
        partial = _torch_pass(query_tensor, bank_tensor, scaled_grid, target, query_block, bank_block, precision)
    else:
        # The inputs are on the device (above). The kernels autotune their tiles; query_block and
        # bank_block size the other backends' blocks. Operands queued for unscaled data serve only them.
        handed = None
        if queued is not None and exponent:
            queued.release()  # not these data's operands: their memory goes back before any other is made
        elif queued is not None:
            handed = (queued, queued_counts)
        partial = _triton_partial(query_tensor, bank_tensor, scaled_grid, target, precision, handed)
    result = finish_pass(partial, query_tensor, bank_tensor, scaled_grid, refine=refine)
    result.min_sq_distance = np.ldexp(result.min_sq_distance, 2 * exponent)  # back to the caller's units, exactly
    return result


def _queue_int8(query: torch.Tensor, bank: torch.Tensor, target: torch.device):
    """The int8 kernel's operands, queued before the call's one wait (``parzen_int8.queue_operands``)."""
    from ganbench.kernels import parzen_int8  # imported late: Triton is only needed here

    return parzen_int8.queue_operands(query, bank, device=target, bank_piece_rows=parzen_int8.BANK_PIECE_ROWS)


def _int8_range_and_counts(queued, query: torch.Tensor, bank: torch.Tensor) -> tuple[float, list[int]]:
    """The inputs' largest |value| (or the one-line NaN/inf error) and the queued operands' counts, in one read.

    The operands kernels report each input's largest |value| as float64 bits (NaN and inf included);
    bank rows past the first piece, which no operands kernel has read yet, get a min/max reduction
    whose float64 bits join the same copy to the host.
    """
    from ganbench.kernels import parzen_int8
    from ganbench.kernels import parzen_int8_operands as operands

    rest = bank[queued.first_rows:]
    pieces = [queued.counts]
    if len(rest):
        pieces.append(queued_ranges({"bank": rest}).flatten().view(torch.int64))
    values = (torch.cat(pieces) if len(pieces) > 1 else queued.counts).tolist()
    counts = values[:len(queued.counts)]
    largest = {role: operands.largest_magnitude(counts[report][operands.LARGEST_BITS])
               for role, report in (("bank", parzen_int8.BANK_REPORT), ("query", parzen_int8.QUERY_REPORT))}
    ranges = [("bank", (-largest["bank"], largest["bank"]))]
    if len(rest):
        ranges.append(("bank", tuple(np.array(values[len(counts):], dtype=np.int64).view(np.float64))))
    ranges.append(("x (the points scored)", (-largest["query"], largest["query"])))
    return magnitude_of_ranges(ranges), counts


def _triton_partial(query: torch.Tensor, bank: torch.Tensor, grid, target: torch.device,
                    precision: str, queued: tuple | None = None) -> partials.BankPartial:
    """The triton backend: int8 for ``int8`` (8-bit queries or an error) and for ``auto`` where
    it applies, else the tf32x3 kernel (``auto``) or the kernel in the mode asked for. ``queued``:
    (operands, their counts as read) from ``_queue_int8`` on these very tensors."""
    from ganbench.kernels import parzen_int8, parzen_lse  # imported late: Triton is only needed here

    if precision in ("int8", "auto"):
        operands, counts = queued or (None, None)
        try:
            return parzen_int8.parzen_partial_int8(query, bank, grid, device=target, queued=operands, counts=counts)
        except parzen_int8.NotInt8Data:
            if precision == "int8":
                raise
        # (parzen_partial_int8 released the operands: the tf32x3 pass below makes its own.)
    return parzen_lse.parzen_partial_triton(query, bank, grid, device=target,
                                            precision="tf32x3" if precision == "auto" else precision)


# ---- the range of the arithmetic -------------------------------------------------------------------
# Every path works with squared distances D and scales 1 / (2 sigma^2). In float64 both must be
# finite; the float32 paths (torch, triton) also need them inside float32's much narrower range,
# which one power-of-two factor on data and sigma can usually arrange without changing any result.

FLOAT32_LARGEST_LOG2 = 100     # squared norms, distances and dot products stay below 2^100 (float32 overflows at 2^128)
FLOAT32_RESOLUTION_LOG2 = -100  # ... and their bound above 2^-100, so float32's rounding of them (~u times it) stays normal
FLOAT32_SCALE_LOG2 = 120       # log2(e) / (2 sigma^2) stays below 2^121, finite in float32


def squared_distance_bound(magnitude: float, dimension: int) -> float:
    """Above every squared norm of bank-centred data, squared distance and twice any dot product of the
    expanded form, for data with entries up to ``magnitude`` (centred entries are up to twice that)."""
    return 16.0 * dimension * magnitude * magnitude


def squared_distance_log2(magnitude: float, dimension: int) -> float:
    """log2 of ``squared_distance_bound``, computed without its underflow (entries below 1e-162 square to 0 in
    float64: the bound then read as all-zero data); -inf for all-zero data."""
    if magnitude == 0:
        return -math.inf
    return math.log2(squared_distance_bound(1.0, dimension)) + 2.0 * math.log2(magnitude)


# Data whose largest entry lies below 2^-400 are scaled by a power of two before the float64 reference scores
# them: their differences can fall below 1e-154, whose squares underflow float64's normal range (2^-1022),
# and two distances that differ then both read 0 (every point's nearest became sample 0 at entries of 1e-163).
REFERENCE_SMALLEST_LOG2 = -400


def reference_exponent(magnitude: float) -> int:
    """k such that the reference scores data / 2^k and sigmas / 2^k: 0, or for data below 2^-400 the exponent
    that brings their largest entry to [1, 2) (exact: only exponents change, as ``float32_exponent``'s)."""
    if magnitude == 0 or math.log2(magnitude) >= REFERENCE_SMALLEST_LOG2:
        return 0
    return math.frexp(magnitude)[1] - 1


# Below this width 1 / (2 sigma^2) overflows float64.
SMALLEST_SIGMA = math.sqrt(0.5 / np.finfo(np.float64).max)


def check_float64_range(magnitude: float, dimension: int, grid) -> None:
    """Refuse data or widths whose squared distances or 1 / (2 sigma^2) overflow float64, with what to do instead."""
    if squared_distance_bound(magnitude, dimension) > np.finfo(np.float64).max:
        largest = math.sqrt(np.finfo(np.float64).max / squared_distance_bound(1.0, dimension))
        raise GanbenchError(f"values up to {magnitude:.3g} are too large: squared distances between them overflow "
                            f"float64 (entries must stay below {largest:.2g} in dimension {dimension}); divide the data "
                            "and sigma by one factor (log-likelihoods then shift by d log(factor))")
    smallest = SMALLEST_SIGMA
    if len(grid) and grid.min() < smallest:
        raise GanbenchError(f"sigma {grid.min():.3g} is too small: 1/(2 sigma^2) overflows float64 below sigma = "
                            f"{smallest:.2g}; choose a larger sigma (or, for data as small, express data and sigma in "
                            "larger units: log-likelihoods then shift by d log(factor))")


def float32_exponent(magnitude: float, dimension: int, grid) -> int | None:
    """k such that data / 2^k and sigmas / 2^k keep the float32 paths in range; the k nearest 0, None if none does.

    Scaling data and sigma by 2^-k scales every D by 4^-k and every 1 / (2 sigma^2) by 4^k, exactly
    (only exponents change), so -D / (2 sigma^2), the log-likelihood and every rounding stay the same.
    Needed for data far from 1 (entries of 1e19 in 784 dimensions overflow D in float32, entries
    of 1e-30 underflow it) and for small sigma (1/(2 sigma^2) overflows float32 below sigma ~ 4e-20);
    impossible only when D / (2 sigma^2) spans more than float32 can: then None.
    """
    largest_log2 = squared_distance_log2(magnitude, dimension)
    low, high = -math.inf, math.inf
    if largest_log2 > -math.inf:  # all-zero data: every D is 0, any k does
        low = (largest_log2 - FLOAT32_LARGEST_LOG2) / 2
        high = (largest_log2 - FLOAT32_RESOLUTION_LOG2) / 2
    if len(grid):
        top_scale = float(partials.half_inverse_variances(grid.min(), np.zeros(1))[0, 0])
        high = min(high, (FLOAT32_SCALE_LOG2 - math.log2(top_scale)) / 2)
    # The integer nearest 0 in [low, high]. All-zero data leave low at -inf (and high at inf without
    # sigmas): compared, never rounded, since an infinity has no integer part.
    exponent = math.ceil(low) if low > 0 else 0
    if high < exponent:
        exponent = math.floor(high)
    return None if exponent < low else exponent


def scaled_widths(grid: np.ndarray, exponent: int) -> np.ndarray:
    """grid / 2^exponent, exact; a width that overflows (sigma past 1e145 beside data below 1e-162) becomes inf,
    whose 1 / (2 sigma^2) is the 0 such a width's terms have to float64 (the log-likelihood adds the unscaled
    widths' normalising constant), without NumPy's overflow warning."""
    with np.errstate(over="ignore"):
        return np.ldexp(grid, -exponent)


def scale_by_power_of_two(tensor: torch.Tensor, exponent: int) -> torch.Tensor:
    """tensor * 2^-exponent, exact, in float32 or float64 (in steps a float32 factor can hold)."""
    if not exponent:
        return tensor
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()
    remaining = exponent
    while remaining:
        step = max(-64, min(64, remaining))
        tensor = tensor * 2.0**-step
        remaining -= step
    return tensor


# ---- float32 partials to float64 results -----------------------------------------------------------

def finish_pass(partial: partials.BankPartial, query: torch.Tensor, bank: torch.Tensor, grid,
                refine: bool = True) -> ParzenPass:
    """A float32 backend's whole-bank partial (torch, on its device) to a float64 ``ParzenPass``.

    The logs of the shifted sums and the exact-nearest refinement run in float64 on the partial's
    device, and one copy of the (S, n) result reaches the host: on a GPU, the same float64 work
    in NumPy costs milliseconds per 10,000 queries and 16 sigmas, as much as the kernel itself.
    """
    float32_minima = minima = partial.min_sq_distance.double()
    nearest = partial.nearest_index.long()
    float32_log_sums = log_sums = torch.log(partial.shifted_sums.double())  # >= 0: the nearest term is exactly 1
    refused = None
    if refine:
        log_sums, minima, refused = refine_nearest(log_sums, minima, nearest, query, bank, grid)
    # log_sum_exp formed on the device (``log_sum_exp_from_shifted``, as the host would: the same bits);
    # on the host it cost ~0.3 ms at 16 sigmas x 10,000 queries. One copy to the host (a wait for the
    # GPU): the indices ride along as float64, exact below 2^53, and so do the rows of a float32
    # expanded form ganbench cannot vouch for (``float64_rows``), as 0 or 1.
    sigmas = len(grid)
    log_sum_exp = log_sum_exp_from_shifted(log_sums, minima, grid)
    riders = [log_sum_exp, log_sums, minima[None], nearest[None].double()]
    checked = partial.centred_query_norms is not None
    if checked:
        riders.append(float64_rows.rows_to_rescore(partial.centred_query_norms, float32_minima, minima, refused,
                                                   float32_log_sums, grid)[None].double())
    host = to_host(torch.cat(riders))
    result = ParzenPass(host[:sigmas], host[sigmas * 2], host[sigmas * 2 + 1].astype(np.int64),
                        host[sigmas:2 * sigmas])
    if checked and host[-1].any():
        _rescore_in_float64(result, np.flatnonzero(host[-1]), query, bank, grid, partial.min_sq_distance.device)
    return result


def _rescore_in_float64(result: ParzenPass, rows: np.ndarray, query: torch.Tensor, bank: torch.Tensor, grid,
                        device: torch.device) -> None:
    """Replace, in place, the given rows of a float32 pass by the float64 reference's (bank and all), computed on
    the pass's device: on a GPU the float64 work runs there, not on the host."""
    _announce("ganbench: float32 distances cannot vouch for some points at these widths (points far from the bank's "
              "mean against their distances, near-ties or copies at a small sigma, or a sigma far wider than the "
              "data: docs/precision.md); scoring those with the float64 reference backend")
    # The pass's data are already scaled into float32's range (far above 2^-400): no scaling here (magnitude 0).
    exact = _reference_pass(query[torch.as_tensor(rows, device=query.device)].to(device), bank, grid, None, None, 0.0)
    for field in ("log_sum_exp", "log_shifted_sums"):
        getattr(result, field)[:, rows] = getattr(exact, field)
    result.min_sq_distance[rows] = exact.min_sq_distance
    result.nearest_index[rows] = exact.nearest_index


def refine_nearest(log_shifted_sums: torch.Tensor, min_sq_distance: torch.Tensor, nearest_index: torch.Tensor,
                   query: torch.Tensor, bank: torch.Tensor, grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Replace the float32 distance of each query's nearest sample by its exact float64 value.

    The float32 GEMM form is off by up to ~1e-4 in D on MNIST (the dot product's rounding
    on norms ~50), which moves log p by that over 2 sigma^2: ~3e-3 nats at sigma = 0.1.
    At small sigma the nearest sample carries almost all the weight, and its term is exactly
    1 in the shifted sum S, so swapping it for its exact value removes the dominant error for
    n x d work. With c = 1 / (2 sigma^2) and the sums now shifted by D_exact, in logs (no
    exponential can overflow, however small sigma is):
        log S_new = log(1 + (S - 1) exp((D_exact - D_32) c)) = softplus(log(S - 1) + (D_exact - D_32) c).
    The other terms keep their float32 error, weighted by their share of S. A query whose other
    terms would then outweigh the whole sum (log S_new > log(m + 1)) is a near-tie float32 cannot
    resolve (its error times c is many nats): it keeps its float32 distance and sums, which stay
    within the float32 bound (and ``finish_pass`` rescores it in float64). Every shifted sum so stays in
    [1, m + 1], as the merges of streaming need. Takes and returns float64 tensors on the device of
    ``log_shifted_sums`` ((S, n) and (n,)), and the (n,) bool rows refused (None without sigmas).
    """
    device = min_sq_distance.device
    exact = reference.exact_sq_distances(query, bank, None, nearest_index).to(device)
    if not len(grid):
        return log_shifted_sums, exact, None
    scales = partials.half_inverse_variances(grid, log_shifted_sums)
    log_others = torch.log(torch.expm1(log_shifted_sums))  # log(S - 1): -inf when the nearest is alone
    moved = log_others + (exact - min_sq_distance)[None, :] * scales
    consistent = (moved <= math.log(len(bank))).all(dim=0)
    refined = torch.logaddexp(torch.zeros_like(moved), moved)  # log(1 + e^moved), 0 for moved = -inf
    return (torch.where(consistent[None, :], refined, log_shifted_sums),
            torch.where(consistent, exact, min_sq_distance), ~consistent)


def scoring_device(device, backend: str, query_tensor: torch.Tensor | None = None) -> torch.device:
    """The device asked for; else the queries' GPU; else CUDA for the backends that want it, else the CPU.

    Without ``query_tensor`` (host data, as streamed banks, k-means and saved results pass it),
    the device host arrays are scored on for these options."""
    if device is None and query_tensor is not None and query_tensor.device.type == "cuda":
        return query_tensor.device
    return resolve_device(device, default=None if backend in ("auto", "triton") else "cpu")


def sq_distance_tile(queries: torch.Tensor, query_norms: torch.Tensor, samples: torch.Tensor,
                     sample_norms: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """||x||^2 + ||s||^2 - 2 x.s for a block, clamped at 0 because rounding can push a true 0
    slightly below it."""
    return sq_distance_tile_less_query_norms(queries, samples, sample_norms, out).add_(query_norms[:, None]).clamp_(min=0.0)


def sq_distance_tile_less_query_norms(queries: torch.Tensor, samples: torch.Tensor, sample_norms: torch.Tensor,
                                      out: torch.Tensor | None = None) -> torch.Tensor:
    """||s||^2 - 2 x.s for a block: one GEMM with the sample norms as its addend (the fused CPU pass
    adds each row's ||x||^2 as it reads the row)."""
    return torch.addmm(sample_norms[None, :], queries, samples.T, alpha=-2.0, out=out)


# Rows per piece of the norms on the CPU, so that their temporaries stay in cache (on a 2-core AMD EPYC,
# 10,000 x 784: 26.7 ms in one piece, 7.8 ms in pieces of 4,096 rows).
NORM_CHUNK_ROWS = 4096


def squared_norms(rows: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """||row||^2 per row, accumulated in float64 and rounded once, in chunks (bounded memory; on the
    CPU of ``NORM_CHUNK_ROWS``, in cache)."""
    chunk = chunk or (NORM_CHUNK_ROWS if rows.device.type == "cpu" else CHUNK_ROWS)
    pieces = [torch.sum(part * part, dim=1, dtype=torch.float64) for part in rows.split(chunk)]
    return torch.cat(pieces).to(rows.dtype)


def _reference_pass(query, bank, grid, query_block, bank_block, magnitude: float) -> ParzenPass:
    """The float64 reference (``ganbench.scoring.reference``) on the queries' device, as a host ``ParzenPass``;
    data below 2^-400 scaled first (``reference_exponent``), the squared distances scaled back after."""
    exponent = reference_exponent(magnitude)
    if exponent:
        query, bank = (scale_by_power_of_two(tensor.to(torch.float64), exponent) for tensor in (query, bank))
    scaled_grid = scaled_widths(grid, exponent)
    partial = reference.reference_partial(query, bank, scaled_grid, query_block, bank_block)
    result = ParzenPass.from_log_shifted_sums(torch.log(partial.shifted_sums).cpu().numpy(),
                                              partial.min_sq_distance.cpu().numpy(),
                                              partial.nearest_index.cpu().numpy().astype(np.int64), scaled_grid)
    result.min_sq_distance = np.ldexp(result.min_sq_distance, 2 * exponent)  # back to the caller's units
    return result


def float32_if_exact(values: torch.Tensor) -> torch.Tensor:
    """float64 values that are all float32 numbers (float32 data widened: MNIST's a / 255 as ``.astype(float64)``)
    as float32, the same numbers; anything else as given. Such data scored as float64 missed the int8 paths, which
    take float32 and float64 values a / 255 rounded in their own dtype: 2,000 MNIST test images against 10,000
    training images took 0.28 s and were 3.2e-4 nats off through the float32 GEMM; now 0.20 s (the checks and
    copies of float64 data; 0.08 s from float32 arrays), bit for bit the float32 images' result."""
    if values.dtype != torch.float64 or not len(values):
        return values
    single = values[:1].float()
    if not torch.equal(single.double(), values[:1]):  # most float64 data fail on their first row
        return values
    single = values.float()
    return single if torch.equal(single.double(), values) else values


def _torch_pass(query, bank, grid, device, query_block, bank_block, precision=DEFAULT_PRECISION) -> partials.BankPartial:
    """Float32 blocked GEMM form; one distance tile per block serves every sigma.

    The tile and its work buffer are allocated once and reused, and sized to stay in
    cache on the CPU: fresh large allocations (page faults) and passes over memory, not
    the exponentials, would otherwise dominate. On the CPU, with precision ``auto`` or ``int8``, 8-bit
    queries and bank take exact int8 products instead (``ganbench.scoring.byte_distances``), and 8-bit
    queries against any other bank in [0, 1] int8 products of the bank's digits
    (``ganbench.scoring.digit_distances``).
    """
    prefix = "torch_cuda" if device.type == "cuda" else "torch"
    query_block = min(query_block or DEFAULTS[f"{prefix}_query_block"], query.shape[0])
    bank_block = min(bank_block or DEFAULTS[f"{prefix}_bank_block"], bank.shape[0])
    if device.type == "cpu" and precision in ("int8", "auto"):
        query8, bank8 = (float32_if_exact(tensor.to(device)) for tensor in (query, bank))
        sides = byte_distances.parzen_operands(query8, bank8)
        if sides is not None:
            return byte_distances.pass_over_bank(*sides, grid, query_block, bank_block)
        digit_sides, reason = digit_distances.parzen_operands(query8, bank8)
        if digit_sides is not None:
            return digit_distances.pass_over_bank(*digit_sides, grid, query_block, bank_block)
        if precision == "int8":
            # Not an error, unlike the triton backend's int8 (8-bit queries against a bank in [0, 1], or a
            # one-line error): the float32 GEMM scores the rest within the bound int8 results also keep.
            _announce(f"ganbench: int8 products on the CPU need 8-bit x and a bank in [0, 1], but {reason}; "
                      "scoring these data with float32 products")
    query32, bank32 = centring.centre_by_bank_mean(query, bank, torch.float32, device)
    # Norms summed in float64 then rounded once: the GEMM is then the only float32 error.
    query_norms, bank_norms = squared_norms(query32), squared_norms(bank32)
    scales = partials.half_inverse_variances(grid, query32)[:, 0]
    tile = torch.empty(query_block, bank_block, device=device)
    fused = device.type == "cpu" and fused_rows.available()
    if fused:  # one compiled read of each tile row (ganbench.scoring.fused_rows), widest sigma first
        sigma_rows = torch.argsort(scales)
        sorted_scales = scales[sigma_rows].contiguous()
    else:
        shifted = torch.empty(query_block, bank_block, device=device)
        term = torch.empty(query_block, bank_block, device=device)
    minima, nearest, sums = [], [], []
    with torch.no_grad():
        for query_start in range(0, query32.shape[0], query_block):
            queries = query32[query_start:query_start + query_block]
            rows = len(queries)
            running = partials.BankPartial(torch.full((rows,), float("inf"), device=device),
                                           torch.zeros(rows, dtype=torch.int64, device=device),
                                           torch.zeros(len(grid), rows, device=device))
            for bank_start in range(0, bank32.shape[0], bank_block):
                samples = bank32[bank_start:bank_start + bank_block]
                if fused:
                    block = sq_distance_tile_less_query_norms(queries, samples,
                                                              bank_norms[bank_start:bank_start + len(samples)],
                                                              out=tile[:rows, :len(samples)])
                    fused_rows.fold_tile(running, block, query_norms[query_start:query_start + rows],
                                         sorted_scales, sigma_rows, bank_start)
                    continue
                distances = sq_distance_tile(queries, query_norms[query_start:query_start + rows], samples,
                                             bank_norms[bank_start:bank_start + len(samples)],
                                             out=tile[:rows, :len(samples)])
                partials.accumulate(running, distances, scales, bank_start, shifted[:rows, :len(samples)],
                                    term[:rows, :len(samples)], skip_negligible=device.type == "cpu")
            minima.append(running.min_sq_distance)
            nearest.append(running.nearest_index)
            sums.append(running.shifted_sums)
    return partials.BankPartial(torch.cat(minima), torch.cat(nearest), torch.cat(sums, dim=1), query_norms)
