r"""Training-dynamics metrics over dense ``(n_epochs, n_examples)`` arrays.

For example :math:`i` with gold label :math:`y`, epoch :math:`e`, logits :math:`z_e` and
:math:`p_e = \mathrm{softmax}(z_e)`, over the epochs :math:`E_i` in which :math:`i` was observed:

* ``confidence``  :math:`\hat\mu_i = \frac{1}{|E_i|}\sum_{e\in E_i} p_e[y]`
  (Swayamdipta et al., 2020, "Dataset Cartography").
* ``variability`` :math:`\hat\sigma_i = \sqrt{\frac{1}{|E_i|}\sum_{e\in E_i}(p_e[y]-\hat\mu_i)^2}`
  (population std, ``ddof=0``, as ``np.std`` in the original code).
* ``correctness`` fraction of observed epochs with :math:`\arg\max_k z_e[k] = y`;
  ``correct_count`` the count the original code stores.
* ``forgetting`` number of correct :math:`\to` incorrect transitions between consecutive observed
  epochs (Toneva et al., 2019). Examples never predicted correctly have ``never_learned=True``
  and ``forgetting`` missing (the original code writes the magic number 1000;
  :func:`forgetting_reference` reproduces it).
* ``aum`` mean over observed epochs of the margin :math:`z_e[y]-\max_{k\ne y} z_e[k]` on raw logits
  (Pleiss et al., 2020), optionally skipping the first epoch.
* ``el2n`` mean of :math:`\lVert p_e - \mathrm{onehot}(y)\rVert_2` (Paul et al., 2021).

Missing epochs: an example absent from some epochs is scored over the epochs where it appears
(``n_epochs_seen`` says how many); forgetting compares consecutive *observed* epochs. An example
that appears in no epoch gets missing metrics and the region ``no-dynamics``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from analysis import schema as S
from analysis.schema import SchemaError, _py

__all__ = [
    "DenseDynamics",
    "RegionThresholds",
    "pivot_dynamics",
    "per_epoch_from_logits",
    "dynamics_from_logits",
    "compute_dynamics_metrics",
    "compute_confidence",
    "compute_variability",
    "compute_correctness",
    "compute_forgetting",
    "compute_aum",
    "assign_regions",
    "forgetting_reference",
]


@dataclass
class DenseDynamics:
    """Per-epoch measurements pivoted to dense arrays.

    Attributes
    ----------
    example_ids : ndarray (n_examples,)
    labels : ndarray of int64 (n_examples,)
        Gold labels; -1 where unknown.
    epochs : ndarray of int64 (n_epochs,)
        Sorted epoch numbers present in the logs.
    observed : ndarray of bool (n_epochs, n_examples)
    gold_prob, margin : ndarray of float32 (n_epochs, n_examples)
        NaN where not observed.
    pred : ndarray of int32 (n_epochs, n_examples)
        -1 where not observed.
    loss, el2n : ndarray of float32 (n_epochs, n_examples) or None
    """

    example_ids: NDArray[Any]
    labels: NDArray[np.int64]
    epochs: NDArray[np.int64]
    observed: NDArray[np.bool_]
    gold_prob: NDArray[np.float32]
    margin: NDArray[np.float32]
    pred: NDArray[np.int32]
    loss: NDArray[np.float32] | None = None
    el2n: NDArray[np.float32] | None = None

    @property
    def correct(self) -> NDArray[np.bool_]:
        """``(n_epochs, n_examples)``: predicted label equals gold label (False where unobserved)."""
        return (self.pred == self.labels[None, :]) & self.observed


@dataclass(frozen=True)
class RegionThresholds:
    """Explicit, adjustable data-map region boundaries.

    Rule (applied in this order): ``variability >= variability`` → ambiguous; else
    ``confidence >= confidence`` → easy-to-learn; else hard-to-learn.
    """

    confidence: float = 0.5
    variability: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"Expected confidence threshold in [0, 1], got {self.confidence!r}.")
        if not 0.0 <= self.variability <= 0.5:
            raise ValueError(
                f"Expected variability threshold in [0, 0.5] (the largest possible std of a "
                f"probability), got {self.variability!r}."
            )


# ---- from logits -----------------------------------------------------------------------------------


def per_epoch_from_logits(
    logits: NDArray[np.floating[Any]], labels: NDArray[np.integer[Any]]
) -> dict[str, NDArray[Any]]:
    """Compact per-measurement values from raw logits.

    Computed in the logits' precision: float32 logits in float32 (as the original code's
    ``torch.softmax``), anything else in float64.

    Parameters
    ----------
    logits : ndarray (..., n_classes)
    labels : ndarray of int (...)

    Returns
    -------
    dict with ``gold_prob``, ``margin``, ``pred``, ``loss`` (cross-entropy), ``el2n``, each of
    shape ``labels.shape``.
    """
    z = np.asarray(logits)
    z = z if z.dtype in (np.float32, np.float64) else z.astype(np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.shape[:-1] != y.shape:
        raise ValueError(
            f"Expected `logits` of shape {y.shape + ('n_classes',)} to match `labels`, got {z.shape}."
        )
    n_classes = z.shape[-1]
    if n_classes < 2:
        raise ValueError(f"Expected at least 2 classes in `logits`, got {n_classes}.")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        bad = y[(y < 0) | (y >= n_classes)][0]
        raise ValueError(f"Expected labels in [0, {n_classes}), got {int(bad)}.")
    if not np.isfinite(z).all():
        raise ValueError("`logits` contain NaN or inf; check the model output (diverged training?).")
    # Classes-first layout: reductions over the (few) classes become element-wise operations
    # across contiguous rows, which NumPy vectorises; ~5x faster than reducing the last axis.
    lead = y.shape
    zt = np.ascontiguousarray(z.reshape(-1, n_classes).T)  # (n_classes, m)
    yf = y.reshape(-1)
    cols = np.arange(zt.shape[1])
    zmax = zt.max(axis=0)
    ex = np.exp(zt - zmax)
    total = ex.sum(axis=0)
    gold_z = zt[yf, cols]
    gold_logp = gold_z - zmax - np.log(total)
    gold_p = np.exp(gold_logp)
    zt[yf, cols] = -np.inf  # zt is our own copy
    margin = gold_z - zt.max(axis=0)
    zt[yf, cols] = gold_z
    # argmax over axis 0 is slow in NumPy; the first class reaching the max is the same answer.
    pred = np.zeros(zt.shape[1], dtype=np.int32)
    for k in range(n_classes - 1, -1, -1):
        pred[zt[k] == zmax] = k
    # EL2N^2 = sum_{k != y} p_k^2 + (1 - p_y)^2 with 1 - p_y = sum_{k != y} p_k: sums of positive
    # terms only, so a confidently learned row (p_y -> 1) keeps its relative precision instead of
    # cancelling to 0 (as sum p^2 - 2 p_y + 1 does in float32).
    ex[yf, cols] = 0.0  # ex is our own array
    others = ex.sum(axis=0)
    el2n = np.sqrt((ex * ex).sum(axis=0) + others * others) / total
    return {
        S.GOLD_PROB: gold_p.reshape(lead),
        S.MARGIN: margin.reshape(lead),
        S.PRED: pred.reshape(lead),
        S.LOSS: (-gold_logp).reshape(lead),
        S.EL2N: el2n.reshape(lead),
    }


def dynamics_from_logits(
    logits: NDArray[np.floating[Any]],
    labels: NDArray[np.integer[Any]],
    *,
    example_ids: NDArray[Any] | None = None,
    chunk_size: int = 4096,
) -> DenseDynamics:
    """Dense dynamics straight from in-memory logits ``(n_epochs, n_examples, n_classes)``.

    Works epoch by epoch in chunks of ``chunk_size`` examples, so peak memory stays near the
    size of the inputs plus a few ``(n_epochs, n_examples)`` float32 arrays. Small chunks keep
    the temporaries in cache and out of fresh ``mmap`` allocations (measured fastest at 4096).
    """
    z = np.asarray(logits)
    if z.ndim != 3:
        raise ValueError(f"Expected `logits` of shape (n_epochs, n_examples, n_classes), got {z.shape}.")
    n_epochs, n, _ = z.shape
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (n,):
        raise ValueError(f"Expected `labels` of shape ({n},), got {y.shape}.")
    gold_prob = np.empty((n_epochs, n), np.float32)
    margin = np.empty((n_epochs, n), np.float32)
    pred = np.empty((n_epochs, n), np.int32)
    loss = np.empty((n_epochs, n), np.float32)
    el2n = np.empty((n_epochs, n), np.float32)
    for e in range(n_epochs):
        for lo in range(0, n, chunk_size):
            hi = min(lo + chunk_size, n)
            v = per_epoch_from_logits(z[e, lo:hi], y[lo:hi])
            gold_prob[e, lo:hi] = v[S.GOLD_PROB]
            margin[e, lo:hi] = v[S.MARGIN]
            pred[e, lo:hi] = v[S.PRED]
            loss[e, lo:hi] = v[S.LOSS]
            el2n[e, lo:hi] = v[S.EL2N]
    ids = np.arange(n) if example_ids is None else np.asarray(example_ids)
    return DenseDynamics(ids, y, np.arange(n_epochs, dtype=np.int64), np.ones((n_epochs, n), bool),
                         gold_prob, margin, pred, loss, el2n)


# ---- pivot ---------------------------------------------------------------------------------------------


def _index_of(ids: NDArray[Any], example_ids: NDArray[Any]) -> NDArray[np.intp]:
    """Position of each of ``ids`` in ``example_ids`` (-1 if absent)."""
    if ids.dtype.kind in "iu" and example_ids.dtype.kind in "iu":
        if len(example_ids) > 1 and bool(np.all(example_ids[1:] > example_ids[:-1])):
            pos = np.searchsorted(example_ids, ids)
            pos_c = np.minimum(pos, len(example_ids) - 1)
            return np.where(example_ids[pos_c] == ids, pos_c, -1).astype(np.intp)
    return pd.Index(example_ids).get_indexer(ids).astype(np.intp)


def _first_row(table: pa.Table, mask: pa.ChunkedArray | pa.Array) -> str:
    """``example X at epoch E`` for the first row where ``mask`` holds."""
    row = int(pc.index(mask, True).as_py())
    where = f"example {_py(table.column(S.EXAMPLE_ID)[row].as_py())!r}"
    if S.EPOCH in table.column_names:
        where += f" at epoch {table.column(S.EPOCH)[row].as_py()}"
    return where


def _col(table: pa.Table, name: str, dtype: Any) -> NDArray[Any]:
    col = table.column(name)
    if col.null_count:
        raise SchemaError(
            f"dynamics column `{name}` has {col.null_count} missing values, e.g. for "
            f"{_first_row(table, pc.is_null(col))} (NaN or inf logits are stored as missing); "
            "every logged row needs finite values."
        )
    if np.dtype(dtype).kind in "iu" and not pa.types.is_integer(col.type):
        if not (pa.types.is_floating(col.type) or pa.types.is_decimal(col.type)):
            raise SchemaError(f"dynamics column `{name}` must hold integers, got type {col.type}.")
        values = col.to_numpy()
        frac = ~np.isfinite(values) | (values != np.round(values))
        if frac.any():
            raise SchemaError(
                f"dynamics column `{name}` must hold integers, but it is {values[frac][0]!r} for "
                f"{_first_row(table, pa.array(frac))}."
            )
        return values.astype(dtype)
    return np.asarray(col.to_numpy(), dtype=dtype)


def pivot_dynamics(
    dynamics: pa.Table,
    example_ids: Sequence[Any] | NDArray[Any],
    labels: Sequence[int] | NDArray[np.integer[Any]],
    *,
    on_duplicate: Literal["first", "error"] = "first",
) -> DenseDynamics:
    """Pivot the long dynamics table to dense ``(n_epochs, n_examples)`` arrays.

    Parameters
    ----------
    dynamics : pyarrow.Table
        Long table with at least ``example_id``, ``epoch``, ``gold_prob``, ``margin``, ``pred``.
    example_ids : array (n_examples,)
        Order of the output columns (typically ``examples.parquet``'s ids).
    labels : array of int (n_examples,)
        Gold label of each example, -1 where unknown.
    on_duplicate : {"first", "error"}
        Several rows for one (example, epoch) — e.g. padded distributed samplers — keep the first
        row in shard order (with a warning), or raise.

    Raises
    ------
    SchemaError
        Ids in the dynamics that the examples table lacks, duplicate rows with
        ``on_duplicate="error"``, non-finite values, or an example with dynamics but no label.
    """
    ex_ids = np.asarray(example_ids)
    y = np.asarray(labels, dtype=np.int64)
    n = len(ex_ids)
    if y.shape != (n,):
        raise ValueError(f"Expected `labels` of shape ({n},), got {y.shape}.")
    if dynamics.num_rows == 0:
        raise SchemaError("The dynamics table is empty.")
    # Fast path: each epoch's rows stored as one block in examples order (what every datamap
    # writer produces). Blocks are read slice by slice straight into the dense arrays.
    blocked = _blocked_epochs(dynamics, ex_ids)
    flat: NDArray[np.intp] | None = None
    if blocked is not None:
        epochs = blocked
        n_epochs = len(epochs)
    else:
        ids = dynamics.column(S.EXAMPLE_ID).to_numpy(zero_copy_only=False)
        if ids.dtype.kind != ex_ids.dtype.kind and {ids.dtype.kind, ex_ids.dtype.kind} <= {"i", "u"}:
            ids = ids.astype(np.int64)
        epoch_col = _col(dynamics, S.EPOCH, np.int64)
        epochs = np.unique(epoch_col) if len(epoch_col) < 4096 else _small_unique(epoch_col)
        n_epochs = len(epochs)
        idx = _index_of(ids, ex_ids)
        if (idx < 0).any():
            missing = pd.unique(ids[idx < 0])
            raise SchemaError(
                f"{len(missing)} example ids in the dynamics are not in examples.parquet "
                f"(e.g. {missing[:5].tolist()}). Add them to the examples table or drop those rows."
            )
        e_idx = np.searchsorted(epochs, epoch_col)
        flat = e_idx * n + idx
        counts = np.bincount(flat, minlength=n_epochs * n)
        if (counts > 1).any():
            n_dup = int((counts > 1).sum())
            where = np.flatnonzero(counts > 1)[0]
            msg = (
                f"{n_dup} (example, epoch) pairs appear more than once in the dynamics, e.g. "
                f"example {_py(ex_ids[where % n])!r} at epoch {int(epochs[where // n])}."
            )
            if on_duplicate == "error":
                raise SchemaError(msg + " Each example may be logged once per epoch.")
            warnings.warn(msg + " Keeping the first row of each.", stacklevel=2)

    def dense(name: str, dtype: Any, fill: Any) -> NDArray[Any]:
        if flat is None:
            col = dynamics.column(name)
            if col.null_count or (np.dtype(dtype).kind in "iu" and not pa.types.is_integer(col.type)):
                _col(dynamics, name, dtype)  # raises on missing or fractional values
            out = np.empty((n_epochs, n), dtype=dtype)
            for e in range(n_epochs):
                out[e] = col.slice(e * n, n).to_numpy(zero_copy_only=False)
            return out
        vals = _col(dynamics, name, dtype)
        flat_out = np.full(n_epochs * n, fill, dtype=dtype)
        flat_out[flat[::-1]] = vals[::-1]  # reversed so the first row of a duplicate wins
        return flat_out.reshape(n_epochs, n)

    observed: NDArray[np.bool_]
    if flat is None:
        observed = np.ones((n_epochs, n), dtype=bool)
    else:
        seen = np.zeros(n_epochs * n, dtype=bool)
        seen[flat] = True
        observed = seen.reshape(n_epochs, n)
    gold_prob = dense(S.GOLD_PROB, np.float32, np.nan)
    margin = dense(S.MARGIN, np.float32, np.nan)
    pred = dense(S.PRED, np.int32, -1)
    for name, arr in ((S.GOLD_PROB, gold_prob), (S.MARGIN, margin)):
        if np.isfinite(arr[observed] if flat is not None else arr).all():
            continue
        bad = observed & ~np.isfinite(arr)
        if bad.any():
            e, i = np.argwhere(bad)[0]
            raise SchemaError(
                f"dynamics column `{name}` is NaN or inf for example {_py(ex_ids[i])!r} at epoch "
                f"{int(epochs[e])}; the logits were not finite (diverged training?)."
            )
    outside = observed & ((gold_prob < 0) | (gold_prob > 1))
    if outside.any():
        e, i = np.argwhere(outside)[0]
        raise SchemaError(
            f"dynamics column `{S.GOLD_PROB}` is {float(gold_prob[e, i])!r} for example "
            f"{_py(ex_ids[i])!r} at epoch {int(epochs[e])}; a probability lies in [0, 1]."
        )
    names = set(dynamics.column_names)
    loss = dense(S.LOSS, np.float32, np.nan) if S.LOSS in names else None
    el2n = dense(S.EL2N, np.float32, np.nan) if S.EL2N in names else None
    has_dyn = observed.any(axis=0)
    if (has_dyn & (y < 0)).any():
        i = int(np.flatnonzero(has_dyn & (y < 0))[0])
        raise SchemaError(
            f"Example {_py(ex_ids[i])!r} has training dynamics but no label in examples.parquet."
        )
    return DenseDynamics(ex_ids, y, epochs.astype(np.int64), observed, gold_prob, margin, pred, loss, el2n)


def _small_unique(values: NDArray[np.int64]) -> NDArray[np.int64]:
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < 1_000_000:
        present = np.bincount(values - lo, minlength=hi - lo + 1) > 0
        return np.flatnonzero(present).astype(np.int64) + lo
    return np.unique(values)


def _blocked_epochs(dynamics: pa.Table, ex_ids: NDArray[Any]) -> NDArray[np.int64] | None:
    """Epoch numbers if rows come as one block per epoch (increasing) in ``ex_ids`` order."""
    import pyarrow.compute as pc

    n = len(ex_ids)
    rows = dynamics.num_rows
    if n == 0 or rows % n:
        return None
    epoch_col, id_col = dynamics.column(S.EPOCH), dynamics.column(S.EXAMPLE_ID)
    if epoch_col.null_count or id_col.null_count:
        return None
    epochs: list[int] = []
    for e in range(rows // n):
        mm = pc.min_max(epoch_col.slice(e * n, n)).as_py()
        if mm["min"] != mm["max"] or (epochs and mm["min"] <= epochs[-1]):
            return None
        ids = id_col.slice(e * n, n).to_numpy(zero_copy_only=False)
        if ids.dtype.kind != ex_ids.dtype.kind and not {ids.dtype.kind, ex_ids.dtype.kind} <= {"i", "u"}:
            return None
        if not np.array_equal(ids, ex_ids):
            return None
        epochs.append(int(mm["min"]))
    return np.asarray(epochs, dtype=np.int64)


# ---- metrics ---------------------------------------------------------------------------------------------
# Each metric loops over epochs (few) and is vectorised over examples (many): no (n_epochs,
# n_examples) temporaries, float64 accumulation of float32 inputs.


def _obs(values: NDArray[Any], observed: NDArray[np.bool_] | None) -> NDArray[np.bool_] | None:
    """``None`` stands for "every epoch observed" (the common, fast case)."""
    if observed is None:
        return None
    obs = np.asarray(observed, dtype=bool)
    if obs.shape != np.shape(values):
        raise ValueError(f"Expected `observed` of shape {np.shape(values)}, got {obs.shape}.")
    return None if obs.all() else obs


def _masked_mean(values: NDArray[Any], observed: NDArray[np.bool_] | None, n_seen: NDArray[Any] | None = None) -> NDArray[np.float64]:
    vals = np.asarray(values)
    obs = _obs(vals, observed)
    if obs is None:
        return vals.sum(axis=0, dtype=np.float64) / max(vals.shape[0], 1) if vals.shape[0] else np.full(vals.shape[1], np.nan)
    total = np.zeros(vals.shape[1], dtype=np.float64)
    for e in range(vals.shape[0]):
        total += np.where(obs[e], vals[e], 0)
    count = obs.sum(axis=0) if n_seen is None else n_seen
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def compute_confidence(gold_prob: NDArray[Any], observed: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
    """Mean gold-label probability over observed epochs; ``gold_prob (n_epochs, n_examples)``.

    >>> compute_confidence(np.array([[0.2, 1.0], [0.6, 0.0]]))
    array([0.4, 0.5])
    """
    return _masked_mean(gold_prob, observed)


def compute_variability(
    gold_prob: NDArray[Any], observed: NDArray[np.bool_] | None = None, *, confidence: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """Population std (``ddof=0``) of the gold-label probability over observed epochs.

    Two-pass (mean first, then squared deviations) in float64. ``confidence`` may pass the
    already computed mean.

    >>> compute_variability(np.array([[0.2, 1.0], [0.6, 0.0]]))
    array([0.2, 0.5])
    """
    gp = np.asarray(gold_prob)
    obs = _obs(gp, observed)
    mu = _masked_mean(gp, obs) if confidence is None else confidence
    acc = np.zeros(gp.shape[1], dtype=np.float64)
    for e in range(gp.shape[0]):
        d = gp[e] - mu
        acc += d * d if obs is None else np.where(obs[e], d * d, 0.0)
    n_seen = np.full(gp.shape[1], gp.shape[0]) if obs is None else obs.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_seen > 0, np.sqrt(acc / np.maximum(n_seen, 1)), np.nan)


def compute_correctness(
    correct: NDArray[np.bool_], observed: NDArray[np.bool_] | None = None, *, as_count: bool = False
) -> NDArray[Any]:
    """Fraction (default) or count (``as_count=True``, the original code) of correct epochs.

    >>> compute_correctness(np.array([[True, False], [True, True]]))
    array([1. , 0.5])
    """
    c = np.asarray(correct, dtype=bool)
    obs = _obs(c, observed)
    count = (c if obs is None else c & obs).sum(axis=0)
    if as_count:
        return count
    n_seen = np.full(c.shape[1], c.shape[0]) if obs is None else obs.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_seen > 0, count / np.maximum(n_seen, 1), np.nan)


def compute_forgetting(
    correct: NDArray[np.bool_], observed: NDArray[np.bool_] | None = None
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Count correct→incorrect transitions between consecutive observed epochs.

    Returns
    -------
    forgetting : ndarray of int64 (n_examples,)
        Number of forgetting events (0 for never-learned examples; see ``never_learned``).
    never_learned : ndarray of bool (n_examples,)
        True where the example was observed but never predicted correctly.

    >>> f, nl = compute_forgetting(np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0]], bool).T)
    >>> f.tolist(), nl.tolist()
    ([1, 0, 0], [False, True, True])
    """
    c = np.asarray(correct, dtype=bool)
    obs = _obs(c, observed)
    n = c.shape[1]
    learnt = np.zeros(n, dtype=bool)
    ever = np.zeros(n, dtype=bool)
    forgot = np.zeros(n, dtype=np.int64)
    for e in range(c.shape[0]):
        ce = c[e] if obs is None else c[e] & obs[e]
        if obs is None:
            forgot += learnt & ~ce
            learnt = ce
        else:
            forgot += learnt & obs[e] & ~ce
            learnt = np.where(obs[e], ce, learnt)
        ever |= ce
    seen = c.shape[0] > 0 if obs is None else obs.any(axis=0)
    never = seen & ~ever
    return forgot, np.asarray(never, dtype=bool)


def forgetting_reference(correct: NDArray[np.bool_], observed: NDArray[np.bool_] | None = None) -> NDArray[np.int64]:
    """Forgetting as the original cartography code stores it: 1000 for never-learned examples."""
    f, never = compute_forgetting(correct, observed)
    return np.where(never, 1000, f)


def compute_aum(
    margin: NDArray[Any], observed: NDArray[np.bool_] | None = None, *, skip_first_epoch: bool = False
) -> NDArray[np.float64]:
    """Area Under the Margin: mean raw-logit margin ``z[y] - max_{k!=y} z[k]`` over epochs.

    ``skip_first_epoch`` drops the first recorded epoch (row 0), whose margins mostly reflect
    the initialisation.

    >>> compute_aum(np.array([[-1.0, 2.0], [3.0, 4.0]]), skip_first_epoch=True)
    array([3., 4.])
    """
    m = np.asarray(margin)
    obs = None if observed is None else np.asarray(observed, dtype=bool)
    if skip_first_epoch and m.shape[0] > 1:
        m = m[1:]
        obs = None if obs is None else obs[1:]
    return _masked_mean(m, obs)


def _last_observed(values: NDArray[Any], observed: NDArray[np.bool_], fill: Any) -> NDArray[Any]:
    if observed.all():
        return values[-1].copy()
    out = np.full(values.shape[1], fill, dtype=values.dtype)
    for e in range(values.shape[0]):
        out = np.where(observed[e], values[e], out)
    return out


def assign_regions(
    confidence: NDArray[np.floating[Any]],
    variability: NDArray[np.floating[Any]],
    thresholds: RegionThresholds = RegionThresholds(),
) -> NDArray[np.object_]:
    """Label each example easy-to-learn / ambiguous / hard-to-learn (see :class:`RegionThresholds`).

    Examples without dynamics (NaN confidence) get ``no-dynamics``.

    >>> assign_regions(np.array([0.9, 0.5, 0.1, np.nan]), np.array([0.05, 0.3, 0.05, np.nan])).tolist()
    ['easy-to-learn', 'ambiguous', 'hard-to-learn', 'no-dynamics']
    """
    conf = np.asarray(confidence, dtype=np.float64)
    var = np.asarray(variability, dtype=np.float64)
    if conf.shape != var.shape:
        raise ValueError(f"Expected matching shapes, got {conf.shape} and {var.shape}.")
    choices = np.array([S.AMBIGUOUS, S.EASY, S.HARD, S.NO_DYNAMICS], dtype=object)
    code = np.where(
        np.isnan(conf), 3, np.where(var >= thresholds.variability, 0, np.where(conf >= thresholds.confidence, 1, 2))
    )
    return choices[code]


def compute_dynamics_metrics(dense: DenseDynamics, *, aum_skip_first_epoch: bool = False) -> pd.DataFrame:
    """All per-example dynamics metrics as a frame indexed like ``dense.example_ids``.

    Columns: ``confidence``, ``variability``, ``correctness`` (fraction), ``correct_count``,
    ``forgetting`` (nullable Int64, missing for never-learned), ``never_learned``, ``aum``,
    ``el2n``, ``loss_mean``, ``n_epochs_seen``, ``final_pred``.
    """
    obs = dense.observed
    n_seen = obs.sum(axis=0)
    correct = dense.correct
    confidence = compute_confidence(dense.gold_prob, obs)
    forgot, never = compute_forgetting(correct, obs)
    has = n_seen > 0
    forgetting = pd.array(np.where(has & ~never, forgot, 0), dtype="Int64")
    forgetting[~has | never] = pd.NA
    out: dict[str, Any] = {
        S.CONFIDENCE: confidence,
        S.VARIABILITY: compute_variability(dense.gold_prob, obs, confidence=confidence),
        S.CORRECTNESS: compute_correctness(correct, obs),
        S.CORRECT_COUNT: np.where(has, compute_correctness(correct, obs, as_count=True), 0).astype(np.int32),
        S.FORGETTING: forgetting,
        S.NEVER_LEARNED: never,
        S.AUM: compute_aum(dense.margin, obs, skip_first_epoch=aum_skip_first_epoch),
        S.EL2N_MEAN: _masked_mean(dense.el2n, obs, n_seen) if dense.el2n is not None else np.full(len(n_seen), np.nan),
        S.LOSS_MEAN: _masked_mean(dense.loss, obs, n_seen) if dense.loss is not None else np.full(len(n_seen), np.nan),
        S.N_EPOCHS_SEEN: n_seen.astype(np.int32),
        S.FINAL_PRED: pd.array(np.where(has, _last_observed(dense.pred, obs, -1), 0), dtype="Int32"),
    }
    out[S.FINAL_PRED][~has] = pd.NA
    return pd.DataFrame(out)
