"""Every progress bar of ganbench: on stderr, and only on a terminal.

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
