"""The torch backend's CPU pass over a float32 distance tile, fused into one compiled loop per row.

After each tile's GEMM, eager torch makes about ten passes over the 2048 x 1024 tile (query
norms, clamp, row minima, the shift, a scan for the terms that count, their gathering, the
exponentials, the sums), each a call that reads or writes 8 MB: about 10 ms against the GEMM's
16.5 ms on a 2-core AMD EPYC, so 10 sigmas cost 1.6-1.7x one float32 matmul, against 1.14-1.22x with
this pass (docs/performance.md); the int8 path's exact int32 tiles (8-bit data) go through the same
loop (0.84x -> 0.39-0.43x).

``fused_rows.cpp`` does the same arithmetic in one read of each row, the row in cache: its
distances and minimum, the running minimum's move, then every sigma's shifted sum over only the
terms that count (gathered once per row for the widest sigma, each narrower one keeping its own
from those; ``partials.add_terms`` says why the others are left out exactly to float32).

Rows are split over torch's threads with OpenMP: linked by soname against the libgomp.so.1 torch
has already loaded, the library shares torch's thread pool. Threads of its own would compete with
torch's OpenMP workers, which spin for a while after each GEMM: on 2 cores, two Python threads
calling the loop ran no faster than one.

The exponentials are computed in float64 (within 1e-12 relative) and each row's terms summed in
float64, the sum rounded to float32 once and added to the running sum, so every rounding is one the
error analysis (``ganbench.scoring.bounds``) already counts, or smaller: results keep the float32
bound whichever path scored them. The tiles must be finite (``parzen`` refuses NaN and inf inputs).

The source is compiled on first use with the machine's C++ compiler (``$CXX``, else ``g++`` or
``c++``; -O3 -march=native -fopenmp, no -ffast-math) into the user cache, keyed by the source, the compiler,
its flags and the CPU, so a cache shared by two machines never loads code built for the other.
A compiled library is checked once a process against float64 arithmetic before any use. Without
a compiler, when compiling or the check fails, or with ``GANBENCH_FUSED_ROWS=0``, the eager torch
passes score instead (the same bound, slower), and ganbench says so once on stderr.
"""
from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganbench.progress import announce_once as _announce
from ganbench.scoring import partials

SOURCE = Path(__file__).with_name("fused_rows.cpp")
# No -ffast-math: it would let the compiler reorder and contract the float32 roundings that the
# error bound counts one by one.
# -ffp-contract=off: no fused multiply-adds either (g++ in ISO C++ mode contracts nothing already; clang
# would contract within an expression), so the candidate rules round as their NumPy checks do.
FLAGS = ("-O3", "-march=native", "-std=c++17", "-ffp-contract=off", "-fPIC", "-shared", "-fopenmp")
COMPILE_SECONDS = 120
DISABLE_VARIABLE = "GANBENCH_FUSED_ROWS"


def fold_tile(running: partials.BankPartial, tile: torch.Tensor, query_norms: torch.Tensor,
              sorted_scales: torch.Tensor, sigma_rows: torch.Tensor, index_offset: int) -> None:
    """Fold one tile T = ||s - c||^2 - 2 (x - c).(s - c) (rows, columns; float32, unit column stride)
    into ``running`` (float32 minima, int64 indices, float32 (S, rows) contiguous sums) in place.

    ``sorted_scales``: 1 / (2 sigma^2) ascending, float32; ``sigma_rows``: the row of the sums each
    belongs to (int64). The tile holds D = max(T + ||x - c||^2, 0) afterwards.
    """
    _fold(library().rows, False, running, tile, query_norms, sorted_scales, sigma_rows, index_offset)


def fold_byte_tile(running: partials.BankPartial, tile: torch.Tensor, query_norms: torch.Tensor,
                   sorted_scales: torch.Tensor, sigma_rows: torch.Tensor, index_offset: int) -> None:
    """``fold_tile`` for 8-bit data's exact distances (ganbench.scoring.byte_distances): the int32 tile
    holds E - ||a'||^2 = ||b'||^2 - 2 a'.b' (left unchanged), ``query_norms`` ||a'||^2 (int32), the running
    minima are E's (float64, exact integers) and ``sorted_scales`` 1 / (2 sigma^2 255^2)."""
    _fold(library().byte_rows, True, running, tile, query_norms, sorted_scales, sigma_rows, index_offset)


def fold_digit_tile(running: partials.BankPartial, products: torch.Tensor, column_terms: torch.Tensor,
                    query_norms: torch.Tensor, sorted_scales: torch.Tensor, sigma_rows: torch.Tensor,
                    index_offset: int) -> None:
    """``fold_tile`` for digit products (ganbench.scoring.digit_distances): ``products`` (k, rows, columns)
    int32 holds a'.q_d for each digit d (left unchanged; each digit's tile with unit column stride), the
    distances are E = ||a'||^2 + ``column_terms`` - 2 sum_d 256^-d P_d (``query_norms`` ||a'||^2 and
    ``column_terms`` ||T'||^2 / B^2, float64), the running minima are E's (float64) and ``sorted_scales``
    1 / (2 sigma^2 255^2)."""
    digits, rows, columns = products.shape
    sums = running.shifted_sums
    expected = ((products, torch.int32), (column_terms, torch.float64), (query_norms, torch.float64),
                (running.min_sq_distance, torch.float64), (running.nearest_index, torch.int64), (sums, torch.float32),
                (sorted_scales, torch.float32), (sigma_rows, torch.int64))
    _require_cpu("the fused digit pass", *expected)
    if (products.stride(2) != 1 or not column_terms.is_contiguous() or len(column_terms) < columns
            or not _state_fits(running, query_norms, sorted_scales, sigma_rows, rows)):
        raise ValueError("the fused digit pass needs tiles with unit column stride and contiguous state of its rows")
    _require_sigma_rows("the fused digit pass", sigma_rows, len(sorted_scales))
    if not digits or not rows or not columns:
        return
    failed = library().digit_rows(_address(products), products.stride(0), products.stride(1), rows, columns, digits,
                                  _address(column_terms), _address(query_norms), _address(running.min_sq_distance),
                                  _address(running.nearest_index), index_offset, _address(sums), sums.stride(0),
                                  _address(sorted_scales), _address(sigma_rows), len(sorted_scales),
                                  partials.NEGLIGIBLE_EXPONENT, torch.get_num_threads())
    if failed:
        raise MemoryError("ganbench: the fused CPU pass could not allocate its row buffers")


def drift_and_group_minima(lower: torch.Tensor, drift: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """k-means' bounds less each centroid's drift, in place (one IEEE float32 subtraction each: the bits of
    ``lower.sub_(drift)``), and each group's smallest new bound per row, (rows, groups) float32, equal to
    NumPy's ``minimum.reduceat`` over the group columns (the sign of a zero minimum aside: k-means compares
    with <=): both in one pass (ganbench.paper.kmeans_bounds). ``edges``: int64, each group's first column,
    then the number of columns."""
    _require_cpu("the drift pass", (lower, torch.float32), (drift, torch.float32), (edges, torch.int64))
    rows, columns = lower.shape
    drift, edges = drift.contiguous(), edges.contiguous()
    overlapping = rows > 1 and lower.stride(0) < columns
    if (lower.stride(1) != 1 or overlapping or len(drift) != columns or len(edges) < 2 or int(edges[0]) != 0
            or int(edges[-1]) != columns or not bool((edges[1:] > edges[:-1]).all())):
        raise ValueError("the drift pass needs unit column stride, a drift per column and increasing group edges")
    minima = torch.empty((rows, len(edges) - 1), dtype=torch.float32)
    if rows and library().drift_minima(_address(lower), lower.stride(0), rows, _address(drift), _address(edges),
                                       len(edges) - 1, _address(minima), torch.get_num_threads()):
        raise MemoryError("ganbench: the fused CPU pass could not allocate its row buffers")
    return minima


def near_candidates(tile: torch.Tensor, query_norms: torch.Tensor, kth: torch.Tensor, margins: torch.Tensor,
                    k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Exact top-k's candidate (row, column) pairs of one float32 tile T (``neighbours._candidates``' rule),
    in row-major order; None when a row has more than ``CANDIDATES_PER_ROW`` (many near-ties) or k is larger
    than the library keeps, and the caller applies the rule itself. Either way the tile holds
    D = max(T + ||x - c||^2, 0) afterwards. ``kth`` and ``margins`` are float64, one per row."""
    _require_cpu("near_candidates", (tile, torch.float32), (query_norms, torch.float32), (kth, torch.float64),
                 (margins, torch.float64))
    kth, margins, query_norms = kth.contiguous(), margins.contiguous(), query_norms.contiguous()
    if min(len(query_norms), len(margins)) < len(tile):
        raise ValueError("near_candidates needs a value per row")
    return _find_candidates(library().near_candidates, tile, kth, _address(query_norms), _address(kth),
                            _address(margins), k)


def near_byte_candidates(tile: torch.Tensor, kth: torch.Tensor, relative: float,
                         k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``near_candidates`` for 8-bit data's exact distances: an int32 tile of E = 255^2 D_bytes (left
    unchanged) and the rule of ``neighbours._top_k_bytes`` with the bytes' relative error ``relative``."""
    _require_cpu("near_byte_candidates", (tile, torch.int32), (kth, torch.float64))
    kth = kth.contiguous()
    return _find_candidates(library().near_byte_candidates, tile, kth, _address(kth), relative, k)


def near_rounded_candidates(tile: torch.Tensor, kth: torch.Tensor, slack: torch.Tensor, widen: float,
                            k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``near_candidates`` for queries rounded to bytes against 8-bit data: an int32 tile of E (left
    unchanged) and the rule of ``neighbours._top_k_rounded`` with each row's ``slack`` and ``widen``."""
    _require_cpu("near_rounded_candidates", (tile, torch.int32), (kth, torch.float64), (slack, torch.float64))
    kth, slack = kth.contiguous(), slack.contiguous()
    if len(slack) < len(tile):
        raise ValueError("near_rounded_candidates needs a slack per row")
    return _find_candidates(library().near_rounded_candidates, tile, kth, _address(kth), _address(slack), widen, k)


def _find_candidates(function, tile: torch.Tensor, kth: torch.Tensor,
                     *arguments) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Call a candidates pass with ``arguments`` after the tile's own, and return the (rows, columns) it
    found, row-major as ``torch.nonzero`` orders them; None when a row overflowed its slots or k is more
    than the library keeps."""
    rows, columns = tile.shape
    if tile.stride(1) != 1 or len(kth) < rows or not columns:
        raise ValueError("the candidates pass needs a non-empty tile with unit column stride and a value per row")
    found = torch.empty((rows, CANDIDATES_PER_ROW), dtype=torch.int32)
    counts = torch.empty(rows, dtype=torch.int64)
    if function(_address(tile), tile.stride(0), rows, columns, *arguments, _address(found), CANDIDATES_PER_ROW,
                _address(counts), torch.get_num_threads()):
        return None  # k outside what the library keeps
    if int(counts.max()) > CANDIDATES_PER_ROW:
        return None
    kept = torch.arange(CANDIDATES_PER_ROW)[None, :] < counts[:, None]
    return torch.nonzero(kept, as_tuple=True)[0], found[kept].long()


# Candidates a row may have in one tile before the caller's own pass takes over (near-ties, duplicates).
CANDIDATES_PER_ROW = 64


def _fold(function, exact: bool, running, tile, query_norms, sorted_scales, sigma_rows, index_offset) -> None:
    """Check what the library will read and write through raw pointers, then call it (``exact``: the
    byte pass's int32 tiles and float64 minima)."""
    rows, columns = tile.shape
    sums = running.shifted_sums
    expected = ((tile, torch.int32 if exact else torch.float32), (query_norms, tile.dtype if exact else torch.float32),
                (running.min_sq_distance, torch.float64 if exact else torch.float32), (running.nearest_index, torch.int64),
                (sums, torch.float32), (sorted_scales, torch.float32), (sigma_rows, torch.int64))
    _require_cpu("the fused pass", *expected)
    if tile.stride(1) != 1 or not _state_fits(running, query_norms, sorted_scales, sigma_rows, rows):
        raise ValueError("the fused pass needs a tile with unit column stride and contiguous state of its rows")
    _require_sigma_rows("the fused pass", sigma_rows, len(sorted_scales))
    if not rows or not columns:
        return  # nothing to fold (an empty row would look like a minimum of +inf, or INT32_MAX, to the library)
    failed = function(_address(tile), tile.stride(0), rows, columns, _address(query_norms),
                      _address(running.min_sq_distance), _address(running.nearest_index), index_offset,
                      _address(sums), sums.stride(0), _address(sorted_scales),
                      _address(sigma_rows), len(sorted_scales), partials.NEGLIGIBLE_EXPONENT, torch.get_num_threads())
    if failed:
        raise MemoryError("ganbench: the fused CPU pass could not allocate its row buffers")


def _state_fits(running: partials.BankPartial, query_norms: torch.Tensor, sorted_scales: torch.Tensor,
                sigma_rows: torch.Tensor, rows: int) -> bool:
    """Whether the state a pass reads and writes for ``rows`` rows is contiguous and large enough: a query
    norm, running minimum and index per row, one row of sums per sigma, a sums row per sigma named."""
    state = (query_norms, running.min_sq_distance, running.nearest_index, running.shifted_sums, sorted_scales,
             sigma_rows)
    return (all(tensor.is_contiguous() for tensor in state)
            and min(len(query_norms), len(running.min_sq_distance), len(running.nearest_index)) >= rows
            and running.shifted_sums.shape == (len(sorted_scales), rows) and len(sigma_rows) == len(sorted_scales))


def _require_sigma_rows(what: str, sigma_rows: torch.Tensor, sigmas: int) -> None:
    """Each sigma's row of the sums in 0..S-1: the library writes there."""
    if len(sigma_rows) and not bool(((sigma_rows >= 0) & (sigma_rows < sigmas)).all()):
        raise ValueError(f"{what} needs each sigma's row of the sums in 0..S-1")


def _require_cpu(what: str, *expected: tuple[torch.Tensor, torch.dtype]) -> None:
    """Each tensor on the CPU in its dtype: the library reads raw memory, so anything else is refused."""
    for tensor, dtype in expected:
        if tensor.dtype != dtype or tensor.device.type != "cpu":
            raise ValueError(f"{what} needs CPU {dtype} here, got {tensor.device.type} {tensor.dtype}")


def _address(tensor: torch.Tensor) -> int:
    return tensor.data_ptr()


def available() -> bool:
    """Whether the fused pass runs on this machine (compiled, loaded and checked; see the module doc)."""
    return library() is not None


def sum_of_terms(values: np.ndarray, scale: float) -> float:
    """sum_j exp(-values_j * scale) exactly as the fused pass computes it (float32 values and scale)."""
    loaded = _loaded()
    if loaded is None:
        raise RuntimeError("the fused CPU pass is not available on this machine")
    values = np.ascontiguousarray(values, dtype=np.float32)
    return _sum_of_terms_function(loaded)(values.ctypes.data, len(values), scale)


def _sum_of_terms_function(loaded: ctypes.CDLL):
    function = loaded.ganbench_sum_of_terms
    function.restype, function.argtypes = ctypes.c_double, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_float]
    return function


@dataclass(frozen=True)
class Functions:
    """The library's passes: folding float32 tiles and 8-bit data's exact int32 tiles, and top-k's
    candidates in each kind."""

    rows: object
    byte_rows: object
    digit_rows: object
    drift_minima: object
    near_candidates: object
    near_byte_candidates: object
    near_rounded_candidates: object


# One build at a time: a command may start it on a thread (``build_in_background``) before its first tile.
# Not reentrant: nothing that runs under it (the build, the load checks) may call ``library`` or
# ``available``; the checks call the raw ctypes functions.
_BUILD_LOCK = threading.Lock()


def library() -> Functions | None:
    """The checked passes, or None (announced once) when they cannot be had; waits for a build under way."""
    with _BUILD_LOCK:
        return _library()


def build_in_background() -> None:
    """Compile, load and check the library on a thread, so that a command's first tile does not wait for
    the compiler (about 1.2 s of g++ on this project's 2-core CPU when the cache has no build for this
    source, compiler and CPU): ``library`` then finds it built, or waits for the rest."""
    # A daemon: a command that ends first does not wait for the compiler (``_stop_compilers`` stops it).
    thread = threading.Thread(target=library, name="ganbench-fused-rows-build", daemon=True)
    _BACKGROUND.append(thread)
    thread.start()


# Threads of ``build_in_background``, joined at exit once their compiler is stopped (``_stop_compilers``).
_BACKGROUND: list[threading.Thread] = []
EXIT_WAIT_SECONDS = 30.0


@functools.cache
def _library() -> Functions | None:
    loaded = _loaded()
    if loaded is None:
        return None
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    functions = Functions(loaded.ganbench_fused_rows, loaded.ganbench_fused_byte_rows,
                          loaded.ganbench_fused_digit_rows, loaded.ganbench_drift_and_group_minima,
                          loaded.ganbench_near_candidates,
                          loaded.ganbench_near_byte_candidates, loaded.ganbench_near_rounded_candidates)
    for function in (functions.rows, functions.byte_rows):
        function.restype = ctypes.c_int
        function.argtypes = [pointer, size, size, size, pointer, pointer, pointer, size, pointer, size, pointer,
                             pointer, size, ctypes.c_float, ctypes.c_int]
    functions.digit_rows.restype = ctypes.c_int
    functions.digit_rows.argtypes = [pointer, size, size, size, size, size, pointer, pointer, pointer, pointer, size,
                                     pointer, size, pointer, pointer, size, ctypes.c_float, ctypes.c_int]
    functions.drift_minima.restype = ctypes.c_int
    functions.drift_minima.argtypes = [pointer, size, size, pointer, pointer, size, pointer, ctypes.c_int]
    functions.near_candidates.restype = ctypes.c_int
    functions.near_candidates.argtypes = [pointer, size, size, size, pointer, pointer, pointer, ctypes.c_int, pointer,
                                          size, pointer, ctypes.c_int]
    functions.near_byte_candidates.restype = ctypes.c_int
    functions.near_byte_candidates.argtypes = [pointer, size, size, size, pointer, ctypes.c_double, ctypes.c_int,
                                               pointer, size, pointer, ctypes.c_int]
    functions.near_rounded_candidates.restype = ctypes.c_int
    functions.near_rounded_candidates.argtypes = [pointer, size, size, size, pointer, pointer, ctypes.c_double,
                                                  ctypes.c_int, pointer, size, pointer, ctypes.c_int]
    if not (_agrees_with_float64(functions.rows) and _bytes_agree_with_integers(functions.byte_rows)
            and _digits_agree_with_float64(functions.digit_rows)
            and _drift_minima_agree(functions.drift_minima)
            and _candidates_agree(functions.near_candidates)
            and _byte_candidates_agree(functions.near_byte_candidates)
            and _rounded_candidates_agree(functions.near_rounded_candidates)):
        _announce("ganbench: the fused CPU pass built here disagrees with float64 arithmetic on its check; "
                  f"the CPU float32 path runs its eager torch passes instead{FALLBACK}")
        return None
    return functions


FALLBACK = " (same results within the bound, slower)"


@functools.cache
def _loaded() -> ctypes.CDLL | None:
    if os.environ.get(DISABLE_VARIABLE, "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        given = os.environ.get("CXX", "").strip()
        problem = f"CXX={given} names no compiler found on this machine" if given else "no C++ compiler found"
        _announce(f"ganbench: {problem} (set CXX, or install g++); the CPU float32 path runs its "
                  f"eager torch passes instead{FALLBACK}")
        return None
    try:
        path = _compiled(compiler)
        try:
            return ctypes.CDLL(str(path))
        except OSError:  # a damaged cache entry: compiled again, once
            path.unlink(missing_ok=True)
            return ctypes.CDLL(str(_compiled(compiler)))
    except (OSError, subprocess.SubprocessError) as error:
        if _EXITING.is_set():
            return None  # stopped by ``_stop_compilers``: nothing to tell a process that is ending
        lines = str(error).strip().splitlines()
        detail = lines[-1][:200] if lines else type(error).__name__
        _announce(f"ganbench: compiling the fused CPU pass with {' '.join(compiler)} failed ({detail}); the CPU "
                  f"float32 path runs its eager torch passes instead{FALLBACK}")
        return None


def _compiler() -> list[str] | None:
    """The compiler's command: ``$CXX`` (which may carry arguments, as "ccache g++"), else g++ or c++."""
    given = os.environ.get("CXX", "")
    try:
        commands = [shlex.split(given)] if given.strip() else [["g++"], ["c++"]]
    except ValueError:  # unbalanced quotes: not a command line; as one word it names no compiler either
        commands = [[given]]
    for command in commands:
        found = shutil.which(command[0])
        if found:
            return [found, *command[1:]]
    return None


def _compiled(compiler: list[str]) -> Path:
    """The shared library for this source, compiler, flags and CPU, compiled once into the cache.

    Without OpenMP (a compiler that lacks it) the pass runs on one thread."""
    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\n".join([SOURCE.read_text(), *compiler, version, *FLAGS, _cpu_identity()]).encode())
    name = f"fused_rows-{key.hexdigest()[:20]}.so"
    from ganbench.data import default_cache_dir  # late: data imports more than scoring needs

    for folder in (default_cache_dir() / "native", Path(tempfile.gettempdir()) / "ganbench-native"):
        path = folder / name
        if path.exists():
            return path
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        except OSError:
            continue  # an unwritable cache: the temporary folder instead
        os.close(handle)
        try:
            for flags in (FLAGS, tuple(flag for flag in FLAGS if flag != "-fopenmp")):
                status, errors = _run_compiler([*compiler, *flags, "-o", temporary, str(SOURCE)], temporary)
                # Only a compiler that refused the flags is tried without OpenMP: one stopped by a signal
                # (Ctrl-C reaches it too) would otherwise leave a one-thread build in the cache for good.
                if status <= 0:
                    break
            if status != 0:
                raise OSError(errors.strip() or f"{compiler[0]} exited with {status}")
            os.replace(temporary, path)  # atomic: a concurrent process loads a whole library or compiles its own
        finally:
            Path(temporary).unlink(missing_ok=True)
        return path
    raise OSError("no writable folder for the compiled library (GANBENCH_CACHE, the temporary folder)")


# The compiler running on each thread, and its output file, while it runs (``_stop_compilers``).
_COMPILING: dict[int, tuple[subprocess.Popen, str]] = {}


def _run_compiler(command: list[str], output: str) -> tuple[int, str]:
    """One compile: its exit status (negative when a signal stopped it) and its error output."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _COMPILING[threading.get_ident()] = (process, output)
    try:
        _, errors = process.communicate(timeout=COMPILE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    finally:
        _COMPILING.pop(threading.get_ident(), None)
    return process.returncode, errors


@atexit.register
def _stop_compilers() -> None:
    """A build still running when the process ends (on ``build_in_background``'s thread, behind a command
    that finished or failed first) is stopped and its partial output removed: the process exits at once
    and leaves nothing in the cache. The thread is then joined: loading a cached build runs its check in
    torch, and a process that exits under it aborts in torch's thread pool ("terminate called without
    an active exception", status 134, in 2 of 30 runs that exited 0-90 ms after starting it)."""
    _EXITING.set()
    for process, output in list(_COMPILING.values()):
        process.kill()
        Path(output).unlink(missing_ok=True)
    for thread in _BACKGROUND:
        thread.join(timeout=EXIT_WAIT_SECONDS)


_EXITING = threading.Event()  # set at exit: a build failing because its compiler was stopped says nothing


def _cpu_identity() -> str:
    """The CPU's model and instruction-set flags: -march=native code is only reused on a CPU like it."""
    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _agrees_with_float64(function) -> bool:
    """Run the compiled pass on two small tiles (rows and columns that fill no vector evenly, a tie,
    a zero distance, sigmas out of order, a minimum that moves) against float64 arithmetic."""
    generator = np.random.default_rng(0)
    rows, columns, grid = 37, 53, np.array([0.3, 2.0, 0.05, 1.0])
    scales = partials.half_inverse_variances(grid, torch.zeros(1))[:, 0]
    order = torch.argsort(scales)
    sorted_scales = scales[order].contiguous()  # held here: the library reads it through a pointer
    state = partials.BankPartial(torch.full((rows,), float("inf")), torch.zeros(rows, dtype=torch.int64),
                                 torch.zeros(len(grid), rows))
    tiles = [generator.uniform(-1.0, 2.0, (rows, columns)).astype(np.float32) for _ in range(2)]
    norms = generator.uniform(1.0, 3.0, rows).astype(np.float32)
    tiles[0][0, 7] = tiles[0][0, 40] = -norms[0]  # a tie at distance 0: the first index wins
    tiles[0][2, 3] = -norms[2] - 1.0                # below 0 by rounding: clamped to 0
    tiles[1][1] -= 1.0                           # row 1's minimum moves in the second tile
    tiles[1][0, 11] = -norms[0]                  # row 0 ties across tiles: the earlier tile's index stays
    distances = [np.maximum(tile + norms[:, None], np.float32(0.0)) for tile in tiles]
    for index, tile in enumerate(tiles):
        status = function(_address(torch.from_numpy(tile)), columns, rows, columns,
                          _address(torch.from_numpy(norms)), _address(state.min_sq_distance),
                          _address(state.nearest_index), index * columns, _address(state.shifted_sums), rows,
                          _address(sorted_scales), _address(order), len(grid),
                          partials.NEGLIGIBLE_EXPONENT, 2)
        if status != 0:
            return False
    both = np.concatenate(distances, axis=1).astype(np.float64)
    if not (np.array_equal(tiles[0], distances[0]) and np.array_equal(both.min(axis=1), state.min_sq_distance.numpy())
            and np.array_equal(both.argmin(axis=1), state.nearest_index.numpy())):
        return False
    if not _sums_match(state.shifted_sums, both, scales):
        return False
    # Each exponential over twice the range the pass uses ([-40, 0]), within 2^-30 of float64's (the pass's
    # own error is below 1e-12): rounded to float32 it is then within float32's half ulp (1 + 2^-6).
    function = _sum_of_terms_function(_loaded())
    exponents = np.linspace(0.0, 80.0, 1601, dtype=np.float32)
    terms = np.array([function(exponents[i:i + 1].ctypes.data, 1, 1.0) for i in range(len(exponents))])
    return bool(np.all(np.abs(terms / np.exp(-exponents.astype(np.float64)) - 1.0) <= 2.0**-30))


def _bytes_agree_with_integers(function) -> bool:
    """The byte pass on two small int32 tiles (a tie, a minimum that moves, values past 2^24, where the
    conversion to float32 rounds) against int64 and float64 arithmetic."""
    generator = np.random.default_rng(1)
    rows, columns, grid = 29, 41, np.array([2.0, 0.4, 9.0])
    scales = partials.half_inverse_variances(grid, torch.zeros(1), 1.0 / 255**2)[:, 0]
    order = torch.argsort(scales)
    sorted_scales = scales[order].contiguous()  # held here: the library reads it through a pointer
    norms = generator.integers(0, 2**20, rows).astype(np.int32)
    tiles = [generator.integers(-2**20, 2**25, (rows, columns)).astype(np.int32) for _ in range(2)]
    tiles[0][0, 5] = tiles[0][0, 30] = -2**21  # a tie below every other value: the first index wins
    tiles[1][1] -= 2**21                                          # row 1's minimum moves in the second tile
    tiles[1][0, 3] = -2**21                                       # row 0 ties across tiles: the earlier index stays
    state = partials.BankPartial(torch.full((rows,), float("inf"), dtype=torch.float64),
                                 torch.zeros(rows, dtype=torch.int64), torch.zeros(len(grid), rows))
    for index, tile in enumerate(tiles):
        if function(tile.ctypes.data, columns, rows, columns, norms.ctypes.data, _address(state.min_sq_distance),
                    _address(state.nearest_index), index * columns, _address(state.shifted_sums), rows,
                    _address(sorted_scales), _address(order), len(grid), partials.NEGLIGIBLE_EXPONENT, 2):
            return False
    exact = np.concatenate(tiles, axis=1).astype(np.int64) + norms[:, None]
    if not (np.array_equal(exact.min(axis=1), state.min_sq_distance.numpy())
            and np.array_equal(exact.argmin(axis=1), state.nearest_index.numpy())):
        return False
    return _sums_match(state.shifted_sums, exact, scales)


def _digits_agree_with_float64(function) -> bool:
    """The digit pass on two small tiles of three digits' products (a tie, a minimum that moves, products
    near int32's range, columns that fill no vector evenly) against the same float64 arithmetic in NumPy."""
    generator = np.random.default_rng(5)
    digits, rows, columns, grid = 3, 23, 37, np.array([1.5, 0.3, 6.0])
    scales = partials.half_inverse_variances(grid, torch.zeros(1), 1.0 / 255**2)[:, 0]
    order = torch.argsort(scales)
    sorted_scales = scales[order].contiguous()  # held here: the library reads it through a pointer
    query_norms = generator.integers(0, 2**24, rows).astype(np.float64)
    # A row far from 0 whose terms count at the wider sigmas: float32 holds its values only to 2^10, so a pass
    # that rounds E and its minimum to float32 before the subtraction, not after, is off by many ulps.
    query_norms[4] = 2.0**33 + 0.5
    tiles, terms = [], []
    for _ in range(2):
        products = generator.integers(-2**31 + 1, 2**31 - 1, (digits, rows, columns)).astype(np.int32)
        products[0] = generator.integers(-2**20, 2**20, (rows, columns))
        tiles.append(products)
        terms.append(generator.integers(2**22, 2**23, columns).astype(np.float64) + generator.uniform(0, 1, columns))
    tiles[0][:, 0, 9] = tiles[0][:, 0, 30] = [2**30, -5, 17]   # a tie below every other value: the first index wins
    tiles[1][0, 1] += 2**21                                    # row 1's minimum moves in the second tile
    tiles[1][:, 0, 2] = [2**30, -5, 17]                        # row 0 ties across tiles: the earlier index stays
    terms[1][2] = terms[0][30] = terms[0][9]
    state = partials.BankPartial(torch.full((rows,), float("inf"), dtype=torch.float64),
                                 torch.zeros(rows, dtype=torch.int64), torch.zeros(len(grid), rows))
    for index, (products, column_terms) in enumerate(zip(tiles, terms)):
        if function(products.ctypes.data, rows * columns, columns, rows, columns, digits, column_terms.ctypes.data,
                    query_norms.ctypes.data, _address(state.min_sq_distance), _address(state.nearest_index),
                    index * columns, _address(state.shifted_sums), rows, _address(sorted_scales), _address(order),
                    len(grid), partials.NEGLIGIBLE_EXPONENT, 2):
            return False
    exact = np.concatenate([(query_norms[:, None] + column_terms[None, :])
                            - 2.0 * (products[0] + products[1] / 256.0 + products[2] / 65536.0)
                            for products, column_terms in zip(tiles, terms)], axis=1)
    if not (np.array_equal(exact.min(axis=1), state.min_sq_distance.numpy())
            and np.array_equal(exact.argmin(axis=1), state.nearest_index.numpy())):
        return False
    return _sums_match(state.shifted_sums, exact, scales)


def _drift_minima_agree(function) -> bool:
    """The drift pass on a small bounds matrix (infinite bounds, groups of 1 to 40 columns that fill no vector
    evenly) against torch's subtraction and NumPy's reduceat: the same bits."""
    generator = np.random.default_rng(6)
    rows, edges = 11, np.array([0, 1, 17, 18, 58, 75], dtype=np.int64)
    lower = generator.uniform(-1.0, 9.0, (rows, edges[-1])).astype(np.float32)
    lower[2, 5] = lower[7, 60] = np.inf                     # own centroids: their bounds stay infinite
    drift = generator.uniform(0.0, 2.0, edges[-1]).astype(np.float32)
    expected = lower - drift
    minima = np.zeros((rows, len(edges) - 1), dtype=np.float32)
    if function(lower.ctypes.data, edges[-1], rows, drift.ctypes.data, edges.ctypes.data, len(edges) - 1,
                minima.ctypes.data, 2):
        return False
    return (np.array_equal(lower, expected) and
            np.array_equal(minima, np.minimum.reduceat(expected, edges[:-1], axis=1)))


def _sums_match(sums: torch.Tensor, distances: np.ndarray, scales: torch.Tensor) -> bool:
    """Shifted sums (S, rows) against float64 ones from the exact ``distances`` (rows, columns), within the
    derived rounding of a sum of that many terms (exponents, exponentials, additions, the rescaling): a
    wrong index, tail lane or rescaling is off by whole terms."""
    from ganbench.scoring import bounds  # late: bounds reads the bank module, not needed to score

    shifted = (distances - distances.min(axis=1, keepdims=True)).astype(np.float64)
    expected = np.exp(-shifted[None] * scales.double().numpy()[:, None, None]).sum(axis=2)
    tolerance = bounds.sum_coefficient(distances.shape[1]) * bounds.UNIT_ROUNDOFF["float32"]
    return bool(np.allclose(sums.double().numpy(), expected, rtol=tolerance, atol=0.0))


def _candidates_agree(function) -> bool:
    """near_candidates on a small tile (a tie at the k-th value, a row with k exact copies kept, a row
    that has seen nothing yet) against the same rule in float64 and NumPy."""
    generator = np.random.default_rng(2)
    rows, columns, k = 23, 37, 2
    tile = generator.uniform(-1.0, 2.0, (rows, columns)).astype(np.float32)
    norms = generator.uniform(1.0, 3.0, rows).astype(np.float32)
    tile[0, [4, 9, 20]] = tile[0].min()                  # three equal smallest values
    kth = generator.uniform(0.5, 4.0, rows)
    kth[1], kth[2] = 0.0, np.inf                         # k copies kept; nothing kept yet
    margins = generator.uniform(0.0, 0.3, rows)
    found = np.zeros((rows, 64), dtype=np.int32)
    counts = np.zeros(rows, dtype=np.int64)
    distances = np.maximum(tile + norms[:, None], np.float32(0.0))
    if function(tile.ctypes.data, columns, rows, columns, norms.ctypes.data, kth.ctypes.data, margins.ctypes.data, k,
                found.ctypes.data, 64, counts.ctypes.data, 2) or not np.array_equal(tile, distances):
        return False
    block_kth = np.sort(distances, axis=1)[:, k - 1].astype(np.float64)
    limit = np.nextafter(np.minimum(kth + margins, block_kth + 2 * margins).astype(np.float32), np.float32(np.inf))
    expected = (distances <= limit[:, None]) & (kth > 0)[:, None]
    return _same_columns(found, counts, expected)


def _byte_candidates_agree(function) -> bool:
    """near_byte_candidates on a small int32 tile (a tie at the k-th value, k copies kept, nothing kept)
    against the same rule in float64 and NumPy."""
    generator = np.random.default_rng(3)
    rows, columns, k, relative = 19, 45, 2, 3e-5
    tile = generator.integers(0, 2**24, (rows, columns)).astype(np.int32)
    tile[0, [3, 8, 30]] = tile[0].min()
    kth = generator.uniform(0.0, 300.0, rows)
    kth[1], kth[2] = 0.0, np.inf
    block_kth = np.sort(tile, axis=1)[:, k - 1].astype(np.float64)
    limit = np.minimum(kth / (1 - relative), block_kth / 255**2 * (1 + relative) / (1 - relative))
    return _integer_rule_agrees(lambda found, counts: function(
        tile.ctypes.data, columns, rows, columns, kth.ctypes.data, relative, k, found, 64, counts, 2), tile, kth, limit)


def _rounded_candidates_agree(function) -> bool:
    """near_rounded_candidates on a small int32 tile (a tie at the k-th value, k copies kept, nothing kept,
    a row with no slack) against the same rule in float64 and NumPy. The distances are close together
    (root distances 3.9 to 4.3 in D's units) and the running k-th among them, so that every slack term
    decides some candidates (a third of them for this seed)."""
    generator = np.random.default_rng(4)
    rows, columns, k, widen = 19, 45, 2, 1 + 2e-13
    tile = generator.integers(1_000_000, 1_200_000, (rows, columns)).astype(np.int32)
    tile[0, [3, 8, 30]] = tile[0].min()
    kth = generator.uniform(14.5, 17.5, rows)
    kth[1], kth[2] = 0.0, np.inf
    slack = generator.uniform(0.0, 0.05, rows)
    slack[3] = 0.0
    block_kth = np.sort(tile, axis=1)[:, k - 1].astype(np.float64)
    root = np.minimum(np.sqrt(kth) * widen + slack, (np.sqrt(block_kth) / 255 + slack) * widen + slack)
    return _integer_rule_agrees(lambda found, counts: function(
        tile.ctypes.data, columns, rows, columns, kth.ctypes.data, slack.ctypes.data, widen, k, found, 64, counts, 2),
        tile, kth, root * root)


def _integer_rule_agrees(call, tile: np.ndarray, kth: np.ndarray, limit: np.ndarray) -> bool:
    """A candidates pass over an int32 tile of E (``call(found, counts)`` with the two output addresses)
    against its rule's per-row limit in units of D: each E under the limit times 255^2, raised by 2^-40
    and floored, unless the row's kth is 0 (k exact copies kept)."""
    found = np.zeros((len(tile), 64), dtype=np.int32)
    counts = np.zeros(len(tile), dtype=np.int64)
    if call(found.ctypes.data, counts.ctypes.data):
        return False
    limit_e = np.minimum(np.floor(limit * (255**2 * (1 + 2.0**-40))), 2**31 - 1)
    expected = (tile <= limit_e[:, None]) & (kth > 0)[:, None]
    return _same_columns(found, counts, expected)


def _same_columns(found: np.ndarray, counts: np.ndarray, expected: np.ndarray) -> bool:
    """Each row's candidates as found by the library are the columns ``expected`` marks, in order."""
    return all(np.array_equal(found[row, :counts[row]], np.flatnonzero(expected[row])) for row in range(len(expected)))
