"""The Parzen kernel's operands in one pass: centre, split into tf32 parts, pad, and the squared norms.

``kernels/parzen_lse.py`` reads its operands as padded float32 matrices; for the default
tf32x3 precision each row x (centred by the bank mean c) is stored as three tf32-exact parts
side by side, so that one plain TF32 dot of width 3d keeps the three large products of
(x_hi + x_lo) . (s_hi + s_lo):

    queries  [x_hi, x_lo, x_hi]        bank  [s_lo, s_hi, s_hi]

with x_hi = x rounded to tf32 (10 mantissa bits, ties away from zero) and x_lo = x - x_hi,
exact in float32. Done with torch operations this takes about ten passes over the bank
(centre, round, subtract, three slot copies, zero fill, float64 norms); a million MNIST
samples spent ~30 ms there on an H200 against ~5 ms in the Parzen kernel itself. This kernel
reads each row once and writes the operand and the norm (summed in float64, rounded once).

File layout: kernel, float64 reference, launcher (checks, allocation, launch), public function.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from ganbench.kernels import launches

from ganbench.defaults import DEFAULT_PRECISION, PRECISIONS
from ganbench.errors import GanbenchError

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
ROLES = ("query", "bank")
OPERAND_BLOCKS = (16, 32) if INTERPRETED else (32, 128)  # (BLOCK_R, BLOCK_D): rows and columns a program reads at once
# Round to tf32 on the int32 bits: add half of what the 13 dropped mantissa bits can hold, clear them.
TF32_HALF_STEP = tl.constexpr(0x1000)
TF32_KEEP_MASK = tl.constexpr(-0x2000)  # ~0x1FFF as int32


# The row count only bounds the row masks: not specialized on (kernels/prebuilt.py).
@triton.jit(do_not_specialize=["count"])
def _operands_kernel(rows_ptr, centre_ptr, out_ptr, norms_ptr,
                     count, padded_count, dim, stride_rows, stride_out,
                     SPLIT: tl.constexpr, QUERY: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    tl.static_assert(BLOCK_R >= 1 and (BLOCK_R & (BLOCK_R - 1)) == 0, "BLOCK_R must be a power of two (tl.arange)")
    tl.static_assert(BLOCK_D >= 1 and (BLOCK_D & (BLOCK_D - 1)) == 0, "BLOCK_D must be a power of two (tl.arange)")
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < count
    # The last program may reach past the padded rows (the padding need not be a multiple of
    # BLOCK_R): every store is masked to the operand's own rows.
    stored = (rows < padded_count)[:, None]
    out_rows = out_ptr + rows.to(tl.int64)[:, None] * stride_out
    norms = tl.zeros([BLOCK_R], tl.float64)
    for start in range(0, dim, BLOCK_D):
        columns = start + tl.arange(0, BLOCK_D)
        column_ok = columns < dim
        inside = row_ok[:, None] & column_ok[None, :]
        written = stored & column_ok[None, :]
        values = tl.load(rows_ptr + rows.to(tl.int64)[:, None] * stride_rows + columns[None, :], mask=inside, other=0.0)
        centre = tl.load(centre_ptr + columns, mask=column_ok, other=0.0)
        centred = tl.where(inside, values - centre[None, :], 0.0)  # padding rows stay 0
        wide = centred.to(tl.float64)
        norms += tl.sum(wide * wide, axis=1)
        if SPLIT:
            bits = centred.to(tl.int32, bitcast=True)
            high = ((bits + TF32_HALF_STEP) & TF32_KEEP_MASK).to(tl.float32, bitcast=True)
            low = centred - high  # exact
            first, second = (high, low) if QUERY else (low, high)
            tl.store(out_rows + columns[None, :], first, mask=written)
            tl.store(out_rows + dim + columns[None, :], second, mask=written)
            tl.store(out_rows + 2 * dim + columns[None, :], high, mask=written)
        else:
            tl.store(out_rows + columns[None, :], centred, mask=written)
    tl.store(norms_ptr + rows, norms.to(tl.float32), mask=row_ok)


# ---- float64 reference -----------------------------------------------------------------------------

def round_to_tf32(values: torch.Tensor) -> torch.Tensor:
    """Round float32 to the nearest tf32 value (10 mantissa bits; ties away from zero), as float32."""
    bits = values.contiguous().view(torch.int32)
    return ((bits + TF32_HALF_STEP.value) & TF32_KEEP_MASK.value).view(torch.float32)


def parzen_operands_reference(rows: torch.Tensor, centre: torch.Tensor, role: str, precision: str):
    """What the kernel writes, unpadded, with torch operations: (operand, norms).

    The parts are exact float32 functions of the centred rows, and the norms are their squares
    summed in float64 and rounded once, so the kernel must agree to the bit (up to the order of
    the float64 sum, far below float32's rounding of the norm).
    """
    centred = (rows.float() - centre.float()).float()
    norms = torch.sum(centred.double() ** 2, dim=1).float()
    if precision != "tf32x3":
        return centred, norms
    high = round_to_tf32(centred)
    low = centred - high
    parts = (high, low, high) if role == "query" else (low, high, high)
    return torch.cat(parts, dim=1), norms


# ---- launcher --------------------------------------------------------------------------------------

def is_power_of_two(value, smallest: int = 1) -> bool:
    """A tile size the kernels can use: an int (not a bool), a power of two, at least ``smallest``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= smallest and not value & (value - 1)


def check_launch(precision: str, device: torch.device) -> None:
    """The checks every ganbench kernel launcher shares: a known precision, and a device Triton can run on."""
    if precision not in PRECISIONS:
        raise GanbenchError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if device.type == "cpu" and not INTERPRETED:
        raise GanbenchError("the triton backend needs a CUDA GPU; on the CPU set TRITON_INTERPRET=1 "
                            "(Triton's interpreter, slow, for tests) or use --backend torch")


# tl.dot's input_precision values: what the tensor cores do, as opposed to the user's
# precision (defaults.PRECISIONS), which the operands map onto one of these.
DOT_PRECISIONS = ("tf32", "tf32x3", "ieee")


def check_dot_launch(dot_precision: str, device: torch.device) -> None:
    """``check_launch`` for a launcher that takes tl.dot's input precision directly."""
    if dot_precision not in DOT_PRECISIONS:
        raise GanbenchError(f"unknown tl.dot precision {dot_precision!r}: choose one of {', '.join(DOT_PRECISIONS)}")
    check_launch(DEFAULT_PRECISION, device)


def operands_launch(rows: torch.Tensor, centre: torch.Tensor, role: str, precision: str,
                    row_multiple: int, width_multiple: int,
                    blocks: tuple[int, int] = OPERAND_BLOCKS) -> tuple[torch.Tensor, torch.Tensor]:
    """Check, allocate (rows padded to ``row_multiple``, width to ``width_multiple``), launch.

    ``blocks`` (BLOCK_R, BLOCK_D) are powers of two, independent of the padding: the kernel masks
    what lies past the rows and columns.
    """
    if rows.ndim != 2 or centre.shape != (rows.shape[1],):
        raise GanbenchError(f"rows {tuple(rows.shape)} must be (n, d) and the centre ({rows.shape[-1]},), "
                            f"got {tuple(centre.shape)}")
    if rows.dtype != torch.float32 or centre.dtype != torch.float32:
        raise GanbenchError(f"rows and centre must be float32, got {rows.dtype} and {centre.dtype}")
    if rows.device != centre.device:
        raise GanbenchError(f"rows are on {rows.device} but the centre is on {centre.device}")
    if role not in ROLES:
        raise GanbenchError(f"unknown role {role!r}: choose query or bank")
    for name, multiple in (("row_multiple", row_multiple), ("width_multiple", width_multiple)):
        if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
            raise GanbenchError(f"{name} must be a positive integer, got {multiple!r}")
    for name, block in zip(("BLOCK_R", "BLOCK_D"), blocks):
        if not is_power_of_two(block):
            raise GanbenchError(f"{name} must be a power of two (tl.arange needs it), got {block!r}")
    check_launch(precision, rows.device)
    call, outputs = operands_call(rows, centre, role, precision, row_multiple, width_multiple, blocks)
    call.launch()
    return outputs


def operands_call(rows: torch.Tensor, centre: torch.Tensor, role: str, precision: str, row_multiple: int,
                  width_multiple: int, blocks: tuple[int, int] = OPERAND_BLOCKS):
    """The launch ``operands_launch`` makes once its checks pass, outputs allocated: (call, (operand, norms))."""
    rows, centre = rows.contiguous(), centre.contiguous()
    count, dim = rows.shape
    parts = 3 if precision == "tf32x3" else 1
    padded_rows = triton.cdiv(max(count, 1), row_multiple) * row_multiple
    width = triton.cdiv(parts * dim, width_multiple) * width_multiple
    operand = torch.empty(padded_rows, width, dtype=torch.float32, device=rows.device)
    operand[:, parts * dim:].zero_()  # the kernel writes the first parts * dim columns of every row
    norms = torch.empty(count, dtype=torch.float32, device=rows.device)
    block_rows, block_dim = blocks
    grid = (triton.cdiv(padded_rows, block_rows),)
    call = launches.KernelCall(_operands_kernel, grid,
                               (rows, centre, operand, norms, count, padded_rows, dim, rows.stride(0), operand.stride(0)),
                               {"SPLIT": parts == 3, "QUERY": role == "query", "BLOCK_R": block_rows,
                                "BLOCK_D": block_dim})
    return call, (operand, norms)


# ---- public function -------------------------------------------------------------------------------

def parzen_operands(rows: torch.Tensor, centre: torch.Tensor, role: str, precision: str, *,
                    row_multiple: int, width_multiple: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(operand, squared norms of the centred rows, the tl.dot precision the operand is meant for).

    tf32x3 operands are read by a plain "tf32" dot; "ieee" and "tf32" operands are the centred rows.
    """
    operand, norms = operands_launch(rows, centre, role, precision, row_multiple, width_multiple)
    return operand, norms, "tf32" if precision == "tf32x3" else precision
