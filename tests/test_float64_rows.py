"""The rows a float32 pass cannot vouch for, rescored in float64 (``ganbench.scoring.float64_rows``).

The expanded form ||x - c||^2 + ||s - c||^2 - 2 (x - c).(s - c) loses to cancellation what the shared
centre c costs: one bank sample far away moves c, and float32 then missed points 0.3 apart by nats,
inside a derived bound as large. The exact-nearest refinement fixes one term a row: copies of the
nearest sample at a small sigma, or a query so far away that every distance rounds alike, kept nats
of float32 error. Such rows are rescored in float64 (``parzen.finish_pass``), so every backend gives
the literal estimator's numbers there, and MNIST keeps the float32 speed.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_parzen import direct_log_likelihood
from tolerances import log_likelihood_bound

from ganbench.scoring import float64_rows, neighbours, parzen, reference

FLOAT32_PATHS = [("torch", "tf32x3"), ("triton", "ieee"), ("triton", "tf32x3")]
SIGMAS = [0.1, 0.2, 0.5]


def outlier_bank(rng, dimension: int, count: int, outlier: float) -> np.ndarray:
    """``count`` samples in [0, 0.3]^d (count not a multiple of any block), one moved to ``outlier`` in every coordinate."""
    bank = rng.random((count, dimension)) * 0.3
    bank[0] = outlier
    return bank


def test_the_centre_cost_is_the_ratio_to_a_centre_at_the_query():
    norms = torch.tensor([0.0, 1e6, 1e6, 3.0, 3.0])
    near = torch.tensor([1.0, 1.0, 1e6, 1.0, 0.0])
    # cost / (D + r): 1 (R = 0); (1e6 + 1001^2) / 1 ~ 2e6; (1e6 + 2000^2) / 1e6 = 5; (3 + (sqrt 3 + 1)^2) / 1
    # ~ 10.5; and a query at distance 0 with no reach has found its nearest sample whatever the centre.
    def far(norms, near):
        near = torch.as_tensor(near, dtype=torch.float64)
        return float64_rows.far_from_centre(float64_rows.centre_cost(torch.as_tensor(norms), near), near)

    assert far(norms, near).tolist() == [False, True, False, False, False]
    assert far([3.0], [1e-4]).item()  # ~3e4


def rescored(norms, float32_minima, minima, log_sums, sigma: float, refused=None) -> list[bool]:
    """``rows_to_rescore`` for one sigma on float64 lists."""
    def as_tensor(values):
        return torch.tensor(values, dtype=torch.float64)

    return float64_rows.rows_to_rescore(as_tensor(norms), as_tensor(float32_minima), as_tensor(minima), refused,
                                        as_tensor([log_sums]), np.array([sigma])).tolist()


def test_the_refinement_estimate_weighs_its_correction_by_the_others_share():
    # log S = log 2 (one other term as heavy as the nearest): share 1/2; scale 1 / (2 * 0.1^2) = 50; margin 2.5.
    # Corrections 1.2e-5, 2e-5, 1: 2.5 * 50 * 1.2e-5 / 2 = 7.5e-4 and 2.5 * 50 * 2e-5 / 2 = 1.25e-3 against 1e-3;
    # the last row's nearest term is all of its sum. R = 0: the floor u (0 + (0 + sqrt(D + 0.8))^2) is far below.
    assert float64_rows.ESTIMATE_MARGIN == 2.5
    log_2 = np.log(2.0)
    assert rescored([0, 0, 0], [1.0, 1.0, 1.0], [1 + 1.2e-5, 1 + 2e-5, 2.0], [log_2, log_2, 0.0], 0.1) == [
        False, True, False]
    # No correction (a nearest sample at the bank mean has its distance R rounded once, maybe exactly), but
    # R = D = 1e4: the floor u (1e4 + (100 + sqrt(1e4 + 0.8))^2) ~ 3e-3, times 50 / 2, passes 1e-3.
    assert rescored([1e4], [1e4], [1e4], [log_2], 0.1) == [True]
    # A refused refinement is rescored whatever the estimate.
    assert rescored([0], [1.0], [1.0], [0.0], 0.1, refused=torch.tensor([True])) == [True]


def test_a_far_row_is_rescored_only_where_another_term_is_within_reach():
    """A training image against a bank holding it at sigma 0.03 (scale 555.6, reach 0.072): R = 50 and
    D = 0 give a ratio of (50 + (7.07 + 0.27)^2) / 0.072 ~ 1,440, past 2^10. Alone in its sum (log S = 0)
    the nearest term, exact, is the answer, and scale x u x cost = 555.6 x 6e-8 x 104 = 3.4e-3 could not
    have hidden a term (HIDING_NATS 0.30); with another term in float32's sum the row is rescored."""
    assert rescored([50.0], [0.0], [0.0], [0.0], 0.03) == [False]
    assert rescored([50.0], [0.0], [0.0], [1e-3], 0.03) == [True]


def test_a_row_whose_error_could_hide_a_term_is_rescored():
    """At sigma 0.003 (scale 55,556) the same row has scale x u x cost = 0.33, past HIDING_NATS: float32's
    S = 1 no longer says nothing else is within reach. So has a query 1000 from a bank (R = D = 1e6, sigma
    sqrt(1/600): 300 x 6e-8 x 4e6 = 72), alone in its sum, with nothing to correct, and not far."""
    assert rescored([50.0], [0.0], [0.0], [0.0], 0.003) == [True]
    assert rescored([1e6], [1e6], [1e6], [0.0], np.sqrt(1 / 600)) == [True]


def test_terms_float32_rounded_out_of_the_sum_are_found(rng, monkeypatch):
    """Queries ~1000 from a bank of three samples: float32's distances there lie on a grid of 0.0625, and
    where two samples' gap of 1/300 (1 nat at this sigma) straddles a step, float32 saw 18.75 nats, its sum
    was exactly 1 and log p 0.31 nats low, with no other warning (a fuzzing review: 21 rows of 400)."""
    bank = np.array([[1.0, 1.0], [1.0, -1.0], [-2.0, 0.0]])
    x = np.stack([rng.uniform(1000, 1001, 400), np.full(400, 1 / 1200)], 1)
    sigmas = [np.sqrt(1 / 600)]
    expected = direct_log_likelihood(x, bank, sigmas)
    got = parzen.log_likelihood(x, bank, sigmas, backend="torch", device="cpu")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=reference.REFERENCE_NATS)
    monkeypatch.setattr(float64_rows, "HIDING_NATS", float("inf"))
    unchecked = parzen.log_likelihood(x, bank, sigmas, backend="torch", device="cpu")
    assert np.abs(unchecked - expected).max() > 0.1  # what the check is for: it can fail


@pytest.mark.parametrize("backend,precision", FLOAT32_PATHS)
@pytest.mark.parametrize("dimension,count,outlier", [(3, 37, 1e4), (3, 101, 1e5), (19, 101, 1e3)])
def test_float32_paths_rescore_rows_far_from_the_bank_mean(backend, precision, dimension, count, outlier, rng,
                                                           capsys, monkeypatch):
    from ganbench import progress

    monkeypatch.setattr(progress, "_ANNOUNCED", set())  # the line is printed once a process
    x = rng.random((23, dimension)) * 0.3
    bank = outlier_bank(rng, dimension, count, outlier)
    expected = direct_log_likelihood(x, bank, SIGMAS)
    got = parzen.log_likelihood(x, bank, SIGMAS, backend=backend, precision=precision, device="cpu")
    # Every row is rescored by the reference: exact up to REFERENCE_NATS where the expanded form's float64
    # rounding could move a row (reference._exact_where_loose), and to float64's rounding of the sums (1e-12).
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=reference.REFERENCE_NATS)
    assert "cannot vouch for some points" in capsys.readouterr().err
    # The centre's cost alone finds these rows (the other checks may too) ...
    monkeypatch.setattr(float64_rows, "LOOSE_NATS", float("inf"))
    monkeypatch.setattr(float64_rows, "HIDING_NATS", float("inf"))
    got = parzen.log_likelihood(x, bank, SIGMAS, backend=backend, precision=precision, device="cpu")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=reference.REFERENCE_NATS)
    # ... and without any rescoring the first case is nats off at sigma 0.1: the check can fail.
    if (dimension, count) == (3, 37):
        monkeypatch.setattr(float64_rows, "rows_to_rescore", nothing_rescored)
        unchecked = parzen.log_likelihood(x, bank, SIGMAS, backend=backend, precision=precision, device="cpu")
        assert np.abs(unchecked - expected)[0].max() > 0.05


def nothing_rescored(centred_query_norms, *args):
    """``rows_to_rescore`` switched off: what the float32 pass alone gives."""
    return torch.zeros(len(centred_query_norms), dtype=torch.bool, device=centred_query_norms.device)


def test_only_the_rows_that_need_it_are_rescored(rng, monkeypatch):
    """Queries among the bank's samples keep their float32 numbers; a query 1e3 from all of them, whose
    float32 distances (~3e6) carry errors of tens of nats at sigma 0.1, is rescored."""
    bank = rng.random((53, 3))
    x = np.concatenate([rng.random((5, 3)), [[1e3, 1e3, 1e3]]])
    rescored_rows = []
    rescore = parzen._rescore_in_float64
    monkeypatch.setattr(parzen, "_rescore_in_float64", lambda result, rows, *args: rescored_rows.append(rows.tolist())
                        or rescore(result, rows, *args))
    got = parzen.log_likelihood(x, bank, SIGMAS, backend="torch", device="cpu")
    assert rescored_rows == [[5]]
    bound = log_likelihood_bound(x[:5], bank, SIGMAS)
    assert np.all(np.abs(got[:, :5] - direct_log_likelihood(x[:5], bank, SIGMAS)) <= bound)
    np.testing.assert_allclose(got[:, 5], direct_log_likelihood(x[5:], bank, SIGMAS)[:, 0], rtol=1e-12,
                               atol=reference.REFERENCE_NATS)


@pytest.mark.parametrize("backend,precision", FLOAT32_PATHS)
def test_copies_of_the_nearest_sample_at_a_small_sigma_are_rescored(backend, precision, rng, monkeypatch):
    """A collapsed generator's bank: the refinement makes one copy's term exact, the others kept float32's
    error, which a small sigma multiplies into nats."""
    dimension = 100
    sample = rng.random(dimension)
    bank = np.concatenate([np.tile(sample, (10, 1)), rng.random((31, dimension))])
    x = sample + rng.normal(size=(7, dimension)) * 0.05
    sigmas = [1e-3, 0.03]
    expected = direct_log_likelihood(x, bank, sigmas)
    got = parzen.log_likelihood(x, bank, sigmas, backend=backend, precision=precision, device="cpu")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=reference.REFERENCE_NATS)
    monkeypatch.setattr(float64_rows, "rows_to_rescore", nothing_rescored)
    unchecked = parzen.log_likelihood(x, bank, sigmas, backend=backend, precision=precision, device="cpu")
    assert np.abs(unchecked - expected)[0].max() > 0.1  # what the check is for: it can fail


def test_copies_beside_a_nearest_sample_at_the_bank_mean_are_rescored(rng, monkeypatch):
    """The nearest sample is the bank mean itself, so its float32 distance is R rounded once and refinement corrects
    nothing; 20 copies of a sample 0.01 further share one float32 error of their distance, 1e4 about the
    centre, and moved log p by 0.38 nats at sigma 0.0434. The error floor u x the centre's cost finds it."""
    dimension, squared_norm = 784, 1e4
    x = rng.standard_normal(dimension)
    x *= np.sqrt(squared_norm) / np.linalg.norm(x)
    step = rng.standard_normal(dimension)
    step *= np.sqrt(squared_norm + 0.01) / np.linalg.norm(step)
    bank = np.concatenate([np.zeros((1, dimension)), np.repeat((x + step)[None], 20, 0),
                           np.repeat(-(x + step)[None], 20, 0)]).astype(np.float32)
    x = x[None].astype(np.float32)
    sigmas = [0.0434, 0.1]
    expected = direct_log_likelihood(x.astype(np.float64), bank.astype(np.float64), sigmas)
    got = parzen.log_likelihood(x, bank, sigmas, backend="torch", device="cpu")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=reference.REFERENCE_NATS)
    monkeypatch.setattr(float64_rows, "rows_to_rescore", nothing_rescored)
    unchecked = parzen.log_likelihood(x, bank, sigmas, backend="torch", device="cpu")
    assert np.abs(unchecked - expected).max() > 1e-2  # what the floor is for: it can fail


def test_near_duplicates_at_a_small_sigma_are_rescored(rng):
    """Ten perturbed copies (3e-5 a coordinate) of each of 10 samples: each copy has its own float32 error,
    and at sigma 0.005 rows missed by 0.03 nats without being rescored before the error floor."""
    base = rng.random((40, 784))
    bank = np.concatenate([base, base[:10].repeat(10, 0) + 3e-5 * rng.standard_normal((100, 784))])
    x = base[:10] + 0.05 * rng.standard_normal((10, 784))
    bank, x = bank.astype(np.float32), x.astype(np.float32)
    sigmas = [0.005, 0.01]
    expected = direct_log_likelihood(x.astype(np.float64), bank.astype(np.float64), sigmas)
    got = parzen.log_likelihood(x, bank, sigmas, backend="torch", device="cpu")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=reference.REFERENCE_NATS)


@pytest.mark.parametrize("dimension", [1, 19])
def test_a_query_far_from_every_sample_is_rescored(dimension, rng, monkeypatch):
    """Every float32 distance of a query 1e10 away rounds alike: the nearest was any sample, and log p off
    by billions of nats (relative 1e-10, but an absolute number ganbench reports)."""
    bank = rng.random((32, dimension))
    x = np.full((1, dimension), 1e10)
    distances = ((x[:, None, :] - bank[None]) ** 2).sum(-1)
    result = parzen.parzen_pass(x, bank, [1.0], backend="torch", device="cpu")
    assert result.nearest_index.tolist() == distances.argmin(1).tolist()
    np.testing.assert_allclose(parzen.log_likelihood(x, bank, [1.0], backend="torch", device="cpu"),
                               direct_log_likelihood(x, bank, [1.0]), rtol=1e-12, atol=reference.REFERENCE_NATS)
    monkeypatch.setattr(float64_rows, "rows_to_rescore", nothing_rescored)
    unchecked = parzen.log_likelihood(x, bank, [1.0], backend="torch", device="cpu")
    assert np.abs(unchecked - direct_log_likelihood(x, bank, [1.0])).max() > 1e3


def test_the_nearest_neighbour_beside_an_outlier_is_the_exact_one(rng):
    """Nearest neighbours alone (no sigma) take the same check: an outlier 1e10 away in the bank moved
    the centre, and float32 picked a sample at twice the nearest distance."""
    reference = rng.random((100, 20)) * 1e-3
    reference[0] = 1e7
    queries = rng.random((9, 20)) * 1e-3
    distances = ((queries[:, None, :] - reference[None]) ** 2).sum(-1)
    found, index = neighbours.nearest(queries, reference, k=1, backend="torch", exact_ranking=False)  # the Parzen pass
    assert index[:, 0].tolist() == distances.argmin(1).tolist()
    np.testing.assert_allclose(found[:, 0], distances.min(1), rtol=1e-12)


def test_mnist_stays_on_the_float32_path(mnist, monkeypatch):
    """Test images against training images, and training images against a bank that holds them, at the
    paper's grid: at most 1% of the rows are rescored (the float32 speed is kept where it is accurate)."""
    rescored = []
    monkeypatch.setattr(parzen, "_rescore_in_float64", lambda result, rows, *args: rescored.append(len(rows)))
    bank = mnist.train_x[:3001]
    grid = np.logspace(-1, 0, 10)
    for queries in (mnist.test_x[:301], bank[:301]):
        parzen.parzen_pass(queries, bank, grid, backend="torch", precision="tf32x3", device="cpu")
    assert sum(rescored) <= 0.01 * 2 * 301, rescored


def test_rows_a_little_off_in_low_dimensions_are_rescored():
    """In d = 2 at sigmas about the nearest-neighbour spacing the rows' errors reached 1.6-2.1 times the estimate
    of ``rows_to_rescore``, and rows 1.1e-3 nats off were left as float32 summed them: with ESTIMATE_MARGIN none
    is more than LOOSE_NATS off (the estimate measures each row's own correction, so it follows the CPU's
    rounding)."""
    x = np.random.default_rng(1).standard_normal((2000, 2), dtype=np.float32)   # two rows 1.1e-3 off without the
    bank = np.random.default_rng(2).standard_normal((2000, 2), dtype=np.float32)  # margin, on an AMD EPYC
    grid = np.logspace(-2, 1, 10)
    got = parzen.log_likelihood(x, bank, grid, backend="torch", device="cpu")
    assert np.abs(got - parzen.log_likelihood(x, bank, grid, backend="reference")).max() <= float64_rows.LOOSE_NATS


def test_a_streamed_bank_rescores_each_chunk_it_needs(rng):
    """Chunks are scored apart, each about its own mean: the chunk holding the outlier is rescored, the
    others stay float32, and the merge gives the literal estimator's numbers."""
    from ganbench.scoring import streaming

    x = rng.random((13, 3)) * 0.3
    bank = outlier_bank(rng, 3, 70, 1e4)
    got = streaming.log_likelihood(x, bank, SIGMAS, chunk_rows=23, progress=False, backend="torch", device="cpu")
    # The merge is 1-Lipschitz: its error is the worst chunk's, the float32 bound of the chunks without the
    # outlier (rows 23 on, the same chunking), the outlier's chunk being exact to float64's rounding.
    bound = log_likelihood_bound(x, bank[23:], SIGMAS, chunk_rows=23)
    assert np.all(np.abs(got - direct_log_likelihood(x, bank, SIGMAS)) <= bound + reference.REFERENCE_NATS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="rescoring from a CUDA pass runs only on a CUDA GPU")
def test_a_cuda_pass_rescores_its_rows_on_the_gpu(rng, monkeypatch):
    """The rows' flags ride in the pass's one copy back; their float64 rescoring runs on the pass's GPU, bank
    and all (the triton backend's, compiled, in benchmarks/gpu_check.py: the tests run Triton's interpreter)."""
    devices = []
    scored = reference.reference_partial
    monkeypatch.setattr(reference, "reference_partial",
                        lambda query, bank, *args: devices.append((query.device.type, bank.device.type))
                        or scored(query, bank, *args))
    x = torch.as_tensor(rng.random((23, 3)) * 0.3, device="cuda")
    bank = outlier_bank(rng, 3, 37, 1e4)
    got = parzen.log_likelihood(x, torch.as_tensor(bank, device="cuda"), SIGMAS, backend="torch")
    expected = direct_log_likelihood(x.cpu().numpy(), bank, SIGMAS)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=reference.REFERENCE_NATS)
    assert devices == [("cuda", "cuda")]
