"""Measure what a chain-sampled Table 1 row may move by: `python benchmarks/chain_tolerances.py gsn_authors gsn`.

A baseline's bank comes from Markov chains with a fixed seed. On another machine one float32
rounding can change a binary draw and the chain goes on as another, equally likely one. For
each row this prints (JSON) the row at seeds 0, 1 and 2 (their range is the worst case, every
chain replaced) and at seed 0 with every weight moved by one float32 ulp (what another BLAS
build may do): the numbers behind ``ganbench.paper.table1.CHAIN_TOLERANCES``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from ganbench import atomic, baselines
from ganbench.data import load_mnist
from ganbench.paper import table1

SEEDS = (0, 1, 2)


def write_one_ulp_weights(folder: Path, model: str, target: Path) -> None:
    """``model``'s shipped weights into ``target``, in float32, every weight moved one ulp towards +inf."""
    payload = torch.load(baselines.shipped_weights(model, folder), map_location="cpu", weights_only=False)
    payload["weights"] = {name: torch.nextafter(value.float(), torch.tensor(float("inf")))
                          for name, value in payload["weights"].items()}
    payload["dtype"] = "float32"
    atomic.write_bytes(baselines.shipped_weights(model, target), atomic.torch_bytes(payload))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", choices=["gsn_authors", *baselines.BASELINES])
    parser.add_argument("--baselines", default=str(baselines.SHIPPED_DIR), help="folder of the shipped weights")
    args = parser.parse_args()
    mnist = load_mnist()
    report = {}
    for row in args.rows:
        model = "gsn" if row == "gsn_authors" else row
        means = {seed: table1.measure_row(row, table1.Table1Config(seed=seed, baselines=args.baselines), mnist)["mean"]
                 for seed in SEEDS}
        with tempfile.TemporaryDirectory(prefix="ganbench-ulp-") as target:
            write_one_ulp_weights(Path(args.baselines), model, Path(target))
            moved = table1.measure_row(row, table1.Table1Config(seed=0, baselines=target), mnist)["mean"]
        report[row] = {"means_by_seed": means, "range_over_seeds": max(means.values()) - min(means.values()),
                       "one_ulp_shift": abs(moved - means[0]), "tolerance_now": table1.CHAIN_TOLERANCES[row][0]}
        print(json.dumps({row: report[row]}), file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
