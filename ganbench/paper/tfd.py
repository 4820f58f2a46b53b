"""The Toronto Face Database file (TFD_48x48.mat), which users must supply themselves.

Layout (as pylearn2's TFD loader reads it): ``images`` (N, 48, 48) uint8 and ``folds``
(N, 5) with, per fold, 0 = unlabelled, 1 = train, 2 = valid, 3 = test. Pixels are scaled
to [0, 1] like MNIST's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from ganbench.errors import GanbenchError

FOLDS = 5
SET_CODES = {"train": 1, "valid": 2, "test": 3}


@dataclass(frozen=True)
class TFDFold:
    train: np.ndarray  # (count, 2304) float32 in [0, 1]
    valid: np.ndarray
    test: np.ndarray


def load_tfd(path: str | Path) -> list[TFDFold]:
    path = Path(path)
    if not path.exists():
        raise GanbenchError(f"TFD file {path} does not exist; pass --tfd with the path of TFD_48x48.mat")
    try:
        contents = scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError) as error:
        raise GanbenchError(f"{path} is not a readable .mat file ({error}); supply TFD_48x48.mat") from None
    if "images" not in contents or "folds" not in contents:
        raise GanbenchError(f"{path} lacks 'images' or 'folds'; supply TFD_48x48.mat")
    images, folds = np.asarray(contents["images"]), np.asarray(contents["folds"])
    if images.ndim != 3 or folds.shape != (len(images), FOLDS):
        raise GanbenchError(f"{path}: images {images.shape} and folds {folds.shape} do not match TFD's layout "
                            "((N, 48, 48) and (N, 5))")
    if not len(images):
        raise GanbenchError(f"{path} holds no images; supply TFD_48x48.mat")
    # TFD's pixels are bytes, divided by 255 here as MNIST's are: values on another scale (already in [0, 1],
    # negative, past 255) or of another kind would be scored silently wrong.
    if images.dtype.kind not in "uif" or not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 255 \
            or not np.array_equal(images, np.round(images)):
        found = f" in {_value_range(images)}" if images.dtype.kind in "uif" else ""
        raise GanbenchError(f"{path}: images must be whole pixel values 0..255 (uint8, as TFD_48x48.mat holds them), "
                            f"got {images.dtype} values{found}")
    pixels = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    result = []
    for fold in range(FOLDS):
        parts = {name: pixels[folds[:, fold] == code] for name, code in SET_CODES.items()}
        if any(len(part) == 0 for part in parts.values()):
            raise GanbenchError(f"{path}: fold {fold + 1} has an empty train, valid or test set")
        result.append(TFDFold(**parts))
    return result


def _value_range(images: np.ndarray) -> str:
    finite = images[np.isfinite(images)]
    nonfinite = " and NaN or inf" if finite.size < images.size else ""
    return (f"[{finite.min():g}, {finite.max():g}]" if finite.size else "nothing finite") + nonfinite
