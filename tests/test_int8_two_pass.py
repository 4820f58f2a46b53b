"""The two-pass int8 scorer (kernels/parzen_int8_two_pass.py) under Triton's interpreter: the fused kernel's
integer distances, so the same minima and nearest indices bit for bit, and sums within the derived bound
of float64 (``parzen_int8.per_point_bound`` at block_n = BLOCK_C, the float32 block sum's length)."""
import numpy as np
import pytest
import torch
from ganbench.kernels import parzen_int8, parzen_int8_two_pass
from ganbench.kernels import parzen_int8_operands as operands
from test_int8 import BLOCKS, CPU, bytes_over_255, check_int8, launched_meta, unit_bank

from ganbench.errors import GanbenchError
from ganbench.scoring import parzen

# BLOCK_C equal to the fused kernel's BLOCK_N under the interpreter: check_int8's bound (at that BLOCK_N) holds.
ROWS = {"BLOCK_R": 4, "BLOCK_C": BLOCKS["BLOCK_N"]}


def compare_with_fused(x, bank, sigmas, **options):
    """Both against float64 (check_int8), and against each other: minima and indices bit for bit."""
    _, _, fused = check_int8(x, bank, sigmas)
    kernel, reference, two_pass = check_int8(x, bank, sigmas, two_pass=True, row_blocks=ROWS, **options)
    torch.testing.assert_close(two_pass.min_sq_distance, fused.min_sq_distance, rtol=0, atol=0)
    torch.testing.assert_close(two_pass.nearest_index, fused.nearest_index, rtol=0, atol=0)
    return kernel, reference, two_pass


@pytest.mark.parametrize("n, m, d", [
    (1, 1, 1),
    (5, 17, 1),
    (BLOCKS["BLOCK_M"] + 3, 3 * BLOCKS["BLOCK_N"] + 1, 785),   # n past a block, m past a block, d past BLOCK_K
    (7, 2 * BLOCKS["BLOCK_N"] - 1, 33),
])
def test_matches_the_fused_kernel_and_float64_at_odd_sizes(n, m, d, rng):
    compare_with_fused(bytes_over_255(rng, (n, d)), unit_bank(rng, (m, d)), np.logspace(-1, 0, 10))


@pytest.mark.parametrize("tiles", [
    {**BLOCKS, "STACKED": True},
    {**BLOCKS, "STACKED": True, "FP16_PRODUCTS": True},
    {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 64, "STACKED": True},
])
def test_first_pass_takes_the_fused_kernels_product_layouts(tiles, rng, monkeypatch):
    """The first pass computes E with parzen_int8.tile_distances: stacked digits and float16 products too."""
    x, bank = bytes_over_255(rng, (9, 100)), unit_bank(rng, (70, 100))
    seen = launched_meta(monkeypatch, "STACKED")
    compare_with_fused(x, bank, np.logspace(-1, 0, 4), blocks=tiles)
    assert True in seen


def test_an_8bit_bank_takes_one_digit_and_extreme_pixels_are_exact(rng):
    """Training images as the bank (one digit), with pixels 0 and 255 in queries and bank."""
    x = bytes_over_255(rng, (6, 50))
    bank = bytes_over_255(rng, (23, 50), np.float64)
    x[1], bank[2] = 0.0, 1.0
    compare_with_fused(x, bank, [0.1, 1.0])


def test_ties_go_to_the_lowest_index_across_blocks_and_pieces(rng, monkeypatch):
    """Exact duplicates of the nearest row in a later block and a later bank piece: the lowest index wins,
    as in the float64 reference and the fused kernel."""
    x = bytes_over_255(rng, (3, 20))
    bank = unit_bank(rng, (300, 20))
    bank[5] = bank[40] = bank[290] = x[0]   # the nearest row of query 0, three times
    # A buffer that holds 256 bank rows a piece: 300 rows go through in two pieces.
    monkeypatch.setattr(parzen_int8_two_pass, "BUFFER_BYTES", 8 * len(x) * 256)
    from ganbench.kernels import launches

    kernels = []
    launch = launches.KernelCall.launch
    monkeypatch.setattr(launches.KernelCall, "launch", lambda call: kernels.append(call.kernel) or launch(call))
    _, _, partial = compare_with_fused(x, bank, [0.5])
    assert int(partial.nearest_index[0]) == 5
    assert kernels.count(parzen_int8_two_pass._row_sums_kernel) == 2   # the second pass ran once a piece


def test_nearest_only_without_sigmas(rng):
    x, bank = bytes_over_255(rng, (5, 9)), unit_bank(rng, (33, 9))
    partial = parzen_int8.parzen_partial_int8(torch.as_tensor(x), torch.as_tensor(bank), [], device=CPU,
                                              two_pass=True, row_blocks=ROWS)
    reference = parzen.parzen_pass(x, bank, [], backend="reference")
    np.testing.assert_array_equal(partial.nearest_index.numpy(), reference.nearest_index)
    assert partial.shifted_sums.shape == (0, 5)


def test_the_buffer_sizes_the_pieces():
    assert parzen_int8_two_pass.piece_rows(10_000, 256) == parzen_int8_two_pass.BUFFER_BYTES // 80_000 // 256 * 256
    assert parzen_int8_two_pass.piece_rows(10**9, 256) == 256   # at least one block, however many queries


def test_bad_launches_get_one_line_errors(rng):
    x, bank = bytes_over_255(rng, (4, 40)), unit_bank(rng, (20, 40))
    query, query_terms, _, _, width = operands.int8_operands_launch(torch.as_tensor(x), "query", 16, 64, True)
    samples, bank_terms, _, _, _ = operands.int8_operands_launch(torch.as_tensor(bank), "bank", 16, 64, True)
    launch = parzen_int8_two_pass.parzen_int8_two_pass_launch
    sizes = {"n_queries": 4, "n_bank": 20, "width": width, "digits": 4, "correction": True}
    with pytest.raises(GanbenchError, match="row tile BLOCK_C must be a power of two"):
        launch(query, samples, query_terms, bank_terms, [1.0], row_blocks={"BLOCK_R": 4, "BLOCK_C": 12}, **sizes)
    with pytest.raises(GanbenchError, match="int8"):
        launch(query.float(), samples, query_terms, bank_terms, [1.0], **sizes)
    with pytest.raises(GanbenchError, match="up to 32"):
        launch(query, samples, query_terms, bank_terms, np.ones(33), **sizes)


def test_both_passes_compile_for_a_gpu_without_one():
    """What the interpreter lets through and the GPU compiler does not: both passes compiled to sm_90
    machine code offline (int64 atomics and stores, the shared product helper), without TRITON_INTERPRET."""
    import os
    import subprocess
    import sys

    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    completed = subprocess.run([sys.executable, "-c", COMPILE_FOR_SM90], capture_output=True, text=True,
                               env=environment, timeout=600)
    assert completed.returncode == 0 and "compiled" in completed.stdout, completed.stderr[-3000:]


COMPILE_FOR_SM90 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ganbench.kernels import parzen_int8_two_pass as two_pass

def compile_for_sm90(kernel, signature, constexprs, **options):
    signature = dict(signature, **{name: "constexpr" for name in constexprs})
    return triton.compile(ASTSource(kernel, signature, constexprs=constexprs),
                          target=GPUTarget("cuda", 90, 32), options=options)

tiles = dict(two_pass.DISTANCE_TILES)
launch = {key: tiles.pop(key) for key in ("num_warps", "num_stages")}
for products, digits in (("*i8", 4), ("*fp16", 4), ("*i8", 1)):
    compile_for_sm90(two_pass._distances_kernel,
                     {"query_ptr": products, "bank_ptr": products, "query_terms_ptr": "*i64", "bank_terms_ptr": "*i64",
                      "distances_ptr": "*i64", "minima_ptr": "*i64", "n_queries": "i32", "n_bank": "i32", "width": "i32",
                      "stride_query_row": "i32", "stride_bank_row": "i32"},
                     {"DIGITS": digits, "CORRECTION": True, **tiles, "FP16_PRODUCTS": products == "*fp16"}, **launch)
rows = dict(two_pass.ROW_TILES)
warps = rows.pop("num_warps")
for sigmas in (0, 1, 16):
    compile_for_sm90(two_pass._row_sums_kernel,
                     {"distances_ptr": "*i64", "minima_ptr": "*i64", "scale32_ptr": "*fp32", "index_out_ptr": "*i32",
                      "sums_out_ptr": "*fp64", "n_queries": "i32", "n_bank": "i32"},
                     {"NUM_SIGMAS": sigmas, **rows}, num_warps=warps)
print("compiled")
"""
