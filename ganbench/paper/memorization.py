"""Did the model memorise its training set? (the paper's Figure 2, made a measurement)

The natural yardstick for "close to a training image" is how close *unseen real* images
are: the report compares each generated sample's distance to its nearest training image
with each held-out test image's distance to its nearest training image.
"""
from __future__ import annotations

import numpy as np

from ganbench.scoring.neighbours import nearest

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"q{int(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES}


def report(samples, train, test, *, suspicious: int = 10, backend: str = "auto", device=None) -> dict:
    """Sample-to-train vs test-to-train nearest distances, copy rate, duplicates, suspects."""
    sample_distances, sample_nearest = nearest(samples, train, backend=backend, device=device,
                                               names=("samples", "the training data"))
    test_distances, _ = nearest(test, train, backend=backend, device=device, names=("held-out data", "the training data"))
    sample_distances, sample_nearest = sample_distances[:, 0], sample_nearest[:, 0]
    test_distances = test_distances[:, 0]
    # A sample "copies" when it is closer to a training image than 99% of unseen real images are.
    copy_threshold = float(np.quantile(test_distances, 0.01))
    within, _ = nearest(samples, samples, k=2, backend=backend, device=device, names=("samples", "the samples"))
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
