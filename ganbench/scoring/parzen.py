"""Gaussian Parzen-window log-likelihood (Section 5 of the paper; the authors' parzen_ll.py).

    log p(x_i) = logsumexp_j(-||x_i - s_j||^2 / (2 sigma^2)) - log m - d log(sigma sqrt(2 pi))

for a bank s_1..s_m of model samples. Every backend computes the squared distances
of a block once and reuses them for the whole sigma grid, so a grid costs one
distance pass, not one per sigma.

Backends
- ``reference``: NumPy float64, blocked; the ground truth every other path is tested against.
- ``torch``: blocked GEMM form in float32 on data centred by the bank mean, CPU or CUDA.
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
from ganbench.errors import GanbenchError
from ganbench.scoring import partials
from ganbench.scoring.inputs import as_matrix, as_sigmas

# Blocks sized so a (query block x bank block) float32 tile stays in a CPU core's L2
# while the GEMM is still large enough to run near peak.
DEFAULTS = {
    "reference_query_block": 512,
    "reference_bank_block": 4096,
    "torch_query_block": 512,   # 512 x 1024 float32 = 2 MB tiles: in L2, GEMM still near peak
    "torch_bank_block": 1024,
    # On a GPU, fewer and larger launches: a 4096 x 16384 float32 tile is 256 MB.
    "torch_cuda_query_block": 4096,
    "torch_cuda_bank_block": 16384,
}


@dataclass
class ParzenPass:
    """What one pass over the bank gives, before the normalising constant."""

    log_sum_exp: np.ndarray      # (S, n) float64: logsumexp_j(-D_ij / (2 sigma_k^2))
    min_sq_distance: np.ndarray  # (n,) float64: squared distance to the nearest bank sample
    nearest_index: np.ndarray    # (n,) int64: its bank index (lowest index among ties)


def log_likelihood(x, bank, sigmas, *, backend: str = DEFAULT_BACKEND, device=None, precision: str = DEFAULT_PRECISION,
                   query_block: int | None = None, bank_block: int | None = None) -> np.ndarray:
    """Parzen log-likelihood of every row of ``x`` under the bank, shape (len(sigmas), len(x)), float64."""
    grid = as_sigmas(sigmas)
    result = parzen_pass(x, bank, grid, backend=backend, device=device, precision=precision,
                         query_block=query_block, bank_block=bank_block)
    count, dimension = np.shape(bank) if not isinstance(bank, torch.Tensor) else tuple(bank.shape)
    return result.log_sum_exp - normalising_constant(grid, count, dimension)[:, None]


def normalising_constant(sigmas, count: int, dimension: int) -> np.ndarray:
    """log m + d log(sigma sqrt(2 pi)) per sigma, in float64."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    return math.log(count) + dimension * np.log(sigmas * math.sqrt(2.0 * math.pi))


def parzen_pass(x, bank, sigmas, *, backend: str = DEFAULT_BACKEND, device=None, precision: str = DEFAULT_PRECISION,
                query_block: int | None = None, bank_block: int | None = None, refine: bool = True) -> ParzenPass:
    """One pass over the bank: shifted log-sum-exp per sigma plus each query's nearest bank sample.

    ``sigmas`` may be empty: then only the nearest neighbours are computed. ``refine``
    (default) recomputes each query's nearest distance exactly for the float32 backends;
    see ``refine_nearest``.
    """
    if backend not in BACKENDS:
        raise GanbenchError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise GanbenchError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    grid = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if grid.size:
        grid = as_sigmas(grid)
    bank_tensor = as_matrix("bank", bank)
    query_tensor = as_matrix("x (the points scored)", x, dimension=bank_tensor.shape[1])
    for name, block in (("query_block", query_block), ("bank_block", bank_block)):
        if block is not None and block < 1:
            raise GanbenchError(f"{name} must be a positive integer, got {block}")
    target = _resolve_device(device, backend, query_tensor)
    if backend == "auto":
        backend = "triton" if target.type == "cuda" else "torch"
    if backend == "reference":
        return _reference_pass(query_tensor, bank_tensor, grid, query_block, bank_block)
    if backend == "torch":
        partial = _torch_pass(query_tensor, bank_tensor, grid, target, query_block, bank_block)
    else:
        # One copy of host inputs to the device, shared by the kernel and the refinement (which
        # would otherwise gather the nearest rows on the host). The kernels autotune their tiles;
        # query_block and bank_block size the other backends' blocks.
        query_tensor, bank_tensor = query_tensor.to(target), bank_tensor.to(target)
        partial = _triton_partial(query_tensor, bank_tensor, grid, target, precision)
    return finish_pass(partial, query_tensor, bank_tensor, grid, refine=refine)


def _triton_partial(query: torch.Tensor, bank: torch.Tensor, grid, target: torch.device,
                    precision: str) -> partials.BankPartial:
    """The triton backend: int8 for ``int8`` (8-bit queries or an error) and for ``auto`` where
    it applies, else the tf32x3 kernel (``auto``) or the kernel in the mode asked for."""
    from ganbench.kernels import parzen_int8, parzen_lse  # imported late: Triton is only needed here

    if precision in ("int8", "auto"):
        try:
            return parzen_int8.parzen_partial_int8(query, bank, grid, device=target)
        except parzen_int8.NotInt8Data:
            if precision == "int8":
                raise
    return parzen_lse.parzen_partial_triton(query, bank, grid, device=target,
                                            precision="tf32x3" if precision == "auto" else precision)


def finish_pass(partial: partials.BankPartial, query: torch.Tensor, bank: torch.Tensor, grid,
                refine: bool = True) -> ParzenPass:
    """A float32 backend's whole-bank partial (torch, on its device) to a float64 ``ParzenPass``.

    The log-sum-exp per sigma and the exact-nearest refinement run in float64 on the partial's
    device, and one copy of the (S, n) result reaches the host: on a GPU, the same float64 work
    in NumPy costs milliseconds per 10,000 queries and 16 sigmas, as much as the kernel itself.
    """
    minima = partial.min_sq_distance.double()
    nearest = partial.nearest_index.long()
    log_sum_exp = partials.log_sum_exp(partials.BankPartial(minima, nearest, partial.shifted_sums.double()), grid)
    if refine:
        log_sum_exp, minima = refine_nearest(log_sum_exp, minima, nearest, query, bank, grid)
    # One copy to the host (a wait for the GPU each): the indices ride along as float64, exact below 2^53.
    host = torch.cat([log_sum_exp, minima[None], nearest[None].double()]).cpu().numpy()
    return ParzenPass(host[:-2], host[-2], host[-1].astype(np.int64))


def refine_nearest(log_sum_exp: torch.Tensor, min_sq_distance: torch.Tensor, nearest_index: torch.Tensor,
                   query: torch.Tensor, bank: torch.Tensor, grid) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the float32 distance of each query's nearest sample by its exact float64 value.

    The float32 GEMM form is off by up to ~1e-4 in D on MNIST (the dot product's rounding
    on norms ~50), which moves log p by that over 2 sigma^2: ~3e-3 nats at sigma = 0.1.
    At small sigma the nearest sample carries almost all the weight, and its term is exactly
    1 in the shifted sum S, so swapping it for exp(-(D_exact - D_32) / (2 sigma^2)) removes
    the dominant error for n x d work:
        lse = -D_exact c + log(1 + (S - 1) exp((D_exact - D_32) c)),   c = 1 / (2 sigma^2).
    The other terms keep their float32 error, weighted by their (small) share of S.
    Takes and returns float64 tensors on the device of ``log_sum_exp`` ((S, n) and (n,)).
    """
    device = min_sq_distance.device
    nearest = bank.index_select(0, nearest_index.to(bank.device)).to(torch.float64)
    exact = ((query.to(device=bank.device, dtype=torch.float64) - nearest) ** 2).sum(1).to(device)
    if not len(grid):
        return log_sum_exp, exact
    scales = partials.half_inverse_variances(grid, log_sum_exp)
    approximate = min_sq_distance[None, :]
    others = torch.expm1(log_sum_exp + approximate * scales)  # S - 1, the terms but the nearest
    log_sum_exp = -exact * scales + torch.log1p(others * torch.exp((exact - approximate) * scales))
    return log_sum_exp, exact


def _resolve_device(device, backend: str, query_tensor: torch.Tensor) -> torch.device:
    if device is not None:
        try:
            target = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise GanbenchError(f"unknown device {device!r} ({error}); use cpu or cuda") from None
    elif query_tensor.device.type == "cuda":
        target = query_tensor.device
    elif backend in ("auto", "triton") and torch.cuda.is_available():
        target = torch.device("cuda")
    else:
        target = torch.device("cpu")
    if target.type == "cuda" and not torch.cuda.is_available():
        raise GanbenchError("device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if target.type not in ("cpu", "cuda"):
        raise GanbenchError(f"device {target} is not supported; use cpu or cuda")
    return target


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
    mean = bank.mean(dim=0, dtype=torch.float64)
    if bank.dtype == torch.float64 or query.dtype == torch.float64:
        return (query.double() - mean).to(dtype), (bank.double() - mean).to(dtype)
    mean = mean.to(dtype)
    return query.to(dtype) - mean, bank.to(dtype) - mean


def sq_distance_tile(queries: torch.Tensor, query_norms: torch.Tensor, samples: torch.Tensor,
                     sample_norms: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """||x||^2 + ||s||^2 - 2 x.s for a block: one GEMM with the sample norms as its addend,
    clamped at 0 because rounding can push a true 0 slightly below it."""
    tile = torch.addmm(sample_norms[None, :], queries, samples.T, alpha=-2.0, out=out)
    return tile.add_(query_norms[:, None]).clamp_(min=0.0)


def squared_norms(rows: torch.Tensor, chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """||row||^2 per row, accumulated in float64 and rounded once, in chunks (bounded memory)."""
    pieces = [torch.sum(part * part, dim=1, dtype=torch.float64) for part in rows.split(chunk)]
    return torch.cat(pieces).to(rows.dtype)


def _reference_pass(query, bank, grid, query_block, bank_block) -> ParzenPass:
    """NumPy float64 throughout, written apart from the fast paths so it can judge them.

    Squared distances use the expanded form on bank-centred float64 data: its rounding
    error, about 1e-16 times the squared norms, is far below any float32 path's.
    """
    bank64 = bank.cpu().double().numpy()
    mean = bank64.mean(axis=0)
    bank64 = bank64 - mean
    query64 = query.cpu().double().numpy() - mean
    bank_norms = np.einsum("ij,ij->i", bank64, bank64)
    query_block = query_block or DEFAULTS["reference_query_block"]
    bank_block = bank_block or DEFAULTS["reference_bank_block"]
    pieces = []
    for query_start in range(0, len(query64), query_block):
        queries = query64[query_start:query_start + query_block]
        query_norms = np.einsum("ij,ij->i", queries, queries)[:, None]
        running = None
        for bank_start in range(0, len(bank64), bank_block):
            samples = bank64[bank_start:bank_start + bank_block]
            distances = query_norms + bank_norms[None, bank_start:bank_start + bank_block] - 2.0 * queries @ samples.T
            np.maximum(distances, 0.0, out=distances)
            block = partials.from_distances(distances, grid, index_offset=bank_start)
            running = block if running is None else partials.merge(running, block, grid)
        pieces.append(running)
    merged = partials.BankPartial(*(np.concatenate([getattr(p, field) for p in pieces], axis=-1)
                                    for field in ("min_sq_distance", "nearest_index", "shifted_sums")))
    return ParzenPass(partials.log_sum_exp(merged, grid), merged.min_sq_distance,
                      merged.nearest_index.astype(np.int64))


def _torch_pass(query, bank, grid, device, query_block, bank_block) -> partials.BankPartial:
    """Float32 blocked GEMM form; one distance tile per block serves every sigma.

    The tile and its work buffer are allocated once and reused, and sized to stay in
    cache on the CPU: fresh large allocations (page faults) and passes over memory, not
    the exponentials, would otherwise dominate.
    """
    query32, bank32 = centre_by_bank_mean(query, bank, torch.float32, device)
    prefix = "torch_cuda" if device.type == "cuda" else "torch"
    query_block = min(query_block or DEFAULTS[f"{prefix}_query_block"], query32.shape[0])
    bank_block = min(bank_block or DEFAULTS[f"{prefix}_bank_block"], bank32.shape[0])
    # Norms summed in float64 then rounded once: the GEMM is then the only float32 error.
    query_norms, bank_norms = squared_norms(query32), squared_norms(bank32)
    scales = torch.as_tensor(0.5 / np.asarray(grid, dtype=np.float64) ** 2, dtype=torch.float32, device=device)
    tile = torch.empty(query_block, bank_block, device=device)
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
                distances = sq_distance_tile(queries, query_norms[query_start:query_start + rows], samples,
                                             bank_norms[bank_start:bank_start + len(samples)],
                                             out=tile[:rows, :len(samples)])
                partials.accumulate(running, distances, scales, bank_start, shifted[:rows, :len(samples)],
                                    term[:rows, :len(samples)])
            minima.append(running.min_sq_distance)
            nearest.append(running.nearest_index)
            sums.append(running.shifted_sums)
    return partials.BankPartial(torch.cat(minima), torch.cat(nearest), torch.cat(sums, dim=1))
