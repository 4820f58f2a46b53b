"""Exact nearest neighbours by squared Euclidean distance, for the memorisation checks and k-means."""
from __future__ import annotations

import numpy as np
import torch

from ganbench.devices import resolve_device
from ganbench.errors import GanbenchError
from ganbench.scoring import parzen
from ganbench.scoring.inputs import as_matrix


def nearest(queries, reference, k: int = 1, *, backend: str = "auto", device=None,
            query_block: int = 1024, reference_block: int = 8192,
            names: tuple[str, str] = ("x (the points searched)", "the bank")) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by squared Euclidean distance: (distances, indices), each (n, k).

    For each row of ``queries``, its k nearest rows of ``reference`` (the bank); ``names``
    call the two in errors ("samples", "training data"). k = 1 reuses the Parzen pass (the
    fused kernel on CUDA gives it with no extra distance loop). Ties go to the lowest bank
    index. Distances are float32 GEMM-form values, within the bound of tests/tolerances.py
    of the float64 ones.
    """
    if k < 1:
        raise GanbenchError(f"k must be >= 1, got {k}")
    points_name, bank_name = names
    reference_tensor = as_matrix(bank_name, reference)
    query_tensor = as_matrix(points_name, queries, dimension=reference_tensor.shape[1], dimension_of=bank_name)
    if k > reference_tensor.shape[0]:
        raise GanbenchError(f"k = {k} exceeds the number of points in {bank_name} ({reference_tensor.shape[0]})")
    if k == 1:
        result = parzen.parzen_pass(query_tensor, reference_tensor, [], backend=backend, device=device)
        return result.min_sq_distance[:, None], result.nearest_index[:, None]
    return _top_k(query_tensor, reference_tensor, k, device, query_block, reference_block)


def _top_k(queries, reference, k, device, query_block, reference_block):
    """Blocked top-k on the torch backend's float32 distances (k > 1 only)."""
    target = resolve_device(device)
    query32, reference32 = parzen.centre_by_bank_mean(queries, reference, torch.float32, target)
    reference_norms = parzen.squared_norms(reference32)
    distances_out, indices_out = [], []
    with torch.no_grad():
        for start in range(0, len(query32), query_block):
            block = query32[start:start + query_block]
            block_norms = parzen.squared_norms(block)
            best_d = torch.full((len(block), 0), float("inf"), device=target)
            best_i = torch.zeros((len(block), 0), dtype=torch.int64, device=target)
            for ref_start in range(0, len(reference32), reference_block):
                chunk = reference32[ref_start:ref_start + reference_block]
                d = parzen.sq_distance_tile(block, block_norms, chunk, reference_norms[ref_start:ref_start + len(chunk)])
                idx = torch.arange(ref_start, ref_start + len(chunk), device=target).expand(len(block), -1)
                all_d, all_i = torch.cat([best_d, d], 1), torch.cat([best_i, idx], 1)
                # Stable sort on distance keeps the lower index first among ties.
                order = torch.sort(all_d, dim=1, stable=True).indices[:, :k]
                best_d, best_i = all_d.gather(1, order), all_i.gather(1, order)
            distances_out.append(best_d.cpu().double().numpy())
            indices_out.append(best_i.cpu().numpy())
    return np.concatenate(distances_out), np.concatenate(indices_out)
