"""The compiled CPU pass over float32 distance tiles (ganbench.scoring.fused_rows) against float64 and eager torch."""
import math
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from tolerances import log_likelihood_bound

from ganbench import progress
from ganbench.scoring import fused_rows, partials, parzen

# Without a C++ compiler ganbench scores with the eager passes (tested below); the tests that run the
# compiled pass say so instead of failing there.
compiled = pytest.mark.skipif(not fused_rows.available(), reason="no C++ compiler here: ganbench runs the eager passes")


@pytest.fixture
def fresh_library():
    """The library looked up anew (as in a new process), and again after the test."""
    fused_rows._library.cache_clear()
    fused_rows._loaded.cache_clear()
    progress._ANNOUNCED.clear()
    yield
    fused_rows._library.cache_clear()
    fused_rows._loaded.cache_clear()


def eager_only(monkeypatch):
    monkeypatch.setattr(fused_rows, "available", lambda: False)


def counting_folds(monkeypatch) -> list:
    calls = []
    fold = fused_rows.fold_tile
    monkeypatch.setattr(fused_rows, "fold_tile", lambda *args: calls.append(1) or fold(*args))
    return calls


@compiled
def test_exponential_is_float64_accurate():
    """Each term within 1e-12 relative of float64's exp over the whole range the pass uses ([-80, 0]),
    and sums of every length (the vector tail's unused lanes add nothing) within 1e-12 of float64's."""
    values = np.linspace(0.0, 80.0, 20_001, dtype=np.float32)
    single = np.array([fused_rows.sum_of_terms(values[i:i + 1], 1.0) for i in range(len(values))])
    assert np.all(np.abs(single / np.exp(-values.astype(np.float64)) - 1.0) <= 1e-12)
    rng = np.random.default_rng(5)
    for count in [0, 1, 7, 8, 9, 15, 16, 17, 33, 1000]:
        terms = rng.uniform(0.0, 30.0, count).astype(np.float32)
        scale = np.float32(0.37)
        exponents = (terms * scale).astype(np.float64)  # the product rounded to float32, as the pass does
        assert math.isclose(fused_rows.sum_of_terms(terms, float(scale)), np.exp(-exponents).sum(), rel_tol=1e-12,
                            abs_tol=0.0 if count else 1e-300)


@compiled
@pytest.mark.parametrize("shape", [(1, 1, 1), (33, 70, 785), (100, 2049, 20), (37, 531, 9)])
def test_fused_pass_within_derived_float32_bound(shape, rng, monkeypatch):
    n, m, d = shape
    x, bank = rng.random((n, d)), rng.random((m, d))
    sigmas = np.logspace(-1, 0, 10)[[3, 9, 0, 5, 1, 8, 2, 7, 4, 6]]  # out of order: the pass sorts them
    folds = counting_folds(monkeypatch)
    reference = parzen.log_likelihood(x, bank, sigmas, backend="reference")
    fast = parzen.log_likelihood(x, bank, sigmas, backend="torch", device="cpu", query_block=32, bank_block=1000)
    assert len(folds) == math.ceil(n / 32) * math.ceil(m / 1000)
    assert np.all(np.abs(fast - reference) <= log_likelihood_bound(x, bank, sigmas, block_rows=1000))


@compiled
def test_fused_pass_gathers_only_what_counts_within_the_bound(rng, monkeypatch):
    """Clustered data (most terms negligible at small sigma, the MNIST case), blocks no size divides,
    a sigma wide enough that every term counts: gathered and dense sigmas both within the bound."""
    centres = rng.random((60, 13)) * 8
    x = centres[rng.integers(0, 60, 41)] + 0.05 * rng.normal(size=(41, 13))
    bank = centres[rng.integers(0, 60, 1033)] + 0.05 * rng.normal(size=(1033, 13))
    sigmas = np.concatenate([np.logspace(-2, 0.5, 9), [50.0]])
    folds = counting_folds(monkeypatch)
    reference = parzen.log_likelihood(x, bank, sigmas, backend="reference")
    fast = parzen.log_likelihood(x, bank, sigmas, backend="torch", device="cpu", query_block=16, bank_block=100)
    assert folds
    assert np.all(np.abs(fast - reference) <= log_likelihood_bound(x, bank, sigmas, block_rows=100))


@compiled
def test_fused_and_eager_passes_agree(rng, monkeypatch):
    """The same tiles (the same GEMM calls) give the same distances, so the same minima and nearest
    indices bit for bit, ties to the lowest index; the sums differ by rounding, each path within its bound."""
    x, bank = rng.random((70, 31)), rng.random((509, 31))
    bank[400] = bank[17]  # an exact duplicate in another block: the tie goes to row 17
    x[5] = bank[17]
    sigmas = [0.05, 0.3, 1.0]
    fused = parzen.parzen_pass(x, bank, sigmas, backend="torch", query_block=23, bank_block=64, refine=False)
    eager_only(monkeypatch)
    eager = parzen.parzen_pass(x, bank, sigmas, backend="torch", query_block=23, bank_block=64, refine=False)
    np.testing.assert_array_equal(fused.min_sq_distance, eager.min_sq_distance)
    np.testing.assert_array_equal(fused.nearest_index, eager.nearest_index)
    assert fused.nearest_index[5] == 17
    bound = log_likelihood_bound(x, bank, sigmas, block_rows=64)
    assert np.all(np.abs(fused.log_sum_exp - eager.log_sum_exp) <= 2 * bound)


@compiled
def test_nearest_neighbours_only(rng):
    x, bank = rng.random((45, 12)), rng.random((300, 12))
    result = parzen.parzen_pass(x, bank, [], backend="torch", query_block=20, bank_block=33)
    exact = ((x[:, None, :] - bank[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(result.nearest_index, exact.argmin(axis=1))  # no near-ties in random data


@compiled
def test_rows_split_over_threads_give_the_same_bits(rng):
    """Each row's arithmetic is the same whichever thread takes it."""
    tile = torch.from_numpy(rng.uniform(-1.0, 2.0, (301, 517)).astype(np.float32))
    norms = torch.from_numpy(rng.uniform(0.5, 3.0, 301).astype(np.float32))
    scales = partials.half_inverse_variances([0.2, 0.7, 3.0], tile)[:, 0]
    order = torch.argsort(scales)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            running = partials.BankPartial(torch.full((301,), math.inf), torch.zeros(301, dtype=torch.int64),
                                           torch.zeros(3, 301))
            fused_rows.fold_tile(running, tile.clone(), norms, scales[order].contiguous(), order, 0)
            results.append(running)
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for field in ("min_sq_distance", "nearest_index", "shifted_sums"):
            assert torch.equal(getattr(results[0], field), getattr(other, field))


@compiled
def test_what_the_library_would_read_wrongly_is_refused():
    """The library reads raw pointers: a tensor of another dtype or layout is an error, never read."""
    scales = partials.half_inverse_variances([0.5], torch.zeros(1))[:, 0]
    order = torch.argsort(scales)

    def state(rows):
        return partials.BankPartial(torch.full((rows,), math.inf), torch.zeros(rows, dtype=torch.int64),
                                    torch.zeros(1, rows))

    with pytest.raises(ValueError, match="float32"):
        fused_rows.fold_tile(state(4), torch.zeros(4, 6, dtype=torch.float64), torch.zeros(4), scales, order, 0)
    with pytest.raises(ValueError, match="unit column stride"):
        fused_rows.fold_tile(state(4), torch.zeros(6, 4).T, torch.zeros(4), scales, order, 0)
    with pytest.raises(ValueError, match="contiguous state"):
        fused_rows.fold_tile(state(3), torch.zeros(4, 6), torch.zeros(4), scales, order, 0)
    with pytest.raises(ValueError, match="float64"):  # the byte pass keeps exact minima in float64
        fused_rows.fold_byte_tile(state(4), torch.zeros(4, 6, dtype=torch.int32), torch.zeros(4, dtype=torch.int32),
                                  scales, order, 0)


@compiled
def test_library_shares_torchs_openmp_runtime():
    """Linked by soname, the library takes the libgomp torch loaded: one OpenMP runtime, one pool."""
    if "OpenMP" not in torch.__config__.parallel_info() or not os.path.exists("/proc/self/maps"):
        pytest.skip("torch here is not built with OpenMP, or this system has no /proc/self/maps to read")
    with open("/proc/self/maps") as maps:
        runtimes = {line.split()[-1] for line in maps if "libgomp" in line}
    assert len(runtimes) <= 1, runtimes


def test_without_a_compiler_the_eager_passes_score(rng, fresh_library, monkeypatch, capsys):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    x, bank = rng.random((20, 9)), rng.random((150, 9))
    sigmas = [0.1, 0.5]
    result = parzen.log_likelihood(x, bank, sigmas, backend="torch")
    assert "CXX=/nonexistent/g++ names no compiler found on this machine" in capsys.readouterr().err
    assert not fused_rows.available()
    reference = parzen.log_likelihood(x, bank, sigmas, backend="reference")
    assert np.all(np.abs(result - reference) <= log_likelihood_bound(x, bank, sigmas, block_rows=150))


def test_switched_off_by_the_environment(fresh_library, monkeypatch):
    monkeypatch.setenv(fused_rows.DISABLE_VARIABLE, "0")
    assert not fused_rows.available()


@compiled
@pytest.mark.parametrize("correct, wrong", [
    ("p = p * r + 0.5;", "p = p * r + 0.5001;"),           # the exponential off by up to 1.2e-5
    ("if (j + lane < count)", "if (j + lane <= count)"),  # a vector tail's unused lane counted
    ("*nearest = index_offset + first;", "*nearest = index_offset + first + 1;"),  # an index off by one
    ("if (block_minimum < *running_minimum) {",           # ties to the later block
     "if (block_minimum <= *running_minimum) {"),
    ("_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(values), shift))",  # the byte shift halved
     "_mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_sub_epi32(_mm512_loadu_si512(values), shift), 1))")
    if "avx512f" in fused_rows._cpu_identity() else
    ("const float value = static_cast<float>(values[j] - shift);",
     "const float value = static_cast<float>(values[j] - shift) / 2;"),
    ("kth_smallest(row, count, k, INFINITY)) + 2.0 * margin", "kth_smallest(row, count, k, INFINITY)) + margin"),
    ("* (1.0 + relative) / (1.0 - relative)", "* (1.0 - relative)"),  # top-k candidates' limits too tight
    ("(std::sqrt(smallest) / 255.0 + slack) * widen + slack", "(std::sqrt(smallest) / 255.0 + slack) * widen"),
    ("double limit = std::sqrt(kth) * widen + slack;", "double limit = std::sqrt(kth) * widen;"),  # rounded queries
    ("(std::sqrt(smallest) / 255.0 + slack) * widen", "(std::sqrt(smallest) / 255.0) * widen"),
    ("std::ldexp(1.0, static_cast<int>(-8 * digit))", "std::ldexp(1.0, static_cast<int>(-7 * digit))"),  # digits
    ("kept_values[j] = static_cast<float>(values[j] - minimum);",
     "kept_values[j] = static_cast<float>(values[j]) - static_cast<float>(minimum);"),
    ("      const float value = row[j] - drift[j];\n      row[j] = value;",                 # k-means' drift pass
     "      const float value = row[j] - drift[j];\n      row[j] = row[j];"),
    ("minimum = smallest[lane] < minimum ? smallest[lane] : minimum;\n    for (; j < last; ++j)",
     "minimum = smallest[0];\n    for (; j < last; ++j)"),
])
def test_a_wrong_build_is_never_used(correct, wrong, tmp_path, fresh_library, monkeypatch, capsys):
    """A library with a wrong exponential, sum, index, byte shift or candidate limit fails the check it gets on loading."""
    source = fused_rows.SOURCE.read_text()
    assert correct in source
    broken = tmp_path / "fused_rows.cpp"
    broken.write_text(source.replace(correct, wrong))
    monkeypatch.setattr(fused_rows, "SOURCE", broken)
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    assert fused_rows.library() is None
    assert "disagrees with float64" in capsys.readouterr().err


@compiled
def test_a_build_started_in_the_background_is_the_one_used(tmp_path, fresh_library, monkeypatch):
    """``build_in_background`` compiles on its own thread; ``library`` waits for it instead of compiling
    again: one compiler run, on that thread, one library in the cache, no temporary file left."""
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path))
    threads = []
    original = fused_rows._run_compiler
    monkeypatch.setattr(fused_rows, "_run_compiler", lambda command, output: threads.append(
        threading.current_thread().name) or original(command, output))
    fused_rows.build_in_background()
    assert fused_rows.available()
    assert threads == ["ganbench-fused-rows-build"]
    entries = [path.name for path in (tmp_path / "native").iterdir()]
    assert len(entries) == 1 and entries[0].startswith("fused_rows-") and entries[0].endswith(".so")


FAKE_COMPILER = """#!{python}
import os, signal, sys, time
arguments = sys.argv[1:]
if arguments == ["--version"]:
    print("a stand-in compiler")
    sys.exit(0)
if "{mode}" == "slow":
    time.sleep(60)
if "{mode}" == "refusing" and "-fopenmp" in arguments:
    sys.exit(1)  # a compiler without OpenMP
if "{mode}" == "interrupted" and "-fopenmp" in arguments:
    os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C reaches the compiler too
    time.sleep(60)
with open(arguments[arguments.index("-o") + 1], "w") as output:
    output.write("a build without OpenMP")
"""


def fake_compiler(tmp_path, mode: str) -> str:
    path = tmp_path / f"compiler-{mode}"
    path.write_text(FAKE_COMPILER.format(python=sys.executable, mode=mode))
    path.chmod(0o755)
    return str(path)


def test_a_command_that_ends_first_does_not_wait_for_the_compiler(tmp_path):
    """A process that ends while the background build runs (a command that failed on its input) exits at
    once: the compiler is stopped and its partial output removed from the cache."""
    script = "from ganbench.scoring import fused_rows; import time; fused_rows.build_in_background(); time.sleep(1)"
    environment = {**os.environ, "CXX": fake_compiler(tmp_path, "slow"), "GANBENCH_CACHE": str(tmp_path / "cache")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], env=environment, check=True, timeout=50)
    assert time.perf_counter() - started < 30     # the stand-in compiler sleeps 60 s
    assert not list((tmp_path / "cache" / "native").iterdir())


BUSY_LOAD = """
import time, torch
from ganbench.scoring import fused_rows

def busy_load():  # a cached build's load check runs torch code: made long enough that the process ends inside it
    a = torch.randn(256, 256)
    stop = time.perf_counter() + 1.0
    while time.perf_counter() < stop:
        a = (a @ a).tanh_()
    return None

fused_rows._loaded = busy_load
fused_rows.build_in_background()
"""


def test_a_process_that_ends_during_the_load_check_exits_cleanly(tmp_path):
    """Exiting while the background thread ran torch code aborted in torch's thread pool ("terminate
    called without an active exception", status 134); the thread is now joined at exit."""
    for _ in range(2):
        completed = subprocess.run([sys.executable, "-c", BUSY_LOAD], capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0 and "terminate" not in completed.stderr, completed.stderr


def test_a_compiler_stopped_by_a_signal_leaves_no_build(tmp_path, fresh_library, monkeypatch):
    """Only a compiler that refuses -fopenmp is tried without it: one stopped by a signal (Ctrl-C) fails
    the build, instead of caching a one-thread library every later run would load."""
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path))
    with pytest.raises(OSError):
        fused_rows._compiled([fake_compiler(tmp_path, "interrupted")])
    assert not list((tmp_path / "native").iterdir())
    # The same stand-in refusing -fopenmp with an error instead: the build without it is the one kept.
    built = fused_rows._compiled([fake_compiler(tmp_path, "refusing")])
    assert built.read_text() == "a build without OpenMP"


@compiled
def test_a_damaged_cached_library_is_compiled_again(tmp_path, fresh_library, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path))
    built = fused_rows._compiled(fused_rows._compiler())
    built.write_bytes(b"not a shared library")  # as a disk error or an interrupted copy might leave it
    assert fused_rows.available()
    assert built.read_bytes()[:4] == b"\x7fELF"


def eight_bit(rng, count, dimension):
    """What dividing bytes by 255 gives in float64 (8-bit from d = 1; byte_distances.min_dimension)."""
    return rng.integers(0, 256, (count, dimension)).astype(np.float64) / 255.0


@compiled
def test_fused_byte_pass_agrees_with_the_eager_one_and_the_bound(rng, monkeypatch):
    """8-bit queries and bank (exact int8 distances): the fused pass gives the eager pass's exact
    minima and indices (ties to the lowest index), and sums within the float32 bound of float64."""
    from ganbench.scoring import byte_distances

    if not byte_distances.int8_product_is_exact():
        pytest.skip("this torch build's CPU int8 product is not exact: ganbench does not use it")
    x, bank = eight_bit(rng, 53, 37), eight_bit(rng, 611, 37)
    bank[500] = bank[20]  # a duplicate in another block: the tie goes to row 20
    x[3] = bank[20]
    sigmas = [0.3, 0.05, 1.0]
    folds = []
    fold = fused_rows.fold_byte_tile
    monkeypatch.setattr(fused_rows, "fold_byte_tile", lambda *args: folds.append(1) or fold(*args))
    fused = parzen.parzen_pass(x, bank, sigmas, backend="torch", query_block=19, bank_block=64, refine=False)
    assert folds
    with monkeypatch.context() as patch:
        eager_only(patch)
        eager = parzen.parzen_pass(x, bank, sigmas, backend="torch", query_block=19, bank_block=64, refine=False)
    np.testing.assert_array_equal(fused.min_sq_distance, eager.min_sq_distance)
    np.testing.assert_array_equal(fused.nearest_index, eager.nearest_index)
    assert fused.nearest_index[3] == 20 and fused.min_sq_distance[3] == 0.0
    reference = parzen.parzen_pass(x, bank, sigmas, backend="reference")
    bound = log_likelihood_bound(x, bank, sigmas, block_rows=64)
    assert np.all(np.abs(fused.log_sum_exp - reference.log_sum_exp) <= bound)


@compiled
def test_terms_down_to_the_cutoff_are_summed():
    """A row whose nearest term is 1 and 10,000 others sit at exponent 22 (each e^-22, together 2.8e-6 of
    the sum, 47 float32 ulps of it): the pass keeps every term above e^-40 of the largest, so the sum
    matches float64 to a few ulps; a pass that cut at e^-20 would be off by all of them."""
    scale = 0.5
    tile = torch.full((1, 10_001), 22.0 / scale)
    tile[0, 0] = 0.0
    running = partials.BankPartial(torch.full((1,), math.inf), torch.zeros(1, dtype=torch.int64), torch.zeros(1, 1))
    scales = torch.tensor([scale])
    fused_rows.fold_tile(running, tile, torch.zeros(1), scales, torch.zeros(1, dtype=torch.int64), 0)
    expected = 1.0 + 10_000 * math.exp(-22.0)
    assert math.isclose(float(running.shifted_sums[0, 0]), expected, rel_tol=4 * 2.0**-24)


@compiled
@pytest.mark.parametrize("data, k", [("float32", 1), ("float32", 2), ("float32", 3), ("float32", 17),
                                     ("8-bit", 1), ("8-bit", 3), ("8-bit", 17)])
def test_exact_top_k_with_fused_candidates_equals_the_eager_one(data, k, rng, monkeypatch):
    """The fused candidates (a tile's candidate rule in one compiled read; for float32 data the distances
    too) give exact top-k's float64 answer bit for bit: exact copies in two blocks that overflow a row's
    slots (the eager rule then), a near-tie, blocks no size divides, k past what the library keeps (17)."""
    from ganbench.scoring import byte_distances, neighbours

    if data == "8-bit" and not byte_distances.int8_product_is_exact():
        pytest.skip("this torch build's CPU int8 product is not exact: ganbench does not use it")
    bank = eight_bit(rng, 413, 21) if data == "8-bit" else rng.random((413, 21)).astype(np.float32)
    bank[10:20] = bank[300:310] = bank[7]                         # copies of one row, in two blocks
    others = eight_bit(rng, 45, 21) if data == "8-bit" else rng.random((45, 21)).astype(np.float32)
    queries = np.concatenate([bank[[7, 8]], others])
    if data == "float32":
        queries[5] = bank[9] + np.float32(1e-7)                    # a near-tie
    name = "near_byte_candidates" if data == "8-bit" else "near_candidates"
    calls = []
    original = getattr(fused_rows, name)
    monkeypatch.setattr(fused_rows, name, lambda *args: calls.append(original(*args)) or calls[-1])
    monkeypatch.setattr(fused_rows, "CANDIDATES_PER_ROW", 4)      # the copies overflow it: the eager rule
    fused = neighbours.nearest(queries, bank, k=k, exact_ranking=True, query_block=13, reference_block=50)
    assert calls and (k > 16 or (any(found is None for found in calls) and any(calls)))
    with monkeypatch.context() as patch:
        eager_only(patch)
        eager = neighbours.nearest(queries, bank, k=k, exact_ranking=True, query_block=13, reference_block=50)
    for got, expected in zip(fused, eager):
        np.testing.assert_array_equal(got, expected)
    if k <= 16:
        assert np.all(fused[1][0] == (np.r_[7, 10:20, 300:310])[:k]) and np.all(fused[0][0] == 0.0)


def test_a_cxx_with_unbalanced_quotes_names_no_compiler(monkeypatch):
    """CXX='"g++' raised shlex's "No closing quotation" as a traceback; it names no compiler, as a missing one."""
    monkeypatch.setenv("CXX", '"g++')
    assert fused_rows._compiler() is None
    monkeypatch.setenv("CXX", "sh -O2")  # a command with arguments still splits (sh is on every POSIX system)
    assert fused_rows._compiler()[1:] == ["-O2"]
