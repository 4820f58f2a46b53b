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


# Host tensors of at least this many bytes reach a GPU through pinned staging buffers (below it one
# plain copy costs less than the staging's launches), in pieces of STAGING_PIECE_BYTES through a ring
# of STAGING_BUFFERS buffers: the host fills one while the copy engine drains the others. Measured on
# two H200s (benchmarks/gpu_host.py, one 31 MB float32 array, torch's 16 threads): from pageable memory
# 2.3-3.8 ms, pinned whole then copied 1.19-1.24 ms, staged 4 MB x 2 1.45-1.49 ms, 8 MB x 3 1.15-1.21 ms,
# 16 MB x 2 1.20-1.22 ms; the halves alone: the host's copy into pinned memory 0.46-0.49 ms, pinned to
# the GPU 0.60-0.61 ms. Both inputs of a call through one ring of 4 x 8 MB: 1.96 ms (2.21 ms one after
# the other).
STAGING_MIN_BYTES = 4 << 20
STAGING_PIECE_BYTES = 8 << 20
STAGING_BUFFERS = 4


def to_device(tensor: torch.Tensor, target: torch.device, piece_bytes: int = STAGING_PIECE_BYTES,
              buffers: int = STAGING_BUFFERS) -> torch.Tensor:
    """``tensor`` on ``target`` (``to_device_many`` of one tensor)."""
    return to_device_many([tensor], target, piece_bytes, buffers)[0]


def to_device_many(tensors: list[torch.Tensor], target: torch.device, piece_bytes: int = STAGING_PIECE_BYTES,
                   buffers: int = STAGING_BUFFERS) -> list[torch.Tensor]:
    """Each tensor on ``target``; large host tensors go to a GPU through one ring of pinned buffers.

    From pageable memory the driver stages every copy through its own small pinned buffer and
    waits for each piece. Here the host's copy of a piece into pinned memory (torch's threads)
    overlaps the copy engine's transfer of the previous ones, and the tensors share the ring, so
    the second's first pieces are copied while the first's last ones cross: the copy engine
    stays busy from the first piece to the last. The buffers come from torch's caching host
    allocator (repeated calls pin no new memory) and are handed back only once their copies ran.
    The results are the same bytes.
    """
    results, staged = [], []
    for tensor in tensors:
        if (target.type != "cuda" or tensor.device.type != "cpu"
                or tensor.numel() * tensor.element_size() < STAGING_MIN_BYTES):
            results.append(tensor.to(target))
            continue
        out = torch.empty(tensor.shape, dtype=tensor.dtype, device=target)
        results.append(out)
        # As bytes, so one ring serves every dtype.
        staged.append((tensor.contiguous().reshape(-1).view(torch.uint8), out.reshape(-1).view(torch.uint8)))
    if not staged:
        return results
    total = sum(source.numel() for source, _ in staged)
    piece_bytes = min(piece_bytes, total)
    buffers = min(buffers, -(-total // piece_bytes))
    try:
        ring = [torch.empty(piece_bytes, dtype=torch.uint8, pin_memory=True) for _ in range(buffers)]
    except RuntimeError:  # no pinned memory to be had (a low locked-memory limit): the driver's own staging
        for source, destination in staged:
            destination.copy_(source)
        return results
    drained = [None] * buffers
    stream = torch.cuda.current_stream(target)
    number = 0
    for source, destination in staged:
        for first in range(0, source.numel(), piece_bytes):
            slot = number % buffers
            if drained[slot] is not None:
                drained[slot].synchronize()  # the copy engine has read this buffer's previous piece
            part = source[first:first + piece_bytes]
            buffer = ring[slot][:part.numel()]
            buffer.copy_(part)
            destination[first:first + part.numel()].copy_(buffer, non_blocking=True)
            drained[slot] = torch.cuda.Event()
            drained[slot].record(stream)
            number += 1
    return results


# Results up to this size come back from a GPU through pinned memory (a copy at the bus's rate, where
# a pageable one is staged by the driver); larger ones (millions of queries) are not held pinned.
PINNED_RESULT_BYTES = 64 << 20


def to_host(tensor: torch.Tensor):
    """``tensor`` as a NumPy array in host memory; from a GPU through pinned memory when it is small.

    The array views the pinned tensor, which it keeps alive; once the array is gone the block goes
    back to torch's caching host allocator, so repeated calls pin no new memory.
    """
    if tensor.device.type != "cuda" or tensor.numel() * tensor.element_size() > PINNED_RESULT_BYTES:
        return tensor.cpu().numpy()
    try:
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    except RuntimeError:  # no pinned memory to be had: a plain copy
        return tensor.cpu().numpy()
    host.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()
    return host.numpy()
