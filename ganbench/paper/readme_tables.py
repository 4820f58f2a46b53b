"""The README's tables (Table 1, speed), rendered from the committed JSON in results/, never typed by hand.

`python -m ganbench.paper.readme_tables` rewrites every section of README.md that lies between
``<!-- begin NAME -->`` and ``<!-- end NAME -->`` from results/; the test suite renders them
again and fails when the README and the JSON disagree.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE1_RESULT = "table1.json"              # ganbench reproduce table1 --out results
CPU_REPORT = "bench-cpu.json"              # ganbench bench --out results/bench-cpu.json
GPU_REPORT = "bench-gpu-NVIDIA-H200.json"  # python benchmarks/gpu_check.py on an H200
SECTION = re.compile(r"(<!-- begin (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- end (?P=name) -->)", re.DOTALL)
CPU_ORDER = ("ganbench torch", "float32 matmul", "torch.compile'd naive", "torch cdist", "float64 NumPy reference",
             "KeOps", "authors'")


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s" if value < 100 else f"{value:,.0f} s"


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if value < 100 else f"{value:,.0f}x"


def cpu_table(report: dict) -> str:
    """10,000 x 10,000 x 784: each method at 1 and 10 sigmas, beside ganbench, from ``ganbench bench``."""
    rows = [row for row in report["rows"] if "seconds" in row and row["n"] == row["m"] == 10_000]
    by_method = {}
    for row in rows:
        by_method.setdefault(row["method"], {})[row["sigmas"]] = row
    lines = [f"CPU: {report['machine']['cpu']}, {report['machine']['cores']} cores, torch {report['machine']['torch']}; "
             f"10,000 x 10,000, d = 784 (`results/{CPU_REPORT}`)", "",
             "| method | 1 sigma | 10 sigmas | 10 sigmas / ganbench | max error (nats) |", "|---|---|---|---|---|"]
    ordered = sorted(by_method, key=lambda method: next((rank for rank, prefix in enumerate(CPU_ORDER)
                                                        if method.startswith(prefix)), len(CPU_ORDER)))
    for method in ordered:
        cases = by_method[method]
        if {1, 10} <= set(cases):
            error = cases[10]["max_abs_error_nats"]
            lines.append(f"| {method} | {_seconds(cases[1]['seconds'])} | {_seconds(cases[10]['seconds'])} | "
                         f"{_ratio(cases[10]['ratio_to_ganbench'])} | {'-' if error != error else f'{error:.2g}'} |")
    # A peer that crashed or failed is a result too: its status, once per method.
    failed = {row["method"]: row["status"] for row in report["rows"] if "status" in row and row["n"] == 10_000}
    lines += [f"| {method} | {status} | | | |" for method, status in failed.items()]
    return "\n".join(lines) + "\n"


def gpu_table(report: dict) -> str:
    """The fused kernel's timings from ``benchmarks/gpu_check.py``, beside the matmuls of the same run."""
    lines = [f"GPU: {report['device']}, torch {report['torch']}, Triton {report['triton']} (`results/{GPU_REPORT}`)", "",
             "| n | m | sigmas | ganbench triton | fp32 matmul | TF32 matmul | triton / fp32 matmul |",
             "|---|---|---|---|---|---|---|"]
    for row in report["timings"]:
        lines.append(f"| {row['n']:,} | {row['m']:,} | {row['sigmas']} | {_seconds(row['triton_s'])} | "
                     f"{_seconds(row['matmul_fp32_s'])} | {_seconds(row['matmul_tf32_s'])} | "
                     f"{row['triton_over_matmul_fp32']:.2f} |")
    return "\n".join(lines) + "\n"


def table1_block(result: dict) -> str:
    """Table 1's MNIST column as ``ganbench reproduce table1 --out results`` measured it (results/table1.json)."""
    from ganbench.paper import table1

    frame = table1.to_frame(result)[["model", "kind", "MNIST", "sigma"]]
    lines = ["```", "| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(str(value) for value in record) + " |" for record in frame.itertuples(index=False)]
    return "\n".join(lines + ["```"]) + "\n"


def sections(results: Path = ROOT / "results") -> dict[str, str]:
    """Every generated section's text, by name, from the JSON files in ``results``."""
    return {"table1": table1_block(json.loads((results / TABLE1_RESULT).read_text())),
            "speed-cpu": cpu_table(json.loads((results / CPU_REPORT).read_text())),
            "speed-gpu": gpu_table(json.loads((results / GPU_REPORT).read_text()))}


def render(text: str, generated: dict[str, str]) -> str:
    """``text`` with the body of every marked section replaced by its generated text."""
    return SECTION.sub(lambda match: match.group(1) + generated[match.group("name")] + match.group(4), text)


def main() -> int:
    readme = ROOT / "README.md"
    readme.write_text(render(readme.read_text(), sections()))
    print(f"rewrote the generated sections of {readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
