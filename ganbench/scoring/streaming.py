"""Score against a bank of any size, chunk by chunk, and across torch.distributed ranks.

Each chunk (and each rank's share of the bank) gives a ``ParzenPass``; turning it back into
shifted sums and merging with ``partials.merge`` in float64 is exact up to rounding, so a
streamed or distributed score equals the one-shot score to float64 rounding.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import re
import signal
import threading
import time

import numpy as np
import torch

from ganbench.defaults import CHUNK_ROWS, DEFAULT_BACKEND
from ganbench.errors import GanbenchError
from ganbench.progress import progress_bar
from ganbench.scoring import partials, parzen
from ganbench.scoring.banks import Bank, open_bank
from ganbench.scoring.inputs import (
    SCALE_ROWS,
    as_data,
    as_matrix,
    as_sigmas,
    check_same_magnitudes,
    check_same_scale,
    data_scale,
    is_whole_number,
)

# Rows of each shard of a bank that holds 8-bit and float shards, compared with each other: a folder of a uint8
# shard and a shard of 0-255 floats passed a look at the bank's first rows, the float shard scoring nothing.
SHARD_SCALE_ROWS = 1000


def to_partial(result: parzen.ParzenPass, sigmas, index_offset: int) -> partials.BankPartial:
    """A backend's result back into shifted sums, in [1, chunk size + 1] (from their logs: lse + min / (2 sigma^2)
    would cancel at small sigma)."""
    return partials.BankPartial(result.min_sq_distance, result.nearest_index + index_offset,
                                np.exp(result.log_shifted_sums))


def stream_pass(x, bank: Bank, sigmas, *, rows: range | None = None, chunk_rows: int = CHUNK_ROWS,
                progress: bool = True, **backend_options) -> partials.BankPartial | None:
    """Merge the partials of every chunk of ``bank`` (or of the rows in ``rows``) in bank order.

    Only those rows are read. None when ``rows`` is empty (a rank with nothing to score).
    """
    merged = None
    rows = rows if rows is not None else range(len(bank))
    # A bar only when there is more than one chunk to wait for.
    bar = progress_bar(total=len(rows), unit="samples", unit_scale=True, desc="bank",
                       enabled=progress and len(rows) > chunk_rows)
    for first, chunk in bank.chunks(chunk_rows, rows.start, rows.stop):
        result = parzen.parzen_pass(x, chunk, sigmas, **backend_options)
        piece = to_partial(result, sigmas, first)
        merged = piece if merged is None else partials.merge(merged, piece, sigmas)
        bar.update(len(chunk))
    bar.close()
    return merged


def log_likelihood(x, bank, sigmas, *, chunk_rows: int = CHUNK_ROWS, progress: bool = True,
                   **backend_options) -> np.ndarray:
    """``parzen.log_likelihood`` for a bank given as an array, a .npy file or a folder of shards.

    The bank and ``x`` alike become data by ``inputs.as_data``, as the command reads its files (uint8
    divided by 255), so 8-bit images score on one scale whichever way they come; ``parzen.log_likelihood``
    scores arrays as given. Under torch.distributed (``torchrun``), each rank scores its share of the
    bank and the partials are combined with collectives; every rank returns the same answer, and ranks
    given different inputs are an error.
    """
    grid = as_sigmas(sigmas)
    if not (is_whole_number(chunk_rows) and chunk_rows >= 1):
        raise GanbenchError(f"chunk rows must be a positive integer, got {chunk_rows!r}")
    bank = bank if isinstance(bank, Bank) else open_bank(bank)
    chunk_rows = min(int(chunk_rows), len(bank))  # a chunk past the bank is the bank (2^63 overflowed the ranks' int64)
    # The dtype as_data reads (a list of uint8 rows, or a DataFrame, has no .dtype of its own).
    points_were_bytes = data_scale(x.dtype if isinstance(x, torch.Tensor) else np.asarray(x).dtype) != 1.0
    queries = as_matrix("x (the points scored)", as_data("x (the points scored)", x), dimension=bank.dimension)
    if bank.value_range is None:
        # Refused where one side is 8-bit (divided by 255 as read) and the other not, and they are on two scales:
        # 8-bit points against a bank of 0-255 floats scored -1.97e7 nats a point, and a bank of a uint8 shard
        # beside a shard of 0-255 floats scored the float one as nothing. Float data are scored as given, outliers
        # included, as parzen.log_likelihood scores them (evaluate and the command check their range and scale).
        check_same_magnitudes(bank.mixed_shard_magnitudes(SHARD_SCALE_ROWS))
        if points_were_bytes != bank.holds_bytes():
            check_same_scale({"x (the points scored)": queries, "the bank": bank.head(SCALE_ROWS)})
    if is_distributed():
        same_inputs_on_every_rank(queries, bank, grid, chunk_rows, backend_options)
        share = rank_rows(len(bank), chunk_rows)
        local = stream_pass(queries, bank, grid, rows=share, chunk_rows=chunk_rows,
                            progress=progress and torch.distributed.get_rank() == 0, **backend_options)
        merged = all_merge(local, grid, len(queries))
    else:
        merged = stream_pass(queries, bank, grid, chunk_rows=chunk_rows, progress=progress, **backend_options)
    return parzen.to_log_likelihood(partials.log_sum_exp(merged, grid), grid, len(bank), bank.dimension)


# ---- torch.distributed ---------------------------------------------------------------------------

# The wait of the monitored barriers (gloo), as the process group's: without it monitored_barrier waits 30 minutes
# for a rank that stalls (stopped, swapping) instead of --timeout.
_BARRIER_TIMEOUT = {"seconds": None}


def barrier() -> None:
    """On gloo, every rank here, or a one-line error naming the ones that are not, within the group's timeout
    (NCCL has no monitored barrier: its collectives time out by themselves)."""
    if torch.distributed.get_backend() != "gloo":
        return
    seconds = _BARRIER_TIMEOUT["seconds"]
    timeout = None if seconds is None else datetime.timedelta(seconds=seconds)
    collective(lambda _: torch.distributed.monitored_barrier(timeout=timeout, wait_all_ranks=True), None)


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def init_from_environment(timeout_seconds: float = 300.0, *, device=None, backend: str = DEFAULT_BACKEND) -> bool:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1).

    ``device`` and ``backend`` are the scorer's options: they decide where this rank scores,
    and so whether the collectives run on gloo or NCCL (``process_group_backend``).
    Returns False when not launched by torchrun. A rank that never starts makes the others
    fail after ``timeout_seconds`` with a clear error instead of hanging.
    """
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise GanbenchError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']!r}, not a number of processes; launch with "
                            "torchrun, or unset it") from None
    if world_size <= 1 or is_distributed():
        return is_distributed()
    group_backend = process_group_backend(parzen.scoring_device(device, backend), backend)
    if group_backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        with stoppable_wait():
            torch.distributed.init_process_group(group_backend, timeout=datetime.timedelta(seconds=timeout_seconds))
        _BARRIER_TIMEOUT["seconds"] = timeout_seconds
    except (RuntimeError, ValueError) as error:
        raise GanbenchError(f"rank {os.environ.get('RANK', '?')} of {world_size} could not join the process group "
                            f"within {timeout_seconds:g} s ({str(error).splitlines()[0][:120]}); check that every "
                            "rank started and MASTER_ADDR/MASTER_PORT are reachable") from None
    return True


def process_group_backend(device: torch.device, scorer_backend: str) -> str:
    """NCCL when this rank scores on a CUDA device, gloo otherwise: a ``--device cpu`` run on a
    machine with GPUs keeps its partials on the CPU, where NCCL cannot reduce them, and the
    reference backend computes on the CPU whatever the device."""
    return "nccl" if device.type == "cuda" and scorer_backend != "reference" else "gloo"


def rank_rows(count: int, chunk_rows: int) -> range:
    """This rank's share of the bank rows (``share_rows`` for this process's rank and world size)."""
    return share_rows(count, chunk_rows, torch.distributed.get_rank(), torch.distributed.get_world_size())


def share_rows(count: int, chunk_rows: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous share of ``count`` bank rows among ``world`` ranks (in order, so
    indices stay global).

    Shares are whole chunks of the global row order (``Bank.chunks``), so every chunk is
    scored exactly as a single process scores it and only the float64 merge order differs. A bank
    of fewer chunks than ranks is cut into ``world`` equal shares instead (each one chunk, scored within
    the same bound): in whole chunks most ranks would have nothing to do (a 40,001-row bank, one chunk of
    the default 65,536 rows, ran on one of two ranks: 8.58 s, 6.52 s in equal shares, docs/performance.md).
    """
    chunks = -(-count // chunk_rows)
    if chunks < world:
        return range(count * rank // world, count * (rank + 1) // world)
    return range(min(count, chunks * rank // world * chunk_rows), min(count, chunks * (rank + 1) // world * chunk_rows))


def same_inputs_on_every_rank(queries: torch.Tensor, bank: Bank, grid, chunk_rows: int,
                              backend_options: dict | None = None) -> None:
    """A one-line error, on every rank, unless all ranks score the same queries against the same bank at the
    same sigmas in the same chunks: a rank given others would merge partials of another problem into a wrong
    answer, or (other sizes) fail inside the collectives. One all-gather of a fingerprint: the sizes, the chunk
    size, and a SHA-256 of the queries' and the sigmas' bytes in order and of the bank's first, middle and last
    rows (each rank reads only its share of the bank, so its shape and these rows stand for it: banks of one
    shape drawn with other seeds differ there). Bytes, not sums: a sum's rounding follows the thread count,
    and sums miss reordered rows or sigmas. The backend and precision join it (``backend_options``; the device
    may differ, one GPU a rank): a rank scoring in other arithmetic merged its share silently, while a saved
    result's tolerance described rank 0's."""
    digest = hashlib.sha256()
    options = backend_options or {}
    digest.update(repr([(name, str(options.get(name))) for name in ("backend", "precision")]).encode())
    digest.update(np.ascontiguousarray(queries.detach().cpu().numpy()).tobytes())
    digest.update(str(queries.dtype).encode())
    digest.update(np.ascontiguousarray(grid, dtype=np.float64).tobytes())
    for row in sorted({0, len(bank) // 2, len(bank) - 1}):
        digest.update(np.ascontiguousarray(bank.rows_unchecked(row, row + 1)).tobytes())
    sizes = np.array([len(queries), queries.shape[1], len(bank), bank.dimension, len(grid), chunk_rows], dtype=np.int64)
    fingerprint = np.concatenate([sizes, np.frombuffer(digest.digest(), dtype=np.int64)])
    device = torch.device("cuda") if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    barrier()  # names a rank that died before this collective instead of waiting for it
    mine = torch.as_tensor(fingerprint, device=device)
    every = [torch.empty_like(mine) for _ in range(torch.distributed.get_world_size())]
    collective(lambda tensor: torch.distributed.all_gather(every, tensor), mine)
    for rank, theirs in enumerate(every):
        if not torch.equal(theirs, every[0]):
            raise GanbenchError(f"rank {rank} was given other inputs than rank 0 (queries, bank, sigmas, chunk size, "
                                "backend or precision); pass every rank the same x, bank, sigmas, chunk_rows and "
                                "backend options: each scores its share of the bank")


def all_merge(local: partials.BankPartial | None, sigmas, n_queries: int) -> partials.BankPartial:
    """Combine every rank's partial: all-reduce the minima, then the rescaled sums; the nearest
    index follows its minimum (the lowest index among equal minima)."""
    scales = partials.half_inverse_variances(sigmas, np.zeros(1))
    device = torch.device("cuda") if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    if local is None:  # a rank with no rows (more ranks than rows)
        local = partials.BankPartial(np.full(n_queries, np.inf), np.zeros(n_queries, dtype=np.int64),
                                     np.zeros((len(scales), n_queries)))
    barrier()  # names a rank that died instead of letting the collective below fail inside gloo
    minimum = torch.as_tensor(local.min_sq_distance, dtype=torch.float64, device=device).clone()
    collective(torch.distributed.all_reduce, minimum, op=torch.distributed.ReduceOp.MIN)
    global_min = minimum.cpu().numpy()
    with np.errstate(invalid="ignore"):
        factor = np.where(np.isfinite(local.min_sq_distance),
                          np.exp(-(local.min_sq_distance - global_min) * scales), 0.0)
    sums = torch.as_tensor(local.shifted_sums * factor, dtype=torch.float64, device=device)
    collective(torch.distributed.all_reduce, sums, op=torch.distributed.ReduceOp.SUM)
    candidate = np.where(local.min_sq_distance == global_min, local.nearest_index, np.iinfo(np.int64).max)
    nearest = torch.as_tensor(candidate, dtype=torch.int64, device=device)
    collective(torch.distributed.all_reduce, nearest, op=torch.distributed.ReduceOp.MIN)
    return partials.BankPartial(global_min, nearest.cpu().numpy(), sums.cpu().numpy())


@contextlib.contextmanager
def stoppable_wait():
    """Ctrl-C or SIGTERM while this rank waits inside torch.distributed (joining the group, a barrier, a
    collective) stops it at once, with the command's one line and exit status (130, 143).

    Python runs its signal handlers between bytecodes only, so a rank blocked in gloo ignored both until its
    timeout (300 s by default) or until torchrun killed it 30 s later, silently. Python's C-level handler still
    writes the signal's number to the wakeup fd at once: a thread reading it ends the process. Nothing has been
    written while a rank waits (results are written after the last collective), so there is nothing to clean.
    Off the main thread (where Python delivers no signals) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def watch() -> None:
        while data := os.read(read_end, 1):
            if data[0] in (signal.SIGINT, signal.SIGTERM):
                stopped = "terminated" if data[0] == signal.SIGTERM else "interrupted"
                os.write(2, f"ganbench: {stopped} while waiting for the other ranks; nothing was written\n".encode())
                os._exit(128 + data[0])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write_end)  # the watcher reads the end of the pipe and returns
        watcher.join()
        os.close(read_end)


def collective(operation, tensor, **options) -> None:
    started = time.monotonic()
    try:
        with stoppable_wait():
            operation(tensor, **options)
    except RuntimeError as error:
        raise GanbenchError(collective_failure(str(error), time.monotonic() - started)) from None


# gloo's monitored barrier names the ranks that did not reach it: "Ranks 1, 3 failed to pass monitoredBarrier in
# 300000 ms", the same words whether they stopped at once or never came; a rank other than the barrier's first
# names the one it lost: "Rank 1 successfully reached monitoredBarrier, but received errors while waiting for
# send/recv from rank 0".
MISSING_RANKS = re.compile(r"Ranks? ([\d, ]+?) failed to pass monitoredBarrier|errors while waiting for send/recv "
                           r"from rank (\d+)")


def collective_failure(text: str, waited: float) -> str:
    """This rank's one line when a collective failed after ``waited`` seconds: whether the ranks a barrier missed
    stopped early (their own lines say why) or never came within --timeout (gloo's text names the timeout in both
    cases: a rank that died at once read as a wait of 300 s), or another rank closed its connection (gloo's text
    named a source file of the build machine, and no rank); else gloo's first line."""
    rank = torch.distributed.get_rank()
    missing, timeout = MISSING_RANKS.search(text), _BARRIER_TIMEOUT["seconds"]
    if missing is None and "Connection closed by peer" in text:  # a rank that exited, unnamed by gloo
        return (f"rank {rank}: another rank stopped (its connection closed); its own error says why, and no result "
                "was written")
    if missing is None:
        return (f"rank {rank}: a collective failed, most likely because another rank died or timed out "
                f"({text.splitlines()[0][:120]}); see that rank's error")
    ranks = missing.group(1) or missing.group(2)
    which = f"rank {ranks}" if "," not in ranks else f"ranks {ranks}"
    if timeout is None or waited < 0.9 * timeout:
        return f"rank {rank}: {which} stopped before the ranks met; its own error says why, and no result was written"
    return (f"rank {rank}: {which} did not reach the ranks' meeting within --timeout {timeout:g} s; check that it "
            "runs (not stopped or swapping), or give a longer --timeout")
