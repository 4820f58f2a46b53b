"""The operands kernel (kernels/parzen_operands.py) under Triton's interpreter.

Every value it writes is an exact float32 function of the centred rows (rounding to tf32 and
the subtraction x - x_hi are exact), so it must equal its torch reference to the bit; the
norms are float64 sums rounded once, equal up to the order of the float64 additions.
"""
import pytest
import torch
from ganbench.kernels import parzen_operands

from ganbench.errors import GanbenchError


@pytest.mark.parametrize("count, dim", [(1, 1), (5, 3), (17, 33), (40, 785)])
@pytest.mark.parametrize("role", ["query", "bank"])
@pytest.mark.parametrize("precision", ["tf32x3", "ieee"])
def test_kernel_matches_reference_to_the_bit(count, dim, role, precision, rng):
    rows = torch.as_tensor(rng.standard_normal((count, dim)) * 3, dtype=torch.float32)
    centre = torch.as_tensor(rng.standard_normal(dim), dtype=torch.float32)
    operand, norms, dot_precision = parzen_operands.parzen_operands(rows, centre, role, precision,
                                                                     row_multiple=16, width_multiple=32)
    expected, expected_norms = parzen_operands.parzen_operands_reference(rows, centre, role, precision)
    parts = 3 if precision == "tf32x3" else 1
    assert dot_precision == ("tf32" if precision == "tf32x3" else precision)
    assert operand.shape == (-(-count // 16) * 16, -(-parts * dim // 32) * 32)
    assert torch.equal(operand[:count, :parts * dim], expected)
    assert not operand[count:].any() and not operand[:, parts * dim:].any()  # zero padding adds nothing to a dot
    torch.testing.assert_close(norms, expected_norms, rtol=2.0**-23, atol=0)  # one float32 rounding apart at most


def test_tf32_parts_are_exact_and_within_half_a_step(rng):
    values = torch.as_tensor(rng.standard_normal(1000), dtype=torch.float32)
    high = parzen_operands.round_to_tf32(values)
    assert torch.all((high.view(torch.int32) & 0x1FFF) == 0)                 # 13 low mantissa bits clear
    assert torch.equal(parzen_operands.round_to_tf32(high), high)             # already on the tf32 grid
    assert torch.all((values - high).abs() <= 2.0 ** -11 * values.abs())      # round to nearest
    # The three parts carry x.s but for x_lo s_lo: [x_hi, x_lo, x_hi] . [s_lo, s_hi, s_hi].
    x, s = values[:500].double(), values[500:].double()
    xh, sh = high[:500].double(), high[500:].double()
    three = (xh * (s - sh) + (x - xh) * sh + xh * sh).sum()
    assert abs(three - (x * s).sum()) <= ((x - xh).abs() * (s - sh).abs()).sum() + 1e-12


def test_bad_arguments_get_clear_errors():
    rows = torch.zeros(3, 4)
    with pytest.raises(GanbenchError, match="float32"):
        parzen_operands.operands_launch(rows.double(), torch.zeros(4), "bank", "ieee", 16, 32)
    with pytest.raises(GanbenchError, match="centre"):
        parzen_operands.operands_launch(rows, torch.zeros(5), "bank", "ieee", 16, 32)
    with pytest.raises(GanbenchError, match="role"):
        parzen_operands.operands_launch(rows, torch.zeros(4), "sample", "ieee", 16, 32)
    with pytest.raises(GanbenchError, match="precision"):
        parzen_operands.operands_launch(rows, torch.zeros(4), "bank", "fp8", 16, 32)
    assert torch.isfinite(parzen_operands.operands_launch(rows, torch.zeros(4), "bank", "tf32", 16, 32)[1]).all()


@pytest.mark.parametrize("count, dim, row_multiple, width_multiple, blocks", [
    (20, 40, 8, 32, None),        # 24 padded rows, no multiple of BLOCK_R (16): the last program wrote past them
    (5, 3, 1, 1, None),           # no padding at all
    (33, 17, 3, 7, (32, 16)),     # odd multiples
    (17, 70, 24, 48, (64, 64)),   # BLOCK_R beyond every padded row (BLOCK_M 16 on a GPU, whose BLOCK_R is 32)
    (9, 5, 16, 32, (4, 8)),       # tiles smaller than the padding
])
@pytest.mark.parametrize("precision", ["tf32x3", "ieee"])
def test_any_padding_and_tile_matches_the_reference(count, dim, row_multiple, width_multiple, blocks, precision, rng):
    rows = torch.as_tensor(rng.standard_normal((count, dim)), dtype=torch.float32)
    centre = torch.as_tensor(rng.standard_normal(dim), dtype=torch.float32)
    tiles = {} if blocks is None else {"blocks": blocks}  # None: the launcher's own
    operand, norms = parzen_operands.operands_launch(rows, centre, "query", precision, row_multiple, width_multiple,
                                                     **tiles)
    expected, expected_norms = parzen_operands.parzen_operands_reference(rows, centre, "query", precision)
    parts = 3 if precision == "tf32x3" else 1
    assert operand.shape == (-(-count // row_multiple) * row_multiple, -(-parts * dim // width_multiple) * width_multiple)
    assert torch.equal(operand[:count, :parts * dim], expected)  # exact float32 functions of the rows, as above
    assert not operand[count:].any() and not operand[:, parts * dim:].any()
    torch.testing.assert_close(norms, expected_norms, rtol=2.0**-23, atol=0)


@pytest.mark.parametrize("options, message", [
    ({"row_multiple": 0}, "row_multiple must be a positive integer"),
    ({"width_multiple": 2.5}, "width_multiple must be a positive integer"),
    ({"blocks": (24, 32)}, "BLOCK_R must be a power of two"),
    ({"blocks": (16, 0)}, "BLOCK_D must be a power of two"),
])
def test_tiles_and_padding_the_indexing_cannot_use_are_clear_errors(options, message):
    arguments = {"row_multiple": 16, "width_multiple": 32, **options}
    with pytest.raises(GanbenchError, match=message):
        parzen_operands.operands_launch(torch.zeros(3, 4), torch.zeros(4), "bank", "ieee", **arguments)
