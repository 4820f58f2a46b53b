"""Error bounds of the float32 paths, derived from the arithmetic (used by several test files).

A float32 path computes D = ||x||^2 + ||s||^2 - 2 x.s on centred data. With unit
roundoff u = 2^-24, the dot product of length d is off by at most gamma_d |x||s| ~ d u |x||s|
(Higham, Accuracy and Stability, Eq. 3.5), the norms by ~ d u ||x||^2 after float64
summation and one rounding, and the two additions by 2u (||x||^2 + ||s||^2). Since
|x||s| <= (||x||^2 + ||s||^2) / 2, every squared distance is off by at most
    (d + 4) u (||x||^2 + ||s||^2).
The log-sum-exp is 1-Lipschitz in the max norm, so -D / (2 sigma^2) moves it by at most
that bound / (2 sigma^2). Summing m terms of size <= 1 in float32 adds a relative error of
at most m u, i.e. m u in the log. Together they bound |fast - float64| per query.

The Triton kernel's default tf32x3 operands (kernels/parzen_lse.py, prepare_operands) turn
x.s into a float32 dot of length 3d, [x_hi, x_lo, x_hi] . [s_lo, s_hi, s_hi], which leaves out
x_lo s_lo. Round to nearest tf32 keeps |x_lo| <= 2^-11 |x|, so the missing term is at most
2^-22 = 4u of sum |x_k s_k|, and the terms of the longer dot sum to at most (1 + 2^-10)
sum |x_k s_k|: the dot's part of the bound becomes (3d (1 + 2^-10) + 4) u instead of d u.
(Under the interpreter tl.dot is plain float32; on a GPU the tf32 MMA also truncates x_lo,
which benchmarks/gpu_check.py measures against float64.)
"""
import numpy as np

UNIT_ROUNDOFF_FLOAT32 = 2.0 ** -24


def float32_log_likelihood_bound(x, bank, sigmas, split_tf32x3: bool = False) -> np.ndarray:
    """Per-sigma bound (S, 1) on |float32 log-likelihood - float64 log-likelihood|."""
    distance_error = float32_distance_bound(x, bank, split_tf32x3)
    sigmas = np.asarray(sigmas, np.float64).reshape(-1, 1)
    return distance_error / (2 * sigmas**2) + (len(bank) + 2) * UNIT_ROUNDOFF_FLOAT32


def float32_distance_bound(x, bank, split_tf32x3: bool = False) -> float:
    x, bank = np.asarray(x, np.float64), np.asarray(bank, np.float64)
    mean = bank.mean(axis=0)
    norms = ((x - mean) ** 2).sum(1).max() + ((bank - mean) ** 2).sum(1).max()
    dimension = x.shape[1]
    dot_part = 3 * dimension * (1 + 2.0**-10) + 4 if split_tf32x3 else dimension
    return (dot_part + 4) * UNIT_ROUNDOFF_FLOAT32 * norms
