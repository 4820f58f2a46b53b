"""The fused Triton kernel, run on the CPU by Triton's interpreter (TRITON_INTERPRET=1, conftest.py).

Tolerances: the interpreter's tl.dot is a float32 product with float32 accumulation
whatever ``input_precision`` says, so the float32 bound of tolerances.py applies, for the
dot of length 3d that the default tf32x3 operands make (split_tf32x3=True there), with the
kernel's bank blocks of BLOCK_N rows. On a GPU the tf32 MMA also truncates the low parts:
benchmarks/gpu_check.py measures that error.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from ganbench.kernels import parzen_lse, parzen_operands
from tolerances import (
    centred_sq_norms,
    distance_bound,
    exponent_error,
    half_inverse_variances,
    log_likelihood_bound,
    nearest_is_within_bound,
    shifted_sum_log_error,
)

from ganbench.errors import GanbenchError
from ganbench.scoring import partials, parzen

BLOCK_N = parzen_lse.INTERPRETER_BLOCKS["BLOCK_N"]


def check_against_reference(x, bank, sigmas, **kernel_options):
    reference = parzen.parzen_pass(x, bank, sigmas, backend="reference")
    # The kernel file's own float64 reference (direct differences) agrees with ganbench's (expanded form).
    own = parzen_lse.parzen_lse_reference(torch.as_tensor(x), torch.as_tensor(bank), sigmas)
    np.testing.assert_array_equal(own.nearest_index.numpy(), reference.nearest_index)
    np.testing.assert_allclose(own.min_sq_distance.numpy(), reference.min_sq_distance, rtol=1e-9, atol=1e-9)
    if len(sigmas):
        np.testing.assert_allclose(partials.log_sum_exp(own, sigmas).numpy(), reference.log_sum_exp,
                                   rtol=1e-9, atol=1e-7)
    query_tensor, bank_tensor = torch.as_tensor(x), torch.as_tensor(bank)
    partial = parzen_lse.parzen_partial_triton(query_tensor, bank_tensor, sigmas, device=torch.device("cpu"),
                                               **kernel_options)
    kernel = parzen.finish_pass(partial, query_tensor, bank_tensor, sigmas, refine=False)  # the kernel's own error
    split = kernel_options.get("precision", "tf32x3") == "tf32x3"
    distances = distance_bound(x, bank, split_tf32x3=split)
    if len(sigmas):
        bound = log_likelihood_bound(x, bank, sigmas, split_tf32x3=split, block_rows=BLOCK_N)
        assert np.all(np.abs(kernel.log_sum_exp - reference.log_sum_exp) <= bound)
    assert np.all(np.abs(kernel.min_sq_distance - reference.min_sq_distance) <= distances)
    # Nearest index: equal, or a float32 near-tie (within twice the bound of the nearest).
    assert np.all(nearest_is_within_bound(x, bank, kernel.nearest_index, distances))
    return kernel, reference


@pytest.mark.parametrize("n, m, d", [
    (1, 1, 1),
    (1, 5, 3),
    (3, 1, 7),
    (5, 17, 1),
    (7, 3 * BLOCK_N + 1, 785),   # d past a multiple of BLOCK_K, m one past a block
    (BLOCK_N + 3, 2 * BLOCK_N - 1, 33),
])
@pytest.mark.parametrize("precision", ["tf32x3", "ieee"])
def test_matches_float64_reference_at_odd_sizes(n, m, d, precision, rng):
    x, bank = rng.random((n, d)), rng.random((m, d))
    check_against_reference(x, bank, np.logspace(-1, 0, 10), precision=precision)


@pytest.mark.parametrize("count", [1, 10, 32])
def test_sigma_grids_of_1_10_and_32(count, rng):
    x, bank = rng.random((9, 20)), rng.random((40, 20))
    check_against_reference(x, bank, np.logspace(-1.5, 0.5, count))


def test_more_than_32_sigmas_run_in_several_passes(rng):
    x, bank = rng.random((4, 6)), rng.random((20, 6))
    kernel, _ = check_against_reference(x, bank, np.logspace(-1, 0, 40))
    assert kernel.log_sum_exp.shape == (40, 4)


def test_very_small_sigma_where_every_unshifted_term_underflows(rng):
    x, bank = rng.random((5, 30)), rng.random((25, 30))
    # D ~ 5, sigma = 1e-3: exp(-D / 2e-6) is 0 in float32 and float64; only the shift keeps it finite.
    kernel, reference = check_against_reference(x, bank, [1e-3, 3e-3])
    assert np.all(np.isfinite(kernel.log_sum_exp))


def test_nearest_ties_go_to_the_lowest_index_within_and_across_blocks_and_splits(rng):
    bank = rng.random((5 * BLOCK_N + 2, 12)).astype(np.float32)
    bank[2 * BLOCK_N + 1] = bank[4]       # another block
    bank[4 * BLOCK_N + 1] = bank[4]       # another split below
    bank[5] = bank[4]                     # same block
    x = bank[[4, 2 * BLOCK_N + 1, 6]]
    # Exact, not a bound: the copies hold the same bits, each in a full (padded) tile, and the
    # interpreter's product computes every output of a tile by the same operations, so the copies
    # get the same distance and the tie rule alone decides.
    for rows_per_split in (None, 2 * BLOCK_N):
        kernel, reference = check_against_reference(x, bank, [0.2], rows_per_split=rows_per_split)
        np.testing.assert_array_equal(kernel.nearest_index, [4, 4, 6])
        np.testing.assert_array_equal(reference.nearest_index, [4, 4, 6])


@pytest.mark.parametrize("rows_per_split", [BLOCK_N, 2 * BLOCK_N, 3 * BLOCK_N])
def test_split_bank_path_merges_exactly(rows_per_split, rng):
    x, bank = rng.random((6, 40)), rng.random((7 * BLOCK_N + 5, 40))
    sigmas = [0.1, 0.3, 1.0]
    split, _ = check_against_reference(x, bank, sigmas, rows_per_split=rows_per_split)
    whole, _ = check_against_reference(x, bank, sigmas)
    # Splits hold whole tiles, so every tile is the same interpreter product of the same operands
    # in the same process: the distances are the same bits, and so are the nearest rows. Only the
    # exponents, rescalings and sums differ (float32 in one pass, float64 between splits).
    centre = bank.mean(axis=0)
    query_norms, bank_norm = centred_sq_norms(x, centre), centred_sq_norms(bank, centre).max()
    one_pass = (exponent_error(query_norms, bank_norm)[None, :] * half_inverse_variances(sigmas)
                + shifted_sum_log_error(len(bank), BLOCK_N))
    assert np.all(np.abs(split.log_sum_exp - whole.log_sum_exp) <= 2 * one_pass)
    np.testing.assert_array_equal(split.nearest_index, whole.nearest_index)


def test_nearest_only_pass(rng):
    x, bank = rng.random((3, 5)), rng.random((9, 5))
    kernel, reference = check_against_reference(x, bank, [])
    assert kernel.log_sum_exp.shape == (0, 3)


def test_backend_routes_to_the_kernel_on_cpu(rng):
    x, bank = rng.random((4, 9)), rng.random((20, 9))
    sigmas = [0.2, 0.9]
    got = parzen.log_likelihood(x, bank, sigmas, backend="triton", device="cpu")
    reference = parzen.log_likelihood(x, bank, sigmas, backend="reference")
    bound = log_likelihood_bound(x, bank, sigmas, split_tf32x3=True, block_rows=BLOCK_N)
    assert np.all(np.abs(got - reference) <= bound)


def test_real_mnist_through_the_kernel(mnist):
    x, bank = mnist.test_x[:20], mnist.train_x[:3 * BLOCK_N + 1]
    check_against_reference(x, bank, np.logspace(-1, 0, 10))


def exactly(message: str) -> str:
    """A pattern for pytest.raises that matches this whole message and nothing else."""
    return f"^{re.escape(message)}$"


def test_launcher_rejects_bad_arguments():
    blocks = parzen_lse.INTERPRETER_BLOCKS
    centre = torch.zeros(4)
    query, _ = parzen_operands.operands_launch(torch.zeros(3, 4), centre, "query", "ieee", blocks["BLOCK_M"],
                                               blocks["BLOCK_K"])
    bank, _ = parzen_operands.operands_launch(torch.zeros(5, 4), centre, "bank", "ieee", blocks["BLOCK_N"],
                                              blocks["BLOCK_K"])
    assert tuple(query.shape) == (16, 32)  # padded to whole blocks
    norms_q, norms_b = torch.zeros(3), torch.zeros(5)
    sizes = {"n_queries": 3, "n_bank": 5, "blocks": blocks}
    unknown_precision = exactly(f"unknown precision 'fp8': choose one of {', '.join(parzen_operands.PRECISIONS)}")
    with pytest.raises(GanbenchError, match=exactly("query must be float32, got torch.float64")):
        parzen_lse.parzen_lse_launch(query.double(), bank, norms_q, norms_b, [1.0], **sizes)
    with pytest.raises(GanbenchError, match=exactly("query (16, 32) and bank (16, 3) must be (n, w) and (m, w)")):
        parzen_lse.parzen_lse_launch(query, torch.zeros(16, 3), norms_q, norms_b, [1.0], **sizes)
    with pytest.raises(GanbenchError, match=exactly("the kernel takes 1 to 32 sigmas per pass, got 33")):
        parzen_lse.parzen_lse_launch(query, bank, norms_q, norms_b, np.ones(33), **sizes)
    with pytest.raises(GanbenchError, match=exactly("unknown tl.dot precision 'fp8': choose one of tf32, tf32x3, ieee")):
        parzen_lse.parzen_lse_launch(query, bank, norms_q, norms_b, [1.0], dot_precision="fp8", **sizes)
    with pytest.raises(GanbenchError, match=exactly("operands must be padded to whole blocks: build them with "
                                                    "parzen_operands")):
        parzen_lse.parzen_lse_launch(query[:2], bank, norms_q, norms_b, [1.0], **sizes)
    with pytest.raises(GanbenchError, match=exactly("rows_per_split must be a positive multiple of BLOCK_N, got 20")):
        parzen_lse.parzen_lse_launch(query, bank, norms_q, norms_b, [1.0], rows_per_split=20, **sizes)
    with pytest.raises(GanbenchError, match=unknown_precision):
        parzen_lse.parzen_partial_triton(torch.zeros(3, 4), torch.zeros(5, 4), [1.0], device=torch.device("cpu"),
                                         precision="fp8")


def test_bank_pieces_merge_like_one_pass(rng):
    x, bank = rng.random((5, 12)), rng.random((3 * BLOCK_N + 7, 12))
    sigmas = [0.2, 0.6]
    query_tensor, bank_tensor = torch.as_tensor(x), torch.as_tensor(bank)
    whole = parzen_lse.parzen_partial_triton(query_tensor, bank_tensor, sigmas, device=torch.device("cpu"))
    pieces = parzen_lse.parzen_partial_triton(query_tensor, bank_tensor, sigmas, device=torch.device("cpu"),
                                              bank_piece_rows=BLOCK_N + 3)
    # Pieces of BLOCK_N + 3 rows put other rows in each tile, whose products may round otherwise:
    # each result is within its bound of the exact one, and the nearest rows agree but for near-ties.
    bound = log_likelihood_bound(x, bank, sigmas, split_tf32x3=True, block_rows=BLOCK_N)
    difference = partials.log_sum_exp(pieces, sigmas) - partials.log_sum_exp(whole, sigmas)
    assert np.all(np.abs(difference.numpy()) <= 2 * bound)
    distances = distance_bound(x, bank, split_tf32x3=True)
    for result in (pieces, whole):
        assert np.all(nearest_is_within_bound(x, bank, result.nearest_index.numpy(), distances))


def test_without_interpreter_the_cpu_gets_a_clear_error():
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import numpy as np; from ganbench.scoring import parzen\n"
            "parzen.log_likelihood(np.ones((2, 3)), np.ones((4, 3)), [1.0], backend='triton', device='cpu')")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)
    assert completed.returncode != 0
    assert "needs a CUDA GPU" in completed.stderr and "TRITON_INTERPRET=1" in completed.stderr



@pytest.mark.parametrize("blocks", [
    {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16},
    {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64},
    {"BLOCK_M": 64, "BLOCK_N": 512, "BLOCK_K": 16},  # BLOCK_N past the bank's split multiple (256)
])
def test_non_default_tiles_match_the_float64_reference(blocks, rng):
    x, bank = rng.random((37, 45)), rng.random((71, 45))  # multiples of no tile, a width of 3 x 45 = 135
    check_against_reference(x, bank, [0.1, 0.5, 1.0], blocks=blocks)
    check_against_reference(x, bank, [0.3], blocks=blocks, rows_per_split=blocks["BLOCK_N"])  # several splits


@pytest.mark.parametrize("blocks, message", [
    ({"BLOCK_M": 24, "BLOCK_N": 16, "BLOCK_K": 32}, "BLOCK_M must be a power of two >= 16"),
    ({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 8}, "BLOCK_K must be a power of two >= 16"),  # tl.dot's minimum
    ({"BLOCK_M": 16, "BLOCK_K": 32}, "BLOCK_N must be a power of two >= 16"),
])
def test_tiles_the_kernel_cannot_index_are_clear_errors(blocks, message, rng):
    x, bank = torch.as_tensor(rng.random((5, 6))), torch.as_tensor(rng.random((9, 6)))
    with pytest.raises(GanbenchError, match=message):
        parzen_lse.parzen_partial_triton(x, bank, [0.5], device=torch.device("cpu"), blocks=blocks)

