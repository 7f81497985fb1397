"""The same analysis on a Dask cluster, for runs whose dynamics or features outgrow one machine.

Nothing here changes a definition: every per-example metric is a reduction over that example's
epochs, so the dynamics are shuffled by ``example_id`` and each partition runs the in-memory code
(:func:`analysis.dynamics.pivot_dynamics`, :func:`analysis.dynamics.compute_dynamics_metrics`) on
its own examples. The Mahalanobis scorers are fitted from sufficient statistics (per-class counts
and sums, then the within-class scatter and, for Ledoit-Wolf shrinkage, the sum of ``||x||^4``),
gathered in one pass each over the blocks, and score block by block.

``dask[dataframe]`` (and ``distributed`` for a cluster) is an optional extra:
``pip install "datamap[dask]"``. Pass a ``distributed.Client`` or let the current Dask scheduler
run the graph. On a real cluster the run directory must be readable from every worker (a shared
file system, or an fsspec URL that Dask understands for the Parquet parts).

Usage::

    from distributed import Client
    from analysis.dask_backend import analyze_run_dask
    client = Client("tcp://scheduler:8786")
    table = analyze_run_dask("runs/big", npartitions=64)   # writes runs/big/table.parquet

The OOD stage of :func:`analyze_run_dask` (scores, projection, diagnosis, OOD evaluation) runs on
the driver as in :func:`analysis.pipeline.analyze_run`, over the per-example table; for feature
matrices beyond one machine's memory use :func:`fit_mahalanobis`, :func:`fit_knn`,
:func:`score_blocks` and :func:`score_fitted_blocks` directly.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from analysis import ood as O
from analysis import runstore
from analysis import schema as S
from analysis.dynamics import DenseDynamics, compute_aum, pivot_dynamics
from analysis.pipeline import _COMPACT, AnalyzeOptions, assemble_table, metrics_from_dense
from analysis.schema import _py

if TYPE_CHECKING:
    import dask.array as da
    import dask.dataframe as dd

__all__ = ["dynamics_metrics", "analyze_run_dask", "fit_knn", "fit_mahalanobis", "score_blocks",
           "score_fitted_blocks"]

_IN_EXAMPLES = "__in_examples"


def _require_dask() -> None:
    try:
        import dask.dataframe  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the test environment has dask
        raise ImportError(
            'The Dask backend needs dask: pip install "datamap[dask]" (dask[dataframe], distributed).'
        ) from exc


def _dynamics_columns(run: Path) -> list[str]:
    files = runstore._dynamics_files(run)
    if not files:
        raise S.SchemaError(
            f"{str(run / S.DYNAMICS_DIR)!r} holds no .parquet shard: the run has no training dynamics."
        )
    common: set[str] | None = None
    for f in files:
        try:
            names = set(pq.read_schema(f).names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise S.SchemaError(f"{str(f)!r} is not a readable Parquet file ({exc}).") from exc
        missing = [c for c in S.DYNAMICS_REQUIRED if c not in names]
        if missing:
            raise S.SchemaError(f"{str(f)!r} misses the required dynamics columns {missing}.")
        common = names if common is None else common & names
    assert common is not None
    return [S.EXAMPLE_ID, S.EPOCH] + [c for c in _COMPACT if c in common]


def _partition_metrics(
    part: pd.DataFrame, dyn_cols: list[str], n_classes: int, opts: AnalyzeOptions, first_epoch: int | None
) -> pd.DataFrame:
    """Metrics of the examples in one partition (every row of each of its examples is here).

    ``first_epoch`` is the run's first epoch when AUM skips it (a partition may lack that epoch
    altogether, so "the first row" cannot be decided locally); None otherwise.
    """
    ex = part.loc[part[_IN_EXAMPLES].notna(), [S.EXAMPLE_ID, S.LABEL]].drop_duplicates(S.EXAMPLE_ID)
    dyn_rows = part.loc[part[S.EPOCH].notna()]
    stray = dyn_rows[_IN_EXAMPLES].isna().to_numpy()
    if stray.any():
        missing = pd.unique(dyn_rows.loc[stray, S.EXAMPLE_ID])
        raise S.SchemaError(
            f"{len(missing)} example ids in the dynamics are not in examples.parquet "
            f"(e.g. {[_py(v) for v in missing[:5]]}). Add them to the examples table or drop those rows."
        )
    ex_ids = ex[S.EXAMPLE_ID].to_numpy()
    labels = ex[S.LABEL].to_numpy(dtype=np.float64, na_value=np.nan)
    labels = np.where(np.isnan(labels), -1, labels).astype(np.int64)
    no_skip = replace(opts, aum_skip_first_epoch=False)
    if len(dyn_rows) == 0:
        dense = _no_dynamics(ex_ids, labels)
    else:
        table = pa.Table.from_pandas(
            dyn_rows[dyn_cols].astype({S.EPOCH: np.int64, S.PRED: np.int32}), preserve_index=False
        )
        dense = pivot_dynamics(table, ex_ids, labels)
    metrics = metrics_from_dense(dense, n_classes, no_skip)
    if first_epoch is not None:
        keep = dense.epochs != first_epoch
        metrics[S.AUM] = compute_aum(dense.margin[keep], dense.observed[keep])
    metrics.insert(0, S.EXAMPLE_ID, ex_ids)
    return metrics.reset_index(drop=True)


def _no_dynamics(ex_ids: NDArray[Any], labels: NDArray[np.int64]) -> DenseDynamics:
    """Dense arrays for examples that have no dynamics at all (evaluation splits)."""
    n = len(ex_ids)
    return DenseDynamics(
        example_ids=ex_ids, labels=labels, epochs=np.zeros(1, dtype=np.int64),
        observed=np.zeros((1, n), dtype=bool), gold_prob=np.full((1, n), np.nan, dtype=np.float32),
        margin=np.full((1, n), np.nan, dtype=np.float32), pred=np.full((1, n), -1, dtype=np.int32),
    )


def dynamics_metrics(
    run_dir: str | os.PathLike[str],
    options: AnalyzeOptions | None = None,
    *,
    npartitions: int | None = None,
) -> dd.DataFrame:
    """Per-example dynamics metrics of a run as a lazy Dask DataFrame (one row per example).

    Reads the dynamics shards and ``examples.parquet`` as Dask frames, joins the labels,
    shuffles by ``example_id`` into ``npartitions`` partitions (default: as many as the dynamics
    has) and computes each partition's metrics with the in-memory functions. Columns:
    ``example_id`` and those of :func:`analysis.dynamics.compute_dynamics_metrics`; the row order
    is not the examples' (see :func:`analyze_run_dask` for the assembled table).
    """
    opts = options or AnalyzeOptions()
    run = Path(run_dir)
    runstore.load_examples(run, columns=[S.LABEL])  # validates the examples table on the driver
    return _lazy_metrics(run, runstore.load_run_meta(run), opts, npartitions)


def _lazy_metrics(run: Path, meta: runstore.RunMeta, opts: AnalyzeOptions, npartitions: int | None) -> dd.DataFrame:
    _require_dask()
    import dask.dataframe as dd

    cols = _dynamics_columns(run)
    files = [str(f) for f in runstore._dynamics_files(run)]
    dyn = dd.read_parquet(files, columns=cols)
    ex = dd.read_parquet(str(run / S.EXAMPLES_FILE), columns=[S.EXAMPLE_ID, S.LABEL])
    ex = ex.assign(**{_IN_EXAMPLES: True})
    nparts = npartitions or max(dyn.npartitions, 1)
    first_epoch = None
    if opts.aum_skip_first_epoch:
        epochs = np.sort(dyn[S.EPOCH].unique().compute().to_numpy())
        first_epoch = int(epochs[0]) if len(epochs) > 1 else None
    merged = dyn.merge(ex, on=S.EXAMPLE_ID, how="outer", npartitions=nparts)
    merged = merged.shuffle(on=S.EXAMPLE_ID, npartitions=nparts)
    empty = _partition_metrics(merged._meta, cols, meta.n_classes, opts, first_epoch)
    return merged.map_partitions(_partition_metrics, cols, meta.n_classes, opts, first_epoch, meta=empty)


def analyze_run_dask(
    run_dir: str | os.PathLike[str],
    options: AnalyzeOptions | None = None,
    *,
    npartitions: int | None = None,
    write: bool = True,
) -> pd.DataFrame:
    """:func:`analysis.pipeline.analyze_run` with the dynamics metrics computed on Dask.

    The returned (and written) table equals the in-memory one: same rows in the same order, same
    columns and values. The OOD stage runs on the driver (see the module docstring).
    """
    from analysis.pipeline import finish_table

    opts = options or AnalyzeOptions()
    run = Path(run_dir)
    meta = runstore.load_run_meta(run)
    examples = runstore.load_examples(run)
    metrics = _lazy_metrics(run, meta, opts, npartitions).compute()
    index = pd.Index(metrics[S.EXAMPLE_ID].to_numpy())
    if not index.is_unique or len(index) != len(examples):
        raise RuntimeError(
            f"The Dask partitions returned {len(index)} example rows for {len(examples)} examples; "
            "each example must land in exactly one partition."
        )
    pos = index.get_indexer(examples[S.EXAMPLE_ID].to_numpy())
    metrics = metrics.iloc[pos].drop(columns=[S.EXAMPLE_ID]).reset_index(drop=True)
    table = assemble_table(examples, metrics, meta, opts)
    return finish_table(run, table, meta, opts, write=write)


# ---- Mahalanobis from sufficient statistics ------------------------------------------------------


def _class_sums(x: NDArray[Any], y: NDArray[Any], n_classes: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, x.shape[1]), dtype=np.float64)
    O._grouped_sum(sums, y, x)
    return counts[None], sums[None]


def _centred_stats(x: NDArray[Any], y: NDArray[Any], mu: NDArray[np.float64],
                   dtype: Any) -> NDArray[np.float64]:
    """One row: the scatter ``X^T X`` of the rows centred on their ``mu[y]`` (products in ``dtype``,
    as :func:`analysis.ood._within_scatter`), then the sum of ``||x - mu||^4`` (for Ledoit-Wolf)."""
    xc = np.array(x, dtype=dtype, order="C")
    xc -= mu.astype(dtype)[y]
    scatter = (xc.T @ xc).astype(np.float64)
    fourth = np.square(np.einsum("ij,ij->i", xc, xc, dtype=np.float64)).sum()
    return np.append(scatter.ravel(), fourth)[None]


def _lw_alpha(scatter: NDArray[np.float64], sum_fourth: float, n: int) -> float:
    """Ledoit-Wolf shrinkage from the scatter ``X^T X`` of centred rows and ``sum ||x||^4``:
    scikit-learn's ``ledoit_wolf_shrinkage(X, assume_centered=True)`` without the rows."""
    p = scatter.shape[0]
    emp_cov = scatter / n
    mu = np.trace(emp_cov) / p
    delta_ = float(np.sum(np.square(scatter))) / n**2
    beta_ = sum_fourth
    beta = 1.0 / (p * n) * (beta_ / n - delta_)
    delta = (delta_ - 2.0 * mu * np.trace(emp_cov) + p * mu**2) / p
    beta = min(beta, delta)
    return 0.0 if beta == 0 else float(beta / delta)


def fit_mahalanobis(
    features: da.Array,
    labels: da.Array,
    *,
    relative: bool = False,
    shrinkage: float | Literal["auto"] | None = None,
    dtype: Literal["float32", "float64"] = "float32",
) -> O.MahalanobisScorer:
    """Fit :class:`~analysis.ood.MahalanobisScorer` (or the relative variant) on Dask arrays.

    Passes over the row blocks: per-class counts and sums (means), then the within-class scatter
    with the sum of ``||x - mu||^4`` that Ledoit-Wolf shrinkage needs, and for the relative score
    the same about the mean of all rows. Each block's products are float32 (or
    ``dtype``) and sum in float64, as in memory, so the fitted scorer agrees with
    ``MahalanobisScorer().fit`` on the same rows to float rounding.

    Parameters
    ----------
    features : dask array (n, d), chunked along rows only
    labels : dask array of int (n,), chunked like ``features``' rows
    """
    _require_dask()
    import dask
    import dask.array as dsa

    if features.ndim != 2 or labels.ndim != 1:
        raise ValueError(f"Expected features (n, d) and labels (n,), got {features.shape} and {labels.shape}.")
    if len(features.chunks[1]) != 1:
        features = features.rechunk({1: -1})
    labels = labels.rechunk((features.chunks[0],))
    scorer: O.MahalanobisScorer = (O.RelativeMahalanobisScorer if relative else O.MahalanobisScorer)(
        shrinkage=shrinkage, dtype=dtype,
    )
    np_dtype = scorer._check_params()
    y_all = np.asarray(labels.compute())
    if y_all.dtype.kind not in "iu":
        raise TypeError(f"Expected integer class `labels`, got dtype {y_all.dtype}.")
    classes, inv = np.unique(y_all, return_inverse=True)
    k = len(classes)
    n, d = int(features.shape[0]), int(features.shape[1])
    if n < 2:
        raise ValueError(f"Expected at least 2 training rows, got {n}.")
    inv_d = dsa.from_array(inv.astype(np.int64), chunks=(features.chunks[0],))
    finite = dsa.isfinite(features).all()
    parts = dsa.map_blocks(
        lambda xb, yb: np.concatenate([a.reshape(1, -1) for a in _class_sums(xb, yb[:, 0], k)], axis=1),
        features, inv_d[:, None], dtype=np.float64, chunks=((1,) * features.numblocks[0], (k + k * d,)),
    )
    stats, ok = dask.compute(parts.sum(axis=0), finite)
    if not ok:
        raise ValueError("Expected finite features, got NaN or infinity.")
    counts = stats[:k]
    sums = stats[k:].reshape(k, d)
    means = sums / counts[:, None]
    centre = sums.sum(axis=0) / n

    def centred(mu: NDArray[np.float64], by_class: bool) -> tuple[NDArray[np.float64], float]:
        blocks = dsa.map_blocks(
            lambda xb, yb: _centred_stats(xb, yb[:, 0] if by_class else np.zeros(len(yb), np.int64), mu, np_dtype),
            features, inv_d[:, None], dtype=np.float64, chunks=((1,) * features.numblocks[0], (d * d + 1,)),
        )
        acc = blocks.sum(axis=0).compute()
        return acc[:-1].reshape(d, d), float(acc[-1])

    within, fourth = centred(means, by_class=True)
    scorer.classes_ = classes
    scorer.class_counts_ = counts.astype(np.int64)
    g, cov, alpha = O._fit_gaussian(
        means, within, n, shrinkage, lambda: _lw_alpha(within, fourth, n), np_dtype, "shared within-class",
    )
    scorer.means_, scorer.covariance_, scorer.shrinkage_, scorer._gauss_ = means, cov, alpha, g
    scorer.n_samples_fit_ = n
    scorer.n_features_in_ = d
    if relative:  # the background Gaussian: one more pass, about the mean of all rows
        assert isinstance(scorer, O.RelativeMahalanobisScorer)
        total, fourth_b = centred(centre[None, :], by_class=False)
        scorer._fit_background_from_stats(centre, total, n, lambda: _lw_alpha(total, fourth_b, n), np_dtype)
    return scorer


def score_blocks(scorer: O._Scorer, x: da.Array) -> da.Array:
    """Score a Dask array block by block with a fitted scorer (a lazy 1-D array)."""
    _require_dask()
    import dask.array as dsa

    if len(x.chunks[1]) != 1:
        x = x.rechunk({1: -1})
    return dsa.map_blocks(scorer.score, x, drop_axis=1, dtype=np.float64)


def fit_knn(
    features: da.Array, *, k: int = 50, max_train: int | None = None, random_state: int = 0,
    block_size: int = 1024,
) -> O.KNNScorer:
    """Fit :class:`~analysis.ood.KNNScorer` on a Dask array: the neighbour bank on the driver.

    The bank is the rows :meth:`KNNScorer.fit` would keep (all of them, or the same uniform
    sample of ``max_train`` rows for the same ``random_state``), gathered from the cluster and
    L2-normalised; it must fit in the driver's memory (``max_train * n_features * 4`` bytes).
    Scoring then runs block by block on the workers (:func:`score_blocks`; the training rows
    themselves with :func:`score_fitted_blocks`), each block against the whole bank, so the
    scores equal the in-memory scorer's.

    Parameters
    ----------
    features : dask array (n, d), chunked along rows only
    """
    _require_dask()
    import dask.array as dsa

    x = features if isinstance(features, dsa.Array) else dsa.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"Expected `features` to have shape (n_samples, n_features), got {x.shape}.")
    n = int(x.shape[0])
    if max_train is not None and isinstance(max_train, (int, np.integer)) and n > max_train >= 2:
        bank = np.sort(np.random.default_rng(random_state).choice(n, int(max_train), replace=False))
        rows = np.asarray(x[bank].compute())
    else:
        rows = np.asarray(x.compute())
    # the in-memory fit on the gathered rows; then the bank positions refer to the full input
    scorer = O.KNNScorer(k=k, block_size=block_size, max_train=None, random_state=random_state).fit(rows)
    scorer.max_train = max_train
    if len(rows) < n:
        scorer.bank_index_ = bank
    scorer._n_fit_ = n
    return scorer


def score_fitted_blocks(scorer: O.KNNScorer, x: da.Array) -> da.Array:
    """Leave-one-out kNN scores of the rows ``scorer`` was fitted on (:meth:`KNNScorer.score_fitted`),
    block by block: each row skips itself in the bank (a lazy 1-D array)."""
    _require_dask()
    import dask.array as dsa

    if int(x.shape[0]) != scorer._n_fit_:
        raise ValueError(f"Expected the {scorer._n_fit_} rows given to `fit`, got {x.shape[0]}.")
    if len(x.chunks[1]) != 1:
        x = x.rechunk({1: -1})
    bank = np.asarray(scorer.bank_index_)
    starts = np.concatenate([[0], np.cumsum(x.chunks[0])[:-1]]).astype(np.int64)

    def block(b: NDArray[Any], start: NDArray[np.int64]) -> NDArray[np.float64]:
        s0 = int(np.asarray(start).ravel()[0])
        rows = np.arange(s0, s0 + b.shape[0])
        pos = np.searchsorted(bank, rows)
        hit = (pos < len(bank)) & (bank[np.minimum(pos, len(bank) - 1)] == rows)
        exclude = np.where(hit, pos, -1).astype(np.intp)
        return scorer._kth(O._l2_normalise(scorer._check_input(b)), exclude)

    offsets = dsa.from_array(starts, chunks=1)
    return dsa.map_blocks(block, x, offsets[:, None], drop_axis=1, dtype=np.float64)
