"""The command line: JSON on stdout, one-line errors on stderr, non-zero exits."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tolerances import assert_parzen_scores_agree, distance_bound, log_likelihood_bound

from ganbench import SHIPPED_GENERATOR
from ganbench.gan import sampling
from ganbench.scoring import parzen


def ganbench(*arguments, cwd=None):
    return subprocess.run([sys.executable, "-m", "ganbench", *arguments], capture_output=True, text=True, cwd=cwd)


def assert_paper_protocol_result(result: dict, bank, valid, test) -> None:
    """A torch-backend `ganbench parzen --json` result against the paper protocol recomputed in
    float64: sigma is the grid width with the best mean over the first 1,000 validation images,
    and every number is within the float32 bound of the exact one (one bank block: the bank)."""
    grid = np.logspace(-1, 0, 10)  # numpy.logspace(-1, 0, 10), as docs/paper.md gives it
    valid = valid[:1000]
    valid_values = parzen.log_likelihood(valid, bank, grid, backend="reference")
    best = float(grid[np.argmax(valid_values.mean(axis=1))])
    test_values = parzen.log_likelihood(test, bank, [best], backend="reference")[0]
    exact = {"valid_means": valid_values.mean(axis=1), "sigma": best, "mean": test_values.mean(),
             "standard_error": test_values.std() / np.sqrt(test_values.size)}
    valid_bounds = log_likelihood_bound(valid, bank, grid, block_rows=len(bank))
    test_bounds = log_likelihood_bound(test, bank, [best], block_rows=len(bank))[0]
    valid_sizes = np.abs(valid_values).mean(axis=1) + valid_bounds.max(axis=1)
    reported = dict(result, valid_means=list(result["valid_means"].values()))
    assert_parzen_scores_agree(exact, reported, valid_bounds, test_bounds, valid_sizes,
                               np.abs(test_values).mean() + test_bounds.max())


def test_parzen_json_on_stdout(mnist, tmp_path):
    bank = mnist.train_x[:300]
    np.save(tmp_path / "bank.npy", bank.reshape(-1, 28, 28))
    completed = ganbench("parzen", str(tmp_path / "bank.npy"), "--json", "--backend", "torch")
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["n_bank"] == 300 and result["n_test"] == 10_000 and result["protocol"] == "paper"
    # Keys read back as the widths exactly, and the chosen one's key is str(sigma).
    assert [float(key) for key in result["valid_means"]] == list(np.logspace(-1, 0, 10))
    assert str(result["sigma"]) in result["valid_means"]
    assert_paper_protocol_result(result, bank, mnist.valid_x, mnist.test_x)


def test_parzen_on_your_own_data(tmp_path):
    rng = np.random.default_rng(0)
    files = {name: tmp_path / f"{name}.npy" for name in ("samples", "valid", "test")}
    for (_name, path), count in zip(files.items(), (700, 300, 101)):
        np.save(path, rng.normal(size=(count, 3)).astype(np.float32) * 4)  # not on MNIST's [0, 1] scale
    completed = ganbench("parzen", str(files["samples"]), "--valid", str(files["valid"]), "--test", str(files["test"]),
                         "--json", "--backend", "torch", "--protocol", "paper")  # own data default to full
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["test"] == str(files["test"]) and result["n_test"] == 101 and result["n_bank"] == 700
    assert_paper_protocol_result(result, *(np.load(files[name]) for name in ("samples", "valid", "test")))
    completed = ganbench("parzen", str(files["samples"]), "--valid", str(files["valid"]))
    assert completed.returncode == 2 and "give --valid and --test together" in completed.stderr


def test_memorisation_check_on_your_own_data(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.normal(size=(500, 5)).astype(np.float32)
    copies = train[:20] + 1e-4  # 20 samples that copy training points
    np.save(tmp_path / "samples.npy", np.concatenate([copies, rng.normal(size=(80, 5)).astype(np.float32)]))
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "test.npy", rng.normal(size=(200, 5)).astype(np.float32))
    completed = ganbench("nn", "--samples", str(tmp_path / "samples.npy"), "--train", str(tmp_path / "train.npy"),
                         "--test", str(tmp_path / "test.npy"), "--json", "--backend", "torch")
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["n_samples"] == 100 and report["copy_rate"] >= 0.2
    assert all(entry["sample"] < 20 and entry["train_index"] == entry["sample"] for entry in report["most_suspicious"])


@pytest.mark.parametrize("content, arguments, message", [
    (None, [], "does not exist"),
    (np.full((5, 784), np.nan, dtype=np.float32), [], "NaN or inf"),
    (np.ones((5, 10), dtype=np.float32), [], "dimension"),
    (np.ones((5, 784), dtype=np.float32), ["--sigma", "-1"], "> 0"),
    (np.ones((0, 784), dtype=np.float32), [], "empty"),
    (b"garbage", [], "not a readable .npy"),
    (np.full((5, 784), 255.0, dtype=np.float32), [], "x / 255 for 0-255 floats"),
])
def test_bad_input_gives_one_line_and_exit_2(content, arguments, message, tmp_path, mnist):
    path = tmp_path / "samples.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    completed = ganbench("parzen", str(path), "--backend", "torch", *arguments)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and completed.stdout == ""


@pytest.mark.slow
def test_sample_then_nn_json(tmp_path, mnist):
    completed = ganbench("sample", "--count", "50", "--seed", "1", "--out", str(tmp_path / "s.npy"))
    assert completed.returncode == 0, completed.stderr
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (50, 784) and samples.dtype == np.float32
    # The shipped generator's samples for seed 1. Exact, not a bound: the command runs the same
    # code on one batch of 50 with this process's environment, so the same thread count (the same
    # BLAS blocking) does the same float32 operations on the same weights and noise.
    generator, _ = sampling.load_generator(SHIPPED_GENERATOR)
    np.testing.assert_array_equal(samples, sampling.generate(generator, 50, seed=1))
    completed = ganbench("nn", "--samples", str(tmp_path / "s.npy"), "--json", "--backend", "torch")
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["n_samples"] == 50 and report["n_test"] == 10_000
    threshold = report["copy_threshold"]
    assert threshold == report["test_to_train"]["q01"]  # closer than 99% of unseen test images
    # Each sample's nearest training image by the float64 reference (within e64 of exact). The report
    # gives the distance of the row its float32 pass picked, at most 2 e32 above the exact nearest,
    # computed in float64 by direct differences (within 2 e64 of exact).
    nearest = parzen.parzen_pass(samples, mnist.train_x, [], backend="reference").min_sq_distance
    e32, e64 = (distance_bound(samples, mnist.train_x, dtype=dtype) for dtype in (np.float32, np.float64))
    low, high = nearest - 3 * e64, nearest + 2 * e32 + 3 * e64
    for name, quantile in report["sample_to_train"].items():
        q = int(name[1:]) / 100
        assert np.quantile(low, q) <= quantile <= np.quantile(high, q)
    copies_for_sure, copies_at_most = np.sum(high < threshold), np.sum(low < threshold)
    assert copies_for_sure / 50 <= report["copy_rate"] <= copies_at_most / 50
    assert copies_for_sure == copies_at_most  # no sample is a float32 near-tie with the threshold here


@pytest.mark.slow
def test_missing_checkpoint_and_help():
    completed = ganbench("sample", "--checkpoint", "nowhere.pt", "--out", "x.npy")
    assert completed.returncode == 2 and "no ganbench generator at nowhere.pt" in completed.stderr
    completed = ganbench("train", "--config", "nowhere.json", "--out", "run")
    assert completed.returncode == 2 and "no training config at nowhere.json" in completed.stderr
    completed = ganbench("export", "nowhere", "--best")
    assert completed.returncode == 2 and "no best_generator.pt in nowhere" in completed.stderr
    assert ganbench("parzen", "--help").returncode == 0
    from ganbench.cli import build_parser

    for command in ("train", "export", "sample", "reproduce", "check", "nn", "figures"):  # in this process: faster
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([command, "--help"])
        assert exited.value.code == 0


def _option(parser, *path_and_flag):
    """The argparse action of ``flag`` in the subcommand ``path``."""
    *path, flag = path_and_flag
    for name in path:
        parser = next(action for action in parser._actions if hasattr(action, "choices") and isinstance(
            action.choices, dict)).choices[name]
    return next(action for action in parser._actions if flag in action.option_strings)


def test_protocol_choices_and_help_come_from_the_registry():
    from ganbench.cli import build_parser
    from ganbench.scoring.protocol import PROTOCOLS

    parser = build_parser()
    for command in ("parzen", "reproduce"):
        option = _option(parser, command, "--protocol")
        assert tuple(option.choices) == tuple(PROTOCOLS)
        assert all(f"{name}: {rule.description}" in option.help for name, rule in PROTOCOLS.items())
    assert "32 widths" not in _option(parser, "parzen", "--protocol").help


def test_a_fixed_sigma_scores_the_held_out_data_without_validation_data(tmp_path):
    """With --sigma nothing is chosen on validation data: --test alone is scored, to the same numbers as
    with --valid, and the JSON names no protocol that did not run. Without --sigma, or with --save
    (which records the data a sigma could be chosen on), --test alone is a one-line error."""
    rng = np.random.default_rng(5)
    for name, count in (("samples", 200), ("valid", 60), ("test", 40)):
        np.save(tmp_path / f"{name}.npy", rng.random((count, 6)).astype(np.float32))
    samples, valid, test = (str(tmp_path / f"{name}.npy") for name in ("samples", "valid", "test"))
    common = ("parzen", samples, "--test", test, "--sigma", "0.3", "--json", "--backend", "torch")
    alone, with_valid = ganbench(*common), ganbench(*common, "--valid", valid)
    assert alone.returncode == 0 and with_valid.returncode == 0, alone.stderr + with_valid.stderr
    alone, with_valid = json.loads(alone.stdout), json.loads(with_valid.stdout)
    assert alone["valid"] is None and with_valid["valid"] == valid and alone["protocol"] == "fixed sigma"
    for key in ("mean", "standard_error", "sigma", "n_test", "n_bank"):
        assert alone[key] == with_valid[key]
    expected = parzen.log_likelihood(np.load(test), np.load(samples), [0.3], backend="reference")[0]
    bound = log_likelihood_bound(np.load(test), np.load(samples), [0.3], block_rows=200).max()
    assert abs(alone["mean"] - expected.mean()) <= bound
    for extra, message in (((), "--test alone needs a fixed --sigma"),
                           (("--sigma", "0.3", "--save", str(tmp_path / "r.json")), "give --valid too")):
        refused = ganbench("parzen", samples, "--test", test, *extra)
        assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_own_data_default_to_the_full_protocol_and_record_the_grid(tmp_path):
    rng = np.random.default_rng(2)
    for name, count in (("samples", 300), ("valid", 100), ("test", 50)):
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(count, 3)).astype(np.float32) * 40)
    files = [str(tmp_path / "samples.npy"), "--valid", str(tmp_path / "valid.npy"), "--test", str(tmp_path / "test.npy"),
             "--json", "--backend", "torch"]
    completed = ganbench("parzen", *files)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["protocol"] == "full" and result["sigma_grid"] is None and not result["sigma_at_grid_edge"]
    assert 1 < result["sigma"] < 100  # the paper's grid would stop at 1.0 on data spread 40 wide
    completed = ganbench("parzen", *files, "--protocol", "paper", "--sigma-grid", "1,2,4,8,16,32")
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["sigma_grid"] == "1,2,4,8,16,32" and sorted(map(float, result["valid_means"])) == [1, 2, 4, 8, 16, 32]


@pytest.mark.parametrize("setting", [None, "0"])
def test_importing_ganbench_asks_for_huge_pages_unless_the_user_chose(setting):
    # torch reads THP_MEM_ALLOC_ENABLE once, at its first allocation: ganbench sets it in its
    # package's first lines, before it imports torch, and keeps a value the user chose.
    code = ("import sys, os; import ganbench; from ganbench import parzen; "
            "print(os.environ['THP_MEM_ALLOC_ENABLE'], 'torch' in sys.modules)")
    assert python_child(code, "THP_MEM_ALLOC_ENABLE", setting).split() == [setting or "1", "True"]


def python_child(code: str, variable: str, setting: str | None) -> str:
    """What ``python -c code`` prints with ``variable`` unset (``setting`` None) or set to ``setting``."""
    environment = {key: value for key, value in os.environ.items() if key != variable}
    if setting is not None:
        environment[variable] = setting
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def glibc_reports_mapped_bytes() -> bool:
    """glibc (whose mallopt the command sets) with mallinfo2 (2.33 and later), which the test reads."""
    import ctypes
    import platform

    return platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(None), "mallinfo2")


@pytest.mark.skipif(not glibc_reports_mapped_bytes(), reason="the setting is glibc's; the test reads mallinfo2")
@pytest.mark.parametrize("setting", [None, "0"])
def test_the_command_keeps_freed_memory_for_reuse_unless_switched_off(setting):
    # In a child: the setting is for the short-lived command's process, never the caller's. On, a
    # 64 MB block comes from glibc's heap (its mmapped bytes, mallinfo2's hblkhd, do not grow), where
    # it is kept for reuse once freed; off, glibc maps such a block apart and unmaps it on free.
    code = ("import ctypes, numpy as np; from ganbench import memory; taken = memory.retain_freed_memory()\n"
            "class Info(ctypes.Structure):\n"
            "    _fields_ = [(name, ctypes.c_size_t) for name in ('arena ordblks smblks hblks hblkhd usmblks '\n"
            "                                                     'fsmblks uordblks fordblks keepcost').split()]\n"
            "libc = ctypes.CDLL(None); libc.mallinfo2.restype = Info\n"
            "mapped = libc.mallinfo2().hblkhd; block = np.ones(8 << 20)\n"
            "print(taken, libc.mallinfo2().hblkhd - mapped < 64 << 20)")
    assert python_child(code, "GANBENCH_RETAIN_MEMORY", setting).split() == [str(setting is None)] * 2


def test_the_command_runs_through_the_entry_that_keeps_memory():
    import tomllib

    from ganbench import cli

    with open(Path(cli.__file__).parents[2] / "pyproject.toml", "rb") as project:
        assert tomllib.load(project)["project"]["scripts"]["ganbench"] == "ganbench.cli:run"
    assert "run()" in (Path(cli.__file__).parents[1] / "__main__.py").read_text()


def _own_data(tmp_path) -> list[str]:
    rng = np.random.default_rng(3)
    for name, count in (("bank", 60), ("valid", 20), ("test", 15)):
        np.save(tmp_path / f"{name}.npy", rng.random((count, 6), dtype=np.float32))
    return ["parzen", str(tmp_path / "bank.npy"), "--valid", str(tmp_path / "valid.npy"), "--test",
            str(tmp_path / "test.npy"), "--sigma", "0.3", "--json"]


BUFFERED = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # stdout as users have it


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path):
    """`ganbench ... | head` where head has gone: exit 141 as SIGPIPE would, no traceback."""
    child = subprocess.Popen([sys.executable, "-m", "ganbench", *_own_data(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=BUFFERED)
    child.stdout.close()  # before the command writes anything
    err = child.stderr.read()
    assert child.wait() == 141 and err == "", err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device whose writes fail with ENOSPC)")
def test_an_output_that_cannot_be_written_is_one_line_and_status_2(tmp_path):
    with open("/dev/full", "w") as full:
        completed = subprocess.run([sys.executable, "-m", "ganbench", *_own_data(tmp_path)], stdout=full,
                                   stderr=subprocess.PIPE, text=True, env=BUFFERED)
    assert completed.returncode == 2
    assert completed.stderr == "ganbench: error: cannot write the output: No space left on device; " \
                               "send it where there is room\n"


def test_a_command_started_with_stdout_or_stderr_closed(tmp_path):
    """`>&-` was an AttributeError traceback (sys.stdout is None); with `2>&-` the notes meant for stderr were
    printed into stdout, before the JSON."""
    arguments = [sys.executable, "-m", "ganbench", *_own_data(tmp_path)]
    closed_stdout = subprocess.run(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=BUFFERED,
                                   preexec_fn=lambda: os.close(1))
    assert closed_stdout.returncode == 2
    assert closed_stdout.stderr == ("ganbench: error: cannot write the output: standard output is closed; start the "
                                    "command with standard output open (or sent to a file)\n")
    rng = np.random.default_rng(3)
    for name, count in (("tiny_bank", 60), ("tiny_valid", 20), ("tiny_test", 20)):  # 1e-3 apart: 0.1 is the edge
        np.save(tmp_path / f"{name}.npy", rng.random((count, 6)) * 1e-3)
    edge = [sys.executable, "-m", "ganbench", "parzen", str(tmp_path / "tiny_bank.npy"), "--valid",
            str(tmp_path / "tiny_valid.npy"), "--test", str(tmp_path / "tiny_test.npy"), "--protocol", "paper", "--json"]
    noted = subprocess.run(edge, capture_output=True, text=True, env=BUFFERED)
    assert noted.returncode == 0 and "smallest width of the grid" in noted.stderr  # a note is written ...
    closed_stderr = subprocess.run(edge, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=BUFFERED,
                                   preexec_fn=lambda: os.close(2))
    assert closed_stderr.returncode == 0
    assert json.loads(closed_stderr.stdout)["sigma"] == 0.1  # ... and stdout holds nothing but the JSON
