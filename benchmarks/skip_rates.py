"""How many exponentials the int8 kernel's per-tile skip leaves out on MNIST: `python benchmarks/skip_rates.py`.

A term exp(-(D - D_min) / 2 sigma^2) below e^-36 of its row's largest cannot move a float64 sum, so
it need not be computed. The GPU kernel (``kernels/parzen_int8.py``) can only leave out whole
tiles: per sigma, a (BLOCK_M, BLOCK_N) tile's exponentials are skipped when every term of every row
lies that far below the row's running minimum within its split of the bank. This replays that rule
exactly, in float64 on the CPU (no GPU needed: it counts, it does not time), for 10,000 MNIST test
images against 10,000 training images (an 8-bit bank) and 10,000 samples of the shipped generator,
over the targets' grid (16 sigmas, logspace(-1, 0)), with the splits an H100 or H200 gets
(``parzen_lse._split_rows`` with 132 multiprocessors), at the kernel's tiles. Per sigma it reports
the share of (tile, sigma) exponential blocks evaluated under the kernel's rule, under the same rule
with each row's exact minimum known beforehand (a two-pass kernel), and the share of single terms
that can count. Writes results/int8-skip-rates.json.
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch
from ganbench.kernels import parzen_lse
from ganbench.kernels.parzen_int8 import SKIP_NATS

from ganbench import SHIPPED_GENERATOR, atomic
from ganbench.data import load_mnist
from ganbench.gan import sampling

GRID = np.logspace(-1, 0, 16)
TILES = ((64, 32), (64, 64), (128, 32))  # (BLOCK_M, BLOCK_N): the shipped tile, the one-digit one, 8 warps
MULTIPROCESSORS = 132                    # H100 SXM and H200


def rows_per_split(n_queries: int, n_bank: int, block_n: int) -> int:
    """``parzen_lse._split_rows`` for a GPU with MULTIPROCESSORS multiprocessors."""
    query_blocks = math.ceil(n_queries / parzen_lse.MAX_BLOCKS["BLOCK_M"])
    splits = max(1, math.ceil(2 * MULTIPROCESSORS / query_blocks))
    multiple = max(block_n, parzen_lse.SPLIT_ROWS_MULTIPLE)
    return max(math.ceil(math.ceil(n_bank / splits) / multiple) * multiple, multiple)


def squared_distances(queries: np.ndarray, bank: np.ndarray) -> torch.Tensor:
    x, s = torch.from_numpy(queries).double(), torch.from_numpy(bank).double()
    return (x.pow(2).sum(1)[:, None] + s.pow(2).sum(1)[None, :] - 2 * x @ s.T).clamp_min(0)


def tile_rates(distances: torch.Tensor, block_m: int, block_n: int) -> dict:
    """Per sigma, the share of (tile, sigma) blocks whose exponentials run: the kernel's rule (running
    minima within each split) and with exact minima."""
    n, m = distances.shape
    split_rows = rows_per_split(n, m, block_n)
    # A tile runs sigma's exponentials when its smallest gap to a row's minimum is <= 36 nats at sigma.
    thresholds = torch.from_numpy(SKIP_NATS * 2 * GRID**2)
    exact_minima = distances.min(1).values
    running = torch.zeros(len(GRID), dtype=torch.int64)
    exact = torch.zeros(len(GRID), dtype=torch.int64)
    tiles = 0
    for first_row in range(0, n, block_m):
        rows = distances[first_row:first_row + block_m]
        for split_start in range(0, m, split_rows):
            split = rows[:, split_start:split_start + split_rows]
            blocks = math.ceil(split.shape[1] / block_n)
            padded = torch.nn.functional.pad(split, (0, blocks * block_n - split.shape[1]), value=math.inf)
            block_minima = padded.view(len(rows), blocks, block_n).min(2).values          # (rows, blocks)
            new_minima = torch.cummin(block_minima, dim=1).values
            running_gap = (block_minima - new_minima).min(0).values                       # (blocks,)
            exact_gap = (block_minima - exact_minima[first_row:first_row + block_m, None]).min(0).values
            running += (running_gap[None, :] <= thresholds[:, None]).sum(1)
            exact += (exact_gap[None, :] <= thresholds[:, None]).sum(1)
            tiles += blocks
    return {"tiles": tiles, "split_rows": split_rows,
            "evaluated_running_minima": (running / tiles).tolist(),
            "evaluated_exact_minima": (exact / tiles).tolist(),
            "mean_evaluated_running_minima": float(running.sum() / (tiles * len(GRID))),
            "mean_evaluated_exact_minima": float(exact.sum() / (tiles * len(GRID)))}


def term_shares(distances: torch.Tensor) -> list[float]:
    """Per sigma, the share of single terms within e^-36 of their row's largest."""
    gaps = distances - distances.min(1, keepdim=True).values
    return [float((gaps <= SKIP_NATS * 2 * sigma**2).double().mean()) for sigma in GRID]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--out", default="results/int8-skip-rates.json")
    args = parser.parse_args()
    mnist = load_mnist()
    generator, _ = sampling.load_generator(SHIPPED_GENERATOR)
    banks = {"training images": mnist.train_x[:args.rows],
             "shipped generator": sampling.generate(generator, args.rows, seed=0)}
    report = {"queries": f"MNIST test images, first {args.rows}", "grid": GRID.tolist(), "skip_nats": SKIP_NATS,
              "multiprocessors": MULTIPROCESSORS, "banks": {}}
    for name, bank in banks.items():
        distances = squared_distances(mnist.test_x[:args.rows], bank)
        section = {"terms_that_count": term_shares(distances)}
        section["mean_terms_that_count"] = float(np.mean(section["terms_that_count"]))
        for block_m, block_n in TILES:
            section[f"{block_m}x{block_n}"] = tile_rates(distances, block_m, block_n)
            rates = section[f"{block_m}x{block_n}"]
            print(f"{name} {block_m}x{block_n}: tiles evaluated {rates['mean_evaluated_running_minima']:.3f} "
                  f"(exact minima {rates['mean_evaluated_exact_minima']:.3f}); single terms that count "
                  f"{section['mean_terms_that_count']:.3f}", flush=True)
        report["banks"][name] = section
        del distances
    atomic.write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
