"""Evidence for a reviewer: the label the model suggests, and an example's nearest training neighbours.

* :func:`suggested_labels` — the model's suggested label per row: the table's ``suggested_label``
  column when the analysis wrote one (the majority / mean-probability prediction across epochs),
  else the final epoch's prediction ``final_pred``.
* :func:`nearest_neighbors` — the k nearest *training* examples of some query examples in
  feature space, by cosine similarity on L2-normalised features (the geometry of the kNN OOD
  score, Sun et al. 2022). Exact: the bank is scanned in blocks, so memory stays bounded at any
  bank size and the result equals a full sort.
* :func:`training_neighbors` — the same for one example of a run. Up to
  :data:`analysis.neighbors.EXACT_MAX_REFERENCE` training rows it is the search above; a larger
  bank is held once as an exact :class:`analysis.neighbors.NeighborIndex` of its normalised rows
  (on unit vectors the Euclidean order is the cosine order) and reused for the next example, so
  a lookup is one matrix-vector product instead of reading and normalising the whole bank. The
  index's clustered search is not used: for one query at a time its k-means build costs more than
  hundreds of exact lookups, and it misses neighbours (``benchmarks/bench_evidence.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
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
INDEX_MAX_BYTES = 1 << 30
"""Largest training bank (its normalised copy and the search's ranking matrix, n x (2 d + 1)
float32) that :func:`training_neighbors` keeps in memory as a :class:`NeighborIndex`; a larger
one is scanned from disk in blocks on every lookup."""
_BANKS: dict[tuple[str, int, int], _KeptBank] = {}
"""The last large training bank used, by (features file, mtime, size)."""


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
    Up to :data:`analysis.neighbors.EXACT_MAX_REFERENCE` training rows: :func:`nearest_neighbors`
    over the stored bank. Above (up to :data:`INDEX_MAX_BYTES`), the first call builds an exact
    :class:`~analysis.neighbors.NeighborIndex` of the normalised bank, kept for later calls on the
    same features file; the neighbours are the same, found with one matrix-vector product.
    """
    bank_file = runstore._run_dir(run_dir) / S.FEATURES_DIR / f"{S.TRAIN_SPLIT}.npy"
    try:
        stat = bank_file.stat()
        key = (str(bank_file.resolve()), stat.st_mtime_ns, stat.st_size)
        kept = _BANKS.get(key)
        if kept is None:
            bank_ids, bank = runstore.load_features(run_dir, S.TRAIN_SPLIT)
            kept = _keep_bank(key, bank_ids, bank)
        if kept is not None:  # a large bank, held normalised with its ids (no disk read)
            return _kept_neighbors(run_dir, kept, example_id, split, k=k)
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
    idx, sim = nearest_neighbors(query, bank, k=k, exclude=exclude)
    return pd.DataFrame({S.EXAMPLE_ID: np.asarray(bank_ids)[idx[0]], "similarity": sim[0]})


@dataclass(frozen=True)
class _KeptBank:
    """A large training bank held in memory: its ids and an exact index of its unit rows."""

    ids: NDArray[Any]
    position: pd.Index
    index: neighbors.NeighborIndex


def _keep_bank(key: tuple[str, int, int], bank_ids: NDArray[Any], bank: NDArray[Any]) -> _KeptBank | None:
    """Index ``bank`` and keep it under ``key`` when it is large (over the exact limit) and fits
    :data:`INDEX_MAX_BYTES`; None (scan it) otherwise."""
    n_bytes = bank.shape[0] * (2 * bank.shape[1] + 1) * 4
    if bank.shape[0] <= neighbors.EXACT_MAX_REFERENCE or n_bytes > INDEX_MAX_BYTES:
        return None
    unit = np.empty(bank.shape, dtype=np.float32)
    for start in range(0, bank.shape[0], _BLOCK_ROWS):
        block = _normalised(bank[start:start + _BLOCK_ROWS])
        unit[start:start + len(block)] = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
    ids = np.asarray(bank_ids)
    kept = _KeptBank(ids=ids, position=pd.Index(ids),
                     index=neighbors.NeighborIndex(method="exact").fit(unit))
    _BANKS.clear()  # one bank at a time: the last run looked at
    _BANKS[key] = kept
    return kept


def _kept_neighbors(
    run_dir: str | os.PathLike[str], kept: _KeptBank, example_id: Any, split: str, *, k: int,
) -> pd.DataFrame | None:
    """:func:`training_neighbors` through a kept bank (the same neighbours as the scan)."""
    reference = kept.index.reference_
    if split == S.TRAIN_SPLIT:
        row = int(kept.position.get_indexer([example_id])[0])
        if row < 0:
            return None
        unit = reference[row:row + 1]
        exclude: list[int] | None = [row]
    else:
        ids, feats = runstore.load_features(run_dir, split)
        row = int(pd.Index(ids).get_indexer([example_id])[0])
        if row < 0:
            return None
        unit = np.nan_to_num(_normalised(np.asarray(feats[row:row + 1], dtype=np.float32)),
                             nan=0.0, posinf=0.0, neginf=0.0)
        exclude = None
    k_eff = int(min(k, reference.shape[0] - (1 if exclude else 0)))
    _, idx = kept.index.kneighbors(unit, k_eff, exclude=exclude)
    # on unit vectors ||a - b||^2 = 2 - 2 cos(a, b): the Euclidean order is the cosine order; the
    # similarities are the dot products themselves (0 for a zero row, as in the scan)
    sim = (reference[idx[0]] @ unit[0]).astype(np.float32)
    order = np.lexsort((idx[0], -sim))  # nearest first; ties: the lower bank row first
    return pd.DataFrame({S.EXAMPLE_ID: kept.ids[idx[0][order]], "similarity": sim[order]})


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
