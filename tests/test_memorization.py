"""Nearest neighbours and the memorisation report."""
import numpy as np
import pytest
from tolerances import float32_distance_bound

from ganbench.errors import GanbenchError
from ganbench.paper import memorization
from ganbench.scoring import neighbours


def brute_force(queries, reference, k):
    distances = ((queries[:, None, :].astype(np.float64) - reference[None].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, 1), order


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_nearest_matches_float64_brute_force_at_odd_sizes(k, backend, rng):
    queries, reference = rng.random((37, 29)), rng.random((83, 29))
    distances, indices = neighbours.nearest(queries, reference, k=k, backend=backend, device="cpu",
                                              query_block=10, reference_block=17)
    expected_d, expected_i = brute_force(queries, reference, k)
    bound = float32_distance_bound(queries, reference, split_tf32x3=backend == "triton")  # the kernel's tf32x3
    assert np.all(np.abs(distances - expected_d) <= bound)
    mismatched = indices != expected_i
    # Any index difference must be a float32 near-tie.
    assert np.all(np.abs(np.take_along_axis(expected_d, np.argsort(expected_d, 1), 1)[mismatched]
                         - distances[mismatched]) <= 2 * bound)


def test_ties_go_to_the_lowest_index(rng):
    reference = rng.random((50, 8))
    reference[[20, 41]] = reference[7]
    # Exact, not a bound: the three rows hold the same bits, each in a full block of 16, and a GEMM
    # computes every output of a full block by the same operations (one SIMD lane each), so they
    # get the same distance and the stable sort keeps them in index order.
    distances, indices = neighbours.nearest(reference[[7]], reference, k=3, backend="torch", reference_block=16)
    np.testing.assert_array_equal(indices[0], [7, 20, 41])


def test_a_planted_copy_is_found_and_counted(mnist):
    samples = mnist.valid_x[:300].copy()
    samples[123] = mnist.train_x[4567]  # a memorised training image
    report = memorization.report(samples, mnist.train_x[:5000], mnist.test_x[:500], backend="torch")
    assert report["most_suspicious"][0] == {"sample": 123, "train_index": 4567,
                                            "sq_distance": pytest.approx(0.0, abs=1e-3)}
    assert report["copy_rate"] >= 1 / 300
    # Held-out validation images copy no more than unseen test images do (about 1%).
    assert report["copy_rate"] < 0.05


def test_duplicates_within_the_samples_are_counted(rng):
    samples = rng.random((40, 10))
    samples[30] = samples[3]
    report = memorization.report(samples, rng.random((60, 10)), rng.random((50, 10)), backend="torch")
    assert report["exact_duplicate_samples"] == 2


def test_bad_k():
    with pytest.raises(GanbenchError, match="k must be"):
        neighbours.nearest(np.ones((2, 3)), np.ones((4, 3)), k=0)
    with pytest.raises(GanbenchError, match="exceeds"):
        neighbours.nearest(np.ones((2, 3)), np.ones((4, 3)), k=5)
