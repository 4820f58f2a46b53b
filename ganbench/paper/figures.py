"""The paper's figures for a generator: Figure 2 (samples beside nearest training images),
Figure 3 (interpolation in z space), the nearest-distance histogram of the memorisation report,
and the training curve of a run's per-epoch Parzen monitor."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ganbench import atomic  # noqa: E402
from ganbench.errors import GanbenchError
from ganbench.gan import sampling
from ganbench.gan.models import sample_noise  # noqa: E402
from ganbench.paper import memorization
from ganbench.scoring import neighbours  # noqa: E402

SIDE = 28


def _tile(images: np.ndarray, rows: int, columns: int, pad: int = 2) -> np.ndarray:
    """(rows * columns, 784) -> one grey canvas with ``pad`` pixels between digits."""
    canvas = np.ones((rows * (SIDE + pad) + pad, columns * (SIDE + pad) + pad), dtype=np.float32)
    for index, image in enumerate(images[: rows * columns]):
        r, c = divmod(index, columns)
        top, left = pad + r * (SIDE + pad), pad + c * (SIDE + pad)
        canvas[top:top + SIDE, left:left + SIDE] = image.reshape(SIDE, SIDE)
    return canvas


def _save(figure, path: Path) -> Path:
    atomic.write_with(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100, bbox_inches="tight"))
    plt.close(figure)
    return path


def figure2(samples: np.ndarray, train: np.ndarray, path: Path, rows: int = 6, columns: int = 6) -> Path:
    """Random samples; the right-most column is the nearest training image of its left neighbour."""
    shown = samples[: rows * (columns - 1)]
    _, nearest_index = neighbours.nearest(shown[columns - 2::columns - 1], train)
    grid = []
    for r in range(rows):
        row = list(shown[r * (columns - 1):(r + 1) * (columns - 1)])
        grid.extend(row + [train[nearest_index[r, 0]]])
    canvas = _tile(np.asarray(grid), rows, columns)
    figure, axis = plt.subplots(figsize=(columns * 0.8, rows * 0.8))
    axis.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    step = SIDE + 2
    axis.add_patch(plt.Rectangle(((columns - 1) * step + 0.5, 0.5), step, rows * step, fill=False,
                                 edgecolor="yellow", linewidth=2))
    axis.set_axis_off()
    axis.set_title("Samples; right column: nearest training image of the neighbouring sample", fontsize=7)
    return _save(figure, path)


def samples_grid(images: np.ndarray, path: Path, rows: int = 10, columns: int = 10, title: str | None = None) -> Path:
    """The first rows * columns images, row by row."""
    figure, axis = plt.subplots(figsize=(columns * 0.8, rows * 0.8))
    axis.imshow(_tile(images, rows, columns), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axis.set_axis_off()
    if title:
        axis.set_title(title, fontsize=8)
    return _save(figure, path)


@torch.no_grad()
def figure3(generator, path: Path, seed: int = 0, rows: int = 8, steps: int = 10) -> Path:
    """Each row: G applied to a linear path between two random z (Section 5, Figure 3)."""
    rng = torch.Generator().manual_seed(seed)
    start, end = sample_noise(rows, rng), sample_noise(rows, rng)
    weights = torch.linspace(0, 1, steps)
    noise = (start[:, None, :] * (1 - weights[None, :, None]) + end[:, None, :] * weights[None, :, None])
    images = generator(noise.reshape(-1, noise.shape[-1])).numpy()
    figure, axis = plt.subplots(figsize=(steps * 0.8, rows * 0.8))
    axis.imshow(_tile(images, rows, steps), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axis.set_axis_off()
    axis.set_title("Linear interpolation in z space", fontsize=8)
    return _save(figure, path)


def distance_histogram(report: dict, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, max(report["_sample_distances"].max(), report["_test_distances"].max()), 80)
    axis.hist(report["_test_distances"], bins=bins, alpha=0.6, density=True, label="test image -> nearest train")
    axis.hist(report["_sample_distances"], bins=bins, alpha=0.6, density=True, label="sample -> nearest train")
    axis.axvline(report["copy_threshold"], color="k", linestyle="--", linewidth=1, label="1% of test (copy threshold)")
    axis.set_xlabel("squared Euclidean distance to the nearest training image")
    axis.set_ylabel("density")
    axis.legend(fontsize=7)
    return _save(figure, path)


def _cut_short(log_path: Path, row: int, columns: int) -> bool:
    """Whether data row ``row`` of a CSV log holds fewer fields than its header (a file cut mid-row)."""
    lines = log_path.read_text(errors="replace").splitlines()
    return row + 1 < len(lines) and len(lines[row + 1].split(",")) < columns


def training_curve(log_path: str | Path, path: Path, window: int = 25, config: dict | None = None) -> Path:
    """The validation Parzen monitor over epochs (each epoch and a centred running mean) and D's loss.

    ``config`` is the run's TrainConfig as a dict (stored in every generator file); its monitor
    settings title the plot, since the log itself holds only numbers.
    """
    log_path = Path(log_path)
    try:
        log = pd.read_csv(log_path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise GanbenchError(f"cannot read the training log {log_path} ({type(error).__name__}); "
                            "pass the train_log.csv of a `ganbench train` run") from None
    missing = {"epoch", "parzen_valid", "d_loss"} - set(log.columns)
    if missing:
        which = ("a baseline's log (its curve is drawn from results/baselines)" if "layer" in log.columns
                 or "walkback_loss" in log.columns else f"a log without the columns {', '.join(sorted(missing))}")
        raise GanbenchError(f"{log_path} is {which}; pass the train_log.csv of a run of the paper's GAN (`ganbench "
                            "train` without --model)")
    if log.empty:
        raise GanbenchError(f"{log_path} has no rows (no epoch finished); pass the train_log.csv of a `ganbench train` "
                            "run that finished an epoch")
    for column in ("epoch", "parzen_valid", "d_loss"):  # a text or NaN/inf cell was plotted as a category or broke the axes
        values = pd.to_numeric(log[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            found = repr(str(log[column].iloc[row]))
            if _cut_short(log_path, row, len(log.columns)):  # read back as NaN, as a written 'nan' is
                found = "missing (the row is cut short)"
            raise GanbenchError(f"{log_path}: {column} is {found} in data row {row + 1}, not a finite number; pass "
                                "the train_log.csv of a `ganbench train` run, or fix that row")
        log[column] = values
    shown = log[log["parzen_valid"] > log["parzen_valid"].max() - 100]  # the first epochs sit far below
    figure, (monitor_axis, loss_axis) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=(3, 1))
    monitor_axis.plot(shown["epoch"], shown["parzen_valid"], ".", markersize=2, alpha=0.4, label="each epoch")
    running = log["parzen_valid"].rolling(window, center=True, min_periods=1).mean()
    monitor_axis.plot(log["epoch"], running, linewidth=1.5, label=f"running mean of {window}")
    monitor_axis.set_ylim(shown["parzen_valid"].min() - 5, shown["parzen_valid"].max() + 5)
    monitor_axis.set_ylabel("Parzen monitor (nats)")
    settings = config if isinstance(config, dict) else {}
    counts = [settings.get(name) for name in ("monitor_valid", "monitor_bank")]
    sigma = settings.get("monitor_sigma")
    # Settings of the types a run writes: a file edited by hand (a count given as text) gets the untitled plot.
    if all(isinstance(count, int) and not isinstance(count, bool) for count in counts) and \
            isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        monitor_axis.set_title(f"{counts[0]:,} validation images, sigma {sigma:g}, {counts[1]:,} samples", fontsize=8)
    else:  # a generator file without its run's config: the log alone does not say how it was measured
        monitor_axis.set_title("per-epoch validation Parzen monitor (settings not recorded)", fontsize=8)
    monitor_axis.legend(fontsize=7)
    loss_axis.plot(log["epoch"], log["d_loss"], linewidth=1, marker="." if len(log) == 1 else None)  # one epoch: a point
    loss_axis.set_ylabel("D loss")
    loss_axis.set_xlabel("epoch")
    return _save(figure, path)


def all_figures(generator_path: str, mnist, out_dir: str | Path, seed: int = 0, backend: str = "auto",
                train_log: str | Path | None = None) -> dict:
    out_dir = Path(out_dir)
    generator, metadata = sampling.load_generator(generator_path)
    curve = (training_curve(train_log, out_dir / "training_curve.png", config=metadata.get("config"))
             if train_log else None)
    samples = sampling.generate(generator, 10_000, seed)
    report = memorization.report(samples, mnist.train_x, mnist.test_x, backend=backend)
    rng = np.random.default_rng(seed)
    shown = samples[rng.permutation(len(samples))[:100]]
    paths = {
        "figure2": figure2(shown, mnist.train_x, out_dir / "figure2_samples_nearest.png"),
        "figure3": figure3(generator, out_dir / "figure3_interpolation.png", seed=seed),
        "histogram": distance_histogram(report, out_dir / "nearest_distance_histogram.png"),
    }
    paths["samples"] = samples_grid(shown, out_dir / "samples_100.png")
    if curve is not None:
        paths["training_curve"] = curve
    return {name: str(path) for name, path in paths.items()}, report
