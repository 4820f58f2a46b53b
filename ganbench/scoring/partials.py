"""Exact merging of partial Parzen sums, so a bank can be cut into any pieces.

A piece of the bank gives, per query i, its minimum squared distance mu_i, the
bank index of that minimum, and for every sigma the *shifted* sum
    sum_j exp(-(D_ij - mu_i) / (2 sigma^2)),
whose terms are all <= 1 (the largest is exactly 1), so nothing overflows or
underflows to zero at small sigma. Two pieces merge exactly by moving both to the
smaller minimum (the log-sum-exp trick, Section 5's estimator in stable form).
Blocks inside a backend, the Triton kernel's split bank, shards on disk and
torch.distributed ranks all merge through these functions.

Works on NumPy arrays and torch tensors alike (same function names in both).
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ganbench.errors import GanbenchError

EXP_FLOOR = -87.0  # exp(-87) = 1.6e-38, just above float32's smallest normal number


def _namespace(array):
    return torch if isinstance(array, torch.Tensor) else np


@dataclass
class BankPartial:
    min_sq_distance: object  # (n,) smallest squared distance to this piece of the bank
    nearest_index: object    # (n,) global bank index of that smallest distance
    shifted_sums: object     # (S, n) sum_j exp(-(D_ij - min_sq_distance_i) / (2 sigma_k^2))
    # (n,) ||x_i - c||^2 of the queries centred by the bank mean c, set by the float32 expanded-form
    # passes (whose error grows with it: ganbench.scoring.float64_rows.far_from_centre); None where
    # the distances are exact integers (int8) or float64.
    centred_query_norms: object = None


# The smallest scale each working dtype keeps. A scale below it (sigma far above the data's
# spread) is raised to it, so that an empty side of a merge (minimum +inf) always gets the factor
# exp(-inf * scale) = 0, never inf * 0 = NaN. That moves no term: in float64 every squared
# distance is below 1.8e308, and 1.8e308 * 2^-1074 < 1e-15; the float32 paths keep every
# squared distance below 2^100 (ganbench.scoring.parzen.float32_exponent), and 2^100 * 2^-126
# = 1.5e-8 is below float32's rounding of a term.
SCALE_FLOORS = {np.dtype(np.float64): 2.0**-1074, np.dtype(np.float32): 2.0**-126}


def half_inverse_variances(sigmas, like, factor: float = 1.0):
    """``factor`` / (2 sigma^2) per sigma, as a column to broadcast against (S, n), in ``like``'s dtype.

    Computed in float64 as (0.5 / sigma) / sigma, rounded once: sigma^2 itself overflows above
    sigma = 1.3e154 and underflows below 1.5e-162 where the scale is still representable.
    A scale the dtype cannot hold (sigma too small) is a clear error, never inf (then 0 * inf
    = NaN for the nearest term); ganbench.scoring.parzen checks sigma before it gets here.
    """
    sigmas = np.asarray(sigmas, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore"):
        scales = (factor * (0.5 / sigmas) / sigmas).reshape(-1, 1)
    is_tensor = isinstance(like, torch.Tensor)
    single = like.dtype == (torch.float32 if is_tensor else np.float32)
    dtype = np.dtype(np.float32 if single else np.float64)
    with np.errstate(over="ignore"):
        scales = np.maximum(scales.astype(dtype), dtype.type(SCALE_FLOORS[dtype]))
    if not np.all(np.isfinite(scales)):
        raise GanbenchError(f"sigma {sigmas.min():.3g} is too small for {dtype}: 1/(2 sigma^2) overflows it")
    if not is_tensor:
        return scales
    return device_constant(scales, like.dtype, like.device)


# Small constants (a sigma grid's scales) kept on each GPU: a scoring call needs the same few several
# times (the kernel's scales, the merges, the refinement, log-sum-exp), and each copy from the host
# costs the host tens of microseconds while the GPU may be waiting for the kernel it is about to launch.
DEVICE_CONSTANTS_KEPT = 64
_device_constants: OrderedDict = OrderedDict()
_device_constants_lock = threading.Lock()


def device_constant(values: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``values`` as a ``dtype`` tensor on ``device``; on a GPU copied once and kept (the last
    DEVICE_CONSTANTS_KEPT), so callers must never write into it.

    Kept per CUDA stream: the copy is queued on the stream current when it is made, which orders it
    before that stream's kernels only (and frees its memory to that stream's pool when dropped)."""
    if device.type != "cuda":
        return torch.as_tensor(values, dtype=dtype)
    values = np.ascontiguousarray(values)
    stream = torch.cuda.current_stream(device).cuda_stream
    key = (values.tobytes(), values.shape, values.dtype.str, dtype, str(device), stream)
    with _device_constants_lock:
        kept = _device_constants.get(key)
        if kept is not None:
            _device_constants.move_to_end(key)
            return kept
    kept = queued_copy(torch.as_tensor(values, dtype=dtype), device)
    with _device_constants_lock:
        _device_constants[key] = kept
        while len(_device_constants) > DEVICE_CONSTANTS_KEPT:
            _device_constants.popitem(last=False)
    return kept


def queued_copy(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device``, the copy queued on the stream rather than waited for.

    From pinned memory the copy is queued: a pageable one would make the host wait for every
    kernel before it (a sync in the middle of a GPU pass, the GPU then idle while Python catches up).
    """
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host


def from_distances(sq_distances, sigmas, index_offset: int = 0) -> BankPartial:
    """The partial of one block of squared distances (n, N) against bank rows offset.. offset+N."""
    xp = _namespace(sq_distances)
    if xp is torch:
        block_min, block_arg = sq_distances.min(dim=1)  # first index among ties
    else:
        block_arg = sq_distances.argmin(axis=1)  # first index among ties
        block_min = np.take_along_axis(sq_distances, block_arg[:, None], axis=1)[:, 0]
    shifted = sq_distances - block_min[:, None]
    scales = half_inverse_variances(sigmas, sq_distances)
    with np.errstate(over="ignore"):  # at tiny sigma far terms' exponents overflow to -inf: exp gives 0, as it should
        sums = [xp.exp(shifted * -scale).sum(1) for scale in scales[:, 0]]
    if sums:
        stacked = xp.stack(sums)
    elif xp is torch:  # nearest neighbours only: no sigma, no exponentials
        stacked = shifted.new_zeros((0, shifted.shape[0]))
    else:
        stacked = np.zeros((0, shifted.shape[0]), dtype=shifted.dtype)
    return BankPartial(block_min, block_arg + index_offset, stacked)


def merge(first: BankPartial, second: BankPartial, sigmas) -> BankPartial:
    """Combine two pieces of the bank; ties in distance keep ``first``'s index (list lower pieces first)."""
    xp = _namespace(first.min_sq_distance)
    new_min = xp.minimum(first.min_sq_distance, second.min_sq_distance)
    scales = half_inverse_variances(sigmas, first.shifted_sums)
    # Each side's sums were shifted by its own minimum; move both to the common one.
    # (min - new_min) >= 0, so the factors are <= 1; an empty side has min = +inf, factor 0.
    # At tiny sigma the exponent may overflow to -inf: factor 0, as it should be.
    with np.errstate(over="ignore"):
        sums = (first.shifted_sums * xp.exp(-(first.min_sq_distance - new_min) * scales)
                + second.shifted_sums * xp.exp(-(second.min_sq_distance - new_min) * scales))
    nearest = xp.where(second.min_sq_distance < first.min_sq_distance,
                       second.nearest_index, first.nearest_index)
    return BankPartial(new_min, nearest, sums)


def log_sum_exp(partial: BankPartial, sigmas):
    """logsumexp_j(-D_ij / (2 sigma^2)) for every sigma and query, shape (S, n)."""
    xp = _namespace(partial.shifted_sums)
    scales = half_inverse_variances(sigmas, partial.shifted_sums)
    with np.errstate(over="ignore"):  # -inf where float64 cannot hold the value: callers refuse it
        return -partial.min_sq_distance * scales + xp.log(partial.shifted_sums)


# A term below e^-40 of its row's largest moves the row's shifted sum (>= 1) by less than
# 4.3e-18 relative; m of them by m * 4.3e-18, below float32's unit roundoff 6e-8 for any
# bank under 10^10 samples, and so inside the L u term of the float32 bound
# (ganbench.scoring.bounds). The CPU path leaves such terms out instead of exponentiating them.
NEGLIGIBLE_EXPONENT = 40.0
# Widest-first, a sigma is exponentiated densely while more than this share of its terms
# count; below it the few that count are gathered once and every narrower sigma works on them.
# Gathering costs about two dense sigmas on a 2048 x 1024 tile (its nonzero scan alone 2-3 ms
# on a 2-core AMD EPYC, a dense sigma 1.2 ms), so only sparse sigmas gather: on MNIST against
# a generator-like bank, 10 / 16 sigmas took 1.375 / 1.519 s at 0.25, 1.318 / 1.428 s at 0.05,
# 1.343 / 1.499 s at 0.02 (docs/performance.md).
DENSE_SHARE = 0.05
FILTER_RATIO = 0.5


def accumulate(running: BankPartial, sq_distances, scales, index_offset: int, shifted, term,
               skip_negligible: bool = False) -> None:
    """Fold one block of squared distances (n, N) into ``running`` in place (torch tensors).

    The same arithmetic as ``merge(running, from_distances(block))``, written in place with two
    caller-owned buffers of the block's shape, for the hot loop of the torch backend.
    ``scales`` holds 1 / (2 sigma^2) per sigma; ``skip_negligible``: see ``add_terms``.
    """
    block_min, block_arg = sq_distances.min(dim=1)  # first index among ties
    new_min = move_to_minimum(running, block_min, block_arg + index_offset, scales)
    if not len(scales):
        return  # nearest neighbours only (k-means, memorisation): no shifted distances needed
    torch.sub(sq_distances, new_min[:, None], out=shifted)  # >= 0, shared by every sigma
    add_terms(running.shifted_sums, shifted, scales, term, skip_negligible)


def move_to_minimum(running: BankPartial, block_min, block_index, scales):
    """Take a block's row minima and their bank indices into ``running``; returns the new minima.

    The old sums move to the new shift (factor <= 1; exactly 0 while the old minimum is +inf);
    ties in distance keep the earlier block's index.
    """
    new_min = torch.minimum(running.min_sq_distance, block_min)
    closer = block_min < running.min_sq_distance
    running.nearest_index.copy_(torch.where(closer, block_index, running.nearest_index))
    factors = torch.exp(-(running.min_sq_distance - new_min)[None, :] * scales[:, None])
    running.shifted_sums.mul_(factors.to(running.shifted_sums.dtype))
    running.min_sq_distance.copy_(new_min)
    return new_min


def add_terms(sums, shifted, scales, term, skip_negligible: bool) -> None:
    """sums[k] += sum_j exp(-shifted_j scales[k]) for every sigma k, over one block (n, N) of shifted distances.

    ``shifted`` (>= 0) may be float32 or integer; ``term`` is a float32 buffer of its shape. With
    ``skip_negligible`` (the CPU, where the exponentials are the cost above the GEMM) terms below
    e^-NEGLIGIBLE_EXPONENT of the running minimum's are left out. That is exact to float32: the
    running minimum is never below the final one, so a term left out is as small against the final
    largest term, and the shifted sums lose at most m e^-40 relative. Paper grid on MNIST: under
    0.2% of the terms count for sigma <= 0.36, 12% at 0.77, 54% at 1.0 (docs/performance.md).
    """
    if not skip_negligible:
        for k in range(len(scales)):
            _dense_sum(sums[k], shifted, float(scales[k]), term)
        return
    values = rows = lengths = None  # the terms that count for the sigma at hand, their rows, each row's count
    filtered_cutoff = math.inf
    for k in torch.argsort(scales).tolist():  # widest first: each next sigma keeps fewer terms
        scale = float(scales[k])
        cutoff = NEGLIGIBLE_EXPONENT / scale  # shifted distance past which a term is negligible
        if values is None:
            # Every 8th row tells whether gathering pays (a wrong guess costs time, not accuracy).
            sample = shifted[::8]
            if torch.count_nonzero(sample <= cutoff) > DENSE_SHARE * sample.numel():
                _dense_sum(sums[k], shifted, scale, term)
                continue
            flat_index = torch.le(shifted, cutoff).view(-1).nonzero().squeeze(1)
            values, filtered_cutoff = shifted.reshape(-1).index_select(0, flat_index), cutoff
            rows = torch.div(flat_index, shifted.shape[1], rounding_mode="floor")
            lengths = torch.bincount(rows, minlength=shifted.shape[0])
        elif cutoff < FILTER_RATIO * filtered_cutoff:
            # Gathering again costs a pass over the kept terms: worth it once the cutoff has halved.
            inside = (values <= cutoff).nonzero().squeeze(1)
            values, rows, filtered_cutoff = values[inside], rows[inside], cutoff
            lengths = torch.bincount(rows, minlength=shifted.shape[0])
        # values <= filtered_cutoff <= cutoff / FILTER_RATIO: every exponent is >= -80, where exp
        # stays on its fast path (see _dense_sum), so no clamp is needed.
        exponents = torch.mul(values, -scale)
        # Summed per row for the block first, then added once, as the dense path does: the same
        # rounding bound. The kept terms are in row order (nonzero's), so each row's are one
        # segment: a segmented sum, almost 4x faster than index_add_'s scattered one on the CPU.
        sums[k] += torch.segment_reduce(exponents.exp_(), "sum", lengths=lengths)


def _dense_sum(sums, shifted, scale: float, term) -> None:
    """sums += sum_j exp(-shifted_j * scale), every term of the block."""
    torch.mul(shifted, -scale, out=term)
    # Vectorised exp takes a slow path below float32's normal range (measured 13x slower
    # on this CPU); clamping at -87 (exp = 1.6e-38) adds at most N * 1.6e-38 to a sum >= 1.
    sums += term.clamp_(min=EXP_FLOOR).exp_().sum(dim=1)
