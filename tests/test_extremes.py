"""Extreme widths and data scales: every backend gives the float64 answer or a one-line error, never NaN.

The float64 answer at the extremes comes from closed forms where possible: a one-point bank is a
Gaussian, log p(x) = -||x - c||^2 / (2 sigma^2) - d log(sigma sqrt(2 pi)), written so that no
intermediate overflows (sigma^2 alone does above 1.3e154).
"""
import json
import math

import numpy as np
import pytest
from tolerances import float32_log_likelihood_bound

from ganbench import progress
from ganbench.cli import main
from ganbench.errors import GanbenchError
from ganbench.paper import memorization
from ganbench.scoring import banks, neighbours, partials, parzen, streaming

BACKENDS = ["reference", "torch", "triton"]
# The interpreter runs the kernel in NumPy, which warns where float32 exponents overflow to -inf as meant.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def gaussian_log_density(x, centre, sigma):
    """The one-point bank's log-likelihood in float64, direct differences, no sigma^2."""
    distances = ((np.asarray(x, np.float64) - np.asarray(centre, np.float64)) ** 2).sum(1)
    return -(distances / sigma) / sigma / 2 - x.shape[1] * (math.log(sigma) + 0.5 * math.log(2 * math.pi))


def backend_options(backend):
    return {"backend": backend, **({"device": "cpu"} if backend == "triton" else {})}  # the interpreter (conftest.py)


def score(x, bank, sigmas, backend):
    return parzen.log_likelihood(x, bank, sigmas, **backend_options(backend))


# (data scale, sigma): tiny sigma (1/(2 sigma^2) past float32's range at 1e-20, past what one power of two
# can bring into it at 1e-100), huge sigma (sigma^2 overflows float64 at 1e300), data whose squared
# distances overflow float32 (1e19 in 784 dimensions, 1e30) or whose entries do (1e40, float64 input),
# data whose squares underflow float32 (1e-30), and everything huge at once (1e150).
EXTREMES = [(1.0, 1e-5), (1.0, 1e-20), (1.0, 1e-100), (1.0, 1e-150), (1.0, 1e300), (1e19, 3e18), (1e19, 1e-5),
            (1e30, 3e29), (1e40, 3e39), (1e-30, 3e-31), (1e150, 1e150)]


@pytest.mark.parametrize("scale, sigma", EXTREMES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_point_bank_is_a_gaussian_at_any_scale(backend, scale, sigma, rng):
    centre = rng.random((1, 784)) * scale
    x = rng.random((5, 784)) * scale
    got = score(x, centre, [sigma], backend)[0]
    # The bank's one term is the nearest, which every backend computes in float64 (the float32 ones by
    # refinement, on data scaled by a power of two): float64 rounding of D and of the constant, ~1e-13 relative.
    np.testing.assert_allclose(got, gaussian_log_density(x, centre, sigma), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("sigma", [0.5, 1e-30])
@pytest.mark.parametrize("backend", BACKENDS)
def test_all_zero_data_score_as_one_gaussian(backend, sigma):
    """Every distance 0 (blank images against a blank bank): any power of two keeps the float32 paths in
    range, the bound on it is infinite (once an OverflowError), and each point scores -d log(sigma sqrt(2 pi))."""
    x, bank = np.zeros((3, 20)), np.zeros((5, 20))
    got = score(x, bank, [sigma], backend)[0]
    np.testing.assert_allclose(got, gaussian_log_density(x, bank[:1], sigma), rtol=1e-12)
    nearest = parzen.parzen_pass(x, bank, [], **backend_options(backend))
    assert not nearest.min_sq_distance.any() and not nearest.nearest_index.any()


def test_mnist_at_sigma_1e5_is_finite_and_within_the_float32_bound(mnist):
    """The reported case: 300 test images against 2,000 training images gave 60 NaN with the torch backend."""
    x, bank = mnist.test_x[:300], mnist.train_x[:2000]
    sigmas = [1e-5, 1e-6]
    reference = parzen.log_likelihood(x, bank, sigmas, backend="reference")
    fast = parzen.log_likelihood(x, bank, sigmas, backend="torch")
    assert np.isfinite(fast).all() and np.isfinite(reference).all()
    assert np.all(np.abs(fast - reference) <= float32_log_likelihood_bound(x, bank, sigmas))


@pytest.mark.parametrize("sigma", [1e-5, 1e-10, 1e-30])
@pytest.mark.parametrize("backend", BACKENDS)
def test_streamed_chunks_match_one_pass_at_small_sigma(backend, sigma, rng):
    x, bank = rng.random((23, 17)), rng.random((301, 17)).astype(np.float32)  # banks are read as float32
    chunk_rows = 70
    streamed = streaming.log_likelihood(x, bank, [sigma], chunk_rows=chunk_rows, progress=False,
                                        **backend_options(backend))
    reference = parzen.log_likelihood(x, bank, [sigma], backend="reference")
    assert np.isfinite(streamed).all()
    chunks = [bank[start:start + chunk_rows] for start in range(0, len(bank), chunk_rows)]
    if backend == "reference":
        # Each chunk is centred on its own mean, the one-pass reference on the bank's: both expanded forms
        # are off by (d + 4) eps (||x||^2 + ||s||^2) in D about their centres (tolerances.py with eps = 2^-53),
        # over 2 sigma^2; the merges add float64 rounding of values of ~D / (2 sigma^2).
        def norms(centre):
            return ((x - centre) ** 2).sum(1).max() + ((bank - centre) ** 2).sum(1).max()
        worst = max(norms(chunk.mean(0, dtype=np.float64)) for chunk in chunks) + norms(bank.mean(0, dtype=np.float64))
        bound = (x.shape[1] + 4) * 2.0**-53 * worst / (2 * sigma**2) + 1e-14 * np.abs(reference)
    else:
        # Each chunk's float32 pass is within its own derived bound, and log-sum-exp is 1-Lipschitz
        # in the max norm, so the merge is within the largest.
        split = backend == "triton"  # tf32x3 operands: a dot of length 3d
        bound = max(float32_log_likelihood_bound(x, chunk, [sigma], split).item() for chunk in chunks)
    assert np.all(np.abs(streamed - reference) <= bound)


def test_duplicated_samples_at_tiny_sigma_stay_finite_and_within_the_bound(rng):
    """Every sample twice: the duplicate's float32 term equals the nearest's, whose exact distance moves it by
    ~2e-5 x 5e9 = 1e5 nats. The refinement then gave inf (exp of that times S - 1 = 1); a near-tie float32
    cannot resolve keeps its float32 values (within the bound), and the streamed sums stay in [1, m + 1]."""
    bank = rng.random((60, 784)).astype(np.float32)
    bank[30:] = bank[:30]
    x = bank[:30] + (rng.normal(size=(30, 784)) * 0.01).astype(np.float32)
    sigmas = [1e-5, 1e-3]
    reference = parzen.log_likelihood(x, bank, sigmas, backend="reference")
    bound = float32_log_likelihood_bound(x, bank, sigmas)
    for fast in (parzen.log_likelihood(x, bank, sigmas, backend="torch"),
                 streaming.log_likelihood(x, bank, sigmas, chunk_rows=45, backend="torch", progress=False)):
        assert np.isfinite(fast).all() and np.all(np.abs(fast - reference) <= bound)


def test_merging_with_an_empty_partial_at_huge_sigma_is_exact(rng):
    """1/(2 sigma^2) underflows to 0 at sigma 1e300; an empty side (min +inf) then gave inf * 0 = NaN."""
    distances = rng.random((4, 9))
    block = partials.from_distances(distances, [1e300, 1.0])
    empty = partials.BankPartial(np.full(4, np.inf), np.zeros(4, dtype=np.int64), np.zeros((2, 4)))
    merged = partials.merge(empty, block, [1e300, 1.0])
    np.testing.assert_array_equal(merged.shifted_sums, block.shifted_sums)
    np.testing.assert_array_equal(merged.min_sq_distance, block.min_sq_distance)


def test_torch_backend_falls_back_to_float64_when_float32_cannot_hold_the_pass(rng, capsys, monkeypatch):
    monkeypatch.setattr(progress, "_ANNOUNCED", set())
    x, bank = rng.random((4, 10)), rng.random((30, 10))
    # D / (2 sigma^2) ~ 1e300: no power of two brings both D and 1/(2 sigma^2) into float32.
    fast = parzen.log_likelihood(x, bank, [1e-150], backend="torch")
    np.testing.assert_array_equal(fast, parzen.log_likelihood(x, bank, [1e-150], backend="reference"))
    assert "float64 reference backend instead" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("scale, sigma, message", [
    (1.0, 1e-300, "overflows float64 below sigma"),       # 1/(2 sigma^2) is not a float64 number
    (1.0, 1e-154, "below float64's range"),               # it is, but -D / (2 sigma^2) is not
    (1e200, 1e200, "squared distances between them overflow float64"),
])
def test_what_float64_cannot_hold_is_a_clear_error(backend, scale, sigma, message, rng):
    x, bank = rng.random((3, 784)) * scale, rng.random((5, 784)) * scale
    with pytest.raises(GanbenchError, match=message):
        parzen.log_likelihood(x, bank, [sigma], backend=backend)
    if scale < 1e38:  # banks are read as float32 (ganbench.scoring.banks)
        with pytest.raises(GanbenchError, match=message):
            streaming.log_likelihood(x, bank, [sigma], chunk_rows=2, backend=backend, progress=False)


def test_a_query_on_a_sample_at_tiny_sigma_gets_the_float64_value(rng):
    """D = 0 for the nearest: the answer -log m - d log(sigma sqrt(2 pi)) is finite however small sigma is.

    The float32 backends compute the nearest distance exactly (0) by refinement; the other terms underflow.
    """
    bank = rng.random((6, 5))
    got = parzen.log_likelihood(bank[[2]], bank, [1e-20], backend="torch")[0, 0]
    assert got == pytest.approx(-math.log(6) - 5 * (math.log(1e-20) + 0.5 * math.log(2 * math.pi)), rel=1e-14)


def test_cli_sigma_1e300_is_a_one_line_error_and_1e4_a_number(mnist, tmp_path, capsys):
    np.save(tmp_path / "samples.npy", mnist.train_x[:50])
    assert main(["parzen", str(tmp_path / "samples.npy"), "--sigma", "1e-300", "--backend", "torch"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and "too small" in captured.err
    assert main(["parzen", str(tmp_path / "samples.npy"), "--sigma", "1e-4", "--backend", "torch", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = parzen.log_likelihood(mnist.test_x, mnist.train_x[:50], [1e-4], backend="reference")[0]
    assert math.isfinite(result["mean"]) and math.isfinite(result["standard_error"])
    bound = float32_log_likelihood_bound(mnist.test_x, mnist.train_x[:50], [1e-4]).item()
    assert abs(result["mean"] - expected.mean()) <= bound


def test_cli_on_own_data_of_scale_1e19(tmp_path, capsys, rng):
    """Entries of ~4e19 in 20 dimensions: squared distances ~6e40 overflow float32 (they gave NaN)."""
    files = {}
    for name, count in (("samples", 200), ("valid", 50), ("test", 40)):
        files[name] = tmp_path / f"{name}.npy"
        np.save(files[name], rng.normal(size=(count, 20)) * 4e19)
    arguments = ["parzen", str(files["samples"]), "--valid", str(files["valid"]), "--test", str(files["test"]),
                 "--backend", "torch", "--json"]
    assert main(arguments) == 0
    result = json.loads(capsys.readouterr().out)
    test, samples = banks.open_bank(files["test"]).read_all(), banks.open_bank(files["samples"]).read_all()
    expected = parzen.log_likelihood(test, samples, [result["sigma"]], backend="reference")[0]
    assert abs(result["mean"] - expected.mean()) <= float32_log_likelihood_bound(test, samples, [result["sigma"]]).item()


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("scale", [1e19, 1e40, 1e-30])
def test_float32_backends_on_rescaled_data_within_the_derived_bound(backend, scale, rng):
    """Many samples, so the other terms count too; the float32 bound is invariant under scaling data and sigma."""
    x, bank = rng.random((6, 40)) * scale, rng.random((37, 40)) * scale
    sigmas = np.array([0.2, 0.5]) * scale
    fast = score(x, bank, sigmas, backend)
    reference = parzen.log_likelihood(x, bank, sigmas, backend="reference")
    split = backend == "triton"  # the kernel's default tf32x3 operands: a dot three times as long
    assert np.all(np.abs(fast - reference) <= float32_log_likelihood_bound(x, bank, sigmas, split))


def test_float32_input_at_the_top_of_its_range(rng):
    """float32 entries of 1e38: the bank mean and every norm would overflow float32 without the power-of-two scale."""
    x = (rng.random((4, 8)) * 1e38).astype(np.float32)
    bank = (rng.random((9, 8)) * 1e38).astype(np.float32)
    reference = parzen.log_likelihood(x, bank, [3e37], backend="reference")
    fast = parzen.log_likelihood(x, bank, [3e37], backend="torch")
    assert np.all(np.abs(fast - reference) <= float32_log_likelihood_bound(x, bank, [3e37]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("exponent", [-500, -540, -560, -1000])
def test_data_whose_squared_distances_underflow_keep_their_nearest_neighbours(backend, exponent, rng):
    """Data scaled by 2^-540 (entries below 3e-163) squared to 0 in float64: every backend, the reference too,
    gave sample 0 as every point's nearest. A power of two moves no ranking, so the nearest must be the unscaled
    data's; the distances are the float64 roundings of the scaled ones (0 where they underflow)."""
    queries, samples = rng.random((5, 3)), rng.random((10, 3))
    expected = parzen.parzen_pass(queries, samples, [], backend="reference")
    tiny_queries, tiny_samples = np.ldexp(queries, exponent), np.ldexp(samples, exponent)
    result = parzen.parzen_pass(tiny_queries, tiny_samples, [], **backend_options(backend))
    np.testing.assert_array_equal(result.nearest_index, expected.nearest_index)
    # Exact: the float64 distances of the unscaled data times 4^exponent, rounded once (both sides are the exact
    # distance's roundings, and scaling by a power of two is exact until it underflows).
    np.testing.assert_array_equal(result.min_sq_distance, np.ldexp(expected.min_sq_distance, 2 * exponent))
    if backend != "triton":
        _, nearest = neighbours.nearest(tiny_queries, tiny_samples, k=2, backend=backend)
        np.testing.assert_array_equal(nearest, neighbours.nearest(queries, samples, k=2, backend=backend)[1])


def test_a_memorisation_report_on_distances_below_float64s_range_is_a_one_line_error(rng):
    """At entries of 1e-169 every held-out point read distance 0 from the training data: the copy thresholds were
    0 and every sample counted as at least as close as the closest held-out point."""
    train, test, samples = (np.ldexp(rng.random(shape), -560) for shape in ((300, 20), (200, 20), (50, 20)))
    with pytest.raises(GanbenchError, match="200 held-out points differ from their nearest training point by a "
                                            "squared distance below float64's normal range"):
        memorization.report(samples, train, test, backend="torch")


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_a_huge_width_beside_tiny_data_is_one_gaussian_without_a_warning(backend, rng):
    """Data below 1e-162 are scaled up by 2^560 and their widths with them: sigma 1e300 overflowed NumPy's ldexp
    with a RuntimeWarning. Every term is then exp(-0) = 1: the log-likelihood is -d log(sigma sqrt(2 pi))."""
    queries, samples = np.ldexp(rng.random((5, 3)), -560), np.ldexp(rng.random((10, 3)), -560)
    scores = parzen.log_likelihood(queries, samples, [1e160, 1e300], backend=backend)
    expected = [-3 * (math.log(sigma) + 0.5 * math.log(2 * math.pi)) for sigma in (1e160, 1e300)]
    # Both sides are float64 logs, sums and products of values below 2,100 in magnitude: the scorer's 7 roundings
    # (a NumPy log within one ulp, whose SIMD kernel differs across CPUs) and these 4, each at most 2^-52 of 2,100.
    np.testing.assert_allclose(scores, np.repeat(np.array(expected)[:, None], 5, axis=1), rtol=0,
                               atol=11 * 2.0**-52 * 2100)
