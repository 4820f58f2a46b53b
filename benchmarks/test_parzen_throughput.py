"""pytest-benchmark suite: `pytest benchmarks/` (not part of the CI test command).

Every timed call synchronises the device. Compare methods within one run only.
"""
import numpy as np
import pytest
import torch

from ganbench.paper import bench
from ganbench.scoring import parzen

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASES = bench.DEFAULT_CASES  # the cases of `ganbench bench`, defined once
BACKENDS = ["torch"] + (["triton"] if DEVICE == "cuda" else [])


def synchronized(function):
    def run():
        result = function()
        bench.synchronize(DEVICE)
        return result
    return run


@pytest.fixture(params=CASES, ids=lambda c: f"n{c.n}-m{c.m}-s{c.sigmas}")
def case(request):
    x, bank, sigmas = bench._data(request.param)
    return torch.from_numpy(x).to(DEVICE), torch.from_numpy(bank).to(DEVICE), sigmas


@pytest.mark.parametrize("backend", BACKENDS)
def test_ganbench(benchmark, case, backend):
    x, bank, sigmas = case
    benchmark.group = f"{len(x)}x{len(bank)} sigmas={len(sigmas)}"
    benchmark(synchronized(lambda: parzen.log_likelihood(x, bank, sigmas, backend=backend, device=DEVICE)))


def test_ganbench_8bit(benchmark, case):
    """The same shapes with 8-bit data (a / 255, as MNIST): exact int8 products on the CPU, the int8
    kernel on a GPU; the float32 matmul of the group above is the floor to compare with."""
    x, bank, sigmas = case
    x8, bank8 = (torch.round(x * 255) / 255, torch.round(bank * 255) / 255)
    benchmark.group = f"{len(x)}x{len(bank)} sigmas={len(sigmas)}"
    benchmark(synchronized(lambda: parzen.log_likelihood(x8, bank8, sigmas, device=DEVICE)))


def test_matmul_floor(benchmark, case):
    x, bank, sigmas = case
    benchmark.group = f"{len(x)}x{len(bank)} sigmas={len(sigmas)}"
    benchmark(synchronized(lambda: x @ bank.T))


def test_cdist_logsumexp(benchmark, case):
    x, bank, sigmas = case
    benchmark.group = f"{len(x)}x{len(bank)} sigmas={len(sigmas)}"
    benchmark.pedantic(lambda: bench.cdist_log_likelihood(x.cpu(), bank.cpu(), sigmas), rounds=2, iterations=1)


def test_float64_reference(benchmark, case):
    x, bank, sigmas = case
    if len(x) > 1_000:
        pytest.skip("the float64 reference is timed at 1,000 x 1,000 only (minutes otherwise)")
    benchmark.group = f"{len(x)}x{len(bank)} sigmas={len(sigmas)}"
    benchmark.pedantic(lambda: parzen.log_likelihood(x.cpu().numpy(), bank.cpu().numpy(), sigmas, backend="reference"),
                       rounds=2, iterations=1)


def test_authors_method_slice(benchmark, case):
    """The authors' broadcast-difference loop on 10 queries (scale by n / 10 to compare)."""
    x, bank, sigmas = case
    benchmark.group = f"authors slice, m={len(bank)} sigmas={len(sigmas)}"
    piece, bank_np = x[:10].cpu().numpy(), bank.cpu().numpy()
    benchmark.pedantic(lambda: [bench.authors_log_likelihood(piece, bank_np, s, batch_size=10) for s in sigmas],
                       rounds=2, iterations=1)
    assert np.isfinite(bench.authors_log_likelihood(piece, bank_np, sigmas[0], batch_size=10)).all()
