"""Where one scoring call's time goes on a GPU: the fused kernel against the host work around it.

    python benchmarks/gpu_breakdown.py --out bench-gpu-breakdown.json

At 10,000 MNIST test images against 10,000 samples of the shipped generator (784 dimensions),
for the int8 and tf32x3 precisions:
- the public call (``parzen.parzen_pass``, CUDA tensors, 16 sigmas), median wall time;
- torch.profiler over a few calls: every CUDA kernel's total time and count, so the kernel's
  share and each host-side step (operands, merges, refinement, copies) are named;
- the int8 kernel alone at 16 sigmas for a sweep of tiles (``SWEEP``);
- the fused kernel alone on prepared operands at the tiles shipped for sm_90 (``SHIPPED_TILES``),
  with 0 (nearest only), 1, 4 and 16 sigmas, and for int8 with one digit instead of four: what the
  distances cost, what each sigma's exponentials add, what the extra digit products add.
CUDA events, median of repeats after warm-up. A GPU is required.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from ganbench.kernels import partial_tiles, parzen_int8, parzen_lse, parzen_operands
from ganbench.kernels import parzen_int8_operands as int8_operands
from gpu_check import cuda_time  # this folder is on sys.path when the script runs

from ganbench import SHIPPED_GENERATOR
from ganbench.data import load_mnist
from ganbench.gan import sampling
from ganbench.scoring import parzen

GRID = np.logspace(-1, 0, 16)
# The kernels alone run at the tiles an sm_90 GPU takes without tuning.
INT8_TILES = partial_tiles.SHIPPED_TILES[("int8", (9, 0))]
TF32X3_TILES = partial_tiles.SHIPPED_TILES[("tf32", (9, 0))]


def int8_operands_of(queries: torch.Tensor, bank: torch.Tensor):
    """(query operand, query terms, bank operand, bank terms, width), padded for every candidate tile."""
    query_operand, query_terms, _, width = int8_operands.int8_operands_launch(
        queries, "query", parzen_int8.MAX_BLOCKS["BLOCK_M"], parzen_int8.WIDTH_MULTIPLE, False)
    bank_operand, bank_terms, _, _ = int8_operands.int8_operands_launch(
        bank, "bank", parzen_int8.SPLIT_ROWS_MULTIPLE, parzen_int8.WIDTH_MULTIPLE, False)
    return query_operand, query_terms, bank_operand, bank_terms, width


def wall_time(function, repeats: int = 20) -> float:
    """Median seconds of ``function()`` by the host clock, synchronised: host work included."""
    function()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        function()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def profile(function, calls: int = 5, trace: Path | None = None) -> dict:
    """Per CUDA kernel: total microseconds over ``calls`` calls and launches; the host's wall time too.
    ``trace``: also write the timeline (host calls and GPU kernels, chrome://tracing format) there."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(calls):
            function()
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    if trace is not None:
        profiler.export_chrome_trace(str(trace))
    rows = []
    for event in profiler.key_averages():
        device_us = getattr(event, "device_time_total", None)
        if device_us is None:
            device_us = getattr(event, "cuda_time_total", 0.0)
        if device_us:
            rows.append({"name": event.key[:120], "count": event.count, "device_us_per_call": device_us / calls,
                         "cpu_us_per_call": event.cpu_time_total / calls})
    rows.sort(key=lambda row: -row["device_us_per_call"])
    kernels = [row for row in rows if not row["name"].startswith("aten::") and "Memcpy" not in row["name"]]
    return {"calls": calls, "wall_ms_per_call": 1e3 * wall / calls, "top": rows[:30],
            "kernels_device_ms_per_call": sum(row["device_us_per_call"] for row in kernels) / 1e3}


def kernel_alone(queries: torch.Tensor, bank: torch.Tensor, save=lambda result: None) -> dict:
    """The fused kernels on prepared operands, fixed tiles: 0/1/4/16 sigmas, int8 with 1 or 4 digits
    (and at 1 and 16 sigmas with the branched epilogue: the one-digit kernel's comparison)."""
    result = {}
    record = recorder(result, save)
    query_operand, query_terms, bank_operand, bank_terms, width = int8_operands_of(queries, bank)
    for digits, correction in ((4, True), (1, False)):
        for count, unbranched in ((0, True), (1, True), (4, True), (16, True), (1, False), (16, False)):
            def launch(count=count, digits=digits, correction=correction, unbranched=unbranched):
                parzen_int8.parzen_int8_launch(query_operand, bank_operand, query_terms, bank_terms, GRID[:count],
                                               n_queries=len(queries), n_bank=len(bank), width=width, digits=digits,
                                               correction=correction, blocks={**INT8_TILES, "UNBRANCHED": unbranched})
            epilogue = "" if unbranched else "_branched"   # the shipped epilogue, or the per-sigma skip's
            name = f"int8_digits{digits}_correction{int(correction)}_sigmas{count}{epilogue}_ms"
            record(name, lambda: 1e3 * cuda_time(launch, repeats=20, warmup=3))
    centre = bank.mean(dim=0)
    query32, query_norms, dot = parzen_operands.parzen_operands(queries, centre=centre, precision="tf32x3",
                                                                role="query", row_multiple=128, width_multiple=64)
    bank32, bank_norms, _ = parzen_operands.parzen_operands(bank, centre=centre, precision="tf32x3", role="bank",
                                                            row_multiple=parzen_lse.SPLIT_ROWS_MULTIPLE,
                                                            width_multiple=64)
    for count in (1, 4, 16):
        def launch_tf32x3(count=count):
            parzen_lse.parzen_lse_launch(query32, bank32, query_norms, bank_norms, GRID[:count],
                                         n_queries=len(queries), n_bank=len(bank), dot_precision=dot,
                                         blocks=TF32X3_TILES)
        record(f"tf32x3_sigmas{count}_ms", lambda: 1e3 * cuda_time(launch_tf32x3, repeats=20, warmup=3))
    return result


# Tiles for the int8 kernel's sweep (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages). On an H200 the tuned
# 64 x 32 tiles won (3.4 ms at 16 sigmas); tiles that took one digit at a time (one accumulator,
# Horner's rule in int64) were slower at every shape tried (4.6 to 6.6 ms) and were dropped, and so
# were float16 digit products and a two-pass scorer, both bit-equal and slower on an H200
# (results/bench-gpu-candidates-NVIDIA-H200.json, docs/performance.md).
# Each tile also STACKED: the four digit products as one, four times as wide (kernels/parzen_int8.py);
# and, at 16 sigmas, each layout with the UNBRANCHED epilogue (the sigma grid as straight-line code:
# benchmarks/gpu_sass.py counts what it changes in the machine code).
SWEEP = [(64, 32, 64, 4, 3), (64, 32, 64, 4, 4), (64, 64, 64, 8, 3), (128, 32, 64, 8, 3), (64, 32, 32, 4, 4)]


def recorder(result: dict, save):
    """record(name, measurement): the measurement's value into ``result`` (an error is a result too: a tile
    that does not compile), printed, and the whole saved, so a sweep cut short by its time limit keeps
    what it measured."""
    def record(name: str, measurement) -> None:
        try:
            result[name] = measurement()
        except Exception as error:  # noqa: BLE001 - a tile that does not compile is a result too
            result[name] = f"{type(error).__name__}: {str(error)[:200]}"
        print(f"  {name}: {result[name]}", flush=True)
        save(result)
    return record


def int8_sweep(queries: torch.Tensor, bank: torch.Tensor, counts=(0, 16), save=lambda result: None) -> dict:
    """The int8 kernel alone (four digits and the correction, as for MNIST against a generator) per tile,
    with the digit products separate and stacked, and with sigmas, either epilogue."""
    query_operand, query_terms, bank_operand, bank_terms, width = int8_operands_of(queries, bank)

    def launch(tiles: dict, sigmas=GRID):
        return parzen_int8.parzen_int8_launch(query_operand, bank_operand, query_terms, bank_terms, sigmas,
                                              n_queries=len(queries), n_bank=len(bank), width=width, digits=4,
                                              correction=True, blocks=tiles)

    def timed(tiles: dict, count: int) -> float:
        return 1e3 * cuda_time(lambda: launch(tiles, GRID[:count]), repeats=20, warmup=3)

    result = {}
    record = recorder(result, save)
    for (block_m, block_n, block_k, warps, stages), stacked in itertools.product(SWEEP, (False, True)):
        tile = f"{block_m}x{block_n}x{block_k}_w{warps}_s{stages}"
        tiles = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "num_warps": warps,
                 "num_stages": stages, "STACKED": stacked, "UNBRANCHED": False}
        layout = f"{tile}{'_stacked' if stacked else ''}"
        for count in counts:
            record(f"{layout}_sigmas{count}", lambda: timed(tiles, count))
        if stacked:  # the same integer distances and sums as the separate products of this tile, bit for bit
            record(f"{tile}_stacked_equals_separate", lambda: all(
                torch.equal(a, b) for a, b in zip(launch({**tiles, "STACKED": False}), launch(tiles))))
        unbranched = {**tiles, "UNBRANCHED": True}
        for count in counts:
            if count:  # no sigmas, no epilogue: the same kernel
                record(f"{layout}_unbranched_sigmas{count}", lambda: timed(unbranched, count))
        record(f"{layout}_unbranched_agrees", lambda: epilogues_agree(launch(tiles), launch(unbranched)))
    return result


def epilogues_agree(branched, unbranched) -> dict:
    """The two epilogues' partials: integer minima and indices equal bit for bit; the sums' largest
    relative difference (each is within the kernel's bound of float64: ``parzen_int8.per_point_bound``,
    a few 1e-7 relative at these sizes)."""
    (minima, indices, sums), (other_minima, other_indices, other_sums) = branched, unbranched
    relative = ((sums - other_sums).abs() / sums.abs().clamp_min(1e-300)).max().item()
    return {"minima_equal": torch.equal(minima, other_minima), "indices_equal": torch.equal(indices, other_indices),
            "sums_max_relative_difference": relative}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-gpu-breakdown.json")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--sweep-only", action="store_true", help="only the int8 tile sweep")
    parser.add_argument("--no-sweep", action="store_true", help="skip the int8 tile sweep")
    parser.add_argument("--trace-dir", default=None,
                        help="write one call's timeline per precision there (trace-<precision>.json)")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    mnist = load_mnist(fetch=False)
    generator, _ = sampling.load_generator(SHIPPED_GENERATOR)
    queries = torch.from_numpy(np.ascontiguousarray(mnist.test_x[:args.rows])).cuda()
    bank = torch.from_numpy(sampling.generate(generator, args.rows, seed=0)).cuda()
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": args.rows,
              "grid": GRID.tolist(), "timing": "CUDA events (kernels), host clock after a synchronise (calls)"}
    out = Path(args.out)
    if not args.no_sweep:
        def save(sweep: dict) -> None:
            report["int8_sweep_ms"] = sweep
            out.write_text(json.dumps(report, indent=2))

        int8_sweep(queries, bank, save=save)
    if args.sweep_only:
        return

    def save_alone(rows: dict) -> None:
        report["kernel_alone"] = rows
        out.write_text(json.dumps(report, indent=2))

    for precision in ("int8", "tf32x3"):
        call = lambda: parzen.parzen_pass(queries, bank, GRID, backend="triton", precision=precision)  # noqa: E731
        call()
        section = report.setdefault(precision, {})
        section["call_wall_ms"] = 1e3 * wall_time(call)
        section["profile"] = profile(call)
        if args.trace_dir:
            profile(call, calls=1, trace=Path(args.trace_dir) / f"trace-{precision}.json")
        out.write_text(json.dumps(report, indent=2))
        print(precision, f"call {section['call_wall_ms']:.2f} ms", flush=True)
        for row in section["profile"]["top"][:14]:
            print(f"  {row['device_us_per_call']:9.1f} us  x{row['count']:<4} {row['name'][:90]}", flush=True)
    kernel_alone(queries, bank, save=save_alone)


if __name__ == "__main__":
    main()
