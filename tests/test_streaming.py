"""Banks on disk and across processes: chunked and distributed scores equal the one-shot score."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from tolerances import assert_parzen_scores_agree, generator_error, log_likelihood_bound

from ganbench.errors import GanbenchError
from ganbench.gan import sampling
from ganbench.gan.models import Generator, sample_noise
from ganbench.scoring import banks, partials, parzen, protocol, streaming
from ganbench.scoring.inputs import as_data


def test_chunks_and_shards_match_the_one_shot_score(tmp_path, rng):
    x, bank = rng.random((23, 17)), rng.random((301, 17)).astype(np.float32)
    sigmas = [0.1, 0.4, 1.0]
    whole = parzen.log_likelihood(x, bank, sigmas, backend="reference")
    np.save(tmp_path / "bank.npy", bank)
    (tmp_path / "shards").mkdir()
    for index, start in enumerate(range(0, 301, 70)):
        np.save(tmp_path / "shards" / f"shard-{index:05d}.npy", bank[start:start + 70])
    for source in (bank, tmp_path / "bank.npy", tmp_path / "shards"):
        streamed = streaming.log_likelihood(x, source, sigmas, chunk_rows=33, backend="reference", progress=False)
        # Partial sums merge exactly; only float64 rounding separates the two.
        np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype, kept", [(np.float64, np.float64), (np.int32, np.float64), (np.int64, np.float64),
                                          (np.float32, np.float32), (np.float16, np.float32), (np.uint8, np.float32),
                                          (np.int16, np.float32)])
def test_bank_files_keep_every_value_float32_would_round(dtype, kept, tmp_path, rng):
    """A float64 (or 32-bit integer) file is read as float64: far from the origin float32 moves each value
    by up to 2^-24 of it, 0.06 at 1e6, and the score by hundredths of a nat (the float64 reference then
    scores data nobody gave it). float32, float16, bytes and short integers lose nothing in float32."""
    offset = 1e6 if np.dtype(dtype).itemsize >= 4 else 0.0  # float16 ends at 65,504
    values = (rng.random((7, 3)) + offset if np.dtype(dtype).kind == "f"
              else rng.integers(0, 100, (7, 3)) + int(offset) * (dtype != np.int16)).astype(dtype)
    np.save(tmp_path / "bank.npy", values)
    for source in (tmp_path / "bank.npy", values, tmp_path):
        read = banks.open_bank(source).read_all()
        assert read.dtype == kept
        expected = values.astype(np.float32) / np.float32(255) if dtype == np.uint8 else values  # as_data's rule
        np.testing.assert_array_equal(read, expected)


def test_the_first_rows_of_a_bank_of_shards_come_from_every_shard_they_lie_in(tmp_path, rng):
    values = rng.random((25, 3)).astype(np.float32)
    for index, start in enumerate(range(0, 25, 10)):
        np.save(tmp_path / f"shard-{index}.npy", values[start:start + 10])
    bank = banks.open_bank(tmp_path)
    for rows in (7, 10, 23, 25, 40):
        np.testing.assert_array_equal(bank.head(rows), values[:rows])
    assert bank.rows_read == 0  # a look at the scale, not a share of the bank


def test_a_float64_bank_far_from_the_origin_scores_as_float64_numpy(tmp_path, capsys, rng):
    """The command on float64 files offset by 1e6: the reference backend within float64's rounding of
    the centred distances (~1e-15 nats here), where reading them as float32 was 0.015 nats off."""
    from ganbench.cli import main

    bank, valid, test = (rng.random((count, 20)) + 1e6 for count in (200, 30, 25))
    for name, values in (("bank", bank), ("valid", valid), ("test", test)):
        np.save(tmp_path / f"{name}.npy", values)
    distances = ((test[:, None, :] - bank[None]) ** 2).sum(-1)
    sigma = 0.3
    exact = (np.logaddexp.reduce(-distances / (2 * sigma**2), axis=1) - np.log(len(bank))
             - 20 / 2 * np.log(2 * np.pi * sigma**2))
    assert main(["parzen", str(tmp_path / "bank.npy"), "--valid", str(tmp_path / "valid.npy"), "--test",
                 str(tmp_path / "test.npy"), "--sigma", str(sigma), "--backend", "reference", "--json"]) == 0
    assert abs(json.loads(capsys.readouterr().out)["mean"] - exact.mean()) <= 1e-9


def test_streamed_nearest_index_is_global(rng):
    bank = rng.random((100, 5)).astype(np.float32)
    merged = streaming.stream_pass(bank[[77, 3]], banks.open_bank(bank), [0.3], chunk_rows=16, backend="reference",
                                   progress=False)
    np.testing.assert_array_equal(merged.nearest_index, [77, 3])


def test_sharded_sampling_equals_one_shot_sampling(tmp_path):
    torch.manual_seed(0)
    generator = Generator()
    paths = sampling.write_shards(generator, 25, seed=4, folder=tmp_path, shard_size=10)
    assert [p.name for p in paths] == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    # Same noise; other batch sizes may round G's products differently (another GEMM blocking),
    # each within the derived bound of G's exact output.
    bound = 2 * generator_error(generator, sample_noise(25, torch.Generator().manual_seed(4)))
    difference = np.concatenate([np.load(p) for p in paths]) - sampling.generate(generator, 25, seed=4)
    assert np.all(np.abs(difference) <= bound)


def test_a_bank_sampled_again_into_its_folder_is_only_the_new_bank(tmp_path):
    """Ten samples in shards of 3, then ten in shards of 4: the fourth shard of the first bank was left behind
    and scored as an eleventh sample."""
    generator = Generator()
    sampling.write_shards(generator, 10, seed=0, folder=tmp_path, shard_size=3)
    sampling.write_shards(generator, 10, seed=1, folder=tmp_path, shard_size=4)
    bank = banks.open_bank(tmp_path)
    assert len(bank) == 10 and sorted(path.name for path in tmp_path.glob("*.npy")) == [
        "shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    np.testing.assert_allclose(bank.read_all(), sampling.generate(generator, 10, seed=1), atol=1e-6)


def test_an_interrupted_sampling_leaves_a_bank_that_is_refused(tmp_path, monkeypatch):
    generator = Generator()
    original = sampling.save_samples

    def interrupted_after_two_shards(path, samples):
        if path.name == "shard-00002.npy":
            raise KeyboardInterrupt
        return original(path, samples)

    monkeypatch.setattr(sampling, "save_samples", interrupted_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        sampling.write_shards(generator, 10, seed=0, folder=tmp_path, shard_size=3)
    assert len(list(tmp_path.glob("shard-*.npy"))) == 2
    with pytest.raises(GanbenchError, match="holds an incomplete bank"):
        banks.open_bank(tmp_path)


def _edit_manifest(folder, edit) -> None:
    manifest = json.loads((folder / banks.SHARD_MANIFEST).read_text())
    edit(manifest["shards"])
    (folder / banks.SHARD_MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, message", [
    (lambda folder: np.save(folder / "extra.npy", np.zeros((2, 784), np.float32)), "does not list \\(extra.npy\\)"),
    (lambda folder: (folder / "shard-00001.npy").unlink(), "shard-00001.npy is missing or not the 3 rows"),
    (lambda folder: np.save(folder / "shard-00001.npy", np.zeros((2, 784), np.float32)), "not the 3 rows"),
    (lambda folder: (folder / banks.SHARD_MANIFEST).write_text("{"), "is damaged"),
    (lambda folder: _edit_manifest(folder, lambda shards: shards.append(shards[0])), "lists shard-00000.npy twice"),
    (lambda folder: _edit_manifest(folder, lambda shards: shards[0].update(file="../shard-00000.npy")),
     "lists ../shard-00000.npy, which is not a file of the folder"),
])
def test_a_sampled_bank_that_is_not_what_its_manifest_lists_is_refused(tmp_path, damage, message):
    """A shard listed twice was read twice (its samples scored twice, the bank 3 rows larger), silently."""
    sampling.write_shards(Generator(), 7, seed=0, folder=tmp_path, shard_size=3)
    assert len(banks.open_bank(tmp_path)) == 7
    damage(tmp_path)
    with pytest.raises(GanbenchError, match=message):
        banks.open_bank(tmp_path)


def test_bad_banks(tmp_path):
    with pytest.raises(GanbenchError, match="does not exist"):
        banks.open_bank(tmp_path / "missing.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GanbenchError, match="no .npy shards"):
        banks.open_bank(tmp_path / "empty")
    bank = np.ones((10, 4), dtype=np.float32)
    np.save(tmp_path / "short.npy", bank)
    raw = (tmp_path / "short.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(raw[:-8])
    with pytest.raises(GanbenchError, match="truncated"):
        list(banks.open_bank(tmp_path / "short.npy").chunks(100))
    bank[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bank)
    with pytest.raises(GanbenchError, match="NaN or inf at row 3"):
        list(banks.open_bank(tmp_path / "nan.npy").chunks(100))


def test_a_bank_outside_the_data_range_is_refused_with_its_row(tmp_path):
    bank = np.full((30, 4), 0.5, dtype=np.float32)
    bank[0], bank[-1] = 0.0, 1.0  # the ends of the range are inside it
    np.save(tmp_path / "bank.npy", bank)
    assert banks.open_bank(tmp_path / "bank.npy", banks.MNIST_RANGE).read_all(rows=7).shape == (30, 4)
    bank[23, 2] = -0.25  # a tanh output, say
    np.save(tmp_path / "bank.npy", bank)
    with pytest.raises(GanbenchError, match=r"value -0.25 at row 23, outside the data's range \[0, 1\].*\(x \+ 1\) / 2"):
        banks.open_bank(tmp_path / "bank.npy", banks.MNIST_RANGE).read_all(rows=7)
    assert len(list(banks.open_bank(tmp_path / "bank.npy").chunks(7))) == 5  # no range given: no check
    # uint8 images are divided by 255 before the check, so 255 is inside MNIST's range.
    np.save(tmp_path / "bytes.npy", np.full((3, 4), 255, dtype=np.uint8))
    assert banks.open_bank(tmp_path / "bytes.npy", banks.MNIST_RANGE).read_all().max() == 1.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_two_runs_agree(one: dict, two: dict, valid, test, bank, dtype, chunk_rows: int,
                          other_chunk_rows: int | None = None) -> None:
    """Two `ganbench parzen --json` results for the same bank: each run's scores are within
    log_likelihood_bound of the exact ones (for its chunks: ``other_chunk_rows`` those of the second run, where
    they differ), so the two differ by at most twice the larger bound."""
    grid = np.asarray(protocol.PROTOCOLS["paper"].sigma_grid)
    valid = valid[:protocol.PROTOCOLS["paper"].valid_count]

    def bound(points, sigmas):
        return np.max([log_likelihood_bound(points, bank, sigmas, dtype=dtype, chunk_rows=rows, block_rows=rows)
                       for rows in {chunk_rows, other_chunk_rows or chunk_rows}], axis=0)

    valid_bounds = 2 * bound(valid, grid)
    valid_sizes = np.abs(parzen.log_likelihood(valid, bank, grid, backend="reference")).mean(1) + valid_bounds.max(1)
    test_bounds = 2 * bound(test, [one["sigma"]])[0]
    test_size = abs(one["mean"]) + one["standard_error"] * np.sqrt(len(test))  # mean |x| <= |mean| + std
    runs = [dict(run, valid_means=list(run["valid_means"].values())) for run in (one, two)]
    assert_parzen_scores_agree(*runs, valid_bounds, test_bounds, valid_sizes, test_size)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("backend, dtype, chunk_rows", [("torch", np.float32, 100), ("reference", np.float64, 100),
                                                      ("torch", np.float32, 1000)])
def test_two_gloo_processes_equal_one(tmp_path, mnist, backend, dtype, chunk_rows):
    """Six chunks shared whole; or one chunk (the bank below --chunk-rows), cut into two equal shares (of 251 rows:
    the chunks of 251 that the bound below takes)."""
    bank = mnist.train_x[:501 if chunk_rows < 501 else 502]
    np.save(tmp_path / "bank.npy", bank)
    base = [sys.executable, "-m", "ganbench", "parzen", str(tmp_path / "bank.npy"), "--json", "--backend", backend,
            "--device", "cpu", "--chunk-rows", str(chunk_rows)]
    single = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                str(free_port()), "-m", "ganbench"] + base[3:]
    distributed = subprocess.run(launcher, capture_output=True, text=True, timeout=300)
    assert distributed.returncode == 0, distributed.stderr
    one, two = json.loads(single.stdout), json.loads(distributed.stdout)  # only rank 0 printed
    assert two["world_size"] == 2 and one["n_bank"] == two["n_bank"] == len(bank)
    # Each rank scores whole chunks as the single process does, but torchrun starts its ranks with
    # OMP_NUM_THREADS=1 where the single process may use every core, and BLAS blocks its products by
    # thread count: the chunks' float32 (or float64) rounding differs, within the derived bounds.
    # The float64 reference backend checks the merge itself to ~1e-9 nats.
    assert_two_runs_agree(one, two, mnist.valid_x, mnist.test_x, bank, dtype, chunk_rows=min(chunk_rows, len(bank)),
                          other_chunk_rows=chunk_rows if chunk_rows < len(bank) else len(bank) // 2)


def rank_command(tmp_path, rank, port, bank):
    environment = dict(os.environ, WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port))
    command = [sys.executable, "-m", "ganbench", "parzen", str(bank), "--sigma", "0.2", "--backend", "torch",
               "--device", "cpu", "--timeout", "10"]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.distributed
def test_a_rank_that_never_starts_is_a_clear_error_not_a_hang(tmp_path, mnist):
    np.save(tmp_path / "bank.npy", mnist.train_x[:50])
    lonely = rank_command(tmp_path, 0, free_port(), tmp_path / "bank.npy")
    _, stderr = lonely.communicate(timeout=120)
    assert lonely.returncode == 2 and "could not join" in stderr and "Traceback" not in stderr


@pytest.mark.slow
@pytest.mark.distributed
def test_a_rank_that_dies_stops_the_others(tmp_path, mnist):
    np.save(tmp_path / "bank.npy", mnist.train_x[:50])
    port = free_port()
    survivor = rank_command(tmp_path, 0, port, tmp_path / "bank.npy")
    casualty = rank_command(tmp_path, 1, port, tmp_path / "missing.npy")  # dies after joining
    _, casualty_err = casualty.communicate(timeout=120)
    _, survivor_err = survivor.communicate(timeout=120)
    assert casualty.returncode == 2 and "does not exist" in casualty_err
    assert survivor.returncode == 2 and "Traceback" not in survivor_err
    # It stopped at once: not "failed to pass monitoredBarrier in 10000 ms", gloo's words for a wait of --timeout.
    assert ("rank 0: rank 1 stopped before the ranks met" in survivor_err
            or "rank 0: another rank stopped (its connection closed)" in survivor_err), survivor_err


@pytest.mark.parametrize("text, waited, expected", [
    ("[Rank 0]: Ranks 1 failed to pass monitoredBarrier in 20000 ms", 0.4,
     "rank 0: rank 1 stopped before the ranks met; its own error says why"),
    ("[Rank 0]: Ranks 1, 3 failed to pass monitoredBarrier in 20000 ms", 0.4, "rank 0: ranks 1, 3 stopped before"),
    ("[Rank 0]: Rank 2 failed to pass monitoredBarrier in 20000 ms", 20.2,
     "rank 0: rank 2 did not reach the ranks' meeting within --timeout 20 s"),
    ("[/build/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:52437", 0.1,
     "rank 0: another rank stopped (its connection closed); its own error says why"),
    ("Rank 1 successfully reached monitoredBarrier, but received errors while waiting for send/recv from rank 2. "
     "Please check rank 2 logs for faulty rank.", 0.2, "rank 0: rank 2 stopped before the ranks met"),
    ("Something else\nsecond line", 1.0, "rank 0: a collective failed, most likely because another rank died or "
                                          "timed out (Something else); see that rank's error"),
])
def test_a_failed_collective_says_whether_a_rank_stopped_or_never_came(text, waited, expected, monkeypatch):
    """gloo names --timeout whether the missing rank died at once or never came (a survivor's line read as a wait
    of 300 s), and a closed connection named a file of torch's build machine."""
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    monkeypatch.setitem(streaming._BARRIER_TIMEOUT, "seconds", 20.0)
    assert expected in streaming.collective_failure(text, waited)


def test_uint8_and_npz_banks_are_scaled_to_the_data(tmp_path, rng):
    images = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    np.savez(tmp_path / "images.npz", samples=images)
    expected = images.reshape(40, -1).astype(np.float32) / 255
    for name in ("images.npy", "images.npz"):
        (_, chunk), = list(banks.open_bank(tmp_path / name).chunks(100))
        np.testing.assert_allclose(chunk, expected, rtol=1e-7)


@pytest.mark.parametrize("kind", ["float32", "uint8 images", "float64 Fortran order", "big-endian float32",
                                  "compressed", "one of two named samples"])
def test_npz_banks_are_read_in_place_unless_compressed(kind, tmp_path, rng):
    """An .npz of numpy.savez stores its array uncompressed: read in place a chunk at a time, as an .npy is (a
    10^6-row bank held its 3.1 GB whole before); numpy.savez_compressed's is inflated whole. Every layout reads
    the values NumPy's own load gives, and scores as they do."""
    arrays = {"float32": rng.random((37, 6), dtype=np.float32),
              "uint8 images": rng.integers(0, 256, size=(37, 2, 3), dtype=np.uint8),
              "float64 Fortran order": np.asfortranarray(rng.random((37, 6))),
              "big-endian float32": rng.random((37, 6)).astype(">f4"),
              "compressed": rng.random((37, 6), dtype=np.float32),
              "one of two named samples": rng.random((37, 6), dtype=np.float32)}
    path = tmp_path / "bank.npz"
    if kind == "compressed":
        np.savez_compressed(path, arrays[kind])
    elif kind == "one of two named samples":
        np.savez(path, other=np.zeros((2, 2)), samples=arrays[kind])
    else:
        np.savez(path, arrays[kind])
    bank = banks.open_bank(path)
    (shard,) = bank.shards
    if kind == "compressed":
        assert type(shard.array) is np.ndarray
    else:
        assert shard.array is None and shard.offset > 0  # plain reads at the member's values
        assert (shard.fortran_shape is not None) == (kind == "float64 Fortran order")
    expected = np.asarray(as_data("bank", arrays[kind].reshape(37, -1)), dtype=bank.dtype)
    chunks = list(bank.chunks(10))
    assert [first for first, _ in chunks] == [0, 10, 20, 30] and bank.rows_read == 37
    np.testing.assert_array_equal(np.concatenate([chunk for _, chunk in chunks]), expected)
    queries = expected[::5] + 0.01
    np.testing.assert_array_equal(
        streaming.log_likelihood(queries, path, [0.3], chunk_rows=10, backend="reference", progress=False),
        streaming.log_likelihood(queries, expected, [0.3], chunk_rows=10, backend="reference", progress=False))


def test_an_npz_member_cut_short_is_refused_in_one_line(tmp_path, rng):
    """A stored member whose size in the archive's directory is less than its .npy header says is not read in
    place (its rows would run into the next member): NumPy's load refuses it, in ganbench's one line."""
    import zipfile

    values = rng.random((37, 6), dtype=np.float32)
    whole = tmp_path / "whole.npy"
    np.save(whole, values)
    with zipfile.ZipFile(tmp_path / "bank.npz", "w") as archive:  # stored, as numpy.savez writes
        archive.writestr("samples.npy", whole.read_bytes()[:-24])
    with pytest.raises(GanbenchError, match="bank.npz is not a readable .npz file of numbers"):
        banks.open_bank(tmp_path / "bank.npz")


def stored_npz(path, member_bytes, name="samples.npy"):
    """An archive of one member stored uncompressed, as numpy.savez writes."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(name, member_bytes)
    return path


def npy_bytes(tmp_path, values) -> bytes:
    np.save(tmp_path / "member.npy", values)
    return (tmp_path / "member.npy").read_bytes()


def test_a_folder_of_many_shards_holds_no_open_files(tmp_path, rng):
    """Shards of uint8 (any dtype but float32) were memory maps, each holding a file open for the bank's life:
    1,100 .npz shards under a limit of 1,024 open files were a traceback ("Too many open files")."""
    folder = tmp_path / "bank"
    folder.mkdir()
    images = rng.integers(0, 256, size=(60, 2, 3), dtype=np.uint8)
    for index in range(30):
        (np.save if index % 2 else np.savez)(folder / f"s{index:03d}", images[2 * index:2 * index + 2])
    before = len(os.listdir("/proc/self/fd"))
    bank = banks.open_bank(folder)
    assert len(os.listdir("/proc/self/fd")) == before
    in_order = [images[2 * index:2 * index + 2] for index in [*range(1, 30, 2), *range(0, 30, 2)]]  # .npy first
    np.testing.assert_array_equal(bank.read_all(), as_data("bank", np.concatenate(in_order).reshape(60, -1)))
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_damaged_npz_member_is_refused(tmp_path, rng):
    """Read in place, a stored member skipped the CRC-32 NumPy's load checks: a flipped bit was scored silently."""
    values = rng.random((100, 6), dtype=np.float32)
    np.savez(tmp_path / "clean.npz", samples=values)
    raw = bytearray((tmp_path / "clean.npz").read_bytes())
    raw[raw.index(values.tobytes()) + 3] ^= 0x01
    (tmp_path / "damaged.npz").write_bytes(raw)
    np.testing.assert_array_equal(banks.open_bank(tmp_path / "clean.npz").read_all(), values)
    with pytest.raises(GanbenchError, match="damaged.npz is not a readable .npz file of numbers \\(BadZipFile\\)"):
        banks.open_bank(tmp_path / "damaged.npz")


def test_a_directory_entry_that_points_at_another_member_is_refused(tmp_path, rng):
    """The directory's samples.npy pointing at the local header of another member read that member's values."""
    import zipfile

    path = tmp_path / "bank.npz"
    np.savez(path, other=rng.random((5, 6), dtype=np.float32), samples=rng.random((5, 6), dtype=np.float32))
    with zipfile.ZipFile(path) as archive:
        other, samples = archive.getinfo("other.npy"), archive.getinfo("samples.npy")
    raw = bytearray(path.read_bytes())
    directory = raw.index(b"PK\x01\x02samples.npy"[:4], raw.rindex(b"samples.npy") - 46)
    assert raw[directory + 42:directory + 46] == samples.header_offset.to_bytes(4, "little")
    raw[directory + 42:directory + 46] = other.header_offset.to_bytes(4, "little")
    path.write_bytes(raw)
    with pytest.raises(GanbenchError, match="bank.npz is not a readable .npz file of numbers"):
        banks.open_bank(path)


def header_bytes(descr: str, shape: str) -> bytes:
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    text += " " * (64 - (11 + len(text)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


@pytest.mark.parametrize("descr, shape, body", [("|u1", "(-8, -6)", 48), ("<f4", "(-8, -6)", 192),
                                                ("|u1", "(4294967296, 4294967296)", 0), ("<f4", "(90, 6)", 240)])
@pytest.mark.parametrize("container", [".npy", ".npz"])
def test_npy_headers_that_lie_are_one_line_errors(descr, shape, body, container, tmp_path):
    """Negative sizes (NumPy's header reader takes them), sizes whose int64 product wraps to 0, and more rows
    than the bytes hold were tracebacks (a memory map's ValueError) or a bank of -8 rows."""
    data = header_bytes(descr, shape) + bytes(body)
    path = tmp_path / f"bank{container}"
    if container == ".npz":
        stored_npz(path, data)
    else:
        path.write_bytes(data)
    with pytest.raises(GanbenchError, match="bank.np[yz] (is not a readable|is shorter than)"):
        banks.open_bank(path).read_all()


def test_a_file_that_changes_while_it_is_read_is_an_error(tmp_path, rng):
    """A bank rewritten under a scorer mixed two versions (same size), or ended in a bus error (a memory map of a
    file cut short)."""
    for name, save in (("bank.npy", np.save), ("images.npz", np.savez)):
        path = tmp_path / name
        save(path, rng.integers(0, 256, size=(50, 6), dtype=np.uint8))
        chunks = banks.open_bank(path).chunks(10)
        next(chunks)
        save(path, rng.integers(0, 256, size=(50, 6), dtype=np.uint8))
        os.utime(path, ns=(1, 1))  # another time whatever the clock's resolution
        with pytest.raises(GanbenchError, match=f"{name} changed while it was being read"):
            next(chunks)


def test_npz_archives_numpy_refuses_are_refused(tmp_path, rng):
    """An archive after other bytes (a self-extracting stub), which NumPy's load refuses, was read in place when
    stored and refused when compressed; an encrypted member or an .npy with an archive after it were tracebacks."""
    values = rng.random((5, 6), dtype=np.float32)
    np.savez(tmp_path / "plain.npz", samples=values)
    (tmp_path / "stub.npz").write_bytes(b"#!/bin/sh\nexit 0\n" + (tmp_path / "plain.npz").read_bytes())
    raw = bytearray((tmp_path / "plain.npz").read_bytes())
    for signature in (b"PK\x03\x04", b"PK\x01\x02"):  # the encrypted flag, in the local header and directory
        at = raw.index(signature)
        raw[at + (6 if signature == b"PK\x03\x04" else 8)] |= 0x1
    (tmp_path / "encrypted.npz").write_bytes(raw)
    (tmp_path / "npy_then_zip.npz").write_bytes(npy_bytes(tmp_path, values) + (tmp_path / "plain.npz").read_bytes())
    for name in ("stub.npz", "encrypted.npz", "npy_then_zip.npz"):
        with pytest.raises(GanbenchError, match=f"{name} is not a readable .npz file of numbers"):
            banks.open_bank(tmp_path / name)


# ---- each rank reads its share only; chunks independent of the shard sizes ---------------------

def write_shards(folder, bank, shard_rows):
    folder.mkdir()
    for index, start in enumerate(range(0, len(bank), shard_rows)):
        np.save(folder / f"shard-{index:05d}.npy", bank[start:start + shard_rows])
    return folder


def test_chunks_follow_the_global_rows_across_shards(tmp_path, rng):
    bank = rng.random((301, 9)).astype(np.float32)
    folder = write_shards(tmp_path / "shards", bank, 70)  # 70 is not a multiple of 33
    chunks = list(banks.open_bank(folder).chunks(33))
    assert [first for first, _ in chunks] == list(range(0, 301, 33))
    for first, chunk in chunks:
        np.testing.assert_array_equal(chunk, bank[first:first + 33])
    (first, chunk), = list(banks.open_bank(folder).chunks(200, start=66, stop=139))
    assert first == 66
    np.testing.assert_array_equal(chunk, bank[66:139])
    bank[72, 1] = np.inf  # in the chunk [66, 99) that spans the first two shards
    write_shards(tmp_path / "bad", bank, 70)
    with pytest.raises(GanbenchError, match="NaN or inf at row 72"):
        list(banks.open_bank(tmp_path / "bad").chunks(33))


@pytest.mark.parametrize("world", [2, 3, 8])
def test_each_rank_reads_only_its_share_of_the_bank(tmp_path, rng, monkeypatch, world):
    bank = rng.random((301, 17)).astype(np.float32)
    folder = write_shards(tmp_path / "shards", bank, 70)
    bytes_read = []
    real_fromfile = np.fromfile

    def counting_fromfile(*arguments, **options):
        values = real_fromfile(*arguments, **options)
        bytes_read[-1] += values.nbytes
        return values

    monkeypatch.setattr(np, "fromfile", counting_fromfile)
    shares = []
    for rank in range(world):  # each rank as a process of its own would run it
        share = streaming.share_rows(301, 33, rank, world)
        opened = banks.open_bank(folder)
        bytes_read.append(0)
        streaming.stream_pass(rng.random((3, 17)), opened, [0.5], rows=share, chunk_rows=33, backend="reference",
                              progress=False)
        assert opened.rows_read == len(share)
        assert bytes_read[-1] == len(share) * 17 * 4
        shares.append(share)
    assert [row for share in shares for row in share] == list(range(301))  # a partition, in order
    assert all(share.start % 33 == 0 for share in shares if len(share))


@pytest.mark.parametrize("count, chunk_rows, world", [(301, 33, 3), (40_001, 65_536, 2), (40_001, 30_000, 3),
                                                     (5, 100, 8), (1, 1, 4), (97, 10, 10), (7, 7, 3)])
def test_rank_shares_partition_the_bank_and_leave_no_rank_idle(count, chunk_rows, world):
    """Whole chunks when there are as many as ranks; a bank of fewer chunks is cut into equal shares, where whole
    chunks left all but one rank idle (40,001 rows under two ranks: one chunk, all of it on rank 0)."""
    shares = [streaming.share_rows(count, chunk_rows, rank, world) for rank in range(world)]
    assert [row for share in shares for row in share] == list(range(count))  # a partition, in order
    chunks = -(-count // chunk_rows)
    if chunks >= world:
        assert all(share.start % chunk_rows == 0 for share in shares if len(share))
    else:
        assert max(map(len, shares)) - min(map(len, shares)) <= 1 and all(len(share) <= chunk_rows for share in shares)
        assert sum(1 for share in shares if len(share)) == min(count, world)


def test_ranks_score_the_chunks_a_single_process_scores_whatever_the_shard_size(tmp_path, mnist):
    """Shards of 70 rows, chunks of 33: each simulated rank's chunks are chunks of the single
    process, so with the float32 torch backend their merged partials equal the single
    process's up to the float64 merge order (not merely within the float32 bound)."""
    folder = write_shards(tmp_path / "shards", mnist.train_x[:301], 70)
    # Wide kernels: every bank term carries weight, so a chunk cut elsewhere (another centring
    # mean, other float32 roundings) shows at ~1e-7 instead of vanishing behind the exact nearest term.
    queries, sigmas = mnist.test_x[:20], [1.0, 3.0]
    single_chunks = [(first, len(chunk)) for first, chunk in banks.open_bank(folder).chunks(33)]
    single = streaming.stream_pass(queries, banks.open_bank(folder), sigmas, chunk_rows=33, backend="torch",
                                   device="cpu", progress=False)
    world, merged, rank_chunks = 3, None, []
    for rank in range(world):
        share = streaming.share_rows(301, 33, rank, world)
        rank_chunks += [(first, len(chunk)) for first, chunk in banks.open_bank(folder).chunks(33, share.start,
                                                                                                share.stop)]
        local = streaming.stream_pass(queries, banks.open_bank(folder), sigmas, rows=share, chunk_rows=33,
                                      backend="torch", device="cpu", progress=False)
        merged = local if merged is None else partials.merge(merged, local, sigmas)
    assert rank_chunks == single_chunks
    np.testing.assert_array_equal(merged.nearest_index, single.nearest_index)
    np.testing.assert_allclose(partials.log_sum_exp(merged, sigmas), partials.log_sum_exp(single, sigmas),
                               rtol=0, atol=1e-9)


def test_the_process_group_backend_follows_the_scoring_device(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert streaming.process_group_backend(cuda, "triton") == "nccl"
    assert streaming.process_group_backend(cuda, "torch") == "nccl"
    assert streaming.process_group_backend(cpu, "torch") == "gloo"
    assert streaming.process_group_backend(cuda, "reference") == "gloo"  # NumPy on the CPU
    # On a machine with GPUs, what `ganbench parzen --device cpu` under torchrun asks for:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parzen.scoring_device("cpu", "auto") == cpu
    assert parzen.scoring_device(None, "torch") == cpu
    assert parzen.scoring_device(None, "auto").type == "cuda"
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: chosen.append(("set_device", index)))
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **options: chosen.append(backend))
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert streaming.init_from_environment(5, device="cpu", backend="auto")
    assert chosen == ["gloo"]


def test_a_chunk_size_below_one_is_a_clear_error(rng):
    with pytest.raises(GanbenchError, match="chunk rows must be a positive integer, got 0"):
        streaming.log_likelihood(rng.random((2, 3)), rng.random((5, 3)), [0.5], chunk_rows=0, progress=False)


@pytest.mark.parametrize("chunk_rows", [2.5, True, "3", None])
def test_a_chunk_size_that_is_not_a_whole_number_is_a_clear_error(chunk_rows, rng):
    """A TypeError from range() or from a comparison before; True was taken as 1."""
    with pytest.raises(GanbenchError, match="chunk rows must be a positive integer"):
        streaming.log_likelihood(rng.random((2, 3)), rng.random((5, 3)), [0.5], chunk_rows=chunk_rows, progress=False)


def test_uint8_queries_and_bank_stream_on_one_scale(rng):
    """The bank became data (divided by 255) and the queries did not: 8-bit images scored 360,000 nats a point
    off, silently. Both now take the data rule, the score of the images a / 255."""
    bank, x = rng.integers(0, 256, (40, 10), dtype=np.uint8), rng.integers(0, 256, (5, 10), dtype=np.uint8)
    got = streaming.log_likelihood(x, bank, [0.5], chunk_rows=7, backend="reference", progress=False)
    expected = parzen.log_likelihood(x.astype(np.float32) / 255, bank.astype(np.float32) / 255, [0.5],
                                     backend="reference")
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_one_row_of_a_reversed_array_scores(rng):
    """NumPy calls a one-row view with a negative stride contiguous and torch refused it: a traceback, in a
    streamed bank whenever a chunk held one row of a reversed array."""
    bank = rng.random((11, 4))
    reversed_bank = bank[::-1]
    np.testing.assert_array_equal(parzen.log_likelihood(bank[:3], reversed_bank[:1], [0.5], backend="reference"),
                                  parzen.log_likelihood(bank[:3], bank[-1:], [0.5], backend="reference"))
    got = streaming.log_likelihood(bank[:3], reversed_bank, [0.5], chunk_rows=5, backend="reference", progress=False)
    np.testing.assert_allclose(got, parzen.log_likelihood(bank[:3], bank, [0.5], backend="reference"), rtol=1e-13)


def test_an_npz_member_that_is_not_an_array_is_a_clear_error(tmp_path, rng):
    """NumPy returns the raw bytes of such a member: an AttributeError traceback before."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "bank.npz", "w") as archive:
        archive.writestr("samples.npy", "hello")
    with pytest.raises(GanbenchError, match="its member 'samples' is not an .npy array"):
        streaming.log_likelihood(rng.random((2, 3)), tmp_path / "bank.npz", [0.5], progress=False)


@pytest.mark.parametrize("other", ["sigmas reordered", "rows reordered", "chunk size", "bank size", "bank drawn again",
                                   "backend", "precision", "device"])
def test_ranks_given_other_inputs_are_an_error_on_every_rank(other, rng, monkeypatch):
    """Other sigmas or another bank on one rank merged into a wrong answer on each, silently; other sizes failed
    inside gloo (rank 0 killed). The ranks compare a fingerprint of their inputs first (the second rank's here
    made from its own inputs): sigmas or rows in another order, which sums of them cannot tell, included."""
    queries = torch.from_numpy(rng.integers(0, 2, (6, 3)).astype(np.float64))  # 0/1: sums are exact in any order
    bank, grid, chunk_rows = banks.open_bank(rng.random((9, 3))), np.array([0.5, 1.0]), 4
    options = {"backend": "torch", "precision": "auto", "device": "cuda:0"}
    theirs = {"sigmas reordered": (queries, bank, grid[::-1], chunk_rows, options),
              "rows reordered": (queries.flip(0), bank, grid, chunk_rows, options),
              "chunk size": (queries, bank, grid, 5, options),
              "bank size": (queries, banks.open_bank(rng.random((8, 3))), grid, chunk_rows, options),
              "bank drawn again": (queries, banks.open_bank(rng.random((9, 3))), grid, chunk_rows, options),
              # Another arithmetic on one rank was merged silently; another GPU is each rank's own.
              "backend": (queries, bank, grid, chunk_rows, {**options, "backend": "reference"}),
              "precision": (queries, bank, grid, chunk_rows, {**options, "precision": "ieee"}),
              "device": (queries, bank, grid, chunk_rows, {**options, "device": "cuda:1"})}[other]
    fingerprints = []

    def all_gather(out, tensor):
        fingerprints.append(tensor.clone())
        out[0].copy_(fingerprints[0])
        out[1].copy_(fingerprints[-1])

    monkeypatch.setattr(torch.distributed, "get_backend", lambda: "nccl")  # no barrier to stand in for
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    monkeypatch.setattr(torch, "device", lambda name: torch.empty(0).device)  # the CPU stands in for the GPU
    streaming.same_inputs_on_every_rank(queries, bank, grid, chunk_rows, options)  # the same on both: no error
    fingerprints.clear()
    streaming.same_inputs_on_every_rank(queries, bank, grid, chunk_rows, options)  # rank 0's fingerprint ...
    if other == "device":
        streaming.same_inputs_on_every_rank(*theirs)
        return
    with pytest.raises(GanbenchError, match="rank 1 was given other inputs than rank 0"):
        streaming.same_inputs_on_every_rank(*theirs)  # ... against rank 1's


def test_the_full_protocols_first_pass_compares_the_ranks_inputs_before_its_collective(rng, monkeypatch):
    """Validation sets of other sizes on two ranks failed inside gloo's all-reduce of the nearest distances (a C++
    abort, exit -6, on one rank): the fingerprint comes first."""
    def mismatch(*args):
        raise GanbenchError("rank 1 was given other inputs than rank 0")

    monkeypatch.setattr(streaming, "is_distributed", lambda: True)
    monkeypatch.setattr(streaming, "same_inputs_on_every_rank", mismatch)
    monkeypatch.setattr(streaming, "all_merge", lambda *args: pytest.fail("a collective ran before the check"))
    with pytest.raises(GanbenchError, match="other inputs"):
        protocol.nearest_distances(rng.random((5, 3)), rng.random((9, 3)), chunk_rows=4, backend="torch")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_given_as_a_bank_or_shard_is_refused_not_waited_on(tmp_path, rng):
    """Opening a FIFO blocks until a writer comes: the command hung."""
    os.mkfifo(tmp_path / "pipe.npy")
    with pytest.raises(GanbenchError, match="is not a regular file"):
        banks.open_bank(tmp_path / "pipe.npy")
    folder = tmp_path / "shards"
    folder.mkdir()
    np.save(folder / "a.npy", rng.random((3, 4)))
    os.mkfifo(folder / "b.npy")
    with pytest.raises(GanbenchError, match="is not a regular file"):
        banks.open_bank(folder)


def test_a_world_size_that_is_not_a_number_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "abc")
    with pytest.raises(GanbenchError, match="WORLD_SIZE is 'abc', not a number of processes"):
        streaming.init_from_environment()


def test_the_ranks_barrier_waits_as_long_as_the_groups_timeout(monkeypatch):
    """monitored_barrier waited its default 30 minutes for a stopped rank, whatever --timeout said."""
    import datetime

    seen, joined = {}, []
    monkeypatch.setattr(torch.distributed, "monitored_barrier", lambda **options: seen.update(options))
    monkeypatch.setattr(torch.distributed, "get_backend", lambda: "gloo")
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **options: joined.append(options))
    monkeypatch.setattr(streaming, "is_distributed", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setitem(streaming._BARRIER_TIMEOUT, "seconds", None)
    streaming.init_from_environment(7.5, device="cpu", backend="torch")
    streaming.barrier()
    assert joined[0]["timeout"] == seen["timeout"] == datetime.timedelta(seconds=7.5)


def test_a_bank_on_two_scales_is_refused_whichever_side_is_8_bit(tmp_path, rng):
    """A folder of a uint8 shard and a shard of 0-255 floats, scored with uint8 points, passed unchecked (the float
    shard added nothing: the first half's score minus log 2): its shards are compared with each other. Against
    MNIST's range the offending shard is named with its own row, as a NaN in it is. Float arrays, outliers
    included, are scored as given (as parzen.log_likelihood scores them; evaluate and the command check their
    range)."""
    points = rng.integers(0, 256, (20, 16)).astype(np.uint8)
    bank = rng.integers(0, 256, (12_000, 16)).astype(np.uint8)
    (tmp_path / "mixed").mkdir()
    np.save(tmp_path / "mixed" / "a.npy", bank[:11_000])
    np.save(tmp_path / "mixed" / "b.npy", bank[11_000:].astype(np.float32))
    for scored in (points, points / np.float32(255), points.astype(np.float32)):  # whatever the points' scale
        with pytest.raises(GanbenchError, match=r"shard .*a.npy lie within \[-1, 1\] but the bank's shard .*b.npy reach"):
            streaming.log_likelihood(scored, tmp_path / "mixed", [0.5], progress=False)
    with pytest.raises(GanbenchError, match=r"bank .*mixed \(shard .*b.npy, its row 0\) has the value .* at row 11000"):
        banks.open_bank(tmp_path / "mixed", banks.MNIST_RANGE).read_all()
    for given in (points, list(points)):  # 8-bit points against 0-255 floats (a list of rows has no dtype)
        with pytest.raises(GanbenchError, match="on two scales"):
            streaming.log_likelihood(given, bank.astype(np.float32), [0.5], progress=False)
    # One scale either way is scored: 0-255 floats on both sides, and the bytes on both.
    assert np.isfinite(streaming.log_likelihood(points.astype(np.float32), bank[:500].astype(np.float32), [50.0],
                                                progress=False)).all()
    np.testing.assert_array_equal(streaming.log_likelihood(points, bank[:500], [0.5], progress=False),
                                  streaming.log_likelihood(points / np.float32(255), bank[:500] / np.float32(255),
                                                           [0.5], progress=False))
    # A bank of its own scale beside points that happen to lie in [0, 1] is scored as given, as parzen scores it.
    own = rng.random((200, 16)) * 1.5
    np.testing.assert_allclose(streaming.log_likelihood(points / 255.0, own, [0.3], progress=False),
                               parzen.log_likelihood(points / 255.0, own, [0.3]), rtol=0, atol=1e-9)


def test_evaluate_streams_a_bank_on_disk_and_takes_the_streaming_options(tmp_path, rng):
    """evaluate('bank.npy', ...) said "bank has dtype object" and chunk_rows= or progress= raised a TypeError
    with the default scorer: they now stream, as scorer=streaming.log_likelihood does, to the same score."""
    bank, valid, test = (rng.random(shape).astype(np.float32) for shape in ((300, 20), (50, 20), (60, 20)))
    np.save(tmp_path / "bank.npy", bank)
    expected = protocol.evaluate(bank, valid, test, "full", scorer=streaming.log_likelihood, progress=False)
    for bank_given, options in ((tmp_path / "bank.npy", {}), (str(tmp_path / "bank.npy"), {"progress": False}),
                                (bank, {"chunk_rows": 10**6})):
        result = protocol.evaluate(bank_given, valid, test, "full", **options)
        assert (result.sigma, result.mean, result.valid_means) == (expected.sigma, expected.mean, expected.valid_means)
    for bank_given, options, message in ((tmp_path / "bank.npy", {}, "scores arrays, not a bank on disk"),
                                         (bank, {"chunk_rows": 100}, "chunk_rows is an option of streaming")):
        with pytest.raises(GanbenchError, match=message):
            protocol.evaluate(bank_given, valid, test, sigma=0.5, scorer=parzen.log_likelihood, **options)


def test_a_chunk_larger_than_the_bank_is_the_bank(rng, monkeypatch):
    """--chunk-rows 2^63 under torchrun overflowed the ranks' int64 fingerprint (an OverflowError traceback)."""
    seen = []
    monkeypatch.setattr(streaming, "is_distributed", lambda: True)
    monkeypatch.setattr(streaming, "same_inputs_on_every_rank",
                        lambda queries, bank, grid, chunk_rows, options: seen.append(chunk_rows))
    monkeypatch.setattr(streaming, "rank_rows", lambda count, chunk_rows: range(count))
    monkeypatch.setattr(streaming, "all_merge", lambda local, grid, n_queries: local)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    points, bank = rng.random((4, 3)), rng.random((9, 3))
    scores = streaming.log_likelihood(points, bank, [0.5], chunk_rows=2**63, progress=False)
    assert seen == [9]
    np.testing.assert_allclose(scores, parzen.log_likelihood(points, bank, [0.5]), rtol=0, atol=1e-12)


def test_a_notice_of_a_rank_other_than_0_names_its_rank(monkeypatch, capsys):
    """Every rank printed the same rescoring notice under torchrun, with nothing to tell them apart; a notice can
    come from one rank's share of the bank alone, so each is kept and a rank past 0 names itself."""
    from ganbench import progress

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(progress, "_ANNOUNCED", set())
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    progress.announce_once("ganbench: a notice")
    progress.announce_once("ganbench: a notice")
    assert capsys.readouterr().err == "ganbench (rank 1): a notice\n"
    monkeypatch.setattr(progress, "_ANNOUNCED", set())
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    progress.announce_once("ganbench: a notice")
    assert capsys.readouterr().err == "ganbench: a notice\n"


def test_a_mixed_banks_scale_check_holds_one_shard_at_a_time(tmp_path, rng):
    """The check of a bank mixing uint8 and float shards read the head of every shard at once (120 shards of
    1,000 rows: 358 MB, the whole bank); it now keeps each shard's magnitude only."""
    import tracemalloc

    for index in range(40):
        rows = rng.integers(0, 256, (500, 200))
        np.save(tmp_path / f"s{index:02d}.npy", rows.astype(np.uint8) if index % 2 else (rows / 255).astype(np.float32))
    bank = banks.open_bank(tmp_path)
    shard_bytes = 500 * 200 * 4  # one shard's head as float32
    tracemalloc.start()
    try:
        magnitudes = bank.mixed_shard_magnitudes(500)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(magnitudes) == 40 and all(isinstance(value, float) for value in magnitudes.values())
    # One head's magnitude makes a few float64 temporaries (~9 heads' bytes at most); every head held at once
    # was 40 heads beside those.
    assert peak < 20 * shard_bytes, peak
    # One scale (a / 255 both ways): scored, as before.
    assert np.isfinite(streaming.log_likelihood(rng.random((3, 200)), tmp_path, [0.5], progress=False)).all()


@pytest.mark.parametrize("name, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_rank_waiting_for_the_others_stops_at_once(name, status):
    """Blocked inside gloo (joining the group, a barrier), a rank ran no Python signal handler: Ctrl-C did nothing
    and torchrun's SIGTERM was ignored until the timeout or a SIGKILL 30 s later. Here handlers that return stand
    in for a wait Python cannot interrupt: left to them, the script would sleep its minute and exit 0; the rank must
    stop with the signal's status and one line."""
    script = ("import os, signal, time\n"
              "from ganbench.scoring.streaming import stoppable_wait\n"
              "signal.signal(signal.SIGINT, lambda *args: None)\n"
              "signal.signal(signal.SIGTERM, lambda *args: None)\n"
              "with stoppable_wait():\n"
              f"    os.kill(os.getpid(), signal.{name})\n"
              "    time.sleep(60)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == status, done.stderr
    assert done.stderr.strip().endswith("while waiting for the other ranks; nothing was written")
