"""Memorisation reports and figures of the shipped baselines (called by `ganbench figures`).

Each baseline's 10,000 independent samples (the GAN paper's protocol bank) get the
memorisation report of ganbench/paper/memorization.py, a samples figure with nearest
training images (Figure 2's layout) and its training curve. The Deep GSN's authors' bank
also gets a report: it starts at test image 0, which a check against the *training* set
cannot see, so every report here also counts bank rows that copy a *test* image.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ganbench import baselines  # noqa: E402
from ganbench.baselines.training import LOG_NAME  # noqa: E402
from ganbench.paper import figures, memorization  # noqa: E402
from ganbench.scoring import neighbours  # noqa: E402

REPORTS_NAME = "baselines_memorization.json"  # written by `ganbench figures` beside the figures


def copies_of_test_images(bank: np.ndarray, test: np.ndarray, threshold: float, backend: str = "auto") -> dict:
    """Bank rows that equal a test image, or lie closer to one than ``threshold`` (the copy threshold)."""
    distances, indices = neighbours.nearest(bank, test, backend=backend)
    distances, indices = distances[:, 0], indices[:, 0]
    exact = np.flatnonzero(distances <= 1e-6)
    return {"exact_test_copies": int(len(exact)), "near_test_copies": int(np.sum(distances < threshold)),
            "exact_test_copy_rows": [{"bank_row": int(row), "test_index": int(indices[row])} for row in exact[:10]]}


def bank_report(bank: np.ndarray, mnist, backend: str = "auto") -> dict:
    report = memorization.report(bank, mnist.train_x, mnist.test_x, backend=backend)
    report.update(copies_of_test_images(bank, mnist.test_x, report["copy_threshold"], backend))
    return report


def training_curve(log_path: Path, path: Path, title: str) -> Path:
    """The per-epoch validation monitor and the training loss of a baseline's train_log.csv."""
    log = pd.read_csv(log_path)
    loss_column = next(column for column in ("walkback_loss", "loss", "reconstruction_error") if column in log)
    figure, (monitor_axis, loss_axis) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=(3, 1))
    monitor_axis.plot(log["epoch"], log["parzen_valid"], ".-", markersize=3)
    best = log["parzen_valid"].max()
    monitor_axis.set_ylim(max(log["parzen_valid"].min(), best - 400) - 10, best + 10)  # a collapsed epoch off-scale
    monitor_axis.set_ylabel("validation monitor (nats)")
    monitor_axis.set_title(title, fontsize=8)
    loss_axis.plot(log["epoch"], log[loss_column], linewidth=1)
    loss_axis.set_ylabel(loss_column.replace("_", " "), fontsize=7)
    loss_axis.set_xlabel("epoch")
    return figures._save(figure, path)


def baseline_figures(mnist, out_dir: str | Path, seed: int = 0, backend: str = "auto",
                     folder: str | Path | None = None) -> tuple[dict, dict]:
    """For each shipped baseline: samples beside nearest training images, 100 samples, the training
    curve, and the memorisation report (public parts). Returns (paths, reports)."""
    out_dir, folder = Path(out_dir), Path(folder or baselines.SHIPPED_DIR)
    paths, reports = {}, {}
    for name in baselines.BASELINES:
        weights = baselines.shipped_weights(name, folder)
        if not weights.is_file():
            continue
        title = baselines.module(name).SPEC.title
        print(f"ganbench: figures of the {title} (its bank sampled, or read from the cache)", file=sys.stderr)
        bank = baselines.cached_bank(name, "samples", seed, weights)
        reports[name] = memorization.public(bank_report(bank, mnist, backend))
        shown = bank[np.random.default_rng(seed).permutation(len(bank))[:100]]
        paths[f"{name}_figure2"] = figures.figure2(shown, mnist.train_x, out_dir / f"{name}_samples_nearest.png")
        paths[f"{name}_samples"] = figures.samples_grid(shown, out_dir / f"{name}_samples_100.png",
                                                        title=f"{title} (ganbench): 100 of its 10,000 samples")
        log = folder / f"{name}_{LOG_NAME}"
        if log.is_file():
            paths[f"{name}_training_curve"] = training_curve(log, out_dir / f"{name}_training_curve.png",
                                                             f"{title}: per-epoch validation monitor")
        if name == "gsn":
            chain = baselines.cached_bank("gsn", "authors_chain", seed, weights, start_image=mnist.test_x[0])
            reports["gsn_authors"] = memorization.public(bank_report(chain, mnist, backend))
            paths["gsn_authors_chain"] = figures.samples_grid(
                chain, out_dir / "gsn_authors_chain_100.png",
                title="Deep GSN, the authors' bank: test image 0, then the chain's next 99 means")
    return {name: str(path) for name, path in paths.items()}, reports
