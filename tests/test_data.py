"""MNIST loading: splits as the paper's code, exact byte/255 values, every source verified."""
import gzip
import shutil

import numpy as np
import pytest

from ganbench import data
from ganbench.errors import GanbenchError


def test_splits_values_and_labels(mnist):
    assert mnist.train_x.shape == (50_000, 784) and mnist.valid_x.shape == (10_000, 784)
    assert mnist.test_x.shape == (10_000, 784)
    for split in data.SPLITS:
        images, labels = mnist.split(split)
        assert images.dtype == np.float32 and labels.dtype == np.int64
        as_bytes = images.astype(np.float64) * 255.0
        # byte / 255 in float32 times 255 lands within float32 rounding of an integer.
        assert np.abs(as_bytes - np.rint(as_bytes)).max() < 1e-4
        np.testing.assert_array_equal(images, (np.rint(as_bytes).astype(np.uint8).astype(np.float32) / 255.0))
        assert set(np.unique(labels)) == set(range(10))
    assert mnist.train_x.max() == 1.0 and mnist.train_x.min() == 0.0


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload, compresslevel=1))
    else:
        path.write_bytes(payload)


@pytest.fixture
def idx_folder(mnist, tmp_path):
    def as_bytes(images):
        return np.rint(images.astype(np.float64) * 255).astype(np.uint8)

    train = np.concatenate([as_bytes(mnist.train_x), as_bytes(mnist.valid_x)]).reshape(-1, 28, 28)
    write_idx(tmp_path / "train-images-idx3-ubyte", train)  # plain and gzipped files both load
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.concatenate([mnist.train_y, mnist.valid_y]))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", as_bytes(mnist.test_x).reshape(-1, 28, 28))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", mnist.test_y)
    return tmp_path


def test_idx_folder_gives_the_same_splits(mnist, idx_folder):
    loaded = data.load_mnist(idx_folder)
    for split in data.SPLITS:
        np.testing.assert_array_equal(loaded.split(split)[0], mnist.split(split)[0])
        np.testing.assert_array_equal(loaded.split(split)[1], mnist.split(split)[1])


def test_corrupt_gzip_is_reported(idx_folder):
    path = idx_folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(GanbenchError, match="train-labels.*decompress"):
        data.load_mnist(idx_folder)


def test_truncated_idx_file_is_reported(idx_folder):
    path = idx_folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(GanbenchError, match="t10k-images.*truncated"):
        data.load_mnist(idx_folder)


@pytest.mark.parametrize("shape", [(10, 5), (10, 5, 2), (10, 28, 27)])
def test_idx_images_of_another_shape_are_reported(shape, tmp_path):
    """Well-formed IDX files of other images (not 28 x 28) once met a reshape before any check: a ValueError."""
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros(shape, np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(10, np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros(shape, np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(10, np.uint8))
    with pytest.raises(GanbenchError, match="train-images-idx3-ubyte holds images of shape .* not MNIST's 28 x 28"):
        data.load_mnist(tmp_path)


def test_altered_idx_pixel_fails_the_checksum(idx_folder):
    path = idx_folder / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[5000] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(GanbenchError, match="checksum"):
        data.load_mnist(idx_folder)


def cached_copy(tmp_path):
    source = data.default_cache_dir() / data.CACHE_NAME
    target = tmp_path / data.CACHE_NAME
    shutil.copy(source, target)
    return target


def test_truncated_cache_is_reported_with_the_fix(mnist, tmp_path):
    cache = cached_copy(tmp_path)
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    with pytest.raises(GanbenchError, match=f"delete {cache}"):
        data.load_mnist(cache_dir=tmp_path, fetch=False)


def test_tampered_cache_fails_the_checksum(mnist, tmp_path):
    cache = cached_copy(tmp_path)
    with np.load(cache) as archive:
        arrays = dict(archive)
    arrays["test_labels"][0] = (arrays["test_labels"][0] + 1) % 10
    with open(cache, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    with pytest.raises(GanbenchError, match="checksum"):
        data.load_mnist(cache_dir=tmp_path, fetch=False)


def test_pickle_with_the_wrong_digest_is_never_unpickled(tmp_path):
    (tmp_path / "mnist.pkl.gz").write_bytes(gzip.compress(b"not the pinned file"))
    with pytest.raises(GanbenchError, match="SHA-256"):
        data.load_mnist(tmp_path)


def test_missing_sources_are_clear_errors(tmp_path):
    with pytest.raises(GanbenchError, match="does not exist"):
        data.load_mnist(tmp_path / "nowhere")
    with pytest.raises(GanbenchError, match="neither"):
        data.load_mnist(tmp_path)
    with pytest.raises(GanbenchError, match="not cached"):
        data.load_mnist(cache_dir=tmp_path, fetch=False)
