"""Which rows of a float32 pass ganbench cannot vouch for, and so rescores with the float64 reference.

The float32 paths (the torch backend's GEMM, the Triton kernel's tf32x3 and ieee modes) form
D = ||x - c||^2 + ||s - c||^2 - 2 (x - c).(s - c) about the bank mean c and then replace each query's
nearest distance by its exact float64 value (``parzen.refine_nearest``). Three kinds of rows escape what
that refinement fixes; ``parzen.finish_pass`` finds them in the pass's one copy to the host and rescores
them with the float64 reference (bank and all, on the pass's device), with one line on stderr (docs/precision.md).

Rows far from the centre. The error on a pair is up to K u (||x - c||^2 + ||s - c||^2)
(``ganbench.scoring.bounds``, with the pair's own norms). The terms that can move a query's
log-sum-exp lie within reach r = 40 / scale of its nearest distance D (further ones are below e^-40 of
the largest; with no sigma, the nearest alone: r = 0), so their samples have ||s - c|| <= ||x - c|| +
sqrt(D + r) and their error is at most
    K u (R + (sqrt(R) + sqrt(D + r))^2),   R = ||x - c||^2,
where a centre at the query itself would leave K u (D + r). Their ratio is what the shared centre costs
the row, and the float32 paths' errors grow with it: 50 points against a bank of 1,000 in [0, 0.3]^784
with one sample moved to 1e2, 3e2 or 1e4 in every coordinate (sigma 0.1, torch backend) have ratios
~5, ~20 and ~14,000 and missed the float64 reference by 8e-5, 4e-4 and 0.34 nats. On MNIST the ratio
is at most 58 for 2,000 test images against 10,000 training images at any sigma, and at most 313 for
training images scored against a bank that holds them at the paper's smallest sigma 0.1 (1,202 at
0.05, 3,283 at 0.03). Past 2^10 (10 of float32's 24 bits spent on the centre alone) a row is
rescored, if float32 saw another term within reach or its error could have hidden one: alone, the
nearest term, exact after refinement, carries the sum (those training images at sigma 0.03 are within
1e-10 nats). A query at distance exactly 0 with no sigma has found its nearest sample whatever the centre.

Rows the refinement leaves loose. Refinement measures one float32 error a row, its nearest distance's
Delta = |D_exact - D_float32|; the row's other terms that matter have errors of the same kind (the
same query norm, samples within reach) and move its log-sum-exp by about scale x Delta x share, share =
(S - 1) / S the weight, as float32 summed it, of the terms refinement did not make exact (copies of the
nearest sample, near-ties). Delta is one sample and may be tiny by luck (a nearest sample at the bank
mean itself has its distance R rounded once, within u R / 2), so u times the centre's cost above, at
each sigma's own reach, is its floor: one rounding of the norms the expanded form adds. A row where
``ESTIMATE_MARGIN`` (2.5) times the estimate passes 1e-3 nats at some sigma of the grid is rescored, and so is
a row whose refinement was refused (``refine_nearest``: a near-tie float32 cannot order). On 1,000 MNIST test
images against 10,000 training images (the torch backend's float32 GEMM) the estimate followed the error of the
worst rows within a factor 1.3 (9.3e-4 nats against an estimate of 1.2e-3 at sigma 0.05); of 2,000, the
estimate passes 1e-3 at sigma >= 0.1 for none (largest 4.2e-4) and 2.5 times it for one. In low dimensions at
sigmas about the nearest-neighbour spacing the errors reached 2.06 times the estimate (d = 3) and rows 1.2e-3
nats off went unrescored (d = 2, 5 of 10,000) until the margin. Found by fuzzing and now rescored: ten copies of
one sample in a bank of 40 (d = 784, queries 0.05 a coordinate from it), 2.2 nats off at sigma 1e-3;
a query 1e10 from a bank in [0, 1], 3.6e9 nats off with every float32 distance rounding alike (S = 32
before refinement); 20 copies of a sample 0.01 beyond a nearest sample at the bank mean (R = D = 1e4),
0.38 nats off at sigma 0.0434 with little to correct; perturbed copies (3e-5 a coordinate), 0.03 nats
off at sigma 0.005.

Rows whose error could hide a term. The share above is float32's own view of the sum, and means
nothing once the errors could push a term that matters out of it (``HIDING_NATS``): those rows are
rescored whatever float32 summed.

Not checked: which of two samples float32 calls nearest when their distances differ
by less than its error (relative 3e-4 seen at R = 1e4): the log-likelihood is rescored when that error
matters at the grid's sigmas, the index is the one float32 chose (``neighbours.nearest`` with
``exact_ranking`` ranks exactly).
"""
from __future__ import annotations

import math

import torch

from ganbench.scoring import bounds, partials

CENTRING_EXCESS_LIMIT = 2.0**10
LOOSE_NATS = 1e-3
# The estimate below is of a typical error: the rows' actual errors reached 2.06 times it (uniform data in d = 3,
# 10,000 x 10,000 at sigmas about the nearest-neighbour spacing; 1.7 in d = 2, 1.2 on MNIST in float64), so a row
# is rescored where this many times it passes LOOSE_NATS: no row more than 1e-3 nats off was left in those trials.
# Not 4: the benchmark's MNIST-like float data then rescored 191 rows of 10,000 (1.25 -> 1.50 s), at 2.5 83 (1.29 s).
# Not a bound: data in two clusters 10-15 standard deviations either side of the bank mean (d = 30-100, sigma 0.1
# of the neighbour distance) left rows 1.0-1.6e-3 nats off, 3.6-5.2 times the estimate, its correction small by
# luck and u x cost below the other terms' errors; a floor of 3 u x cost caught them (5.5e-4 at most) but rescored
# 371 of the benchmark's rows (docs/precision.md).
ESTIMATE_MARGIN = 2.5
FLOAT32_UNIT = bounds.UNIT_ROUNDOFF["float32"]
# Below this a float32 pass's view of its own sum can be trusted. A term that matters (within
# log(1 / LOOSE_NATS) = 6.9 nats of the nearest) vanishes from a float32 sum once its exponent passes
# log(1 / u) = 16.6 nats, an error of 9.7 nats; the expanded form's errors measured up to 8.5 u x cost
# (a fuzzing review, torch.addmm at d = 64 to 3,072), so with a factor 4 more, 32 u cost, scale x u x cost
# must stay below 9.7 / 32 = 0.30. A query 1000 from a bank of three samples (R ~ D ~ 1e6, float32's grid
# 0.0625 there) saw a term at 1 nat as one at 18.75: its sum S = 1 exactly, 0.31 nats off, at 72.
HIDING_NATS = (math.log(1 / FLOAT32_UNIT) - math.log(1 / LOOSE_NATS)) / 32


def centre_cost(centred_query_norms: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
    """R + (sqrt(R) + sqrt(D + r))^2 for ``near`` = D + r (any shape broadcasting against the (n,) norms):
    with u, a typical error of the terms within reach (the module doc)."""
    norms = centred_query_norms.to(torch.float64)
    return norms + (norms.sqrt() + near.sqrt()) ** 2


def far_from_centre(cost: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
    """Whether the shared centre costs more than CENTRING_EXCESS_LIMIT (the module doc): ``cost`` from
    ``centre_cost`` for ``near`` = D + r, both float64 of one shape, on one device. A query at distance
    exactly 0 with no reach has found its nearest sample whatever the centre."""
    return (cost > CENTRING_EXCESS_LIMIT * near) & (near > 0)


def rows_to_rescore(centred_query_norms: torch.Tensor, float32_minima: torch.Tensor, minima: torch.Tensor,
                    refused: torch.Tensor | None, log_shifted_sums: torch.Tensor, grid) -> torch.Tensor:
    """(n,) bool on the pass's device: the rows ``parzen.finish_pass`` rescores in float64.

    ``float32_minima`` and ``log_shifted_sums`` ((S, n) float64) are the pass's as float32 computed them,
    before refinement (after it the others' weight is seen through the very correction it is meant to judge:
    a query 1e10 from its bank had every term tied in float32, S = 32, and none left beside the nearest
    after); ``minima`` the nearest distances after refinement (exact where it was accepted), ``refused`` the
    rows whose refinement was refused (None: no refinement ran).

    At each sigma a row is rescored where its error could have hidden a term from float32's sum (scale x u
    x cost past HIDING_NATS: the share below then means nothing); where it lies far from the centre and
    float32 saw another term within reach of the nearest ((S - 1) / S > 0; alone, its nearest term is exact
    after refinement and carries the sum: MNIST's training images against a bank holding them at sigma
    0.03 reach ratios of 3,283 and float32 is within 1e-10 nats); and where the refinement's correction,
    with u x cost as its floor (the correction is one sample of the row's error: a nearest sample at the
    bank mean has its distance R rounded once, within u R / 2 and maybe 0), times the scale and the others'
    share, passes LOOSE_NATS.
    """
    if not len(grid):
        near = minima.to(torch.float64)
        return far_from_centre(centre_cost(centred_query_norms, near), near)
    scales = partials.half_inverse_variances(grid, log_shifted_sums)
    near = minima.to(torch.float64)[None, :] + partials.NEGLIGIBLE_EXPONENT / scales
    cost = centre_cost(centred_query_norms, near)
    others = -torch.expm1(-log_shifted_sums)  # (S - 1) / S, in [0, 1)
    typical = FLOAT32_UNIT * cost
    hidden = scales * typical > HIDING_NATS
    far = far_from_centre(cost, near) & (others > 0)
    correction = (minima - float32_minima).abs()[None, :]
    loose = ESTIMATE_MARGIN * scales * torch.maximum(correction, typical) * others > LOOSE_NATS
    rows = (hidden | far | loose).any(dim=0)
    return rows if refused is None else rows | refused
