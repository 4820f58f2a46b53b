"""Error bounds of ganbench's floating-point paths, derived from the arithmetic.

Every test that compares a float32 result with the float64 reference, or two results computed
with other thread counts, processes, tile shapes, backends or devices, takes its tolerance from
this module. The bounds are worst cases over every summation order and blocking: a float32 GEMM
on another CPU (AMD and Intel BLAS block their products differently, and by thread count) may
round anywhere inside them, so a test within them passes on every machine. They assume torch's
default float32 matmul precision ("highest"): "medium" lets oneDNN use bfloat16 products on CPUs
with AMX, far outside them. Exact comparisons remain only where the two results come from the same
operations on the same operands.

Notation: u is the unit roundoff, 2^-24 for float32 and 2^-53 for float64, and
gamma_n = n u / (1 - n u) bounds the relative error of a sum of n terms, or of a dot product
of length n, in any order (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
Lemma 3.1 and Eq. 3.5). For a query x and a bank row s, both centred by the bank mean c,
Nx = ||x - c||^2 and Ns = ||s - c||^2; then |x . s| <= (Nx + Ns) / 2 and
D = ||x - s||^2 <= 2 (Nx + Ns). The Parzen estimator (docs/paper.md, "The Parzen-window
protocol") is
    log p(x) = logsumexp_j(-D_j / (2 sigma^2)) - log m - d log(sigma sqrt(2 pi)),
computed by every backend as -mu c + log S with c = 1 / (2 sigma^2), mu the smallest D and
S = sum_j exp(-(D_j - mu) c) the shifted sum, whose largest term is exactly 1.

1. ``sq_distance_error``: the float paths compute D = Nx + Ns - 2 x . s on centred data.
   Rounding the centred coordinates moves each by at most u of itself, so D by at most
   4u (Nx + Ns); the norms are summed in float64 and rounded once (u (Nx + Ns)). The product
   -2 x . s may be accumulated together with the addend Ns (torch's addmm does; the kernel adds
   the norms after the product, which this also covers): a sum of d + 1 terms of total size at
   most Ns + 2 sum |x_k s_k| <= Nx + 2 Ns, off by gamma_(d+1) (Nx + 2 Ns). Adding the other norm
   rounds a value of at most 2 (Nx + Ns) (2u (Nx + Ns)). One more u covers second-order terms,
   and one more the float64 value a test compares with (its error, ~d 2^-53 D, is far smaller):
       |D_computed - D| <= gamma_(d+1) (Nx + 2 Ns) + 9u (Nx + Ns).
   The Triton kernel's tf32x3 operands (kernels/parzen_operands.py) make x . s a dot of length
   3d, [x_hi, x_lo, x_hi] . [s_lo, s_hi, s_hi], that leaves out x_lo s_lo. Round to nearest tf32
   keeps |x_lo| <= a |x| with a = 2^-11, so the missing term is at most a^2 = 4u of
   sum |x_k s_k| (4u (Nx + Ns) in D), and the longer dot's terms sum to at most
   (1 + a)(1 + 3a) <= 1 + 5a times sum |x_k s_k|: gamma_(d+1) becomes (1 + 5a) gamma_(3d+1).
   (Under the interpreter tl.dot is a plain float32 product; on a GPU the tf32 MMA also
   truncates x_lo, which benchmarks/gpu_check.py measures against float64.)
   Without the data, values in [low, high] bound every centred squared norm by
   d (high - low)^2, since the mean lies in the same box (``range_sq_norm``).
2. ``exponent_error``: each term's exponent (D_j - mu) c is rounded three times (the
   subtraction, the product, and c itself), a relative error of 3u on a value of at most
   2 (Nx + Ns) c; the running rescalings exp(-(old mu - new mu) c) of a blocked pass round the
   same way, and their drops sum to at most the first mu <= 2 (Nx + Ns); the final -mu c + log S
   rounds twice more (u mu c and u |log p|, the latter inside item 4's float64 term). As an
   error in D this is at most 16u (Nx + Ns).
3. ``shifted_sum_log_error``: every exp or exp2 of the backends is taken to be within 2 ulp
   (4u relative; torch's vectorised exp is within 1 ulp, CUDA's ex2.approx within 2). With
   bank blocks of b rows, a term of S meets one exp (4u), at most b - 1 additions inside its
   block, and per block merge one addition, one exp and one product (6u): S is off by at most
   (b + 3 + 6 ceil(m / b)) u relative, which is largest at b = 1, (6m + 4) u, for an unknown
   blocking. Terms below float32's normal range are clamped or flushed, at most m * 1.2e-38
   against S >= 1. log(1 + t) moves by at most t / (1 - t).
4. ``log_sum_exp_error`` and ``log_likelihood_bound``: the log-sum-exp is 1-Lipschitz in the max norm of its arguments,
   so an error e in every D moves log p by at most e c (plus the sum's rounding). After the
   exact nearest refinement of the float32 backends (parzen.refine_nearest) the nearest term is
   exact and only the others, of total weight 1 - w, keep their error: the ratio of the
   computed to the exact S lies in [w + (1 - w) e^(-e c), w + (1 - w) e^(e c)], so log p moves by
   at most (1 - w)(e^(e c) - 1). The float64 normalising constant log m + d log(sigma sqrt(2 pi))
   and its subtraction add at most 4 u_64 of its size (``normalising_constant_error``).
5. Two computations each within its bound of the same exact values differ by at most the sum
   of the bounds; so do the means of N such values (``mean_difference_bound``, plus the float64
   summation, gamma_N of each mean). The standard errors std / sqrt(N) (ddof 0) differ by at most
   ||a - b||_2 / N: centring is a projection, so std is 1-Lipschitz in ||.||_2 / sqrt(N).
   A choice by argmax (sigma by the validation means) is the same for both when the best mean
   leads every other by more than both bounds (``argmax_is_decided``).
6. ``generator_error``: a float32 linear layer y = W h + b is off by at most
   gamma_(n+1) (|W| |h| + |b|) for fan-in n, plus |W| e for an error e in its input; ReLU is
   1-Lipschitz and exact; the sigmoid has slope at most 1/4 and its own rounding (an exp, an
   addition and a division) is taken to be at most 8u of its output.
"""
from __future__ import annotations

import math

import numpy as np
import torch

UNIT_ROUNDOFF_FLOAT32 = 2.0 ** -24
UNIT_ROUNDOFF_FLOAT64 = 2.0 ** -53
TF32_LOW_PART = 2.0 ** -11        # |x_lo| <= 2^-11 |x| after round to nearest tf32
EXP_UNITS = 4                     # exp / exp2 within 2 ulp: 4 u relative
DISTANCE_UNITS = 9                # centring 4, norms 1, last addition 2, second order 1, float64 check 1
EXPONENT_UNITS = 16               # term exponents 6, rescalings 6, the final -mu c + log S 4
SIGMOID_UNITS = 8                 # exp, addition, division, each within 2 ulp


def unit_roundoff(dtype) -> float:
    """u of the working precision: 2^-24 for float32, 2^-53 for float64."""
    if np.dtype(dtype) == np.float32:
        return UNIT_ROUNDOFF_FLOAT32
    if np.dtype(dtype) == np.float64:
        return UNIT_ROUNDOFF_FLOAT64
    raise ValueError(f"no unit roundoff for {dtype}")


def gamma(n: int, dtype=np.float32) -> float:
    """gamma_n = n u / (1 - n u): the relative error bound of a length-n sum or dot product."""
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"gamma_{n} is unbounded in {np.dtype(dtype)}")
    return nu / (1 - nu)


# ---- bounds from sizes, norms and widths -----------------------------------------------------------

def sq_distance_error(dimension: int, query_sq_norms, bank_sq_norm, *, dtype=np.float32,
                      split_tf32x3: bool = False) -> np.ndarray:
    """Bound on |D_computed - D| (item 1 of the module docstring) for queries of centred squared
    norms ``query_sq_norms`` against bank rows of centred squared norm at most ``bank_sq_norm``."""
    u = unit_roundoff(dtype)
    query_sq_norms = np.asarray(query_sq_norms, np.float64)
    if split_tf32x3:
        product = (1 + 5 * TF32_LOW_PART) * gamma(3 * dimension + 1, dtype)
        rest = DISTANCE_UNITS * u + 4 * u  # the missing x_lo s_lo
    else:
        product, rest = gamma(dimension + 1, dtype), DISTANCE_UNITS * u
    return product * (query_sq_norms + 2 * bank_sq_norm) + rest * (query_sq_norms + bank_sq_norm)


def range_sq_norm(dimension: int, low: float, high: float) -> float:
    """Largest centred squared norm of rows with every value in [low, high]: d (high - low)^2."""
    return dimension * (high - low) ** 2


def exponent_error(query_sq_norms, bank_sq_norm, *, dtype=np.float32) -> np.ndarray:
    """The rounding of the exponents and rescalings, as an error in D (item 2)."""
    return EXPONENT_UNITS * unit_roundoff(dtype) * (np.asarray(query_sq_norms, np.float64) + bank_sq_norm)


def shifted_sum_log_error(count: int, block_rows: int | None = None, *, dtype=np.float32) -> float:
    """Bound on |log S_computed - log S| from the exponentials and additions (item 3).

    ``block_rows``: the bank rows a backend sums before rescaling (torch: its bank block; the
    kernel: BLOCK_N); None takes the worst blocking.
    """
    u = unit_roundoff(dtype)
    if block_rows is None:
        units = max(6 * count + 4, count + 9)
    else:
        rows = min(block_rows, count)
        units = rows + EXP_UNITS - 1 + 6 * math.ceil(count / rows)
    if np.dtype(dtype) == np.float32:
        # The CPU torch path leaves out terms below e^-40 of the row's largest (ganbench.scoring.partials):
        # at most count e^-40 relative.
        units += count * math.exp(-40.0) / u
    relative = units * u
    return relative / (1 - relative)


def normalising_constant_error(count: int, dimension: int, sigmas) -> np.ndarray:
    """The float64 rounding of log m + d log(sigma sqrt(2 pi)), per sigma, (S, 1)."""
    sigmas = np.asarray(sigmas, np.float64).reshape(-1, 1)
    size = math.log(count) + dimension * np.abs(np.log(sigmas * math.sqrt(2 * math.pi)))
    return 4 * UNIT_ROUNDOFF_FLOAT64 * size


def half_inverse_variances(sigmas) -> np.ndarray:
    """c = 1 / (2 sigma^2) per sigma, as an (S, 1) column."""
    return 0.5 / np.asarray(sigmas, np.float64).reshape(-1, 1) ** 2


def log_sum_exp_error(distance_error, sigmas, count: int, *, block_rows: int | None = None, dtype=np.float32,
                      nearest_weight=None, exponent=None) -> np.ndarray:
    """Bound (S, n) on |logsumexp_computed - logsumexp| for per-query distance errors (n,) (item 4).

    ``exponent``: the exponents' rounding as an error in D (``exponent_error``), added to
    ``distance_error``. ``nearest_weight`` (S, n): the exact weight of the nearest term that a
    refined pass (parzen.refine_nearest) computes exactly; None for an unrefined pass.
    """
    total = np.asarray(distance_error, np.float64) + (0.0 if exponent is None else exponent)
    moved = total[None, :] * half_inverse_variances(sigmas)
    if nearest_weight is not None:
        moved = (1 - np.asarray(nearest_weight, np.float64)) * np.expm1(moved)
    return moved + shifted_sum_log_error(count, block_rows, dtype=dtype)


def nearest_weight(nearest_sq_distance, log_sum_exp, sigmas) -> np.ndarray:
    """exp(-D_nearest c) / sum_j exp(-D_j c), (S, n), from exact float64 values."""
    return np.exp(-np.asarray(nearest_sq_distance, np.float64)[None, :] * half_inverse_variances(sigmas)
                  - np.asarray(log_sum_exp, np.float64))


# ---- bounds from the data ------------------------------------------------------------------------------

def centred_sq_norms(points, centre) -> np.ndarray:
    """Squared norms of the rows centred by ``centre``, widened for its float32 rounding.

    The code subtracts the float32 mean of a float32 bank, which differs from the float64 mean
    here by at most u ||centre||: the norms grow to (||p - centre|| + u ||centre||)^2.
    """
    points, centre = np.asarray(points, np.float64), np.asarray(centre, np.float64)
    widening = UNIT_ROUNDOFF_FLOAT32 * np.linalg.norm(centre)
    return (np.sqrt(((points - centre) ** 2).sum(axis=1)) + widening) ** 2


def _bank_pieces(bank, chunk_rows: int | None):
    bank = np.asarray(bank, np.float64)
    rows = chunk_rows or len(bank)
    return [bank[start:start + rows] for start in range(0, len(bank), rows)]


def distance_bound(x, bank, *, dtype=np.float32, split_tf32x3: bool = False, chunk_rows: int | None = None,
                   with_exponents: bool = False) -> np.ndarray:
    """Per-query bound (n,) on the error of every computed squared distance to ``bank``.

    ``chunk_rows``: the bank is scored in pieces of that many rows, each centred by its own mean
    (``ganbench.scoring.streaming``), so the bound is the largest over the pieces.
    """
    x = np.asarray(x, np.float64)
    bounds = []
    for piece in _bank_pieces(bank, chunk_rows):
        centre = piece.mean(axis=0)
        query_norms, bank_norm = centred_sq_norms(x, centre), centred_sq_norms(piece, centre).max()
        bound = sq_distance_error(x.shape[1], query_norms, bank_norm, dtype=dtype, split_tf32x3=split_tf32x3)
        if with_exponents:
            bound = bound + exponent_error(query_norms, bank_norm, dtype=dtype)
        bounds.append(bound)
    return np.max(bounds, axis=0)


def log_likelihood_bound(x, bank, sigmas, *, dtype=np.float32, split_tf32x3: bool = False,
                         chunk_rows: int | None = None, block_rows: int | None = None,
                         nearest_weights=None) -> np.ndarray:
    """Bound (S, n) on |computed log p - exact log p| for every query and sigma (items 1 to 4).

    Pieces of ``chunk_rows`` are merged in float64 by a log-sum-exp, 1-Lipschitz again, so the
    largest piece bound holds for the merge. ``nearest_weights`` (S, n) from ``nearest_weight``
    gives the bound of a refined pass (only without chunks: each chunk refines its own nearest).
    """
    if nearest_weights is not None and chunk_rows is not None:
        raise ValueError("a refined bound needs the nearest weight of each chunk")
    distances = distance_bound(x, bank, dtype=dtype, split_tf32x3=split_tf32x3, chunk_rows=chunk_rows,
                               with_exponents=True)
    count = min(chunk_rows or len(bank), len(bank))
    lse = log_sum_exp_error(distances, sigmas, count, block_rows=block_rows, dtype=dtype,
                            nearest_weight=nearest_weights)
    return lse + normalising_constant_error(len(bank), np.shape(x)[1], sigmas)


def float32_log_likelihood_bound(x, bank, sigmas, split_tf32x3: bool = False) -> np.ndarray:
    """Per-sigma bound (S, 1) for every query at once: the largest of ``log_likelihood_bound``."""
    return log_likelihood_bound(x, bank, sigmas, split_tf32x3=split_tf32x3).max(axis=1, keepdims=True)


def float32_distance_bound(x, bank, split_tf32x3: bool = False) -> float:
    """One bound on the float32 error of every squared distance between ``x`` and ``bank``."""
    return float(distance_bound(x, bank, split_tf32x3=split_tf32x3).max())


# ---- two computations and their statistics ------------------------------------------------------------------

def mean_difference_bound(point_bounds, values_size: float) -> float:
    """Bound on |mean(a) - mean(b)| when |a_i - b_i| <= point_bounds[i] (item 5).

    Pass the sum of both computations' bounds (twice one bound for two float32 runs; the float32
    bound alone against the float64 reference). ``values_size`` bounds mean |a|: each float64 mean
    adds gamma_N of it. From a reported mean and standard error, mean |a| <= |mean| + std, with
    std = standard_error * sqrt(N).
    """
    bounds = np.asarray(point_bounds, np.float64).reshape(-1)
    return float(bounds.mean() + 2 * gamma(bounds.size + 1, np.float64) * values_size)


def standard_error_difference_bound(point_bounds, standard_error: float) -> float:
    """Bound on |std(a) - std(b)| / sqrt(N) (ddof 0) when |a_i - b_i| <= point_bounds[i] (item 5):
    ||a - b||_2 / N, plus the float64 rounding of each std (gamma_(N + 3) of it)."""
    bounds = np.asarray(point_bounds, np.float64).reshape(-1)
    return float(np.sqrt(np.sum(bounds**2)) / bounds.size + 2 * gamma(bounds.size + 3, np.float64) * standard_error)


def argmax_is_decided(means, margins) -> bool:
    """True when the largest mean exceeds every other by more than their ``margins`` together:
    then every computation within those margins picks the same position."""
    means, margins = np.asarray(means, np.float64), np.asarray(margins, np.float64)
    best = int(np.argmax(means))
    others = np.arange(len(means)) != best
    return bool(np.all(means[best] - means[others] > margins[best] + margins[others]))


def assert_parzen_scores_agree(first: dict, second: dict, valid_bounds, test_bounds, valid_sizes,
                               test_size: float) -> None:
    """Two results of the Parzen protocol for the same bank and data agree within derived bounds.

    ``first`` and ``second`` hold "valid_means" (S,) over the sigma grid, "sigma", "mean" and
    "standard_error" (ddof 0). ``valid_bounds`` (S, n_valid) and ``test_bounds`` (n_test,) bound
    |first - second| per point (the sum of both computations' bounds); ``valid_sizes`` (S,) and
    ``test_size`` bound the mean |value| of each set, for the float64 rounding of the means.
    The same sigma is required only where the validation means decide it; when they do not, the
    test's data are not fit to check a choice and the assertion says so.
    """
    margins = np.array([mean_difference_bound(bounds, size) for bounds, size in zip(valid_bounds, valid_sizes)])
    first_means, second_means = (np.asarray(run["valid_means"], np.float64) for run in (first, second))
    assert np.all(np.abs(first_means - second_means) <= margins), (first_means - second_means, margins)
    assert argmax_is_decided(first_means, margins), "the best sigma is a near-tie: choose data that decide it"
    assert first["sigma"] == second["sigma"]
    assert abs(first["mean"] - second["mean"]) <= mean_difference_bound(test_bounds, test_size)
    allowed = standard_error_difference_bound(test_bounds, max(first["standard_error"], second["standard_error"]))
    assert abs(first["standard_error"] - second["standard_error"]) <= allowed


def exact_sq_distances(x, bank) -> np.ndarray:
    """All squared distances (n, m) in float64 by direct differences, one query at a time."""
    x, bank = np.asarray(x, np.float64), np.asarray(bank, np.float64)
    return np.stack([((bank - row) ** 2).sum(axis=1) for row in x])


def nearest_is_within_bound(x, bank, chosen, distance_bounds) -> np.ndarray:
    """Per query: does bank[chosen] lie within 2 e of the exact nearest distance?

    A float path picks the row of its smallest computed distance, and every computed distance is
    within e of the exact one, so its pick is at most 2 e farther than the exact nearest: two
    paths can pick different rows only among such near-ties.
    """
    distances = exact_sq_distances(x, bank)
    picked = np.take_along_axis(distances, np.asarray(chosen).reshape(-1, 1), axis=1)[:, 0]
    return picked - distances.min(axis=1) <= 2 * np.asarray(distance_bounds, np.float64)


# ---- the generator -------------------------------------------------------------------------------------------

@torch.no_grad()
def generator_error(generator, noise) -> np.ndarray:
    """Bound (n, 784) on |G_float32(z) - G(z)| for the given float32 weights and noise (item 6).

    Runs the layers in float32 to get the intermediate values, and carries the bound in float64.
    Every float32 run is within the bound of the exact values, so |h_any| <= |h_here| + 2 e.
    """
    u = UNIT_ROUNDOFF_FLOAT32
    hidden = torch.as_tensor(noise, dtype=torch.float32)
    error = np.zeros(hidden.shape)
    for layer in generator.net:
        if isinstance(layer, torch.nn.Linear):
            weights = np.abs(layer.weight.double().numpy())
            bias = np.abs(layer.bias.double().numpy())
            size = np.abs(hidden.double().numpy()) + 2 * error
            error = error @ weights.T + gamma(layer.in_features + 1) * (size @ weights.T + bias)
        elif not isinstance(layer, torch.nn.ReLU):
            raise TypeError(f"no error bound for {type(layer).__name__}")
        hidden = layer(hidden)
    output = torch.sigmoid(hidden).double().numpy()
    return error / 4 + SIGMOID_UNITS * u * (output + error / 2)
