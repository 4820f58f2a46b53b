"""k-means (the Theis et al. sanity row of Table 1) against a plain NumPy Lloyd's algorithm."""
import numpy as np

from ganbench.paper import kmeans


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
    np.save(path, np.full_like(first, 7.0))  # a stored entry is what is returned: the cache is used
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
        assignment = neighbours.nearest(points, centroids, backend="torch", device="cpu")[1][:, 0]
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
