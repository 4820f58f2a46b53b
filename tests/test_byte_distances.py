"""Exact int8 distances between 8-bit data on the CPU (ganbench.scoring.byte_distances)."""
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from tolerances import log_likelihood_bound

from ganbench.scoring import bounds, byte_distances, parzen

U32 = 2.0**-24
# On a CPU whose torch int8 product fails ganbench's check the byte path is never taken (tested below
# with a broken product); the tests that run it, or expect it taken, say so instead of failing there.
exact_int8 = pytest.mark.skipif(not byte_distances.int8_product_is_exact(),
                                reason="this torch build's CPU int8 product is not exact: ganbench does not use it")


def random_bytes(rng, count, dimension):
    """Bytes with 0 and 255 in every row (the int8 range's ends after the shift) and in whole rows."""
    values = rng.integers(0, 256, size=(count, dimension))
    values[:, 0], values[:, -1] = 0, 255
    values[0], values[-1] = 0, 255
    return values


def as_pixels(byte_array, dtype=np.float32):
    """What dividing uint8 images by 255 gives, in ``dtype``."""
    return (byte_array.astype(dtype) / dtype(255)).astype(dtype)


def exact_sq_distances(query_bytes, bank_bytes):
    """255^2 D between the bytes, in int64 (exact)."""
    difference = query_bytes[:, None, :].astype(np.int64) - bank_bytes[None, :, :]
    return (difference * difference).sum(-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_byte_values_accepts_exactly_the_division_of_bytes(dtype, rng):
    byte_array = random_bytes(rng, 9, 13)
    pixels = torch.from_numpy(as_pixels(byte_array, dtype))
    np.testing.assert_array_equal(byte_distances.byte_values(pixels).numpy(), byte_array)
    for row, column, value in ((0, 3, np.nextafter(pixels[0, 3].item(), 2, dtype=dtype)),  # one ulp off
                               (8, 5, -1 / 255), (4, 0, 256 / 255), (4, 2, 0.5)):
        changed = pixels.clone()
        changed[row, column] = float(value)
        assert byte_distances.byte_values(changed) is None, (row, column, value)


@exact_int8
@pytest.mark.parametrize("shape", [(37, 53, 1), (37, 53, 3), (20, 41, 785)])
def test_minima_and_nearest_are_the_exact_ones(shape, rng):
    """Every squared distance is an exact integer E = 255^2 D: the minima equal the int64 ones to the
    bit (E / 255^2 rounded once in float64), and the nearest index is the first among exact ties."""
    count, bank_count, dimension = shape
    query_bytes, bank_bytes = random_bytes(rng, count, dimension), random_bytes(rng, bank_count, dimension)
    bank_bytes[40] = bank_bytes[3]   # a duplicate in another block: ties go to row 3
    query_bytes[5] = bank_bytes[3]   # at distance exactly 0
    query = byte_distances.operands(torch.from_numpy(query_bytes).float())
    bank = byte_distances.operands(torch.from_numpy(bank_bytes).float())
    result = byte_distances.pass_over_bank(query, bank, np.array([0.3, 1.0]), query_block=7, bank_block=10)
    exact = exact_sq_distances(query_bytes, bank_bytes)
    np.testing.assert_array_equal(result.nearest_index.numpy(), exact.argmin(axis=1))  # first minimum
    np.testing.assert_array_equal(result.min_sq_distance.numpy(), exact.min(axis=1) / 255.0**2)
    assert result.min_sq_distance[5] == 0 and result.nearest_index[5] <= 3  # 3 unless an earlier row is equal too


@exact_int8
def test_shifted_sums_are_within_the_float32_sums_bound(rng):
    """With the distances exact, only the exponents and the sums round: the log of each shifted sum
    is within ``bounds.sum_coefficient`` u of the float64 value (the exponents' three roundings, the
    exponentials, the additions and the rescalings; bounds.py), plus the terms below e^-40 left out.
    The float64 log-sum-exp of the exact distances rounds by about m 2^-53, counted as 1e-12."""
    query_bytes, bank_bytes = random_bytes(rng, 29, 700), random_bytes(rng, 1031, 700)
    # Near copies make every sigma's shifted sum hold many terms that count.
    bank_bytes[:500] = np.clip(query_bytes[rng.integers(0, 29, 500)] + rng.integers(-2, 3, (500, 700)), 0, 255)
    grid = np.array([0.05, 0.3, 1.0, 3.0, 40.0])
    query = byte_distances.operands(torch.from_numpy(query_bytes).float())
    bank = byte_distances.operands(torch.from_numpy(bank_bytes).float())
    result = byte_distances.pass_over_bank(query, bank, grid, query_block=16, bank_block=100)
    distances = exact_sq_distances(query_bytes, bank_bytes) / 255.0**2
    shifted = distances - distances.min(axis=1, keepdims=True)
    expected = np.stack([logsumexp(-shifted / (2 * sigma**2), axis=1) for sigma in grid])
    allowed = bounds.sum_coefficient(len(bank_bytes)) * U32 + bounds.left_out_terms(len(bank_bytes), "float32") + 1e-12
    assert np.all(np.abs(np.log(result.shifted_sums.double().numpy()) - expected) <= allowed)


@exact_int8
def test_torch_backend_takes_bytes_for_8bit_data_within_the_float32_bound(rng, monkeypatch):
    """Through the public pass: MNIST-like 8-bit data at odd sizes take the int8 products, and the result,
    refined as every torch result is, lies within the float32 bound (the module docstring shows the
    bytes' rounding error inside it from d = 505)."""
    taken = []
    original = byte_distances.pass_over_bank
    monkeypatch.setattr(byte_distances, "pass_over_bank", lambda *args: taken.append(1) or original(*args))
    x, bank = as_pixels(random_bytes(rng, 67, 784)), as_pixels(random_bytes(rng, 1100, 784))
    bank[700] = x[3]
    sigmas = np.logspace(-1, 0, 10)
    reference = parzen.parzen_pass(x, bank, sigmas, backend="reference")
    fast = parzen.parzen_pass(x, bank, sigmas, backend="torch", device="cpu", query_block=32, bank_block=1000)
    assert taken
    bound = log_likelihood_bound(x, bank, sigmas, block_rows=1000)
    assert np.all(np.abs(fast.log_sum_exp - reference.log_sum_exp) <= bound)
    assert fast.nearest_index[3] == 700 and fast.min_sq_distance[3] == 0


@exact_int8
def test_byte_path_only_where_its_rule_holds(rng, monkeypatch):
    """tf32x3, data that are not 8-bit, mixed dtypes and float32 values below 505 dimensions leave the
    byte path unused (8-bit queries against a bank in [0, 1] take its digits' products instead,
    tests/test_digit_distances.py); int8 says so on stderr where neither applies (queries that are not
    8-bit) and scores with float32. float64 values take the byte path from d = 1 (their rounding is
    2^-29 of float32's)."""
    taken, said = [], []
    original = byte_distances.pass_over_bank
    monkeypatch.setattr(byte_distances, "pass_over_bank", lambda *args: taken.append(1) or original(*args))
    monkeypatch.setattr(parzen, "_announce", said.append)
    x, bank = as_pixels(random_bytes(rng, 5, 600)), as_pixels(random_bytes(rng, 30, 600))
    parzen.parzen_pass(x, bank, [0.5], backend="torch", precision="tf32x3")
    assert not taken
    # Only the float64 pixels moved off a / 255 are not 8-bit: the other two take the digits.
    for (query, samples), notes in zip(((x, bank * np.float32(0.999)), (x.astype(np.float64) + 2.0**-40, bank),
                                        (x[:, :100], bank[:, :100])), (0, 1, 0)):
        parzen.parzen_pass(query, samples, [0.5], backend="torch", precision="auto")
        assert not taken and not said
        reference = parzen.parzen_pass(query, samples, [0.5], backend="reference")
        fast = parzen.parzen_pass(query, samples, [0.5], backend="torch", precision="int8")
        assert not taken and len(said) == notes and all("int8 products on the CPU need 8-bit x" in line for line in said)
        said.clear()
        assert np.all(np.abs(fast.log_sum_exp - reference.log_sum_exp) <= log_likelihood_bound(query, samples, [0.5]))
    parzen.parzen_pass(x, bank, [0.5], backend="torch", precision="int8")
    assert len(taken) == 1
    x64, bank64 = as_pixels(random_bytes(rng, 5, 3), np.float64), as_pixels(random_bytes(rng, 30, 3), np.float64)
    parzen.parzen_pass(x64, bank64, [0.5], backend="torch")
    assert len(taken) == 2 and not said


@exact_int8
def test_float32_pixels_widened_to_float64_take_the_byte_path(rng, monkeypatch):
    """float32 pixels a / 255 as float64 (``.astype(np.float64)``) are float32 numbers, not float64's a / 255: they
    took the float32 GEMM (MNIST: 0.28 s and 3.2e-4 nats off, against 0.08 s and 1.1e-5). Scored as the float32
    numbers they are, through the byte path, bit for bit as the float32 data; one widened side alone too."""
    taken = []
    original = byte_distances.pass_over_bank
    monkeypatch.setattr(byte_distances, "pass_over_bank", lambda *args: taken.append(1) or original(*args))
    x, bank = as_pixels(random_bytes(rng, 7, 600)), as_pixels(random_bytes(rng, 45, 600))
    sigmas = [0.2, 0.5]
    single = parzen.log_likelihood(x, bank, sigmas, backend="torch", device="cpu")
    for query, samples in ((x.astype(np.float64), bank.astype(np.float64)), (x.astype(np.float64), bank)):
        taken.clear()
        np.testing.assert_array_equal(parzen.log_likelihood(query, samples, sigmas, backend="torch", device="cpu"),
                                      single)
        assert taken == [1]
    assert parzen.float32_if_exact(torch.tensor([[0.1, 0.2]], dtype=torch.float64)).dtype == torch.float64


def test_half_precision_values_are_not_8bit(rng):
    """float16 and bfloat16 hold a / 255 far less exactly than float32: the byte rule refuses them."""
    byte_array = torch.from_numpy(random_bytes(rng, 4, 9))
    for dtype in (torch.float16, torch.bfloat16):
        values = (byte_array.to(dtype) / 255).to(dtype)
        assert byte_distances.byte_values(values) is None
        assert byte_distances.exact_operands(values, values) is None
    with pytest.raises(KeyError):
        byte_distances.relative_error(torch.float16)


@exact_int8
def test_dimensions_past_int32_are_refused():
    """255^2 d must fit int32: one dimension more than MAX_DIMENSION is refused, for Parzen and k-means alike."""
    from ganbench.paper import kmeans_bounds

    for dimension, expected in ((byte_distances.MAX_DIMENSION, True), (byte_distances.MAX_DIMENSION + 1, False)):
        values = torch.zeros((2, dimension))
        values[0] = 1.0
        assert (byte_distances.exact_operands(values, values) is not None) == expected
        assert (kmeans_bounds.ByteDistances.applicable(values, values) is not None) == expected


@exact_int8
def test_a_wrong_int8_product_is_never_used(rng, monkeypatch):
    """A torch build whose CPU int8 product disagrees with int64 arithmetic leaves the byte path unused."""
    byte_distances.int8_product_is_exact.cache_clear()
    try:
        monkeypatch.setattr(torch, "_int_mm", lambda left, right, **kwargs: torch.zeros(
            (left.shape[0], right.shape[1]), dtype=torch.int32))
        x, bank = as_pixels(random_bytes(rng, 5, 600)), as_pixels(random_bytes(rng, 30, 600))
        assert byte_distances.parzen_operands(torch.from_numpy(x), torch.from_numpy(bank)) is None
    finally:
        byte_distances.int8_product_is_exact.cache_clear()
    monkeypatch.undo()
    assert byte_distances.int8_product_is_exact()


def test_dimension_limits_follow_the_arithmetic():
    """int32 holds E <= 255^2 d up to MAX_DIMENSION; r D fits the float32 bound K u N (N >= D / 2,
    D_bytes <= D / (1 - r)) from min_dimension: 505 for float32 values, where r = 510u, and 1 for float64."""
    assert byte_distances.DISTANCE_SCALE * byte_distances.MAX_DIMENSION < 2**31
    assert byte_distances.DISTANCE_SCALE * (byte_distances.MAX_DIMENSION + 1) >= 2**31
    half_ulp = 2.0**-25
    relative = 1020 * half_ulp + 260100 * half_ulp**2   # |D - D_bytes| / D_bytes, the module docstring
    assert relative == byte_distances.relative_error(torch.float32)
    assert math.isclose(relative / U32, 510, rel_tol=1e-3)
    needed = 2 * relative / (U32 * (1 - relative))
    smallest = byte_distances.min_dimension(torch.float32)
    assert smallest == 505
    assert bounds.distance_coefficient("float32", smallest) >= needed > bounds.distance_coefficient("float32", smallest - 1)
    assert byte_distances.min_dimension(torch.float64) == 1


@exact_int8
@pytest.mark.parametrize("shape", [(23, 41, 1), (37, 300, 785)])
@pytest.mark.parametrize("k", [1, 3])
def test_exact_nearest_neighbours_of_8bit_data_take_byte_candidates(shape, k, rng, monkeypatch):
    """``nearest(exact_ranking=True)`` on 8-bit data chooses its candidates with exact int8 distances
    and ranks them in float64 as the float32 candidates would: the same neighbours, order and
    distances to the bit (duplicates make exact ties, which go to the lowest index)."""
    count, bank_count, dimension = shape
    x, bank = as_pixels(random_bytes(rng, count, dimension)), as_pixels(random_bytes(rng, bank_count, dimension))
    x[7] = bank[5]
    bank[:k] = bank[9]                     # k exact copies of one row: a query equal to it has nothing to add
    x[11] = bank[9]
    for distances, indices in neighbours_both_ways(x, bank, k, "_top_k_bytes", "exact_operands", monkeypatch):
        assert distances[7, 0] == 0 and distances[11, k - 1] == 0
        np.testing.assert_array_equal(indices[11], np.arange(k))  # the copies, lowest indices first


def neighbours_both_ways(x, bank, k, fast_path, rule, monkeypatch):
    """``nearest(exact_ranking=True)`` through ``neighbours.<fast_path>`` (asserted taken), then with
    ``byte_distances.<rule>`` switched off (float32 candidates): the same neighbours, order and
    distances to the bit, for reference blocks of 2 rows (narrower than k = 3: every row of such a
    block may enter) and of 32. Returns the fast path's (distances, indices) for each block."""
    from ganbench.scoring import neighbours

    taken = []
    original = getattr(neighbours, fast_path)
    monkeypatch.setattr(neighbours, fast_path, lambda *args: taken.append(1) or original(*args))
    results = {}
    for name in ("fast", "float32"):
        if name == "float32":
            monkeypatch.setattr(byte_distances, rule, lambda *args: None)
        results[name] = [neighbours.nearest(x, bank, k, exact_ranking=True, query_block=16, reference_block=block)
                         for block in (2, 32)]
    assert len(taken) == 2
    for (distances, indices), (float_distances, float_indices) in zip(results["fast"], results["float32"]):
        np.testing.assert_array_equal(indices, float_indices)
        np.testing.assert_array_equal(distances, float_distances)
    return results["fast"]


@exact_int8
@pytest.mark.parametrize("shape", [(23, 41, 1), (37, 300, 785)])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("compiled", [True, False])
def test_exact_nearest_neighbours_of_rounded_queries_equal_the_float32_candidates(shape, k, dtype, compiled, rng,
                                                                                 monkeypatch):
    """Queries in [0, 1] that are not 8-bit, against 8-bit reference data: the queries rounded to bytes
    choose the candidates (``neighbours._top_k_rounded``, by the compiled rule and by the eager one)
    and float64 ranks them as the float32 candidates would: the same neighbours, order and distances
    to the bit."""
    from ganbench.scoring import fused_rows

    if not compiled:
        monkeypatch.setattr(fused_rows, "available", lambda: False)
    count, bank_count, dimension = shape
    bank = as_pixels(random_bytes(rng, bank_count, dimension), dtype)
    x = rng.random((count, dimension)).astype(dtype)
    x[:, 0] = 0.0 if dimension > 1 else x[:, 0]
    x[7] = bank[5]                                 # at distance 0 from a reference row
    x[8] = bank[6] + dtype(0.4 / 255)             # rounds onto it (clipped to [0, 1] below)
    x[9] = (bank[6] + bank[11]) / 2               # halfway between two rows
    x = np.clip(x, 0, 1)
    bank[:k] = bank[9]                             # k exact copies of one row
    x[11] = bank[9]
    for distances, _ in neighbours_both_ways(x, bank, k, "_top_k_rounded", "rounded_operands", monkeypatch):
        assert distances[7, 0] == 0 and distances[11, k - 1] == 0


@exact_int8
@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("reference_block", [1, 2])
def test_rounded_queries_whose_bytes_prefer_another_neighbour_still_get_the_true_one(compiled, reference_block,
                                                                                   monkeypatch):
    """Reference rows (12, 10) and (10, 13) / 255, query (10.6, 11.45) / 255: rounded to (11, 11) it is
    at byte distance 2 from the first and 5 from the second, but its true squared distances are 4.0625
    and 2.7625 (in 1/255^2): the second is the nearest. Only the rounding's slack keeps it a candidate:
    in the running k-th's term with one row a block (the first row's exact distance is kept first),
    in the block's term with both rows in one block; by the compiled rule and by the eager one."""
    from ganbench.scoring import fused_rows, neighbours

    if not compiled:
        monkeypatch.setattr(fused_rows, "available", lambda: False)
    bank = as_pixels(np.array([[12, 10], [10, 13]]))
    query = np.array([[10.6, 11.45]], dtype=np.float32) / np.float32(255)
    assert byte_distances.rounded_operands(torch.from_numpy(query), torch.from_numpy(bank)) is not None
    distances, indices = neighbours.nearest(query, bank, exact_ranking=True, reference_block=reference_block)
    assert indices[0, 0] == 1
    expected = ((query.astype(np.float64) - bank.astype(np.float64)) ** 2).sum(1)
    assert distances[0, 0] == pytest.approx(expected[1], rel=1e-12) and expected[1] < expected[0]


def test_rounded_operands_need_queries_in_the_unit_range_and_8bit_reference(rng):
    bank = torch.from_numpy(as_pixels(random_bytes(rng, 5, 7)))
    query = torch.rand(3, 7, dtype=torch.float32)
    assert byte_distances.rounded_operands(query, bank) is not None or not byte_distances.int8_product_is_exact()
    for bad_query, bad_bank in ((query * 1.5, bank), (query - 0.25, bank), (query, bank + 1e-3),
                                (query.half(), bank), (query, bank.half())):
        assert byte_distances.rounded_operands(bad_query, bad_bank) is None
