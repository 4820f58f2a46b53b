"""Input checks shared by every scorer: one clear message per mistake, never a silent wrong number."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ganbench.errors import GanbenchError


def as_matrix(name: str, values, *, dimension: int | None = None, dimension_of: str = "the bank") -> torch.Tensor:
    """Return ``values`` as a 2-D floating torch tensor (no copy when possible), or raise.

    ``dimension``, when given, is the vector size of ``dimension_of``, which ``values`` must match.
    """
    if isinstance(values, torch.Tensor):
        tensor = values.detach()
    else:
        try:
            array = np.asarray(values)
        except (TypeError, ValueError) as error:
            raise GanbenchError(f"{name} is not an array ({error})") from None
        if array.dtype.kind not in "biuf":
            raise GanbenchError(f"{name} has dtype {array.dtype}; pass real numbers")
        with warnings.catch_warnings():
            # Read-only inputs (memory-mapped .npy files) are fine: ganbench never writes to them.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim != 2:
        raise GanbenchError(f"{name} must be 2-D (count, dimension), got shape {tuple(tensor.shape)}; "
                            "flatten images to vectors first")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise GanbenchError(f"{name} is empty (shape {tuple(tensor.shape)}); pass at least one vector")
    if tensor.is_complex():
        raise GanbenchError(f"{name} is complex; pass real numbers")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    # One reduction and one wait for the device: min and max are NaN if any entry is, and
    # infinite if any entry is infinite.
    if not bool(torch.isfinite(torch.stack(torch.aminmax(tensor))).all()):
        raise GanbenchError(f"{name} contains NaN or inf; remove or fix those entries")
    if dimension is not None and tensor.shape[1] != dimension:
        raise GanbenchError(f"{name} has dimension {tensor.shape[1]} but {dimension_of} has {dimension}; "
                            "compare vectors of one size (an MNIST image is 28 x 28 = 784)")
    return tensor


def as_sigmas(sigmas) -> np.ndarray:
    """The kernel widths as a float64 vector, each finite and > 0."""
    grid = np.atleast_1d(np.asarray(sigmas, dtype=np.float64)) if not isinstance(sigmas, torch.Tensor) \
        else np.atleast_1d(sigmas.detach().cpu().double().numpy())
    if grid.ndim != 1 or grid.size == 0:
        raise GanbenchError("sigmas must be a non-empty 1-D list of kernel widths")
    if not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise GanbenchError(f"every sigma must be finite and > 0, got {grid.tolist()}")
    return grid
