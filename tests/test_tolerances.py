"""The bounds of tolerances.py hold for float32 arithmetic in the worst orders, not only this BLAS's.

This machine's BLAS sums each dot product in its own blocked order; another CPU (Intel's kernels
block differently, and by thread count) may use any other. One product after another, starting
from the norm added into the GEMM, is the longest chain of roundings any order can make.
"""
import numpy as np
import pytest
import torch
from tolerances import (
    centred_sq_norms,
    distance_bound,
    exact_sq_distances,
    gamma,
    generator_error,
    range_sq_norm,
    sq_distance_error,
)

from ganbench.gan.models import Generator, sample_noise


def float32_distances_one_product_at_a_time(x, bank, reverse: bool) -> np.ndarray:
    """The torch backend's D = (||s||^2 - 2 x . s) + ||x||^2 on float32-centred data, with every
    product added to a float32 accumulator that starts at ||s||^2, in forward or reverse order."""
    centre = bank.mean(axis=0).astype(np.float32)
    x32, bank32 = x.astype(np.float32) - centre, bank.astype(np.float32) - centre
    query_norms = (x32.astype(np.float64) ** 2).sum(1).astype(np.float32)
    bank_norms = (bank32.astype(np.float64) ** 2).sum(1).astype(np.float32)
    products = x32[:, None, :] * bank32[None, :, :]  # each rounded to float32
    total = np.broadcast_to(bank_norms[None, :], products.shape[:2]).copy()
    for k in (reversed(range(x.shape[1])) if reverse else range(x.shape[1])):
        total = total + np.float32(-2) * products[:, :, k]
    return np.maximum(total + query_norms[:, None], np.float32(0))


@pytest.mark.parametrize("reverse", [False, True])
def test_distance_bound_holds_for_the_longest_rounding_chains(reverse, rng):
    # Data far from 0 (the centring matters) and near-copies of the queries (D near 0, where the
    # expanded form cancels most): the hardest case for the GEMM form.
    x = (100 + rng.random((6, 301))).astype(np.float32)
    bank = np.concatenate([x + 1e-3 * rng.random(x.shape), 100 + rng.random((9, 301))]).astype(np.float32)
    computed = float32_distances_one_product_at_a_time(x, bank, reverse)
    error = np.abs(computed - exact_sq_distances(x, bank))
    bound = distance_bound(x, bank)
    assert np.all(error <= bound[:, None])
    assert error.max() > 1e-3 * bound.max()  # the test data do exercise the rounding


def test_a_bound_from_the_value_range_covers_the_data(mnist):
    x, bank = mnist.test_x[:50], mnist.train_x[:500]
    norm = range_sq_norm(784, 0.0, 1.0)
    assert np.all(distance_bound(x, bank) <= sq_distance_error(784, norm, norm))
    assert np.all(centred_sq_norms(bank, bank.mean(axis=0)) <= norm)


def test_gamma_is_the_length_times_the_unit_roundoff_to_first_order():
    assert gamma(1000) == pytest.approx(1000 * 2.0**-24, rel=1e-4)
    with pytest.raises(ValueError, match="unbounded"):
        gamma(2**24)


@pytest.mark.parametrize("batch", [1, 7, 25])
def test_generator_bound_holds_at_every_batch_size(batch):
    torch.manual_seed(0)
    generator = Generator()
    noise = sample_noise(25, torch.Generator().manual_seed(3))
    with torch.no_grad():
        exact = torch.sigmoid(generator.net.double()(noise.double())).numpy()
        generator.float()
        computed = torch.cat([generator(part) for part in noise.split(batch)]).numpy()
    bound = generator_error(generator, noise)
    assert np.all(np.abs(computed - exact) <= bound)
