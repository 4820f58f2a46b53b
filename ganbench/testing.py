"""Assertions for a user's own test suite: pin a model's Parzen log-likelihood in CI.

    from ganbench.testing import assert_log_likelihood, assert_result_holds

    def test_my_model_keeps_its_number():
        assert_result_holds("results/my_model.json")      # saved by `ganbench parzen ... --save`

    def test_my_model_scores_as_before():
        assert_log_likelihood("samples.npy", "valid.npy", "test.npy", expected=-24.1112)

Both fail with an ``AssertionError`` that says which number moved, by how much, and the
tolerance, which is derived from the arithmetic of the scoring paths
(``ganbench.scoring.bounds``), never tuned. A missing or changed input raises
``GanbenchError``: the test cannot say whether the number holds.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ganbench.defaults import CHUNK_ROWS, DEFAULT_BACKEND, DEFAULT_PRECISION, OWN_DATA_PROTOCOL
from ganbench.errors import GanbenchError
from ganbench.scoring import banks, results, streaming
from ganbench.scoring import protocol as protocols
from ganbench.scoring.inputs import as_real_array


def assert_log_likelihood(samples, valid, test, expected: float, *, protocol: str = OWN_DATA_PROTOCOL,
                          sigma: float | None = None, backend: str = DEFAULT_BACKEND, device: str | None = None,
                          precision: str = DEFAULT_PRECISION, chunk_rows: int = CHUNK_ROWS,
                          tolerance: float | None = None) -> protocols.ParzenScore:
    """Score ``test`` under the bank ``samples`` (sigma chosen on ``valid`` unless given) and assert
    the mean is ``expected`` nats within ``tolerance``.

    ``protocol`` defaults to the one `ganbench parzen` takes on the user's own data (``full``), so the number
    the command printed for the same files is the one to expect (``"paper"`` for the paper's grid).

    Inputs are arrays, ``.npy``/``.npz`` files or shard folders, as for ``ganbench parzen``.
    The default tolerance is the derived bound of this run's arithmetic plus the worst bound
    of any arithmetic that may have given ``expected`` (the float64 reference, float32 on any
    CPU, the GPU kernel). Returns the score.
    """
    expected = _number("expected", expected)
    if tolerance is not None and not _number("tolerance", tolerance, infinite=True) >= 0:
        raise GanbenchError(f"tolerance must be a number >= 0 (nats), got {tolerance!r}")
    bank = banks.open_bank(samples, role="samples")
    valid, test = _rows(valid, "validation data"), _rows(test, "test data")
    scoring = results.Scoring(protocol=protocol, backend=backend, device=device, precision=precision,
                              chunk_rows=chunk_rows)
    score = protocols.evaluate(bank, valid, test, protocol, sigma=sigma, scorer=streaming.log_likelihood,
                              progress=False, **scoring.options())
    if tolerance is None:
        tolerance = results.tolerance_of(score, bank, valid, test, scoring)["mean"]
    difference = score.mean - expected
    assert abs(difference) <= tolerance, (
        f"Parzen log-likelihood moved: {score.mean:.6f} nats, expected {expected:.6f} (difference {difference:+.6f}, "
        f"tolerance {tolerance:.6g}; sigma {score.sigma:.6g}, bank {score.n_bank}, {score.n_test} images)")
    return score


def assert_result_holds(path: str | os.PathLike, *, backend: str | None = None, device: str | None = None):
    """Re-score a result saved by ``ganbench parzen ... --save`` and assert every number holds.

    Returns the comparison table (field, stored, new, difference, tolerance, ok).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise GanbenchError(f"assert_result_holds takes the path of a saved result (RESULT.json), got {path!r}")
    ok, frame = results.check(path, backend=backend, device=device)
    moved = frame[~frame["ok"]]
    assert ok, (f"{path}: moved beyond tolerance: {', '.join(moved['field'])}\n"
                + moved.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    return frame


def _number(name: str, value, infinite: bool = False) -> float:
    """A real number (a Python or NumPy int or float, not a bool or a string), finite unless ``infinite`` (a
    tolerance may be inf: any mean holds), or a one-line error."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or \
            math.isnan(value) or not (infinite or math.isfinite(value)):
        raise GanbenchError(f"{name} must be a {'' if infinite else 'finite '}number (nats), got {value!r}")
    return float(value)


def _rows(values, role: str) -> np.ndarray | None:
    if values is None:  # no validation data: a fixed sigma
        return None
    if isinstance(values, (str, os.PathLike)):
        return banks.open_bank(values, role=role).read_all()
    return as_real_array(role, values)  # tensors leave autograd and their device
