"""The ``ganbench`` command. Results go to stdout (JSON with --json); progress and logs to stderr.

Each command's parser sits beside its handler in a module of this package; ``main`` turns every
``GanbenchError``, and every OSError on a path the user named, into one line on stderr and exit
status 2; output that cannot be written (a full disk behind stdout) is one line and status 2, and
a reader that closed the pipe (``| head``) ends the command quietly with status 141, as SIGPIPE
would; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sys

from ganbench import __version__
from ganbench.errors import GanbenchError
from ganbench.memory import retain_freed_memory


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" once, and only where there is a default worth showing."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if ("default" in help_text or action.default in (None, False, argparse.SUPPRESS)
                or action.required or not action.option_strings):
            return help_text
        return help_text + " (default: %(default)s)"


class OneLineErrorParser(argparse.ArgumentParser):
    """A usage error is one line on stderr and exit status 2, as every other error: the option and what was
    wrong, and where the options are described (argparse prints its whole usage block first). Subcommands'
    parsers are of the same class (argparse makes them with their parent's)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="ganbench", formatter_class=HelpFormatter, description=(
        "Evaluate generative models as the GAN paper (Goodfellow et al. 2014) did, exactly and fast: "
        "Parzen-window log-likelihood with cross-validated sigma, Table 1, memorisation checks."))
    parser.add_argument("--version", action="version", version=f"ganbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The commands' modules load torch (a second or more): imported here, not with this package, so that
    # ``run`` can turn a Ctrl-C during the import into one line.
    from ganbench.cli import bench, gan, nn, parzen, table1

    for module in (parzen, gan, table1, nn, bench):
        module.add_parsers(commands, HelpFormatter)
    parser.set_defaults(commands=commands.choices)
    return parser


def run() -> None:
    """The ``ganbench`` command (console script and ``python -m ganbench``): ``main`` in a process whose
    freed memory is kept for reuse (``ganbench.memory``). A Ctrl-C while the commands and torch load
    (the first second) is one line and status 130, as one during a command."""
    retain_freed_memory()
    try:
        parser = build_parser()
    except KeyboardInterrupt:
        print("ganbench: interrupted while starting; nothing was written", file=sys.stderr)
        sys.exit(130)
    sys.exit(main(parser=parser))


# The commands whose work torchrun's ranks divide between them (``ganbench.scoring.streaming``); every other
# command does its whole job in each process it is started in.
DISTRIBUTED_COMMANDS = ("parzen",)


def _refuse_single_process_command_under_torchrun(command: str) -> None:
    """Under torchrun (WORLD_SIZE > 1) a command that does not divide its work ran all of it on each rank: two
    ranks of `ganbench train` would train into one run folder, each replacing the other's checkpoints, and `sample`
    drew and wrote the same bank once a rank. Refused on every rank, in one line."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return  # not torchrun's (``streaming.init_from_environment`` refuses it where ranks are joined)
    if world > 1 and command not in DISTRIBUTED_COMMANDS:
        rank = os.environ.get("RANK", "?")
        raise GanbenchError(f"`ganbench {command}` runs in one process, and this is rank {rank} of {world} "
                            f"(WORLD_SIZE={world}, as torchrun sets it): only `ganbench parzen` divides its work "
                            f"between ranks; run `ganbench {command}` without torchrun (or unset WORLD_SIZE)")


def _refuse_empty_values(args) -> None:
    """An empty value (an unset shell variable: ``--checkpoint "$CKPT"``) names nothing: refused, never taken as
    the default (it sampled the shipped generator) or the current folder (``--out ''`` trained there)."""
    command = args.commands[args.command]
    for action in command._actions:
        if getattr(args, action.dest, None) == "":
            name = action.option_strings[0] if action.option_strings else action.metavar or action.dest
            command.error(f"{name} is empty: give a value (an unset shell variable?)")


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    args, unknown = (parser or build_parser()).parse_known_args(argv)
    if unknown:  # named by the command's own parser, so that the line points at `ganbench COMMAND --help`
        args.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    _refuse_empty_values(args)
    # A command started with its stderr closed (`2>&-`) has sys.stderr None, and print(file=None) writes to
    # stdout: its notes would land in the JSON. They go nowhere instead. A closed stdout (`>&-`) refuses the
    # output as a full disk does: one line, status 2.
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the process's own, for its lifetime)
    stdout, sys.stdout = sys.stdout, _GuardedOutput(sys.stdout if sys.stdout is not None else _ClosedOutput())
    previous_handler = _stop_on_sigterm()
    try:
        # Every command may write to the cache: a bad GANBENCH_CACHE_LIMIT_MB is refused now, not after minutes of
        # work (or ignored when every entry was there already).
        from ganbench import cache

        cache.limit_bytes()
        _refuse_single_process_command_under_torchrun(args.command)
        status = args.handler(args)
        sys.stdout.flush()  # a full disk or a closed pipe behind stdout shows here, not after exit
        return status
    except ReaderGone:
        # Whoever read stdout stopped (`| head`): stop quietly, as a command killed by SIGPIPE does.
        _discard(stdout)
        return 128 + signal.SIGPIPE
    except OutputRefused as error:
        _discard(stdout)
        say(f"ganbench: error: {error}")
        return 2
    except GanbenchError as error:
        say(f"ganbench: error: {error}")
        return 2
    except OSError as error:
        if error.filename is None:
            raise  # not about a file the user named: a bug, with its traceback
        # A path the user gave that the operating system refused (a folder, no permission, no space).
        say(f"ganbench: error: {error.filename}: {error.strerror or type(error).__name__}")
        return 2
    except KeyboardInterrupt as interruption:
        stopped = "terminated" if isinstance(interruption, Terminated) else "interrupted"
        say(f"ganbench: {stopped}; {getattr(args, 'on_interrupt', nothing_written)(args)}")
        return 128 + (signal.SIGTERM if isinstance(interruption, Terminated) else signal.SIGINT)
    finally:
        sys.stdout = stdout
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's stop, ``kill``, torchrun stopping its ranks), unwound as Ctrl-C is: temporary
    files removed, and one line saying what was kept (it died silently, leaving a half-written checkpoint)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _stop_on_sigterm():
    """Turn SIGTERM into ``Terminated`` for this command; the handler it replaces, or None off the main thread
    (where Python installs no handlers)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def say(line: str) -> None:
    """One line on stderr in one write: print() writes the text and its newline apart, and the error lines of
    two torchrun ranks ran together into one."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class OutputRefused(GanbenchError):
    """Standard output could not be written (a full disk, an I/O error)."""


class ReaderGone(BrokenPipeError):
    """Whoever read standard output closed it (a broken pipe on any other file stays a bug's traceback)."""


class _GuardedOutput:
    """Standard output for one command: a write the system refuses is ``OutputRefused``, which names
    the output, not an OSError without a file name (a bug's traceback); a closed pipe is ``ReaderGone``."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    @staticmethod
    def _guarded(action, *arguments):
        try:
            return action(*arguments)
        except BrokenPipeError:
            raise ReaderGone() from None
        except OSError as error:
            fix = ("start the command with standard output open (or sent to a file)" if error.errno == errno.EBADF
                   else "send it where there is room")
            raise OutputRefused(f"cannot write the output: {error.strerror or type(error).__name__}; {fix}") from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _ClosedOutput:
    """Standard output that was closed before the command started: every write fails as on a bad descriptor."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "standard output is closed")

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        raise OSError(errno.EBADF, "standard output is closed")


def _discard(stream) -> None:
    """Point ``stream``'s file at /dev/null, so what its buffer still holds goes nowhere at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError, AttributeError):  # not a file (a test's capture): nothing to flush at exit
        pass


def nothing_written(args) -> str:
    """What an interrupt leaves behind, for commands whose outputs are written only at the end
    (atomically); a command that saves as it goes sets its own ``on_interrupt``."""
    return "nothing was written"


if __name__ == "__main__":
    sys.exit(main())
