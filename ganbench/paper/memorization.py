"""Did the model memorise its training set? (the paper's Figure 2, made a measurement)

The natural yardstick for "close to a training image" is how close *unseen real* images
are: the report compares each generated sample's distance to its nearest training image
with each held-out test image's distance to its nearest training image.
"""
from __future__ import annotations

import numpy as np

from ganbench import cache
from ganbench import defaults as keys
from ganbench.errors import GanbenchError
from ganbench.scoring.inputs import (
    as_data,
    as_matrix,
    as_real_array,
    check_same_scale,
    is_whole_number,
    narrowest_float_dtype,
)
from ganbench.scoring.neighbours import nearest

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# A sample "copies" when it is closer to a training image than 99% of unseen real images are.
COPY_QUANTILE = 0.01


def quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"q{int(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES}


def report(samples, train, test, *, suspicious: int = 10, backend: str = "auto", device=None,
           precision=None) -> dict:
    """Sample-to-train vs test-to-train nearest distances, copies of training images, duplicates, suspects.

    Every count is a number of samples. Distances are exact float64 squared distances to the
    exact nearest neighbour (``nearest(..., exact_ranking=True)``), so "identical" means
    distance 0, i.e. the same vector, with no threshold:
    - samples_identical_to_a_training_image: samples equal to some training image (every identity here is
      judged at the narrowest float dtype of the three sets, ``identity_dtype``: float64 samples a / 255 equal
      MNIST's float32 a / 255 at float32's; ``precision`` names another float dtype, as `ganbench nn` passes
      float16 for a float16 file it reads as float32);
    - samples_near_a_training_image: samples at least as close to a training image as the
      closest of the held-out images is (near_copy_threshold, the minimum test-to-train
      distance); a sample distributed like unseen data lands there with probability
      1 / (n_test + 1), hence expected_samples_near_a_training_image_for_unseen_data;
    - copy_rate: the share of samples closer to a training image than 99% of held-out images
      are (copy_threshold, the 1% quantile); unseen data gives 0.01;
    - held_out_identical_to_a_training_image: held-out points equal to a training point (data leaked
      between the splits), left out of both thresholds' calibration: they are not unseen data, and 1% of
      them would put the copy threshold at 0, where no sample can fall below it;
    - samples_with_an_identical_sample: samples that have an identical twin among the other
      samples (200 samples copied once each give 400, not 200);
    - samples_with_a_near_sample: samples whose nearest other sample is closer than
      copy_threshold (identical ones included).
    """
    # On the data's scale as the scorer takes them (uint8 divided by 255; tensors leave autograd and the device),
    # and on one scale: copies of 8-bit training images scored as bytes against their [0, 1] floats counted none.
    samples, train, test = (as_data(role, as_real_array(role, values)) for role, values in
                            (("samples", samples), ("the training data", train), ("held-out data", test)))
    check_same_scale({"the samples": samples, "the training data": train, "the held-out data": test})
    # One-line errors before any search: the samples against the training data first, then the held-out data
    # (``held_out_distances`` checks them before its own search).
    width = as_matrix("the training data", train, check_finite=False).shape[1]
    sample_rows = as_matrix("samples", samples, dimension=width, dimension_of="the training data")
    precision = None if precision is None else float_dtype(precision)
    if not is_whole_number(suspicious) or suspicious < 0:
        raise GanbenchError(f"suspicious is the number of closest samples to list: a whole number >= 0, got {suspicious!r}")
    if len(sample_rows) < 2:
        raise GanbenchError("the memorisation report compares each sample with its nearest other sample: "
                            "pass at least 2 samples")
    test_distances = held_out_distances(train, test, backend=backend, device=device)
    sample_distances, sample_nearest = nearest(samples, train, backend=backend, device=device, exact_ranking=True,
                                               names=("samples", "the training data"))
    sample_distances, sample_nearest = sample_distances[:, 0], sample_nearest[:, 0]
    # Identity at the precision the data carry: every comparison at the narrowest float dtype of the three.
    precision = identity_dtype(samples, train, test) if precision is None else precision
    train_rows = RowSet(train, precision)
    leaked = train_rows.holds(test)  # distance 0 in float64 is equality at any narrower dtype too
    if leaked.all():
        raise GanbenchError(f"every held-out point ({len(test_distances)}) is also a training point: the copy rate is "
                            "calibrated on data the model never saw; pass held-out data apart from the training data")
    identical = train_rows.holds(samples)
    for role, distances, equal in (("held-out points", test_distances, leaked), ("samples", sample_distances, identical)):
        check_distances_resolve(role, distances, equal)
    unseen = test_distances[~leaked]
    copy_threshold = float(np.quantile(unseen, COPY_QUANTILE))
    near_copy_threshold = float(unseen.min())
    # The nearest *other* sample: the sample itself is at distance exactly 0, so it is one of
    # the two nearest (the second when an identical twin has a lower index).
    within = nearest(samples, samples, k=2, backend=backend, device=device, names=("samples", "the samples"))[0][:, 1]
    order = np.argsort(sample_distances, kind="stable")[:suspicious]
    return {
        keys.KEY_N_SAMPLES: int(len(sample_distances)),
        keys.KEY_N_TEST: int(len(test_distances)),
        keys.KEY_SAMPLE_TO_TRAIN: quantiles(sample_distances),
        keys.KEY_TEST_TO_TRAIN: quantiles(test_distances),
        keys.KEY_COPY_THRESHOLD: copy_threshold,
        keys.KEY_COPY_RATE: float(np.mean(sample_distances < copy_threshold)),
        keys.KEY_EXPECTED_COPY_RATE: COPY_QUANTILE,
        keys.KEY_EXACT_TRAINING_COPIES: int(np.sum(identical)),
        keys.KEY_NEAR_COPY_THRESHOLD: near_copy_threshold,
        keys.KEY_NEAR_TRAINING_COPIES: int(np.sum(sample_distances <= near_copy_threshold)),
        keys.KEY_EXPECTED_NEAR_TRAINING_COPIES: len(sample_distances) / (len(unseen) + 1),
        keys.KEY_HELD_OUT_IN_TRAINING: int(np.sum(leaked)),
        keys.KEY_SAMPLES_WITH_EXACT_TWIN: int(np.sum(RowSet(samples, precision).repeated())),
        keys.KEY_SAMPLES_WITH_NEAR_TWIN: int(np.sum(within < copy_threshold)),
        keys.KEY_WITHIN_SAMPLES_NEAREST: quantiles(within),
        keys.KEY_MOST_SUSPICIOUS: [{"sample": int(i), "train_index": int(sample_nearest[i]),
                                    "sq_distance": float(sample_distances[i])} for i in order],
        "_sample_distances": sample_distances,
        "_test_distances": test_distances,
        "_sample_nearest": sample_nearest,
    }


def identity_dtype(*arrays: np.ndarray) -> np.dtype:
    """The dtype at which points count as identical: the narrowest float dtype among the arrays (float64 when
    none is float). A float64 file of a / 255 holds MNIST's images exactly as its float32 a / 255 does, 1e-15
    apart in float64: the same images at the precision the float32 side carries."""
    return narrowest_float_dtype(array.dtype for array in arrays) or np.dtype(np.float64)


def check_distances_resolve(role: str, distances: np.ndarray, identical: np.ndarray) -> None:
    """A one-line error when points that differ from their nearest training point lie below float64's normal
    range from it (2.2e-308; data below ~1e-154 square to that): their distances read 0 or lose their digits,
    and thresholds calibrated on them would count the wrong samples as copies."""
    unresolved = (distances < np.finfo(np.float64).tiny) & ~identical
    if unresolved.any():
        raise GanbenchError(f"{int(unresolved.sum())} {role} differ from their nearest training point by a squared "
                            "distance below float64's normal range (2.2e-308): multiply every data set by one factor "
                            "(the counts stay the same; distances scale by its square)")


def float_dtype(precision) -> np.dtype:
    """``precision`` as a NumPy float dtype, or a one-line error."""
    try:
        dtype = np.dtype(precision)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind != "f" or dtype.itemsize > 8:  # long double: padding bytes, and data are float64
        raise GanbenchError(f"precision is the float dtype at which points count as identical (float16, float32 or "
                            f"float64), got {precision!r}")
    return dtype


HASH_ROWS = 4096  # rows hashed at once (their 64-bit words, a few MB)


def _row_hashes(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes: equal rows hash equal (matches are then compared byte for byte)."""
    data = np.ascontiguousarray(rows).reshape(len(rows), -1).view(np.uint8)
    padding = -data.shape[1] % 8
    if padding:
        data = np.concatenate([data, np.zeros((len(data), padding), dtype=np.uint8)], axis=1)
    words = data.view(np.uint64)
    weights = np.random.default_rng(0).integers(1, 2**63, size=words.shape[1], dtype=np.uint64) | np.uint64(1)
    hashes = np.empty(len(words), dtype=np.uint64)
    with np.errstate(over="ignore"):  # multiplication and sums modulo 2^64
        for first in range(0, len(words), HASH_ROWS):
            hashes[first:first + HASH_ROWS] = (words[first:first + HASH_ROWS] * weights).sum(axis=1, dtype=np.uint64)
    return hashes


class RowSet:
    """Rows rounded to one dtype, for exact membership: which points equal one of them, which of them repeat.

    Exact by construction (equal bytes, -0.0 and 0.0 aside, which round alike), and independent of any nearest
    neighbour: a row equal to a training point at this precision need not be its nearest in float64."""

    def __init__(self, rows: np.ndarray, dtype: np.dtype):
        self.dtype = dtype
        self.rows = self._rounded(rows)
        self.hashes = _row_hashes(self.rows)
        self.order = np.argsort(self.hashes, kind="stable")
        self.sorted_hashes = self.hashes[self.order]

    def holds(self, points: np.ndarray) -> np.ndarray:
        """Per point, whether it equals one of the rows once rounded to their dtype."""
        points = self._rounded(points)
        hashes = _row_hashes(points)
        first = np.searchsorted(self.sorted_hashes, hashes, side="left")
        last = np.searchsorted(self.sorted_hashes, hashes, side="right")
        found = np.zeros(len(points), dtype=bool)
        for index in np.flatnonzero(last > first):
            # Rows of one hash are equal rows but for a 2^-64 chance: the first equal one ends the search.
            found[index] = any(np.array_equal(self.rows[row], points[index])
                               for row in self.order[first[index]:last[index]])
        return found

    def _rounded(self, rows: np.ndarray) -> np.ndarray:
        """Rows as contiguous vectors of this set's dtype; adding zero turns -0.0 into 0.0, which compare equal."""
        return np.ascontiguousarray(np.asarray(rows).reshape(len(rows), -1).astype(self.dtype) + self.dtype.type(0))

    def repeated(self) -> np.ndarray:
        """Per row, whether another row equals it."""
        repeated = np.zeros(len(self.rows), dtype=bool)
        counts = np.unique(self.sorted_hashes, return_counts=True)
        for value in counts[0][counts[1] > 1]:
            members = self.order[np.searchsorted(self.sorted_hashes, value):np.searchsorted(self.sorted_hashes, value,
                                                                                              side="right")]
            _, inverse, counts = np.unique(self.rows[members], axis=0, return_inverse=True, return_counts=True)
            repeated[members] = counts[inverse.reshape(-1)] > 1
        return repeated


# Bump when the held-out distances are computed differently, so old cache entries are not reused.
HELD_OUT_VERSION = 1


def held_out_distances(train, test, *, backend: str = "auto", device=None) -> np.ndarray:
    """Each held-out image's exact squared distance to its nearest training image: the copy rate's
    calibration, the same for every sample bank scored against these data (MNIST's 10,000 test images
    against its 50,000 training images: most of a `ganbench nn` call), so it is kept in the user cache,
    keyed by the exact bytes of both arrays. The distances are exact float64 ones (``exact_ranking``),
    the same whichever backend or device computed them."""
    train, test = held_out_inputs(as_real_array("the training data", train), as_real_array("held-out data", test))

    def compute() -> np.ndarray:
        distances, _ = nearest(test, train, backend=backend, device=device, exact_ranking=True,
                               names=("held-out data", "the training data"))
        return distances[:, 0]

    key = {"train": cache.exact_digest(train), "test": cache.exact_digest(test), "version": HELD_OUT_VERSION}
    distances, _ = cache.cached_array("held-out-nearest", key, (len(test),), compute)
    return distances


def held_out_inputs(train, test) -> tuple[np.ndarray, np.ndarray]:
    """The training and held-out data as arrays (their bytes key the cache), or a one-line error for
    either being empty, not 2-D, NaN or inf, or of another dimension than the other."""
    width = as_matrix("the training data", train).shape[1]
    as_matrix("held-out data", test, dimension=width, dimension_of="the training data")
    return np.asarray(train), np.asarray(test)


def public(report_dict: dict) -> dict:
    """The report without its raw arrays (keys starting with '_'), for JSON."""
    return {key: value for key, value in report_dict.items() if not key.startswith("_")}
