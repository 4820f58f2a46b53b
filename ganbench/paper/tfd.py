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
IMAGE_SHAPE = (48, 48)
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
    except NotImplementedError:  # scipy reads MATLAB files up to v7; v7.3 ones are HDF5
        raise GanbenchError(f"{path} is a MATLAB v7.3 (HDF5) file, which ganbench does not read; save it as v7 "
                            "(in MATLAB: save('TFD_48x48.mat', 'images', 'folds', '-v7'))") from None
    except (ValueError, OSError, TypeError, scipy.io.matlab.MatReadError) as error:
        raise GanbenchError(f"{path} is not a readable .mat file ({error}); supply TFD_48x48.mat") from None
    if "images" not in contents or "folds" not in contents:
        raise GanbenchError(f"{path} lacks 'images' or 'folds'; supply TFD_48x48.mat")
    images, folds = np.asarray(contents["images"]), np.asarray(contents["folds"])
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or folds.shape != (len(images), FOLDS):
        raise GanbenchError(f"{path}: images {images.shape} and folds {folds.shape} do not match TFD's layout "
                            "((N, 48, 48) and (N, 5))")
    known = np.isin(folds, (0, *SET_CODES.values()))
    if not known.all():  # NaN or other codes were dropped from every set, silently
        row, fold = np.argwhere(~known)[0]
        raise GanbenchError(f"{path}: folds holds {folds[row, fold].item()!r} (image {row}, fold {fold + 1}); TFD's "
                            "codes are 0 (unlabelled), 1 (train), 2 (valid) and 3 (test)")
    if not len(images):
        raise GanbenchError(f"{path} holds no images; supply TFD_48x48.mat")
    # TFD's pixels are bytes, divided by 255 here as MNIST's are: values on another scale (already in [0, 1],
    # negative, past 255) or of another kind would be scored silently wrong.
    if images.dtype.kind not in "uif" or not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 255 \
            or not np.array_equal(images, np.round(images)):
        found = f" in {_value_range(images)}" if images.dtype.kind in "uif" else ""
        raise GanbenchError(f"{path}: images must be whole pixel values 0..255 (uint8, as TFD_48x48.mat holds them), "
                            f"got {images.dtype} values{found}")
    from ganbench.paper.memorization import RowSet  # exact row membership (late: it loads the scorer)

    pixels = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    result = []
    for fold in range(FOLDS):
        parts = {name: pixels[folds[:, fold] == code] for name, code in SET_CODES.items()}
        sizes = {name: len(part) for name, part in parts.items()}
        if sizes["train"] < 1 or sizes["valid"] < 1 or sizes["test"] < 2:
            # Found here, before Table 1's other rows run (a 1-image test set failed after them, naming no file).
            raise GanbenchError(f"{path}: fold {fold + 1} has {sizes['train']} train, {sizes['valid']} valid and "
                                f"{sizes['test']} test images; each fold needs train and valid images and at least 2 "
                                "test images (a mean and its standard error)")
        if RowSet(parts["train"], parts["train"].dtype).holds(parts["valid"]).all():
            raise GanbenchError(f"{path}: every valid image of fold {fold + 1} is also one of its train images, so no "
                                "sigma can be chosen on them; supply TFD_48x48.mat")
        result.append(TFDFold(**parts))
    return result


def _value_range(images: np.ndarray) -> str:
    finite = images[np.isfinite(images)]
    nonfinite = " and NaN or inf" if finite.size < images.size else ""
    return (f"[{finite.min():g}, {finite.max():g}]" if finite.size else "nothing finite") + nonfinite
