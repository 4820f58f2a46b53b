"""What users would otherwise run to score samples, timed beside ganbench in a child process each.

Three peers, the same estimator as ganbench (log-likelihood per sigma and query):
- ``naive``: norms + matmul, clamp, logsumexp over a sigma broadcast, in eager torch;
- ``compiled``: the same function through ``torch.compile`` (its first call compiles);
- ``keops``: a KeOps ``LazyTensor`` log-sum-exp of -||x - s||^2 / (2 sigma^2), one sigma at a time.

Each runs in its own Python process (``python -m ganbench.paper.peers NAME FOLDER DEVICE REPEATS``)
so that a peer that crashes (KeOps 2.3 generating code for d = 784 on a GPU took a SIGSEGV)
becomes a recorded result of the benchmark, not the end of it. The child reads x.npy, bank.npy
and sigmas.npy from FOLDER and writes values.npy (float64 log-likelihoods, (S, n)) and
timing.json (first call, compile included, and the median of the repeats).
"""
from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ganbench.scoring import parzen

PEERS = {
    "naive": "torch naive (norms + matmul, clamp, logsumexp)",
    "compiled": "torch.compile'd naive (norms + matmul, clamp, logsumexp)",
    "keops": "KeOps LazyTensor log-sum-exp",
}
QUERY_CHUNK = 1_000  # eager broadcast: S x 1,000 x m float32 at once (400 MB for 10 sigmas, m = 10,000)
CHILD_TIMEOUT_S = 900


def naive_peer(queries: torch.Tensor, bank: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """What a user writes without ganbench: norms + matmul, clamp, logsumexp over a sigma broadcast."""
    distances = (queries * queries).sum(1)[:, None] + (bank * bank).sum(1)[None, :] - 2.0 * queries @ bank.T
    distances = distances.clamp(min=0.0)
    return torch.logsumexp(-distances[None] / (2.0 * sigmas[:, None, None] ** 2), dim=2)


def keops_peer(queries: torch.Tensor, bank: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The KeOps way: a symbolic (n, m) matrix reduced by log-sum-exp without forming it."""
    from pykeops.torch import LazyTensor

    x_i, s_j = LazyTensor(queries[:, None, :]), LazyTensor(bank[None, :, :])
    distances = ((x_i - s_j) ** 2).sum(-1)
    return torch.stack([(-distances * float(0.5 / s**2)).logsumexp(dim=1)[:, 0] for s in sigmas.tolist()])


def available(name: str) -> bool:
    return name != "keops" or importlib.util.find_spec("pykeops") is not None


def run_isolated(name: str, x: np.ndarray, bank: np.ndarray, sigmas, device: str = "cpu", repeats: int = 3,
                 timeout: float = CHILD_TIMEOUT_S) -> dict:
    """One peer in a child process: {"values", "seconds", "first_call_seconds"} or {"status": why not}."""
    with tempfile.TemporaryDirectory(prefix="ganbench-peer-") as folder:
        for file, array in (("x", x), ("bank", bank), ("sigmas", np.asarray(sigmas, np.float64))):
            np.save(Path(folder, f"{file}.npy"), array)
        command = [sys.executable, "-m", "ganbench.paper.peers", name, folder, device, str(repeats)]
        outcome = run_child(command, timeout)
        if "status" in outcome:
            return outcome
        timing = json.loads(Path(folder, "timing.json").read_text())
        return {"values": np.load(Path(folder, "values.npy")), **timing}


def run_child(command: list[str], timeout: float = CHILD_TIMEOUT_S) -> dict:
    """Run ``command``; {} when it succeeds, else {"status": one line saying how it failed}."""
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:g} s"}
    if finished.returncode == 0:
        return {}
    if finished.returncode < 0:
        try:
            name = signal.Signals(-finished.returncode).name
        except ValueError:
            name = f"signal {-finished.returncode}"
        return {"status": f"crashed ({name})"}
    lines = [line for line in finished.stderr.strip().splitlines() if line.strip()]
    return {"status": f"failed: {lines[-1][:200] if lines else f'exit status {finished.returncode}'}"}


def _log_likelihood(peer, x: torch.Tensor, bank: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """log p per sigma and query: the peer's log-sum-exp in query chunks, minus log m + d log(sigma sqrt(2 pi))."""
    lse = torch.cat([peer(x[start:start + QUERY_CHUNK], bank, sigmas) for start in range(0, len(x), QUERY_CHUNK)],
                    dim=1)
    constant = parzen.normalising_constant(sigmas.double().cpu().numpy(), len(bank), x.shape[1])
    return lse.double() - torch.as_tensor(constant, device=lse.device)[:, None]


def _child(name: str, folder: Path, device: str, repeats: int) -> None:
    # The peer sees sigma in float32, as a user's code would; its error against the float64
    # reference includes that rounding (about 2u D / (2 sigma^2): 3e-4 nats at sigma 0.1 on MNIST).
    x = torch.from_numpy(np.load(folder / "x.npy")).float().to(device)
    bank = torch.from_numpy(np.load(folder / "bank.npy")).float().to(device)
    sigmas = torch.from_numpy(np.load(folder / "sigmas.npy")).float().to(device)
    peer = {"naive": naive_peer, "compiled": torch.compile(naive_peer), "keops": keops_peer}[name]

    def call():
        values = _log_likelihood(peer, x, bank, sigmas)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return values

    started = time.perf_counter()
    values = call()
    first = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    np.save(folder / "values.npy", values.cpu().numpy())
    (folder / "timing.json").write_text(json.dumps({"seconds": float(np.median(times)), "first_call_seconds": first}))


if __name__ == "__main__":
    _child(sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
