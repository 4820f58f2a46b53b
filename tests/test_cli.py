"""The command line: JSON on stdout, one-line errors on stderr, non-zero exits."""
import json
import subprocess
import sys

import numpy as np
import pytest
from tolerances import float32_log_likelihood_bound


def ganbench(*arguments, cwd=None):
    return subprocess.run([sys.executable, "-m", "ganbench", *arguments], capture_output=True, text=True, cwd=cwd)


def test_parzen_json_on_stdout(mnist, tmp_path):
    np.save(tmp_path / "bank.npy", mnist.train_x[:300].reshape(-1, 28, 28))
    completed = ganbench("parzen", str(tmp_path / "bank.npy"), "--json", "--backend", "torch")
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["n_bank"] == 300 and result["n_test"] == 10_000
    assert result["sigma"] in [float(f"{s:.6g}") for s in np.logspace(-1, 0, 10)] or 0.1 <= result["sigma"] <= 1


def test_parzen_on_your_own_data(tmp_path):
    from ganbench.scoring import parzen

    rng = np.random.default_rng(0)
    files = {name: tmp_path / f"{name}.npy" for name in ("samples", "valid", "test")}
    for (_name, path), count in zip(files.items(), (700, 300, 101)):
        np.save(path, rng.normal(size=(count, 3)).astype(np.float32) * 4)  # not on MNIST's [0, 1] scale
    completed = ganbench("parzen", str(files["samples"]), "--valid", str(files["valid"]), "--test", str(files["test"]),
                         "--json", "--backend", "torch")
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["test"] == str(files["test"]) and result["n_test"] == 101 and result["n_bank"] == 700
    expected = parzen.log_likelihood(np.load(files["test"]), np.load(files["samples"]), [result["sigma"]],
                                     backend="reference")[0]  # float64
    test, samples = np.load(files["test"]), np.load(files["samples"])
    bound = float32_log_likelihood_bound(test, samples, [result["sigma"]])  # the torch backend's float32 error
    assert abs(result["mean"] - expected.mean()) <= bound.item()
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


def test_sample_then_nn_json(tmp_path, mnist):
    completed = ganbench("sample", "--count", "50", "--seed", "1", "--out", str(tmp_path / "s.npy"))
    assert completed.returncode == 0, completed.stderr
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (50, 784) and samples.dtype == np.float32
    completed = ganbench("nn", "--samples", str(tmp_path / "s.npy"), "--json", "--backend", "torch")
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["n_samples"] == 50 and 0 <= report["copy_rate"] <= 1


def test_missing_checkpoint_and_help():
    completed = ganbench("sample", "--checkpoint", "nowhere.pt", "--out", "x.npy")
    assert completed.returncode == 2 and "no ganbench generator at nowhere.pt" in completed.stderr
    completed = ganbench("train", "--config", "nowhere.json", "--out", "run")
    assert completed.returncode == 2 and "no training config at nowhere.json" in completed.stderr
    completed = ganbench("export", "nowhere", "--best")
    assert completed.returncode == 2 and "no best_generator.pt in nowhere" in completed.stderr
    for command in ("parzen", "train", "export", "sample", "reproduce", "check", "nn", "figures"):
        assert ganbench(command, "--help").returncode == 0


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
