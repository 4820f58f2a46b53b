"""The float32 paths beside data whose bank mean lies far from the queries' neighbourhoods.

The expanded form ||x - c||^2 + ||s - c||^2 - 2 (x - c).(s - c) loses to cancellation what the
shared centre c costs (``ganbench.scoring.centring.rows_far_from_centre``): one bank sample far away
moves c, and float32 then missed points 0.3 apart by nats, inside a derived bound as large. Such rows
are rescored in float64 (``parzen.finish_pass``), so every backend gives the literal estimator's numbers.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ganbench.scoring import centring, parzen
from tests.test_parzen import direct_log_likelihood

FLOAT32_PATHS = [("torch", "tf32x3"), ("triton", "ieee"), ("triton", "tf32x3")]
SIGMAS = [0.1, 0.2, 0.5]


def outlier_bank(rng, dimension: int, count: int, outlier: float) -> np.ndarray:
    """``count`` samples in [0, 0.3]^d (count not a multiple of any block), one moved to ``outlier`` in every coordinate."""
    bank = rng.random((count, dimension)) * 0.3
    bank[0] = outlier
    return bank


def test_the_centre_cost_is_the_ratio_to_a_centre_at_the_query():
    norms = torch.tensor([0.0, 1e6, 1e6, 3.0])
    minima = torch.tensor([1.0, 1.0, 1e6, 1.0])
    # cost / (D + r): 1 (R = 0); (1e6 + 1001^2) / 1 ~ 2e6; (1e6 + 2000^2) / 1e6 = 5; (3 + (sqrt 3 + 1)^2) / 1 ~ 10.5.
    far = centring.rows_far_from_centre(norms, minima, reach=0.0)
    assert far.tolist() == [False, True, False, False]
    assert centring.rows_far_from_centre(torch.tensor([3.0]), torch.tensor([0.0]), reach=1e-4).item()  # ~3e4


@pytest.mark.parametrize("backend,precision", FLOAT32_PATHS)
@pytest.mark.parametrize("dimension,count,outlier", [(3, 37, 1e4), (3, 101, 1e5), (19, 101, 1e3)])
def test_float32_paths_rescore_rows_far_from_the_bank_mean(backend, precision, dimension, count, outlier, rng,
                                                           capsys, monkeypatch):
    x = rng.random((23, dimension)) * 0.3
    bank = outlier_bank(rng, dimension, count, outlier)
    expected = direct_log_likelihood(x, bank, SIGMAS)
    got = parzen.log_likelihood(x, bank, SIGMAS, backend=backend, precision=precision, device="cpu")
    # Every row is rescored by the reference: exact up to REFERENCE_NATS where the expanded form's float64
    # rounding could move a row (parzen._exact_where_loose), and to float64's rounding of the sums (1e-12).
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=parzen.REFERENCE_NATS)
    assert "too far from the bank's mean" in capsys.readouterr().err or _announced_before()
    # Without the rescoring the same call is nats off at sigma 0.1 for the first case: the check can fail.
    if (dimension, count) == (3, 37):
        monkeypatch.setattr(centring, "CENTRING_EXCESS_LIMIT", float("inf"))
        unchecked = parzen.log_likelihood(x, bank, SIGMAS, backend=backend, precision=precision, device="cpu")
        assert np.abs(unchecked - expected)[0].max() > 0.05


def _announced_before() -> bool:
    """announce_once prints each message once a process: an earlier test may have printed it."""
    from ganbench import progress

    return any("too far from the bank's mean" in message for message in progress._ANNOUNCED)


def test_only_the_rows_that_need_it_are_rescored(rng, monkeypatch):
    """Queries near the bulk of the bank are rescored; a query far from every sample, whose distances
    dwarf its centred norm, keeps its float32 numbers (its nearest term, exact, carries the sum)."""
    bank = outlier_bank(rng, 3, 53, 1e4)
    x = np.concatenate([rng.random((5, 3)) * 0.3, [[-1e4, -1e4, -1e4]]])
    rescored = []
    reference_pass = parzen._reference_pass
    monkeypatch.setattr(parzen, "_reference_pass", lambda query, *args: rescored.append(len(query))
                        or reference_pass(query, *args))
    got = parzen.log_likelihood(x, bank, SIGMAS, backend="torch", device="cpu")
    assert rescored == [5]
    np.testing.assert_allclose(got, direct_log_likelihood(x, bank, SIGMAS), rtol=1e-12, atol=parzen.REFERENCE_NATS)


def test_mnist_stays_on_the_float32_path(mnist, monkeypatch):
    """Test images against training images, and training images against a bank that holds them, at the
    paper's grid: no row is rescored (the float32 speed is kept where it is accurate)."""
    rescored = []
    monkeypatch.setattr(parzen, "_rescore_in_float64", lambda result, rows, *args: rescored.append(len(rows)))
    bank = mnist.train_x[:3001]
    grid = np.logspace(-1, 0, 10)
    for queries in (mnist.test_x[:301], bank[:301]):
        parzen.parzen_pass(queries, bank, grid, backend="torch", precision="tf32x3", device="cpu")
    assert rescored == []
