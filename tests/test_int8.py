"""The int8 Parzen kernel, run on the CPU by Triton's interpreter (TRITON_INTERPRET=1, conftest.py).

The interpreter computes tl.dot on int8 with int32 accumulation exactly, as tensor cores do, so
the integer distances E must equal the reference's to the bit; the log-sum-exp must lie within the
bound derived in kernels/parzen_int8.py (``per_point_bound``, evaluated at the tile's BLOCK_N).
"""
import contextlib
import re
import sys
import weakref
from unittest import mock

import numpy as np
import pytest
import torch
from ganbench.kernels import partial_tiles, parzen_int8, parzen_lse
from ganbench.kernels import parzen_int8_operands as operands

from ganbench import SHIPPED_GENERATOR
from ganbench.errors import GanbenchError
from ganbench.gan import sampling
from ganbench.scoring import parzen

BLOCKS = parzen_int8.INTERPRETER_BLOCKS
BLOCK_N = BLOCKS["BLOCK_N"]
CPU = torch.device("cpu")


def bytes_over_255(rng, shape, dtype=np.float32):
    """8-bit data as MNIST stores it: a / 255 in the given dtype, with 0 and 255 always present."""
    values = rng.integers(0, 256, shape)
    values.flat[0], values.flat[-1] = 0, 255
    return (values / 255.0).astype(dtype)


def unit_bank(rng, shape):
    """A float32 bank in [0, 1] with both ends present, as a generator's sigmoid output."""
    bank = rng.random(shape).astype(np.float32)
    bank.flat[0], bank.flat[-1] = 0.0, 1.0
    return bank


def check_int8(x, bank, sigmas, **options):
    """Kernel against the integer reference (bit-exact minima) and the float64 reference (within the bound)."""
    query_tensor, bank_tensor = torch.as_tensor(x), torch.as_tensor(bank)
    partial = parzen_int8.parzen_partial_int8(query_tensor, bank_tensor, sigmas, device=CPU, **options)
    own, distances = parzen_int8.parzen_int8_reference(query_tensor, bank_tensor, sigmas)
    # Integer distances: equal but for the order of the norms' float64 sums (a few units of 2^-24 / 255^2).
    units = parzen_int8.norm_units(x, bank)
    minima = torch.round(partial.min_sq_distance * operands.DISTANCE_SCALE).long()
    reference_minima = distances.min(dim=1).values
    assert torch.all((minima - reference_minima).abs() <= units)
    chosen = distances.gather(1, partial.nearest_index[:, None])[:, 0]
    assert torch.all(chosen - reference_minima <= 2 * units)  # the nearest, or a tie within those units
    kernel = parzen.finish_pass(partial, query_tensor, bank_tensor, sigmas, refine=False)  # the kernel's own error
    reference = parzen.parzen_pass(x, bank, sigmas, backend="reference")
    block_n = options.get("blocks", BLOCKS)["BLOCK_N"]
    if len(sigmas):
        bound = parzen_int8.per_point_bound(x, bank, sigmas, block_n=block_n)
        assert np.all(np.abs(kernel.log_sum_exp - reference.log_sum_exp) <= bound)
    # Sigma-free part of the bound: the distance's own error (sums' part is far below it at sigma = 1e-9).
    distance_bound = parzen_int8.per_point_bound(x, bank, [1e-9], block_n=block_n)[0] * 2e-18
    assert np.all(np.abs(kernel.min_sq_distance - reference.min_sq_distance) <= distance_bound)
    for i in np.flatnonzero(kernel.nearest_index != reference.nearest_index):  # a near-tie within the bound
        exact = ((np.asarray(x[i], np.float64) - np.asarray(bank, np.float64)[kernel.nearest_index[i]]) ** 2).sum()
        assert exact - reference.min_sq_distance[i] <= 2 * distance_bound[i]
    return kernel, reference, partial


@pytest.mark.parametrize("role", ["query", "bank"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 33, 785])
def test_operands_kernel_writes_the_reference_to_the_bit(role, dtype, d, rng):
    rows = bytes_over_255(rng, (5, d), dtype) if role == "query" else unit_bank(rng, (5, d)).astype(dtype)
    with garbage_in_empty_tensors():  # as on a GPU: the kernel must write every byte, padding included
        operand, terms, counts, width = operands.int8_operands_launch(
            torch.as_tensor(rows), role, 16, 64, interpreted=True)
    blocks, expected_terms, expected_unrepresentable, expected_extended = operands.int8_operands_reference(
        torch.as_tensor(rows), role)
    assert width % 64 == 0 and width >= d
    for index, block in enumerate(blocks):
        np.testing.assert_array_equal(operand[:5, index * width:index * width + d].long().numpy(), block.numpy())
        assert not operand[:, index * width + d:(index + 1) * width].any()  # padding columns are 0
    assert not operand[5:].any()  # and so are the padding rows
    # Norms summed in float64 in another order: a few units at most (norm_units).
    units = parzen_int8.norm_units(rows, rows)
    assert torch.all((terms - expected_terms).abs() <= units)
    report = counts.tolist()
    assert report[operands.REFUSED] == 0 == int(expected_unrepresentable.sum())
    assert report[operands.EXTENDED] == int(expected_extended.sum())
    assert operands.largest_magnitude(report[operands.LARGEST_BITS]) == np.abs(rows).max()


@contextlib.contextmanager
def garbage_in_empty_tensors():
    """torch.empty's memory holds whatever was there: here, bytes of a random stream (NaN for floats)."""
    empty = torch.empty
    generator = torch.Generator().manual_seed(0)

    def dirty(*args, **kwargs):
        tensor = empty(*args, **kwargs)
        if tensor.dtype == torch.int8:
            tensor.copy_(torch.randint(-128, 128, tensor.shape, dtype=torch.int8, generator=generator))
        else:
            tensor.fill_(float("nan") if tensor.is_floating_point() else -7)
        return tensor

    with mock.patch.object(torch, "empty", dirty):
        yield


def test_operands_reconstruct_the_inputs(rng):
    """The digits and bytes are the values they claim: T' = sum 256^(3-k) q_k and x = (a + 128 h + l) 2^-31 / 255."""
    bank = unit_bank(rng, (4, 50))
    digits, _, _, _ = operands.int8_operands_reference(torch.as_tensor(bank), "bank")
    rebuilt = sum(256 ** (3 - k) * digit for k, digit in enumerate(digits)) + 2**31
    assert np.all(np.abs(rebuilt.numpy() / 2.0**24 - 255.0 * bank.astype(np.float64)) <= 0.5 / 2**24)
    assert all(int(digit.min()) >= -128 and int(digit.max()) <= 127 for digit in digits)
    x = bytes_over_255(rng, (4, 50))
    (shifted, high), _, _, _ = operands.int8_operands_reference(torch.as_tensor(x), "query")
    leftover = 2.0**31 * (255.0 * x.astype(np.float64) - (shifted.numpy() + 128)) - 128 * high.numpy()
    assert np.all(np.abs(leftover) <= 64) and np.abs(high.numpy()).max() <= 127


@pytest.mark.parametrize("n, m, d", [
    (1, 1, 1),
    (5, 17, 1),
    (3, 1, 7),
    (7, 3 * BLOCK_N + 1, 785),   # d past a multiple of BLOCK_K, m one past a block
    (BLOCKS["BLOCK_M"] + 3, 2 * BLOCK_N - 1, 33),
])
def test_matches_float64_reference_at_odd_sizes(n, m, d, rng):
    check_int8(bytes_over_255(rng, (n, d)), unit_bank(rng, (m, d)), np.logspace(-1, 0, 10))


def launched_meta(monkeypatch, key: str) -> list:
    """The value of meta-parameter ``key`` in each kernel launch from now on (None where absent): a
    variant silently dropped on its way to the kernel would otherwise compare a path with itself."""
    from ganbench.kernels import launches

    seen = []
    launch = launches.KernelCall.launch
    monkeypatch.setattr(launches.KernelCall, "launch", lambda call: seen.append(call.meta.get(key)) or launch(call))
    return seen


@pytest.mark.parametrize("n, m, d, correction, tiles", [
    (5, 17, 1, True, BLOCKS),
    (BLOCKS["BLOCK_M"] + 3, 3 * BLOCK_N + 1, 785, True, BLOCKS),   # d past a multiple of BLOCK_K, m past a block
    (7, 2 * BLOCK_N - 1, 33, False, BLOCKS),
    (9, 70, 100, True, {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 64}),   # the tuned BLOCK_N: two groups of 16 columns
])
def test_stacked_digits_give_the_separate_products_to_the_bit(n, m, d, correction, tiles, rng, monkeypatch):
    """STACKED (the four digit blocks as one product, split back per bank row) computes the same integer
    distances as four products: equal minima, indices and sums, bit for bit, and both match float64."""
    x = bytes_over_255(rng, (n, d), np.float32 if correction else np.float64)
    bank = unit_bank(rng, (m, d))
    bank.flat[1] = 0.5 + 2.0**-24  # a value whose low digits are all in use
    sigmas = np.logspace(-1, 0, 4)
    layouts = launched_meta(monkeypatch, "STACKED")
    separate, _, separate_partial = check_int8(x, bank, sigmas, blocks=tiles)
    stacked, _, stacked_partial = check_int8(x, bank, sigmas, blocks={**tiles, "STACKED": True})
    assert None in layouts and True in layouts  # the operands kernels (no layout) and the stacked Parzen kernel
    for field in ("min_sq_distance", "nearest_index", "shifted_sums"):
        torch.testing.assert_close(getattr(stacked_partial, field), getattr(separate_partial, field), rtol=0, atol=0)
    np.testing.assert_array_equal(stacked.log_sum_exp, separate.log_sum_exp)


@pytest.mark.parametrize("n, m, d, correction, tiles", [
    (5, 17, 1, True, BLOCKS),
    (BLOCKS["BLOCK_M"] + 3, 3 * BLOCK_N + 1, 785, True, BLOCKS),   # d past a multiple of BLOCK_K, m past a block
    (7, 4 * BLOCK_N - 1, 33, False, BLOCKS),
    (9, 70, 100, True, {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 64, "STACKED": True}),
])
def test_unbranched_epilogue_matches_float64_and_the_branched_one(n, m, d, correction, tiles, rng, monkeypatch):
    """UNBRANCHED (every sigma's exponentials in every tile, every rescaling in one branch a tile with a
    branch-free float64 exp2) finds the same integer minima and indices as the branched epilogue, bit for
    bit, and its sums lie within the bound of float64. The bank comes farthest first from the first
    query, so that query's minimum moves in every block and its sums are rescaled every time."""
    x = bytes_over_255(rng, (n, d), np.float32 if correction else np.float64)
    bank = unit_bank(rng, (m, d))
    bank = bank[np.argsort(-((bank.astype(np.float64) - x[0]) ** 2).sum(1), kind="stable")]
    sigmas = np.logspace(-1, 0, 5)
    epilogues = launched_meta(monkeypatch, "UNBRANCHED")
    branched, _, branched_partial = check_int8(x, bank, sigmas, blocks={**tiles, "UNBRANCHED": False})
    unbranched, _, unbranched_partial = check_int8(x, bank, sigmas, blocks={**tiles, "UNBRANCHED": True})
    assert True in epilogues and False in epilogues
    for field in ("min_sq_distance", "nearest_index"):
        torch.testing.assert_close(getattr(unbranched_partial, field), getattr(branched_partial, field), rtol=0, atol=0)
    # The same float32 tile sums; the sums differ by the rescalings' factors (at most two float64 events a
    # tile, each exp2 within EXP2_ULPS, libdevice's within 2) and by the terms the branched epilogue skipped.
    events = 2 * -(-m // tiles["BLOCK_N"])
    relative = events * (parzen_int8.EXP2_ULPS + 2) * 2.0**-53 + m * np.exp(-parzen_int8.SKIP_NATS)
    torch.testing.assert_close(unbranched_partial.shifted_sums, branched_partial.shifted_sums, rtol=relative, atol=0)
    bound = parzen_int8.per_point_bound(x, bank, sigmas, block_n=tiles["BLOCK_N"])
    assert np.all(np.abs(unbranched.log_sum_exp - branched.log_sum_exp) <= 2 * bound)  # each within the bound


def test_branch_free_exp2_is_within_its_derived_ulps():
    """``_exp2_nonpositive`` against the C library's exp2 over its whole range: within EXP2_ULPS (11,
    derived in its docstring) relative, and 0 exactly where 2^x is below 2^-1022."""
    import math

    import triton
    import triton.language as tl

    @triton.jit
    def exp2_kernel(x_ptr, out_ptr, count, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < count
        values = tl.load(x_ptr + offsets, mask=inside, other=0.0)
        tl.store(out_ptr + offsets, parzen_int8._exp2_nonpositive(values), mask=inside)

    rng = np.random.default_rng(7)
    edges = [0.0, -0.0, -0.5, -0.5000000000000001, -1.5, -2.5, -1021.5, -1022.0, -1022.0000000000001, -1023.0,
             -1e11, -2.0**62, -5e-324, -1e-300, -2.0**-30]
    x = np.concatenate([edges, -rng.random(20_000) * 1030, -rng.random(5_000), -np.arange(1023) - 0.5,
                        -np.arange(1023.0)])
    got = torch.empty(len(x), dtype=torch.float64)
    exp2_kernel[(triton.cdiv(len(x), 1024),)](torch.as_tensor(x), got, len(x), BLOCK=1024)
    got = got.numpy()
    normal = x >= -1022
    exact = np.array([math.exp2(value) for value in x[normal]])
    # math.exp2 is itself within one ulp of 2^x: the derived 11 ulps plus that one.
    assert np.all(np.abs(got[normal] / exact - 1) <= (parzen_int8.EXP2_ULPS + 1) * 2.0**-53)
    assert np.all(got[~normal] == 0) and got[0] == got[1] == 1.0 and got[7] == 2.0**-1022


def test_stacked_columns_put_each_bank_rows_digits_in_one_accumulator_thread():
    """The column order the STACKED operand uses: every (bank row, digit) once, and a bank row's four
    digits in the two column pairs 2t, 2t + 1 of two consecutive groups of eight (one thread's)."""
    block_n = 32
    columns = np.arange(4 * block_n)
    rows, digits = (columns // 16) * 4 + (columns % 8) // 2, ((columns // 8) % 2) * 2 + columns % 2
    assert sorted(zip(rows, digits)) == [(row, digit) for row in range(block_n) for digit in range(4)]
    for row in range(block_n):
        held = columns[rows == row]
        assert len({column // 16 for column in held}) == 1 and len({(column % 8) // 2 for column in held}) == 1


@pytest.mark.parametrize("count", [1, 10, 16, 40])
def test_sigma_grids_of_1_10_16_and_40(count, rng):
    x, bank = bytes_over_255(rng, (9, 20)), unit_bank(rng, (40, 20))
    kernel, _, _ = check_int8(x, bank, np.logspace(-1.5, 0.5, count))
    assert kernel.log_sum_exp.shape == (count, 9)


def test_nearest_only_pass(rng):
    x, bank = bytes_over_255(rng, (3, 5)), unit_bank(rng, (9, 5))
    kernel, reference, _ = check_int8(x, bank, [])
    assert kernel.log_sum_exp.shape == (0, 3)
    np.testing.assert_array_equal(kernel.nearest_index, reference.nearest_index)


@pytest.fixture
def launched(monkeypatch):
    """The (digits, correction) of every int8 kernel launch."""
    calls = []
    launch = parzen_int8.parzen_int8_launch
    monkeypatch.setattr(parzen_int8, "parzen_int8_launch",
                        lambda *args, **kwargs: calls.append((kwargs["digits"], kwargs["correction"]))
                        or launch(*args, **kwargs))
    return calls


def test_8bit_bank_in_float64_takes_one_exact_product(rng, launched):
    x, bank = bytes_over_255(rng, (6, 40), np.float64), bytes_over_255(rng, (3 * BLOCK_N + 2, 40), np.float64)
    kernel, reference, _ = check_int8(x, bank, [0.1, 0.5])
    assert set(launched) == {(1, False)}
    # Both sides exact multiples of 1/255 (to float64's rounding): E holds the exact distance.
    np.testing.assert_allclose(kernel.min_sq_distance, reference.min_sq_distance, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(kernel.nearest_index, reference.nearest_index)


def test_8bit_bank_in_float32_keeps_its_rounding(mnist, launched):
    """Training images as the bank: float32's a / 255 sits in the low digits, so four products run."""
    check_int8(mnist.test_x[:5], mnist.train_x[:2 * BLOCK_N + 3], np.logspace(-1, 0, 4))
    assert set(launched) == {(4, True)}


@pytest.mark.parametrize("unbranched", [False, True])
def test_nearest_ties_go_to_the_lowest_index_within_and_across_blocks_and_splits(unbranched, rng):
    bank = bytes_over_255(rng, (5 * BLOCK_N + 2, 12))
    bank[2 * BLOCK_N + 1] = bank[4]       # another block
    bank[4 * BLOCK_N + 1] = bank[4]       # another split below
    bank[5] = bank[4]                     # same block
    x = bank[[4, 2 * BLOCK_N + 1, 6]]
    blocks = {**BLOCKS, "UNBRANCHED": unbranched}
    for rows_per_split in (None, 2 * BLOCK_N):
        kernel, reference, _ = check_int8(x, bank, [0.2], rows_per_split=rows_per_split, blocks=blocks)
        np.testing.assert_array_equal(kernel.nearest_index, [4, 4, 6])
        np.testing.assert_array_equal(reference.nearest_index, [4, 4, 6])


@pytest.mark.parametrize("rows_per_split", [BLOCK_N, 3 * BLOCK_N])
def test_split_bank_and_bank_pieces_merge_exactly(rows_per_split, rng):
    x, bank = bytes_over_255(rng, (6, 40)), unit_bank(rng, (7 * BLOCK_N + 5, 40))
    sigmas = [0.1, 0.3, 1.0]
    split, _, _ = check_int8(x, bank, sigmas, rows_per_split=rows_per_split)
    pieces, _, _ = check_int8(x, bank, sigmas, bank_piece_rows=2 * BLOCK_N + 3)
    whole, _, _ = check_int8(x, bank, sigmas)
    for other in (split, pieces):
        np.testing.assert_array_equal(other.min_sq_distance, whole.min_sq_distance)  # exact integers
        np.testing.assert_array_equal(other.nearest_index, whole.nearest_index)
        np.testing.assert_allclose(other.log_sum_exp, whole.log_sum_exp, rtol=0, atol=1e-6)  # float32 tile sums


@pytest.mark.parametrize("unbranched", [False, True])
def test_tiles_far_from_the_nearest_are_skipped_within_the_bound(unbranched, rng, monkeypatch):
    """Every block but the first lies e^-60 or further below the nearest term at sigma = 0.25: the
    interpreter then evaluates that sigma's exponentials for the first block only, and the sum holds.
    The UNBRANCHED epilogue skips nothing and rescales without exp2 (its own polynomial)."""
    import triton.runtime.interpreter as interpreter  # Triton 3.6's interpreter: exp2 is one builder call

    exponentials = []
    exp2 = interpreter.InterpreterBuilder.create_exp2
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_exp2",
                        lambda builder, arg: exponentials.append(arg.data.size) or exp2(builder, arg))
    base = bytes_over_255(rng, (1, 30))
    far = np.where(base < 0.5, base + 0.5, base - 0.5)  # D = 30 / 4 = 7.5: exp(-7.5 / 2 sigma^2) is e^-60 at 0.25
    bank = np.concatenate([np.repeat(base, BLOCK_N, axis=0), np.repeat(far, 4 * BLOCK_N, axis=0)]).astype(np.float32)
    bank[:BLOCK_N] = np.clip(bank[:BLOCK_N] + rng.integers(-2, 3, (BLOCK_N, 30)) / 255, 0, 1)
    x = np.repeat(base, 3, axis=0)
    counts = {}
    for sigma in (2.0, 0.25):
        exponentials.clear()
        kernel, reference, _ = check_int8(x, bank, [sigma], blocks={**BLOCKS, "UNBRANCHED": unbranched})
        counts[sigma] = len(exponentials)
        assert np.all(np.abs(kernel.log_sum_exp - reference.log_sum_exp) <= 1e-6)
    # Per block one tile of exponentials, and one rescaling where some row's minimum moved (the first
    # block only: the far blocks hold no new minimum). sigma = 2: all five tiles; 0.25: the first only.
    assert counts == ({2.0: 5, 0.25: 5} if unbranched else {2.0: 6, 0.25: 2})


@pytest.mark.parametrize("unbranched", [False, True])
def test_mnist_against_the_shipped_generator_within_1e_5_nats(unbranched, mnist):
    """32 MNIST test images against 1,000 samples of the shipped generator: <= 1e-5 nats from sigma = 0.1 up,
    with either sigma epilogue."""
    generator, _ = sampling.load_generator(SHIPPED_GENERATOR)
    bank = sampling.generate(generator, 1000, seed=0)
    x = mnist.test_x[:32]  # 32 x 1,000 x 784 with five int8 products: ~15 s interpreted
    sigmas = np.concatenate([[0.05], np.logspace(-1, 0, 10)])
    # Fewer interpreted programs; the kernel's largest BLOCK_N.
    blocks = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "UNBRANCHED": unbranched}
    kernel, reference, partial = check_int8(x, bank, sigmas, blocks=blocks)
    error = np.abs(kernel.log_sum_exp - reference.log_sum_exp)
    assert error[1:].max() <= 1e-5
    assert np.all(error <= parzen_int8.per_point_bound(x, bank, sigmas, block_n=64))
    # The same pass with the exact-nearest refinement that every scoring applies (one interpreted pass: ~30 s).
    refined = parzen.finish_pass(partial, torch.as_tensor(x), torch.as_tensor(bank), sigmas)
    assert np.abs(refined.log_sum_exp - reference.log_sum_exp)[1:].max() <= 1e-5
    np.testing.assert_array_equal(refined.nearest_index, reference.nearest_index)


def test_precision_int8_through_the_backend(rng):
    x, bank = bytes_over_255(rng, (4, 9)), unit_bank(rng, (20, 9))
    sigmas = [0.2, 0.9]
    got = parzen.log_likelihood(x, bank, sigmas, backend="triton", device="cpu", precision="int8")
    reference = parzen.log_likelihood(x, bank, sigmas, backend="reference")
    assert np.all(np.abs(got - reference) <= parzen_int8.per_point_bound(x, bank, sigmas, block_n=BLOCK_N))
    automatic = parzen.log_likelihood(x, bank, sigmas, backend="triton", device="cpu", precision="auto")
    np.testing.assert_array_equal(automatic, got)


def test_data_int8_cannot_score_is_refused_or_goes_to_tf32x3(rng):
    x, bank = bytes_over_255(rng, (4, 9)), unit_bank(rng, (20, 9))
    not_bytes = x + np.float32(1e-3)
    outside = bank * 2 - 0.5
    for query, samples, what in ((not_bytes, bank, "8-bit queries"), (x, outside, "in \\[0, 1\\]")):
        with pytest.raises(GanbenchError, match=what) as error:
            parzen.parzen_pass(query, samples, [0.3], backend="triton", device="cpu", precision="int8")
        assert "\n" not in str(error.value) and "tf32x3" in str(error.value)
        automatic = parzen.parzen_pass(query, samples, [0.3], backend="triton", device="cpu", precision="auto")
        tf32x3 = parzen.parzen_pass(query, samples, [0.3], backend="triton", device="cpu", precision="tf32x3")
        np.testing.assert_array_equal(automatic.log_sum_exp, tf32x3.log_sum_exp)


def test_8bit_rule():
    assert operands.is_8bit(torch.arange(256, dtype=torch.float32) / 255)
    assert operands.is_8bit(torch.arange(256, dtype=torch.float64) / 255)
    assert not operands.is_8bit(torch.tensor([0.5]))          # 127.5: halfway between bytes
    assert not operands.is_8bit(torch.tensor([1.0 + 1 / 255]))  # byte 256
    assert not operands.is_8bit(torch.tensor([-1 / 255]))
    # Byte 0 with rho 0 for a coordinate that is not 0: scored as 0, a relative error of 1 (data of scale 1e-17).
    assert not operands.is_8bit(torch.tensor([3.5e-17], dtype=torch.float64))
    assert operands.is_8bit(torch.tensor([0.0, 5 * 2.0**-31 / 255, 1 / 255 + 1e-12], dtype=torch.float64))


@pytest.mark.parametrize("scale", [1e-17, 1e-30])
def test_tiny_data_are_not_8bit(scale, rng):
    """Data far below one byte's step would round to zeros: the operands kernel refuses them, auto takes tf32x3."""
    x = torch.as_tensor(rng.random((5, 33)) * scale)
    _, _, counts, _ = operands.int8_operands_launch(x, "query", 16, 64, interpreted=True)
    assert counts[operands.REFUSED] == 33 * 5
    assert not operands.is_8bit(x)
    assert operands.in_unit_interval(torch.tensor([0.0, 1.0])) and not operands.in_unit_interval(torch.tensor([1.01]))


def test_launcher_rejects_bad_tiles_and_arguments(rng):
    x, bank = torch.as_tensor(bytes_over_255(rng, (3, 4))), torch.as_tensor(unit_bank(rng, (5, 4)))
    query, query_terms, _, width = operands.int8_operands_launch(x, "query", 16, 64, interpreted=True)
    samples, bank_terms, _, _ = operands.int8_operands_launch(bank, "bank", 256, 64, interpreted=True)
    sizes = {"n_queries": 3, "n_bank": 5, "width": width, "digits": 4, "correction": True}
    launch = parzen_int8.parzen_int8_launch
    for tiles, message in (({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, "BLOCK_K >= 32"),
                           ({"BLOCK_M": 24, "BLOCK_N": 16, "BLOCK_K": 32}, "power of two"),
                           ({"BLOCK_M": 8, "BLOCK_N": 16, "BLOCK_K": 32}, "BLOCK_M, BLOCK_N >= 16"),
                           ({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 128}, "must divide"),
                           ({"BLOCK_M": 16, "BLOCK_N": 16}, "power of two")):
        with pytest.raises(GanbenchError, match=message):
            launch(query, samples, query_terms, bank_terms, [1.0], blocks=tiles, **sizes)
    with pytest.raises(GanbenchError, match="int8"):
        launch(query.float(), samples, query_terms, bank_terms, [1.0], blocks=BLOCKS, **sizes)
    with pytest.raises(GanbenchError, match="contiguous"):
        launch(query[:, :width], samples, query_terms, bank_terms, [1.0], blocks=BLOCKS, **sizes)
    with pytest.raises(GanbenchError, match="up to 32"):
        launch(query, samples, query_terms, bank_terms, np.ones(33), blocks=BLOCKS, **sizes)
    with pytest.raises(GanbenchError, match="digits"):
        launch(query, samples, query_terms, bank_terms, [1.0], blocks=BLOCKS, **{**sizes, "digits": 2})
    with pytest.raises(GanbenchError, match="padded"):
        launch(query[:2], samples, query_terms, bank_terms, [1.0], blocks=BLOCKS, **sizes)
    with pytest.raises(GanbenchError, match="multiple of BLOCK_N"):
        launch(query, samples, query_terms, bank_terms, [1.0], blocks=BLOCKS, rows_per_split=20, **sizes)


def test_autotuning_is_keyed_on_rounded_sizes_and_prunes_spilling_tiles():
    assert [partial_tiles.bucket(n) for n in (1, 2, 3, 1000, 1024, 1025)] == [1, 2, 4, 1024, 1024, 2048]
    assert "query_bucket" in parzen_int8._parzen_int8_autotuned.keys
    assert "n_queries" not in parzen_int8._parzen_int8_autotuned.keys
    # The float32 kernel too: a new n or m in the same power-of-two range reuses its tuned tile.
    assert "query_bucket" in parzen_lse._parzen_lse_autotuned.keys
    assert "n_queries" not in parzen_lse._parzen_lse_autotuned.keys
    configs = partial_tiles.autotune_configs(parzen_int8.TUNING_CANDIDATES, parzen_int8.DIGIT_LAYOUTS)
    four, one = (parzen_int8._prune_configs(configs, {}, DIGITS=digits) for digits in (4, 1))
    assert 0 < len(four) < len(configs) and len(one) == len(parzen_int8.TUNING_CANDIDATES)
    assert all(c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 16 * 32 * c.num_warps for c in four)
    # Four digits try each tile stacked and separate; one digit has no stacked layout to try.
    stacked = [c for c in four if c.kwargs["STACKED"]]
    assert 2 * len(stacked) == len(four) and not any(c.kwargs["STACKED"] for c in one)
    # Operands are padded for every candidate tile.
    assert all(c.kwargs["BLOCK_K"] <= parzen_int8.WIDTH_MULTIPLE and parzen_int8.WIDTH_MULTIPLE % c.kwargs["BLOCK_K"] == 0
               and c.kwargs["BLOCK_M"] <= parzen_int8.MAX_BLOCKS["BLOCK_M"]
               and parzen_lse.SPLIT_ROWS_MULTIPLE % c.kwargs["BLOCK_N"] == 0 for c in configs)


def test_a_tuned_launch_passes_the_arguments_and_lets_the_tuner_pick_the_tile():
    """What both kernels' launchers do on a GPU without a shipped tile (not run by the interpreter)."""
    from ganbench.kernels.launches import KernelCall

    seen = {}

    class Tuner:
        def __getitem__(self, grid):
            return lambda *args, **meta: seen.update(grid=grid({"BLOCK_M": 32}), args=args, meta=meta)

    call = KernelCall(None, (7, 3), (1, 2), {"NUM_SIGMAS": 2, "DIGITS": 4, "BLOCK_M": 16, "num_warps": 4})
    call.launch_tuned(Tuner(), 100, ("NUM_SIGMAS", "DIGITS"))
    assert seen == {"grid": (4, 3), "args": (1, 2), "meta": {"NUM_SIGMAS": 2, "DIGITS": 4}}


@pytest.mark.parametrize("precision", ["int8", "auto"])
@pytest.mark.parametrize("role, bad", [("x (the points scored)", np.nan), ("bank", np.inf), ("bank", -np.inf)])
def test_nan_or_inf_is_refused_on_the_int8_path(precision, role, bad, rng):
    """The operands kernels run before the range check is read (one wait for both): NaN and inf must
    still give the range check's one-line error, whatever the operands kernels made of them."""
    x, bank = bytes_over_255(rng, (5, 33)), unit_bank(rng, (7, 33))
    (x if role.startswith("x") else bank)[2, 3] = bad
    with pytest.raises(GanbenchError, match=f"^{re.escape(role)} contains NaN or inf"):
        parzen.parzen_pass(x, bank, [0.2], backend="triton", device="cpu", precision=precision)


@pytest.mark.parametrize("role", ["query", "bank"])
@pytest.mark.parametrize("bad", [-3.5, np.nan, np.inf, -np.inf])
@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")  # NumPy's inf - inf
def test_operands_report_the_largest_magnitude(role, bad, rng):
    """The operands kernel's LARGEST_BITS slot is the inputs' range check on the int8 path: NaN and inf
    must come through as themselves, a negative value as its magnitude."""
    rows = bytes_over_255(rng, (37, 70), np.float64) if role == "query" else unit_bank(rng, (37, 70))
    rows[29, 66] = bad
    _, _, counts, _ = operands.int8_operands_launch(torch.as_tensor(rows), role, 16, 64, interpreted=True)
    largest = operands.largest_magnitude(counts[operands.LARGEST_BITS].item())
    assert np.isnan(largest) if np.isnan(bad) else largest == abs(bad)
    assert counts[operands.REFUSED] == 1


@pytest.mark.parametrize("bad_row", [3, 30])
def test_int8_path_checks_the_whole_bank_across_pieces(bad_row, rng, monkeypatch):
    """Past its first piece no operands kernel has read the bank before the range check: a min/max
    reduction of those rows joins the same read. Both a NaN in the first piece and one past it are
    the one-line error; clean data cut in pieces score as one piece does."""
    monkeypatch.setattr(parzen_int8, "BANK_PIECE_ROWS", 16)
    x, bank = bytes_over_255(rng, (9, 33)), unit_bank(rng, (40, 33))
    options = {"backend": "triton", "device": "cpu", "precision": "int8"}
    pieces = parzen.parzen_pass(x, bank, [0.2, 0.5], **options)
    monkeypatch.setattr(parzen_int8, "BANK_PIECE_ROWS", 64)
    whole = parzen.parzen_pass(x, bank, [0.2, 0.5], **options)
    np.testing.assert_array_equal(pieces.nearest_index, whole.nearest_index)
    np.testing.assert_array_equal(pieces.min_sq_distance, whole.min_sq_distance)
    # Other pieces, other tiles: each result within the kernel's bound of exact arithmetic, so of each other.
    bound = parzen_int8.per_point_bound(x, bank, [0.2, 0.5])
    assert np.all(np.abs(pieces.log_sum_exp - whole.log_sum_exp) <= 2 * bound)
    monkeypatch.setattr(parzen_int8, "BANK_PIECE_ROWS", 16)
    bank[bad_row, 5] = np.nan
    with pytest.raises(GanbenchError, match="^bank contains NaN or inf"):
        parzen.parzen_pass(x, bank, [0.2], **options)


@pytest.mark.parametrize("case, sigma, alive", [("queries not 8-bit", 0.2, [0, 2, 0]),
                                                 ("sigma that rescales the data", 1e-30, [0, 2, 0, 2, 0])])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # float32 exponents to -inf, as meant
def test_queued_operands_are_freed_before_other_operands_are_made(case, sigma, alive, rng, monkeypatch):
    """Operands queued before the range check (a bank piece's: 4 bytes a value) must not stay in memory
    while the call makes others: the tf32x3 fallback's, or the int8 operands of rescaled data. Counted:
    the int8 operand tensors still alive as each operands launch or the tf32x3 pass begins."""
    made, alive_at = [], []
    launch, tf32x3 = operands.int8_operands_launch, parzen_lse.parzen_partial_triton

    def alive_now():
        alive_at.append(sum(ref() is not None for ref in made))

    def recording(*args, **kwargs):
        alive_now()
        outputs = launch(*args, **kwargs)
        made.extend(weakref.ref(tensor) for tensor in outputs[:2])  # the operand and its row terms
        return outputs

    monkeypatch.setattr(operands, "int8_operands_launch", recording)
    monkeypatch.setattr(parzen_lse, "parzen_partial_triton", lambda *args, **kwargs: alive_now() or tf32x3(*args, **kwargs))
    x, bank = bytes_over_255(rng, (5, 33)), unit_bank(rng, (7, 33))
    if case == "queries not 8-bit":
        x = x + 1e-3
    parzen.parzen_pass(x, bank, [sigma], backend="triton", device="cpu", precision="auto")
    assert alive_at == alive


@pytest.mark.parametrize("sigma", [300.0, 1e4, 1e8])
@pytest.mark.parametrize("count", [1, 23])
def test_columns_past_the_bank_add_nothing_at_any_sigma(sigma, count, rng):
    """Columns past the bank hold NOT_A_DISTANCE (2^62): no minimum, and -- at a sigma large enough
    that exp2(-2^62 c) is near 1 -- no term either (once up to log((m + padding) / m) nats too high)."""
    x, bank = bytes_over_255(rng, (7, 33)), unit_bank(rng, (count, 33))
    got = parzen.log_likelihood(x, bank, [sigma], backend="triton", device="cpu", precision="int8")
    expected = parzen.log_likelihood(x, bank, [sigma], backend="reference")
    assert np.all(np.abs(got - expected) <= parzen_int8.per_point_bound(x, bank, [sigma]))


SYNCHRONISING = ("tolist", "item", "numpy", "__bool__", "__int__", "__float__")


@pytest.mark.parametrize("bank_dtype", [np.float32, np.float64])
def test_an_int8_call_waits_for_the_device_once_before_its_kernel(bank_dtype, rng, monkeypatch):
    """Every read of a device value before the Parzen kernel idles the GPU while Python catches up: the
    inputs' range check and the operands' counts share one. Counted here: the reads ganbench's own code
    makes (the interpreter's own conversions aside) before each launch of the Parzen kernel."""
    from ganbench.kernels import launches

    reads, reads_at_launch = [], []
    for name in SYNCHRONISING:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "/ganbench/" in caller or "/kernels/" in caller and "triton" not in caller:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    launch = launches.KernelCall.launch

    def recording(call):
        if call.kernel is parzen_int8._parzen_int8_kernel:
            reads_at_launch.append(len(reads))
        launch(call)

    monkeypatch.setattr(launches.KernelCall, "launch", recording)
    x, bank = bytes_over_255(rng, (5, 33)), unit_bank(rng, (7, 33)).astype(bank_dtype)
    pass_ = parzen.parzen_pass(x, bank, [0.2, 0.5], backend="triton", device="cpu", precision="auto")
    assert reads_at_launch == [1], reads
    reference = parzen.parzen_pass(x, bank, [0.2, 0.5], backend="reference")
    np.testing.assert_array_equal(pass_.nearest_index, reference.nearest_index)


def test_saving_an_int8_score_says_which_precisions_can_be_saved():
    from ganbench.scoring import bounds

    for precision in ("int8", "auto"):
        with pytest.raises(GanbenchError, match="--precision tf32x3 or ieee to --save"):
            bounds.arithmetic_of("triton", precision)


COMPILE_FOR_SM90 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ganbench.kernels import parzen_int8, parzen_lse, partial_tiles, parzen_int8_operands as operands

def compile_for_sm90(kernel, signature, constexprs, attrs=None, **options):
    signature = dict(signature, **{name: "constexpr" for name in constexprs})
    return triton.compile(ASTSource(kernel, signature, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", 90, 32), options=options)

pointers = dict(zip(["query_ptr", "bank_ptr", "query_terms_ptr", "bank_terms_ptr", "scale32_ptr", "scale64_ptr",
                     "min_out_ptr", "index_out_ptr", "sums_out_ptr"],
                    ["*i8", "*i8", "*i64", "*i64", "*fp32", "*fp64", "*i64", "*i32", "*fp64"]))
sizes = ["n_queries", "n_bank", "width", "rows_per_split", "stride_query_row", "stride_bank_row", "query_bucket",
         "bank_bucket"]
divisible = {(list(pointers).index(name),): [["tt.divisibility", 16]] for name in ("query_ptr", "bank_ptr")}
compile_for_sm90(parzen_int8._parzen_int8_kernel, {**pointers, **dict.fromkeys(sizes, "i32")},
                 {"NUM_SIGMAS": 2, "DIGITS": 4, "CORRECTION": True, "BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 64},
                 divisible, num_warps=4, num_stages=3)
tile = {key: value for key, value in operands.GPU_TILE.items() if key.startswith("BLOCK")}
for query in (True, False):
    compile_for_sm90(operands._int8_operands_kernel,
                     {"rows_ptr": "*fp32", "out_ptr": "*i8", "terms_ptr": "*i64", "counts_ptr": "*i64",
                      **dict.fromkeys(["count", "dim", "width", "stride_rows", "stride_out"], "i32")},
                     {"QUERY": query, **tile}, num_warps=operands.GPU_TILE["num_warps"])
for (kernel, _), shipped in partial_tiles.SHIPPED_TILES.items():  # the tiles a new sm_90 machine compiles first
    if kernel != "int8":
        continue
    compile_for_sm90(parzen_int8._parzen_int8_kernel, {**pointers, **dict.fromkeys(sizes, "i32")},
                     {"NUM_SIGMAS": 16, "DIGITS": 4, "CORRECTION": True,
                      **{key: value for key, value in shipped.items() if key.startswith("BLOCK")}},
                     divisible, num_warps=shipped["num_warps"], num_stages=shipped["num_stages"])
lse_pointers = dict(zip(["query_ptr", "bank_ptr", "query_norm_ptr", "bank_norm_ptr", "scale_ptr", "min_out_ptr",
                         "index_out_ptr", "sums_out_ptr"], ["*fp32"] * 6 + ["*i32", "*fp32"]))
for precision in ("tf32x3", "ieee"):
    compile_for_sm90(parzen_lse._parzen_lse_kernel, {**lse_pointers, **dict.fromkeys(sizes, "i32")},
                     {"NUM_SIGMAS": 16, "PRECISION": precision, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32},
                     num_warps=8, num_stages=3)
shipped = partial_tiles.SHIPPED_TILES[("tf32", (9, 0))]
compile_for_sm90(parzen_lse._parzen_lse_kernel, {**lse_pointers, **dict.fromkeys(sizes, "i32")},
                 {"NUM_SIGMAS": 16, "PRECISION": "tf32",
                  **{key: value for key, value in shipped.items() if key.startswith("BLOCK")}},
                 num_warps=shipped["num_warps"], num_stages=shipped["num_stages"])
print("compiled")
"""


def test_shipped_tiles_are_tuning_candidates_and_used_only_on_their_gpu(monkeypatch):
    """A shipped tile is one autotuning could have chosen (so the candidates' checks and notes hold
    for it); the CPU never uses one, and GANBENCH_AUTOTUNE=1 turns them off."""
    candidates = {"int8": parzen_int8.TUNING_CANDIDATES, "tf32": parzen_lse.TUNING_CANDIDATES}
    for (kernel, capability), tiles in partial_tiles.SHIPPED_TILES.items():
        as_candidate = tuple(tiles[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"))
        assert as_candidate in candidates[kernel], (kernel, capability)
        if kernel == "int8":  # a four-digit bank keeps its accumulators in registers
            config = partial_tiles.autotune_configs([as_candidate], [{"STACKED": tiles.get("STACKED", False)}])
            assert parzen_int8._prune_configs(config, {"DIGITS": 4}) == config
    assert partial_tiles.shipped_tiles("int8", CPU) is None
    monkeypatch.setenv("GANBENCH_AUTOTUNE", "1")
    assert partial_tiles.shipped_tiles("tf32", torch.device("cuda")) is None  # decided before asking the GPU


def test_kernels_compile_for_a_gpu_without_one():
    """What the interpreter lets through and the GPU compiler does not (a global that is not constexpr):
    the int8 kernels and the float32 one (with the jit helpers they share) compiled to sm_90 machine
    code, offline, in a process without TRITON_INTERPRET."""
    import os
    import subprocess
    import sys

    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    completed = subprocess.run([sys.executable, "-c", COMPILE_FOR_SM90], capture_output=True, text=True,
                               env=environment, timeout=600)
    assert completed.returncode == 0 and "compiled" in completed.stdout, completed.stderr[-3000:]
