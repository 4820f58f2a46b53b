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
