#!/usr/bin/env bash
# One GPU session's measurements, most important first, each under its own time limit, every JSON
# written to $OUT (the device tool brings that folder back). A session has about 15 minutes of
# device time, machine start included: this takes about 6 on an H200. One device command may run
# 600 s: the steps' limits add up to 595, and each step writes its JSON as it goes.
#
#   1. the scorer's targets, both precisions (benchmarks/gpu_check.py --targets): among them the first
#      call of a new process with an empty Triton cache, with and without the kernels shipped compiled
#      for sm_90 (kernels/prebuilt.py), and whether both give the same bits;
#   2. the int8 kernel alone per tile, digit products separate and STACKED, at 0 and 16 sigmas, each with
#      the branched and the UNBRANCHED sigma epilogue, whether the two layouts give the same bits on the
#      device and how far the two epilogues' sums differ (benchmarks/gpu_breakdown.py --sweep-only);
#   3. where the public call's time goes: torch.profiler, one call's timeline, the kernels alone
#      (benchmarks/gpu_breakdown.py --no-sweep --trace-dir);
#   4. the tests that only a CUDA GPU runs;
#   5. the kernel against float64 and the matmuls at several bank sizes (benchmarks/gpu_check.py).
#
# Run from the repository root on the GPU machine (its own torch and Triton): bash benchmarks/gpu_session.sh
# with MNIST's cached file in .gpu_cache/ (carried there: nothing outside the machine can be reached), and,
# for the KeOps peer, its wheels in .whl/ (`pip download --no-deps -d .whl pykeops==2.3 keopscore==2.3`,
# also carried; without them the targets record KeOps as not installed).
set -uo pipefail
OUT="${OUT:-gpu-session}"
mkdir -p "$OUT"
export GANBENCH_CACHE="${GANBENCH_CACHE:-$PWD/.gpu_cache}"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "ganbench: install failed" >&2
if compgen -G ".whl/pykeops-*.whl" > /dev/null; then
    python3 -m pip install -q --no-deps --no-index .whl/*.whl >/dev/null 2>&1 || echo "ganbench: KeOps install failed" >&2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"

# Every step's output goes to one log (the device tool brings back at most 8 files: the log, the device,
# four JSON reports and two timelines).
step() {  # name, time limit (s), command...
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    echo "==== $name" >> "$OUT/steps.log"
    timeout "$limit" "$@" >> "$OUT/steps.log" 2>&1
    echo "$name: exit $? after $((SECONDS - started)) s" | tee -a "$OUT/steps.log"
}

# 0. whether this machine's Triton and ptxas take the kernels shipped compiled for sm_90 (their hashes match)
step prebuilt_check 45 python3 -m ganbench.kernels.prebuilt check
step targets 200 python3 benchmarks/gpu_check.py --targets --budget-s 170 --out "$OUT/bench-gpu-targets.json"
step sweep 150 python3 benchmarks/gpu_breakdown.py --sweep-only --out "$OUT/bench-gpu-sweep.json"
step breakdown 70 python3 benchmarks/gpu_breakdown.py --no-sweep --out "$OUT/bench-gpu-breakdown.json" --trace-dir "$OUT"
# The tests that run only where a CUDA GPU is (host-to-device staging, results back): a few seconds.
step gpu_tests 40 python3 -m pytest -q -rs -p no:cacheprovider tests/test_parzen.py tests/test_float64_rows.py -k "staged or staging or come_back or cuda"
step check 90 python3 benchmarks/gpu_check.py --out "$OUT/bench-gpu.json"
