"""Table 1: the committed numbers are recomputed in CI; a perturbed scorer must fail the check."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from ganbench.errors import GanbenchError
from ganbench.paper import table1, tfd
from ganbench.scoring import parzen

RESULTS = Path(__file__).resolve().parent.parent / "results"
FAST_ROWS = ("ganbench", "training_images")  # k-means is checked by `ganbench check` in full runs


@pytest.mark.slow
def test_committed_table1_recomputes_within_tolerance(mnist):
    ok, frame = table1.check(RESULTS / "table1.json", FAST_ROWS, backend="torch")
    assert ok, frame.to_string()


@pytest.mark.slow
def test_sigma_off_by_one_percent_fails_the_check(mnist, monkeypatch):
    original = parzen.log_likelihood
    monkeypatch.setattr(parzen, "log_likelihood",
                        lambda x, bank, sigmas, **options: original(x, bank, np.asarray(sigmas) * 1.01, **options))
    ok, frame = table1.check(RESULTS / "table1.json", ("training_images",), backend="torch")
    assert not ok
    moved = frame[~frame["ok"]]
    assert "mean" in set(moved["field"])
    assert (moved["difference"] > moved["tolerance"]).all()


@pytest.mark.slow
def test_an_altered_stored_number_fails_the_check(mnist, tmp_path):
    stored = json.loads((RESULTS / "table1.json").read_text())
    for row in stored["table"]:
        if row.get("key") == "training_images":
            row["mnist"]["mean"] += 0.05
    (tmp_path / "table1.json").write_text(json.dumps(stored))
    ok, frame = table1.check(tmp_path / "table1.json", ("training_images",), backend="torch")
    assert not ok and frame.loc[frame["field"] == "mean", "ok"].tolist() == [False]


@pytest.mark.parametrize("edit, field", [
    (lambda row: row.update(tolerance_nats=1000.0, mean=row["mean"] + 50), "mean"),  # the file's tolerance is not used
    (lambda row: row.update(seed=1), "seed"),
    (lambda row: row.update(n_bank=5000), "n_bank"),
    (lambda row: row.update(protocol="bogus"), "protocol"),
    (lambda row: row["valid_means"].update({"0.1": row["valid_means"]["0.1"] + 3}), "valid_means"),
])
def test_a_row_that_misstates_its_measurement_fails_the_check(edit, field, mnist, tmp_path, capsys):
    """Each of these edits passed: the file's own tolerance was trusted, a row's counts, seed, protocol and
    validation means were never compared with the re-run."""
    stored = json.loads((RESULTS / "table1.json").read_text())
    for row in stored["table"]:
        if row.get("key") == "training_images":
            edit(row["mnist"])
            row["tfd"] = {"mean": 1.0, "error": 0.1}
    (tmp_path / "table1.json").write_text(json.dumps(stored))
    ok, frame = table1.check(tmp_path / "table1.json", ("training_images",), backend="torch")
    assert not ok and frame.loc[~frame["ok"], "field"].tolist() == [field], frame.to_string()
    assert "the TFD column is not re-scored" in capsys.readouterr().err


@pytest.mark.parametrize("edit, said", [
    (lambda row: row.update(seed="zero"), "seed = 'zero', not a whole number"),
    (lambda row: row.update(n_bank=-3), "n_bank = -3, not a whole number"),
    (lambda row: row.pop("valid_means"), "has no 'valid_means'"),
    # A NaN never compares greater, so max() over the widths kept another difference and passed once.
    (lambda row: row["valid_means"].update({list(row["valid_means"])[2]: float("nan")}), "valid_means that are not"),
])
def test_a_row_of_the_wrong_kind_cannot_be_checked(edit, said, tmp_path):
    """A string seed, a negative count or deleted validation means were reported as numbers that moved (exit 1,
    one row hundreds of characters wide): the file was altered, which is exit 2, before any work."""
    stored = json.loads((RESULTS / "table1.json").read_text())
    for row in stored["table"]:
        if row.get("key") == "training_images":
            edit(row["mnist"])
    (tmp_path / "table1.json").write_text(json.dumps(stored))
    with pytest.raises(GanbenchError, match=said):
        table1.check(tmp_path / "table1.json", ("training_images",), backend="torch")


def test_committed_table_has_every_row_and_provenance():
    stored = json.loads((RESULTS / "table1.json").read_text())
    models = [row["model"] for row in stored["table"]]
    for name in ("DBN", "Stacked CAE", "Deep GSN", "Adversarial nets", "Adversarial nets (ganbench)",
                 "Training images (10,000)", "k-means (10,000 centroids)"):
        assert name in models
    for field in ("git_commit", "git_dirty", "command", "torch", "triton", "protocol", "seed"):
        assert field in stored["provenance"]
    shipped = hashlib.sha256((RESULTS / "generator.pt").read_bytes()).hexdigest()
    assert stored["provenance"]["generator_sha256"] == shipped  # the table is of the shipped weights
    markdown = (RESULTS / "table1.md").read_text()
    assert "225 ± 2.0" in markdown and "not publicly distributable" in markdown


def test_check_of_a_missing_file_or_row(tmp_path):
    with pytest.raises(GanbenchError, match="does not exist"):
        table1.check("no/such/table1.json")
    for content in (b"\x93NUMPY binary", b"[1, 2]", b"{\"table\": 3"):
        (tmp_path / "table1.json").write_bytes(content)
        with pytest.raises(GanbenchError, match="is not a ganbench table1.json"):
            table1.check(tmp_path / "table1.json")
    with pytest.raises(GanbenchError, match="no measured row"):
        table1.check(RESULTS / "table1.json", ("vae",))


@pytest.mark.parametrize("alter, rows, message", [
    (lambda table: table["table"][4]["mnist"].update(mean="x"), ("ganbench",), "has mean = 'x', not a finite number"),
    (lambda table: table["provenance"].update(generator_sha256="0" * 64), ("ganbench",),
     "generator.pt changed since"),
    (lambda table: table["provenance"]["baselines_sha256"].update(gsn="0" * 64), ("gsn_authors",),
     "gsn.pt changed since"),
    (lambda table: table["config"].update(generator="elsewhere/generator.pt"), ("ganbench",),
     "generator.pt, which .* was computed with, does not exist"),
])
def test_a_table_whose_numbers_or_weights_are_not_what_it_says_cannot_be_checked(alter, rows, message, tmp_path):
    """A string for a number was a TypeError traceback; other weights than the table's were re-scored and
    reported as a number that moved (exit 1), and a stored hash was never read. Both are errors, before
    any scoring: the table cannot be checked."""
    import shutil

    shutil.copy(RESULTS / "generator.pt", tmp_path / "generator.pt")
    shutil.copytree(RESULTS / "baselines", tmp_path / "baselines")
    stored = json.loads((RESULTS / "table1.json").read_text())
    assert stored["table"][4]["key"] == "ganbench"
    alter(stored)
    (tmp_path / "table1.json").write_text(json.dumps(stored))
    with pytest.raises(GanbenchError, match=message):
        table1.check(tmp_path / "table1.json", rows)


def synthetic_tfd(path, rng, per_set=6):
    count = 3 * per_set
    images = rng.integers(0, 256, size=(count, 48, 48), dtype=np.uint8)
    folds = np.stack([rng.permutation(np.repeat([1, 2, 3], per_set)) for _ in range(5)], axis=1)
    scipy.io.savemat(path, {"images": images, "folds": folds})
    return images, folds


def test_tfd_loader_reads_the_five_folds(tmp_path, rng):
    images, folds = synthetic_tfd(tmp_path / "TFD_48x48.mat", rng)
    loaded = tfd.load_tfd(tmp_path / "TFD_48x48.mat")
    assert len(loaded) == 5
    for fold_index, fold in enumerate(loaded):
        assert fold.train.shape == (6, 2304) and fold.valid.shape == (6, 2304) and fold.test.shape == (6, 2304)
        expected = images[folds[:, fold_index] == 3].reshape(6, -1).astype(np.float32) / 255
        np.testing.assert_array_equal(fold.test, expected)


def test_tfd_column_is_measured_per_fold_with_error_across_folds(tmp_path, rng):
    synthetic_tfd(tmp_path / "TFD_48x48.mat", rng)
    result = table1.measure_tfd_training_images(str(tmp_path / "TFD_48x48.mat"), table1.Table1Config(backend="torch"))
    means = np.asarray(result["fold_means"])
    assert len(means) == 5 and len(result["fold_sigmas"]) == 5
    assert result["standard_error"] == pytest.approx(means.std() / np.sqrt(5))


def test_bad_tfd_files(tmp_path):
    (tmp_path / "bad.mat").write_bytes(b"not a mat file")
    with pytest.raises(GanbenchError, match="readable"):
        tfd.load_tfd(tmp_path / "bad.mat")
    scipy.io.savemat(tmp_path / "wrong.mat", {"images": np.zeros((4, 48, 48)), "folds": np.zeros((4, 3))})
    with pytest.raises(GanbenchError, match="layout"):
        tfd.load_tfd(tmp_path / "wrong.mat")
    with pytest.raises(GanbenchError, match="does not exist"):
        tfd.load_tfd(tmp_path / "missing.mat")
    scipy.io.savemat(tmp_path / "empty.mat", {"images": np.zeros((0, 48, 48), np.uint8), "folds": np.zeros((0, 5))})
    with pytest.raises(GanbenchError, match="holds no images"):  # was numpy's reshape ValueError
        tfd.load_tfd(tmp_path / "empty.mat")


@pytest.mark.parametrize("scale, message", [(1 / 255, "whole pixel values 0..255"), (-1, "in \\[-255, "),
                                            (1000, "in \\[0, 255000\\]"), (np.nan, "NaN or inf")])
def test_tfd_pixels_on_another_scale_are_refused(scale, message, tmp_path, rng):
    """Pixels already in [0, 1], negative or past 255 were divided by 255 all the same: a TFD number, silently wrong."""
    images, folds = synthetic_tfd(tmp_path / "TFD_48x48.mat", rng)
    scaled = images.astype(np.float64) * scale
    scaled[0, 0, 0] = 255 * scale
    scipy.io.savemat(tmp_path / "scaled.mat", {"images": scaled, "folds": folds})
    with pytest.raises(GanbenchError, match=message):
        tfd.load_tfd(tmp_path / "scaled.mat")


def _fold_set_to(folds, fold, code, count):
    """``folds`` with only the first ``count`` images of fold ``fold``'s set ``code`` left in it (the rest unlabelled)."""
    edited = folds.copy()
    members = np.flatnonzero(folds[:, fold] == code)
    edited[members[count:], fold] = 0
    return edited


@pytest.mark.parametrize("edit, message", [
    (lambda images, folds: (images[:, :32, :32], folds), "do not match TFD's layout"),
    (lambda images, folds: (images, np.where(folds == 3, 7, folds)), "folds holds 7 .*TFD's codes are 0"),
    (lambda images, folds: (images, np.where(folds == 1, np.nan, folds)), "folds holds nan"),
    (lambda images, folds: (images, _fold_set_to(folds, 2, 3, 1)), "fold 3 has 6 train, 6 valid and 1 test images"),
    (lambda images, folds: (images, None), "every valid image of fold 1 is also one of its train images"),
])
def test_tfd_files_that_no_fold_can_score_are_refused_when_read(edit, message, tmp_path, rng):
    """Found when the file is read, before Table 1's rows run: 32 x 32 images were scored as TFD, codes outside
    0..3 (NaN included) were dropped silently, and a fold of one test image failed after the other rows, naming
    no file."""
    images, folds = synthetic_tfd(tmp_path / "TFD_48x48.mat", rng)
    edited_images, edited_folds = edit(images, folds)
    if edited_folds is None:  # every valid image of fold 1 a copy of one of its train images
        train_rows = np.flatnonzero(folds[:, 0] == 1)
        edited_images = images.copy()
        edited_images[folds[:, 0] == 2] = images[train_rows[:6]]
        edited_folds = folds
    scipy.io.savemat(tmp_path / "edited.mat", {"images": edited_images, "folds": edited_folds})
    with pytest.raises(GanbenchError, match=message):
        tfd.load_tfd(tmp_path / "edited.mat")


def test_a_tfd_fold_the_protocol_cannot_score_is_named(tmp_path, rng, monkeypatch):
    """An error inside a fold's evaluation read as one about the Python API's arguments; it names the file and
    the fold."""
    synthetic_tfd(tmp_path / "TFD_48x48.mat", rng)

    def fails(*args, **kwargs):
        raise GanbenchError("the mean's standard error needs at least 2 test points")

    monkeypatch.setattr(table1.protocol, "evaluate", fails)
    with pytest.raises(GanbenchError, match=r"TFD file .*TFD_48x48.mat, fold 1: the mean's standard error"):
        table1.measure_tfd_training_images(str(tmp_path / "TFD_48x48.mat"), table1.Table1Config(backend="torch"))


@pytest.mark.slow
def test_check_cli_prints_a_readable_diff_and_exits_1_when_moved(mnist, tmp_path):
    import subprocess
    import sys

    stored = json.loads((RESULTS / "table1.json").read_text())
    for row in stored["table"]:
        if row.get("key") == "training_images":
            row["mnist"]["sigma"] *= 1.01
    (tmp_path / "table1.json").write_text(json.dumps(stored))
    completed = subprocess.run([sys.executable, "-m", "ganbench", "check", str(tmp_path / "table1.json"),
                                "--rows", "training_images", "--backend", "torch"], capture_output=True, text=True)
    assert completed.returncode == 1
    assert "MOVED" in completed.stdout and "sigma" in completed.stdout and "tolerance" in completed.stdout
    assert "check failed" in completed.stderr and "Traceback" not in completed.stderr


def test_committed_baseline_row_recomputes_within_tolerance(mnist):
    # The DBN row: its sampler is the cheapest of the three baselines (a cold cache costs ~10 s).
    ok, frame = table1.check(RESULTS / "table1.json", ("dbn",), backend="torch")
    assert ok, frame.to_string()


def test_authors_gsn_row_fixes_sigma_and_chains_from_test_image_0(mnist, monkeypatch):
    from ganbench import baselines

    asked = {}

    def fake_bank(name, kind, seed, path=None, start_image=None, train_images=None):
        asked.update(name=name, kind=kind, start_image=start_image)
        return np.vstack([mnist.train_x[49] if start_image is None else start_image, mnist.train_x[:49]])

    monkeypatch.setattr(baselines, "cached_bank", fake_bank)
    row = table1.measure_row("gsn_authors", table1.Table1Config(backend="torch"), mnist)
    assert asked["name"] == "gsn" and asked["kind"] == "authors_chain"
    np.testing.assert_array_equal(asked["start_image"], mnist.test_x[0])
    assert row["sigma"] == 0.2 and row["valid_means"] == {} and row["protocol"].startswith("authors")
    cross_validated = table1.measure_row("gsn", table1.Table1Config(backend="torch"), mnist)
    assert asked["kind"] == "samples" and len(cross_validated["valid_means"]) == 10


def test_a_table_written_with_six_digit_widths_is_read_by_its_widths():
    """Tables written before validation means were keyed in full compare width by width, a moved mean still seen."""
    new = {repr(float(sigma)): float(index) for index, sigma in enumerate(np.logspace(-1, 0, 10))}
    old = {f"{float(key):.6g}": value for key, value in new.items()}
    assert table1._keyed_in_full(old, new) == new
    rows = table1._metadata_rows("gan", {"valid_means": old}, {"n_test": None, "n_bank": None, "seed": None,
                                                             "protocol": None, "valid_means": new}, 0.5)
    assert rows[-1]["field"] == "valid_means" and rows[-1]["ok"]
    old[f"{np.logspace(-1, 0, 10)[3]:.6g}"] += 1.0
    rows = table1._metadata_rows("gan", {"valid_means": old}, {"valid_means": new, "n_test": None, "n_bank": None,
                                                             "seed": None, "protocol": None}, 0.5)
    assert not rows[-1]["ok"] and rows[-1]["difference"] == 1.0
    assert table1._keyed_in_full({"0.3": 1.0}, new) == {"0.3": 1.0}  # another grid stays as stored: a mismatch


def test_a_measured_tfd_cell_is_explained_in_the_markdown():
    """table1.md said "on MNIST" and "std / sqrt(N) over the 10,000 test images" beside a TFD number whose error
    is across five folds and whose sigmas (one per fold) it did not show."""
    result = json.loads((table1.ROOT / "results" / "table1.json").read_text())
    plain = table1.to_markdown(result)
    assert "on MNIST (nats" in plain and "On TFD" not in plain
    row = next(row for row in result["table"] if row.get("key") == "training_images")
    row["tfd"] = {"mean": 2000.0, "standard_error": 20.0, "fold_means": [2000.0] * 5,
                  "fold_sigmas": [0.1, 0.2, 0.3, 0.4, 0.5]}
    text = table1.to_markdown(result)
    assert "on MNIST and TFD (nats" in text and "measured MNIST errors are std / sqrt(N)" in text
    assert (f"On TFD ({row['model']}) sigma is chosen per fold (0.1000, 0.2000, 0.3000, 0.4000, 0.5000; the sigma "
            "column is MNIST's) and the error is std / sqrt(5) of the five folds' means.") in text


def test_a_table_with_a_key_twice_or_without_its_table_is_named(tmp_path, capsys):
    """A second "table" key hid the first from check (json keeps the last); an object without one said
    "KeyError: 'table'"."""
    whole = (table1.ROOT / "results" / "table1.json").read_text()
    (tmp_path / "twice.json").write_text(whole.replace('"table": [', '"table": [], "table": [', 1))
    with pytest.raises(GanbenchError, match="holds the key 'table' twice in one object"):
        table1.check(tmp_path / "twice.json")
    (tmp_path / "other.json").write_text('{"config": {}}')
    with pytest.raises(GanbenchError, match=r"is not a ganbench table1.json \(it has no 'table'\)"):
        table1.check(tmp_path / "other.json")
