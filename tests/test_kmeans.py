"""k-means (the Theis et al. sanity row of Table 1) against a plain NumPy Lloyd's algorithm."""
import hashlib

import numpy as np
import pytest

from ganbench import cache
from ganbench.errors import GanbenchError
from ganbench.paper import kmeans
from ganbench.scoring import byte_distances


def lloyd_numpy(points, clusters, iterations, seed):
    """Lloyd's algorithm written out in float64 with brute-force distances: the yardstick."""
    rng = np.random.default_rng(seed)
    centroids = points[rng.choice(len(points), size=clusters, replace=False)].astype(np.float64)
    for _ in range(iterations):
        distances = ((points[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(-1)
        assignment = distances.argmin(1)
        for cluster in range(clusters):
            members = points[assignment == cluster]
            if len(members):  # an empty cluster keeps its centroid
                centroids[cluster] = members.astype(np.float64).mean(0)
    return centroids


def test_fit_equals_plain_lloyd_on_separated_clusters():
    # Well separated blobs: no point is near a tie, so float32 GEMM distances assign exactly
    # as float64 ones do, and the centroids agree to float32 rounding of the means.
    rng = np.random.default_rng(3)
    centres = rng.random((7, 13)) * 10
    points = (centres[rng.integers(0, 7, 301)] + 0.05 * rng.standard_normal((301, 13))).astype(np.float32)
    got = kmeans.fit(points, 7, iterations=4, seed=1, backend="torch", device="cpu", progress=False)
    expected = lloyd_numpy(points, 7, 4, seed=1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # |centre| <= 11: float32 ulp ~1e-6


def test_cached_fit_reuses_and_repairs_its_cache(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.random((97, 5)).astype(np.float32)
    first, key = kmeans.cached_fit(points, 9, 3, 0, cache_dir=tmp_path, backend="torch", device="cpu", progress=False)
    path = tmp_path / f"kmeans-{key}.npy"
    assert path.exists()
    np.save(path, np.full_like(first, 7.0))  # a stored entry (with its checksum) is what is returned: the cache is used
    cache.checksum_path(path).write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    again, _ = kmeans.cached_fit(points, 9, 3, 0, cache_dir=tmp_path, backend="torch", device="cpu", progress=False)
    assert np.all(again == 7.0)
    path.write_bytes(b"not an npy file")  # a damaged entry is recomputed, not trusted
    repaired, _ = kmeans.cached_fit(points, 9, 3, 0, cache_dir=tmp_path, backend="torch", device="cpu", progress=False)
    np.testing.assert_array_equal(repaired, first)
    other, other_key = kmeans.cached_fit(points, 9, 3, 1, cache_dir=tmp_path, backend="torch", device="cpu",
                                         progress=False)
    assert other_key != key  # the seed is part of the key


def lloyd_host_update(points, clusters, iterations, seed):
    """The update as it ran on the host before it moved to the scoring device: NumPy counts, float64 sums."""
    import torch

    from ganbench.scoring import neighbours

    rng = np.random.default_rng(seed)
    centroids = points[rng.choice(len(points), size=clusters, replace=False)].copy()
    for _ in range(iterations):
        assignment = neighbours.nearest(points, centroids, backend="torch", device="cpu", exact_ranking=False)[1][:, 0]
        counts = np.bincount(assignment, minlength=clusters)
        sums = torch.zeros((clusters, points.shape[1]), dtype=torch.float64)
        sums.index_add_(0, torch.from_numpy(assignment), torch.from_numpy(points).double())
        filled = counts > 0
        centroids[filled] = (sums.numpy()[filled] / counts[filled, None]).astype(np.float32)
    return centroids


def test_update_on_the_scoring_device_is_bit_identical_on_the_cpu():
    # Overlapping blobs and an empty cluster are possible: every float32 bit must match the host update.
    rng = np.random.default_rng(5)
    points = rng.random((157, 11)).astype(np.float32)
    got = kmeans.fit(points, 9, iterations=5, seed=2, backend="torch", device="cpu", progress=False)
    np.testing.assert_array_equal(got, lloyd_host_update(points, 9, 5, seed=2))


def test_int8_assignments_on_8bit_points_equal_the_float32_ones():
    """MNIST-like 8-bit points through the int8 kernel (interpreted): separated blobs assign exactly as the torch backend."""
    rng = np.random.default_rng(3)
    centres = rng.integers(40, 216, (5, 13))
    points = (np.clip(centres[rng.integers(0, 5, 97)] + rng.integers(-6, 7, (97, 13)), 0, 255) / 255).astype(np.float32)
    got = kmeans.fit(points, 5, iterations=3, seed=1, backend="triton", device="cpu", precision="int8", progress=False)
    expected = kmeans.fit(points, 5, iterations=3, seed=1, backend="torch", device="cpu", progress=False)
    np.testing.assert_array_equal(got, expected)


# ---- Elkan's bounds on the CPU (ganbench.paper.kmeans_bounds) ----------------------------------------

def exact_distances(points, centroids):
    """|x - c| for every pair, float64 by direct differences."""
    return np.sqrt(((points[:, None, :].astype(np.float64) - centroids[None].astype(np.float64)) ** 2).sum(-1))


def lloyd_steps(points, clusters, iterations, seed):
    """The centroids each assignment step of ``kmeans.fit`` sees, from the float64 Lloyd update."""
    rng = np.random.default_rng(seed)
    centroids = points[rng.choice(len(points), size=clusters, replace=False)].copy()
    for _ in range(iterations):
        yield centroids
        assignment = exact_distances(points, centroids).argmin(1)
        for cluster in range(clusters):
            members = points[assignment == cluster]
            if len(members):
                centroids = centroids.copy()
                centroids[cluster] = members.astype(np.float64).mean(0).astype(np.float32)


@pytest.mark.parametrize("fused", [True, False])
def test_bounds_stay_below_the_exact_distances_and_assign_as_exact_lloyd(fused, monkeypatch):
    """After every step each finite bound is at most the exact distance (the invariant everything rests on),
    and each point's centroid is the exact nearest, or within twice the float32 distance error of it
    (a near-tie the float32 GEMM may break either way). Overlapping data at sizes no block divides, with
    blocks smaller than the data so that tiles, partial tiles and partial recomputation all run; the
    drifts subtracted by the compiled pass and by torch alike."""
    import torch

    from ganbench.paper import kmeans_bounds
    from ganbench.scoring import bounds, fused_rows

    if not fused:
        monkeypatch.setattr(fused_rows, "available", lambda: False)
    elif not fused_rows.available():
        pytest.skip("no compiled fused pass on this machine")

    rng = np.random.default_rng(11)
    points = (rng.random((301, 29)) ** 2).astype(np.float32)
    assigner = kmeans_bounds.BoundedAssigner(torch.from_numpy(points))
    recomputed, pairs = [], []
    for step, centroids in enumerate(lloyd_steps(points, 37, 7, seed=4)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(kmeans_bounds, "ROW_BLOCK", 64)
            patch.setattr(kmeans_bounds, "GROUPS", 5)
            assignment, stats = assigner.assign(torch.from_numpy(centroids))
        recomputed.append(stats.recomputed)
        pairs.append(stats.pairs)
        exact = exact_distances(points, centroids)
        lower = assigner.bounds_by_centroid().numpy()
        finite = np.isfinite(lower)
        assert np.all(lower[finite] <= exact[finite]), step
        assert np.all(~finite.any(axis=1) | (finite.sum(axis=1) == len(centroids) - 1))  # only the own one is inf
        # A recomputed row's argmin is of D32 - E shifted by a row constant, in one float32 addition: the
        # chosen D exceeds the nearest by at most 2E (the float32 bound K u N, N from the points' mean as
        # the assigner centres) plus 4uN for that addition's rounding; 8uN is allowed for it.
        centre = points.mean(axis=0, dtype=np.float64)
        size = (((points - centre) ** 2).sum(1).max() + ((centroids - centre) ** 2).sum(1).max()) * (1 + 2.0**-10)
        error = (2 * bounds.distance_coefficient("float32", points.shape[1]) + 8) * 2.0**-24 * size
        chosen = exact[np.arange(len(points)), assignment.numpy()]
        assert np.all(chosen**2 <= exact.min(axis=1) ** 2 + error), step
    assert recomputed[0] == len(points) and min(recomputed[1:]) < len(points)  # the bounds skipped work
    assert min(pairs[1:]) < len(points) * 37 / 2  # ... and the groups most columns of what they recomputed


@pytest.mark.parametrize("outlier", [1e4, 1e6])
def test_points_far_from_the_mean_against_their_distances_are_assigned_exactly(outlier, monkeypatch):
    """One point at 1e6 among 300 in [0, 1]^8 moves the points' mean by 3e3, and the float32 distances about it
    are off by more than the distances themselves: 252 points took a centroid at D = 3.3 with one at 0.45, and
    ten iterations ended with a within-cluster sum of squares of 176 against 147. Such points now take the exact
    nearest centroid, and the bounds stay below the exact distances."""
    import torch

    from ganbench.paper import kmeans_bounds

    rng = np.random.default_rng(1)
    points = rng.random((300, 8)).astype(np.float32)
    points[0] = outlier
    assigner = kmeans_bounds.BoundedAssigner(torch.from_numpy(points))
    for step, centroids in enumerate(lloyd_steps(points, 6, 5, seed=0)):
        assignment, _ = assigner.assign(torch.from_numpy(centroids))
        exact = exact_distances(points, centroids)
        np.testing.assert_array_equal(assignment.numpy(), exact.argmin(1), err_msg=f"step {step}")
        lower = assigner.bounds_by_centroid().numpy()
        finite = np.isfinite(lower)
        assert np.all(lower[finite] <= exact[finite]), step
    for iterations in (1, 10):
        got = kmeans.fit(points, 6, iterations, 0, backend="torch", device="cpu", progress=False)
        expected = list(lloyd_steps(points, 6, iterations + 1, seed=0))[-1]
        np.testing.assert_allclose(got, expected, rtol=2.0**-22)  # the float64 means' summation orders differ


def grouped_apart(centroids):
    """Centroid 2's group before centroid 0's (the tie below crosses groups, the later one holding the lower index)."""
    import torch

    return torch.tensor([2, 1, 0, 3, 4]), [0, 2, 5]


def grouped_in_order(centroids):
    """Centroid 0's group before centroid 2's (the tie crosses groups, the earlier one holding the lower index)."""
    import torch

    return torch.tensor([0, 1, 2, 3, 4]), [0, 2, 5]


@pytest.mark.skipif(not byte_distances.int8_product_is_exact(),
                    reason="this torch build's CPU int8 product is not exact: ganbench does not use it")
@pytest.mark.parametrize("grouping", ["seeded", "apart", "in order"])
def test_first_step_on_8bit_points_is_the_exact_integer_argmin(grouping, monkeypatch):
    """From chosen MNIST-like images the first step uses exact int8 distances: ties (a duplicated
    image chosen twice) go to the lower centroid index, as with exact arithmetic, inside a group of
    centroids and across groups."""
    import torch

    from ganbench.paper import kmeans_bounds

    rng = np.random.default_rng(2)
    image_bytes = rng.integers(0, 256, (97, 785))
    image_bytes[50] = image_bytes[10]
    points = (image_bytes.astype(np.float32) / np.float32(255)).astype(np.float32)
    chosen = np.array([50, 3, 10, 77, 90])           # 50 and 10 are the same image: centroids 0 and 2 tie
    used = []
    original = kmeans_bounds.ByteDistances.tile
    monkeypatch.setattr(kmeans_bounds.ByteDistances, "tile", lambda *args: used.append(1) or original(*args))
    monkeypatch.setattr(kmeans_bounds, "GROUPS", 3)
    if grouping != "seeded":
        monkeypatch.setattr(kmeans_bounds, "centroid_groups", grouped_apart if grouping == "apart" else grouped_in_order)
    assigner = kmeans_bounds.BoundedAssigner(torch.from_numpy(points))
    assignment, _ = assigner.assign(torch.from_numpy(points[chosen]))
    assert used
    exact = ((image_bytes[:, None, :] - image_bytes[chosen][None]) ** 2).sum(-1)  # int64, exact
    np.testing.assert_array_equal(assignment.numpy(), exact.argmin(1))             # first index among ties
    assert assignment[10] == 0 and assignment[50] == 0
    lower = assigner.bounds_by_centroid().numpy()
    finite = np.isfinite(lower)
    assert np.all(lower[finite] <= exact_distances(points, points[chosen])[finite])


def test_large_problems_fall_back_to_plain_lloyd(monkeypatch):
    """Bounds past MAX_BOUND_BYTES, or past a quarter of the machine's memory, are not allocated: the
    assignment takes the scorer's nearest pass."""
    from ganbench.paper import kmeans_bounds
    from ganbench.scoring import neighbours

    calls = []
    original = neighbours.nearest
    monkeypatch.setattr(neighbours, "nearest", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    rng = np.random.default_rng(0)
    points = rng.random((50, 4)).astype(np.float32)
    kmeans.fit(points, 6, iterations=2, backend="torch", device="cpu", progress=False)
    assert not calls
    monkeypatch.setattr(kmeans_bounds, "MAX_BOUND_BYTES", 50 * 6 * 4 - 1)
    kmeans.fit(points, 6, iterations=2, backend="torch", device="cpu", progress=False)
    assert len(calls) == 2
    monkeypatch.undo()
    monkeypatch.setattr(neighbours, "nearest", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    monkeypatch.setattr(kmeans_bounds, "physical_memory", lambda: 4 * (50 * 6 * 4) - 1)  # a quarter is too little
    kmeans.fit(points, 6, iterations=2, backend="torch", device="cpu", progress=False)
    assert len(calls) == 4


def test_drift_pass_gives_torchs_and_numpys_bits(monkeypatch):
    """``subtract_drift`` through the compiled pass (one read and write of the bounds) equals torch's
    subtraction and NumPy's group minima to the bit: infinite bounds, groups of 1 to 33 columns, rows and
    groups that fill no vector evenly."""
    import torch

    from ganbench.paper import kmeans_bounds
    from ganbench.scoring import fused_rows

    if not fused_rows.available():
        pytest.skip("no compiled fused pass on this machine")
    rng = np.random.default_rng(12)
    lower = torch.from_numpy(rng.uniform(0.0, 9.0, (203, 91)).astype(np.float32))
    lower[5, 3] = lower[100, 90] = float("inf")
    drift = torch.from_numpy(rng.uniform(0.0, 1.5, 91))
    edges = [0, 1, 34, 35, 60, 91]
    both = [lower.clone(), lower.clone()]
    minima = [kmeans_bounds.subtract_drift(both[0], drift, 9.0, edges)]
    monkeypatch.setattr(fused_rows, "available", lambda: False)
    minima.append(kmeans_bounds.subtract_drift(both[1], drift, 9.0, edges))
    assert torch.equal(both[0], both[1]) and torch.equal(minima[0], minima[1])
    assert torch.isinf(both[0][5, 3]) and minima[0].shape == (203, 5)


def test_sums_in_pieces_are_the_sums_in_one_piece(monkeypatch):
    """The per-cluster float64 sums added a piece of rows at a time (pieces of 7 rows here, so that a
    cluster's members fall into many pieces) give the bits of one piece over all rows."""
    rng = np.random.default_rng(13)
    points = (rng.random((157, 9)) ** 2).astype(np.float32)
    fits = []
    for rows in (7, len(points)):
        monkeypatch.setattr(kmeans, "SUM_PIECE_ROWS", rows)
        fits.append(kmeans.fit(points, 11, iterations=4, seed=2, backend="torch", device="cpu", progress=False))
    np.testing.assert_array_equal(fits[0], fits[1])


def test_drift_pass_reads_rows_by_their_stride(monkeypatch):
    """Bounds that are a view of wider rows (row stride above the column count) are read and written
    through their stride, as torch's subtraction does, and an overlapping stride is refused."""
    import torch

    from ganbench.paper import kmeans_bounds
    from ganbench.scoring import fused_rows

    if not fused_rows.available():
        pytest.skip("no compiled fused pass on this machine")
    rng = np.random.default_rng(14)
    wide = torch.from_numpy(rng.uniform(0.0, 9.0, (37, 50)).astype(np.float32))
    drift = torch.from_numpy(rng.uniform(0.0, 1.5, 33))
    edges = [0, 5, 20, 33]
    whole = [wide.clone(), wide.clone()]          # the columns outside the view must stay as they were
    minima = [kmeans_bounds.subtract_drift(whole[0][:, 3:36], drift, 9.0, edges)]
    monkeypatch.setattr(fused_rows, "available", lambda: False)
    minima.append(kmeans_bounds.subtract_drift(whole[1][:, 3:36], drift, 9.0, edges))
    assert torch.equal(whole[0], whole[1]) and torch.equal(minima[0], minima[1])
    assert torch.equal(whole[0][:, :3], wide[:, :3]) and torch.equal(whole[0][:, 36:], wide[:, 36:])
    overlapping = torch.zeros(400).as_strided((10, 33), (20, 1))
    with pytest.raises(ValueError):
        fused_rows.drift_and_group_minima(overlapping, torch.zeros(33), torch.tensor(edges))


@pytest.mark.parametrize("points, clusters, message", [
    (np.where(np.eye(20, 3) > 0, np.nan, 0.5), 2, "NaN or inf"),
    (np.full((20, 3), 1e300), 2, "float32's range"),
    (np.ones(20), 2, "2-D"),
    (np.ones((20, 3)) + 1j, 2, "complex"),
    (np.ones((20, 3)), 2.0, "whole number"),
    (np.ones((20, 3)), True, "whole number"),
    (np.ones((20, 3)), 0, "clusters must be in 1..20"),
])
def test_bad_points_and_counts_are_one_line_errors(points, clusters, message):
    """Once a NaN point gave a NaN centroid (cached as a result), 1e300 inf ones, 1-D points an IndexError."""
    with pytest.raises(GanbenchError, match=message):
        kmeans.fit(points, clusters, 2, progress=False)
