"""The benchmark's peers must compute the same numbers as ganbench, or their timings mean nothing."""
import numpy as np

from ganbench.paper import bench
from ganbench.scoring import parzen


def test_authors_port_equals_the_float64_reference():
    # The authors' parzen_ll.py method backs the end-to-end speed-up: it must compute the
    # same quantity. Both are float64; the direct difference form loses at most ~1e-12 here.
    rng = np.random.default_rng(5)
    x, bank = rng.random((23, 17)), rng.random((41, 17))
    for sigma in (0.1, 0.37, 1.0):
        authors = bench.authors_log_likelihood(x, bank, sigma, batch_size=10)  # batches that do not divide 23
        reference = parzen.log_likelihood(x, bank, [sigma], backend="reference")[0]
        np.testing.assert_allclose(authors, reference, rtol=0, atol=1e-9)


def test_run_case_reports_every_method_with_its_error():
    rows = bench.run_case(bench.BenchCase(n=37, m=53, d=19, sigmas=3), repeats=1, authors_slice=5)
    timed = {row["method"]: row for row in rows if "seconds" in row}
    assert "ganbench torch" in timed and "float32 matmul (floor)" in timed
    assert timed["float64 NumPy reference"]["max_abs_error_nats"] == 0.0
    # float32 GEMM-form distances on [0, 1]^19 data are off by ~1e-5 at most; at sigma 0.1
    # that moves log p by ~1e-5 / (2 * 0.01) = 5e-4 nats: 1e-2 is a wide, safe bound.
    assert timed["ganbench torch"]["max_abs_error_nats"] < 1e-2
    authors = next(row for name, row in timed.items() if name.startswith("authors'"))
    # The port computes in its inputs' float32: a sum of d squared terms loses at most
    # d * 2^-24 of its value, here <= 19 * 6e-8 * (19 / (2 * 0.1^2)) = 1.1e-3 nats.
    assert authors["max_abs_error_nats"] < 1.1e-3
    assert min(row["ratio_to_ganbench"] for name, row in timed.items() if name.startswith("ganbench")) == 1.0
