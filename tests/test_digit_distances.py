"""8-bit queries against a bank in [0, 1] from int8 products of the bank's digits (ganbench.scoring.digit_distances)."""
import math

import numpy as np
import pytest
import torch
from test_byte_distances import as_pixels, exact_int8, random_bytes
from tolerances import log_likelihood_bound

from ganbench.scoring import bounds, byte_distances, digit_distances, fused_rows, parzen

U32 = 2.0**-24


def bank_in_unit_interval(rng, count, dimension, dtype=np.float32):
    """A generator-like bank: mostly dark values in [0, 1] off the byte grid, with 0 and 1 themselves."""
    values = (rng.random((count, dimension)) ** 4).astype(dtype)
    values[0] = 0.0
    values[-1] = 1.0
    return values


def exact_rounded(values: np.ndarray, count: int) -> np.ndarray:
    """T' = round(255 B s) - 128 B in int64 (NumPy's rint, half to even as torch's round)."""
    base = 256 ** (count - 1)
    return np.rint(values.astype(np.float64) * (255 * base)).astype(np.int64) - 128 * base


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_balanced_digits_give_back_the_rounded_values(count, dtype, rng):
    """Every digit in -128..127 and sum_d 256^(k-1-d) q_d = T' exactly, for every T in 0..255 B when k <= 2
    (each one hit) and for random values, 0 and 1 when k = 3; columns past d are zero; the norms are
    sum T'^2 / B^2 from exact integers."""
    base = 256 ** (count - 1)
    if count <= 2:
        every = np.arange(255 * base + 1, dtype=np.float64) / (255 * base)   # rounds back to each T
        values = np.resize(every, (math.ceil(len(every) / 7) * 7,)).reshape(-1, 7).astype(dtype)
    else:
        values = bank_in_unit_interval(rng, 301, 7, dtype)
    operands = digit_distances.digit_operands(torch.from_numpy(values), width=16, count=count)
    digits = operands.digits.numpy().astype(np.int64)
    assert digits.shape == (count, len(values), 16) and not digits[:, :, 7:].any()
    rebuilt = sum(digits[d, :, :7] * 256 ** (count - 1 - d) for d in range(count))
    expected = exact_rounded(values, count)
    np.testing.assert_array_equal(rebuilt, expected)
    if count <= 2:
        assert expected.min() == -128 * base and expected.max() == 127 * base   # both ends of the range
    np.testing.assert_array_equal(operands.norms.numpy(), (expected**2).sum(axis=1).astype(np.float64) / base**2)


@exact_int8
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("shape", [(23, 41, 1), (37, 53, 3), (20, 45, 785)])
def test_minima_are_the_rounded_datas_distances(shape, fused, rng, monkeypatch):
    """The minima and nearest indices are those of the exact distances between the queries' bytes and the
    bank rounded to 24 bits (int64 arithmetic), to within the float64 combination's 4 2^-53 V (module
    docstring) and 2 2^-53 V more for this test's own conversion and division; exact ties go to the
    lowest index, in the compiled pass and the eager one alike."""
    if not fused:
        monkeypatch.setattr(fused_rows, "available", lambda: False)
    elif not fused_rows.available():
        pytest.skip("no compiled fused pass on this machine")
    count, bank_count, dimension = shape
    query_bytes = random_bytes(rng, count, dimension)
    bank = bank_in_unit_interval(rng, bank_count, dimension)
    bank[40 % bank_count] = bank[3]            # a duplicate in another block: ties go to row 3
    query = byte_distances.operands(torch.from_numpy(query_bytes).float())
    operands = digit_distances.digit_operands(torch.from_numpy(bank), query.shifted.shape[1])
    result = digit_distances.pass_over_bank(query, operands, np.array([0.3, 1.0]), query_block=7, bank_block=10)
    base = 256**2
    scaled = exact_rounded(bank, 3)                              # T'
    shifted_queries = (query_bytes.astype(np.int64) - 128) * base
    exact = ((shifted_queries[:, None, :] - scaled[None]) ** 2).sum(-1)   # 255^2 B^2 D~, exact integers
    np.testing.assert_array_equal(result.nearest_index.numpy(), exact.argmin(axis=1))
    largest = 128**2 * dimension
    norms = ((query_bytes.astype(np.float64) - 128) ** 2).sum(axis=1)
    allowed = 6 * 2.0**-53 * (1 + 2.0**-20) * (largest + 2 * np.sqrt(norms * largest) + norms) / 255**2
    assert np.all(np.abs(result.min_sq_distance.numpy() - exact.min(axis=1) / (255.0**2 * base**2)) <= allowed)


@exact_int8
def test_compiled_and_eager_passes_agree(rng, monkeypatch):
    """The compiled pass computes E with the eager one's float64 operations: the same minima and indices
    to the bit, and sums within the float32 sums' bound of each other."""
    if not fused_rows.available():
        pytest.skip("no compiled fused pass on this machine")
    query = byte_distances.operands(torch.from_numpy(random_bytes(rng, 41, 300)).float())
    bank = bank_in_unit_interval(rng, 517, 300)
    bank[200:260] = np.clip(bank[:60] + rng.normal(0, 0.01, (60, 300)), 0, 1)   # near pairs: many terms count
    operands = digit_distances.digit_operands(torch.from_numpy(bank), query.shifted.shape[1])
    grid = np.array([0.05, 0.3, 1.0, 4.0])
    fused = digit_distances.pass_over_bank(query, operands, grid, query_block=16, bank_block=100)
    monkeypatch.setattr(fused_rows, "available", lambda: False)
    eager = digit_distances.pass_over_bank(query, operands, grid, query_block=16, bank_block=100)
    assert torch.equal(fused.min_sq_distance, eager.min_sq_distance)
    assert torch.equal(fused.nearest_index, eager.nearest_index)
    # Each is within L u of the float64 sums of the same exponents (bounds.sum_coefficient), so of each other twice.
    allowed = 2 * (bounds.sum_coefficient(len(bank)) * U32 + bounds.left_out_terms(len(bank), "float32"))
    assert np.all(np.abs(np.log(fused.shifted_sums.double().numpy()) - np.log(eager.shifted_sums.double().numpy()))
                  <= allowed)


def digit_bound(x: np.ndarray, bank: np.ndarray, sigmas) -> np.ndarray:
    """The digit path's own bound per sigma and query: ``digit_error`` over 2 sigma^2 (log-sum-exp is
    1-Lipschitz in the exponents) plus the float32 sums' rounding and the terms left out."""
    query, samples = torch.from_numpy(x), torch.from_numpy(bank)
    norms = ((x.astype(np.float64) * 255 - 128).round() ** 2).sum(axis=1)
    error = digit_distances.digit_error(digit_distances.centred_spread(query, samples), torch.from_numpy(norms),
                                        x.shape[1], query.dtype, samples.dtype).numpy()
    sums = bounds.sum_coefficient(len(bank)) * U32 + bounds.left_out_terms(len(bank), "float32") + 1e-12
    return np.stack([error / (2 * sigma**2) + sums for sigma in sigmas])


@exact_int8
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("shape", [(67, 1100, 784), (29, 301, 1), (33, 95, 37)])
def test_torch_backend_takes_digits_within_their_bound(shape, fused, rng, monkeypatch):
    """Through the public pass: 8-bit queries against a bank in [0, 1] at odd sizes take the digit products,
    and every point lies within the digits' own bound of the float64 reference (and so within the float32
    path's bound, which the path checks before it is taken)."""
    if not fused:
        monkeypatch.setattr(fused_rows, "available", lambda: False)
    taken = []
    original = digit_distances.pass_over_bank
    monkeypatch.setattr(digit_distances, "pass_over_bank", lambda *args: taken.append(1) or original(*args))
    count, bank_count, dimension = shape
    x, bank = as_pixels(random_bytes(rng, count, dimension)), bank_in_unit_interval(rng, bank_count, dimension)
    bank[70] = x[3]                                   # an 8-bit row inside the bank: distance 0
    sigmas = np.logspace(-1, 0, 10)
    reference = parzen.parzen_pass(x, bank, sigmas, backend="reference")
    fast = parzen.parzen_pass(x, bank, sigmas, backend="torch", device="cpu", query_block=32, bank_block=1000)
    assert taken
    error = np.abs(fast.log_sum_exp - reference.log_sum_exp)
    assert np.all(error <= digit_bound(x, bank, sigmas))
    assert np.all(error <= log_likelihood_bound(x, bank, sigmas, block_rows=1000))
    assert fast.nearest_index[3] == 70 and fast.min_sq_distance[3] == 0


@exact_int8
def test_digits_only_where_they_apply(rng, monkeypatch):
    """tf32x3, queries that are not 8-bit, a bank outside [0, 1], and a bank so tight that the digits'
    rounding would leave the float32 bound keep the float32 path; int8 there says so on stderr. float64
    queries and float16, float32 or float64 banks take the digits."""
    taken, said = [], []
    original = digit_distances.pass_over_bank
    monkeypatch.setattr(digit_distances, "pass_over_bank", lambda *args: taken.append(1) or original(*args))
    monkeypatch.setattr(parzen, "_announce", said.append)
    byte_array = random_bytes(rng, 5, 600)
    x, bank = as_pixels(byte_array), bank_in_unit_interval(rng, 30, 600)
    parzen.parzen_pass(x, bank, [0.5], backend="torch", precision="tf32x3")
    assert not taken
    outside = bank.copy()
    outside[4, 9] = np.nextafter(np.float32(1), np.float32(2))
    tight = np.clip(x[:1] + rng.normal(0, 1e-5, (30, 600)).astype(np.float32), 0, 1)   # N ~ 3e-8
    assert not digit_distances.within_float32_bound(torch.from_numpy(x[:1]), torch.from_numpy(tight),
                                                    torch.tensor([int(((x[0] * 255 - 128).round() ** 2).sum())]))
    for query, samples in ((x * np.float32(0.999), bank), (x, outside), (x, -outside), (x[:1], tight)):
        parzen.parzen_pass(query, samples, [0.5], backend="torch", precision="auto")
        assert not taken and not said
        reference = parzen.parzen_pass(query, samples, [0.5], backend="reference")
        fast = parzen.parzen_pass(query, samples, [0.5], backend="torch", precision="int8")
        assert not taken and "int8 products on the CPU need 8-bit x" in said.pop()
        assert np.all(np.abs(fast.log_sum_exp - reference.log_sum_exp)
                      <= log_likelihood_bound(query, samples.astype(np.float32), [0.5]))
    for query, samples in ((x, bank), (as_pixels(byte_array, np.float64), bank), (x, bank.astype(np.float64)),
                           (x, bank.astype(np.float16))):
        parzen.parzen_pass(query, samples, [0.5], backend="torch", precision="int8")
    assert len(taken) == 4 and not said


def test_the_bound_check_follows_the_arithmetic():
    """On MNIST's shape the digits' error is far inside the float32 bound; the check compares with K u N."""
    dimension, spread = 784, torch.tensor([100.0, 1e-3])
    norms = torch.tensor([196.0 * 255**2, 196.0 * 255**2])
    error = digit_distances.digit_error(spread, norms, dimension, torch.float32, torch.float32)
    eta = math.sqrt(dimension) * (2.0**-25 + 0.5 / (255 * 65536))
    assert math.isclose(eta, 1.67e-6, rel_tol=0.01)
    allowed = bounds.distance_coefficient("float32", dimension) * U32 * spread
    assert error[0] < allowed[0] / 100 and error[1] > allowed[1]


@exact_int8
def test_a_wrong_compiled_digit_pass_is_refused():
    """The library's load check fails a pass that drops a digit or writes nothing (the whole library is then
    left unused and the eager passes score)."""
    if not fused_rows.available():
        pytest.skip("no compiled fused pass on this machine")
    function = fused_rows.library().digit_rows
    assert fused_rows._digits_agree_with_float64(function)
    assert not fused_rows._digits_agree_with_float64(lambda *args: function(*args[:5], 2, *args[6:]))
    assert not fused_rows._digits_agree_with_float64(lambda *args: 0)
    assert not fused_rows._digits_agree_with_float64(lambda *args: function(args[0], *args[1:6], args[7], *args[7:]))


@exact_int8
def test_the_callers_data_are_left_unchanged(rng):
    """float64 inputs are not copied on their way in (``double()`` of a float64 tensor is itself): the digits
    are formed from a copy, and scoring leaves both tensors as they were, bit for bit."""
    x = torch.from_numpy(as_pixels(random_bytes(rng, 9, 40), np.float64))
    bank = torch.from_numpy(bank_in_unit_interval(rng, 70, 40, np.float64))
    kept = x.clone(), bank.clone()
    assert digit_distances.parzen_operands(x, bank) is not None
    parzen.parzen_pass(x, bank, [0.2, 0.5], backend="torch", device="cpu")
    assert torch.equal(x, kept[0]) and torch.equal(bank, kept[1])
