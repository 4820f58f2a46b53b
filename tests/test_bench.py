"""The benchmark's peers must compute the same numbers as ganbench, or their timings mean nothing."""
import sys

import numpy as np

from ganbench.paper import bench, peers
from ganbench.scoring import parzen


def test_authors_port_equals_the_float64_reference():
    # The authors' parzen_ll.py method backs the end-to-end speed-up: it must compute the
    # same quantity. Both are float64; the direct difference form loses at most ~1e-12 here.
    rng = np.random.default_rng(5)
    x, bank = rng.random((23, 17)), rng.random((41, 17))
    for sigma in (0.1, 0.37, 1.0):
        authors = bench.authors_log_likelihood(x, bank, sigma, batch_size=10)  # batches that do not divide 23
        reference = parzen.log_likelihood(x, bank, [sigma], backend="reference")[0]
        np.testing.assert_allclose(authors, reference, rtol=0, atol=1e-9)


def test_run_case_reports_every_method_with_its_error():
    rows = bench.run_case(bench.BenchCase(n=37, m=53, d=19, sigmas=3), repeats=1, authors_slice=5, peers=False)
    timed = {row["method"]: row for row in rows if "seconds" in row}
    assert "ganbench torch" in timed and "float32 matmul (floor)" in timed
    assert timed["ganbench float64 reference"]["max_abs_error_nats"] == 0.0
    # float32 GEMM-form distances on [0, 1]^19 data are off by ~1e-5 at most; at sigma 0.1
    # that moves log p by ~1e-5 / (2 * 0.01) = 5e-4 nats: 1e-2 is a wide, safe bound.
    assert timed["ganbench torch"]["max_abs_error_nats"] < 1e-2
    authors = next(row for name, row in timed.items() if name.startswith("authors'"))
    # The port computes in its inputs' float32: a sum of d squared terms loses at most
    # d * 2^-24 of its value, here <= 19 * 6e-8 * (19 / (2 * 0.1^2)) = 1.1e-3 nats.
    assert authors["max_abs_error_nats"] < 1.1e-3
    assert min(row["ratio_to_ganbench"] for name, row in timed.items() if name.startswith("ganbench")) == 1.0


def test_peer_in_a_child_process_computes_the_estimator():
    # The naive peer in float32: squared distances of [0, 1]^13 rows off by ~(d + 4) u (|x|^2 + |s|^2)
    # <= 17 * 6e-8 * 26 = 2.7e-5, moving log p by at most that / (2 sigma^2) = 1.3e-3 at sigma 0.1;
    # the logsumexp and the constant add a few u of values ~10. 2e-3 holds with room.
    rng = np.random.default_rng(3)
    x, bank, sigmas = rng.random((23, 13)), rng.random((1_031, 13)), [0.1, 0.4]
    outcome = peers.run_isolated("naive", x, bank, sigmas, repeats=1)
    reference = parzen.log_likelihood(x, bank, sigmas, backend="reference")
    assert np.abs(outcome["values"] - reference).max() < 2e-3
    assert outcome["seconds"] > 0 and outcome["first_call_seconds"] > 0


def test_a_crashing_or_failing_peer_is_a_recorded_status():
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    assert peers.run_child(crash) == {"status": "crashed (SIGSEGV)"}
    failing = [sys.executable, "-c", "raise RuntimeError('no compiler')"]
    assert peers.run_child(failing) == {"status": "failed: RuntimeError: no compiler"}
    assert peers.run_child([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.5) == {
        "status": "timed out after 0.5 s"}


def test_bench_rows_record_a_failed_peer(monkeypatch):
    monkeypatch.setattr(peers, "available", lambda name: True)
    monkeypatch.setattr(peers, "run_isolated", lambda name, *args, **kwargs: {"status": "crashed (SIGSEGV)"})
    rows = bench.run_case(bench.BenchCase(n=11, m=13, d=5, sigmas=2), repeats=1, authors_slice=3)
    failed = [row for row in rows if "status" in row]
    assert [row["method"] for row in failed] == [peers.PEERS["compiled"], peers.PEERS["keops"]]
    report = {"rows": rows, "unavailable": [], "paper_protocol": {"ganbench_seconds": 1.0,
                                                                  "authors_seconds_scaled": 2.0, "speedup": 2.0}}
    assert bench.format_report(report).count("crashed (SIGSEGV)") == 2
