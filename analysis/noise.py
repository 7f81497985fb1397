"""Label noise from the run itself: suggested labels, label issues and the estimated noise rate.

The model's prediction at every epoch is a vote. For example ``i`` with given label ``y_i``:

- ``suggested_label`` = the class predicted in most epochs (ties: the given label if it is among
  the tied classes, else the class predicted at the last epoch among them, else the smallest).
- The estimated number of wrong labels of class ``c`` is the number of examples labelled ``c``
  whose suggested label differs (the model, over its whole training, mostly disagreed with
  the label): ``n_c_hat = #{i : y_i = c, suggested_i != c}``. This is the "noise rate from how
  often the model's predictions disagree with the given label" estimate, per class, in the
  spirit of confident learning's per-class counts (Northcutt et al., 2021, "Confident
  Learning: Estimating Uncertainty in Dataset Labels", JAIR 70), with the epoch votes of one
  training run in place of out-of-sample probabilities.
- ``label_issue`` marks, within each class ``c``, the ``n_c_hat`` examples with the lowest
  area under the margin (AUM, Pleiss et al., 2020, "Identifying Mislabeled Data using the Area
  Under the Margin Ranking"): the cut-off is the class's estimated count, not a fixed number,
  and the ranking uses the margin of every epoch rather than a vote alone (confident learning's
  "prune by noise rate" with AUM as the ranking score). Without AUM the vote alone decides.

The diagnosis (:mod:`analysis.diagnosis`) calls ``label_issue`` rows ``suspect_mislabeled``
(or ``suspect_ood`` when their OOD score is also high).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from analysis import schema as S

__all__ = [
    "LabelNoiseEstimate",
    "estimate_label_noise",
    "label_issues",
    "suggested_labels",
    "METHOD",
]

METHOD = "per-class vote count, AUM ranking"
"""How ``label_issue`` is chosen (recorded in ``ood_eval.json``'s ``diagnosis`` section)."""


@dataclass(frozen=True)
class LabelNoiseEstimate:
    """Estimated label noise of a run's training split (see the module docstring).

    Attributes
    ----------
    rate : float
        Estimated fraction of training labels that are wrong (NaN without dynamics).
    per_class : dict of str to float
        Class name -> estimated fraction of that class's training labels that are wrong.
    n_per_class : dict of str to int
        Class name -> training examples with that label (and dynamics).
    confused_pairs : list of (str, str, int)
        (given class, suggested class, count) over the estimated wrong labels, most frequent first.
    """

    rate: float
    per_class: dict[str, float] = field(default_factory=dict)
    n_per_class: dict[str, int] = field(default_factory=dict)
    confused_pairs: list[tuple[str, str, int]] = field(default_factory=list)


def suggested_labels(
    pred: NDArray[np.integer[Any]], observed: NDArray[np.bool_], labels: NDArray[np.integer[Any]],
) -> NDArray[np.int64]:
    """The class predicted in most epochs, per example (-1 where no epoch is observed).

    Parameters
    ----------
    pred : ndarray of int (n_epochs, n_examples)
        Predicted class per epoch.
    observed : ndarray of bool (n_epochs, n_examples)
    labels : ndarray of int (n_examples,)
        Given labels (-1: none); a tie that includes the given label resolves to it.

    Returns
    -------
    ndarray of int64 (n_examples,)

    Examples
    --------
    >>> pred = np.array([[0, 1, 2], [1, 1, 0], [1, 0, 0]])
    >>> suggested_labels(pred, np.ones((3, 3), bool), np.array([0, 0, 2])).tolist()
    [1, 1, 0]
    """
    p = np.where(observed, np.asarray(pred, dtype=np.int64), -1)
    n_epochs, n = p.shape
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (n,):
        raise ValueError(f"Expected `labels` to have shape ({n},), got {y.shape}.")
    last = np.full(n, -1, dtype=np.int64)
    for e in range(n_epochs):
        last = np.where(p[e] >= 0, p[e], last)
    best = np.full(n, -1, dtype=np.int64)
    best_score = np.full(n, -np.inf)
    for e in range(n_epochs):  # every observed prediction is a candidate; O(n_epochs^2 n)
        cand = p[e]
        count = (p == cand[None, :]).sum(axis=0).astype(np.float64)
        score = np.where(cand >= 0, count + 0.5 * (cand == y) + 0.25 * (cand == last)
                         - 1e-9 * cand, -np.inf)
        better = score > best_score
        best = np.where(better, cand, best)
        best_score = np.where(better, score, best_score)
    return best


def label_issues(table: pd.DataFrame) -> tuple[NDArray[np.bool_], dict[str, Any]]:
    """Which training rows are label issues, and how the cut-off was chosen.

    Parameters
    ----------
    table : DataFrame
        The example table with ``split``, ``label``, ``suggested_label`` and (optional) ``aum``.

    Returns
    -------
    (ndarray of bool (n_examples,), dict)
        The mask (False outside the training split and where there is no suggested label) and
        the record of the cut-off: method, estimated count and rate per class and overall.

    Raises
    ------
    ValueError
        ``suggested_label`` is missing.
    """
    if S.SUGGESTED_LABEL not in table.columns:
        raise ValueError(f"Expected a `{S.SUGGESTED_LABEL}` column (run `datamap analyze`), got "
                         f"columns {list(table.columns)[:12]}.")
    y, sug, rows = _rows(table)
    aum = (pd.to_numeric(table[S.AUM], errors="coerce").to_numpy(np.float64, na_value=np.nan)
           if S.AUM in table.columns else np.full(len(table), np.nan))
    issue = np.zeros(len(table), dtype=bool)
    per_class: dict[str, dict[str, Any]] = {}
    names = _class_names(table)
    for c in np.unique(y[rows]):
        members = np.flatnonzero(rows & (y == c))
        n_hat = int((sug[members] != c).sum())
        if n_hat:
            a = aum[members]
            if np.isfinite(a).all():
                order = np.argsort(a, kind="stable")  # lowest AUM first
                issue[members[order[:n_hat]]] = True
            else:
                issue[members[sug[members] != c]] = True
        per_class[names.get(int(c), str(int(c)))] = {"n": len(members), "n_issues": n_hat,
                                                      "rate": n_hat / len(members)}
    n_rows = int(rows.sum())
    info = {"method": METHOD if np.isfinite(aum[rows]).all() else "per-class vote count",
            "n_issues": int(issue.sum()), "n_scored": n_rows,
            "rate": float(issue.sum() / n_rows) if n_rows else float("nan"),
            "per_class": per_class}
    return issue, info


def estimate_label_noise(table: pd.DataFrame) -> LabelNoiseEstimate:
    """Estimated fraction of wrong training labels, overall and per class, and confused pairs.

    Parameters
    ----------
    table : DataFrame
        The example table (``split``, ``label``, ``suggested_label``; ``label_name`` for the
        class names, and ``label_issue`` when the analysis wrote it).

    Returns
    -------
    LabelNoiseEstimate

    Examples
    --------
    >>> t = pd.DataFrame({"split": "train", "label": [0, 0, 0, 1], "label_name": list("aaab"),
    ...                   "suggested_label": [0, 1, 0, 1]})
    >>> est = estimate_label_noise(t)
    >>> est.rate, est.per_class, est.confused_pairs
    (0.25, {'a': 0.3333333333333333, 'b': 0.0}, [('a', 'b', 1)])
    """
    if S.SUGGESTED_LABEL not in table.columns:
        return LabelNoiseEstimate(rate=float("nan"))
    y, sug, rows = _rows(table)
    if S.LABEL_ISSUE in table.columns:
        wrong = table[S.LABEL_ISSUE].astype("boolean").fillna(False).to_numpy(bool) & rows
    else:
        wrong = rows & (sug != y)
    names = _class_names(table)
    per_class: dict[str, float] = {}
    n_per_class: dict[str, int] = {}
    for c in np.unique(y[rows]):
        members = rows & (y == c)
        name = names.get(int(c), str(int(c)))
        n_per_class[name] = int(members.sum())
        per_class[name] = float(wrong[members].sum() / members.sum())
    pairs = Counter((int(a), int(b)) for a, b in zip(y[wrong & (sug != y)], sug[wrong & (sug != y)],
                                                     strict=True))
    confused = [(names.get(a, str(a)), names.get(b, str(b)), n)
                for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))]
    n_rows = int(rows.sum())
    return LabelNoiseEstimate(rate=float(wrong.sum() / n_rows) if n_rows else float("nan"),
                              per_class=per_class, n_per_class=n_per_class, confused_pairs=confused)


def _rows(table: pd.DataFrame) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Given and suggested labels (-1: none) and the training rows that have both."""
    y = pd.to_numeric(table[S.LABEL], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    sug = pd.to_numeric(table[S.SUGGESTED_LABEL], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    rows = np.isfinite(y) & np.isfinite(sug) & (sug >= 0)
    if S.SPLIT in table.columns:
        rows &= (table[S.SPLIT].astype(str) == S.TRAIN_SPLIT).to_numpy()
    return (np.where(np.isfinite(y), y, -1).astype(np.int64),
            np.where(np.isfinite(sug), sug, -1).astype(np.int64), rows)


def _class_names(table: pd.DataFrame) -> dict[int, str]:
    """Class index -> name from the table's (label, label_name) pairs."""
    if S.LABEL_NAME not in table.columns:
        return {}
    pairs = table[[S.LABEL, S.LABEL_NAME]].dropna().drop_duplicates(S.LABEL)
    return {int(k): str(v) for k, v in zip(pairs[S.LABEL], pairs[S.LABEL_NAME], strict=True)}
