"""The user cache of computed arrays: entries keyed by their inputs, kept within a size limit."""
import os

import numpy as np
import pytest

from ganbench import cache
from ganbench.errors import GanbenchError

MB = 2**20


def entry(folder, prefix: str, key: str, megabytes: float, age_s: float):
    """A cache entry written ``age_s`` seconds ago (its last use), of about ``megabytes``."""
    path = folder / f"{prefix}-{key * 24}.npy"
    np.save(path, np.zeros(int(megabytes * MB) // 4, dtype=np.float32))
    os.utime(path, (path.stat().st_atime - age_s, path.stat().st_mtime - age_s))
    return path


def test_a_write_over_the_limit_removes_the_entries_used_longest_ago(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE_LIMIT_MB", "2.5")
    oldest, older = entry(tmp_path, "bank-dbn-samples", "a", 1, 300), entry(tmp_path, "kmeans", "b", 1, 200)
    mnist, other = tmp_path / "mnist-uint8-v1.npz", tmp_path / "notes.npy"  # not entries: never counted or removed
    mnist.write_bytes(b"0" * 3 * MB)
    np.save(other, np.zeros(MB // 4, dtype=np.float32))
    array, _ = cache.cached_array("bank-gan-samples", {"seed": 0}, (MB // 4,),
                                  lambda: np.ones(MB // 4, dtype=np.float32), cache_dir=tmp_path)
    assert array.shape == (MB // 4,)
    assert not oldest.exists() and older.exists() and mnist.exists() and other.exists()
    assert len(list(tmp_path.glob("bank-gan-samples-*.npy"))) == 1  # the new entry stays


def test_a_read_marks_the_entry_as_used(tmp_path, monkeypatch):
    """An entry read recently outlives one written more recently but not read since."""
    monkeypatch.setenv("GANBENCH_CACHE_LIMIT_MB", "1000")
    compute = lambda: np.ones(MB // 4, dtype=np.float32)  # noqa: E731
    cache.cached_array("bank-cae-samples", {"seed": 0}, (MB // 4,), compute, cache_dir=tmp_path)
    (read,) = tmp_path.glob("bank-cae-samples-*.npy")
    os.utime(read, (read.stat().st_atime - 500, read.stat().st_mtime - 500))
    unread = entry(tmp_path, "bank-gsn-samples", "c", 1, 100)
    cache.cached_array("bank-cae-samples", {"seed": 0}, (MB // 4,), compute, cache_dir=tmp_path)  # a hit
    monkeypatch.setenv("GANBENCH_CACHE_LIMIT_MB", "1.5")
    assert cache.prune(tmp_path) == [unread] and read.exists()


@pytest.mark.parametrize("value", ["lots", "nan", "-5", "5MB"])
def test_a_limit_that_is_not_a_size_is_refused(value, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE_LIMIT_MB", value)
    with pytest.raises(GanbenchError, match="GANBENCH_CACHE_LIMIT_MB must be a number of megabytes >= 0"):
        cache.limit_bytes()


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_limit_is_unset_as_an_empty_cache_folder_is(value, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE_LIMIT_MB", value)
    assert cache.limit_bytes() == cache.DEFAULT_LIMIT_MB * 2**20


def test_a_cache_that_is_a_file_is_named_as_such(tmp_path, capsys):
    """The warning read "cannot write .../afile/held-out-nearest-....npy: File exists"."""
    (tmp_path / "afile").write_text("")
    array, _ = cache.cached_array("kmeans", {"a": 1}, (2,), lambda: np.zeros(2), tmp_path / "afile")
    assert not array.any()
    assert f"not cached (the cache folder {tmp_path / 'afile'} is a file" in capsys.readouterr().err


def test_an_infinite_limit_removes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE_LIMIT_MB", "inf")
    kept = entry(tmp_path, "kmeans", "d", 1, 1000)
    assert cache.prune(tmp_path) == [] and kept.exists()


def test_an_entry_in_a_cache_that_cannot_be_touched_is_still_read(tmp_path, monkeypatch, capsys):
    """A cache the user may only read: the entry's time cannot be updated, and the array is good."""
    compute = lambda: np.ones(8, dtype=np.float32)  # noqa: E731
    cache.cached_array("kmeans", {"seed": 1}, (8,), compute, cache_dir=tmp_path)

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "utime", refused)
    array, _ = cache.cached_array("kmeans", {"seed": 1}, (8,), lambda: pytest.fail("recomputed"), cache_dir=tmp_path)
    assert array.sum() == 8 and "damaged" not in capsys.readouterr().err


def test_an_empty_cache_variable_means_the_default_folder(monkeypatch, tmp_path):
    """GANBENCH_CACHE="" (as `export GANBENCH_CACHE=` leaves it) once put the cache, and the compiled CPU pass, in the
    working directory."""
    from ganbench.data import default_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GANBENCH_CACHE", "")
    assert default_cache_dir() == tmp_path / ".cache" / "ganbench"
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_an_entry_altered_into_another_valid_array_is_recomputed(tmp_path, capsys):
    """A finite array of the right shape is not enough: the entry's bytes must be those written."""
    compute = lambda: np.arange(8, dtype=np.float32)  # noqa: E731
    cache.cached_array("held-out-nearest", {"seed": 2}, (8,), compute, cache_dir=tmp_path)
    (written,) = tmp_path.glob("held-out-nearest-*.npy")
    assert cache.checksum_path(written).exists()
    np.save(written, np.full(8, 7.0, dtype=np.float32))  # plausible, finite, the right shape
    array, _ = cache.cached_array("held-out-nearest", {"seed": 2}, (8,), compute, cache_dir=tmp_path)
    assert np.array_equal(array, np.arange(8)) and "damaged or without its checksum" in capsys.readouterr().err
    again, _ = cache.cached_array("held-out-nearest", {"seed": 2}, (8,), lambda: pytest.fail("recomputed"),
                                  cache_dir=tmp_path)
    assert np.array_equal(again, np.arange(8))  # the rewritten entry and its checksum agree


@pytest.mark.parametrize("damage", ["no checksum", "truncated"])
def test_an_entry_without_its_checksum_or_cut_short_is_recomputed(tmp_path, capsys, damage):
    compute = lambda: np.ones(64, dtype=np.float32)  # noqa: E731
    cache.cached_array("kmeans", {"seed": 3}, (64,), compute, cache_dir=tmp_path)
    (written,) = tmp_path.glob("kmeans-*.npy")
    if damage == "no checksum":
        cache.checksum_path(written).unlink()
    else:
        written.write_bytes(written.read_bytes()[:-16])
    array, _ = cache.cached_array("kmeans", {"seed": 3}, (64,), compute, cache_dir=tmp_path)
    assert array.sum() == 64 and "recomputing cache entry" in capsys.readouterr().err


def test_pruning_an_entry_removes_its_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE_LIMIT_MB", "1000")
    cache.cached_array("bank-dbn-samples", {"seed": 0}, (MB // 4,), lambda: np.ones(MB // 4, dtype=np.float32),
                       cache_dir=tmp_path)
    (written,) = tmp_path.glob("bank-dbn-samples-*.npy")
    monkeypatch.setenv("GANBENCH_CACHE_LIMIT_MB", "0")
    assert cache.prune(tmp_path) == [written]
    assert not written.exists() and not cache.checksum_path(written).exists()
