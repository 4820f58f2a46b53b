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
    bank[3] = query_bytes[5] / np.float32(255)   # query 5's nearest, at distance 0 ...
    bank[40] = bank[3]                           # ... twice, the copy in another block: row 3 wins
    query = byte_distances.operands(torch.from_numpy(query_bytes).float())
    operands = digit_distances.digit_operands(torch.from_numpy(bank), query.shifted.shape[1])
    result = digit_distances.pass_over_bank(query, operands, np.array([0.3, 1.0]), query_block=7, bank_block=10)
    base = 256**2
    scaled = exact_rounded(bank, 3)                              # T'
    shifted_queries = (query_bytes.astype(np.int64) - 128) * base
    exact = ((shifted_queries[:, None, :] - scaled[None]) ** 2).sum(-1)   # 255^2 B^2 D~, exact integers
    np.testing.assert_array_equal(result.nearest_index.numpy(), exact.argmin(axis=1))
    assert result.nearest_index[5] == 3 and result.min_sq_distance[5] == 0
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
    for query, samples, reason in ((x * np.float32(0.999), bank, "x is not 8-bit"),
                                   (x, outside, "values outside [0, 1]"), (x, -outside, "values outside [0, 1]"),
                                   (x[:1], tight, "so tight that its rounding to 24 bits would leave the float32 bound")):
        parzen.parzen_pass(query, samples, [0.5], backend="torch", precision="auto")
        assert not taken and not said
        reference = parzen.parzen_pass(query, samples, [0.5], backend="reference")
        fast = parzen.parzen_pass(query, samples, [0.5], backend="torch", precision="int8")
        notice = said.pop()
        assert not taken and "int8 products on the CPU need 8-bit x and a bank in [0, 1], but" in notice
        assert reason in notice
        assert np.all(np.abs(fast.log_sum_exp - reference.log_sum_exp)
                      <= log_likelihood_bound(query, samples.astype(np.float32), [0.5]))
    for query, samples in ((x, bank), (as_pixels(byte_array, np.float64), bank), (x, bank.astype(np.float64)),
                           (x, bank.astype(np.float16)), (x, torch.from_numpy(bank).to(torch.bfloat16))):
        parzen.parzen_pass(query, samples, [0.5], backend="torch", precision="int8")
    assert len(taken) == 5 and not said


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
    """The library's load check fails a pass that drops a digit, writes nothing or reads other column terms
    (the whole library is then left unused and the eager passes score). Mutations of the C++ source (a
    digit's weight, the rescaling left out, E and its minimum rounded to float32 before their difference)
    fail it too: checked when the check was written, by compiling each."""
    if not fused_rows.available():
        pytest.skip("no compiled fused pass on this machine")
    function = fused_rows.library().digit_rows
    assert fused_rows._digits_agree_with_float64(function)
    assert not fused_rows._digits_agree_with_float64(lambda *args: function(*args[:5], 2, *args[6:]))
    assert not fused_rows._digits_agree_with_float64(lambda *args: 0)
    other_terms = np.zeros(64)   # column terms the pass was not given (as many as it reads)
    assert not fused_rows._digits_agree_with_float64(lambda *args: function(*args[:6], other_terms.ctypes.data, *args[7:]))


@exact_int8
def test_the_callers_data_are_left_unchanged(rng):
    """float64 inputs are not copied on their way in (``double()`` of a float64 tensor is itself): the digits
    are formed from a copy, and scoring leaves both tensors as they were, bit for bit."""
    x = torch.from_numpy(as_pixels(random_bytes(rng, 9, 40), np.float64))
    bank = torch.from_numpy(bank_in_unit_interval(rng, 70, 40, np.float64))
    kept = x.clone(), bank.clone()
    assert digit_distances.parzen_operands(x, bank)[0] is not None
    parzen.parzen_pass(x, bank, [0.2, 0.5], backend="torch", device="cpu")
    assert torch.equal(x, kept[0]) and torch.equal(bank, kept[1])


@exact_int8
def test_the_bound_is_reached_on_half_steps():
    """The data term 2 eta sqrt(2N) is tight: a bank value s on a tie of 255 B s (s = (2k + 1) / 2^17) moves by
    exactly half a step, and a query at 0 against the bank {0, s 1} has D = d s^2 = 2N. The computed distance's
    error, d h (2 s +- h) for the step h, then reaches the bound, about 2 d h s + 3 d h^2, to within 3 h / s
    (below 1e-5 here), and never passes it."""
    dimension = 784
    x = torch.zeros((1, dimension), dtype=torch.float64)
    for odd in (12345, 2**16 + 1, 2**17 - 1):
        s = odd / 2.0**17
        bank = torch.tensor([[0.0] * dimension, [s] * dimension], dtype=torch.float64)
        query = byte_distances.byte_operands(x)
        operands = digit_distances.digit_operands(bank, query.shifted.shape[1])
        products = digit_distances.products_tile(query, operands, slice(0, 2),
                                                 torch.empty((operands.count, 1, 2), dtype=torch.int32))
        computed = float(digit_distances.distances_from_products(products, operands.norms, query.norms.double())[0, 1])
        error = abs(computed / 255**2 - dimension * s * s)       # d s^2 is exact in float64
        spread = digit_distances.centred_spread(x, bank)
        bound = float(digit_distances.digit_error(spread, query.norms.double(), dimension, x.dtype, bank.dtype)[0])
        assert 1 - 1e-5 < error / bound <= 1, (odd, error, bound)


@exact_int8
def test_the_bound_check_flips_where_the_arithmetic_says():
    """Against a bank {x - t v, x + t v} (v a unit vector, so N = t^2 about the mean x), the digit path
    qualifies exactly when its error bound, 2 eta sqrt(2N) + 3 eta^2 plus the float64 combination's, is
    within K u N: 1% either side of the N* solving that equation, computed here on its own."""
    dimension = 784
    x = torch.full((1, dimension), 128 / 255, dtype=torch.float32)          # a' = 0
    eta = math.sqrt(dimension) * (2.0**-25 + 0.5 / (255 * 65536))
    arithmetic = 4 * 2.0**-53 * (1 + 2.0**-20) * 128**2 * dimension / 255**2
    slope = bounds.distance_coefficient("float32", dimension) * U32
    # slope N = 2 sqrt(2) eta sqrt(N) + 3 eta^2 + arithmetic, a quadratic in sqrt(N)
    root = (2 * math.sqrt(2) * eta + math.sqrt(8 * eta**2 + 4 * slope * (3 * eta**2 + arithmetic))) / (2 * slope)
    crossing = root**2
    assert 0.002 < crossing < 0.003                                            # docs: "N below ~0.003"
    direction = torch.full((dimension,), 1 / math.sqrt(dimension), dtype=torch.float64)
    norms = torch.zeros(1, dtype=torch.int32)
    for factor, expected in ((1.01, True), (0.99, False)):
        spread = math.sqrt(crossing * factor)
        bank = torch.stack([x[0].double() - spread * direction, x[0].double() + spread * direction])
        assert digit_distances.within_float32_bound(x, bank, norms) == expected, factor


@exact_int8
def test_an_8bit_bank_keeps_one_product(rng):
    """A bank on the byte grid (T = b B) has two zero digits in every row: they are dropped, and one product
    scores it, with the same results as all three."""
    bank = as_pixels(random_bytes(rng, 40, 30))
    query = byte_distances.operands(torch.from_numpy(random_bytes(rng, 9, 30)).float())
    one = digit_distances.digit_operands(torch.from_numpy(bank), query.shifted.shape[1])
    assert one.count == 1
    three = digit_distances.DigitOperands(torch.cat([one.digits, torch.zeros((2, *one.digits.shape[1:]),
                                                                             dtype=torch.int8)]), one.norms)
    grid = np.array([0.2, 1.0])
    first = digit_distances.pass_over_bank(query, one, grid, query_block=4, bank_block=16)
    second = digit_distances.pass_over_bank(query, three, grid, query_block=4, bank_block=16)
    assert all(torch.equal(a, b) for a, b in zip((first.min_sq_distance, first.nearest_index, first.shifted_sums),
                                                (second.min_sq_distance, second.nearest_index, second.shifted_sums)))


def test_the_compiled_pass_is_there_wherever_a_compiler_is():
    """Where a C++ compiler is found the fused pass must build and pass its load check: a check that failed
    would leave every fused test above skipped and the suite green."""
    if fused_rows._compiler() is None:
        pytest.skip("no C++ compiler on this machine: the eager passes score")
    assert fused_rows.available()
