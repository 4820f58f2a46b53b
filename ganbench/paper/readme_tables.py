"""The README's and docs' tables (Table 1, speed), rendered from the committed JSON in results/, never typed by hand.

`python -m ganbench.paper.readme_tables` rewrites every section of README.md and docs/*.md that lies
between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` from results/; the test suite renders them
again and fails when a document and the JSON disagree.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE1_RESULT = "table1.json"              # ganbench reproduce table1 --out results
CPU_REPORT = "bench-cpu.json"              # ganbench bench --out results/bench-cpu.json
CPU_SIGMAS_REPORT = "bench-cpu-sigmas.json"  # python benchmarks/cpu_sigmas.py
GPU_REPORT = "bench-gpu-NVIDIA-H200.json"  # python benchmarks/gpu_check.py on an H200
GPU_TARGETS_REPORT = "bench-gpu-targets-NVIDIA-H200.json"  # python benchmarks/gpu_check.py --targets on an H200
# The rows of the targets table: gpu_check's summary keys, in words.
TARGET_NAMES = {
    "16_sigmas_over_matmul_fp32": "16 sigmas / one fp32 matmul",
    "16_sigmas_over_1_sigma": "16 sigmas / 1 sigma",
    "naive_compiled_over_16_sigmas": "torch.compile'd naive peer / ganbench (16 sigmas)",
    "max_error_nats_sigma_0.1_to_1": "max per-point error vs float64, sigma 0.1 to 1 (nats)",
    "first_call_fresh_process_s": "first call, new process (Triton cache filled)",
    "first_call_fresh_process_empty_triton_cache_s": "first call, new process, empty Triton cache",
    "numpy_inputs_over_cuda_tensors": "NumPy inputs / CUDA tensors (16 sigmas)",
    "lloyd_iteration_s": "one Lloyd iteration (10,000 centroids, 50,000 images)",
}
SECTION = re.compile(r"(<!-- begin (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- end (?P=name) -->)", re.DOTALL)
CPU_ORDER = ("ganbench torch", "float32 matmul", "torch.compile'd naive", "torch cdist", "ganbench float64 reference",
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
            error = cases[10]["max_abs_error_nats"]  # null (older reports: NaN) for the matmul floor
            shown = "-" if error is None or error != error else f"{error:.2g}"
            lines.append(f"| {method} | {_seconds(cases[1]['seconds'])} | {_seconds(cases[10]['seconds'])} | "
                         f"{_ratio(cases[10]['ratio_to_ganbench'])} | {shown} |")
    # A peer that crashed or failed is a result too: its status, once per method.
    failed = {row["method"]: row["status"] for row in report["rows"] if "status" in row and row["n"] == 10_000}
    lines += [f"| {method} | {status} | | | |" for method, status in failed.items()]
    return "\n".join(lines) + "\n"


def cpu_sigmas_table(report: dict) -> str:
    """The torch backend's paths on real MNIST at 1, 10 and 16 sigmas against one float32 matmul, and the target."""
    by_path = {}
    for row in report["rows_timed"]:
        by_path.setdefault((row.get("bank", "training images"), row["method"]), {})[row["sigmas"]] = row
    judged = next(row for row in report["rows_timed"] if "target" in row)
    banks = list(dict.fromkeys(bank for bank, _ in by_path))
    lines = [f"CPU: {report['machine']['cpu']}, {report['machine']['cores']} cores, torch {report['machine']['torch']}; "
             f"{report['rows']:,} MNIST test images against {report['rows']:,} {' or '.join(banks)}, "
             f"d = {report['d']}, the paper's grid; one float32 matmul of the same shape "
             f"{_seconds(report['float32_matmul_seconds'])} (`results/{CPU_SIGMAS_REPORT}`)", "",
             f"| bank | path | 1 sigma | 10 sigmas | 16 sigmas | {judged['sigmas']} sigmas / fp32 matmul "
             f"(target {judged['target']}) | max error vs float64 (nats) |", "|---|---|---|---|---|---|---|"]
    for (bank, method), cases in by_path.items():
        target = next(row for row in cases.values() if "target" in row)
        times = " | ".join(_seconds(cases[count]["seconds"]) for count in (1, 10, 16))
        error = max(row["max_abs_error_nats"] for row in cases.values())
        lines.append(f"| {bank} | {method} | {times} | {_ratio(target['ratio_to_matmul'])} "
                     f"{'met' if target['met'] else 'not met'} | {error:.2g} |")
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


def targets_table(report: dict) -> str:
    """The scorer's GPU targets per precision, from ``benchmarks/gpu_check.py --targets``: times, then each target."""
    targets, shared = report["targets"], report["targets"]["shared"]
    precisions = [name for name in ("int8", "tf32x3") if name in targets["summary"]]

    def value(number, name: str) -> str:
        if number is None:
            return "not measured"
        if name.endswith("_s"):
            return _seconds(number)
        return f"{number:.2g}" if "error" in name else f"{number:.2f}x"

    lines = [f"GPU: {report['device']}, torch {report['torch']}, Triton {report['triton']}; {targets['rows']:,} MNIST "
             f"test images against {targets['rows']:,} samples of the shipped generator, d = {targets['dimension']}, "
             f"{len(targets['grid'])} sigmas, public API on CUDA tensors (`results/{GPU_TARGETS_REPORT}`)", "",
             "| | target | " + " | ".join(precisions) + " |", "|---|---|" + "---|" * len(precisions)]
    for label, key in (("16 sigmas", "sixteen_sigmas_s"), ("1 sigma", "one_sigma_s"),
                       ("16 sigmas, NumPy inputs", "numpy_inputs_sixteen_sigmas_s")):
        lines.append(f"| {label} | | " + " | ".join(value(targets[name].get(key), "_s") for name in precisions) + " |")
    lines.append(f"| one fp32 matmul; the compiled naive peer, 16 sigmas | | {_seconds(shared['matmul_fp32_s'])}; "
                 f"{_seconds(shared['naive_peer_sixteen_sigmas_s'])} | |")
    # Runs since the sm_90 kernels ship compiled (kernels/prebuilt.py) also time a cold start that compiles them.
    compiling = [targets[name].get("fresh_process_empty_triton_cache_compiling", {}) for name in precisions]
    if any(compiling):
        lines.append("| first call, new process, empty Triton cache, every kernel compiled (`GANBENCH_PREBUILT=0`) | | "
                     + " | ".join(value(entry.get("first_call_s"), "_s") for entry in compiling) + " |")
    for key, label in TARGET_NAMES.items():
        cells = []
        for name in precisions:
            entry = targets["summary"][name].get(key, {})
            met = {True: "met", False: "not met"}.get(entry.get("met"), "")
            cells.append(f"{value(entry.get('value'), key)} {met}".strip())
        target = next(iter(targets["summary"].values()))[key]["target"]
        if key.endswith("_s"):  # "<= 2" seconds reads "<= 2 s"
            sense, limit = target.split()
            target = f"{sense} {_seconds(float(limit))}"
        lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
    keops = shared.get("keops_sixteen_sigmas")
    if isinstance(keops, str):
        lines.append(f"| KeOps LazyTensor log-sum-exp | | {keops} | |")
    return "\n".join(lines) + "\n"


def table1_block(result: dict) -> str:
    """Table 1's MNIST column as ``ganbench reproduce table1 --out results`` measured it (results/table1.json)."""
    from ganbench.paper import table1

    frame = table1.to_frame(result)[["model", "kind", "MNIST", "sigma"]]
    lines = ["```", "| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(str(value) for value in record) + " |" for record in frame.itertuples(index=False)]
    return "\n".join(lines + ["```"]) + "\n"


def table1_seconds(result: dict) -> str:
    """Each measured Table 1 row's seconds (its bank made and scored) in the committed run, from ``table1.json``."""
    rows = [row for row in result["table"] if row["kind"] == "measured" and isinstance(row.get("mnist"), dict)]
    devices = sorted({row["mnist"]["device"] for row in rows})
    lines = [f"`results/{TABLE1_RESULT}`, written {result['provenance']['created']} by "
             f"`{result['provenance']['command']}` ({'; '.join(devices)})", "",
             "| row | seconds (bank made and scored) |", "|---|---|"]
    lines += [f"| {row['model']} | {row['mnist']['seconds']:.1f} |" for row in rows]
    lines.append(f"| all rows | {sum(row['mnist']['seconds'] for row in rows):.1f} |")
    return "\n".join(lines) + "\n"


def sections(results: Path = ROOT / "results") -> dict[str, str]:
    """Every generated section's text, by name, from the JSON files in ``results``."""
    table1_result = json.loads((results / TABLE1_RESULT).read_text())
    return {"table1": table1_block(table1_result),
            "table1-seconds": table1_seconds(table1_result),
            "speed-cpu": cpu_table(json.loads((results / CPU_REPORT).read_text())),
            "speed-cpu-sigmas": cpu_sigmas_table(json.loads((results / CPU_SIGMAS_REPORT).read_text())),
            "speed-gpu": gpu_table(json.loads((results / GPU_REPORT).read_text())),
            "speed-gpu-targets": targets_table(json.loads((results / GPU_TARGETS_REPORT).read_text()))}


def render(text: str, generated: dict[str, str]) -> str:
    """``text`` with the body of every marked section replaced by its generated text."""
    return SECTION.sub(lambda match: match.group(1) + generated[match.group("name")] + match.group(4), text)


def documents(root: Path = ROOT) -> list[Path]:
    """The files whose marked sections are generated: the README and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main() -> int:
    generated = sections()
    for document in documents():
        text = document.read_text()
        rendered = render(text, generated)
        if rendered != text:
            document.write_text(rendered)
            print(f"rewrote the generated sections of {document}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
