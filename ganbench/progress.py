"""Every progress bar and one-time notice of ganbench: on stderr (stdout stays clean for --json).

tqdm redraws its bar with carriage returns, which a log file or a CI console keeps as one
ever-growing line; when stderr is not a terminal the bars are off and only the per-step
lines (``progress_line``) are written, one per line.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, *, enabled: bool = True, **options) -> tqdm:
    """A tqdm bar on stderr; off when ``enabled`` is false or stderr is not a terminal."""
    # tqdm's disable=None means: off when the stream is not a TTY.
    return tqdm(iterable, file=sys.stderr, disable=None if enabled else True, **options)


def progress_line(text: str) -> None:
    """One line on stderr that does not tear a bar being drawn."""
    tqdm.write(text, file=sys.stderr)


_ANNOUNCED: set[str] = set()


def announce_once(message: str) -> None:
    """One line on stderr, once per process (a streamed bank would otherwise repeat it for every chunk). Under
    torch.distributed a rank other than 0 names itself ("ganbench (rank 1): ..."): each rank scores its own share
    of the bank, so a notice may come from one rank alone."""
    if message not in _ANNOUNCED:
        _ANNOUNCED.add(message)
        rank = _rank()
        if rank and message.startswith("ganbench:"):
            message = f"ganbench (rank {rank}):" + message[len("ganbench:"):]
        progress_line(message)


def _rank() -> int:
    """This process's torch.distributed rank; 0 when not distributed (or torch not loaded)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return 0
    return distributed.get_rank()
