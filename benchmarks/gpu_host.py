"""Where a GPU scoring call spends its host time: a profile of the public call, copies of host
arrays to the device, and the compiles of a first call with an empty Triton cache.

    python benchmarks/gpu_host.py --out DIR     # writes DIR/gpu-host.json and DIR/gpu-host-profile.txt

At 10,000 MNIST test images against 10,000 samples of the shipped generator (784 dimensions), 16
sigmas, precision int8 (``parzen.parzen_pass``, backend triton):
- the call's wall time against the GPU time of its kernels (CUDA events), and a cProfile of 20
  calls: the Python and waits that run before the kernel is queued;
- one (10,000, 784) float32 NumPy array to the device: from pageable memory (``.to``), staged
  through pinned buffers (``ganbench.devices.to_device``), and pinned in place; both inputs through
  one ring of buffers (``to_device_many``) and one after the other;
- a new process with an empty Triton cache: each kernel it compiles and for how long.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from gpu_check import cuda_time  # this folder is on sys.path when the script runs

from ganbench import SHIPPED_GENERATOR
from ganbench.data import load_mnist
from ganbench.devices import to_device, to_device_many
from ganbench.gan import sampling
from ganbench.scoring import parzen

GRID = np.logspace(-1, 0, 16)
COMPILE_PROFILE_CODE = """
import cProfile, json, pstats, io, sys, time
import numpy as np, torch
from ganbench.scoring import parzen
queries, bank = np.load(sys.argv[1]), np.load(sys.argv[2])
queries, bank = torch.from_numpy(queries).cuda(), torch.from_numpy(bank).cuda()
torch.cuda.synchronize()
profile = cProfile.Profile()
started = time.perf_counter()
profile.enable()
parzen.parzen_pass(queries, bank, json.loads(sys.argv[3]), backend="triton", precision="int8")
torch.cuda.synchronize()
profile.disable()
wall = time.perf_counter() - started
text = io.StringIO()
pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(45)
print(text.getvalue())
print(json.dumps({"first_call_s": wall}))
"""


def median_seconds(function, repeats: int = 20) -> dict:
    """Median GPU time between CUDA events around a call (gpu_check's ``cuda_time``) and median wall time
    of synchronised calls: the difference is the host's share."""
    events = cuda_time(function, repeats)
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        torch.cuda.synchronize()
        walls.append(time.perf_counter() - started)
    return {"wall_s": float(np.median(walls)), "events_s": events}


def kernel_time(function, repeats: int = 20) -> float:
    """GPU time of the kernels one call queues (torch.profiler's CUDA total per call)."""
    function()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
        for _ in range(repeats):
            function()
        torch.cuda.synchronize()
    total = sum(event.self_device_time_total for event in profiler.key_averages())
    return total / 1e6 / repeats


def copies(array: np.ndarray) -> dict:
    """One host array to the device several ways, each synchronised: from pageable memory, staged
    through pinned buffers (``to_device``; piece sizes and buffer counts swept), pinned once then
    copied, pinned in place; and the two halves of staging alone (host copy into pinned memory,
    pinned memory to the device)."""
    tensor = torch.from_numpy(array)
    pinned = tensor.pin_memory()
    cuda = torch.device("cuda")

    def pinned_in_place():
        runtime = torch.cuda.cudart()
        runtime.cudaHostRegister(tensor.data_ptr(), tensor.numel() * tensor.element_size(), 0)
        try:
            out = tensor.to(cuda, non_blocking=True)
            torch.cuda.synchronize()
        finally:
            runtime.cudaHostUnregister(tensor.data_ptr())
        return out

    ways = {"pageable": lambda: tensor.to(cuda),
            "pinned_once_then_copied": lambda: tensor.pin_memory().to(cuda, non_blocking=True),
            "pinned_in_place": pinned_in_place,
            "host_copy_into_pinned_only": lambda: pinned.copy_(tensor),
            "pinned_to_device_only": lambda: pinned.to(cuda, non_blocking=True)}
    for megabytes in (1, 2, 4, 8, 16):
        for buffers in (2, 3):
            ways[f"staged_{megabytes}MB_x{buffers}"] = (
                lambda megabytes=megabytes, buffers=buffers: to_device(tensor, cuda, megabytes << 20, buffers))
    result = {"megabytes": array.nbytes / 1e6, "torch_threads": torch.get_num_threads()}
    for name, function in ways.items():
        try:
            result[name] = median_seconds(function)["wall_s"]
        except Exception as error:  # noqa: BLE001 - a failed way is a result
            result[name] = f"{type(error).__name__}: {error}"
    result["staged_equal"] = all(torch.equal(to_device(tensor[:rows], cuda).cpu(), tensor[:rows])
                                 for rows in (len(tensor), len(tensor) - 1, 1337, 1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mnist = load_mnist(fetch=False)
    generator, _ = sampling.load_generator(SHIPPED_GENERATOR)
    bank = sampling.generate(generator, 10_000, seed=0)
    queries = np.ascontiguousarray(mnist.test_x[:10_000])
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    query_device, bank_device = torch.from_numpy(queries).cuda(), torch.from_numpy(bank).cuda()

    def call(x=query_device, samples=bank_device, sigmas=GRID):
        return parzen.parzen_pass(x, samples, sigmas, backend="triton", precision="int8")

    report["sixteen_sigmas"] = median_seconds(call)
    report["sixteen_sigmas"]["kernels_s"] = kernel_time(call)
    report["one_sigma"] = median_seconds(lambda: call(sigmas=GRID[:1]))
    report["numpy_inputs"] = median_seconds(lambda: call(queries, bank))
    report["copies"] = copies(bank)
    cuda = torch.device("cuda")
    both = [torch.from_numpy(queries), torch.from_numpy(bank)]
    report["copies"]["both_inputs_one_ring"] = median_seconds(lambda: to_device_many(both, cuda))["wall_s"]
    report["copies"]["both_inputs_one_after_the_other"] = median_seconds(
        lambda: [to_device(tensor, cuda) for tensor in both])["wall_s"]
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(20):
        call()
    torch.cuda.synchronize()
    profile.disable()
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    with tempfile.TemporaryDirectory() as folder:
        paths = [str(Path(folder) / name) for name in ("queries.npy", "bank.npy")]
        np.save(paths[0], queries)
        np.save(paths[1], bank)
        environment = dict(os.environ, TRITON_CACHE_DIR=str(Path(folder) / "triton-cache"))
        completed = subprocess.run([sys.executable, "-c", COMPILE_PROFILE_CODE, *paths, json.dumps(GRID.tolist())],
                                   capture_output=True, text=True, timeout=240, env=environment)
        text.write("\n==== first call, empty Triton cache ====\n" + completed.stdout + completed.stderr[-3000:])
        kernels = sorted(path.name for path in (Path(folder) / "triton-cache").rglob("*.cubin"))
        report["first_call_empty_cache"] = {"kernels_compiled": kernels, "returncode": completed.returncode,
                                            "last_line": completed.stdout.strip().splitlines()[-1:]}
    (out / "gpu-host-profile.txt").write_text(text.getvalue())
    (out / "gpu-host.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
