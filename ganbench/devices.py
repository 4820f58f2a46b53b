"""The one place a device string becomes a ``torch.device``: checked, with a one-line error.

Every ``--device`` option and every ``device=`` argument goes through ``resolve_device``, so
"tpu", "cuda" on a CPU-only torch or "cuda:3" on a one-GPU machine say what to pass instead,
rather than ending in torch's RuntimeError or AssertionError deep inside a command.
"""
from __future__ import annotations

import torch

from ganbench.errors import GanbenchError

SUPPORTED = ("cpu", "cuda")


def default_device() -> torch.device:
    """The first CUDA GPU when torch sees one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None, default: str | torch.device | None = None) -> torch.device:
    """``device`` (or ``default`` when it is None; else ``default_device()``) as a checked ``torch.device``."""
    if device is None:
        device = default if default is not None else default_device()
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise GanbenchError(f"unknown device {device!r}; use cpu or cuda (cuda:N for the N-th GPU)") from None
    if target.type not in SUPPORTED:
        raise GanbenchError(f"device {target} is not supported; use cpu or cuda")
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise GanbenchError(f"device {device} was asked for but this torch sees no CUDA GPU "
                                f"(torch {torch.__version__}); use --device cpu, or install a CUDA build of torch")
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise GanbenchError(f"device {target} does not exist: this machine has {torch.cuda.device_count()} "
                                "CUDA GPU(s), numbered from 0")
    return target
