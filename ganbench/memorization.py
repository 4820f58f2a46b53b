"""Did the model memorise its training set? (the paper's Figure 2, made a measurement)

The natural yardstick for "close to a training image" is how close *unseen real* images
are: the report compares each generated sample's distance to its nearest training image
with each held-out test image's distance to its nearest training image.
"""
from __future__ import annotations

import numpy as np
import torch

from . import parzen
from .arrays import as_matrix
from .errors import GanbenchError

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def nearest(queries, reference, k: int = 1, *, backend: str = "auto", device=None,
            query_block: int = 1024, reference_block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by squared Euclidean distance: (distances, indices), each (n, k).

    k = 1 reuses the Parzen pass (the fused kernel on CUDA gives it with no extra distance
    loop). Ties go to the lowest reference index. Distances are float32 GEMM-form values,
    within the bound of tests/tolerances.py of the float64 ones.
    """
    if k < 1:
        raise GanbenchError(f"k must be >= 1, got {k}")
    reference_tensor = as_matrix("reference", reference)
    query_tensor = as_matrix("queries", queries, dimension=reference_tensor.shape[1], dimension_of="the reference set")
    if k > reference_tensor.shape[0]:
        raise GanbenchError(f"k = {k} exceeds the {reference_tensor.shape[0]} reference points")
    if k == 1:
        result = parzen.parzen_pass(query_tensor, reference_tensor, [], backend=backend, device=device)
        return result.min_sq_distance[:, None], result.nearest_index[:, None]
    return _top_k(query_tensor, reference_tensor, k, device, query_block, reference_block)


def _top_k(queries, reference, k, device, query_block, reference_block):
    """Blocked top-k on the torch backend's float32 distances (k > 1 only)."""
    target = torch.device(device) if device else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
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


def quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"q{int(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES}


def report(samples, train, test, *, suspicious: int = 10, backend: str = "auto", device=None) -> dict:
    """Sample-to-train vs test-to-train nearest distances, copy rate, duplicates, suspects."""
    sample_distances, sample_nearest = nearest(samples, train, backend=backend, device=device)
    test_distances, _ = nearest(test, train, backend=backend, device=device)
    sample_distances, sample_nearest = sample_distances[:, 0], sample_nearest[:, 0]
    test_distances = test_distances[:, 0]
    # A sample "copies" when it is closer to a training image than 99% of unseen real images are.
    copy_threshold = float(np.quantile(test_distances, 0.01))
    within, _ = nearest(samples, samples, k=2, backend=backend, device=device)
    within = within[:, 1]  # the nearest *other* sample (k=1 is the sample itself)
    duplicate_threshold = copy_threshold
    order = np.argsort(sample_distances, kind="stable")[:suspicious]
    return {
        "n_samples": int(len(sample_distances)),
        "n_test": int(len(test_distances)),
        "sample_to_train": quantiles(sample_distances),
        "test_to_train": quantiles(test_distances),
        "copy_threshold": copy_threshold,
        "copy_rate": float(np.mean(sample_distances < copy_threshold)),
        "expected_copy_rate_for_unseen_data": 0.01,
        "exact_duplicate_samples": int(np.sum(within <= 1e-6)),
        "near_duplicate_samples": int(np.sum(within < duplicate_threshold)),
        "within_samples_nearest": quantiles(within),
        "most_suspicious": [{"sample": int(i), "train_index": int(sample_nearest[i]),
                             "sq_distance": float(sample_distances[i])} for i in order],
        "_sample_distances": sample_distances,
        "_test_distances": test_distances,
        "_sample_nearest": sample_nearest,
    }


def public(report_dict: dict) -> dict:
    """The report without its raw arrays (keys starting with '_'), for JSON."""
    return {key: value for key, value in report_dict.items() if not key.startswith("_")}
