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
    column = torch.as_tensor(scales, dtype=like.dtype)
    if like.device.type == "cuda":
        # From pinned memory the copy is queued on the stream: a pageable one would make the
        # host wait for every kernel before it (a sync in the middle of a GPU pass).
        return column.pin_memory().to(like.device, non_blocking=True)
    return column


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


def accumulate(running: BankPartial, sq_distances, scales, index_offset: int, shifted, term) -> None:
    """Fold one block of squared distances (n, N) into ``running`` in place (torch tensors).

    The same arithmetic as ``merge(running, from_distances(block))``, written in place with two
    caller-owned buffers of the block's shape, for the hot loop of the torch backend.
    ``scales`` holds 1 / (2 sigma^2) per sigma.
    """
    block_min, block_arg = sq_distances.min(dim=1)  # first index among ties
    new_min = torch.minimum(running.min_sq_distance, block_min)
    closer = block_min < running.min_sq_distance  # strictly: ties keep the earlier block's index
    running.nearest_index.copy_(torch.where(closer, block_arg + index_offset, running.nearest_index))
    # Old sums move to the new shift (factor <= 1; exactly 0 while the old min is +inf).
    running.shifted_sums.mul_(torch.exp(-(running.min_sq_distance - new_min)[None, :] * scales[:, None]))
    running.min_sq_distance.copy_(new_min)
    torch.sub(sq_distances, new_min[:, None], out=shifted)  # >= 0, shared by every sigma
    for k in range(len(scales)):
        torch.mul(shifted, -scales[k], out=term)
        # Vectorised exp takes a slow path below float32's normal range (measured 13x slower
        # on this CPU); clamping at -87 (exp = 1.6e-38) adds at most N * 1.6e-38 to a sum >= 1.
        running.shifted_sums[k] += term.clamp_(min=EXP_FLOOR).exp_().sum(dim=1)
