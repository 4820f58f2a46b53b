"""What the int8 kernel's machine code does per tile, compiled offline for sm_90 (no GPU): `python benchmarks/gpu_sass.py`.

Triton's compiler and ptxas run on the CPU, and Triton's wheel carries NVIDIA's disassembler, so the
code an H100 or H200 would run can be read on any machine. For each variant of the int8 Parzen
kernel's sigma epilogue (``UNBRANCHED`` off and on, ``kernels/parzen_int8.py``), at the 64 x 32
tile (four digits and the correction: a generator's bank), separate and STACKED (as shipped), and the
one-digit tile (64 x 64: an 8-bit bank), with 1 and 16 sigmas, it records ptxas's registers and
spills, how many tensor-core products Triton lets run while the next is issued (``products_in_flight``:
the ``pendings`` of its dot waits; 0 means each product is waited for), and counts SASS instructions: the whole kernel,
the special-function unit's (MUFU: exp2), float64 (DFMA, DMUL, DADD), shuffles (the rows'
reductions), branches, and the reconvergence points (BSSY) that split straight-line code into
blocks the scheduler cannot overlap; and, for comparison, the tf32x3 kernel as shipped.

These are counts, not times: whether a variant is faster is for a GPU to measure
(``benchmarks/gpu_breakdown.py --sweep-only``). Writes results/int8-sass-sm_90.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)  # Triton's compiler, not its interpreter

import triton  # noqa: E402
from ganbench.kernels import parzen_int8, parzen_lse, prebuilt  # noqa: E402
from ganbench.kernels.launches import KernelCall  # noqa: E402

from ganbench import atomic  # noqa: E402

CASES = {  # name: (digits, correction, tile)
    "generator bank (four digits)": (4, True, {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 64,
                                              "num_warps": 4, "num_stages": 3, "STACKED": False}),
    "generator bank (four digits, stacked)": (4, True, {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 64,
                                                       "num_warps": 4, "num_stages": 3, "STACKED": True}),
    "generator bank (four digits, stacked, 8 warps)": (4, True, {"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 64,
                                                                "num_warps": 8, "num_stages": 3, "STACKED": True}),
    "8-bit bank (one digit)": (1, True, {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64,
                                        "num_warps": 4, "num_stages": 3}),
}
SIGMA_COUNTS = (1, 16)
COUNTED = {"mufu": ("MUFU",), "float64": ("DFMA", "DMUL", "DADD"), "shuffles": ("SHFL",),
           "branches": ("BRA",), "reconvergence": ("BSSY",), "global_loads": ("LDG",)}
TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def compile_for_sm90(call):
    """A ``KernelCall`` compiled as its launch would compile it for sm_90 (machine code and every stage)."""
    target, backend = prebuilt.target_backend()
    source, options = prebuilt.specialize(call, backend)
    return triton.compile(source, target=target, options=options.__dict__)


def int8_call(calls: list, sigmas: int, digits: int, correction: bool, meta: dict) -> KernelCall:
    """The shipped int8 launch with these sigmas, digits and correction, its tile and epilogue replaced by
    ``meta`` (the operands' shapes and alignment, which Triton specializes on, fit every candidate tile)."""
    call = next(call for call in calls if call.kernel is parzen_int8._parzen_int8_kernel
                and (call.meta["NUM_SIGMAS"], call.meta["DIGITS"], call.meta["CORRECTION"]) == (sigmas, digits, correction))
    return KernelCall(call.kernel, call.grid, call.args, {**call.meta, **meta})


def _tool(name: str, *arguments: str, cubin: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        return subprocess.run([str(TOOLS / name), *arguments, file.name], check=True, capture_output=True,
                              text=True).stdout


def sass_opcodes(cubin: bytes) -> collections.Counter:
    """Opcode counts (the mnemonic before its first dot) of the kernel's SASS."""
    opcodes = collections.Counter()
    for line in _tool("nvdisasm", "-c", cubin=cubin).splitlines():
        match = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if match:
            opcodes[match.group(1)] += 1
    return opcodes


def resources(cubin: bytes) -> dict:
    """ptxas's registers per thread and stack (spill) bytes, as cuobjdump reports them."""
    usage = _tool("cuobjdump", "-res-usage", cubin=cubin)
    return {"registers": int(re.search(r"REG:(\d+)", usage).group(1)),
            "stack_bytes": int(re.search(r"STACK:(\d+)", usage).group(1))}


def machine_code_counts(compiled) -> dict:
    """Registers, spills, products in flight, the instruction count and the counted groups of one compiled
    kernel."""
    machine_code = compiled.asm["cubin"]
    opcodes = sass_opcodes(machine_code)
    waits = [int(pending) for pending in re.findall(r"warp_group_dot_wait.*?pendings = (\d+)", compiled.asm["ttgir"])]
    return {**resources(machine_code), "products_in_flight": max(waits, default=None),
            "instructions": sum(opcodes.values()),
            **{name: sum(opcodes[op] for op in ops) for name, ops in COUNTED.items()}}


def measure() -> dict:
    calls, rows = prebuilt.shipped_calls(), []
    for case, (digits, correction, tiles) in CASES.items():
        for sigmas in SIGMA_COUNTS:
            for unbranched in (False, True):
                call = int8_call(calls, sigmas, digits, correction, {**tiles, "UNBRANCHED": unbranched})
                row = {"case": case, "sigmas": sigmas, "unbranched": unbranched,
                       **machine_code_counts(compile_for_sm90(call))}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return {"arch": f"sm_{prebuilt.ARCH}", "triton": triton.__version__, "kernel": "kernels/parzen_int8.py",
            "tiles": {case: tiles for case, (_, _, tiles) in CASES.items()}, "rows": rows,
            "tf32x3_kernel_for_comparison": tf32x3_rows(calls)}


def tf32x3_rows(calls: list) -> list[dict]:
    """The same counts for the float32 kernel (kernels/parzen_lse.py) as shipped for sm_90: its sums are
    float32 and it skips nothing, so its epilogue is straight-line code too."""
    rows = []
    for call in calls:
        if call.kernel is parzen_lse._parzen_lse_kernel and call.meta["NUM_SIGMAS"] in SIGMA_COUNTS:
            row = {"sigmas": call.meta["NUM_SIGMAS"], **machine_code_counts(compile_for_sm90(call))}
            rows.append(row)
            print(json.dumps({"tf32x3": row}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/int8-sass-sm_90.json")
    args = parser.parse_args()
    atomic.write_text(args.out, json.dumps(measure(), indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
