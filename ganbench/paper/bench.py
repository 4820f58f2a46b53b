"""Throughput of the Parzen scorer beside what users would otherwise run, measured in one run.

Every method scores the same queries against the same bank over the same sigma grid and
is checked against the float64 reference. Rows report seconds (median of repeats),
pairs per second, GEMM-equivalent GFLOP/s (2 n m d per pass), the ratio to a plain
float32 matmul of the same shape (the floor: every method must at least form x.s), and
the largest error in nats.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from ganbench.machine import machine_info  # noqa: F401  (re-exported for benchmarks/)
from ganbench.paper import peers as peer_processes
from ganbench.scoring import parzen, protocol


@dataclass
class BenchCase:
    n: int
    m: int
    d: int
    sigmas: int


DEFAULT_CASES = [BenchCase(1_000, 1_000, 784, 1), BenchCase(1_000, 1_000, 784, 10),
                 BenchCase(10_000, 10_000, 784, 1), BenchCase(10_000, 10_000, 784, 10)]


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(function, repeats: int, device: str = "cpu") -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def authors_log_likelihood(x: np.ndarray, bank: np.ndarray, sigma: float, batch_size: int = 100) -> np.ndarray:
    """A faithful NumPy port of the authors' parzen_ll.py: per batch, the full (batch, m, d)
    difference tensor, scaled by sigma, squared, summed, then a log-mean-exp."""
    d = x.shape[1]
    out = []
    for start in range(0, len(x), batch_size):
        a = (x[start:start + batch_size, None, :] - bank[None, :, :]) / sigma
        t = -0.5 * (a ** 2).sum(2)
        largest = t.max(1, keepdims=True)
        out.append(largest[:, 0] + np.log(np.exp(t - largest).mean(1)) - d * math.log(sigma * math.sqrt(2 * math.pi)))
    return np.concatenate(out)


def cdist_log_likelihood(x: torch.Tensor, bank: torch.Tensor, sigmas, chunk: int = 1024) -> np.ndarray:
    """What a user would write with torch: cdist, square, logsumexp, per sigma, in chunks."""
    d, m = x.shape[1], bank.shape[0]
    rows = []
    for start in range(0, len(x), chunk):
        squared = torch.cdist(x[start:start + chunk], bank) ** 2
        rows.append(torch.stack([torch.logsumexp(-squared / (2 * s * s), dim=1) for s in sigmas]))
    constant = torch.as_tensor(parzen.normalising_constant(sigmas, m, d), dtype=torch.float32)[:, None]
    return (torch.cat(rows, dim=1) - constant).double().numpy()


def _data(case: BenchCase, seed: int = 0):
    """MNIST-like inputs without the download: pixels in [0, 1], mostly dark, as digits are."""
    rng = np.random.default_rng(seed)
    make = lambda rows: (rng.random((rows, case.d), dtype=np.float32) ** 4)  # noqa: E731
    return make(case.n), make(case.m), np.logspace(-1, 0, case.sigmas) if case.sigmas > 1 else np.array([0.2])


def run_case(case: BenchCase, device: str = "cpu", repeats: int = 3, authors_slice: int = 10,
             include_reference_timing: bool = True, peers: bool = True) -> list[dict]:
    """Every method on one case; ``peers`` adds the torch.compile'd naive code and KeOps (when
    installed), each in a child process (``ganbench.paper.peers``)."""
    x, bank, sigmas = _data(case)
    started = time.perf_counter()
    reference = parzen.log_likelihood(x, bank, sigmas, backend="reference")
    reference_seconds = time.perf_counter() - started  # one run: it is the slowest exact path
    x_t, bank_t = torch.from_numpy(x).to(device), torch.from_numpy(bank).to(device)
    a = torch.randn(case.n, case.d, device=device)
    b = torch.randn(case.d, case.m, device=device)
    out = torch.empty(case.n, case.m, device=device)
    floor = median_seconds(lambda: torch.matmul(a, b, out=out), repeats, device)
    methods = {"ganbench torch": lambda: parzen.log_likelihood(x_t, bank_t, sigmas, backend="torch", device=device)}
    if device.startswith("cuda"):
        methods["ganbench triton"] = lambda: parzen.log_likelihood(x_t, bank_t, sigmas, backend="triton", device=device)
    methods["torch cdist + logsumexp"] = lambda: cdist_log_likelihood(x_t.cpu(), bank_t.cpu(), sigmas)
    rows = []
    for name, method in methods.items():
        seconds = median_seconds(method, repeats, device)
        rows.append(_row(case, name, seconds, floor, np.abs(method() - reference).max()))
    if include_reference_timing:
        rows.append(_row(case, "ganbench float64 reference", reference_seconds, floor, 0.0))
    # The authors' method, timed on a slice of the queries and scaled linearly (its cost is
    # exactly linear in n and in the number of sigmas); accuracy checked on that slice.
    piece = x[:authors_slice]
    authors_log_likelihood(piece, bank, sigmas[0], batch_size=authors_slice)  # warm-up (first-touch pages)
    started = time.perf_counter()
    authors = np.stack([authors_log_likelihood(piece, bank, s, batch_size=authors_slice) for s in sigmas])
    scaled = (time.perf_counter() - started) * case.n / len(piece)
    row = _row(case, f"authors' parzen_ll.py (NumPy port; {len(piece)} queries timed, scaled)", scaled, floor,
               np.abs(authors - reference[:, :len(piece)]).max())
    rows.append(row)
    rows.extend(_optional_rows(case, x, bank, sigmas, reference, floor))
    if peers:
        rows.extend(peer_rows(case, x, bank, sigmas, reference, floor, device, repeats))
    rows.append(_row(case, "float32 matmul (floor)", floor, floor, float("nan")))
    fastest = min(r["seconds"] for r in rows if r["method"].startswith("ganbench") and "seconds" in r)
    for r in rows:
        if "seconds" in r:
            r["ratio_to_ganbench"] = r["seconds"] / fastest
    return rows


def _optional_rows(case, x, bank, sigmas, reference, floor) -> list[dict]:
    rows = []
    if importlib.util.find_spec("sklearn") is not None:
        from sklearn.neighbors import KernelDensity

        piece = x[:200]

        def sklearn_scores():
            return np.stack([KernelDensity(bandwidth=s).fit(bank).score_samples(piece) for s in sigmas])

        started = time.perf_counter()
        scores = sklearn_scores()
        scaled = (time.perf_counter() - started) * case.n / len(piece)
        rows.append(_row(case, f"scikit-learn KernelDensity ({len(piece)} queries timed, scaled)", scaled, floor,
                         np.abs(scores - reference[:, :len(piece)]).max()))
    return rows


KEOPS_TIMED_PAIRS = 1_000_000


def peer_rows(case, x, bank, sigmas, reference, floor, device: str, repeats: int) -> list[dict]:
    """The compiled naive code and KeOps: a timed row each, or a row with the status of its failure
    (a crash is a result). ``first_call_seconds`` includes compiling."""
    rows = []
    for name in ("compiled", "keops"):
        if not peer_processes.available(name):
            continue  # listed once by unavailable_methods
        print(f"ganbench: running {peer_processes.PEERS[name]} in a child process", file=sys.stderr)
        # KeOps on the CPU runs ~10^6 pairs per sigma a second: timed on a slice of the queries
        # and scaled linearly, as the authors' method is (its cost is exactly linear in n).
        sliced = name == "keops" and not device.startswith("cuda")
        rows_timed = max(1, min(len(x), KEOPS_TIMED_PAIRS // len(bank))) if sliced else len(x)
        method = peer_processes.PEERS[name]
        if rows_timed < len(x):
            method += f" ({rows_timed} queries timed, scaled)"
        outcome = peer_processes.run_isolated(name, x[:rows_timed], bank, sigmas, device=device, repeats=repeats)
        if "status" in outcome:
            rows.append({"method": method, "n": case.n, "m": case.m, "d": case.d,
                         "sigmas": case.sigmas, "status": outcome["status"]})
            continue
        scale = len(x) / rows_timed
        row = _row(case, method, outcome["seconds"] * scale, floor,
                   np.abs(outcome["values"] - reference[:, :rows_timed]).max())
        row["first_call_seconds"] = outcome["first_call_seconds"]  # compiling included; on the slice when sliced
        rows.append(row)
    return rows


def unavailable_methods() -> list[dict]:
    """The optional comparisons this machine cannot run: reported once per run, not once per case."""
    missing = [("scikit-learn KernelDensity", "sklearn"), ("KeOps", "pykeops")]
    return [{"method": method, "status": "not installed"} for method, module in missing
            if importlib.util.find_spec(module) is None]


def _row(case: BenchCase, method: str, seconds: float, floor: float, error: float) -> dict:
    pairs = case.n * case.m
    return {"method": method, "n": case.n, "m": case.m, "d": case.d, "sigmas": case.sigmas,
            "seconds": seconds, "pairs_per_second": pairs / seconds,
            "gemm_gflops": 2.0 * pairs * case.d / seconds / 1e9, "ratio_to_matmul": seconds / floor,
            "max_abs_error_nats": float(error)}


def protocol_end_to_end(mnist, bank: np.ndarray, device: str = "cpu", authors_slice: int = 10) -> dict:
    """The paper protocol (10 sigmas on 1,000 validation images, then 10,000 test images) by
    ganbench, against the authors' method timed on a slice and scaled to the same work."""
    started = time.perf_counter()
    score = protocol.evaluate(bank, mnist.valid_x, mnist.test_x, "paper", backend="torch", device=device)
    ours = time.perf_counter() - started
    grid = protocol.PROTOCOLS["paper"].sigma_grid
    piece = mnist.valid_x[:authors_slice]
    authors_log_likelihood(piece, bank, grid[0], batch_size=authors_slice)  # warm-up
    started = time.perf_counter()
    authors_log_likelihood(piece, bank, grid[0], batch_size=authors_slice)
    per_query_sigma = (time.perf_counter() - started) / len(piece)
    query_sigma_evaluations = 1_000 * len(grid) + len(mnist.test_x)  # parzen_ll.py: one pass per sigma
    authors = per_query_sigma * query_sigma_evaluations
    return {"ganbench_seconds": ours, "authors_seconds_scaled": authors, "speedup": authors / ours,
            "authors_timed_queries": len(piece), "query_sigma_evaluations": query_sigma_evaluations,
            "mean": score.mean, "sigma": score.sigma}


QUICK_CASES = DEFAULT_CASES[:2]  # the 1,000 x 1,000 cases
TABLE_COLUMNS = ["method", "n", "m", "sigmas", "seconds", "pairs_per_second", "gemm_gflops", "ratio_to_matmul",
                 "ratio_to_ganbench", "max_abs_error_nats", "first_call_seconds"]


def run_report(cases: list[BenchCase], mnist, device: str, repeats: int, command: str, peers: bool = True) -> dict:
    """Every case, then the paper protocol end to end on MNIST, with the machine they ran on."""
    rows = []
    for case in cases:
        print(f"ganbench: benchmarking n={case.n} m={case.m} d={case.d} sigmas={case.sigmas}", file=sys.stderr)
        rows.extend(run_case(case, device=device, repeats=repeats, peers=peers))
    end_to_end = protocol_end_to_end(mnist, mnist.train_x[:10_000], device=device)
    return {"machine": machine_info(), "device": device, "rows": rows, "unavailable": unavailable_methods(),
            "paper_protocol": end_to_end, "command": command}


def format_report(report: dict) -> str:
    """The report as the plain-text table ``ganbench bench`` prints."""
    import pandas as pd

    frame = pd.DataFrame([row for row in report["rows"] if "seconds" in row])
    lines = [frame.reindex(columns=TABLE_COLUMNS).to_string(index=False, float_format=lambda v: f"{v:.4g}")]
    lines.extend(f"{row['method']} (n={row['n']} m={row['m']} sigmas={row['sigmas']}): {row['status']}"
                 for row in report["rows"] if "status" in row)
    lines.extend(f"{row['method']}: {row['status']}" for row in report["unavailable"])
    end_to_end = report["paper_protocol"]
    lines.append(f"paper protocol end to end: ganbench {end_to_end['ganbench_seconds']:.2f} s, authors' method "
                 f"{end_to_end['authors_seconds_scaled']:.0f} s (scaled), {end_to_end['speedup']:.0f}x")
    return "\n".join(lines)
