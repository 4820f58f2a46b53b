"""Nearest neighbours and the memorisation report."""
import json

import numpy as np
import pytest
from tolerances import float32_distance_bound

from ganbench.cli import main
from ganbench.defaults import (
    KEY_COPY_RATE,
    KEY_COPY_THRESHOLD,
    KEY_EXACT_TRAINING_COPIES,
    KEY_EXPECTED_NEAR_TRAINING_COPIES,
    KEY_HELD_OUT_IN_TRAINING,
    KEY_NEAR_COPY_THRESHOLD,
    KEY_NEAR_TRAINING_COPIES,
    KEY_SAMPLES_WITH_EXACT_TWIN,
    KEY_SAMPLES_WITH_NEAR_TWIN,
)
from ganbench.errors import GanbenchError
from ganbench.paper import memorization
from ganbench.scoring import neighbours


def brute_force(queries, reference, k):
    distances = ((queries[:, None, :].astype(np.float64) - reference[None].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, 1), order


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_nearest_matches_float64_brute_force_at_odd_sizes(k, backend, rng):
    queries, reference = rng.random((37, 29)), rng.random((83, 29))
    distances, indices = neighbours.nearest(queries, reference, k=k, backend=backend, device="cpu",
                                              query_block=10, reference_block=17)
    expected_d, expected_i = brute_force(queries, reference, k)
    bound = float32_distance_bound(queries, reference, split_tf32x3=backend == "triton")  # the kernel's tf32x3
    assert np.all(np.abs(distances - expected_d) <= bound)
    mismatched = indices != expected_i
    # Any index difference must be a float32 near-tie.
    assert np.all(np.abs(np.take_along_axis(expected_d, np.argsort(expected_d, 1), 1)[mismatched]
                         - distances[mismatched]) <= 2 * bound)


def test_ties_go_to_the_lowest_index(rng):
    reference = rng.random((50, 8))
    reference[[20, 41]] = reference[7]
    # Exact, not a bound: the three rows hold the same bits, each in a full block of 16, and a GEMM
    # computes every output of a full block by the same operations (one SIMD lane each), so they
    # get the same distance and the stable sort keeps them in index order.
    distances, indices = neighbours.nearest(reference[[7]], reference, k=3, backend="torch", reference_block=16)
    np.testing.assert_array_equal(indices[0], [7, 20, 41])


@pytest.mark.parametrize("backend", ["torch", "triton", "reference"])
def test_the_default_nearest_is_exact_and_takes_the_lowest_of_tied_indices(backend):
    """Small integers tie exactly: by default the nearest is float64's, the lowest index among ties, where the
    Parzen pass's float32 choice (exact_ranking=False) may take any of them (here index 8 of 1 and 8)."""
    reference = np.array([[3, 1], [3, 0], [1, 1], [0, 3], [3, 0], [3, 3], [1, 1], [2, 2], [1, 0], [3, 2], [0, 3]],
                         dtype=np.float64)
    queries = np.array([[2.0, 0.0], [1.0, 2.0], [3.0, 1.5]])
    distances, indices = neighbours.nearest(queries, reference, backend=backend, device="cpu")
    expected_d, expected_i = brute_force(queries, reference, 1)
    np.testing.assert_array_equal(indices, expected_i)
    np.testing.assert_array_equal(distances, expected_d)
    assert indices[:, 0].tolist() == [1, 2, 0]


def test_a_planted_copy_is_found_and_counted(mnist):
    samples = mnist.valid_x[:300].copy()
    samples[123] = mnist.train_x[4567]  # a memorised training image
    report = memorization.report(samples, mnist.train_x[:5000], mnist.test_x[:500], backend="torch")
    assert report["most_suspicious"][0] == {"sample": 123, "train_index": 4567,
                                            "sq_distance": pytest.approx(0.0, abs=1e-3)}
    assert report["copy_rate"] >= 1 / 300
    # Held-out validation images copy no more than unseen test images do (about 1%).
    assert report["copy_rate"] < 0.05


def test_duplicates_within_the_samples_are_counted(rng):
    samples = rng.random((40, 10))
    samples[30] = samples[3]
    report = memorization.report(samples, rng.random((60, 10)), rng.random((50, 10)), backend="torch")
    assert report[KEY_SAMPLES_WITH_EXACT_TWIN] == 2


@pytest.mark.parametrize("scale", [3e19, 1e30, 1e-30])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("k, exact_ranking", [(17, False), (1, True)])
def test_exact_nearest_holds_where_float32_distances_overflow_or_underflow(scale, fused, k, exact_ranking, rng,
                                                                           monkeypatch):
    """Entries past ~1e19 overflow float32's squared distances (the candidates' search returned index 2^63 - 1
    at distance inf for k = 17, and a sample 5 times farther than the nearest with the eager pass); entries of
    1e-30 underflow them. The data are scaled by one power of two for the search, as the Parzen pass does."""
    from ganbench.scoring import fused_rows

    if not fused:
        monkeypatch.setattr(fused_rows, "available", lambda: False)
    queries, reference = rng.random((5, 3)) * scale, rng.random((20, 3)) * scale
    distances, indices = neighbours.nearest(queries, reference, k=k, backend="torch", exact_ranking=exact_ranking)
    expected_d, expected_i = brute_force(queries, reference, k)
    np.testing.assert_array_equal(indices, expected_i)
    np.testing.assert_allclose(distances, expected_d, rtol=0, atol=float64_rounding_bound(queries, reference))


def test_exact_nearest_ranks_the_data_as_given_when_it_scales_them(monkeypatch):
    """Scaled by 2^-k in float32, an entry 1e-30 beside 1e30 became a subnormal and the float64 ranking ranked
    other data: a sample 2e-30 away in one coordinate was called identical to the query."""
    from ganbench.scoring import fused_rows

    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(fused_rows, "available", lambda: False)
        queries = np.array([[1e30, 1e-30]], np.float32)
        reference = np.array([[1e30, 3e-30], [1e30, 1e-30]], np.float32)
        distances, indices = neighbours.nearest(queries, reference, k=2, backend="torch", device="cpu")
        expected_d, expected_i = brute_force(queries, reference, 2)
        np.testing.assert_array_equal(indices, expected_i)
        np.testing.assert_array_equal(distances, expected_d)  # 0 and (2e-30 in float32)^2, each exact


def test_exact_nearest_of_data_whose_distances_overflow_float64_is_a_clear_error():
    """An OverflowError traceback (the scaling exponent of an infinite bound) before."""
    with pytest.raises(GanbenchError, match="too large: squared distances between them overflow float64"):
        neighbours.nearest(np.full((2, 4), 1e160), np.full((3, 4), 1e160), k=2)


def test_exact_nearest_holds_beside_a_sample_far_past_float32s_range(rng):
    reference = rng.random((50, 3))
    reference[7] = 1e25  # its float32 squared distance is inf
    queries = rng.random((10, 3))
    for k, exact_ranking in ((1, True), (3, False)):
        _, indices = neighbours.nearest(queries, reference, k=k, backend="torch", exact_ranking=exact_ranking)
        np.testing.assert_array_equal(indices, brute_force(queries, reference, k)[1])


@pytest.mark.parametrize("call, message", [
    (lambda x: neighbours.nearest(x, x, k=2, reference_block=-3), "reference_block must be a positive integer"),
    (lambda x: neighbours.nearest(x, x, k=2, query_block=2.5), "query_block must be a positive integer"),
    (lambda x: memorization.report(x, x, np.zeros((0, 4))), "held-out data is empty"),
    (lambda x: memorization.report(x, x, x[:, :3]), "held-out data has dimension 3"),
    (lambda x: memorization.report(x[:1], x, x), "at least 2 samples"),
])
def test_bad_arguments_of_the_search_and_the_report_are_one_line_errors(call, message, rng):
    """A negative block returned index 2^63 - 1 at distance inf; the others were a ValueError, a TypeError and
    a traceback from hashing an empty array."""
    with pytest.raises(GanbenchError, match=message):
        call(rng.random((6, 4)))


def test_bad_k():
    with pytest.raises(GanbenchError, match="k must be"):
        neighbours.nearest(np.ones((2, 3)), np.ones((4, 3)), k=0)
    with pytest.raises(GanbenchError, match="exceeds"):
        neighbours.nearest(np.ones((2, 3)), np.ones((4, 3)), k=5)


# ---- exact k > 1 and the counts of the report ---------------------------------------------------

def float64_rounding_bound(queries, reference):
    """|sum of d squared differences - exact| <= d 2^-53 sum |terms| (Higham Eq. 3.5) in any
    order, for both the brute force and ganbench's sum: twice that separates the two."""
    largest = ((np.abs(queries).max() + np.abs(reference).max()) ** 2) * queries.shape[1]
    return 2 * queries.shape[1] * 2.0**-53 * largest


@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_k_nearest_equal_float64_brute_force_at_odd_sizes(k, dtype, rng):
    queries, reference = rng.random((37, 29)).astype(dtype), rng.random((83, 29)).astype(dtype)
    distances, indices = neighbours.nearest(queries, reference, k=k, backend="torch", device="cpu",
                                            query_block=10, reference_block=17)
    expected_d, expected_i = brute_force(queries, reference, k)
    np.testing.assert_array_equal(indices, expected_i)
    np.testing.assert_allclose(distances, expected_d, rtol=0, atol=float64_rounding_bound(queries, reference))


def test_k_nearest_ranks_near_ties_that_float32_cannot_resolve(rng):
    """Twenty points at squared distances 1 + 1e-8 (20 - j) from the query, the farthest first:
    1e-8 is far below float32's resolution of these distances (~1e-7 of the norms) and far
    above float64's, so only the float64 ranking gives the brute-force order."""
    dimension = 50
    query = rng.random(dimension) + 3.0
    directions = rng.standard_normal((20, dimension))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = np.sqrt(1 + 1e-8 * (20 - np.arange(20)))
    near = query + radii[:, None] * directions
    far = query + 3.0 * rng.standard_normal((45, dimension))
    reference = np.concatenate([far[:20], near, far[20:]])
    distances, indices = neighbours.nearest(query[None], reference, k=7, backend="torch", device="cpu",
                                            reference_block=13)
    expected_d, expected_i = brute_force(query[None], reference, 7)
    np.testing.assert_array_equal(indices, expected_i)  # the last seven near points, nearest first
    assert list(indices[0]) == list(range(39, 32, -1))
    np.testing.assert_allclose(distances, expected_d, rtol=0, atol=float64_rounding_bound(query[None], reference))


def test_k_nearest_ties_go_to_the_lowest_indices_across_blocks(rng):
    reference = rng.random((90, 12))
    copies = [5, 16, 40, 41, 77, 89]
    reference[copies] = reference[5]
    for query in (reference[5], reference[5] + 1e-3):  # the copy itself, and a point near all six
        distances, indices = neighbours.nearest(query[None], reference, k=4, backend="torch", reference_block=16)
        np.testing.assert_array_equal(indices[0], copies[:4])
        assert len(set(distances[0])) == 1  # identical points: bit-identical float64 distances
    distances, _ = neighbours.nearest(reference[5][None], reference, k=4, backend="torch", reference_block=16)
    assert np.all(distances == 0.0)


def test_identical_samples_are_exact_zeros_even_when_most_are_identical(rng):
    # A generator that collapsed to one image for 300 of its 330 samples.
    samples = np.concatenate([np.tile(rng.random(20), (300, 1)), rng.random((30, 20))])
    distances, indices = neighbours.nearest(samples, samples, k=2, backend="torch", reference_block=64)
    assert np.all(distances[:300] == 0.0)
    np.testing.assert_array_equal(indices[:300], np.tile([0, 1], (300, 1)))


def test_copied_samples_are_counted_as_samples_with_an_identical_twin(mnist):
    samples = np.concatenate([mnist.valid_x[:1800], mnist.valid_x[:200]])  # 200 images, each twice
    report = memorization.report(samples, mnist.train_x[:3000], mnist.test_x[:300], backend="torch")
    assert report[KEY_SAMPLES_WITH_EXACT_TWIN] == 400
    assert report[KEY_SAMPLES_WITH_NEAR_TWIN] >= 400
    assert report[KEY_EXACT_TRAINING_COPIES] == 0


def test_planted_copies_of_training_images_are_counted(mnist):
    samples = mnist.valid_x[:1000].copy()
    planted = [3, 250, 251, 600, 999]
    samples[planted] = mnist.train_x[[10, 20, 30, 40, 2999]]
    report = memorization.report(samples, mnist.train_x[:3000], mnist.test_x[:300], backend="torch")
    assert report[KEY_EXACT_TRAINING_COPIES] == 5
    # The near threshold (the closest any held-out image comes to a training image) holds the
    # five copies, and about 1000 / 301 validation images by chance.
    assert report[KEY_NEAR_COPY_THRESHOLD] == pytest.approx(report["_test_distances"].min())
    assert 5 <= report[KEY_NEAR_TRAINING_COPIES] <= 5 + 15
    assert report[KEY_EXPECTED_NEAR_TRAINING_COPIES] == pytest.approx(1000 / 301)
    assert report[KEY_SAMPLES_WITH_EXACT_TWIN] == 0
    assert sorted(entry["sample"] for entry in report["most_suspicious"][:5]) == planted


def test_nn_text_output_counts_planted_copies_and_twins(tmp_path, capsys):
    rng = np.random.default_rng(3)
    train = rng.random((400, 6)).astype(np.float32)
    samples = rng.random((60, 6)).astype(np.float32)
    samples[:4] = train[[7, 8, 9, 10]]  # four copies of training points
    samples[50:53] = samples[40]         # four samples (40, 50, 51, 52) identical to each other
    for name, values in (("samples", samples), ("train", train), ("test", rng.random((99, 6)).astype(np.float32))):
        np.save(tmp_path / f"{name}.npy", values)
    assert main(["nn", "--samples", str(tmp_path / "samples.npy"), "--train", str(tmp_path / "train.npy"),
                 "--test", str(tmp_path / "test.npy"), "--backend", "torch"]) == 0
    text = capsys.readouterr().out
    assert "samples identical to a training image: 4;" in text
    assert "(unseen data: 0.60)" in text  # 60 samples / (99 + 1) held-out images
    assert "samples with an identical other sample: 4;" in text


def test_held_out_points_leaked_into_the_training_data_leave_the_calibration(tmp_path, capsys):
    """5 of 300 held-out points are training points: calibrated on all, the copy threshold (the 1% quantile)
    was 0 and the training set itself scored a copy rate of 0. They are counted and left out, with a warning."""
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(3000, 20)), rng.normal(size=(300, 20))
    test[:5] = train[:5]
    report = memorization.report(train[:500], train, test, backend="torch")
    assert report[KEY_HELD_OUT_IN_TRAINING] == 5
    assert report[KEY_COPY_THRESHOLD] == np.quantile(report["_test_distances"][5:], 0.01) > 0
    assert report[KEY_COPY_RATE] == 1.0 and report[KEY_EXACT_TRAINING_COPIES] == 500
    assert report[KEY_EXPECTED_NEAR_TRAINING_COPIES] == pytest.approx(500 / 296)
    for name, values in (("train", train), ("test", test), ("samples", train[:500])):
        np.save(tmp_path / f"{name}.npy", values)
    assert main(["nn", "--samples", str(tmp_path / "samples.npy"), "--train", str(tmp_path / "train.npy"),
                 "--test", str(tmp_path / "test.npy"), "--backend", "torch"]) == 0
    err = capsys.readouterr().err
    assert "5 held-out points are also training points" in err and "cannot resolve the 1% quantile" not in err
    np.save(tmp_path / "test.npy", np.concatenate([test[5:95], train[:30]]))  # 120 held out, 90 of them unseen
    assert main(["nn", "--samples", str(tmp_path / "samples.npy"), "--train", str(tmp_path / "train.npy"),
                 "--test", str(tmp_path / "test.npy"), "--backend", "torch"]) == 0
    assert "ganbench: warning: 90 held-out points cannot resolve" in capsys.readouterr().err
    with pytest.raises(GanbenchError, match="every held-out point"):
        memorization.report(train[:500], train, train[:50], backend="torch")


@pytest.mark.parametrize("samples_dtype, train_dtype", [(np.float64, np.float32), (np.float32, np.float64)])
def test_copies_are_identical_whichever_float_dtype_holds_them(samples_dtype, train_dtype, mnist):
    """float64 a / 255 and MNIST's float32 a / 255 are the same images, 1e-15 apart in float64: counted as
    copies, as uint8 files of the same bytes are."""
    bytes_ = np.rint(mnist.train_x[:400].astype(np.float64) * 255)
    samples = (bytes_[:40] / 255).astype(samples_dtype)
    train = (bytes_ / 255).astype(train_dtype)
    report = memorization.report(samples, train, mnist.test_x[:200], backend="torch")
    assert report[KEY_EXACT_TRAINING_COPIES] == 40
    moved = samples.copy()
    moved[:, 300] += 1e-3  # no longer the same image at either precision
    assert memorization.report(moved, train, mnist.test_x[:200], backend="torch")[KEY_EXACT_TRAINING_COPIES] == 0


def test_held_out_distances_are_exact_and_cached_by_the_exact_bytes(rng, tmp_path, monkeypatch):
    """The copy rate's calibration (each held-out row's nearest training row) is computed once per pair of
    arrays and read back after: equal to float64 brute force either way; arrays that differ only below
    float32's resolution are different inputs, never a stale hit."""
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path))
    train, test = rng.random((90, 13)), rng.random((21, 13))
    expected = brute_force(test, train, 1)[0][:, 0]
    first = memorization.held_out_distances(train, test, backend="torch")
    # float64 sums of 13 non-negative squares in another order: within 13 roundings of 2^-53 each, twice.
    np.testing.assert_allclose(first, expected, rtol=2 * 13 * 2.0**-53, atol=0)
    assert len(list(tmp_path.glob("held-out-nearest-*.npy"))) == 1

    def no_recompute(*args, **kwargs):
        raise AssertionError("recomputed a cached calibration")

    monkeypatch.setattr(memorization, "nearest", no_recompute)
    np.testing.assert_array_equal(memorization.held_out_distances(train, test, backend="torch"), first)
    nudged = test.copy()
    nudged[0, 0] += 1e-12   # the same in float32, another input in float64
    with pytest.raises(AssertionError, match="recomputed"):
        memorization.held_out_distances(train, nudged, backend="torch")


def test_identity_is_judged_at_the_narrowest_precision_for_leaks_twins_and_copies(mnist):
    """float64 a / 255 held-out rows leaked from float32 training images were missed (the thresholds fell to
    1e-15); the same image from a uint8 shard and a float64 one were no twins; a float16 sample equal to a
    training image at float16 was missed when another image lay nearer in float64."""
    train = mnist.train_x[:2000]
    exact = np.rint(train.astype(np.float64) * 255) / 255          # float64 a / 255: 1e-15 from float32's
    held_out = np.concatenate([mnist.test_x[:450].astype(np.float64), exact[:50]])
    samples = np.concatenate([mnist.valid_x[:60].astype(np.float64),  # float32 a / 255 widened ...
                              np.rint(mnist.valid_x[:60].astype(np.float64) * 255) / 255])  # ... and exact a / 255
    report = memorization.report(samples, train, held_out, backend="torch")
    assert report[KEY_HELD_OUT_IN_TRAINING] == 50 and report[KEY_COPY_THRESHOLD] > 1.0
    assert report[KEY_SAMPLES_WITH_EXACT_TWIN] == 120
    equal16, nearer = np.full((1, 64), 0.5 + 2e-4, dtype=np.float32), np.full((1, 64), 0.5, dtype=np.float32)
    nearer[0, 0] = 0.5 + 1e-3                             # nearer to the sample in float64, and not equal at float16
    references = np.concatenate([equal16, nearer, np.random.default_rng(0).random((50, 64), dtype=np.float32)])
    samples16 = np.full((2, 64), 0.5, dtype=np.float16)
    samples16[1] += np.float16(0.25)
    assert np.array_equal(equal16[0].astype(np.float16), samples16[0])
    assert ((samples16[0] - nearer[0]) ** 2).sum() < ((samples16[0] - equal16[0]) ** 2).sum()
    report = memorization.report(samples16, references, np.random.default_rng(1).random((30, 64)), backend="torch")
    assert report[KEY_EXACT_TRAINING_COPIES] == 1


def test_nn_judges_a_float16_file_at_float16_as_the_api_judges_float16_arrays(tmp_path, capsys):
    """`ganbench nn` reads every file as float32: a float16 file of training points rounded to float16 held no
    copies at float32 (each a / 255 moves), while the same arrays given to the API counted every one."""
    rng = np.random.default_rng(0)
    train, test = rng.random((300, 20), dtype=np.float32), rng.random((200, 20), dtype=np.float32)
    samples = rng.random((50, 20), dtype=np.float32)
    samples[:7] = train[:7]
    samples16 = samples.astype(np.float16)
    assert not np.array_equal(samples16[:7].astype(np.float32), train[:7])  # not the same at float32
    api = memorization.report(samples16, train, test, backend="torch")[KEY_EXACT_TRAINING_COPIES]
    for name, values in (("samples", samples16), ("train", train), ("test", test)):
        np.save(tmp_path / f"{name}.npy", values)
    assert main(["nn", "--samples", str(tmp_path / "samples.npy"), "--train", str(tmp_path / "train.npy"),
                 "--test", str(tmp_path / "test.npy"), "--backend", "torch", "--json"]) == 0
    assert api == json.loads(capsys.readouterr().out)[KEY_EXACT_TRAINING_COPIES] == 7
    explicit = memorization.report(samples16.astype(np.float32), train, test, backend="torch", precision=np.float16)
    assert explicit[KEY_EXACT_TRAINING_COPIES] == 7


@pytest.mark.parametrize("precision", ["int8", "no-such-dtype", 3, np.longdouble])
def test_a_precision_that_is_no_float_dtype_is_a_one_line_error(precision, rng):
    points = rng.random((20, 4))
    with pytest.raises(GanbenchError, match="float dtype at which points count as identical"):
        memorization.report(points, points, rng.random((9, 4)), precision=precision)
