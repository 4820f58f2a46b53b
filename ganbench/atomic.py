"""Atomic writes: a file is either the old one or the complete new one, never half of each.

Every result, cache entry and checkpoint goes through here: a temporary file in the same
folder, fsync, then ``os.replace``, which is atomic on POSIX. The temporary's name,
``.NAME.ganbench-PID-RANDOM.tmp``, says which file and which process it belongs to: it is
removed when the write fails, and a process killed mid-write (SIGKILL, power loss) leaves
one behind that the next write of the same file removes.

``write_set`` writes several files that belong together (Table 1's .json, .md and .csv):
every file is written in full first, and only then are all renamed into place, so a kill
during the work leaves the old set untouched. The renames themselves are not one atomic
step: a kill in the microseconds between them can leave some files new and some old; the
last file of the set is renamed last, so when it is new the whole set is.

A write that the operating system refuses (a folder that is a file, no permission, no space)
is a ``GanbenchError`` naming the path, not a traceback. A symbolic link is written through (its
target is replaced atomically and the link stays); a device, pipe or socket is refused, since a
rename would put a plain file in its place.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from ganbench.errors import GanbenchError

_UMASK = os.umask(0)
os.umask(_UMASK)
_TEMPORARY_TAG = "ganbench-"


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}.{_TEMPORARY_TAG}"


def _process_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries of earlier writes of ``path`` whose process no longer runs."""
    prefix = _temporary_prefix(path)
    for candidate in path.parent.glob(f"{prefix}*.tmp"):
        pid = candidate.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _process_is_running(int(pid)):
            candidate.unlink(missing_ok=True)


def write_error(path: Path, error: OSError) -> GanbenchError:
    """The one-line error for a write the operating system refused."""
    reason = error.strerror or type(error).__name__
    return GanbenchError(f"cannot write {path}: {reason}; choose a writable folder (and check the disk has space)")


def replaced_file(path: Path) -> Path:
    """The file a write of ``path`` replaces: a symbolic link's target (the link itself stays a link),
    else ``path``; refused when that is something other than a regular file (a device, a pipe, a
    socket), which a rename would replace by a plain file."""
    try:
        mode = os.stat(path).st_mode  # through every link
    except OSError as error:
        if error.errno == errno.ELOOP:  # links that lead back to themselves
            raise GanbenchError(f"cannot write {path}: {error.strerror}; write to a file path instead") from None
        mode = None  # nothing there yet, or a link to nothing (the write creates it), or a path the write refuses
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise GanbenchError(f"cannot write {path}: it is not a regular file (a device, pipe or socket); "
                            "write to a file path instead")
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_writable(path: str | os.PathLike, *, folder: bool, what: str = "--out",
                   fix: str = "choose another --out") -> Path:
    """Refuse, before any work, an output path that cannot be written; creates nothing.

    ``folder`` says whether ``path`` is to be a folder (results go inside it) or a file;
    ``what`` names it in the error and ``fix`` says what to do instead.
    """
    text = os.fspath(path)
    if not folder and (text.endswith(("/", os.sep)) or os.path.basename(text) in (".", "..")):
        # Path() drops a trailing slash and "/.": "new/" and "new/." were written as a file "new".
        raise GanbenchError(f"{what} {text} names a folder (it ends with a slash or a dot), not a file; {fix}")
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise GanbenchError(f"{what} {path} is a file, not a folder; {fix}")
    if not folder and path.is_dir():
        raise GanbenchError(f"{what} {path} is a folder, not a file name; {fix}")
    if not folder and not path.is_dir():
        path = replaced_file(path)
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:  # folders the write will create
        existing = existing.parent
    if not existing.is_dir():
        raise GanbenchError(f"{what} {path} lies under {existing}, which is a file; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GanbenchError(f"{what} {path}: {existing} is not writable (permission denied); {fix}")
    # Permissions do not tell everything: root may write anywhere by them, yet not in /proc or on a read-only
    # mount. One file made and removed there says it for sure.
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".ganbench-probe-")
    except OSError as error:
        raise GanbenchError(f"{what} {path}: files cannot be created in {existing} "
                            f"({error.strerror or type(error).__name__}); {fix}") from None
    os.close(handle)
    os.unlink(probe)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    with _temporaries([Path(path)]) as (temporary,):
        yield temporary


def _make_temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{_temporary_prefix(path)}{os.getpid()}-",
                                         suffix=".tmp")
    os.close(handle)
    return Path(temporary)


def _seal(temporary: Path) -> None:
    with open(temporary, "rb") as written:
        os.fsync(written.fileno())
    os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions


def _refused(path: Path, action: Callable, *arguments):
    """``action(*arguments)``, with an OSError turned into the one-line error naming ``path``."""
    try:
        return action(*arguments)
    except OSError as error:
        raise write_error(path, error) from None


@contextlib.contextmanager
def _temporaries(paths: list[Path]) -> Iterator[list[Path]]:
    """One temporary per path; after the body, all sealed, then all renamed in order."""
    temporaries: list[Path] = []
    paths = [replaced_file(path) for path in paths]
    try:
        for path in paths:
            temporaries.append(_refused(path, _make_temporary, path))
        try:
            yield temporaries
        except OSError as error:  # the writer's own write to the temporary
            raise write_error(paths[0], error) from None
        for path, temporary in zip(paths, temporaries):
            _refused(path, _seal, temporary)  # every file complete on disk before the first rename
        for path in paths:  # a folder in a target's place refuses its rename: found before any rename is done
            if path.is_dir():
                raise GanbenchError(f"cannot write {path}: a folder is in its place; move it, or choose another "
                                    "output")
        for path, temporary in zip(paths, temporaries):
            _refused(path, os.replace, temporary, path)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(temporary_path)`` and move the result into place atomically."""
    with atomic_path(path) as temporary:
        writer(temporary)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return write_with(path, lambda temporary: temporary.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_with(path, lambda temporary: temporary.write_text(text))


def write_npy(path: str | os.PathLike, array) -> Path:
    """``np.save`` of ``array`` to ``path``, atomically (samples, cached centroids)."""
    import numpy as np

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.save(handle, array, allow_pickle=False)

    return write_with(path, write)


def torch_bytes(payload) -> bytes:
    """The bytes ``torch.save`` writes for ``payload``, to write atomically or to hash."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def write_set(contents: dict[str | os.PathLike, str | bytes]) -> list[Path]:
    """Write files that belong together: all in full first, then all renamed (the last one last)."""
    paths = [Path(path) for path in contents]
    with _temporaries(paths) as temporaries:
        for path, temporary, content in zip(paths, temporaries, contents.values()):
            write = temporary.write_bytes if isinstance(content, bytes) else temporary.write_text
            _refused(path, write, content)
    return paths
