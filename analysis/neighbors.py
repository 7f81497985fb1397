"""Nearest-neighbour search over a reference set of feature rows (Euclidean distance).

Two searches behind one interface, :class:`NeighborIndex`:

``exact``
    Blockwise brute force: for a block of query rows, ``||q - r||^2 = ||q||^2 + ||r||^2 - 2 q.r``
    against every reference row (one float32 matrix product), then a partial sort. Cost
    ``O(n_query * n_reference * n_features)``: cheap up to some ten thousand reference rows,
    quadratic beyond (50k x 50k x 64 took about a minute on a 2-core machine).
``clustered``
    An inverted-file search (as faiss' ``IndexIVFFlat``, in NumPy): the reference rows are
    grouped by k-means into about ``sqrt(n_reference)`` clusters; a query is compared exactly
    with the rows of the clusters nearest to its own cluster's centre, enough of them to hold
    ``candidates`` rows (default 2,048, at least ``4 k``). Cost ``O(n_query * candidates *
    n_features)``: linear in the number of rows. Neighbours it misses are replaced by farther
    ones, so a k-th neighbour distance can only come out too large, never too small.

``method="auto"`` (the default) searches exactly up to :data:`EXACT_MAX_REFERENCE` reference
rows and by clusters above. The accuracy the clustered search costs the kNN OOD score (AUROC
against the exact search) is measured by ``benchmarks/bench_time_to_map.py`` and quoted in
``docs/scale.md``.

The same index answers "which training rows are nearest to this row" (:meth:`NeighborIndex.kneighbors`
returns the distances and the reference row indices), for showing neighbours as evidence.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["EXACT_MAX_REFERENCE", "NeighborIndex", "NeighborMethod", "kneighbors"]

NeighborMethod = Literal["auto", "exact", "clustered"]
_METHODS = ("auto", "exact", "clustered")
EXACT_MAX_REFERENCE = 10_000
"""``method="auto"`` searches exactly up to this many reference rows, by clusters above."""
_KMEANS_ITERATIONS = 10
_KMEANS_SAMPLE_PER_CLUSTER = 40


def _as_rows(x: ArrayLike, name: str) -> NDArray[np.float32]:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"Expected `{name}` to have shape (n_rows, n_features), got {arr.shape}.")
    return arr


class NeighborIndex:
    """k nearest reference rows of query rows, exact or by an inverted-file (clustered) search.

    Parameters
    ----------
    method : {"auto", "exact", "clustered"}, default "auto"
        ``auto``: exact up to :data:`EXACT_MAX_REFERENCE` reference rows, clustered above.
    candidates : int, default 2048
        Clustered search: reference rows compared exactly with each query (at least ``4 k``).
    n_clusters : int or None, default None
        Clustered search: k-means clusters (None: ``round(sqrt(n_reference))``).
    block_size : int, default 1024
        Query rows per matrix product in the exact search (memory ``block_size * n_reference * 4``
        bytes).
    random_state : int, default 0
        Seed of the k-means initialisation (the search is deterministic for a given seed).

    Attributes
    ----------
    reference_ : ndarray of float32, shape (n_reference, n_features)
    method_ : {"exact", "clustered"}
        The search used.
    centers_ : ndarray of float32, shape (n_clusters, n_features)
        Clustered search only: the k-means centres.

    Examples
    --------
    >>> ref = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    >>> dist, idx = NeighborIndex().fit(ref).kneighbors([[0.9, 0.1]], 2)
    >>> idx.tolist(), [f"{d:.3f}" for d in dist[0]]
    ([[1, 0]], ['0.141', '0.906'])
    """

    def __init__(
        self, *, method: NeighborMethod = "auto", candidates: int = 2048,
        n_clusters: int | None = None, block_size: int = 1024, random_state: int = 0,
    ) -> None:
        self.method = method
        self.candidates = candidates
        self.n_clusters = n_clusters
        self.block_size = block_size
        self.random_state = random_state

    # ---- fitting ------------------------------------------------------------------------------

    def fit(self, reference: ArrayLike) -> NeighborIndex:
        """Index ``reference`` (shape (n_reference, n_features)); returns ``self``."""
        if self.method not in _METHODS:
            raise ValueError(f"Expected `method` among {_METHODS}, got {self.method!r}.")
        if not isinstance(self.candidates, (int, np.integer)) or self.candidates < 1:
            raise ValueError(f"Expected `candidates` to be a positive integer, got {self.candidates!r}.")
        ref = _as_rows(reference, "reference")
        if ref.shape[0] < 1:
            raise ValueError("Expected at least one reference row, got none.")
        if not np.isfinite(ref).all():
            raise ValueError("Expected finite reference rows, got NaN or inf.")
        self.reference_ = ref
        # one matrix product ranks the pairs: [q, 1] . [-2 r, ||r||^2] = ||q - r||^2 - ||q||^2
        self._ranker = np.hstack([-2.0 * ref, np.einsum("ij,ij->i", ref, ref)[:, None]]).astype(np.float32)
        n = ref.shape[0]
        method = self.method
        if method == "auto":
            method = "exact" if n <= EXACT_MAX_REFERENCE else "clustered"
        self.method_ = method
        if method == "clustered":
            with self._blas_threads():
                self._fit_clusters(ref)
        return self

    def _fit_clusters(self, ref: NDArray[np.float32]) -> None:
        n = ref.shape[0]
        n_clusters = self.n_clusters or max(1, round(math.sqrt(n)))
        n_clusters = int(min(n_clusters, n))
        rng = np.random.default_rng(self.random_state)
        sample = ref[np.sort(rng.choice(n, min(n, n_clusters * _KMEANS_SAMPLE_PER_CLUSTER), replace=False))]
        centers = sample[rng.choice(len(sample), n_clusters, replace=False)].copy()
        for _ in range(_KMEANS_ITERATIONS):  # Lloyd's iterations on the sample
            assign = self._nearest_center(sample, centers)
            counts = np.bincount(assign, minlength=n_clusters)
            filled = np.flatnonzero(counts)
            by_cluster = sample[np.argsort(assign, kind="stable")].astype(np.float64)
            starts = np.concatenate([[0], np.cumsum(counts[filled])[:-1]])
            sums = np.add.reduceat(by_cluster, starts, axis=0)
            centers[filled] = (sums / counts[filled, None]).astype(np.float32)
        labels = self._nearest_center(ref, centers)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=n_clusters)
        self.centers_ = centers
        self.labels_ = labels
        self._order = order.astype(np.intp)
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
        # for every cluster, the other clusters by distance between centres (nearest first)
        c_sq = np.einsum("ij,ij->i", centers, centers)
        d2 = c_sq[:, None] + c_sq[None, :] - 2.0 * (centers @ centers.T)
        self._center_order = np.argsort(d2, axis=1, kind="stable").astype(np.intp)

    def _nearest_center(self, x: NDArray[np.float32], centers: NDArray[np.float32]) -> NDArray[np.intp]:
        c_sq = np.einsum("ij,ij->i", centers, centers)
        out = np.empty(x.shape[0], dtype=np.intp)
        b = 8192
        for s in range(0, x.shape[0], b):
            out[s : s + b] = np.argmin(c_sq[None, :] - 2.0 * (x[s : s + b] @ centers.T), axis=1)
        return out

    def _check(self, queries: ArrayLike, k: int, exclude: ArrayLike | None) -> tuple[
            NDArray[np.float32], int, NDArray[np.intp] | None]:
        if not hasattr(self, "reference_"):
            raise ValueError("This NeighborIndex is not fitted yet; call `fit(reference)` first.")
        q = _as_rows(queries, "queries")
        if q.shape[1] != self.reference_.shape[1]:
            raise ValueError(f"Expected queries with {self.reference_.shape[1]} features, got {q.shape[1]}.")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"Expected `k` to be a positive integer, got {k!r}.")
        ex = None
        if exclude is not None:
            ex = np.asarray(exclude, dtype=np.intp)
            if ex.shape != (q.shape[0],):
                raise ValueError(f"Expected `exclude` to have shape ({q.shape[0]},), got {ex.shape}.")
        available = self.reference_.shape[0] - (1 if ex is not None and (ex >= 0).any() else 0)
        if k > available:
            raise ValueError(f"Expected `k` at most {available} (the reference rows left), got {k}.")
        return q, int(k), ex

    # ---- queries ------------------------------------------------------------------------------

    def kneighbors(
        self, queries: ArrayLike, k: int, *, exclude: ArrayLike | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        """The ``k`` nearest reference rows of every query row, nearest first.

        Parameters
        ----------
        queries : array-like, shape (n_queries, n_features)
        k : int
        exclude : array-like of int, shape (n_queries,), optional
            Reference row to leave out for each query (-1: none): leave-one-out for queries that
            are themselves reference rows.

        Returns
        -------
        distances : ndarray of float32, shape (n_queries, k)
            Euclidean distances, ascending along each row.
        indices : ndarray of int, shape (n_queries, k)
            Reference row indices (positions in the ``fit`` input).
        """
        q, k, ex = self._check(queries, k, exclude)
        dist = np.empty((q.shape[0], k), np.float32)
        idx = np.empty((q.shape[0], k), np.intp)
        with self._blas_threads():
            for rows, cand, d2 in self._blocks(q, k, ex):
                part = np.argpartition(d2, k - 1, axis=1)[:, :k]
                found = part if cand is None else cand[part]
                exact = self._distances(q[rows], found)
                order = np.argsort(exact, axis=1, kind="stable")
                dist[rows] = np.take_along_axis(exact, order, axis=1)
                idx[rows] = np.take_along_axis(found, order, axis=1)
        return dist, idx

    def _blas_threads(self) -> AbstractContextManager[Any]:
        """One BLAS thread for the clustered search's many small products.

        Each is a few tens of MFLOP: OpenBLAS' threads cost more than they bring there, and on a
        loaded 2-core machine they thrash (50k x 64 leave-one-out: 12 s with 2 threads, 2.9 s
        with one, measured under a load average of 12).
        """
        if self.method_ != "clustered":
            return nullcontext()
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - comes with scikit-learn
            return nullcontext()
        return threadpool_limits(limits=1, user_api="blas")  # type: ignore[no-any-return]

    def _distances(self, q: NDArray[np.float32], found: NDArray[np.intp]) -> NDArray[np.float64]:
        """Euclidean distances of ``q[i]`` to reference rows ``found[i]``, in float64.

        The search ranks by float32 ``||q||^2 + ||r||^2 - 2 q.r``, which loses digits for close
        rows; the distances reported are recomputed from the differences.
        """
        diff = self.reference_[found].astype(np.float64) - q[:, None, :].astype(np.float64)
        return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))

    def kth_distance(
        self, queries: ArrayLike, k: int, *, exclude: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """Distance of every query row to its ``k``-th nearest reference row, shape (n_queries,).

        ``exclude`` as in :meth:`kneighbors`. Cheaper than :meth:`kneighbors` (one partial sort,
        no indices).
        """
        return self._reduced_distance(queries, k, exclude, mean=False)

    def mean_distance(
        self, queries: ArrayLike, k: int, *, exclude: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """Mean distance of every query row to its ``k`` nearest reference rows, shape (n_queries,).

        ``exclude`` as in :meth:`kneighbors`; as cheap as :meth:`kth_distance`.
        """
        return self._reduced_distance(queries, k, exclude, mean=True)

    def _reduced_distance(
        self, queries: ArrayLike, k: int, exclude: ArrayLike | None, *, mean: bool
    ) -> NDArray[np.float64]:
        q, k, ex = self._check(queries, k, exclude)
        out = np.empty(q.shape[0], dtype=np.float64)
        q_sq = np.einsum("ij,ij->i", q, q).astype(np.float64)
        with self._blas_threads():
            for rows, cand, d2 in self._blocks(q, k, ex):
                if cand is None:
                    # exact search: the distance recomputed from the differences in float64, so a
                    # row's score does not depend on the block it was computed in
                    part = np.argpartition(d2, k - 1, axis=1)
                    if mean:
                        out[rows] = self._distances(q[rows], part[:, :k]).mean(axis=1)
                    else:
                        out[rows] = self._distances(q[rows], part[:, k - 1 : k])[:, 0]
                    continue
                if mean:
                    near = np.partition(d2, k - 1, axis=1)[:, :k].astype(np.float64)
                    out[rows] = np.sqrt(np.maximum(near + q_sq[rows, None], 0.0)).mean(axis=1)
                    continue
                kth = np.partition(d2, k - 1, axis=1)[:, k - 1].astype(np.float64)
                out[rows] = np.sqrt(np.maximum(kth + q_sq[rows], 0.0))
        return out

    def _blocks(self, q: NDArray[np.float32], k: int, ex: NDArray[np.intp] | None) -> Any:
        """Yield ``(query rows, candidate reference rows or None for all, ranking distances)``.

        The ranking distance of a pair is ``||q - r||^2 - ||q||^2`` (float32, one matrix product
        of the augmented rows): it orders a query's candidates like the distance does.
        """
        augmented = np.hstack([q, np.ones((q.shape[0], 1), np.float32)])
        if self.method_ == "exact":
            b = max(1, int(self.block_size))
            for s in range(0, q.shape[0], b):
                rows = np.arange(s, min(s + b, q.shape[0]))
                d2 = augmented[rows] @ self._ranker.T
                if ex is not None:
                    e = ex[rows]
                    hit = np.flatnonzero(e >= 0)
                    d2[hit, e[hit]] = np.inf
                yield rows, None, d2
            return
        # clustered: queries grouped by their nearest centre share one candidate set
        group = self._nearest_center(q, self.centers_)
        by_group = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[by_group], np.arange(len(self.centers_) + 1))
        need = max(int(self.candidates), 4 * k, k + 1)
        sizes = np.diff(self._starts)
        for c in range(len(self.centers_)):
            rows = by_group[bounds[c] : bounds[c + 1]]
            if len(rows) == 0:
                continue
            probe = self._center_order[c]
            n_probe = int(np.searchsorted(np.cumsum(sizes[probe]), need)) + 1
            cand = np.concatenate([self._order[self._starts[p] : self._starts[p + 1]]
                                   for p in probe[:n_probe]])
            cand.sort()
            d2 = augmented[rows] @ self._ranker[cand].T
            if ex is not None:
                e = ex[rows]
                pos = np.searchsorted(cand, e)
                hit = np.flatnonzero((e >= 0) & (pos < len(cand)))
                hit = hit[cand[pos[hit]] == e[hit]]
                d2[hit, pos[hit]] = np.inf
            if d2.shape[1] < k:  # fewer candidates than k: pad (cannot happen with need >= k + 1)
                raise ValueError(f"Expected at least {k} candidate rows, got {d2.shape[1]}.")
            yield rows, cand, d2


def kneighbors(
    queries: ArrayLike, reference: ArrayLike, k: int, *, exclude: ArrayLike | None = None,
    method: NeighborMethod = "auto", random_state: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    """The ``k`` nearest ``reference`` rows of every query row (one-shot :class:`NeighborIndex`).

    Returns ``(distances, indices)``, each of shape (n_queries, k), nearest first.

    Examples
    --------
    >>> dist, idx = kneighbors([[0.0], [3.0]], [[0.0], [1.0], [2.5]], 1)
    >>> idx.ravel().tolist(), dist.ravel().tolist()
    ([0, 2], [0.0, 0.5])
    """
    index = NeighborIndex(method=method, random_state=random_state).fit(reference)
    return index.kneighbors(queries, k, exclude=exclude)
