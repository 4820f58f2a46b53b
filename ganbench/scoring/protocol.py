"""The paper's evaluation protocol, and a search that finds the best width on any data.

Section 5 and the authors' parzen_ll.py: sigma from numpy.logspace(-1, 0, 10) maximising
the mean log-likelihood of the first 1,000 validation images; the reported number is
the mean over the 10,000 test images with standard error std / sqrt(N), ddof = 0.

That grid was chosen for MNIST pixels in [0, 1]. On other data its best width is often one
of its ends (20-dimensional clusters of spread 0.01: sigma 0.1, 33 nats below the optimum at
0.01), so the ``full`` protocol starts from the data's own scale, widens the grid while the
best width is an end of it, then refines between the best width's neighbours. ``PROTOCOLS``
is the one registry of protocols: the CLI's choices and help are generated from it.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ganbench.defaults import CHUNK_ROWS, KEY_MEAN, KEY_SIGMA, KEY_STANDARD_ERROR
from ganbench.errors import GanbenchError
from ganbench.scoring import parzen, streaming
from ganbench.scoring.banks import Bank, open_bank
from ganbench.scoring.inputs import SCALE_ROWS, as_data, as_matrix, as_sigmas, check_same_scale, held_out_range

# The data grid: widths s0 * STEP^k around the data's scale s0. A step of 2^(1/3) (26%) is a
# little finer than the paper's 29%; 6 steps each side span s0 / 4 .. 4 s0, and a widening
# adds 6 more beyond the end that holds the best width (one pass over the bank each).
STEP = 2.0 ** (1.0 / 3.0)
START_STEPS = 6
WIDEN_STEPS = 6
# 8 widenings reach a factor 4^9 = 262,144 beyond s0 on either side; an optimum further out
# is no longer about the data's scale (validation points that equal samples push it to 0).
MAX_WIDENINGS = 8
# Validation points whose distances to their nearest samples set s0 (one pass over the bank,
# no exponentials; 1,000 medians are within a few percent of the whole split's).
SCALE_QUERIES = 1_000
MAX_GRID_WIDTHS = 256  # a --sigma-grid longer than this is a typo (each 32 widths cost a kernel pass)


@dataclass(frozen=True)
class SigmaGrid:
    """Explicit widths, with the text they were written as (for help, JSON and messages)."""

    widths: tuple[float, ...]
    text: str

    @classmethod
    def of(cls, widths, text: str | None = None) -> SigmaGrid:
        """Widths as given (each finite and > 0), written as ``text`` or as the widths themselves."""
        widths = tuple(float(width) for width in as_sigmas(widths))
        return cls(widths, text or ", ".join(f"{width:g}" for width in widths))

    @classmethod
    def logspace(cls, low: float, high: float, count: int) -> SigmaGrid:
        """numpy.logspace(low, high, count): count widths from 10^low to 10^high."""
        return cls(tuple(float(w) for w in np.logspace(low, high, count)), f"logspace({low:g}, {high:g}, {count})")


@dataclass(frozen=True)
class ParzenProtocol:
    """How sigma is chosen: grid rule, validation images, widening and refinement."""

    name: str
    grid: SigmaGrid | None   # None: widths around the data's scale (median nearest-sample distance / sqrt(d))
    valid_count: int | None  # None: the whole validation split
    widen: bool              # extend the grid while its best width is one of its ends
    refine_points: int       # 0: no refinement; else widths between the best width's neighbours
    origin: str = ""         # whose rule it is, when not ganbench's

    @property
    def sigma_grid(self) -> tuple[float, ...] | None:
        return self.grid.widths if self.grid else None

    @property
    def description(self) -> str:
        """One line generated from the fields, for --help and provenance."""
        parts = [self.grid.text if self.grid else
                 f"{2 * START_STEPS + 1} widths around the data's scale (median nearest-sample distance / sqrt(d))"]
        parts.append("on all validation images" if self.valid_count is None
                     else f"on the first {self.valid_count:,} validation images")
        if self.widen:
            parts.append(f"widened while the best width is an end (at most {MAX_WIDENINGS} times)")
        if self.refine_points:
            parts.append(f"then {self.refine_points} widths between the best width's neighbours")
        return (f"{self.origin}: " if self.origin else "") + ", ".join(parts)


PROTOCOLS = {
    # parzen_ll.py exactly: reproduces the paper's number; an end of the grid is reported, not fixed.
    "paper": ParzenProtocol("paper", SigmaGrid.logspace(-1, 0, 10), 1_000, widen=False, refine_points=0,
                            origin="parzen_ll.py"),
    # In 784 dimensions the mean is sharply peaked in sigma: a 26% step moves it by nats near
    # the optimum, so a second pass of 16 widths between the best width's neighbours (a 3%
    # step) follows, on the whole validation split.
    "full": ParzenProtocol("full", None, None, widen=True, refine_points=16),
}


def get_protocol(name: str) -> ParzenProtocol:
    if name not in PROTOCOLS:
        raise GanbenchError(f"unknown protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def describe_protocols() -> str:
    """Every protocol's name and rule, for the CLI's help."""
    return "; ".join(f"{name}: {rule.description}" for name, rule in PROTOCOLS.items())


def parse_sigma_grid(text: str) -> SigmaGrid:
    """``0.05,0.1,0.2`` (a comma list) or ``logspace:LOW:HIGH:COUNT`` (as numpy.logspace), sorted."""
    usage = "give widths as 0.05,0.1,0.2 or logspace:LOW:HIGH:COUNT (for example logspace:-2:0:20)"
    text = text.strip()
    if text.startswith("logspace:"):
        parts = text.split(":")[1:]
        try:
            if len(parts) != 3:
                raise ValueError
            low, high, count = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise GanbenchError(f"--sigma-grid {text!r} is not logspace:LOW:HIGH:COUNT; {usage}") from None
        if not (math.isfinite(low) and math.isfinite(high)) or not 1 <= count <= MAX_GRID_WIDTHS:
            raise GanbenchError(f"--sigma-grid {text!r}: LOW and HIGH must be finite and COUNT 1 to "
                                f"{MAX_GRID_WIDTHS}; {usage}")
        with np.errstate(over="ignore"):  # 10^400 is inf, refused below with the other bad widths
            grid = SigmaGrid.logspace(low, high, count)
    else:
        try:
            widths = [float(item) for item in text.split(",")]
        except ValueError:
            raise GanbenchError(f"--sigma-grid {text!r} is not a list of numbers; {usage}") from None
        if len(widths) > MAX_GRID_WIDTHS:
            raise GanbenchError(f"--sigma-grid has {len(widths)} widths; give at most {MAX_GRID_WIDTHS}")
        grid = SigmaGrid(tuple(widths), text)
    try:
        widths = as_sigmas(grid.widths)
    except GanbenchError:
        raise GanbenchError(f"--sigma-grid {text!r}: every width must be finite and > 0; {usage}") from None
    return SigmaGrid(tuple(float(w) for w in np.unique(widths)), grid.text)


@dataclass
class SigmaSearch:
    """The chosen width, every width's mean validation log-likelihood, and how the grid ended."""

    sigma: float
    valid_means: dict[float, float]
    at_edge: str | None  # "smallest" or "largest": the best width is an end of the grid tried
    grid: str            # the starting grid, as text
    widenings: int = 0

    def edge_warning(self) -> str | None:
        if self.at_edge is None:
            return None
        return (f"sigma {self.sigma:.4g} is the {self.at_edge} width of the grid tried ({self.grid}): the best width "
                f"may lie beyond it and the score is then too low; use the full protocol (--protocol full), which "
                f"widens the grid until the best width is inside it, or a grid reaching beyond (--sigma-grid)")


class SigmaAtGridEdgeWarning(UserWarning):
    """The chosen sigma is an end of a fixed grid: the true optimum may lie outside it."""


def _end_of_grid(means: dict[float, float]) -> str | None:
    widths = sorted(means)
    best = max(means, key=means.get)
    if best == widths[0]:
        return "smallest"
    return "largest" if best == widths[-1] else None


def _beyond(means: dict[float, float], end: str) -> np.ndarray:
    """WIDEN_STEPS widths past the given end of the grid, a STEP apart."""
    steps = STEP ** np.arange(1, WIDEN_STEPS + 1)
    return min(means) / steps if end == "smallest" else max(means) * steps


def _between_neighbours(means: dict[float, float], points: int) -> np.ndarray:
    """``points`` widths, evenly in log sigma, strictly between the best width's two neighbours."""
    widths = sorted(means)
    best = widths.index(max(means, key=means.get))
    low, high = widths[max(best - 1, 0)], widths[min(best + 1, len(widths) - 1)]
    return np.logspace(np.log10(low), np.log10(high), points + 2)[1:-1]


def data_scale_grid(valid, bank, **backend_options) -> SigmaGrid:
    """Widths s0 * STEP^k, |k| <= START_STEPS, around s0 = median nearest-sample distance / sqrt(d).

    A Gaussian kernel of width sigma in d dimensions puts its mass at distance ~sigma sqrt(d)
    from its centre, so it reaches a query's nearest samples when sigma ~ r / sqrt(d). s0 lands
    within 5% of the optimum on MNIST (0.176 against 0.179), 20-dimensional clusters (0.0094
    against 0.0098) and digits on a 0-16 scale (1.30 against 1.33); the widening covers data
    where it does not.
    """
    queries = valid[:SCALE_QUERIES]
    distances = nearest_distances(queries, bank, **backend_options)
    positive = distances[distances > 0]
    if positive.size == 0:
        raise GanbenchError(f"each of the first {len(queries):,} validation points equals a sample, so the Parzen "
                            "log-likelihood grows without bound as sigma shrinks; choose sigma on held-out data "
                            "that the samples do not contain")
    return _scale_grid(float(np.median(positive)) / math.sqrt(np.shape(queries)[1]))


def _scale_grid(scale: float) -> SigmaGrid:
    """The full protocol's starting widths around ``scale``: scale STEP^k, |k| <= START_STEPS."""
    steps = STEP ** np.arange(-START_STEPS, START_STEPS + 1)
    return SigmaGrid(tuple(float(w) for w in scale * steps), f"{scale:.4g} * 2^(k/3), |k| <= {START_STEPS}")


def nearest_distances(queries, bank, *, chunk_rows: int = CHUNK_ROWS, progress: bool = True,
                      **backend_options) -> np.ndarray:
    """Each query's distance to its nearest sample: one pass over the bank with no exponentials.

    An array bank is scanned as it is (a float64 copy of a query is then at distance 0, not at
    its float32 rounding). Under torch.distributed each rank scans its share and the minima
    are all-reduced, so every rank derives the same grid (their sigmas must agree to merge).
    """
    if streaming.is_distributed():
        source = bank if isinstance(bank, Bank) else open_bank(np.asarray(bank))
        # The ranks' inputs compared before the first collective: validation sets of other sizes failed inside
        # gloo's all-reduce (a C++ abort on one rank) instead of this one-line error.
        points = queries if isinstance(queries, torch.Tensor) else torch.as_tensor(np.asarray(queries))
        streaming.same_inputs_on_every_rank(points, source, [], min(chunk_rows, len(source)), backend_options)
        share = streaming.rank_rows(len(source), chunk_rows)
        local = streaming.stream_pass(queries, source, [], rows=share, chunk_rows=chunk_rows, progress=False,
                                      **backend_options)
        minima = streaming.all_merge(local, [], len(queries)).min_sq_distance
    elif isinstance(bank, Bank):
        minima = streaming.stream_pass(queries, bank, [], chunk_rows=chunk_rows, progress=progress,
                                       **backend_options).min_sq_distance
    else:
        minima = parzen.parzen_pass(queries, bank, [], **backend_options).min_sq_distance
    return np.sqrt(minima)


def search_sigma(valid, bank, protocol: ParzenProtocol | str = "paper", grid: SigmaGrid | None = None,
                 scorer=None, **backend_options) -> SigmaSearch:
    """The width with the highest mean validation log-likelihood under ``protocol``.

    ``grid`` replaces the protocol's starting grid (``parse_sigma_grid``). The caller passes the
    validation images the protocol uses (``evaluate`` does the slicing). Each call of the
    scorer is one pass over the bank, whatever the number of widths.
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    scorer = scorer or parzen.log_likelihood
    start = grid or protocol.grid or data_scale_grid(valid, bank, **backend_options)
    means: dict[float, float] = {}

    def score(widths) -> None:
        new = np.array([w for w in np.asarray(widths, dtype=np.float64) if float(w) not in means])
        if new.size:
            means.update(zip(new.tolist(), scorer(valid, bank, new, **backend_options).mean(axis=1).tolist()))

    widenings = _search(protocol, start, means, score, from_data=not (grid or protocol.grid))
    return SigmaSearch(max(means, key=means.get), dict(sorted(means.items())), _end_of_grid(means),
                       start.text, widenings)


def _search(protocol: ParzenProtocol, start: SigmaGrid, means: dict[float, float], score, from_data: bool) -> int:
    """The protocol's steps from ``start``: ``score(widths)`` puts each width's mean validation log-likelihood
    into ``means``; the grid widens while its best width is an end, then is refined. Returns the widenings."""
    score(start.widths)
    widenings = 0
    while protocol.widen and (end := _end_of_grid(means)) is not None:
        if widenings == MAX_WIDENINGS:
            raise GanbenchError(_no_interior_optimum(end, means, start, from_data))
        score(_beyond(means, end))
        widenings += 1
    if protocol.refine_points:
        score(_between_neighbours(means, protocol.refine_points))
    return widenings


def searched_from(protocol: ParzenProtocol | str, means: dict[float, float], given: SigmaGrid | None = None) -> bool:
    """Whether ``means`` (a saved search's widths and validation means) holds exactly the widths the protocol's
    search scores when these means guide it: from ``given``, else the protocol's grid, else a grid of the data's
    scale (``data_scale_grid``: s0 STEP^k, s0 itself one of the widths, tried for each).

    Each step of a search depends only on the means scored before it, so replaying it on the saved means
    re-derives the grid without the data: a width removed around the best, or one added, leaves a set no
    replay reaches."""
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    means = {float(width): float(mean) for width, mean in means.items()}
    start = given or protocol.grid
    starts = [start] if start else [_scale_grid(width) for width in means]
    return any(_replayed_widths(protocol, candidate, means) == set(means) for candidate in starts)


def _replayed_widths(protocol: ParzenProtocol, start: SigmaGrid, saved: dict[float, float]) -> set | None:
    """The widths the protocol's search scores from ``start`` with the saved means as its scorer; None when it
    asks for a width the saved means lack (or would widen past MAX_WIDENINGS)."""
    replayed: dict[float, float] = {}

    def score(widths) -> None:
        for width in np.asarray(widths, dtype=np.float64).tolist():
            if width not in saved:
                raise KeyError(width)
            replayed[width] = saved[width]

    try:
        _search(protocol, start, replayed, score, from_data=False)
    except (KeyError, GanbenchError):
        return None
    return set(replayed)


def _no_interior_optimum(end: str, means: dict[float, float], start: SigmaGrid, from_data: bool) -> str:
    width = min(means) if end == "smallest" else max(means)
    cause = ("validation points that equal samples make it grow without bound as sigma shrinks: choose sigma on "
             "held-out data that the samples do not contain, or give --sigma" if end == "smallest" else
             "check that the samples and the validation data are on one scale")
    if not from_data:
        cause = f"start the grid nearer the data's scale, or {cause}"
    return (f"the mean validation log-likelihood still rises at sigma {width:.3g}, the {end} width tried after "
            f"{MAX_WIDENINGS} widenings of the grid {start.text}: no best width within a sane range; {cause}")


def select_sigma(valid, bank, grid=None, protocol: ParzenProtocol | str = "paper", scorer=None,
                 **backend_options) -> tuple[float, dict[float, float]]:
    """``search_sigma``'s width and every width's mean (``grid``: widths to start from)."""
    start = None if grid is None else SigmaGrid.of(grid)
    search = search_sigma(valid, bank, protocol, start, scorer, **backend_options)
    return search.sigma, search.valid_means


def require_two_test_points(count: int) -> None:
    """std / sqrt(1) with ddof 0 is 0: one test point's "± 0" would read as a mean known exactly."""
    if count < 2:
        raise GanbenchError(f"the mean's standard error needs at least 2 test points, got {count}: score more "
                            "test points (ganbench.parzen.log_likelihood gives single points' log-likelihoods)")


def mean_and_standard_error(log_likelihoods: np.ndarray) -> tuple[float, float]:
    """Mean and std / sqrt(N) with numpy's default ddof = 0, as parzen_ll.py reports.

    The deviations are divided by the largest before they are squared (a power of two: exact), so
    log-likelihoods beyond 1e154 in size, whose squares overflow float64, keep a finite error."""
    values = np.asarray(log_likelihoods, dtype=np.float64)
    require_two_test_points(values.size)
    mean = values.mean()
    deviations = values - mean
    largest = np.abs(deviations).max() if values.size else 0.0
    if not largest:
        return float(mean), 0.0
    exponent = int(np.frexp(largest)[1])  # deviations / 2^exponent lie in (-1, 1): 2^exponent may overflow, ldexp not
    spread = np.ldexp(math.sqrt(np.mean(np.ldexp(deviations, -exponent) ** 2)), exponent)
    return float(mean), float(spread / math.sqrt(values.size))


@dataclass
class ParzenScore:
    sigma: float
    mean: float
    standard_error: float
    n_test: int
    n_bank: int
    valid_means: dict[float, float] = field(default_factory=dict)
    seconds: float = 0.0
    backend: str = "auto"
    device: str = "default"
    sigma_at_grid_edge: bool = False  # the best width is an end of a fixed grid: it may lie outside
    warning: str | None = None        # what to do about it, also issued as a SigmaAtGridEdgeWarning

    def as_dict(self) -> dict:
        return {KEY_SIGMA: self.sigma, KEY_MEAN: self.mean, KEY_STANDARD_ERROR: self.standard_error,
                "n_test": self.n_test, "n_bank": self.n_bank, "seconds": self.seconds,
                "backend": self.backend, "device": self.device, "sigma_at_grid_edge": self.sigma_at_grid_edge,
                # Each width written in full (repr: the shortest text that reads back as the same float), so that
                # widths closer than six digits stay apart and the key of ``sigma`` is str(sigma).
                "valid_means": {repr(float(s)): v for s, v in self.valid_means.items()}}


def as_scored_data(bank, valid, test, value_range: tuple[float, float] | None = None):
    """Bank, validation and test data on one scale, by the rule of ``inputs.as_data``.

    uint8 arrays are divided by 255, as bank files are. ``value_range`` defaults to the
    held-out data's: MNIST's [0, 1] when the validation and test data lie in it, and then a
    bank outside it (0-255 floats, tanh outputs) is refused; data off [0, 1] must be on one scale
    (``inputs.check_same_scale``, the bank judged by its first rows). Pass (-inf, inf) to skip
    both checks.
    """
    # ``valid`` may be None where sigma is fixed: nothing is chosen on it.
    if test is None:
        raise GanbenchError("the test data are missing: pass the points to score")
    held_out = {"the validation data": valid, "the test data": test}
    held_out = {role: as_data(role, values) for role, values in held_out.items() if values is not None}
    for role, values in held_out.items():  # empty, not 2-D, NaN or inf: named here, not as the scorer's "x"
        as_matrix(role, values)
    valid, test = held_out.get("the validation data"), held_out["the test data"]
    value_range = held_out_range(*held_out.values()) if value_range is None else value_range
    if isinstance(bank, (str, Path)):
        bank = open_bank(bank, value_range)
    elif isinstance(bank, Bank):
        bank = bank.with_range(value_range)
    else:
        bank = as_data("the bank", bank, value_range)
    if value_range is None:  # held-out data on their own scale (MNIST's [0, 1] checks the bank's range)
        first_rows = bank.head(SCALE_ROWS) if isinstance(bank, Bank) else bank[:SCALE_ROWS]
        check_same_scale({**held_out, "the samples": first_rows})
    return bank, valid, test


# What evaluate passes on to its scorer: parzen.log_likelihood's options, and streaming.log_likelihood's.
STREAMING_OPTIONS = {"chunk_rows", "progress"}
SCORER_OPTIONS = {"backend", "device", "precision", "query_block", "bank_block", *STREAMING_OPTIONS}


def _scorer_for(scorer, bank, options: dict):
    """The scorer ``evaluate`` calls: the one given, else ``streaming.log_likelihood`` for a bank on disk (a path
    or a ``Bank``) or with its options, else ``parzen.log_likelihood``. parzen.log_likelihood given such a bank
    or options is a one-line error (it raised a TypeError, or called an opened file "dtype object")."""
    on_disk = isinstance(bank, (str, Path, Bank))
    streamed = sorted(STREAMING_OPTIONS & set(options))
    if scorer is None:
        return streaming.log_likelihood if on_disk or streamed else parzen.log_likelihood
    if scorer is parzen.log_likelihood and (on_disk or streamed):
        what = (f"{streamed[0]} is an option of streaming.log_likelihood, not of parzen.log_likelihood" if streamed
                else "parzen.log_likelihood scores arrays, not a bank on disk")
        raise GanbenchError(f"{what}: pass scorer=streaming.log_likelihood (or leave scorer out)")
    return scorer


def evaluate(bank, valid, test, protocol: ParzenProtocol | str = "paper", sigma: float | None = None,
             scorer=None, sigma_grid: SigmaGrid | None = None, value_range: tuple[float, float] | None = None,
             **backend_options) -> ParzenScore:
    """Select sigma on ``valid`` (unless given: then ``valid`` may be None) and score ``test`` under the bank.

    Inputs become data as the CLI's files do (``as_scored_data``: uint8 / 255, the range
    check). ``sigma_grid`` replaces the protocol's starting grid. When the chosen width is an
    end of a fixed grid (the paper protocol), ``sigma_at_grid_edge`` is set and a
    ``SigmaAtGridEdgeWarning`` says what to do. ``scorer`` defaults to ``parzen.log_likelihood``, and to
    ``streaming.log_likelihood`` for a bank on disk or given ``chunk_rows`` or ``progress``; that one also scores
    across torch.distributed ranks.
    """
    scorer = _scorer_for(scorer, bank, backend_options)
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    if not isinstance(protocol, ParzenProtocol):
        raise GanbenchError(f"protocol must be one of {', '.join(PROTOCOLS)} (or a ParzenProtocol), got {protocol!r}")
    if not callable(scorer):
        raise GanbenchError(f"scorer must be a function like parzen.log_likelihood, got {scorer!r}")
    unknown = sorted(set(backend_options) - SCORER_OPTIONS)
    if unknown:  # a misspelt option failed only inside the first scoring call, as a TypeError
        raise GanbenchError(f"unknown option {unknown[0]!r}: evaluate passes on {', '.join(sorted(SCORER_OPTIONS))}")
    if value_range is not None and not (isinstance(value_range, (tuple, list)) and len(value_range) == 2
                                        and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                and not math.isnan(v) for v in value_range)
                                        and value_range[0] < value_range[1]):
        raise GanbenchError(f"value_range must be (low, high) numbers with low < high, got {value_range!r}")
    if sigma_grid is not None and not isinstance(sigma_grid, SigmaGrid):  # a plain list of widths: its own grid
        sigma_grid = SigmaGrid.of(sigma_grid)
    bank, valid, test = as_scored_data(bank, valid, test, value_range)
    require_two_test_points(len(test))  # before any scoring
    started = time.perf_counter()
    search = None
    if sigma is None:
        if valid is None:
            raise GanbenchError("choosing sigma needs validation data: give them, or a fixed sigma")
        valid_subset = valid[:protocol.valid_count] if protocol.valid_count else valid
        search = search_sigma(valid_subset, bank, protocol, sigma_grid, scorer, **backend_options)
        sigma = search.sigma
        if search.at_edge:
            warnings.warn(search.edge_warning(), SigmaAtGridEdgeWarning, stacklevel=2)
    scores = scorer(test, bank, [sigma], **backend_options)[0]
    mean, error = mean_and_standard_error(scores)
    return ParzenScore(sigma=sigma, mean=mean, standard_error=error, n_test=len(scores), n_bank=len(bank),
                       valid_means=search.valid_means if search else {}, seconds=time.perf_counter() - started,
                       backend=str(backend_options.get("backend", "auto")),
                       device=str(backend_options.get("device") or "default"),
                       sigma_at_grid_edge=bool(search and search.at_edge),
                       warning=search.edge_warning() if search else None)
