"""Centring by the bank mean: the one preparation every float32 distance path shares.

Imported by the torch backend and by the Triton kernels' launchers alike, so neither reaches
into the other.
"""
from __future__ import annotations

import torch


def centre_by_bank_mean(query: torch.Tensor, bank: torch.Tensor, dtype: torch.dtype,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtract the bank mean (accumulated in float64) from both, in the working dtype.

    Distances are unchanged, but the norms in ||x||^2 + ||s||^2 - 2 x.s shrink, which cuts
    the cancellation of the expanded form (MNIST: mean squared norm ~100 -> ~52). The same
    rounded mean is subtracted from every point, so its rounding cancels in every distance;
    float32 inputs are centred in float32 (no float64 copy of a large bank), float64 inputs
    in float64 before one rounding.
    """
    bank = bank.to(device)
    query = query.to(device)
    mean = column_mean(bank)
    if bank.dtype == torch.float64 or query.dtype == torch.float64:
        return (query.double() - mean).to(dtype), (bank.double() - mean).to(dtype)
    mean = mean.to(dtype)
    return query.to(dtype) - mean, bank.to(dtype) - mean


MEAN_CHUNK_ROWS = 512  # rows summed at once on the CPU: a piece of d = 784 float32 rows stays in cache


def column_mean(rows: torch.Tensor) -> torch.Tensor:
    """The mean of the rows, (d,) in float64 (accumulated in float64 whatever the rows' dtype).

    On the CPU, summed a cache-sized piece of rows at a time: torch's own float64 mean over the
    first axis of float32 rows took 250 ms for MNIST's 50,000 training images on this project's
    2-core CPU, the pieces 9.5 ms (for 8-bit data both are exact, so the same bits).
    """
    if rows.device.type != "cpu" or not len(rows):
        return rows.mean(dim=0, dtype=torch.float64)
    total = torch.zeros(rows.shape[1:], dtype=torch.float64)
    for piece in rows.split(MEAN_CHUNK_ROWS):
        total += piece.sum(dim=0, dtype=torch.float64)
    return total / len(rows)


# ---- where one centre is not enough ----------------------------------------------------------------
# The float32 expanded form errs on a pair by up to K u (||x - c||^2 + ||s - c||^2) (ganbench.scoring.bounds,
# with the pair's own norms): the further the bank mean c lies from a query's neighbourhood, the more of
# float32's 24 bits the cancellation takes. The terms that can move a query's log-sum-exp lie within
# reach r = 40 / scale of its nearest distance D (further ones are below e^-40 of the largest), so their
# samples have ||s - c|| <= ||x - c|| + sqrt(D + r) and their error is at most
#     K u (R + (sqrt(R) + sqrt(D + r))^2),   R = ||x - c||^2,
# where a centre at the query itself would leave K u (D + r). Their ratio is what the shared centre
# costs this row, and the float32 paths' errors grow with it: 50 points against a bank of 1,000 in
# [0, 0.3]^784 with one sample moved to 1e2, 3e2 or 1e4 in every coordinate (sigma 0.1, torch backend)
# have ratios ~5, ~20 and ~14,000 and miss the float64 reference by 8e-5, 4e-4 and 0.34 nats. On MNIST
# the ratio is at most 58 for 2,000 test images against 10,000 training images at any sigma (errors ~1e-4
# nats at sigma 0.1), and at most 313 for training images scored against a bank that holds them at the
# paper's smallest sigma 0.1 (1,202 at 0.05, 3,283 at 0.03), where the nearest term, exact after
# refinement (``parzen.refine_nearest``), carries the sum. Rows past 2^10 (10 of float32's 24 bits
# spent on the centre alone) are rescored in float64 (``parzen.finish_pass``).
CENTRING_EXCESS_LIMIT = 2.0**10


def rows_far_from_centre(centred_query_norms: torch.Tensor, min_sq_distance: torch.Tensor,
                         reach: float) -> torch.Tensor:
    """(n,) bool: the queries whose shared centre costs more than CENTRING_EXCESS_LIMIT (see above).

    ``reach`` is r = 40 / scale at the grid's largest scale 1 / (2 sigma^2), in the tensors' units (a
    query at distance 0 with nothing else within reach then still has D + r > 0); the tensors share a device.
    """
    norms = centred_query_norms.to(torch.float64)
    near = min_sq_distance.to(torch.float64) + reach
    cost = norms + (norms.sqrt() + near.sqrt()) ** 2
    return cost > CENTRING_EXCESS_LIMIT * near
