"""Where the time of one GPU Parzen pass goes: torch.profiler over the whole ``parzen_pass``.

    python benchmarks/gpu_profile.py              # prints the top operations by GPU and host time

For each case (n, m, sigmas) it warms up (autotuning included), then profiles one call and
prints the operations that take the most GPU time and the most host time, and the call's
wall time. Complements benchmarks/gpu_check.py, which times but does not break down.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from ganbench.data import load_mnist
from ganbench.scoring import parzen

CASES = [(10_000, 10_000, 16), (256, 1_000_000, 10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=15, help="operations to list per table")
    args = parser.parse_args()
    mnist = load_mnist(fetch=False)
    base_bank = torch.from_numpy(mnist.train_x).cuda()
    base_queries = torch.from_numpy(mnist.test_x).cuda()
    for n, m, sigma_count in CASES:
        generator = torch.Generator(device="cuda").manual_seed(0)
        index = torch.randint(0, len(base_bank), (m,), device="cuda", generator=generator)
        bank = (base_bank[index] + 0.01 * torch.rand(m, 784, device="cuda", generator=generator)).contiguous()
        queries = base_queries[:n].contiguous()
        sigmas = np.logspace(-1, 0, sigma_count)

        def run():
            return parzen.parzen_pass(queries, bank, sigmas, backend="triton", device="cuda")

        for _ in range(3):
            run()
        torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
            run()
            torch.cuda.synchronize()
        averages = profiler.key_averages()
        print(f"\n=== n={n} m={m} sigmas={sigma_count}: one call {wall * 1e3:.2f} ms wall ===")
        print(averages.table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=60))
        print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))
        bank = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
