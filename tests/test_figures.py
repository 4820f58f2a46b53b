"""Figures: right pixel size, non-empty grids, nearest column really the nearest training image."""
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from tolerances import distance_bound, nearest_is_within_bound

from ganbench.errors import GanbenchError
from ganbench.gan.models import Generator
from ganbench.paper import figures, memorization


def test_tile_geometry(rng):
    canvas = figures._tile(rng.random((12, 784)), rows=3, columns=4, pad=2)
    assert canvas.shape == (3 * 30 + 2, 4 * 30 + 2)
    assert canvas[2:30, 2:30].std() > 0


def test_figure2_and_3_are_written_and_not_blank(tmp_path, mnist, monkeypatch):
    samples, train = mnist.valid_x[:30], mnist.train_x[:2000]
    tiled = []
    original_tile = figures._tile
    monkeypatch.setattr(figures, "_tile", lambda images, *args, **kwargs: tiled.append(images) or original_tile(
        images, *args, **kwargs))
    path = figures.figure2(samples, train, tmp_path / "f2.png", rows=6, columns=6)
    # Each row: five samples in order, then the training image nearest the fifth (float64, brute
    # force), or one within the float32 bound of it.
    grid = tiled[0].reshape(6, 6, 784)
    np.testing.assert_array_equal(grid[:, :5].reshape(30, 784), samples)
    neighbours, shown = grid[:, 4], grid[:, 5]
    matches = [np.flatnonzero((train == image).all(axis=1)) for image in shown]
    assert all(len(rows) >= 1 for rows in matches), "the right column holds an image that is not a training image"
    chosen = np.array([rows[0] for rows in matches])  # equal training images are equally near
    assert np.all(nearest_is_within_bound(neighbours, train, chosen, distance_bound(neighbours, train)))
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image[..., :3].std() > 0.05
    torch.manual_seed(0)
    path = figures.figure3(Generator(), tmp_path / "f3.png", rows=3, steps=5)
    assert matplotlib.image.imread(path).shape[0] > 50


def test_histogram_from_a_report(tmp_path, mnist, rng):
    report = memorization.report(mnist.valid_x[:100], mnist.train_x[:1000], mnist.test_x[:100], backend="torch")
    path = figures.distance_histogram(report, tmp_path / "h.png")
    assert matplotlib.image.imread(path).std() > 0


def test_training_curve_from_a_log_and_a_clear_error_for_a_wrong_file(tmp_path, rng):
    epochs = range(1, 61)
    pd.DataFrame({"epoch": epochs, "d_loss": 0.6 + 0.01 * rng.random(60),
                  "parzen_valid": [-500.0] + [150 + e / 2 + rng.random() for e in epochs][1:]}).to_csv(
        tmp_path / "train_log.csv", index=False)
    path = figures.training_curve(tmp_path / "train_log.csv", tmp_path / "curve.png")
    assert matplotlib.image.imread(path).std() > 0
    pd.DataFrame({"epoch": [1], "loss": [0.5]}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(GanbenchError, match="is a log without the columns d_loss, parzen_valid; pass the train_log.csv "
                                            "of a run of the paper's GAN"):
        figures.training_curve(tmp_path / "other.csv", tmp_path / "x.png")
    pd.DataFrame({"epoch": [1], "layer": [1], "parzen_valid": [0.5]}).to_csv(tmp_path / "dbn.csv", index=False)
    with pytest.raises(GanbenchError, match="is a baseline's log"):  # a `ganbench train --model dbn` run's
        figures.training_curve(tmp_path / "dbn.csv", tmp_path / "x.png")
    pd.DataFrame({"epoch": [], "d_loss": [], "parzen_valid": []}).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(GanbenchError, match="has no rows \\(no epoch finished\\)"):
        figures.training_curve(tmp_path / "empty.csv", tmp_path / "x.png")
    (tmp_path / "utf16.csv").write_text((tmp_path / "train_log.csv").read_text(), encoding="utf-16")
    for unreadable in ("missing.csv", "utf16.csv"):  # the second: a UnicodeDecodeError traceback once
        with pytest.raises(GanbenchError, match="cannot read the training log"):
            figures.training_curve(tmp_path / unreadable, tmp_path / "x.png")
    # A NaN or inf broke matplotlib's axes (a traceback); a text cell was drawn as a category (exit 0).
    for column, value, shown in (("d_loss", "nan", "'nan'"), ("parzen_valid", "inf", "'inf'"), ("d_loss", "abc", "'abc'")):
        log = pd.read_csv(tmp_path / "train_log.csv", dtype=str)
        log.loc[7, column] = value
        log.to_csv(tmp_path / "edited.csv", index=False)
        with pytest.raises(GanbenchError, match=f"{column} is {shown}.* in data row 8, not a finite number"):
            figures.training_curve(tmp_path / "edited.csv", tmp_path / "x.png")
    # A file cut mid-row: its last row's fields are missing, not 'nan' (as they read back).
    whole = (tmp_path / "train_log.csv").read_text()
    (tmp_path / "cut.csv").write_text(whole[:whole.index("\n", 200) + 4])
    with pytest.raises(GanbenchError, match="is missing \\(the row is cut short\\) in data row"):
        figures.training_curve(tmp_path / "cut.csv", tmp_path / "x.png")


def test_training_curve_title_states_the_runs_monitor_settings(tmp_path, rng, monkeypatch):
    pd.DataFrame({"epoch": [1, 2, 3], "d_loss": [0.6, 0.6, 0.6], "parzen_valid": [100.0, 110.0, 120.0]}).to_csv(
        tmp_path / "train_log.csv", index=False)
    titles = []
    monkeypatch.setattr(figures, "_save", lambda figure, path: titles.append(figure.axes[0].get_title()) or path)
    figures.training_curve(tmp_path / "train_log.csv", tmp_path / "a.png",
                           config={"monitor_valid": 500, "monitor_sigma": 0.15, "monitor_bank": 2000})
    figures.training_curve(tmp_path / "train_log.csv", tmp_path / "b.png")  # no config: no guessed settings
    # Edited by hand (a count as text): once a ValueError from the title's format, now the untitled plot.
    figures.training_curve(tmp_path / "train_log.csv", tmp_path / "c.png",
                           config={"monitor_valid": "1000", "monitor_sigma": 0.15, "monitor_bank": 2000})
    assert titles == ["500 validation images, sigma 0.15, 2,000 samples"] + \
        ["per-epoch validation Parzen monitor (settings not recorded)"] * 2
