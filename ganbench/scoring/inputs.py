"""Input checks shared by every scorer: one clear message per mistake, never a silent wrong number.

``as_data`` is the one rule for how an array becomes data (uint8 images divided by 255, a
range check); bank files (``banks.open_bank``) and ``protocol.evaluate`` both apply it, so the
command line and the Python API score the same numbers. The low-level scorers
(``parzen.log_likelihood``) take arrays as they are.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch

from ganbench.errors import GanbenchError


def as_real_array(name: str, values) -> np.ndarray:
    """``values`` as a NumPy array of real numbers in the machine's byte order (no copy when it already
    is one), or a one-line error. Tensors leave autograd and their device (bfloat16 becomes float32,
    exactly); a masked array with masked entries is refused, as its mask would be dropped."""
    if values is None:
        raise GanbenchError(f"{name} is None; pass an array")
    if isinstance(values, (str, bytes, os.PathLike)):  # np.asarray made it a string array ("dtype <U15")
        raise GanbenchError(f"{name} is a path ({os.fspath(values)!r}), and this function takes arrays: load the file "
                            "with numpy.load, or use streaming.log_likelihood, which reads .npy files and shard folders")
    if isinstance(values, np.ma.MaskedArray) and np.ma.is_masked(values):
        raise GanbenchError(f"{name} has masked entries; fill or remove them first")
    if isinstance(values, torch.Tensor):
        values = dense_tensor(name, values).cpu()
        if values.is_complex():
            raise GanbenchError(f"{name} is complex; pass real numbers")
        values = as_numeric_tensor(values).numpy()
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise GanbenchError(f"{name} is not an array ({error})") from None
    if array.dtype.kind not in "biuf":
        raise GanbenchError(f"{name} has dtype {array.dtype}; pass real numbers")
    if not array.dtype.isnative:  # big-endian files: torch reads the machine's byte order only
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype.kind == "f" and array.dtype.itemsize > 8:
        # long double (80 or 128 bits): torch holds no such dtype; float64 is the reference's arithmetic (the
        # command reads such files as float64 too, ``banks.exact_dtype``).
        array = array.astype(np.float64)
    return array


def narrowest_float_dtype(dtypes) -> np.dtype | None:
    """The float dtype of fewest bytes among ``dtypes`` (others ignored), None when none is a float."""
    floats = [np.dtype(dtype) for dtype in dtypes if np.dtype(dtype).kind == "f"]
    return min(floats, key=lambda dtype: dtype.itemsize) if floats else None


# Tensor dtypes torch's reductions and NumPy both take; the other floating ones (bfloat16, the float8 formats)
# become float32, exactly (their values are float32 numbers).
NUMERIC_TENSOR_DTYPES = (torch.float16, torch.float32, torch.float64)


def as_numeric_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or its float32 copy when it is floating in a dtype outside ``NUMERIC_TENSOR_DTYPES``."""
    if tensor.is_floating_point() and tensor.dtype not in NUMERIC_TENSOR_DTYPES:
        return tensor.float()
    return tensor


def dense_tensor(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` out of autograd, or a one-line error for one that holds no values to read: on the meta device
    (shapes only), or sparse or otherwise not strided (densify it first)."""
    if tensor.device.type == "meta":
        raise GanbenchError(f"{name} is a tensor on the meta device, which holds no values; pass real data")
    if tensor.layout != torch.strided:
        raise GanbenchError(f"{name} is a {tensor.layout} tensor; pass a dense one (.to_dense())")
    return tensor.detach()


def is_whole_number(value) -> bool:
    """An int or NumPy integer, not a bool (True is 1 to Python, never a count or a size)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def as_matrix(name: str, values, *, dimension: int | None = None, dimension_of: str = "the bank",
              check_finite: bool = True) -> torch.Tensor:
    """Return ``values`` as a 2-D floating torch tensor (no copy when possible), or raise.

    ``dimension``, when given, is the vector size of ``dimension_of``, which ``values`` must match.
    ``check_finite=False`` leaves the NaN/inf check to the caller (``finite_magnitude``, which
    checks several tensors with one wait for the device).
    """
    if isinstance(values, torch.Tensor):
        tensor = as_numeric_tensor(dense_tensor(name, values))
    else:
        array = as_real_array(name, values)
        with warnings.catch_warnings():
            # Read-only inputs (memory-mapped .npy files) are fine: ganbench never writes to them.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            # A view NumPy calls contiguous can still carry a negative stride (one row of a reversed array),
            # which torch refuses: such a view is copied.
            contiguous = np.ascontiguousarray(array)
            if any(stride < 0 for stride in contiguous.strides):
                contiguous = contiguous.copy()
            tensor = torch.from_numpy(contiguous)
    if tensor.ndim != 2:
        raise GanbenchError(f"{name} must be 2-D (count, dimension), got shape {tuple(tensor.shape)}; "
                            "flatten images to vectors first")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise GanbenchError(f"{name} is empty (shape {tuple(tensor.shape)}); pass at least one vector")
    if tensor.is_complex():
        raise GanbenchError(f"{name} is complex; pass real numbers")
    if not tensor.is_floating_point():
        # Integers of up to 16 bits (bytes, booleans) are float32 numbers exactly; wider ones need float64. A
        # uint8 bank of 200,000 x 784 (150 MB) became 1.2 GB of float64 before any backend ran.
        tensor = tensor.to(torch.float32 if tensor.element_size() <= 2 else torch.float64)
    if check_finite:
        finite_magnitude({name: tensor})
    if dimension is not None and tensor.shape[1] != dimension:
        raise GanbenchError(f"{name} has dimension {tensor.shape[1]} but {dimension_of} has {dimension}; "
                            "compare vectors of one size (an MNIST image is 28 x 28 = 784)")
    return tensor


def finite_magnitude(named: dict[str, torch.Tensor]) -> float:
    """max |value| over the tensors, or a one-line error naming the first that holds NaN or inf.

    One min/max reduction per tensor and one wait per device (on a GPU every wait idles it while
    Python catches up): min and max are NaN if any entry is, and infinite if any entry is infinite.
    """
    by_device: dict[torch.device, list[str]] = {}
    for name, tensor in named.items():
        by_device.setdefault(tensor.device, []).append(name)
    ranges = {}
    for names in by_device.values():
        ranges.update(zip(names, queued_ranges({name: named[name] for name in names}).tolist()))
    return magnitude_of_ranges([(name, ranges[name]) for name in named])


def queued_ranges(named: dict[str, torch.Tensor]) -> torch.Tensor:
    """(min, max) of each tensor (all on one device), float64 (k, 2) on that device, not waited for:
    a caller can read it in the same wait as other results (``magnitude_of_ranges`` then checks it)."""
    return torch.stack([torch.stack(torch.aminmax(tensor)).double() for tensor in named.values()])


def magnitude_of_ranges(ranges: list[tuple[str, tuple[float, float]]]) -> float:
    """``finite_magnitude`` from (name, (min, max)) pairs, as read from ``queued_ranges`` (a name may
    come more than once, for parts of one tensor): the first pair holding NaN or inf names the error."""
    for name, (low, high) in ranges:
        if not (math.isfinite(low) and math.isfinite(high)):
            raise GanbenchError(f"{name} contains NaN or inf; remove or fix those entries")
    return max(max(-low, high) for _, (low, high) in ranges)


def as_sigmas(sigmas) -> np.ndarray:
    """The kernel widths as a float64 vector, each finite and > 0."""
    # Text and booleans convert to numbers ("0.1" to 0.1, True to 1.0) but are never widths: a sign of a mistake.
    entries = sigmas if isinstance(sigmas, (list, tuple)) else [sigmas]
    not_numbers = (sigmas is None or any(isinstance(entry, (str, bytes, bool, np.bool_)) for entry in entries)
                   or isinstance(sigmas, np.ndarray) and sigmas.dtype.kind in "bSU"
                   or isinstance(sigmas, torch.Tensor) and sigmas.dtype == torch.bool)
    if not_numbers:
        raise GanbenchError(f"sigmas must be numbers (kernel widths), got {sigmas!r}")
    try:
        grid = np.atleast_1d(np.asarray(sigmas, dtype=np.float64)) if not isinstance(sigmas, torch.Tensor) \
            else np.atleast_1d(dense_tensor("sigmas", sigmas).cpu().double().numpy())
    except (TypeError, ValueError) as error:
        raise GanbenchError(f"sigmas must be numbers (kernel widths), got {sigmas!r} ({error})") from None
    if grid.ndim != 1 or grid.size == 0:
        raise GanbenchError("sigmas must be a non-empty 1-D list of kernel widths")
    if not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise GanbenchError(f"every sigma must be finite and > 0, got {grid.tolist()}")
    return grid


MNIST_RANGE = (0.0, 1.0)  # pixels as the paper's code stores them: byte / 255


def data_scale(dtype) -> float:
    """The factor that puts values of ``dtype`` on the data's scale: 1 / 255 for uint8, else 1.

    uint8 arrays hold image bytes, and ganbench's data (MNIST as the paper's code stores it)
    are byte / 255; every other dtype must already be on the data's scale.
    """
    is_uint8 = dtype == torch.uint8 if isinstance(dtype, torch.dtype) else np.dtype(dtype) == np.uint8
    return 1.0 / 255.0 if is_uint8 else 1.0


def as_data(name: str, values, value_range: tuple[float, float] | None = None):
    """``values`` on the data's scale (uint8 divided by 255, as float32), range-checked when asked.

    Arrays stay NumPy arrays and tensors stay tensors; other dtypes pass unchanged (no copy).
    """
    if isinstance(values, torch.Tensor):
        values = dense_tensor(name, values)  # a meta or sparse tensor has no values to range-check
    else:
        try:
            values = np.asarray(values)
        except (TypeError, ValueError) as error:
            raise GanbenchError(f"{name} is not an array ({error})") from None
    if data_scale(values.dtype) != 1.0:
        values = (values.to(torch.float32) if isinstance(values, torch.Tensor)
                  else values.astype(np.float32)) / np.float32(255.0)
    if value_range is not None:
        check_range(name, values, value_range)
    return values


def _min_max(values) -> tuple[float, float] | None:
    """Smallest and largest entry (NaN if any is NaN), or None for an empty or non-numeric array."""
    if isinstance(values, torch.Tensor):
        if values.numel() == 0 or values.is_complex():
            return None
        return tuple(float(v) for v in torch.aminmax(values.detach()))
    if values.size == 0 or values.dtype.kind not in "biuf":
        return None
    return float(values.min()), float(values.max())


# Values this close outside the range pass: a sigmoid, or (tanh + 1) / 2, computed in float32 overshoots [0, 1]
# by a rounding now and then, which says nothing about the scale the check is for (0-255 floats lie 254 outside,
# tanh outputs 1). A share of the range's width; an unbounded range has no slack to give.
RANGE_SLACK = 2.0**-10
# Values outside by less than this share of the width are a small overshoot: the fix is clipping, not rescaling.
OVERSHOOT_SHARE = 0.05


def check_range(name: str, values, value_range: tuple[float, float], first_row: int = 0, where=None) -> None:
    """Refuse values outside the data's range (beyond ``RANGE_SLACK``), naming the first one and the fix;
    ``where(row)``, when given, names the data at that row instead of ``name`` (a bank's shard and its own row).

    Samples on another scale than the data (0-255 floats, tanh outputs in [-1, 1]) still give
    a finite log-likelihood, only a meaningless one.
    """
    low, high = value_range
    width = high - low
    slack = RANGE_SLACK * width if math.isfinite(width) else 0.0
    lowest, highest = low - slack, high + slack  # what passes
    extremes = _min_max(values)
    if extremes is None or (lowest <= extremes[0] and extremes[1] <= highest) or np.isnan(extremes).any():
        return  # empty, in range, or NaN (which the scorers refuse with their own message)
    values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values
    rows = values.reshape(len(values), -1)
    outside = (rows < lowest) | (rows > highest)
    row = int(np.argmax(outside.any(axis=1)))
    value = rows[row][outside[row]][0]
    excess = max(low - float(value), float(value) - high)
    if math.isfinite(width) and excess <= OVERSHOOT_SHARE * width:
        fix = (f"clip the samples to it (np.clip(x, {low:g}, {high:g})) if they only overshoot it, "
               "or rescale them if they are on another scale")
    else:
        fix = "rescale the samples (x / 255 for 0-255 floats, (x + 1) / 2 for tanh outputs)"
    located = name if where is None else where(first_row + row)
    raise GanbenchError(f"{located} has the value {_shortest(value)} at row {first_row + row}, outside the data's range "
                        f"[{low:g}, {high:g}]; {fix}")


SCALE_RATIO = 16.0        # 0-255 values against [0, 1] differ by 255; [-1, 1] against [0, 1] by 1
SCALE_VALUES = 1_000_000  # values read for a magnitude (whole rows, evenly spaced, of larger arrays)


SCALE_ROWS = 10_000  # a bank's first rows judge its scale (a bank on disk is not read twice)


def magnitude(values) -> float | None:
    """How large a data set's values are: the 99th percentile, over its rows, of each row's largest
    |value| (whole rows, so that neither a row layout nor sparsity hides a column's scale, and a few
    outlying rows do not count); None when no row has a finite value."""
    rows = values.reshape(len(values), -1) if len(values) else values
    if len(rows) == 0 or rows.shape[1] == 0:
        return None
    rows = rows[::max(1, rows.shape[0] * rows.shape[1] // SCALE_VALUES)]
    if isinstance(rows, torch.Tensor):  # on its device, then only the per-row maxima come back (bfloat16 too)
        largest = rows.detach().abs().to(torch.float64).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).amax(dim=1)
        largest = largest.cpu().numpy()
    else:
        largest = np.nan_to_num(np.abs(np.asarray(rows, dtype=np.float64)), nan=0.0, posinf=0.0, neginf=0.0).max(1)
    return float(np.quantile(largest, 0.99))


def check_same_scale(named_values: dict) -> None:
    """Refuse data on two scales: one set within [-1, 1] (bytes / 255, tanh outputs) and another whose
    values reach SCALE_RATIO and more times as far (0-255 floats, 0-100 percentages).

    Samples in [0, 1] scored against 0-255 data (or the reverse, or validation and test data on two
    scales) give a finite log-likelihood, only a meaningless one. Only this mismatch is refused: data
    of any one scale, however spread, sparse, offset or collapsed, are scored.
    """
    check_same_magnitudes({name: magnitude(values) for name, values in named_values.items()})


def check_same_magnitudes(magnitudes: dict) -> None:
    """``check_same_scale`` from each set's ``magnitude`` (None: no values), for sets read one at a time."""
    magnitudes = {name: value for name, value in magnitudes.items() if value is not None}
    for small_name, small in magnitudes.items():
        for large_name, large in magnitudes.items():
            if small <= 1.0 and large >= SCALE_RATIO and large >= SCALE_RATIO * small:
                raise GanbenchError(
                    f"{small_name} lie within [-1, 1] but {large_name} reach {large:.4g} (99th percentile of "
                    f"each row's largest value): they are on two scales; put them on one (x / 255 for 0-255 "
                    "values)")


def _shortest(value) -> str:
    """The shortest text that reads back as ``value`` in its own dtype: 1.0000001 for the float32 just
    above 1 (which 4 significant digits would print as 1, inside [0, 1])."""
    value = np.asarray(value)[()]
    if value.dtype.kind != "f":
        return str(value)
    if value == 0 or 1e-4 <= abs(value) < 1e6:
        return np.format_float_positional(value, trim="-")
    return np.format_float_scientific(value, trim="-")


def held_out_range(*held_out) -> tuple[float, float] | None:
    """MNIST's range [0, 1] when every held-out set lies in it, else None (the data's own scale).

    Held-out data in [0, 1] are on MNIST's scale: a bank outside it (0-255 floats, tanh
    outputs) is on another scale than the data it is scored against.
    """
    for values in held_out:
        extremes = _min_max(as_data("held-out data", values))
        if extremes is not None and not (MNIST_RANGE[0] <= extremes[0] and extremes[1] <= MNIST_RANGE[1]):
            return None
    return MNIST_RANGE
