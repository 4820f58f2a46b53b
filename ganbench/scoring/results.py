"""Saved Parzen results for CI: build, save atomically, load and validate, re-score, compare.

``ganbench parzen ... --save result.json`` writes a result file that holds the numbers and
everything needed to recompute them: each input's path (relative to the result file, so a
repository holding both can be checked out anywhere), SHA-256 and size, the protocol, the
sigma grid with every validation mean, the chosen sigma, the scorer's settings and versions,
and the error bound of every arithmetic that may re-score it (``ganbench.scoring.bounds``).
``ganbench check result.json`` re-scores and compares: a field holds when the stored and
new values differ by at most the bound of the arithmetic that saved it plus the bound of
the one that re-scored it, since each lies within its own bound of the exact value.

Sigma is re-scored at the stored grid, and the test images at the stored sigma: another
path may pick another width where two validation means are closer than the bounds, so the
check asks instead whether the stored sigma is still the best within them (see
``_selection_row``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from ganbench import __version__, atomic
from ganbench.defaults import BACKENDS, CHUNK_ROWS, DEFAULT_BACKEND, DEFAULT_PRECISION
from ganbench.errors import GanbenchError
from ganbench.machine import cpu_model, machine_info
from ganbench.scoring import banks, bounds, parzen, protocol, streaming

KIND = "ganbench.parzen_result"
FORMAT = 1
ROLES = ("samples", "valid", "test")
RULE = ("a field holds when |stored - new| <= bound(saving arithmetic) + bound(re-scoring arithmetic): each "
        "lies within its bound of the exact value. The stored sigma holds when, re-scored at the stored grid, "
        "no width's validation mean exceeds its own by more than the two widths' tolerances summed.")
DERIVATION = ("per image |path - exact| <= K u N / (2 sigma^2) + L u (ganbench/scoring/bounds.py): N = ||x - c||^2 "
              "+ max ||s - c||^2 about each bank chunk's centre c, K the squared distance's rounding (float32: "
              "gamma_d + 9; tf32x3 on tensor cores: (212 + ceil(3d / 16))(1 + 2^-10) + 30; float64: d + 9 at u = 2^-53), "
              "L = 3m + 5m / e + 2 the shifted sum's over a chunk of m rows (additions, exponents, exponentials, "
              "rescalings); log-sum-exp is 1-Lipschitz. "
              "Worst cases for every summation order, so for every CPU, BLAS build, thread count and GPU. The "
              "mean moves by at most the mean of the per-image bounds, std / sqrt(n) by their RMS / sqrt(n).")


def checkable_precision(precision: str) -> str:
    """The precision a result that is saved (or given a tolerance) scores with: ``auto`` becomes
    tf32x3, whose error bound results carry (int8's, ``kernels/parzen_int8.per_point_bound``, is
    not one of the saved arithmetics yet); the others stay as asked."""
    return "tf32x3" if precision == "auto" else precision


@dataclass(frozen=True)
class Scoring:
    """How a result was scored, and so how ``check`` re-scores it (``auto`` precision: tf32x3)."""

    protocol: str = "paper"
    backend: str = DEFAULT_BACKEND
    device: str | None = None
    precision: str = DEFAULT_PRECISION
    chunk_rows: int = CHUNK_ROWS
    sigma_grid: str | None = None  # the widths the user gave (--sigma-grid), as written; None: the protocol's

    def __post_init__(self):
        object.__setattr__(self, "precision", checkable_precision(self.precision))

    def options(self) -> dict:
        return {"backend": self.backend, "device": self.device, "precision": self.precision,
                "chunk_rows": self.chunk_rows}


@dataclass(frozen=True)
class Inputs:
    """The files scored: the user's own ``valid`` and ``test``, or (both None) MNIST's ``split``."""

    samples: str | os.PathLike
    valid: str | os.PathLike | None = None
    test: str | os.PathLike | None = None
    split: str = "test"


# ---- build and save -------------------------------------------------------------------------------

def build(score: protocol.ParzenScore, bank: banks.Bank, valid: np.ndarray, test: np.ndarray, inputs: Inputs,
          scoring: Scoring, destination: str | os.PathLike, command: str | None = None) -> dict:
    """The result file's content for ``score`` (``protocol.evaluate`` of ``test`` under ``bank``)."""
    backend, device_name = resolve(scoring.backend, scoring.device)
    arithmetic = bounds.arithmetic_of(backend, scoring.precision)  # refuses paths with no derived bound
    grid = sorted(score.valid_means.items())
    valid_rows = _valid_rows(scoring.protocol, len(valid))
    folder = Path(destination).resolve().parent
    return {
        "kind": KIND, "format": FORMAT,
        "result": {"mean": score.mean, "standard_error": score.standard_error, "sigma": score.sigma,
                   "n_test": score.n_test, "n_bank": score.n_bank, "dimension": bank.dimension,
                   "seconds": score.seconds},
        "selection": {"protocol": scoring.protocol, "fixed_sigma": not grid, "valid_rows": valid_rows,
                      "sigma_grid": scoring.sigma_grid, "grid": [[sigma, mean] for sigma, mean in grid]},
        "inputs": {role: _describe_input(role, inputs, rows, bank.dimension, folder)
                   for role, rows in zip(ROLES, (len(bank), len(valid), len(test)))},
        "scorer": {"backend": scoring.backend, "resolved_backend": backend, "arithmetic": arithmetic,
                   "precision": scoring.precision, "device": scoring.device, "device_name": device_name,
                   "chunk_rows": scoring.chunk_rows},
        "tolerance": tolerance_of(score, bank, valid, test, scoring),
        "provenance": {"ganbench": __version__, **machine_info(), "command": command,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }


def save(path: str | os.PathLike, result: dict) -> Path:
    return atomic.write_text(path, json.dumps(result, indent=2) + "\n")


def resolve(backend: str, device: str | None) -> tuple[str, str]:
    """The backend ``auto`` becomes on this machine, and the device it runs on, in words."""
    target = parzen.scoring_device(device, backend)
    if backend == "auto":
        backend = "triton" if target.type == "cuda" else "torch"
    if target.type == "cuda":
        return backend, torch.cuda.get_device_name(target)
    return backend, f"cpu: {cpu_model()}, {torch.get_num_threads()} threads"


def _valid_rows(protocol_name: str, available: int) -> int:
    """Validation rows sigma is chosen on: the protocol's count (``protocol.evaluate`` slices the same way)."""
    return min(protocol.get_protocol(protocol_name).valid_count or available, available)


def tolerance_of(score: protocol.ParzenScore, bank: banks.Bank, valid: np.ndarray, test: np.ndarray,
                 scoring: Scoring) -> dict:
    """Every arithmetic's bounds on the fields of ``score``, and the tolerance of the arithmetic that
    scored it against the worst re-scoring one (``mean``, ``standard_error``)."""
    arithmetic = bounds.arithmetic_of(resolve(scoring.backend, scoring.device)[0], scoring.precision)
    if valid is None:  # a fixed sigma, chosen on no validation data
        valid = np.zeros((0, bank.dimension), dtype=np.float32)
    subset = valid[:_valid_rows(scoring.protocol, len(valid))]
    (valid_norms, test_norms), rows = bounds.centred_norms([subset, test], bank, scoring.chunk_rows)
    shape = (bank.dimension, rows)
    per_arithmetic = {
        name: {"mean": bounds.mean_bound(test_norms, score.sigma, name, *shape),
               "standard_error": bounds.standard_error_bound(test_norms, score.sigma, name, *shape),
               "valid_means": [bounds.mean_bound(valid_norms, sigma, name, *shape)
                               for sigma in sorted(score.valid_means)]}
        for name in bounds.ARITHMETICS}
    worst = {field: max(entry[field] for entry in per_arithmetic.values()) for field in ("mean", "standard_error")}
    return {"mean": per_arithmetic[arithmetic]["mean"] + worst["mean"],
            "standard_error": per_arithmetic[arithmetic]["standard_error"] + worst["standard_error"],
            "note": "mean and standard_error above: against the worst re-scoring arithmetic; check uses the one "
                    "that re-scores", "rule": RULE, "derivation": DERIVATION,
            "largest_chunk_rows": rows, "bounds": per_arithmetic}


# ---- inputs: paths and digests --------------------------------------------------------------------

def _describe_input(role: str, inputs: Inputs, rows: int, dimension: int, folder: Path) -> dict:
    path = getattr(inputs, role)
    if path is None:  # MNIST, verified against ganbench's pinned digest whenever it is loaded
        from ganbench import data

        return {"mnist": "valid" if role == "valid" else inputs.split, "sha256": data.ARRAYS_SHA256,
                "rows": rows, "dimension": dimension}
    path = Path(path)
    digest, listing = _digests(path, _input_files(path))
    record = {"path": Path(os.path.relpath(path.resolve(), folder)).as_posix(), "sha256": digest,
              "bytes": sum(entry["bytes"] for entry in listing), "rows": rows, "dimension": dimension}
    if path.is_dir():
        record["files"] = listing
    return record


def _input_files(path: Path) -> list[Path]:
    """The files a bank path is read from, in the order ganbench reads them."""
    return [shard.path for shard in banks.open_bank(path).shards] if path.is_dir() else [path]


def _digests(path: Path, files: list[Path]) -> tuple[str, list[dict]]:
    """SHA-256 of every file's bytes in reading order, and of all of them together."""
    whole, listing = hashlib.sha256(), []
    for file in files:
        single = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                single.update(block)
                whole.update(block)
        listing.append({"name": file.relative_to(path).as_posix() if path.is_dir() else file.name,
                        "sha256": single.hexdigest(), "bytes": file.stat().st_size})
    return whole.hexdigest(), listing


def _verify_input(role: str, record: dict, folder: Path) -> Path | None:
    """The input's path now, after checking its bytes are the ones saved; None for MNIST."""
    if "mnist" in record:
        from ganbench import data

        if record["sha256"] != data.ARRAYS_SHA256:
            raise GanbenchError(f"input {role} (MNIST {record['mnist']}) changed: ganbench pins sha256 "
                                f"{data.ARRAYS_SHA256}, the result recorded {record['sha256']}; save the result again")
        return None
    path = folder / record["path"]
    if not path.exists():
        raise GanbenchError(f"input {role} {path} is missing (the result recorded sha256 {record['sha256']}); "
                            "restore it, or save the result again")
    files = _input_files(path)
    digest, listing = _digests(path, files)
    if digest != record["sha256"]:
        raise GanbenchError(_changed_message(role, path, digest, record, listing))
    size = sum(entry["bytes"] for entry in listing)
    if "bytes" in record and record["bytes"] != size:  # the bytes match their digest: the file's count is wrong
        raise GanbenchError(f"inputs.{role}.bytes is {record['bytes']!r}, but {path} holds {size} bytes; the file was "
                            "altered: save the result again")
    return path


def _changed_message(role: str, path: Path, digest: str, record: dict, listing: list[dict]) -> str:
    fix = "restore it, or save the result again with `ganbench parzen ... --save`"
    saved = record.get("files")
    if saved is not None:  # a shard folder: name the first file that differs
        now = {entry["name"]: entry["sha256"] for entry in listing}
        before = {entry["name"]: entry["sha256"] for entry in saved}
        for name in sorted(set(now) | set(before)):
            if now.get(name) != before.get(name):
                return (f"input {role} {path / name} changed: sha256 {now.get(name, 'missing')}, the result "
                        f"recorded {before.get(name, 'no such file')}; {fix}")
    return f"input {role} {path} changed: sha256 {digest}, the result recorded {record['sha256']}; {fix}"


def _read_inputs(stored: dict, folder: Path) -> tuple[banks.Bank, np.ndarray, np.ndarray]:
    paths = {role: _verify_input(role, stored["inputs"][role], folder) for role in ROLES}
    if paths["test"] is None:
        from ganbench import data

        mnist = data.load_mnist()
        bank = banks.open_bank(paths["samples"], banks.MNIST_RANGE)
        valid, test = mnist.valid_x, mnist.split(stored["inputs"]["test"]["mnist"])[0]
    else:
        bank = banks.open_bank(paths["samples"])
        valid, test = (banks.open_bank(paths[role]).read_all() for role in ("valid", "test"))
    return bank, valid, test


# ---- load and validate ----------------------------------------------------------------------------

NUMBER, INTEGER, TEXT, FLAG, LIST, OBJECT = "a number", "an integer", "a string", "true or false", "a list", "an object"
SCHEMA = {
    "format": INTEGER, "result": OBJECT, "result.mean": NUMBER, "result.standard_error": NUMBER,
    "result.sigma": NUMBER, "result.n_test": INTEGER, "result.n_bank": INTEGER, "result.dimension": INTEGER,
    "selection": OBJECT, "selection.protocol": TEXT, "selection.fixed_sigma": FLAG,
    "selection.valid_rows": INTEGER, "selection.grid": LIST,
    "inputs": OBJECT, **{f"inputs.{role}": OBJECT for role in ROLES},
    **{f"inputs.{role}.sha256": TEXT for role in ROLES},
    "scorer": OBJECT, "scorer.backend": TEXT, "scorer.arithmetic": TEXT, "scorer.precision": TEXT,
    "scorer.chunk_rows": INTEGER,
    "tolerance": OBJECT, "tolerance.bounds": OBJECT,
    **{f"tolerance.bounds.{name}": OBJECT for name in bounds.ARITHMETICS},
    **{f"tolerance.bounds.{name}.{field}": NUMBER for name in bounds.ARITHMETICS
       for field in ("mean", "standard_error")},
    **{f"tolerance.bounds.{name}.valid_means": LIST for name in bounds.ARITHMETICS},
}


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from ``path``, or a one-line error (missing, unreadable, not JSON, not an object)."""
    path = Path(path)
    if path.is_dir():
        raise GanbenchError(f"{path} is a folder; pass the result file inside it (a result JSON written by "
                            "`ganbench parzen --save`, or a table1.json)")
    if path.exists() and not path.is_file():
        raise GanbenchError(f"{path} is not a regular file (a pipe or a device); pass a result file written by "
                            "`ganbench parzen --save` or `ganbench reproduce table1`")
    if not path.is_file():
        raise GanbenchError(f"{path} does not exist; write it with `ganbench parzen SAMPLES --save {path}` "
                            "(or `ganbench reproduce table1` for a table1.json)")
    try:
        payload = json.loads(path.read_text(), object_pairs_hook=object_without_repeated_keys)
    except RepeatedKeyError as error:
        raise GanbenchError(f"{path} holds the key {str(error)!r} twice in one object (JSON readers keep one or the "
                            "other); the file was altered: save it again") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GanbenchError(f"{path} is not JSON ({type(error).__name__}: {error}); pass a result file "
                            "written by `ganbench parzen --save` or `ganbench reproduce table1`") from None
    if not isinstance(payload, dict):
        raise GanbenchError(f"{path} holds a JSON {type(payload).__name__}, not a ganbench result object")
    return payload


class RepeatedKeyError(ValueError):
    """A JSON object holding one key twice."""


def object_without_repeated_keys(pairs: list) -> dict:
    """A JSON object as a dict, or an error when it holds a key twice: json keeps the last, so a file could show
    its readers one number and have check read another."""
    keys = [key for key, _ in pairs]
    repeated = next((key for key in keys if keys.count(key) > 1), None)
    if repeated is not None:
        raise RepeatedKeyError(repeated)
    return dict(pairs)


def load(path: str | os.PathLike) -> dict:
    """A saved result, checked key by key: a missing key or a wrong type is a one-line error."""
    stored = read_json(path)
    if stored.get("kind") != KIND:
        raise GanbenchError(f"{path} has kind {stored.get('kind')!r}, not {KIND!r}; pass a file written by "
                            "`ganbench parzen --save`")
    for key, expected in SCHEMA.items():
        _check_type(path, key, _lookup(stored, key), expected)
    if stored["format"] > FORMAT:
        raise GanbenchError(f"{path} has format {stored['format']}, newer than this ganbench reads ({FORMAT}); "
                            "upgrade ganbench")
    scorer = stored["scorer"]
    if scorer["arithmetic"] not in bounds.ARITHMETICS:
        raise GanbenchError(f"{path}: scorer.arithmetic is {scorer['arithmetic']!r}, expected one of "
                            f"{', '.join(bounds.ARITHMETICS)}")
    # The arithmetic follows from the resolved backend and the precision: one edited to another (tf32x3 on a CPU
    # torch result) would take that arithmetic's wider bound as the saving path's.
    resolved = scorer.get("resolved_backend")
    used = bounds.arithmetic_of(resolved, scorer["precision"]) if isinstance(resolved, str) else scorer["arithmetic"]
    if used != scorer["arithmetic"]:
        raise GanbenchError(f"{path}: scorer.arithmetic is {scorer['arithmetic']!r}, but {resolved} with precision "
                            f"{scorer['precision']} scores in {used}; the file was altered: save the result again")
    for key in ("selection.valid_rows", "scorer.chunk_rows"):
        if _lookup(stored, key) < 1:
            raise GanbenchError(f"{path}: {key} is {_lookup(stored, key)}, expected a positive integer")
    grid = stored["selection"]["grid"]
    if stored["selection"]["fixed_sigma"] and (grid or stored["selection"].get("sigma_grid") is not None):
        raise GanbenchError(f"{path}: selection.fixed_sigma is true, but the file holds a grid its sigma was "
                            "chosen on; the file was altered: save the result again")
    for index, pair in enumerate(grid):
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_number(value) for value in pair) and pair[0] > 0):
            raise GanbenchError(f"{path}: selection.grid[{index}] is {repr(pair)[:60]}, expected [sigma > 0, "
                                "validation mean]")
    if stored["result"]["sigma"] <= 0:
        raise GanbenchError(f"{path}: result.sigma is {stored['result']['sigma']}, expected a width > 0")
    for name in bounds.ARITHMETICS:
        tolerances = stored["tolerance"]["bounds"][name]["valid_means"]
        if len(tolerances) != len(grid) or not all(_is_number(value) for value in tolerances):
            raise GanbenchError(f"{path}: tolerance.bounds.{name}.valid_means must hold one number per grid width "
                                f"({len(grid)})")
        # A bound is an error's size: a negative one would report any number as moved (exit 1), where the
        # file is what is wrong. (A bound too large cannot be told from the file alone.)
        for field, values in (("mean", [stored["tolerance"]["bounds"][name]["mean"]]),
                              ("standard_error", [stored["tolerance"]["bounds"][name]["standard_error"]]),
                              ("valid_means", tolerances)):
            if not all(math.isfinite(value) and value >= 0 for value in values):
                raise GanbenchError(f"{path}: tolerance.bounds.{name}.{field} holds {values}, expected numbers >= 0")
    if stored["result"]["standard_error"] < 0:
        raise GanbenchError(f"{path}: result.standard_error is {stored['result']['standard_error']}, expected a "
                            "number >= 0")
    for key in ("n_test", "n_bank"):
        if stored["result"][key] < 1:
            raise GanbenchError(f"{path}: result.{key} is {stored['result'][key]}, expected a positive integer")
    for role in ROLES:
        record = stored["inputs"][role]
        if not isinstance(record.get("path", record.get("mnist")), str):
            raise GanbenchError(f"{path}: inputs.{role} needs a string 'path' (or 'mnist' split)")
    return stored


def _lookup(stored: dict, key: str):
    value = stored
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


_MISSING = object()


def _is_number(value) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer past float64's range
        return False


def _check_type(path, key: str, value, expected: str) -> None:
    if value is _MISSING:
        raise GanbenchError(f"{path} is not a complete ganbench result: key {key!r} is missing; save it again "
                            "with `ganbench parzen ... --save`")
    valid = {NUMBER: _is_number(value), INTEGER: isinstance(value, int) and not isinstance(value, bool),
             TEXT: isinstance(value, str), FLAG: isinstance(value, bool), LIST: isinstance(value, list),
             OBJECT: isinstance(value, dict)}[expected]
    if not valid:
        raise GanbenchError(f"{path}: {key} is {json.dumps(value)[:60]}, expected {expected}")


# ---- re-score and compare -------------------------------------------------------------------------

# The kernel's precisions whose error bound a saved result carries (bounds.arithmetic_of); the first re-scores
# a result another backend saved.
CHECKED_PRECISIONS = ("tf32x3", "ieee")


def check(path: str | os.PathLike, backend: str | None = None, device: str | None = None) -> tuple[bool, pd.DataFrame]:
    """Re-score a saved result from its inputs; one row per field (field, stored, new, difference,
    tolerance, ok). Raises ``GanbenchError`` when it cannot check (an input missing or changed)."""
    if backend is not None and backend not in BACKENDS:
        raise GanbenchError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    stored = load(path)
    settings, selection = stored["scorer"], stored["selection"]
    device = device if device is not None else settings.get("device")
    precision = settings["precision"]
    if resolve(backend or settings["backend"], device)[0] == "triton" and precision not in CHECKED_PRECISIONS:
        # Only a torch result holds such a precision (the kernel's are refused at --save): one saved with
        # --precision int8 or tf32 (which the torch backend does not use), re-scored by the kernel, given
        # --backend triton or as "auto" on a GPU machine, runs at a precision with a derived bound.
        precision = CHECKED_PRECISIONS[0]
    scoring = Scoring(protocol=selection["protocol"], backend=backend or settings["backend"], device=device,
                      precision=precision, chunk_rows=settings["chunk_rows"])
    arithmetic = bounds.arithmetic_of(resolve(scoring.backend, scoring.device)[0], scoring.precision)
    bank, valid, test = _read_inputs(stored, Path(path).resolve().parent)
    result = stored["result"]
    for key, count in (("n_test", len(test)), ("n_bank", len(bank)), ("dimension", bank.dimension)):
        if result[key] != count:  # the inputs match their hashes, so the file's count is what is wrong
            raise GanbenchError(f"{path}: result.{key} is {result[key]}, but its inputs hold {count} "
                                f"{'values a row' if key == 'dimension' else 'rows'}; the file was altered: save the "
                                "result again")
    shapes = {"samples": (len(bank), bank.dimension), "valid": np.shape(valid), "test": np.shape(test)}
    for role, (rows, dimension) in shapes.items():
        record = stored["inputs"][role]
        for key, count in (("rows", rows), ("dimension", dimension)):
            if key in record and record[key] != count:
                raise GanbenchError(f"{path}: inputs.{role}.{key} is {record[key]!r}, but that input holds {count}; "
                                    "the file was altered: save the result again")
    # The validation rows the sigma was chosen on follow from the protocol and the file (``_valid_rows``); a fixed
    # sigma's file records the rows its protocol would choose on, as saving wrote them.
    chosen_on = _valid_rows(selection["protocol"], len(valid))
    if selection["valid_rows"] != chosen_on:
        raise GanbenchError(f"{path}: selection.valid_rows is {selection['valid_rows']}, but the "
                            f"{selection['protocol']} protocol chooses sigma on {chosen_on} rows of its validation "
                            "data; the file was altered: save the result again")
    # The bounds are derived again from the inputs, as saving derived them: the file's own copy is for its
    # readers, and a bound raised by hand there would loosen the check.
    # The grid by sigma, the order ``tolerance_of`` gives the validation means' bounds in.
    grid = None if selection["fixed_sigma"] else _stored_grid(path, selection["grid"])
    grid = None if grid is None else grid[np.argsort(grid[:, 0], kind="stable")]
    sigmas = [] if grid is None else grid[:, 0].tolist()
    if grid is not None:
        _check_searched_widths(path, selection, grid)
        at_sigma = grid[grid[:, 0] == result["sigma"], 1]
        if len(at_sigma) and at_sigma[0] < grid[:, 1].max():  # the search keeps the width of the highest mean
            raise GanbenchError(f"{path}: result.sigma {result['sigma']!r} is not the width of the highest validation "
                                "mean in selection.grid; the file was altered: save the result again")
    parzen.check_float64_range(0.0, bank.dimension, np.array([result["sigma"], *sigmas]))  # widths the scorer takes
    derived = tolerance_of(SimpleNamespace(sigma=result["sigma"], valid_means=dict.fromkeys(sigmas)), bank, valid, test,
                           scoring)["bounds"]
    saved_bounds, new_bounds = derived[settings["arithmetic"]], derived[arithmetic]
    tolerances = {field: saved_bounds[field] + new_bounds[field] for field in ("mean", "standard_error")}
    scores = streaming.log_likelihood(test, bank, [result["sigma"]], **scoring.options())[0]
    mean, standard_error = protocol.mean_and_standard_error(scores)
    rows = [_row("mean", result["mean"], mean, tolerances["mean"]),
            _row("standard_error", result["standard_error"], standard_error, tolerances["standard_error"])]
    if grid is not None:
        valid_tolerances = np.add(saved_bounds["valid_means"], new_bounds["valid_means"])
        subset = valid[:selection["valid_rows"]]
        new_means = streaming.log_likelihood(subset, bank, grid[:, 0], **scoring.options()).mean(axis=1)
        rows.append(_selection_row(result["sigma"], grid[:, 0], new_means, valid_tolerances))
        rows += [_row(f"valid_mean[sigma={sigma:.6g}]", old, new, allowed)
                 for (sigma, old), new, allowed in zip(grid, new_means, valid_tolerances)]
    frame = pd.DataFrame(rows)
    return bool(frame["ok"].all()), frame


def _check_searched_widths(path, selection: dict, grid: np.ndarray) -> None:
    """The stored widths must be those the search scored: its protocol replayed on the stored validation means
    (``protocol.searched_from``) from the grid the user gave (``selection.sigma_grid``, in files that record it),
    else the protocol's own grid, else the data's scale (the full protocol's start, s0 one of the widths). A
    file edited to another protocol, or with widths removed around the best one or added, chose its sigma among
    other widths than its protocol searched."""
    if "sigma_grid" not in selection:  # written before the grid's origin was recorded
        return
    rule = protocol.get_protocol(selection["protocol"])
    given = selection["sigma_grid"]
    if given is not None and not isinstance(given, str):
        raise GanbenchError(f"{path}: selection.sigma_grid is {json.dumps(given)[:60]}, expected the widths' text or "
                            "null; save the result again")
    start = protocol.parse_sigma_grid(given) if given else None
    if not protocol.searched_from(rule, dict(grid.tolist()), start):
        origin = f"the grid {given!r}" if given else ("its grid" if rule.grid else "the data's scale")
        raise GanbenchError(f"{path}: selection.grid is not the grid the {rule.name} protocol searches from {origin} "
                            "with these validation means; the file was altered: save the result again")


def _stored_grid(path, grid) -> np.ndarray:
    """The saved (sigma, validation mean) pairs as an (S, 2) array, or a one-line error."""
    try:
        pairs = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError):
        pairs = np.zeros((0, 0))
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not len(pairs) or not np.all(np.isfinite(pairs)):
        raise GanbenchError(f"{path}: selection.grid is {json.dumps(grid)[:60]}, expected [sigma, validation mean] "
                            "pairs; save it again with `ganbench parzen ... --save`")
    if len(np.unique(pairs[:, 0])) != len(pairs):  # the search scores each width once
        raise GanbenchError(f"{path}: selection.grid holds a width twice; the file was altered: save the result again")
    return pairs


def _row(field: str, stored: float, new: float, tolerance: float) -> dict:
    difference = abs(new - stored)
    return {"field": field, "stored": stored, "new": new, "difference": difference, "tolerance": tolerance,
            "ok": bool(difference <= tolerance)}


def _selection_row(sigma: float, grid: np.ndarray, new_means: np.ndarray, tolerances: np.ndarray) -> dict:
    """Is the stored sigma still the best width, within the bounds?

    The saving path chose sigma*: its means m1 satisfy m1(sigma*) >= m1(k). Every path lies
    within its bound of the exact means, so the re-scored means m2 can exceed m2(sigma*) at
    another width k by at most tol(k) + tol(sigma*), where tol is a validation mean's tolerance.
    The row shows the width that breaks this by the most or, when none does, the re-scored best.
    """
    stored = int(np.argmin(np.abs(grid - sigma)))
    if grid[stored] != sigma:
        raise GanbenchError(f"the stored sigma {sigma} is not on the stored grid; save the result again")
    excess = new_means - new_means[stored] - tolerances - tolerances[stored]
    other = int(np.argmax(excess)) if excess.max() > 0 else int(np.argmax(new_means))
    return {"field": "sigma", "stored": sigma, "new": float(grid[other]),
            "difference": float(new_means[other] - new_means[stored]),
            "tolerance": float(tolerances[other] + tolerances[stored]), "ok": bool(excess.max() <= 0)}
