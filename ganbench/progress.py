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
    """One line on stderr, once per process (a streamed bank would otherwise repeat it for every chunk), and
    under torch.distributed on rank 0 only (every rank printed the same notice)."""
    if message not in _ANNOUNCED and not _secondary_rank():
        _ANNOUNCED.add(message)
        progress_line(message)


def _secondary_rank() -> bool:
    """Whether this process is a torch.distributed rank other than 0 (torch not loaded: it is not)."""
    distributed = sys.modules.get("torch.distributed")
    return bool(distributed is not None and distributed.is_available() and distributed.is_initialized()
                and distributed.get_rank() != 0)
