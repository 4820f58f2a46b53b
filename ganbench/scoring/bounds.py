"""Worst-case error bounds of every scoring path against exact arithmetic, per image and sigma.

A saved result (``ganbench.scoring.results``) may be re-scored on another machine by another
path: the float64 reference, the float32 torch backend on any CPU, BLAS build or thread count,
or the Triton kernel on a GPU. Their numbers differ only by rounding, and these bounds say by
how much at most, whatever the order of the sums (Higham, Accuracy and Stability of Numerical
Algorithms, 2nd ed., Section 3.1: gamma_n = n u / (1 - n u) holds for every summation order,
so for every BLAS blocking, thread count and vector width).

Every path computes, per bank chunk with centre c (the chunk's mean; ``ganbench.scoring.parzen``):
    D = ||x - c||^2 + ||s - c||^2 - 2 (x - c).(s - c)
and then lse = log sum_j exp(-D_j / (2 sigma^2)) from shifted sums. With N = ||x - c||^2 +
max_j ||s_j - c||^2 (so |x - c||s - c| <= N / 2), each squared distance is off by at most
K u N, where u is the unit roundoff and K depends on the arithmetic:
- float32 (torch backend on any device, Triton with ``ieee``): torch's addmm may accumulate
  -2 x.s together with its addend ||s - c||^2 (BLAS adds into C once per K block), a sum of
  d + 1 terms whose sizes add up to at most ||s - c||^2 + 2 |x - c||s - c| <= 2N, so
  2 gamma_(d+1); the two norms (summed in float64, rounded once) 1, the two additions of terms
  <= 2N each 4, centring the float32 inputs in float32 (each coordinate off by u, so each point
  by u times its norm) 4: K = 2 (d + 1) / (1 - (d + 1) u) + 9.
- tf32x3 (the Triton kernel's default): x.s is a dot of width n = 3d over operands split into
  tf32 parts (``kernels/parzen_operands.py``), taken in K steps of at most 64 columns, each in
  a fresh accumulator then subtracted in float32 (``kernels/parzen_lse.py``). On tensor cores
  the products are exact and each block of k = 4 to 8 products is aligned to its largest term
  and normalised with truncation (Fasi, Higham, Mikaitis and Pranesh, "Numerical behavior of
  NVIDIA tensor cores", PeerJ CS 2021): at most 2u (k + 2) of the block's magnitude, so a
  step of b <= 64 columns is off by 2u (k + 2)(b / k + 1) <= (3 * 64 + 20) u of its terms'
  magnitude; the float32 chain of at most ceil(n / 16) steps (tl.dot's K is >= 16) adds one
  u per step. The MMA also truncates the low parts to tf32 (2 x 2^-10 x 2^-11 (1 + 2^-11)
  < 17u), the split leaves out x_lo s_lo (4u), and the split's terms sum to at most
  (1 + 2^-10) |x||s|: K = (212 + ceil(3d / 16))(1 + 2^-10) + 21 + 9. Under Triton's CPU
  interpreter each step is a plain float32 dot, inside this bound.
- float64 (the reference): K = d + 9 with u = 2^-53.
The log-sum-exp is 1-Lipschitz in the max norm, so the distances move lse by at most
K u N / (2 sigma^2). The shifted sum of a chunk of m rows adds L u to the log, with
m for the float32 additions of m terms in (0, 1]; 3m / e for the exponents, each rounded three
times (the subtraction, the scale, the product: a term e^-a off by 3u a, weighted by its share
<= e^-a, and sum_j 3u a_j e^-a_j <= 3u m / e); 2 for the exponential (CUDA's exp2 is within
2 ulp); and 2 (m / e + m) for moving the running sum to each new minimum: a rescaling by e^-x
is off by 2u x + 2u, so a term rescaled by X in all is off by 2u X plus 2u per rescaling, its
weight is <= e^-X, and there is at most one rescaling per row. L = 3m + 5m / e + 2. On the CPU
the torch backend leaves out terms below e^-40 of the running minimum's: m e^-40 more.
Chunks are merged in float64, exactly up to far smaller rounding, and lse of the merge is
again 1-Lipschitz, so the worst chunk bounds the whole bank.

These are worst cases, far above the measured errors (tests/test_parzen.py on the CPU,
benchmarks/gpu_check.py on a GPU), and need no measurement: they hold on every machine by
construction (for tf32x3 on a GPU, under the tensor-core model above).
"""
from __future__ import annotations

import math

import numpy as np

from ganbench.defaults import CHUNK_ROWS
from ganbench.errors import GanbenchError
from ganbench.scoring.banks import Bank
from ganbench.scoring.partials import NEGLIGIBLE_EXPONENT

UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "tf32x3": 2.0**-24}
ARITHMETICS = tuple(UNIT_ROUNDOFF)
# The Triton kernel's K steps: at most this many columns each (its widest tile), at least tl.dot's 16.
KERNEL_STEP_COLUMNS = (16, 64)


def arithmetic_of(backend: str, precision: str) -> str:
    """The arithmetic a resolved backend (reference, torch or triton) scores with."""
    if backend not in ("reference", "torch", "triton"):  # a saved result edited, or written by another tool
        raise GanbenchError(f"unknown backend {backend!r}: ganbench scores with reference, torch or triton")
    if backend == "reference":
        return "float64"
    if backend == "torch" or (backend == "triton" and precision == "ieee"):
        return "float32"
    if backend == "triton" and precision == "tf32x3":
        return "tf32x3"
    if backend == "triton" and precision in ("int8", "auto"):
        # Its bound (kernels/parzen_int8.py, per_point_bound) is not one of the saved arithmetics yet.
        raise GanbenchError(f"precision {precision} cannot be saved and checked yet: score with --precision "
                            "tf32x3 or ieee to --save")
    raise GanbenchError(f"backend {backend} with precision {precision} has no derived error bound (plain tf32 "
                        "moves numbers by nats); score with --precision tf32x3 or ieee")


def distance_coefficient(arithmetic: str, dimension: int) -> float:
    """K: a squared distance is off by at most K u (||x - c||^2 + max ||s - c||^2)."""
    unit = UNIT_ROUNDOFF[arithmetic]
    if arithmetic == "tf32x3":
        narrowest, widest = KERNEL_STEP_COLUMNS
        steps = math.ceil(3 * dimension / narrowest)
        return (3 * widest + 20 + steps) * (1 + 2.0**-10) + 21 + 9
    if arithmetic == "float32":  # the product may be accumulated with its addend: d + 1 terms of size <= 2N
        return 2 * (dimension + 1) / (1 - (dimension + 1) * unit) + 9
    return dimension / (1 - dimension * unit) + 9


def sum_coefficient(rows: int) -> float:
    """L: the shifted sum of a chunk of ``rows`` rows is off by at most L u in the log."""
    additions, exponents, exponential, rescalings = rows, 3 * rows / math.e, 2, 2 * (rows / math.e + rows)
    return additions + exponents + exponential + rescalings


def left_out_terms(rows: int, arithmetic: str) -> float:
    """The CPU torch path leaves out terms below e^-40 of the running minimum's
    (``ganbench.scoring.partials.accumulate``): at most rows e^-40 relative to the shifted sum,
    so that much in the log. The float64 reference and the kernels keep every term."""
    return rows * math.exp(-NEGLIGIBLE_EXPONENT) if arithmetic == "float32" else 0.0


def centred_norms(queries: list[np.ndarray], bank: Bank, chunk_rows: int = CHUNK_ROWS) -> tuple[list[np.ndarray], int]:
    """N per query row (the worst chunk's ||x - c||^2 + max ||s - c||^2) and the largest chunk's rows.

    One read of the bank, chunked as the scorer chunks it, so c is the centre each chunk is scored with.
    """
    worst = [np.zeros(len(rows)) for rows in queries]
    squared = [np.einsum("ij,ij->i", rows, rows, dtype=np.float64) for rows in queries]
    largest = 0
    for _, chunk in bank.chunks(chunk_rows):
        centre = chunk.mean(axis=0, dtype=np.float64)
        bank_norm = float(((chunk - centre) ** 2).sum(axis=1).max())
        largest = max(largest, len(chunk))
        for index, rows in enumerate(queries):
            # ||x - c||^2 expanded in float64: its rounding is ~1e-16 N, far below any bound here.
            distance = squared[index] - 2.0 * (rows.astype(np.float64) @ centre) + centre @ centre
            np.maximum(worst[index], np.maximum(distance, 0.0) + bank_norm, out=worst[index])
    return worst, largest


def per_image_bound(norms: np.ndarray, sigma: float, arithmetic: str, dimension: int, rows: int) -> np.ndarray:
    """|path - exact| per image of log p at ``sigma``, for images with the given N (``centred_norms``)."""
    unit = UNIT_ROUNDOFF[arithmetic]
    # Divided by 2 sigma, then by sigma: sigma**2 itself overflows past 1e154 (an OverflowError from Python's
    # power), where the quotient is merely tiny.
    return (distance_coefficient(arithmetic, dimension) * unit * np.asarray(norms, dtype=np.float64) / (2.0 * sigma) / sigma
            + sum_coefficient(rows) * unit + left_out_terms(rows, arithmetic))


def mean_bound(norms: np.ndarray, sigma: float, arithmetic: str, dimension: int, rows: int) -> float:
    """The mean of per-image errors bounds the error of the mean."""
    return float(per_image_bound(norms, sigma, arithmetic, dimension, rows).mean())


def standard_error_bound(norms: np.ndarray, sigma: float, arithmetic: str, dimension: int, rows: int) -> float:
    """std (ddof 0) is 1-Lipschitz in the RMS norm, so std / sqrt(n) moves by at most RMS(bound) / sqrt(n)."""
    bound = per_image_bound(norms, sigma, arithmetic, dimension, rows)
    return float(np.sqrt(np.mean(bound**2)) / math.sqrt(len(bound)))
