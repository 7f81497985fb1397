"""OOD evaluation against ground truth: AUROC, AUPR-in, AUPR-out and FPR at 95% recall.

OOD is the positive class and scores are oriented higher = more anomalous (as every ``ood_*``
column). Ground truth, per row: the ``is_ood`` column where it is present and not missing;
otherwise the split name (``ood:*`` => OOD, ``test`` => in-distribution). Training rows are never
used as the in-distribution reference (the scorers were fitted on them), and rows of other
splits without an ``is_ood`` value are left out.

Metrics (``n_id`` in-distribution scores ``s_id``, ``n_ood`` OOD scores ``s_ood``):

* ``auroc`` -- probability that a random OOD row scores above a random ID row, ties count 1/2
  (equal to ``sklearn.metrics.roc_auc_score(is_ood, score)``).
* ``aupr_out`` -- average precision with OOD positive, ranked by ``score``;
  ``aupr_in`` -- average precision with ID positive, ranked by ``-score`` (both equal to
  ``sklearn.metrics.average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n`` over distinct
  thresholds, no interpolation).
* ``fpr95`` -- by default ``"ood_accepted_at_95_id"`` (the classic reading, Liang et al. 2018 /
  OpenOOD): the threshold ``t`` is the smallest ID score with at least 95% of ID rows ``<= t``
  (kept as ID); the value is the fraction of OOD rows with score ``<= t`` (accepted as ID).
  The other reading, ``"id_rejected_at_95_ood"``: ``t`` is the largest OOD score with at least
  95% of OOD rows ``>= t`` (detected); the value is the fraction of ID rows with score ``>= t``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from analysis import schema as S
from analysis.schema import SchemaError

log = logging.getLogger(__name__)

__all__ = [
    "FprDefinition",
    "FPR_DEFINITIONS",
    "auroc",
    "average_precision",
    "fpr_at_recall",
    "compute_ood_metrics",
    "ood_ground_truth",
    "evaluate_ood",
    "ood_curves",
    "load_ood_eval",
    "OVERALL",
]

FprDefinition = Literal["ood_accepted_at_95_id", "id_rejected_at_95_ood"]
FPR_DEFINITIONS: tuple[str, ...] = ("ood_accepted_at_95_id", "id_rejected_at_95_ood")
OVERALL = "overall"
"""Key of the all-OOD-splits-together entry in :func:`evaluate_ood`."""
EVAL_FORMAT_VERSION = 1


def _check_scores(x: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"Expected `{name}` to have shape (n,), got {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"Expected at least one value in `{name}`, got none.")
    if not np.isfinite(arr).all():
        raise ValueError(f"Expected finite `{name}`, got {int((~np.isfinite(arr)).sum())} NaN or inf.")
    return arr


def auroc(scores_id: ArrayLike, scores_ood: ArrayLike) -> float:
    """Area under the ROC curve with OOD positive (Mann-Whitney U, ties count one half).

    Parameters
    ----------
    scores_id : array-like, shape (n_id,)
    scores_ood : array-like, shape (n_ood,)

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> auroc([0.0, 1.0], [1.0, 2.0])
    0.875
    """
    s_id, s_ood = _check_scores(scores_id, "scores_id"), _check_scores(scores_ood, "scores_ood")
    return _auroc(s_id, s_ood)


def _auroc(s_id: NDArray[np.float64], s_ood: NDArray[np.float64]) -> float:
    ranks = _average_ranks(np.concatenate([s_ood, s_id]))  # average ranks for ties
    n1, n0 = len(s_ood), len(s_id)
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def _average_ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks with ties sharing their average rank (``scipy.stats.rankdata``'s default).

    In NumPy: importing ``scipy.stats`` costs over a second in a fresh process.
    """
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    new_value = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
    starts = np.flatnonzero(new_value)
    ends = np.concatenate([starts[1:], [len(values)]])
    average = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def average_precision(scores: ArrayLike, positive: ArrayLike) -> float:
    """Average precision ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds.

    Parameters
    ----------
    scores : array-like, shape (n,)
        Higher = more likely positive.
    positive : array-like of bool, shape (n,)

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> average_precision([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.8333333333333333
    """
    s = _check_scores(scores, "scores")
    pos = np.asarray(positive, dtype=bool)
    if pos.shape != s.shape:
        raise ValueError(f"Expected `positive` to have shape {s.shape}, got {pos.shape}.")
    if not pos.any():
        raise ValueError("Expected at least one positive row, got none.")
    return _average_precision(s, pos)


def _average_precision(s: NDArray[np.float64], pos: NDArray[np.bool_]) -> float:
    order = np.argsort(-s, kind="mergesort")
    s_sorted, p_sorted = s[order], pos[order]
    # last index of every run of equal scores = one threshold
    ends = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tps = np.cumsum(p_sorted)[ends].astype(np.float64)
    fps = (ends + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    d_recall = np.diff(np.r_[0.0, recall])
    return float((d_recall * precision).sum())


def fpr_at_recall(
    scores_id: ArrayLike,
    scores_ood: ArrayLike,
    *,
    recall: float = 0.95,
    definition: FprDefinition = "ood_accepted_at_95_id",
) -> float:
    """False-positive rate at a recall level, under a named reading.

    Parameters
    ----------
    scores_id : array-like, shape (n_id,)
    scores_ood : array-like, shape (n_ood,)
    recall : float in (0, 1], default 0.95
    definition : {"ood_accepted_at_95_id", "id_rejected_at_95_ood"}
        ``"ood_accepted_at_95_id"`` (default, classic): fraction of OOD rows scored at or below
        the threshold that keeps ``recall`` of the ID rows. ``"id_rejected_at_95_ood"``: fraction
        of ID rows scored at or above the threshold that detects ``recall`` of the OOD rows.

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> fpr_at_recall([0, 1, 2, 3], [0.5, 10, 11, 12], recall=0.75)
    0.25
    >>> fpr_at_recall([0, 1, 2, 3], [0.5, 10, 11, 12], recall=0.75, definition="id_rejected_at_95_ood")
    0.0
    """
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"Expected `recall` in (0, 1], got {recall!r}.")
    if definition not in FPR_DEFINITIONS:
        raise ValueError(f"Expected `definition` among {FPR_DEFINITIONS}, got {definition!r}.")
    s_id, s_ood = _check_scores(scores_id, "scores_id"), _check_scores(scores_ood, "scores_ood")
    return _fpr(s_id, s_ood, recall, definition)


def _fpr(s_id: NDArray[np.float64], s_ood: NDArray[np.float64], recall: float, definition: str) -> float:
    if definition == "ood_accepted_at_95_id":
        kept = np.sort(s_id)
        need = max(1, math.ceil(recall * len(kept) - 1e-9))
        t = kept[need - 1]  # smallest t with >= need ID rows <= t
        return float((s_ood <= t).mean())
    detected = np.sort(s_ood)[::-1]
    need = max(1, math.ceil(recall * len(detected) - 1e-9))
    t = detected[need - 1]  # largest t with >= need OOD rows >= t
    return float((s_id >= t).mean())


def compute_ood_metrics(
    scores_id: ArrayLike,
    scores_ood: ArrayLike,
    *,
    recall: float = 0.95,
    fpr_definition: FprDefinition = "ood_accepted_at_95_id",
) -> dict[str, Any]:
    """AUROC, AUPR-in, AUPR-out and FPR at ``recall`` (both readings), OOD positive.

    Parameters
    ----------
    scores_id : array-like, shape (n_id,)
        Scores of in-distribution rows (higher = more anomalous).
    scores_ood : array-like, shape (n_ood,)
    recall : float, default 0.95
    fpr_definition : {"ood_accepted_at_95_id", "id_rejected_at_95_ood"}
        Which reading the ``fpr95`` key holds; both are also returned under their names.

    Returns
    -------
    dict
        ``auroc``, ``aupr_in``, ``aupr_out``, ``fpr95``, ``fpr95_definition``,
        ``fpr_ood_accepted_at_95_id``, ``fpr_id_rejected_at_95_ood``, ``n_id``, ``n_ood``.
    """
    s_id, s_ood = _check_scores(scores_id, "scores_id"), _check_scores(scores_ood, "scores_ood")
    if fpr_definition not in FPR_DEFINITIONS:
        raise ValueError(f"Expected `fpr_definition` among {FPR_DEFINITIONS}, got {fpr_definition!r}.")
    s = np.concatenate([s_id, s_ood])
    is_ood = np.r_[np.zeros(len(s_id), bool), np.ones(len(s_ood), bool)]
    both = {d: _fpr(s_id, s_ood, recall, d) for d in FPR_DEFINITIONS}
    return {
        "auroc": _auroc(s_id, s_ood),
        "aupr_in": _average_precision(-s, ~is_ood),
        "aupr_out": _average_precision(s, is_ood),
        "fpr95": both[fpr_definition],
        "fpr95_definition": fpr_definition,
        "fpr_ood_accepted_at_95_id": both["ood_accepted_at_95_id"],
        "fpr_id_rejected_at_95_ood": both["id_rejected_at_95_ood"],
        "recall": recall,
        "n_id": int(len(s_id)),
        "n_ood": int(len(s_ood)),
    }


def ood_ground_truth(table: pd.DataFrame) -> pd.Series:
    """Per-row ground truth: True (OOD), False (in-distribution reference) or <NA> (not used).

    ``is_ood`` where present and not missing; otherwise ``ood:*`` splits are OOD and ``test``
    rows are ID. Training rows are always <NA> (they fitted the scorers).

    Parameters
    ----------
    table : DataFrame
        With ``split`` and optionally ``is_ood``.

    Returns
    -------
    Series of boolean dtype (nullable), aligned with ``table``.
    """
    split = table[S.SPLIT].astype(str)
    from_split = pd.Series(pd.NA, index=table.index, dtype="boolean")
    from_split[split.str.startswith(S.OOD_SPLIT_PREFIX)] = True
    from_split[split == "test"] = False
    if S.IS_OOD in table.columns:
        truth = table[S.IS_OOD].astype("boolean").fillna(from_split)
    else:
        truth = from_split
    truth = truth.copy()
    truth[split == S.TRAIN_SPLIT] = pd.NA
    return truth


def evaluate_ood(
    table: pd.DataFrame,
    score_columns: Sequence[str] | None = None,
    *,
    recall: float = 0.95,
    fpr_definition: FprDefinition = "ood_accepted_at_95_id",
) -> dict[str, Any]:
    """Evaluate every ``ood_*`` column per OOD split and overall.

    Parameters
    ----------
    table : DataFrame
        The example table (``split``, ``ood_*`` columns, optional ``is_ood``).
    score_columns : sequence of str, optional
        Default: every column starting with ``ood_``.
    recall, fpr_definition
        As in :func:`compute_ood_metrics`.

    Returns
    -------
    dict
        ``{"format_version", "positive": "ood", "fpr95_definition", "recall", "id_rows",
        "ood_splits", "metrics": {column: {split | "overall": metrics}}, "skipped": [reasons]}``.
        With no ID or no OOD rows ``metrics`` is empty and ``skipped`` says why (and a warning is
        emitted).
    """
    cols = list(score_columns) if score_columns is not None else [
        c for c in table.columns if str(c).startswith(S.OOD_PREFIX)
    ]
    truth = ood_ground_truth(table)
    out: dict[str, Any] = {
        "format_version": EVAL_FORMAT_VERSION,
        "positive": "ood",
        "score_orientation": "higher = more anomalous",
        "fpr95_definition": fpr_definition,
        "recall": recall,
        "id_rows": int((truth == False).sum()),  # noqa: E712 - nullable boolean
        "ood_splits": {},
        "metrics": {},
        "skipped": [],
    }
    is_id = (truth == False).fillna(False).to_numpy(bool)  # noqa: E712
    is_ood = (truth == True).fillna(False).to_numpy(bool)  # noqa: E712
    split = table[S.SPLIT].astype(str).to_numpy()
    unknown = sorted(set(split[truth.isna().to_numpy() & (split != S.TRAIN_SPLIT)]))
    if unknown:
        out["skipped"].append(
            f"splits without ground truth (no is_ood value, not `test` or `ood:*`): {unknown}"
        )
    if not is_id.any() or not is_ood.any():
        reason = ("no in-distribution evaluation rows (a `test` split or is_ood == False)"
                  if not is_id.any() else "no OOD rows (an `ood:*` split or is_ood == True)")
        out["skipped"].append(f"OOD evaluation skipped: {reason}.")
        if cols:
            warnings.warn(f"OOD evaluation skipped: {reason}.", stacklevel=2)
        return out
    groups = {s: is_ood & (split == s) for s in sorted(set(split[is_ood]))}
    out["ood_splits"] = {s: int(m.sum()) for s, m in groups.items()}
    groups[OVERALL] = is_ood
    for col in cols:
        if col not in table.columns:
            out["skipped"].append(f"{col}: not in the table")
            continue
        score = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(score)
        res: dict[str, Any] = {}
        for name, mask in groups.items():
            s_id, s_ood = score[is_id & ok], score[mask & ok]
            if len(s_id) == 0 or len(s_ood) == 0:
                out["skipped"].append(f"{col} / {name}: no scored rows")
                continue
            res[name] = compute_ood_metrics(s_id, s_ood, recall=recall, fpr_definition=fpr_definition)
        if res:
            out["metrics"][col] = res
    return out


def ood_curves(scores: ArrayLike, is_ood: ArrayLike, *, max_points: int = 500) -> dict[str, Any]:
    """ROC and precision-recall curve points with OOD as the positive class.

    Parameters
    ----------
    scores : array (n,)
        OOD scores, higher = more anomalous; non-finite entries are dropped.
    is_ood : array of bool (n,)
    max_points : int
        Each curve is thinned to about this many points (end points kept) for plotting.

    Returns
    -------
    dict with ``fpr``, ``tpr`` (ROC), ``precision``, ``recall`` (PR, OOD positive) and the
    matching summary numbers ``auroc`` and ``aupr_out`` (average precision, as in
    :func:`compute_ood_metrics`).
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_ood, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"Expected `scores` and `is_ood` of one shape (n,), got {s.shape} and {y.shape}.")
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    if y.all() or not y.any():
        raise ValueError("Expected both in-distribution and OOD examples to draw curves, got one kind only.")
    fpr, tpr, _ = roc_curve(y, s)
    precision, recall, _ = precision_recall_curve(y, s)

    def thin(n_total: int) -> NDArray[np.intp]:
        if n_total <= max_points:
            return np.arange(n_total)
        return np.unique(np.linspace(0, n_total - 1, max_points).round().astype(np.intp))

    r, p = thin(len(fpr)), thin(len(recall))
    return {
        "fpr": fpr[r], "tpr": tpr[r], "precision": precision[p], "recall": recall[p],
        "auroc": auroc(s[~y], s[y]), "aupr_out": average_precision(s, y),
    }


def load_ood_eval(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read and check ``RUN_DIR/ood_eval.json`` (written by ``datamap analyze``); None when absent.

    Checked: a JSON object whose ``metrics`` (if any) maps each score column to groups (OOD
    splits and ``overall``) of ``{metric: number, text or null}``, whose ``diagnosis`` (if any)
    is an object and whose ``fpr95_definition`` (if any) is text.

    Raises
    ------
    SchemaError
        The file is unreadable, not UTF-8 JSON, nested too deeply, or breaks that shape.
    """
    from pathlib import Path

    path = Path(run_dir) / S.OOD_EVAL_FILE
    if not path.is_file():
        return None
    where = repr(str(path))
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise SchemaError(f"{where} is not readable JSON ({detail}). Re-run `datamap analyze`.") from exc

    def fail(what: str, value: Any) -> SchemaError:
        text = repr(value)
        return SchemaError(
            f"{where}: expected {what}, got {text[:60] + '...' if len(text) > 60 else text}. "
            "Re-run `datamap analyze` to rewrite it."
        )

    if not isinstance(data, dict):
        raise fail("a JSON object", type(data).__name__)
    metrics = data.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, dict):
            raise fail("`metrics` to be an object", metrics)
        for column, groups in metrics.items():
            if not isinstance(groups, dict):
                raise fail(f"`metrics.{column}` to be an object of OOD groups", groups)
            for group, values in groups.items():
                if not isinstance(values, dict):
                    raise fail(f"`metrics.{column}.{group}` to be an object of metrics", values)
                for name, value in values.items():
                    if value is not None and not isinstance(value, (int, float, str)):
                        raise fail(f"`metrics.{column}.{group}.{name}` to be a number", value)
    for key, kind, what in (("diagnosis", dict, "an object"), ("fpr95_definition", str, "text")):
        if key in data and data[key] is not None and not isinstance(data[key], kind):
            raise fail(f"`{key}` to be {what}", data[key])
    return data
