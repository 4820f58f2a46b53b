"""The torch backend's sigma grid against one float32 matmul on MNIST, in one run: `python benchmarks/cpu_sigmas.py`.

10,000 MNIST test images scored against 10,000 training images (d = 784), and against 10,000 samples
of the shipped generator, the paper's grid (logspace(-1, 0, S)), median of repeats, on this machine's
CPU. Against the training images both sides are 8-bit, so ``--precision auto`` (the default) takes
exact int8 products (ganbench.scoring.byte_distances); against the samples it takes int8 products of
their digits (ganbench.scoring.digit_distances), timed beside the float32 GEMM on the same bank;
the float32 GEMM path (what other data take, here with ``--precision tf32x3``) is timed beside
them, with its compiled fused pass (ganbench.scoring.fused_rows, the default where a C++
compiler is found), with the eager torch passes it falls back to, and with those exponentiating
every term (no negligible terms left out). Every result
is compared with the float64 reference, and the target (10 sigmas within 1.3x one float32
matmul of the same shape) is judged per path. Writes results/bench-cpu-sigmas.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ganbench import atomic
from ganbench.data import load_mnist
from ganbench.gan import sampling
from ganbench.machine import machine_info
from ganbench.paper.bench import median_seconds
from ganbench.scoring import fused_rows, partials, parzen

SHIPPED_GENERATOR = Path(__file__).resolve().parents[1] / "results" / "generator.pt"
ORIGINAL_ACCUMULATE = partials.accumulate
ORIGINAL_AVAILABLE = fused_rows.available


def every_term_exponentiated(*args, **kwargs):
    return ORIGINAL_ACCUMULATE(*args, **{**kwargs, "skip_negligible": False})


TRAINING, GENERATOR = "training images", "samples of the shipped generator"
# (bank, name, precision, fused pass (None: as ganbench chooses), accumulate of the eager passes): the
# paths timed, each through the public API. The generator's samples are not 8-bit: against 8-bit
# queries ``auto`` takes int8 products of their digits (ganbench.scoring.digit_distances).
PATHS = ((TRAINING, "ganbench torch, int8 products (auto on 8-bit data)", "auto", None, ORIGINAL_ACCUMULATE),
         (TRAINING, "ganbench torch, float32 GEMM, fused pass", "tf32x3", True, ORIGINAL_ACCUMULATE),
         (TRAINING, "float32 GEMM, eager torch passes", "tf32x3", False, ORIGINAL_ACCUMULATE),
         (TRAINING, "float32 GEMM, eager, every term exponentiated", "tf32x3", False, every_term_exponentiated),
         (GENERATOR, "ganbench torch, int8 digit products (auto on 8-bit queries)", "auto", None, ORIGINAL_ACCUMULATE),
         (GENERATOR, "ganbench torch, float32 GEMM, fused pass", "tf32x3", True, ORIGINAL_ACCUMULATE))
TARGET_SIGMAS, TARGET_RATIO = 10, 1.3  # 10 sigmas within 1.3x one float32 matmul of the same shape


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/bench-cpu-sigmas.json")
    args = parser.parse_args()
    mnist = load_mnist()
    queries = torch.from_numpy(np.ascontiguousarray(mnist.test_x[:args.rows]))
    generator, _ = sampling.load_generator(SHIPPED_GENERATOR)
    banks = {TRAINING: torch.from_numpy(np.ascontiguousarray(mnist.train_x[:args.rows])),
             GENERATOR: torch.from_numpy(sampling.generate(generator, args.rows, seed=0))}
    left, right = torch.randn(args.rows, 784), torch.randn(784, args.rows)
    product = torch.empty(args.rows, args.rows)
    report = {"machine": machine_info(), "threads": torch.get_num_threads(), "rows": args.rows, "d": 784,
              "fused_pass": ORIGINAL_AVAILABLE(),
              "command": " ".join(["python"] + sys.argv), "rows_timed": []}
    matmul = median_seconds(lambda: torch.matmul(left, right, out=product), args.repeats)
    report["float32_matmul_seconds"] = matmul
    for count in (1, 10, 16):
        grid = np.logspace(-1, 0, count) if count > 1 else np.array([0.2])
        references = {name: parzen.log_likelihood(queries.numpy(), bank.numpy(), grid, backend="reference")
                      for name, bank in banks.items()}
        for bank_name, name, precision, fused, accumulate in PATHS:
            bank, reference = banks[bank_name], references[bank_name]
            if fused and not ORIGINAL_AVAILABLE():
                continue  # no compiler here: the eager rows are what ganbench runs
            partials.accumulate = accumulate
            if fused is False:
                fused_rows.available = lambda: False
            try:
                def score():
                    return parzen.log_likelihood(queries, bank, grid, backend="torch", precision=precision)
                seconds = median_seconds(score, args.repeats)
                error = float(np.abs(score() - reference).max())
            finally:
                partials.accumulate = ORIGINAL_ACCUMULATE
                fused_rows.available = ORIGINAL_AVAILABLE
            row = {"bank": bank_name, "method": name, "precision": precision, "sigmas": count, "seconds": seconds,
                   "ratio_to_matmul": seconds / matmul, "max_abs_error_nats": error}
            if count == TARGET_SIGMAS:
                row["target"] = f"<= {TARGET_RATIO}"
                row["met"] = seconds / matmul <= TARGET_RATIO
            report["rows_timed"].append(row)
            print(json.dumps(row), file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"float32 matmul {matmul:.3f} s; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
