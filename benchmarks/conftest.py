import os

os.environ.setdefault("TRITON_INTERPRET", "0")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the numbers depend on: CPU model, cores, GPU, torch/triton/numpy versions."""
    from ganbench.paper.bench import machine_info as ganbench_machine_info

    machine_info["ganbench"] = ganbench_machine_info()
