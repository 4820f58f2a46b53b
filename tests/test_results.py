"""Saved results for CI: `ganbench parzen --save`, `ganbench check`, and the pytest helpers.

Small synthetic data (d = 16, sizes that are no multiple of any block) keeps these fast; the
float32 bounds are checked against the float64 reference first, since every tolerance rests on them.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ganbench import testing
from ganbench.cli import main
from ganbench.errors import GanbenchError
from ganbench.scoring import banks, bounds, parzen, results, streaming

REPOSITORY = Path(__file__).resolve().parent.parent
SIZES = {"samples": 700, "valid": 300, "test": 101}
SCORE = ["--backend", "torch", "--chunk-rows", "256"]  # 700 samples: chunks of 256, 256 and 188 rows


@pytest.fixture
def data(tmp_path):
    """Own data on its own scale (not MNIST's [0, 1]), one .npy file per role, in a folder of its own."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "project"
    folder.mkdir()
    for role, count in SIZES.items():
        np.save(folder / f"{role}.npy", rng.normal(size=(count, 16)).astype(np.float32))
    return folder


def save(folder, *extra):
    arguments = ["parzen", str(folder / "samples.npy"), "--valid", str(folder / "valid.npy"),
                 "--test", str(folder / "test.npy"), *SCORE, "--save", str(folder / "result.json"), *extra]
    assert main(arguments) == 0
    return folder / "result.json"


def check(capsys, path, *extra):
    capsys.readouterr()
    code = main(["check", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out, err


# ---- the bounds the tolerances rest on --------------------------------------------------------------

@pytest.mark.parametrize("backend, precision, arithmetic", [("torch", "tf32x3", "float32"),
                                                             ("triton", "tf32x3", "tf32x3"),
                                                             ("triton", "ieee", "float32")])
def test_every_path_lies_within_its_bound_of_the_float64_reference(backend, precision, arithmetic):
    rng = np.random.default_rng(3)  # 200 columns: not a whole number of the kernel's K steps
    queries, samples = rng.random((19, 200)).astype(np.float32), rng.random((141, 200)).astype(np.float32)
    bank, sigmas = banks.open_bank(samples), np.logspace(-1, 0, 5)
    options = {"chunk_rows": 60, "progress": False}  # three chunks, each centred on its own mean
    exact = streaming.log_likelihood(queries, bank, sigmas, backend="reference", **options)
    fast = streaming.log_likelihood(queries, bank, sigmas, backend=backend, precision=precision, device="cpu",
                                    **options)
    (norms,), rows = bounds.centred_norms([queries], bank, 60)
    assert rows == 60
    for k, sigma in enumerate(sigmas):
        bound = bounds.per_image_bound(norms, sigma, arithmetic, 200, rows)
        assert np.all(np.abs(fast[k] - exact[k]) <= bound), (sigma, np.abs(fast[k] - exact[k]).max(), bound.min())


def test_the_kernel_steps_are_as_wide_as_the_tf32x3_bound_assumes():
    from ganbench.kernels import parzen_lse

    narrowest, widest = bounds.KERNEL_STEP_COLUMNS
    widths = [candidate[2] for candidate in parzen_lse.TUNING_CANDIDATES]
    widths += [parzen_lse.INTERPRETER_BLOCKS["BLOCK_K"], parzen_lse.MAX_BLOCKS["BLOCK_K"]]
    assert all(narrowest <= width <= widest for width in widths)


def test_a_path_without_a_derived_bound_is_refused():
    with pytest.raises(GanbenchError, match="no derived error bound"):
        bounds.arithmetic_of("triton", "tf32")
    # A saved result whose backend was edited said it had no bound "with precision tf32x3".
    with pytest.raises(GanbenchError, match="unknown backend 'foo'"):
        bounds.arithmetic_of("foo", "tf32x3")


def test_auto_precision_scores_and_saves_as_tf32x3():
    """auto (the default) may pick int8, whose bound results do not carry: a result scores auto as tf32x3."""
    assert results.Scoring().precision == results.Scoring(precision="tf32x3").precision == "tf32x3"
    assert results.Scoring(precision="ieee").precision == "ieee"
    assert bounds.arithmetic_of("triton", results.Scoring(precision="auto").precision) == "tf32x3"


# ---- save and check ---------------------------------------------------------------------------------

def test_an_unchanged_result_checks_clean(data, capsys):
    path = save(data)
    stored = json.loads(path.read_text())
    assert stored["kind"] == results.KIND and stored["inputs"]["samples"]["path"] == "samples.npy"
    assert stored["scorer"]["arithmetic"] == "float32" and stored["selection"]["valid_rows"] == 300
    assert stored["scorer"]["precision"] == "tf32x3"  # the default, auto, saves as tf32x3
    assert [len(stored["inputs"][role]["sha256"]) for role in results.ROLES] == [64, 64, 64]
    # Own data default to the full protocol: the grid is every width it tried (its start, any
    # widening, then 16 refined widths), all recorded so that check re-scores the same grid.
    assert len(stored["selection"]["grid"]) >= 13 + 16 and stored["result"]["n_test"] == 101
    code, out, err = check(capsys, path)
    assert code == 0, err
    header = out.splitlines()[0].split()
    assert header == ["field", "stored", "new", "difference", "tolerance", "ok"]
    first_width = min(sigma for sigma, _ in stored["selection"]["grid"])
    assert "mean" in out and "sigma" in out and f"valid_mean[sigma={first_width:.6g}]" in out and "MOVED" not in out


def test_a_result_moved_with_its_folder_still_checks(data, tmp_path, capsys):
    save(data)
    moved = shutil.copytree(data, tmp_path / "elsewhere" / "checkout")  # paths are relative to the result
    shutil.rmtree(data)
    assert check(capsys, moved / "result.json")[0] == 0


def test_a_torch_result_checks_clean_with_the_reference_backend(data, capsys):
    path = save(data)
    code, out, err = check(capsys, path, "--backend", "reference")
    assert code == 0, out + err
    assert "MOVED" not in out


def test_sigma_one_percent_off_in_the_scorer_fails(data, capsys, monkeypatch):
    path = save(data)
    original = streaming.log_likelihood
    monkeypatch.setattr(streaming, "log_likelihood",
                        lambda x, bank, sigmas, **options: original(x, bank, np.asarray(sigmas) * 1.01, **options))
    code, out, err = check(capsys, path)
    assert code == 1
    assert "moved beyond its tolerance: mean," in err and "MOVED" in out


def test_one_sample_changed_in_the_bank_fails(data, capsys, monkeypatch):
    path = save(data)
    test_image = np.load(data / "test.npy")[0]
    original = banks.Bank.chunks

    def chunks_with_a_changed_sample(self, rows, *span):
        for first, chunk in original(self, rows, *span):
            if self.source.endswith("samples.npy") and first == 0:
                chunk = chunk.copy()
                chunk[0] = test_image  # a reader that returns one wrong row
            yield first, chunk

    monkeypatch.setattr(banks.Bank, "chunks", chunks_with_a_changed_sample)
    code, out, err = check(capsys, path)
    assert code == 1 and "mean" in err.split("tolerance: ")[1]


def test_a_stored_mean_edited_by_five_hundredths_fails(data, capsys):
    path = save(data)
    stored = json.loads(path.read_text())
    stored["result"]["mean"] += 0.05
    path.write_text(json.dumps(stored))
    code, out, err = check(capsys, path)
    assert code == 1
    assert err.strip().endswith("moved beyond its tolerance: mean")


def test_bounds_raised_by_hand_do_not_loosen_the_check(data, capsys):
    """check derives every bound again from the inputs: a mean moved by 0.05 nats fails even where the file's own
    bounds were raised to a million nats to let it pass."""
    path = save(data)
    stored = json.loads(path.read_text())
    for entry in stored["tolerance"]["bounds"].values():
        entry.update(mean=1e6, standard_error=1e6, valid_means=[1e6] * len(entry["valid_means"]))
    stored["result"]["mean"] += 0.05
    path.write_text(json.dumps(stored))
    code, out, err = check(capsys, path)
    assert code == 1, out + err
    assert err.strip().endswith("moved beyond its tolerance: mean")
    assert "1e+06" not in out and "1000000" not in out


def test_a_replaced_input_cannot_be_checked(data, capsys):
    path = save(data)
    before = json.loads(path.read_text())["inputs"]["test"]["sha256"]
    np.save(data / "test.npy", np.load(data / "test.npy")[::-1].copy())
    code, out, err = check(capsys, path)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and out == ""
    assert f"input test {data / 'test.npy'} changed" in lines[0] and before in lines[0]
    (data / "test.npy").unlink()
    code, out, err = check(capsys, path)
    assert code == 2 and "input test" in err and "is missing" in err


def test_a_changed_shard_is_named(data, capsys):
    shards = data / "bank"
    shards.mkdir()
    samples = np.load(data / "samples.npy")
    np.save(shards / "0.npy", samples[:400])
    np.save(shards / "1.npy", samples[400:])
    assert main(["parzen", str(shards), "--valid", str(data / "valid.npy"), "--test", str(data / "test.npy"),
                 *SCORE, "--save", str(data / "result.json")]) == 0
    assert [entry["name"] for entry in json.loads((data / "result.json").read_text())["inputs"]["samples"]["files"]] \
        == ["0.npy", "1.npy"]
    assert check(capsys, data / "result.json")[0] == 0
    np.save(shards / "1.npy", samples[400:] + 1)
    code, out, err = check(capsys, data / "result.json")
    assert code == 2 and f"input samples {shards / '1.npy'} changed" in err


def with_grid(stored: dict, grid: list) -> dict:
    """``stored`` with another sigma grid, its per-arithmetic bounds on the validation means sized to match."""
    stored["selection"]["grid"] = grid
    for arithmetic_bounds in stored["tolerance"]["bounds"].values():
        arithmetic_bounds["valid_means"] = [1e-6] * len(grid)
    return stored


@pytest.mark.parametrize("edit, message", [
    (lambda stored: "not json {", "is not JSON"),
    (lambda stored: [1, 2], "holds a JSON list"),
    (lambda stored: stored["result"].pop("mean") and stored, "key 'result.mean' is missing"),
    (lambda stored: stored["result"].update(mean="224.1") or stored, "result.mean is \"224.1\", expected a number"),
    (lambda stored: stored["selection"].update(fixed_sigma=1) or stored, "expected true or false"),
    (lambda stored: stored["tolerance"]["bounds"].pop("tf32x3") and stored, "'tolerance.bounds.tf32x3' is missing"),
    (lambda stored: stored.update(kind="ganbench.something") or stored, "kind 'ganbench.something'"),
    (lambda stored: stored["scorer"].update(arithmetic="bfloat16") or stored, "expected one of float64"),
    (lambda stored: stored["scorer"].update(chunk_rows=0) or stored, "expected a positive integer"),
    # Once tracebacks: an integer past float64 (np.isfinite's TypeError), an empty grid (IndexError).
    (lambda stored: stored["result"].update(mean=10**400) or stored, "expected a number"),
    (lambda stored: with_grid(stored, []), "selection.grid is [], expected [sigma, validation mean] pairs"),
    (lambda stored: with_grid(stored, [[0.1, 1.0], [0.2]]), "expected [sigma > 0, validation mean]"),
    # Once exit 1, "moved" (a negative tolerance), or accepted (counts that are not the inputs').
    (lambda stored: stored["tolerance"]["bounds"]["float32"].update(mean=-1) or stored,
     "tolerance.bounds.float32.mean holds [-1], expected numbers >= 0"),
    (lambda stored: stored["result"].update(standard_error=-0.5) or stored, "result.standard_error is -0.5"),
    (lambda stored: stored["result"].update(sigma=0) or stored, "result.sigma is 0, expected a width > 0"),
    (lambda stored: with_grid(stored, [[-0.1, 1.0]] + stored["selection"]["grid"][1:]),
     "selection.grid[0] is [-0.1, 1.0], expected [sigma > 0"),
    (lambda stored: stored["result"].update(n_test=stored["result"]["n_test"] + 1) or stored,
     "but its inputs hold"),
    (lambda stored: stored["result"].update(dimension=7) or stored, "result.dimension is 7, but its inputs hold"),
    (lambda stored: stored["selection"].update(valid_rows=100_000) or stored,
     "selection.valid_rows is 100000, but the full protocol chooses sigma on 300 rows"),
    # Once a traceback (an OverflowError deriving the bounds) or two RuntimeWarnings before the line.
    (lambda stored: stored["result"].update(sigma=1e-200) or stored, "sigma 1e-200 is too small"),
    # Once accepted: a wider arithmetic's bound loosened the check. Once a broadcasting traceback, exit 1.
    (lambda stored: stored["scorer"].update(arithmetic="tf32x3") or stored,
     "but torch with precision tf32x3 scores in float32; the file was altered"),
    (lambda stored: with_grid(stored, stored["selection"]["grid"] + stored["selection"]["grid"][:1]),
     "selection.grid holds a width twice"),
    # Once a KeyError traceback (exit 1), and a grid-chosen result turned 'fixed' that passed.
    (lambda stored: stored["result"].pop("dimension") and stored, "key 'result.dimension' is missing"),
    (lambda stored: stored["selection"].update(fixed_sigma=True) or stored, "selection.fixed_sigma is true, but"),
])
def test_a_malformed_result_is_one_line_and_exit_2(edit, message, data, capsys):
    path = save(data)
    edited = edit(json.loads(path.read_text()))
    path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    code, out, err = check(capsys, path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("table, message", [
    ({"table": [], "config": {}}, "holds no measured rows"),
    ({"table": [{"key": "kmeans", "kind": "measured", "mnist": {}}], "config": {}}, "config has no 'generator'"),
    ({"table": [{"key": "kmeans", "kind": "measured", "mnist": {"mean": 1.0}}],
      "config": {"generator": "g.pt", "seed": 0, "protocol": "paper", "backend": "auto", "kmeans_iterations": 2}},
     "row 'kmeans' has no 'standard_error'"),
])
def test_a_malformed_table1_is_one_line_and_exit_2(table, message, tmp_path, capsys):
    """Keys the re-run reads are looked up before it starts (once a KeyError traceback, after loading MNIST)."""
    (tmp_path / "table1.json").write_text(json.dumps({"kind": "ganbench.table1", **table}))
    code, out, err = check(capsys, tmp_path / "table1.json")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("kind", [None, "ganbench.table1"])  # None: as written before table1.json had a kind
def test_check_still_reads_table1_files(kind, tmp_path, capsys):
    table = {"table": [{"key": "ganbench", "kind": "measured", "mnist": {}}], "config": {}}
    (tmp_path / "table1.json").write_text(json.dumps(table if kind is None else {"kind": kind, **table}))
    code, out, err = check(capsys, tmp_path / "table1.json", "--rows", "kmeans")
    assert code == 2 and "has no measured row 'kmeans'" in err  # reached table1's own check


def test_a_fixed_sigma_result_on_mnist(mnist, tmp_path, capsys):
    np.save(tmp_path / "samples.npy", mnist.train_x[:50])
    assert main(["parzen", str(tmp_path / "samples.npy"), "--sigma", "0.2", "--backend", "torch",
                 "--save", str(tmp_path / "result.json")]) == 0
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["inputs"]["test"]["mnist"] == "test" and stored["selection"]["fixed_sigma"] is True
    code, out, err = check(capsys, tmp_path / "result.json")
    assert code == 0, err
    assert "sigma" not in out.split()  # a fixed width is not selected, so not re-selected


# ---- sigma selection when two widths nearly tie --------------------------------------------------------

def test_a_near_tie_keeps_the_stored_sigma_and_a_clear_winner_does_not():
    grid, tolerances = np.array([0.1, 0.2, 0.3]), np.array([0.02, 0.01, 0.01])
    near_tie = results._selection_row(0.2, grid, np.array([-5.0, -1.0, -0.985]), tolerances)
    assert near_tie["ok"] and near_tie["new"] == 0.3 and near_tie["tolerance"] == pytest.approx(0.02)
    clear = results._selection_row(0.2, grid, np.array([-5.0, -1.0, -0.97]), tolerances)
    assert not clear["ok"] and clear["new"] == 0.3 and clear["difference"] == pytest.approx(0.03)


# ---- the pytest helpers -----------------------------------------------------------------------------

def test_assert_log_likelihood_expects_what_the_command_printed(data, capsys):
    """The documented pair: `ganbench parzen` on one's own files, then the helper on the same files with the
    printed mean. The helper defaulted to the paper protocol, the command to full: a false 'moved' of 0.18 nats."""
    files = [data / f"{role}.npy" for role in ("samples", "valid", "test")]
    capsys.readouterr()
    assert main(["parzen", str(files[0]), "--valid", str(files[1]), "--test", str(files[2]), *SCORE, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    score = testing.assert_log_likelihood(*files, expected=printed["mean"], backend="torch")
    assert score.sigma == printed["sigma"] and printed["protocol"] == "full"


def test_assert_log_likelihood_holds_and_fails(data):
    files = [data / f"{role}.npy" for role in ("samples", "valid", "test")]
    reference = testing.assert_log_likelihood(*files, expected=0.0, backend="reference", tolerance=np.inf)
    score = testing.assert_log_likelihood(*files, expected=reference.mean, backend="torch")
    assert score.sigma == reference.sigma
    with pytest.raises(AssertionError, match="Parzen log-likelihood moved"):
        testing.assert_log_likelihood(*files, expected=reference.mean + 0.05, backend="torch")


@pytest.mark.parametrize("call, message", [
    (lambda files: testing.assert_log_likelihood(*files, expected="1.0"), "expected must be a finite number"),
    (lambda files: testing.assert_log_likelihood(*files, expected=None), "expected must be a finite number"),
    (lambda files: testing.assert_log_likelihood(*files, expected=float("inf")), "expected must be a finite number"),
    (lambda files: testing.assert_log_likelihood(*files, expected=1.0, tolerance=-1), "tolerance must be a number >= 0"),
    (lambda files: testing.assert_log_likelihood(*files, expected=1.0, tolerance=float("nan")), "tolerance must be"),
    (lambda files: testing.assert_result_holds(files[0].parent), "is a folder; pass the result file inside it"),
])
def test_the_pytest_helpers_refuse_bad_arguments_in_one_line(call, message, data):
    """A TypeError, a tolerance no score can meet (or any meets), and 'does not exist' for a folder, before."""
    with pytest.raises(GanbenchError, match=message):
        call([data / f"{role}.npy" for role in ("samples", "valid", "test")])


def test_assert_result_holds(data, monkeypatch):
    path = save(data)
    assert testing.assert_result_holds(path)["ok"].all()
    original = parzen.parzen_pass
    monkeypatch.setattr(parzen, "parzen_pass",
                        lambda x, bank, sigmas, **options: original(x, bank, np.asarray(sigmas) * 1.01, **options))
    with pytest.raises(AssertionError, match="moved beyond tolerance: mean"):
        testing.assert_result_holds(path)


def test_assert_log_likelihood_takes_a_fixed_sigma_without_validation_data():
    """The docstring's fixed sigma with valid=None once crashed deriving the tolerance (len() of None)."""
    from ganbench.scoring import parzen
    from ganbench.testing import assert_log_likelihood

    rng = np.random.default_rng(0)
    bank, test = rng.random((50, 6)), rng.random((20, 6))
    expected = parzen.log_likelihood(test, bank, [0.2], backend="reference")[0].mean()
    score = assert_log_likelihood(bank, None, test, expected=expected, sigma=0.2)
    assert score.sigma == 0.2 and not score.valid_means
    with pytest.raises(AssertionError, match="moved"):
        assert_log_likelihood(bank, None, test, expected=expected + 1e-3, sigma=0.2)


def test_a_width_past_1e154_saves_and_checks(data, capsys):
    """sigma**2 overflows Python's float past 1e154 (an OverflowError deriving the bounds): the bound's
    distance term is then ~0, and the result saves and checks as any other."""
    path = save(data, "--sigma", "1e160")
    code, out, err = check(capsys, path)
    assert code == 0, out + err


def _edited_table(edit):
    table = json.loads((REPOSITORY / "results" / "table1.json").read_text())
    edit(table)
    return table


def _duplicate_row(table):
    copy = json.loads(json.dumps(next(row for row in table["table"] if row.get("key") == "training_images")))
    copy["mnist"]["mean"] = 260.0
    table["table"].insert(0, copy)


@pytest.mark.parametrize("edit, message", [
    (_duplicate_row, "it holds the measured row 'training_images' twice"),
    (lambda table: table["table"][0]["mnist"].update(mean=150), "its published rows are not the paper's Table 1"),
    (lambda table: next(row for row in table["table"] if row.get("key") == "dbn").update(kind="published"),
     "its published rows are not the paper's Table 1"),
    (lambda table: table["table"][0].update(mnist=[138, 2]), "its published rows are not the paper's Table 1"),
])
def test_a_table1_edited_beyond_its_measured_numbers_is_refused_before_work(edit, message, tmp_path, capsys):
    """Once accepted (exit 0): a second copy of a row placed first (only the last was checked, both rendered), a
    published number changed, a measured row turned into a published one (dropped from the check)."""
    (tmp_path / "table1.json").write_text(json.dumps(_edited_table(edit)))
    code, out, err = check(capsys, tmp_path / "table1.json")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_a_grid_edited_away_from_the_protocols_is_refused(data, capsys):
    """Once accepted: the protocol renamed (full to paper), or the widths around the best one removed so that
    a worse sigma was 'chosen'. The paper protocol's grid, and a grid given with --sigma-grid, are known."""
    path = save(data, "--protocol", "paper")
    stored = json.loads(path.read_text())
    assert stored["selection"]["sigma_grid"] is None
    best = next(index for index, (sigma, _) in enumerate(stored["selection"]["grid"])
                if sigma == stored["result"]["sigma"])
    thinned = json.loads(json.dumps(stored))
    for entries in [thinned["selection"]["grid"], *(b["valid_means"] for b in thinned["tolerance"]["bounds"].values())]:
        del entries[best]
    others = [sigma for sigma, _ in thinned["selection"]["grid"]]
    thinned["result"]["sigma"] = others[min(best, len(others) - 1)]
    path.write_text(json.dumps(thinned))
    code, out, err = check(capsys, path)
    assert code == 2 and "is not the grid the paper protocol searches from its grid" in err, err
    full = save(data)  # the full protocol's grid, renamed paper
    renamed = json.loads(full.read_text())
    renamed["selection"]["protocol"] = "paper"
    full.write_text(json.dumps(renamed))
    code, out, err = check(capsys, full)
    assert code == 2 and "is not the grid the paper protocol searches from its grid" in err, err
    given = save(data, "--protocol", "paper", "--sigma-grid", "0.5,1,2")
    assert json.loads(given.read_text())["selection"]["sigma_grid"] == "0.5,1,2"
    code, out, err = check(capsys, given)
    assert code == 0, out + err


def _without_width(stored: dict, index: int) -> dict:
    """The stored result with the grid's width ``index`` (in the grid's order) removed everywhere it is listed."""
    edited = json.loads(json.dumps(stored))
    for entries in [edited["selection"]["grid"], *(b["valid_means"] for b in edited["tolerance"]["bounds"].values())]:
        del entries[index]
    return edited


@pytest.mark.parametrize("given", [None, "0.02,0.05,0.2"])
def test_the_full_protocols_grid_is_replayed_from_the_validation_means(given, data, capsys):
    """The full protocol's widths follow from the data's scale (or the grid given) and the validation means: its
    start, widenings and refinement are replayed on the stored means, so a width removed around the best (the
    best's neighbour, which moves the refinement), a refinement width removed, or a width added is refused where
    any grid passed before; the unedited file passes."""
    path = save(data, *(("--sigma-grid", given) if given else ()))
    stored = json.loads(path.read_text())
    assert stored["selection"]["protocol"] == "full" and stored["selection"]["sigma_grid"] == given
    code, out, err = check(capsys, path)
    assert code == 0, out + err
    widths = [sigma for sigma, _ in stored["selection"]["grid"]]
    best = widths.index(stored["result"]["sigma"])
    message = "is not the grid the full protocol searches from " + (f"the grid {given!r}" if given else
                                                                         "the data's scale")
    for index in sorted({best - 1, best + 1, 0, len(widths) - 1}):
        path.write_text(json.dumps(_without_width(stored, index)))
        code, out, err = check(capsys, path)
        assert code == 2 and message in err, (index, err)
    added = json.loads(json.dumps(stored))
    added["selection"]["grid"].append([widths[-1] * 1.5, stored["selection"]["grid"][-1][1] - 1.0])
    for saved_bounds in added["tolerance"]["bounds"].values():
        saved_bounds["valid_means"].append(saved_bounds["valid_means"][-1])
    path.write_text(json.dumps(added))
    code, out, err = check(capsys, path)
    assert code == 2 and message in err, err


def _edited(path, edit) -> None:
    stored = json.loads(path.read_text())
    edit(stored)
    path.write_text(json.dumps(stored))


def test_a_result_edited_where_check_read_past_it_is_refused(data, capsys):
    """Each was accepted (exit 0): a near-tied width as sigma with its own mean (the stored grid still saying
    another is best), a key written twice (JSON readers keep one or the other), an input's rows, bytes or
    dimension, and a fixed-sigma result given a grid text or other validation rows."""
    path = save(data)
    whole = path.read_text()
    stored = json.loads(whole)
    grid = stored["selection"]["grid"]
    best = max(range(len(grid)), key=lambda index: grid[index][1])
    runner_up = max((index for index in range(len(grid)) if index != best), key=lambda index: grid[index][1])
    edits = [
        (lambda result: result["result"].update(sigma=grid[runner_up][0]), "is not the width of the highest validation"),
        (lambda result: result["inputs"]["test"].update(rows=1), "inputs.test.rows is 1, but that input holds"),
        (lambda result: result["inputs"]["samples"].update(dimension=11), "inputs.samples.dimension is 11"),
        (lambda result: result["inputs"]["valid"].update(bytes=1), "inputs.valid.bytes is 1, but"),
    ]
    for edit, message in edits:
        path.write_text(whole)
        _edited(path, edit)
        code, out, err = check(capsys, path)
        assert code == 2 and message in err, (message, err)
    mean = json.dumps(stored["result"]["mean"])
    path.write_text(whole.replace(f'"mean": {mean}', f'"mean": -1.0, "mean": {mean}', 1))
    code, out, err = check(capsys, path)
    assert code == 2 and "holds the key 'mean' twice in one object" in err, err
    fixed = save(data, "--sigma", "1.5")
    fixed_whole = fixed.read_text()
    for edit, message in ((lambda result: result["selection"].update(sigma_grid="1,2,3"), "holds a grid its sigma"),
                          (lambda result: result["selection"].update(valid_rows=5), "selection.valid_rows is 5")):
        fixed.write_text(fixed_whole)
        _edited(fixed, edit)
        code, out, err = check(capsys, fixed)
        assert code == 2 and message in err, (message, err)
    fixed.write_text(fixed_whole)
    assert check(capsys, fixed)[0] == 0


def test_a_torch_result_saved_at_another_precision_checks_on_the_kernel(data, capsys, monkeypatch):
    """A torch result saved with --precision int8 (which the torch backend scores in float32 all the same) was
    refused by `check --backend triton` ("precision int8 cannot be saved and checked yet")."""
    path = save(data, "--precision", "int8", "--sigma", "1.5")
    assert json.loads(path.read_text())["scorer"]["precision"] == "int8"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    code, out, err = check(capsys, path, "--backend", "triton")
    assert code == 0, out + err
    # Saved as "auto" on a CPU, checked on a GPU machine (where auto resolves to the kernel): the same.
    assert json.loads(path.read_text())["scorer"]["backend"] == "torch"
    _edited(path, lambda result: result["scorer"].update(backend="auto"))
    resolve = results.resolve
    monkeypatch.setattr(results, "resolve", lambda backend, device: resolve("triton" if backend == "auto" else backend,
                                                                             device))
    code, out, err = check(capsys, path)
    assert code == 0, out + err
