"""Reading the torch files ganbench writes (training checkpoints, shipped generators).

``torch.load`` reports a truncated, foreign or mistyped file with one of several
exception types and a long message; a user needs the path, what was expected and
what to do, in one line.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ganbench.errors import GanbenchError

# What torch.load raises on a file that is not one of ours: a truncated zip archive
# (RuntimeError), a foreign pickle (UnpicklingError under weights_only), a folder (OSError),
# a text or CSV file read as a legacy pickle stream (KeyError, IndexError: LookupError).
READ_ERRORS = (RuntimeError, EOFError, ValueError, OSError, LookupError, pickle.UnpicklingError)


class OtherModelError(GanbenchError):
    """A baseline's file given where the GAN's generator is read: ``model`` names the baseline."""

    def __init__(self, model: str, message: str):
        super().__init__(message)
        self.model = model


def load_payload(path: str | Path, what: str, fix: str, required: tuple[str, ...]) -> dict:
    """The dict stored at ``path`` (tensors on the CPU), holding at least the ``required`` keys."""
    path = Path(path)
    if not path.is_file():
        raise GanbenchError(f"no {what} at {path}; {fix}")
    damaged = damaged_member(path)
    if damaged is not None:
        raise GanbenchError(f"{path} is damaged (its part {damaged} fails its checksum); {fix}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except READ_ERRORS as error:
        raise GanbenchError(f"{path} is not a readable {what} ({type(error).__name__}); {fix}") from None
    missing = [key for key in required if not isinstance(payload, dict) or key not in payload]
    if missing and isinstance(payload, dict) and isinstance(payload.get("model"), str) and "model" not in required:
        # A baseline's checkpoint or weights handed to a command that reads the GAN's.
        raise OtherModelError(payload["model"], f"{path} holds a {payload['model']} model, not the GAN's generator; "
                                                f"add --model {payload['model']}")
    if missing and isinstance(payload, dict) and "model" in required and "model" not in payload and "generator" in payload:
        # The GAN's checkpoint or generator handed to a baseline's command: never told to delete it.
        raise GanbenchError(f"{path} holds the paper's GAN (a generator), not a {what}; drop --model (the GAN is "
                            "the default)")
    if missing:
        raise GanbenchError(f"{path} is not a {what} (no {missing[0]!r} in it); {fix}")
    return payload


def damaged_member(path: Path) -> str | None:
    """The first member of a torch zip file whose CRC-32 fails, else None (and for files that are no zip archive,
    which ``torch.load`` judges). torch.load reads the tensors' bytes without checking them: a flipped bit in a
    weight loaded as 1e37 and sampled without a word, a flipped byte in a checkpoint resumed another state.
    Members stored with a CRC of 0 are skipped: torch writes that for every member when saving without CRCs
    (``torch.utils.serialization.config.save.compute_crc32 = False``), and such files load as they are."""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.CRC == 0:
                    continue
                try:
                    with archive.open(member) as stream:  # the CRC is compared when the member is read to its end
                        while stream.read(1 << 24):
                            pass
                except zipfile.BadZipFile:
                    return member.filename
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError):
        return None
    return None
