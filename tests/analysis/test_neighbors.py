"""Nearest-neighbour search: exact against scikit-learn, the clustered search against the exact one."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from analysis import ood as O
from analysis.neighbors import NeighborIndex, kneighbors


def clustered_data(n: int, d: int = 16, n_classes: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, (n_classes, d))
    x = means[rng.integers(0, n_classes, n)] + rng.normal(0, 1, (n, d))
    q = means[rng.integers(0, n_classes, 300)] + rng.normal(0, 1.2, (300, d))
    return x.astype(np.float32), q.astype(np.float32)


def test_exact_matches_sklearn():
    x, q = clustered_data(700)
    nn = NearestNeighbors(n_neighbors=9).fit(x.astype(np.float64))
    want_d, want_i = nn.kneighbors(q.astype(np.float64))
    dist, idx = NeighborIndex(method="exact", block_size=37).fit(x).kneighbors(q, 9)
    np.testing.assert_allclose(dist, want_d, rtol=1e-5)
    assert (idx == want_i).mean() > 0.999  # ties aside, the same rows
    kth = NeighborIndex(method="exact").fit(x).kth_distance(q, 9)
    np.testing.assert_allclose(kth, want_d[:, -1], rtol=1e-5)
    mean = NeighborIndex(method="exact").fit(x).mean_distance(q, 9)
    np.testing.assert_allclose(mean, want_d.mean(axis=1), rtol=1e-5)


def test_exclude_leaves_one_out():
    x, _ = clustered_data(400)
    want_d, want_i = NearestNeighbors(n_neighbors=5).fit(x.astype(np.float64)).kneighbors()
    for method in ("exact", "clustered"):
        index = NeighborIndex(method=method, candidates=400).fit(x)
        dist, idx = index.kneighbors(x, 5, exclude=np.arange(len(x)))
        np.testing.assert_allclose(dist, want_d, rtol=1e-5)
        assert not (idx == np.arange(len(x))[:, None]).any()
        np.testing.assert_allclose(index.kth_distance(x, 5, exclude=np.arange(len(x))), want_d[:, -1], rtol=1e-5)
        np.testing.assert_allclose(index.mean_distance(x, 5, exclude=np.arange(len(x))),
                                   want_d.mean(axis=1), rtol=1e-5)


def test_clustered_is_close_to_exact_and_never_below():
    x, q = clustered_data(20_000, d=32)
    exact = NeighborIndex(method="exact").fit(x).kth_distance(q, 20)
    index = NeighborIndex(method="clustered", candidates=2048).fit(x)
    approx = index.kth_distance(q, 20)
    assert (approx >= exact * (1 - 1e-5)).all()  # it can only miss neighbours (float32 rounding aside)
    assert np.median(approx / exact - 1) < 0.01
    _, idx = index.kneighbors(q[:50], 20)
    _, want = NearestNeighbors(n_neighbors=20).fit(x).kneighbors(q[:50])
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(idx, want, strict=True)])
    assert recall > 0.9


def test_auto_switches_on_reference_size():
    x, _ = clustered_data(12_000)
    assert NeighborIndex().fit(x[:500]).method_ == "exact"
    assert NeighborIndex().fit(x).method_ == "clustered"


def test_knn_scorer_uses_the_index_and_keeps_leave_one_out():
    x, q = clustered_data(600)
    knn = O.KNNScorer(k=5)
    knn.search = "clustered"
    knn.fit(x)
    assert knn.index_.method_ == "clustered"
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    want = NearestNeighbors(n_neighbors=5).fit(xn).kneighbors()[0][:, -1]
    got = knn.score_fitted(x)
    assert (got >= want * (1 - 1e-5)).all()
    assert np.mean(np.isclose(got, want, rtol=1e-5)) > 0.95


def test_one_shot_function_and_errors():
    dist, idx = kneighbors([[0.0, 0.0]], [[3.0, 4.0], [1.0, 0.0]], 2)
    assert idx.tolist() == [[1, 0]]
    np.testing.assert_allclose(dist, [[1.0, 5.0]])
    index = NeighborIndex()
    with pytest.raises(ValueError, match="not fitted"):
        index.kth_distance([[0.0]], 1)
    with pytest.raises(ValueError, match="method"):
        NeighborIndex(method="faiss").fit([[0.0]])  # type: ignore[arg-type]
    index.fit([[0.0], [1.0]])
    with pytest.raises(ValueError, match="at most 1"):
        index.kth_distance([[0.0]], 2, exclude=[0])
    with pytest.raises(ValueError, match="1 features"):
        index.kth_distance([[0.0, 1.0]], 1)
    with pytest.raises(ValueError, match="finite"):
        NeighborIndex().fit([[np.nan]])
