"""The GPU measurement scripts run their logic on the CPU (Triton's interpreter, tiny sizes), so a GPU
session's few minutes are not lost to an error in the script: the sweep and the kernels alone of
benchmarks/gpu_breakdown.py with CUDA events replaced by a call, and `gpu_check.py --targets --dry-run`."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def breakdown(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_breakdown

    monkeypatch.setattr(gpu_breakdown, "cuda_time", lambda function, repeats=20, warmup=3: (function(), 0.0)[1])
    monkeypatch.setattr(gpu_breakdown, "GRID", np.logspace(-1, 0, 3))
    monkeypatch.setattr(gpu_breakdown, "SWEEP", [(16, 16, 32, 4, 3)])
    monkeypatch.setattr(gpu_breakdown, "INT8_TILES", {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "STACKED": True})
    monkeypatch.setattr(gpu_breakdown, "TF32X3_TILES", {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32})
    return gpu_breakdown


def tiny_inputs():
    rng = np.random.default_rng(3)
    queries = torch.from_numpy((rng.integers(0, 256, (9, 40)) / 255).astype(np.float32))
    bank = torch.from_numpy(rng.random((21, 40)).astype(np.float32))
    return queries, bank


def test_the_int8_sweep_measures_every_layout_and_finds_them_equal(breakdown):
    saved = []
    result = breakdown.int8_sweep(*tiny_inputs(), save=lambda sweep: saved.append(dict(sweep)))
    assert not [name for name, value in result.items() if isinstance(value, str)]   # no tile failed
    assert result["16x16x32_w4_s3_stacked_equals_separate"] is True
    for layout in ("16x16x32_w4_s3", "16x16x32_w4_s3_stacked"):
        agrees = result[f"{layout}_unbranched_agrees"]
        assert agrees["minima_equal"] and agrees["indices_equal"] and agrees["sums_max_relative_difference"] < 1e-6
    assert saved and saved[-1] == result   # written after every measurement


def test_the_kernels_alone_run_every_variant(breakdown):
    result = breakdown.kernel_alone(*tiny_inputs())
    assert not [name for name, value in result.items() if isinstance(value, str)]
    assert {"int8_digits4_correction1_sigmas16_branched_ms", "int8_digits1_correction0_sigmas0_ms",
            "tf32x3_sigmas16_ms"} <= set(result)


@pytest.mark.slow
def test_the_targets_script_runs_dry_on_the_cpu(tmp_path):
    out = tmp_path / "targets.json"
    completed = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--targets", "--dry-run",
                                "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    targets = json.loads(out.read_text())["targets"]
    errors = [f"{section}.{name}" for section, values in targets.items() if isinstance(values, dict)
              for name, value in values.items() if isinstance(value, dict) and "error" in value]
    assert not errors, errors
    assert targets["int8_previous_tile"]["launched"] == [{"STACKED": False, "UNBRANCHED": False}]
    assert set(targets["summary"]) == {"int8", "tf32x3", "int8_previous_tile"}
