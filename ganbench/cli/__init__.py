"""The ``ganbench`` command. Results go to stdout (JSON with --json); progress and logs to stderr.

Each command's parser sits beside its handler in a module of this package; ``main`` turns every
``GanbenchError``, and every OSError on a path the user named, into one line on stderr and exit
status 2; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from ganbench import __version__
from ganbench.cli import bench, gan, nn, parzen, table1
from ganbench.errors import GanbenchError
from ganbench.memory import retain_freed_memory

COMMAND_MODULES = (parzen, gan, table1, nn, bench)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" once, and only where there is a default worth showing."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if ("default" in help_text or action.default in (None, False, argparse.SUPPRESS)
                or action.required or not action.option_strings):
            return help_text
        return help_text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganbench", formatter_class=HelpFormatter, description=(
        "Evaluate generative models as the GAN paper (Goodfellow et al. 2014) did, exactly and fast: "
        "Parzen-window log-likelihood with cross-validated sigma, Table 1, memorisation checks."))
    parser.add_argument("--version", action="version", version=f"ganbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parsers(commands, HelpFormatter)
    return parser


def run() -> None:
    """The ``ganbench`` command (console script and ``python -m ganbench``): ``main`` in a process whose
    freed memory is kept for reuse (``ganbench.memory``)."""
    retain_freed_memory()
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except GanbenchError as error:
        print(f"ganbench: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.filename is None:
            raise  # not about a file the user named: a bug, with its traceback
        # A path the user gave that the operating system refused (a folder, no permission, no space).
        print(f"ganbench: error: {error.filename}: {error.strerror or type(error).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ganbench: interrupted; {getattr(args, 'on_interrupt', nothing_written)(args)}", file=sys.stderr)
        return 130


def nothing_written(args) -> str:
    """What an interrupt leaves behind, for commands whose outputs are written only at the end
    (atomically); a command that saves as it goes sets its own ``on_interrupt``."""
    return "nothing was written"


if __name__ == "__main__":
    sys.exit(main())
