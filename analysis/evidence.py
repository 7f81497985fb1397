"""Evidence for a reviewer: the label the model suggests, and an example's nearest training neighbours.

* :func:`suggested_labels` — the model's suggested label per row: the table's ``suggested_label``
  column when the analysis wrote one (the majority / mean-probability prediction across epochs),
  else the final epoch's prediction ``final_pred``.
* :func:`nearest_neighbors` — the k nearest *training* examples of some query examples in
  feature space, by cosine similarity on L2-normalised features (the geometry of the kNN OOD
  score, Sun et al. 2022). Exact: the bank is scanned in blocks, so memory stays bounded at any
  bank size and the result equals a full sort.
* :func:`training_neighbors` — the same for one example of a run. Up to
  :data:`analysis.neighbors.EXACT_MAX_REFERENCE` training rows it is the exact search above; a
  larger bank is indexed once (:class:`analysis.neighbors.NeighborIndex`, the clustered search of
  the kNN OOD score, on the normalised rows: on unit vectors the Euclidean order is the cosine
  order) and the index is kept for the next example, so each lookup compares a few thousand
  rows instead of the whole bank.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from analysis import neighbors, runstore
from analysis import schema as S

__all__ = ["SUGGESTED_LABEL", "nearest_neighbors", "suggested_labels", "training_neighbors",
           "typical_examples"]

SUGGESTED_LABEL: str = getattr(S, "SUGGESTED_LABEL", "suggested_label")
"""The analysis' column of suggested labels (when the table has it)."""

_BLOCK_ROWS = 65_536
"""Bank rows per block of :func:`nearest_neighbors` (a block of 65,536 x 512 float32 is 128 MiB)."""
INDEX_CANDIDATES = 2048
"""Bank rows the clustered search of :func:`training_neighbors` compares with each query."""
_INDEXES: dict[tuple[str, int, int, int], neighbors.NeighborIndex] = {}
"""Clustered indexes of large training banks, by (features file, mtime, size, candidates); the
last one is kept (it holds the normalised bank: n_bank x (2 d + 1) float32)."""


def suggested_labels(table: pd.DataFrame) -> pd.Series:
    """The label the model suggests for each row (nullable ints, aligned with ``table``).

    The table's ``suggested_label`` column when present, else ``final_pred`` (the prediction of
    the last recorded epoch). Missing where the model has no prediction for a row.

    Raises
    ------
    ValueError
        The table has neither column.

    Examples
    --------
    >>> import pandas as pd
    >>> suggested_labels(pd.DataFrame({"final_pred": [1, None], "label": [0, 2]})).tolist()
    [1, <NA>]
    """
    for col in (SUGGESTED_LABEL, S.FINAL_PRED):
        if col in table.columns:
            return pd.Series(pd.array(table[col], dtype="Int64"), index=table.index, name=SUGGESTED_LABEL)
    raise ValueError(
        f"Expected a `{SUGGESTED_LABEL}` or `{S.FINAL_PRED}` column in the table, got neither; "
        "run `datamap analyze` on a run with training dynamics."
    )


def _normalised(features: NDArray[Any]) -> NDArray[np.float32]:
    x = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def nearest_neighbors(
    queries: NDArray[Any],
    bank: NDArray[Any],
    *,
    k: int = 8,
    exclude: Sequence[int] | NDArray[np.int64] | None = None,
    block_rows: int = _BLOCK_ROWS,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The ``k`` nearest bank rows of each query, by cosine similarity (L2-normalised features).

    Parameters
    ----------
    queries : array (n_queries, n_features)
    bank : array (n_bank, n_features)
        The training features (a memory map works: it is read in blocks).
    k : int, default 8
        Neighbours per query (fewer when the bank is smaller).
    exclude : sequence of int, optional
        For each query, a bank row it must not return (the query itself when it is a training
        example), or -1 for none.
    block_rows : int
        Bank rows compared at a time.

    Returns
    -------
    indices : int64 array (n_queries, k')
        Bank rows, nearest first (ties: lower row first).
    similarities : float32 array (n_queries, k')
        Their cosine similarities to the query.

    Raises
    ------
    ValueError
        Shapes that do not match, or ``k < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> bank = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> idx, sim = nearest_neighbors(np.array([[2.0, 0.1]]), bank, k=2)
    >>> idx.tolist(), [round(float(v), 3) for v in sim[0]]
    ([[0, 2]], [0.999, 0.742])
    """
    q = np.asarray(queries)
    if q.ndim != 2 or bank.ndim != 2 or q.shape[1] != bank.shape[1]:
        raise ValueError(
            f"Expected `queries` (n_queries, d) and `bank` (n_bank, d) with the same d, got "
            f"{q.shape} and {bank.shape}."
        )
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"Expected `k` >= 1, got {k!r}.")
    if block_rows < 1:
        raise ValueError(f"Expected `block_rows` >= 1, got {block_rows!r}.")
    n_q, n_bank = q.shape[0], bank.shape[0]
    skip = np.full(n_q, -1, dtype=np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
    if skip.shape != (n_q,):
        raise ValueError(f"Expected `exclude` to have shape ({n_q},), got {skip.shape}.")
    k_eff = int(min(k, n_bank - int((skip >= 0).any())))
    if n_q == 0 or k_eff <= 0:
        return np.zeros((n_q, 0), dtype=np.int64), np.zeros((n_q, 0), dtype=np.float32)
    qn = _normalised(q)
    best_sim = np.full((n_q, k_eff), -np.inf, dtype=np.float32)
    best_idx = np.full((n_q, k_eff), np.iinfo(np.int64).max, dtype=np.int64)
    rows_q = np.arange(n_q)
    for start in range(0, n_bank, block_rows):
        block = _normalised(bank[start:start + block_rows])
        sim = qn @ block.T  # (n_q, b)
        local = skip - start
        hit = (local >= 0) & (local < block.shape[0])
        sim[rows_q[hit], local[hit]] = -np.inf
        idx = np.broadcast_to(np.arange(start, start + block.shape[0], dtype=np.int64), sim.shape)
        cand_sim = np.concatenate([best_sim, sim], axis=1)
        cand_idx = np.concatenate([best_idx, idx], axis=1)
        # nearest first; ties broken by the lower bank row (a stable, exact order)
        order = np.lexsort((cand_idx, -cand_sim), axis=1)[:, :k_eff]
        best_sim = np.take_along_axis(cand_sim, order, axis=1)
        best_idx = np.take_along_axis(cand_idx, order, axis=1)
    return best_idx, best_sim


def training_neighbors(
    run_dir: str | os.PathLike[str], example_id: Any, split: str, *, k: int = 8,
) -> pd.DataFrame | None:
    """The ``k`` nearest training examples of one example, by cosine similarity of the stored
    penultimate-layer features (``features/train.npy`` is the bank, read in blocks).

    Parameters
    ----------
    run_dir : path-like
    example_id : int or str
    split : str
        The example's split (its features are in ``features/<split>.npy``).
    k : int, default 8

    Returns
    -------
    DataFrame or None
        ``example_id``, ``similarity``, nearest first (the example itself is never listed);
        None when the run stores no training features or none for this example.

    Notes
    -----
    Up to :data:`analysis.neighbors.EXACT_MAX_REFERENCE` training rows the search is exact
    (:func:`nearest_neighbors`). Above, the first call builds a clustered
    :class:`~analysis.neighbors.NeighborIndex` of the normalised bank (kept for later calls on
    the same features file) and each call compares :data:`INDEX_CANDIDATES` rows: a neighbour it
    misses is replaced by a farther one, and the similarities listed are exact.
    """
    try:
        bank_ids, bank = runstore.load_features(run_dir, S.TRAIN_SPLIT)
        if split == S.TRAIN_SPLIT:
            ids, feats = bank_ids, bank
        else:
            ids, feats = runstore.load_features(run_dir, split)
    except FileNotFoundError:
        return None
    row = int(pd.Index(ids).get_indexer([example_id])[0])
    if row < 0:
        return None
    query = np.asarray(feats[row:row + 1], dtype=np.float32)
    exclude = [row] if split == S.TRAIN_SPLIT else None
    if bank.shape[0] <= neighbors.EXACT_MAX_REFERENCE:
        idx, sim = nearest_neighbors(query, bank, k=k, exclude=exclude)
    else:
        idx, sim = _indexed_neighbors(run_dir, bank, query, k=k, exclude=exclude)
    return pd.DataFrame({S.EXAMPLE_ID: np.asarray(bank_ids)[idx[0]], "similarity": sim[0]})


def _bank_index(run_dir: str | os.PathLike[str], bank: NDArray[Any]) -> neighbors.NeighborIndex:
    """The clustered index of a run's training features, built once per features file."""
    path = runstore._run_dir(run_dir) / S.FEATURES_DIR / f"{S.TRAIN_SPLIT}.npy"
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, INDEX_CANDIDATES)
    index = _INDEXES.get(key)
    if index is None:
        unit = np.empty(bank.shape, dtype=np.float32)
        for start in range(0, bank.shape[0], _BLOCK_ROWS):
            block = _normalised(bank[start:start + _BLOCK_ROWS])
            unit[start:start + len(block)] = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
        index = neighbors.NeighborIndex(method="clustered", candidates=INDEX_CANDIDATES).fit(unit)
        _INDEXES.clear()
        _INDEXES[key] = index
    return index


def _indexed_neighbors(
    run_dir: str | os.PathLike[str], bank: NDArray[Any], query: NDArray[np.float32], *, k: int,
    exclude: list[int] | None,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """:func:`nearest_neighbors` of one query through the bank's clustered index."""
    index = _bank_index(run_dir, bank)
    k_eff = int(min(k, bank.shape[0] - (1 if exclude else 0)))
    unit = np.nan_to_num(_normalised(query), nan=0.0, posinf=0.0, neginf=0.0)
    _, idx = index.kneighbors(unit, k_eff, exclude=exclude)
    # on unit vectors ||a - b||^2 = 2 - 2 cos(a, b): the Euclidean order is the cosine order; the
    # similarities are the dot products themselves (0 for a zero row, as in the exact search)
    sim = (index.reference_[idx[0]] @ unit[0])[None, :].astype(np.float32)
    order = np.lexsort((idx[0], -sim[0]))  # nearest first; ties: the lower bank row first
    return idx[:, order].astype(np.int64), sim[:, order]


def typical_examples(table: pd.DataFrame, label: int, *, n: int = 4) -> NDArray[np.int64]:
    """Rows of ``n`` typical training examples of a class: those the model learned most surely.

    The training rows whose given label is ``label``, by ``confidence`` (mean p(gold) over
    epochs) highest first, ties by position; rows without a confidence come last.

    Returns
    -------
    int array
        Row positions in ``table`` (at most ``n``).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"split": ["train"] * 4 + ["test"], "label": [1, 1, 0, 1, 1],
    ...                   "confidence": [0.5, 0.9, 0.99, 0.9, 1.0]})
    >>> typical_examples(t, 1, n=2).tolist()
    [1, 3]
    """
    if S.LABEL not in table.columns:
        return np.zeros(0, dtype=np.int64)
    labels = table[S.LABEL].to_numpy(dtype=np.float64, na_value=np.nan)
    ok = labels == float(label)
    if S.SPLIT in table.columns:
        ok &= table[S.SPLIT].astype(str).to_numpy() == S.TRAIN_SPLIT
    rows = np.flatnonzero(ok)
    if S.CONFIDENCE in table.columns and rows.size:
        conf = table[S.CONFIDENCE].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
        conf = np.where(np.isfinite(conf), conf, -np.inf)
        rows = rows[np.argsort(-conf, kind="stable")]
    return rows[:n].astype(np.int64)
