"""What machine a number was measured on: recorded beside every timing and every Table 1 row."""
from __future__ import annotations

import os
import platform

import numpy as np
import torch


def machine_info() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:  # closed: an open file left behind fails a user's `pytest -W error`
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
