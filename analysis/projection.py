"""2-D projection of stored features: UMAP (McInnes et al., 2018) or PCA.

The projection is fitted on the training split and every other split is transformed into the same
space. Features wider than ``pca_dim`` (default 50) go through PCA first (fitted on the same rows).
Results are deterministic for a given ``random_state`` and are cached in ``RUN_DIR/cache/``
under a content hash of the features and the parameters, so a second ``datamap analyze`` (or a
dashboard load) does not recompute them.

umap-learn compiles its numba kernels in every fresh process. Before umap is imported we point
``NUMBA_CACHE_DIR`` at a persistent user cache (``$XDG_CACHE_HOME/datamap/numba``, default
``~/.cache/datamap/numba``) unless the variable is already set, and turn numba's disk cache on for
umap's own kernels (umap-learn marks only one of them cacheable), so a second process loads the
compiled code instead of recompiling it (measured in ``docs/ood.md``).

UMAP's kNN graph: from 4,096 to 20,000 fitted rows (Euclidean metric, ``transform="neighbors"``)
the fit gets the exact graph of :func:`exact_knn_graph` through umap-learn's ``precomputed_knn``
instead of building it by NN-descent, part of which pynndescent compiles again in every fresh
process, cache or not (``benchmarks/bench_projection.py``, ``docs/scale.md``). Below 4,096 rows
umap-learn's own graph is already exact and nothing changes (nor does the cache key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analysis import schema as S

log = logging.getLogger(__name__)

__all__ = [
    "ProjectionMethod",
    "TransformMethod",
    "neighbor_weights",
    "place_by_neighbors",
    "cached_projection",
    "EXACT_GRAPH_MAX_ROWS",
    "EXACT_GRAPH_MIN_ROWS",
    "exact_knn_graph",
    "project_features",
    "projection_params",
    "projection_cache_key",
    "configure_numba_cache",
    "enable_umap_numba_caching",
    "numba_cache_dir",
]

ProjectionMethod = Literal["umap", "pca"]
_METHODS = ("umap", "pca")
TransformMethod = Literal["neighbors", "umap"]
_TRANSFORMS = ("neighbors", "umap")
_CACHE_VERSION = 1
_TRANSFORM_CHUNK = 20_000
EXACT_GRAPH_MIN_ROWS = 4096
"""From this many fitted rows UMAP gets an exact kNN graph (:func:`exact_knn_graph`).

umap-learn computes every pairwise distance itself below 4,096 rows (its exact "small data" path)
and runs its approximate NN-descent (pynndescent) from there on; only the latter is replaced.
"""
EXACT_GRAPH_MAX_ROWS = 20_000
"""Up to this many fitted rows (the default ``max_fit_rows`` of ``datamap analyze``): the exact
search is quadratic in the rows, NN-descent is not."""


def numba_cache_dir() -> Path:
    """The persistent numba cache used for umap: ``$NUMBA_CACHE_DIR`` if set, else a user dir."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "datamap" / "numba"


def configure_numba_cache() -> Path:
    """Set ``NUMBA_CACHE_DIR`` (unless already set) before numba is imported; return the dir.

    If numba is already imported without a cache dir, its config is updated too.
    """
    path = numba_cache_dir()
    if "NUMBA_CACHE_DIR" not in os.environ:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # read-only home: numba falls back to its own default
            log.info("cannot create numba cache dir %s (%s)", path, exc)
            return path
        os.environ["NUMBA_CACHE_DIR"] = str(path)
        import sys

        cfg = sys.modules.get("numba.core.config")
        if cfg is not None and not getattr(cfg, "CACHE_DIR", ""):
            cfg.CACHE_DIR = str(path)  # type: ignore[attr-defined]
    return path


def _import_umap() -> Any:
    configure_numba_cache()
    try:
        import umap
    except ImportError as exc:
        raise ImportError(
            "UMAP projection needs umap-learn: `pip install 'datamap[umap]'` (or "
            "`pip install umap-learn`), or use `method='pca'` / `datamap analyze "
            "--projection pca`."
        ) from exc
    if os.environ.get("DATAMAP_UMAP_NUMBA_CACHE", "1") != "0":
        n = enable_umap_numba_caching()
        log.debug("numba disk cache enabled for %d umap kernels", n)
    return umap


def enable_umap_numba_caching() -> int:
    """Turn on numba's disk cache for umap-learn's compiled kernels; return how many.

    umap-learn marks only one of its numba kernels ``cache=True`` (pynndescent marks most of
    its own), so every fresh process recompiles the layout optimisation and transform kernels
    (~20 s). Enabling the cache on those dispatchers before their first call makes later
    processes load the machine code from ``NUMBA_CACHE_DIR`` instead (measured in
    ``docs/ood.md``). Set ``DATAMAP_UMAP_NUMBA_CACHE=0`` to leave umap as it is. Kernels numba
    cannot cache (dynamic globals) are skipped by numba with a warning-free fallback to
    compiling.
    """
    import sys

    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:  # pragma: no cover - numba always comes with umap-learn
        return 0
    count = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "umap" or name.startswith("umap.")):
            continue
        for attr, obj in list(vars(module).items()):
            cache = getattr(obj, "_cache", None)
            if not isinstance(obj, CPUDispatcher) or cache is None:
                continue
            if type(cache).__name__ != "NullCache" or obj.overloads:
                continue  # already cached, or already compiled in this process
            try:
                obj.enable_caching()
                count += 1
            except Exception as exc:  # noqa: BLE001 - an uncachable kernel just compiles
                log.debug("numba cache not enabled for %s.%s: %s", name, attr, exc)
    return count


def _hash_array(h: Any, arr: NDArray[Any], block_rows: int = 65_536) -> None:
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    for s in range(0, arr.shape[0], block_rows):
        h.update(np.ascontiguousarray(arr[s : s + block_rows]).tobytes())


def _fit_row_count(n: int, max_fit_rows: int | None, has_fit_split: bool) -> int:
    """Rows UMAP is fitted on: a sample of ``max_fit_rows`` of the ``n`` fit-split rows when there
    is a fit split and more rows than that, else all ``n``."""
    return min(n, max_fit_rows) if max_fit_rows is not None and has_fit_split else n


def _uses_exact_graph(*, method: str, metric: str, transform: str, fit_rows: int) -> bool:
    """Whether UMAP's fit gets :func:`exact_knn_graph` instead of running its NN-descent.

    Only for the Euclidean metric (:class:`~analysis.neighbors.NeighborIndex`'s) and the
    ``neighbors`` transform: umap-learn's own ``transform`` needs the NN-descent search index.
    """
    return (method == "umap" and metric == "euclidean" and transform == "neighbors"
            and EXACT_GRAPH_MIN_ROWS <= fit_rows <= EXACT_GRAPH_MAX_ROWS)


def exact_knn_graph(x: ArrayLike, n_neighbors: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """The exact ``n_neighbors``-nearest-neighbour graph of the rows of ``x`` (Euclidean), for UMAP.

    In the form umap-learn's ``precomputed_knn`` takes (and its NN-descent returns): each row's
    own index first, at distance 0, then its ``n_neighbors - 1`` nearest other rows, nearest
    first (:class:`~analysis.neighbors.NeighborIndex`, exact search, leaving the row itself out).

    Parameters
    ----------
    x : array-like, shape (n_rows, n_features)
    n_neighbors : int
        Neighbours per row, the row itself included (UMAP's ``n_neighbors``); at most ``n_rows``.

    Returns
    -------
    indices : ndarray of int32, shape (n_rows, n_neighbors)
    distances : ndarray of float32, shape (n_rows, n_neighbors)

    Examples
    --------
    >>> idx, dist = exact_knn_graph([[0.0], [1.0], [3.0]], 2)
    >>> idx.tolist(), dist.tolist()
    ([[0, 1], [1, 0], [2, 1]], [[0.0, 1.0], [0.0, 1.0], [0.0, 2.0]])
    """
    from analysis.neighbors import NeighborIndex

    rows = np.asarray(x, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError(f"Expected `x` of shape (n_rows, n_features), got {rows.shape}.")
    n = rows.shape[0]
    if not isinstance(n_neighbors, (int, np.integer)) or not 1 <= n_neighbors <= n:
        raise ValueError(f"Expected `n_neighbors` an integer in [1, {n}] (the rows), got {n_neighbors!r}.")
    indices = np.empty((n, n_neighbors), np.int32)  # int32 and float32 as pynndescent's graph
    distances = np.zeros((n, n_neighbors), np.float32)
    indices[:, 0] = np.arange(n)
    if n_neighbors > 1:
        index = NeighborIndex(method="exact").fit(rows)
        dist, idx = index.kneighbors(rows, n_neighbors - 1, exclude=np.arange(n))
        indices[:, 1:] = idx
        distances[:, 1:] = dist
    return indices, distances


def projection_cache_key(features: Mapping[str, NDArray[Any]], params: Mapping[str, Any]) -> str:
    """Content hash (BLAKE2b, 20 hex chars) of the split names, feature bytes and parameters."""
    h = hashlib.blake2b(digest_size=10)
    h.update(json.dumps({"v": _CACHE_VERSION, **params}, sort_keys=True, default=str).encode())
    for name in sorted(features):
        h.update(name.encode() + b"\0")
        _hash_array(h, features[name])
    return h.hexdigest()


def _load_cache(path: Path, splits: list[str]) -> dict[str, NDArray[np.float32]] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            names = json.loads(str(z["splits"]))
            if sorted(names) != sorted(splits):
                return None
            return {n: z[f"p{i}"] for i, n in enumerate(names)}
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable projection cache %s (%s)", path, exc)
        return None


def _save_cache(path: Path, out: Mapping[str, NDArray[np.float32]]) -> None:
    from analysis.runstore import atomic_path

    names = list(out)
    arrays = {f"p{i}": out[n] for i, n in enumerate(names)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, splits=np.array(json.dumps(names)), **arrays)  # type: ignore[arg-type]


def projection_params(
    *, method: ProjectionMethod = "umap", fit_split: str = S.TRAIN_SPLIT, pca_dim: int | None = 50,
    n_neighbors: int = 15, min_dist: float = 0.1, n_epochs: int | None = None,
    metric: str = "euclidean", random_state: int = 0, max_fit_rows: int | None = None,
    transform: TransformMethod = "neighbors",
) -> dict[str, Any]:
    """Every parameter of :func:`project_features` that its result depends on (the cache key's)."""
    return {
        "method": method, "fit_split": fit_split, "pca_dim": pca_dim, "n_neighbors": n_neighbors,
        "min_dist": min_dist, "n_epochs": n_epochs, "metric": metric, "random_state": random_state,
        "max_fit_rows": max_fit_rows, "transform": transform,
    }


def cached_projection(
    features: Mapping[str, NDArray[Any]], params: Mapping[str, Any], cache_dir: str | os.PathLike[str],
) -> tuple[str, dict[str, NDArray[np.float32]] | None]:
    """``(cache key, cached projection or None)`` for ``features`` and :func:`projection_params`."""
    t0 = time.perf_counter()
    fit_split = params.get("fit_split", S.TRAIN_SPLIT)
    n_fit = (features[fit_split].shape[0] if fit_split in features
             else sum(a.shape[0] for a in features.values()))
    if params.get("max_fit_rows") is not None and n_fit <= params["max_fit_rows"]:
        params = {**params, "max_fit_rows": None}  # no sample is drawn: the same map as None
    fit_rows = _fit_row_count(n_fit, params.get("max_fit_rows"), fit_split in features)
    if _uses_exact_graph(method=params["method"], metric=params.get("metric", "euclidean"),
                         transform=params.get("transform", "neighbors"), fit_rows=fit_rows):
        params = {**params, "knn_graph": "exact"}  # a map fitted on NN-descent's graph is another
    key = projection_cache_key(features, params)
    path = Path(cache_dir) / f"projection-{params['method']}-{key}.npz"
    if not path.is_file():
        return key, None
    cached = _load_cache(path, list(features))
    if cached is not None:
        log.info("projection: cache hit %s (%.2f s)", path.name, time.perf_counter() - t0)
    return key, cached


def project_features(
    features: Mapping[str, ArrayLike],
    *,
    method: ProjectionMethod = "umap",
    fit_split: str = S.TRAIN_SPLIT,
    pca_dim: int | None = 50,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    metric: str = "euclidean",
    random_state: int = 0,
    max_fit_rows: int | None = None,
    transform: TransformMethod = "neighbors",
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, NDArray[np.float32]]:
    """Project every split's features to 2-D, fitted on ``fit_split``.

    Parameters
    ----------
    features : mapping of split name -> array-like, shape (n_examples, n_features)
        Every split must have the same ``n_features``.
    method : {"umap", "pca"}, default "umap"
        PCA is the fast alternative (no numba, milliseconds).
    fit_split : str, default "train"
        Split the projection is fitted on; if absent, all splits together (with a warning).
    pca_dim : int or None, default 50
        For UMAP, reduce wider features to this many principal components first. None: never.
    n_neighbors, min_dist, n_epochs, metric
        UMAP parameters (umap-learn's meaning and defaults; ``n_epochs=None`` lets umap choose).
        With ``metric="euclidean"`` and ``transform="neighbors"``, a fit on
        :data:`EXACT_GRAPH_MIN_ROWS` to :data:`EXACT_GRAPH_MAX_ROWS` rows uses the exact kNN
        graph (:func:`exact_knn_graph`) instead of umap-learn's NN-descent.
    random_state : int, default 0
        Makes UMAP and PCA deterministic (UMAP then runs single-threaded).
    max_fit_rows : int or None, default None
        Fit UMAP on at most this many random rows of ``fit_split`` and transform the rest (for
        large runs: UMAP's fit is the expensive part). None: fit on all of them.
    transform : {"neighbors", "umap"}, default "neighbors"
        How UMAP places rows it was not fitted on (the other splits, and the training rows left
        out by ``max_fit_rows``). ``neighbors``: :func:`place_by_neighbors`, each row at the
        weighted mean of the map positions of its ``n_neighbors`` nearest fitted rows (umap-learn's
        own starting point for a transform, without its optimisation epochs; many times faster,
        measured in ``docs/scale.md``). ``umap``: umap-learn's ``transform`` (which needs the
        search index of umap-learn's NN-descent, so the fit builds its graph as umap-learn does).
    cache_dir : path, optional
        Where to cache results (``RUN_DIR/cache``); None disables caching.
    progress : callable(step, fraction), optional
        Called with a description of each step and the estimated fraction done (UMAP only).

    Returns
    -------
    dict of split name -> ndarray of float32, shape (n_examples, 2)

    Raises
    ------
    ValueError
        Bad method, mismatched feature widths, non-finite values, no rows.
    ImportError
        ``method="umap"`` without umap-learn installed (with an install hint).

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(20, 3))
    >>> project_features({"train": x}, method="pca")["train"].shape
    (20, 2)
    """
    if method not in _METHODS:
        raise ValueError(f"Expected `method` among {_METHODS}, got {method!r}.")
    if transform not in _TRANSFORMS:
        raise ValueError(f"Expected `transform` among {_TRANSFORMS}, got {transform!r}.")
    if not features:
        raise ValueError("Expected at least one split of features, got none.")
    arrays: dict[str, NDArray[Any]] = {}
    width: int | None = None
    first = fit_split if fit_split in features else next(iter(features))
    for name in [first, *[n for n in features if n != first]]:
        arr = np.asarray(features[name])
        if arr.ndim != 2:
            raise ValueError(f"Expected features of split {name!r} to have shape (n_examples, n_features), got {arr.shape}.")
        if width is None:
            width = arr.shape[1]
        elif arr.shape[1] != width:
            raise ValueError(
                f"Expected every split to have {width} features (as split {first!r}), got "
                f"{arr.shape[1]} for split {name!r}."
            )
        if arr.size and not np.isfinite(arr).all():
            raise ValueError(f"Expected finite features, got NaN or inf in split {name!r}.")
        arrays[name] = arr
    params = projection_params(
        method=method, fit_split=fit_split, pca_dim=pca_dim, n_neighbors=n_neighbors,
        min_dist=min_dist, n_epochs=n_epochs, metric=metric, random_state=random_state,
        max_fit_rows=max_fit_rows, transform=transform,
    )
    cache_path: Path | None = None
    if cache_dir is not None:
        key, cached = cached_projection(arrays, params, cache_dir)
        cache_path = Path(cache_dir) / f"projection-{method}-{key}.npz"
        if cached is not None:
            if progress is not None:
                progress("loaded the cached map", 0.95)
            return cached
    out = _project(
        arrays, fit_split=fit_split, method=method, pca_dim=pca_dim, n_neighbors=n_neighbors,
        min_dist=min_dist, n_epochs=n_epochs, metric=metric, random_state=random_state,
        max_fit_rows=max_fit_rows, transform=transform, progress=progress,
    )
    if cache_path is not None:
        _save_cache(cache_path, out)
    return out


def _principal_axes(x: NDArray[np.float32], k: int, block_rows: int = 65_536) -> tuple[
        NDArray[np.float64], NDArray[np.float64]]:
    """``(mean, components (k, d))`` of the rows of ``x``: the top eigenvectors of the covariance.

    NumPy only (scikit-learn's import alone costs a second in a fresh process); the signs follow
    scikit-learn's ``svd_flip``: each component's largest-magnitude loading is positive.
    """
    from threadpoolctl import threadpool_limits

    mean = x.mean(axis=0, dtype=np.float64)
    scatter = np.zeros((x.shape[1], x.shape[1]))
    # a (d x d) product: one BLAS thread is plenty, and several thrash on a loaded machine
    with threadpool_limits(limits=1, user_api="blas"):
        for s in range(0, x.shape[0], block_rows):
            centred = x[s : s + block_rows].astype(np.float64) - mean
            scatter += centred.T @ centred
    _, vectors = np.linalg.eigh(scatter)  # ascending eigenvalues
    components = vectors[:, ::-1][:, :k].T
    signs = np.sign(components[np.arange(k), np.argmax(np.abs(components), axis=1)])
    return mean, components * np.where(signs == 0, 1.0, signs)[:, None]


def _project(
    arrays: dict[str, NDArray[Any]],
    *,
    fit_split: str,
    method: str,
    pca_dim: int | None,
    n_neighbors: int,
    min_dist: float,
    n_epochs: int | None,
    metric: str,
    random_state: int,
    max_fit_rows: int | None,
    transform: str = "neighbors",
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, NDArray[np.float32]]:
    def report(step: str, fraction: float) -> None:
        if progress is not None:
            progress(step, fraction)

    if fit_split in arrays:
        fit_x = np.asarray(arrays[fit_split], dtype=np.float32)
    else:
        warnings.warn(
            f"No {fit_split!r} split with features; fitting the projection on all splits together.",
            stacklevel=3,
        )
        fit_x = np.concatenate([np.asarray(a, dtype=np.float32) for a in arrays.values()])
    n, d = fit_x.shape
    if n < 3:
        raise ValueError(f"Expected at least 3 rows to fit a projection, got {n}.")
    if method == "umap" and n <= max(n_neighbors, 4):
        warnings.warn(f"Only {n} rows to fit UMAP on; using PCA instead.", stacklevel=3)
        method = "pca"
    t0 = time.perf_counter()
    if method == "pca":
        k = min(2, n, d)
        mean, components = _principal_axes(fit_x, k)
        out = {}
        for name, a in arrays.items():
            y = ((np.asarray(a, dtype=np.float64) - mean) @ components.T).astype(np.float32)
            if k < 2:
                y = np.hstack([y, np.zeros((y.shape[0], 2 - k), np.float32)])
            out[name] = y
        log.info("projection: PCA of %d x %d in %.2f s", n, d, time.perf_counter() - t0)
        return out
    reducer_in: Any = None
    if pca_dim is not None and d > pca_dim:
        from sklearn.decomposition import PCA

        reducer_in = PCA(n_components=min(pca_dim, n), random_state=random_state).fit(fit_x)
        fit_x = reducer_in.transform(fit_x).astype(np.float32)
        log.info("projection: PCA %d -> %d dims before UMAP", d, fit_x.shape[1])
    report("loading UMAP (compiles its kernels on first use)", 0.02)
    umap = _import_umap()
    log.info("projection: fitting UMAP on %d rows (first call in a process compiles numba kernels)", n)
    fit_rows = _fit_row_count(n, max_fit_rows, fit_split in arrays)
    sample: NDArray[np.intp] | None = None
    if fit_rows < n:
        sample = np.sort(np.random.default_rng(random_state).choice(n, fit_rows, replace=False))
        log.info("projection: fitting UMAP on a sample of %d of the %d rows", fit_rows, n)
    n_other = sum(a.shape[0] for s, a in arrays.items() if s != fit_split) if fit_split in arrays else 0
    n_transform = n_other + n - fit_rows
    knn_graph: tuple[NDArray[np.int32], NDArray[np.float32]] | tuple[None, None, None] = (None, None, None)
    if _uses_exact_graph(method=method, metric=metric, transform=transform, fit_rows=fit_rows):
        # umap-learn's NN-descent recompiles part of pynndescent in every fresh process (most
        # of a fit's time there); an exact search of the fitted rows replaces it
        report(f"finding the nearest neighbours of {fit_rows:,} training rows", 0.03)
        t_graph = time.perf_counter()
        knn_graph = exact_knn_graph(fit_x if sample is None else fit_x[sample], n_neighbors)
        log.info("projection: exact %d-NN graph of %d rows in %.1f s", n_neighbors, fit_rows,
                 time.perf_counter() - t_graph)
    model = umap.UMAP(
        n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, n_epochs=n_epochs,
        metric=metric, random_state=random_state, n_jobs=1, precomputed_knn=knn_graph,
        verbose=log.isEnabledFor(logging.DEBUG),
    )
    fit_share = 0.05 + 0.9 * fit_rows / (fit_rows + n_transform)  # progress once the fit is done
    done = {"rows": 0}
    placer: dict[str, Any] = {}  # the neighbour index of the fitted rows, built on first use

    def place(x: NDArray[np.float32], what: str) -> NDArray[np.float32]:
        out = np.empty((x.shape[0], 2), np.float32)
        if transform == "neighbors" and "index" not in placer:
            from analysis.neighbors import NeighborIndex

            fitted = fit_x if sample is None else fit_x[sample]
            placer["index"] = NeighborIndex(random_state=random_state).fit(fitted)
            placer["embedding"] = emb if sample is None else emb[sample]
        for s in range(0, x.shape[0], _TRANSFORM_CHUNK):
            report(f"placing {what} ({s:,} of {x.shape[0]:,} rows)",
                   fit_share + (0.95 - fit_share) * done["rows"] / max(1, n_transform))
            chunk = x[s : s + _TRANSFORM_CHUNK]
            if transform == "neighbors":
                k = min(n_neighbors, placer["index"].reference_.shape[0])
                dist, idx = placer["index"].kneighbors(chunk, k)
                out[s : s + _TRANSFORM_CHUNK] = place_by_neighbors(dist, idx, placer["embedding"])
            else:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*n_jobs value.*")
                    out[s : s + _TRANSFORM_CHUNK] = model.transform(chunk)
            done["rows"] += chunk.shape[0]
        return out

    report(f"fitting UMAP on {fit_rows:,} training rows", 0.05)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        # no NN-descent search index with a precomputed graph: only umap's transform needs one
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        if sample is None:
            emb = model.fit_transform(fit_x).astype(np.float32)
        else:
            rest = np.ones(n, bool)
            rest[sample] = False
            emb = np.empty((n, 2), np.float32)
            emb[sample] = model.fit_transform(fit_x[sample])
    if sample is not None:
        emb[rest] = place(fit_x[rest], "the other training rows")
    log.info("projection: UMAP fit in %.1f s", time.perf_counter() - t0)
    out = {}
    if fit_split not in arrays:  # fitted on all splits together: slice the embedding back
        start = 0
        for name, a in arrays.items():
            out[name] = emb[start : start + a.shape[0]]
            start += a.shape[0]
        return out
    for name, a in arrays.items():
        if name == fit_split:
            out[name] = emb
            continue
        t1 = time.perf_counter()
        x = np.asarray(a, dtype=np.float32)
        if x.shape[0] == 0:
            out[name] = np.zeros((0, 2), np.float32)
            continue
        if reducer_in is not None:
            x = reducer_in.transform(x).astype(np.float32)
        out[name] = place(x, f"split {name!r}")
        log.info("projection: %s transform of %r (%d rows) in %.1f s", transform, name, x.shape[0],
                 time.perf_counter() - t1)
    return out


def neighbor_weights(distances: ArrayLike) -> NDArray[np.float64]:
    """Weights (rows summing to 1) of each row's nearest fitted rows, from their distances.

    UMAP's membership strengths of a new point (McInnes et al., 2018, Sec. 3; umap-learn's
    ``transform`` with its default ``local_connectivity=1``, whose nearest distance ``rho`` is 0
    there): ``w_j = exp(-d_j / sigma)``, with ``sigma`` found for each row (bisection on its
    logarithm) so that the ``k`` strengths sum to ``log2(k)``, then normalised to sum to 1. Closer
    neighbours weigh more, and a row's spread of distances sets how much more. With ``k = 1``
    the weight is 1. Distances are taken in units of the row's mean distance (the weights do not
    change; the bisection's range then fits every scale).

    Parameters
    ----------
    distances : array-like, shape (n_rows, k)
        Distances to the ``k`` nearest fitted rows (any order), non-negative and finite.

    Returns
    -------
    ndarray of float64, shape (n_rows, k)

    Examples
    --------
    Equal distances weigh equally:

    >>> neighbor_weights([[2.0, 2.0, 2.0, 2.0]]).tolist()
    [[0.25, 0.25, 0.25, 0.25]]
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 1:
        raise ValueError(f"Expected `distances` of shape (n_rows, k) with k >= 1, got {d.shape}.")
    if d.size and (not np.isfinite(d).all() or (d < 0).any()):
        raise ValueError("Expected finite non-negative distances, got NaN, inf or a negative value.")
    n, k = d.shape
    if k == 1:
        return np.ones((n, 1))
    scale = d.mean(axis=1, keepdims=True)
    r = d / np.where(scale > 0, scale, 1.0)  # distances in units of the row's mean: sigma ~ 1
    target = math.log2(k)
    lo = np.full((n, 1), -30.0)  # log(sigma)
    hi = np.full((n, 1), 30.0)
    for _ in range(64):  # the strengths' sum grows with sigma: bisect log(sigma)
        mid = (lo + hi) / 2
        total = np.exp(-r / np.exp(mid)).sum(axis=1, keepdims=True)
        above = total > target
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    sigma = np.exp((lo + hi) / 2)
    # relative to the nearest neighbour: the normalised weights are the same, and never all 0
    w = np.exp(-(r - r.min(axis=1, keepdims=True)) / sigma)
    return np.asarray(w / w.sum(axis=1, keepdims=True))


def place_by_neighbors(
    distances: ArrayLike, indices: ArrayLike, embedding: ArrayLike,
) -> NDArray[np.float32]:
    """Map positions of new rows: the weighted mean of their nearest fitted rows' positions.

    The weights are :func:`neighbor_weights` of the distances. This is how umap-learn starts its
    ``transform`` (``init_graph_transform``) before optimising the new points for a third of the
    fit's epochs; the optimisation is left out here (it dominates the cost of placing many rows
    and changes a map's neighbourhoods little: trustworthiness measured in ``docs/scale.md``).

    Parameters
    ----------
    distances : array-like, shape (n_rows, k)
        Distances to each new row's ``k`` nearest fitted rows.
    indices : array-like of int, shape (n_rows, k)
        Those fitted rows' positions in ``embedding``.
    embedding : array-like, shape (n_fitted, 2)
        The map of the fitted rows.

    Returns
    -------
    ndarray of float32, shape (n_rows, 2)

    Examples
    --------
    >>> emb = np.array([[0.0, 0.0], [4.0, 0.0], [9.0, 9.0]])
    >>> place_by_neighbors([[1.0, 1.0]], [[0, 1]], emb).tolist()
    [[2.0, 0.0]]
    """
    idx = np.asarray(indices)
    emb = np.asarray(embedding, dtype=np.float64)
    w = neighbor_weights(distances)
    if idx.shape != w.shape:
        raise ValueError(f"Expected `indices` of shape {w.shape} (as `distances`), got {idx.shape}.")
    if emb.ndim != 2:
        raise ValueError(f"Expected `embedding` of shape (n_fitted, n_components), got {emb.shape}.")
    if idx.size and (idx.min() < 0 or idx.max() >= emb.shape[0]):
        raise ValueError(f"Expected `indices` in [0, {emb.shape[0]}), got values outside.")
    return np.einsum("ij,ijc->ic", w, emb[idx]).astype(np.float32)
