"""How the ``ganbench`` command takes memory from the system: freed blocks kept for reuse.

glibc serves every block above 32 MB (and, before its threshold adapts, smaller ones) with a fresh
``mmap`` and returns it to the system on ``free``. ganbench's passes allocate and free banks,
tiles and bounds of tens of MB to 2 GB again and again, so every new one is faulted in page by page,
zeroed by the kernel, and on a virtual machine often backed afresh by the host: on this project's
2-core AMD EPYC (a Firecracker VM) k-means' 2 GB of bounds took 2 s to fault in where reused memory
took 0.1 s. The command therefore has glibc serve every block from its heap and never trim it:
freed memory stays in the process and the next block reuses it. `ganbench reproduce table1` from a
cold cache took 41.0 and 41.9 s against 44.4 and 46.7 s without (two runs each, alternated; page
faults 0.13 million against 0.30-0.33 million; peak memory 3.5 against 3.4 GB). Only the command does
this: a library user's process could live long and would keep its peak memory. (``import ganbench``
asks torch for huge pages, ``ganbench/__init__.py``, which changes where memory comes from, not how
much is held.) ``GANBENCH_RETAIN_MEMORY=0`` switches it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

DISABLE_VARIABLE = "GANBENCH_RETAIN_MEMORY"
# mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def retain_freed_memory() -> bool:
    """Serve every allocation from glibc's heap and never trim it; True when glibc took both settings."""
    if os.environ.get(DISABLE_VARIABLE, "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to set
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # No block from mmap; a trim threshold of -1 is the largest size_t: the heap is never trimmed.
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))


def physical_memory() -> int:
    """Bytes of physical memory, or a very large number where the platform does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 2**62
