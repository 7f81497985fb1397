"""Label noise from the run itself: label issues, suggested labels and the estimated noise rate.

For training example ``i`` with given label ``y_i``:

- ``label_issue``: a Gaussian mixture (two components; see below) is fitted to ``log(loss_mean)`` (the
  example's cross-entropy averaged over epochs) of the training rows; rows whose posterior
  probability of the high-loss component exceeds 1/2 are label issues. Mislabeled examples are
  fitted late (or never), so their mean loss is higher than that of clean ones; the mixture
  finds the cut-off per run, where fixed thresholds on confidence and variability do not
  transfer between short, long, from-scratch and fine-tuned runs. The idea is DivideMix's
  (Li, Socher & Hoi, 2020, "DivideMix: Learning with Noisy Labels as Semi-supervised
  Learning", ICLR), which fits the same mixture to per-example losses; see Arazo et al., 2019,
  "Unsupervised Label Noise Modeling and Loss Correction" (ICML), for a beta mixture. The log
  makes the two loss populations close to Gaussian; chosen over a mixture on AUM or confidence,
  votes over epochs and per-class vote thresholds by ``benchmarks/suite.py`` (docs/metrics.md).
  Without ``loss_mean``, ``-log(confidence)`` stands in. When the high-loss component holds
  half the rows or more (a run whose model fits most of its labels slowly, not a noise rate), or
  the rows it claims are not the upper tail of the losses (two components with nearly the same
  mean, one narrow and one wide), the mixture is refitted with 3, then 4 components and the
  highest one is used.
- How far to trust the count: the mixture is refitted on bootstrap resamples of the scores
  (:func:`resampled_rates`, recorded as ``resampled``); when the rates it finds spread over more
  than a factor of two, the count is called unstable (``datamap summary`` and the dashboard say
  so): the losses then do not split into two groups, and the ranking is worth more than the
  cut-off. The count is then the median of the resampled rates (bagging; Breiman 1996, "Bagging
  predictors", Machine Learning), applied to the same ranking.
- ``suggested_label``: the class the model predicted in most epochs (ties: the given label if
  tied, else the latest prediction among the tied). For a label issue that the model ended up
  memorising (most votes for the given label), it is the class predicted most often *instead*
  of the given label, when there is one.
- The estimated noise rate is the fraction of label issues, overall and per given class; the
  confused pairs count (given, suggested) over label issues whose suggestion differs.

The diagnosis (:mod:`analysis.diagnosis`) calls ``label_issue`` rows ``suspect_mislabeled``
(or ``suspect_ood`` when their OOD score is also high).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from analysis import schema as S

__all__ = [
    "LabelNoiseEstimate",
    "estimate_label_noise",
    "label_issue_mask",
    "label_issues",
    "suggested_labels",
    "neighbor_disagreement",
    "rank_combined_issues",
    "separation_auroc",
    "refine_with_neighbors",
    "resampled_rates",
    "resampled_range",
    "METHOD",
    "NEIGHBOR_METHOD",
]

METHOD = "Gaussian mixture on log(loss_mean), highest component's posterior > 0.5"
"""How ``label_issue`` is chosen (recorded in ``ood_eval.json``'s ``diagnosis`` section)."""
MIXTURE_MAX_ROWS = 200_000
"""The mixture is fitted on at most this many training rows (a seeded sample), then applied to all."""
MIN_ROWS = 20
RESAMPLE_ROUNDS = 16
"""Bootstrap refits of the mixture that measure how stable its noise rate is (:func:`resampled_rates`)."""
RESAMPLE_MAX_ROWS = 10_000
"""Rows drawn per refit (all of them when fewer): about 0.1 s a refit."""
NEIGHBOR_METHOD = ("top n_issues (the mixture's count) by mean percentile rank of log(loss_mean) "
                   "and the label disagreement of the nearest training neighbours, kept where most "
                   "neighbours disagree")
"""How ``label_issue`` is chosen when the feature-space neighbours are used."""
NEIGHBOR_K = 10
"""Training neighbours whose labels are compared with a row's (10, 25 and 50 tied on the suite's
choose runs; 5 was lower)."""
NEIGHBOR_GATE = 0.9
"""The neighbours are used only when their disagreement separates the mixture's label issues
from the other training rows at least this well (AUROC)."""
NEIGHBOR_MAJORITY = 0.5
"""A re-ranked label issue is kept only when more than this fraction of its neighbours disagree."""
NEIGHBOR_GATE_SAMPLE = 20_000
"""The check above is made on at most this many training rows (a seeded sample): when the
neighbours are not used, the full search over every training row is skipped."""


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
    *, exclude_label: NDArray[np.bool_] | None = None,
) -> NDArray[np.int64]:
    """The class predicted in most epochs, per example (-1 where no epoch is observed).

    Parameters
    ----------
    pred : ndarray of int (n_epochs, n_examples)
        Predicted class per epoch.
    observed : ndarray of bool (n_epochs, n_examples)
    labels : ndarray of int (n_examples,)
        Given labels (-1: none); a tie that includes the given label resolves to it.
    exclude_label : ndarray of bool (n_examples,), optional
        Rows whose given label does not count as a candidate (the class predicted most often
        instead of it); such a row that was never predicted otherwise keeps its given label.

    Returns
    -------
    ndarray of int64 (n_examples,)

    Examples
    --------
    >>> pred = np.array([[0, 1, 2], [1, 1, 0], [1, 0, 0]])
    >>> suggested_labels(pred, np.ones((3, 3), bool), np.array([0, 0, 2])).tolist()
    [1, 1, 0]
    >>> suggested_labels(pred, np.ones((3, 3), bool), np.array([0, 1, 2]),
    ...                  exclude_label=np.array([False, True, False])).tolist()
    [1, 0, 0]
    """
    p = np.where(observed, np.asarray(pred, dtype=np.int64), -1)
    n_epochs, n = p.shape
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (n,):
        raise ValueError(f"Expected `labels` to have shape ({n},), got {y.shape}.")
    skip = np.zeros(n, bool) if exclude_label is None else np.asarray(exclude_label, dtype=bool)
    last = np.full(n, -1, dtype=np.int64)
    for e in range(n_epochs):
        last = np.where(p[e] >= 0, p[e], last)
    best = np.full(n, -1, dtype=np.int64)
    best_score = np.full(n, -np.inf)
    for e in range(n_epochs):  # every observed prediction is a candidate; O(n_epochs^2 n)
        cand = p[e]
        count = (p == cand[None, :]).sum(axis=0).astype(np.float64)
        score = np.where((cand >= 0) & ~(skip & (cand == y)),
                         count + 0.5 * (cand == y) + 0.25 * (cand == last) - 1e-9 * cand, -np.inf)
        better = score > best_score
        best = np.where(better, cand, best)
        best_score = np.where(better, score, best_score)
    keep = skip & (best < 0) & (p >= 0).any(axis=0)
    return np.where(keep, y, best)


def label_issues(table: pd.DataFrame) -> tuple[NDArray[np.bool_], dict[str, Any]]:
    """Which training rows are label issues, and how the cut-off was chosen (module docstring).

    Parameters
    ----------
    table : DataFrame
        The example table with ``split``, ``label`` and ``loss_mean`` (or ``confidence``).

    Returns
    -------
    (ndarray of bool (n_examples,), dict)
        The mask (False outside the training split and where there are no dynamics) and the
        record of the cut-off: method, fitted mixture, loss cut-off, counts.

    Examples
    --------
    >>> loss = np.r_[np.full(90, 0.01), np.full(10, 3.0)] * np.exp(np.linspace(-0.2, 0.2, 100))
    >>> t = pd.DataFrame({"split": "train", "label": 0, "loss_mean": loss})
    >>> issue, info = label_issues(t)
    >>> int(issue.sum()), bool(issue[90:].all())
    (10, True)
    """
    rows, score, basis = _issue_score(table)
    issue = np.zeros(len(table), dtype=bool)
    info: dict[str, Any] = {"method": METHOD, "score": basis, "n_scored": int(rows.sum())}
    x = score[rows]
    if x.size < MIN_ROWS or np.ptp(x) <= 1e-9:
        info.update(method=f"none (fewer than {MIN_ROWS} training rows with dynamics, or no spread)",
                    n_issues=0, rate=0.0 if x.size else float("nan"))
        return issue, info
    fit_x = x
    if x.size > MIXTURE_MAX_ROWS:
        fit_x = np.random.default_rng(0).choice(x, MIXTURE_MAX_ROWS, replace=False)
    gmm, high, posterior = _fit_mixture(fit_x, x)
    n_components = gmm.n_components
    flagged = posterior > 0.5
    again = resampled_rates(x)
    if again["stable"] is False:
        # Bagging (Breiman 1996): an unstable cut-off is replaced by the median of the resampled
        # rates, applied to the same ranking (the highest scores).
        k = int(round(again["median"] * x.size))
        flagged = np.zeros(x.size, dtype=bool)
        flagged[np.argsort(-x, kind="stable")[:k]] = True
        info["count_rule"] = (f"the median of the resampled rates, {again['median']:.1%} (the mixture "
                              f"fitted to all rows flagged {np.mean(posterior > 0.5):.1%})")
    issue[np.flatnonzero(rows)[flagged]] = True
    cutoff = float(x[flagged].min()) if flagged.any() else float("nan")
    info.update({
        "n_issues": int(issue.sum()),
        "rate": float(issue.sum() / rows.sum()),
        "cutoff": float(np.exp(cutoff)) if basis == S.LOSS_MEAN else cutoff,
        "n_components": n_components,
        "components": {"mean_log_loss": [float(v) for v in gmm.means_[:, 0]],
                       "std_log_loss": [float(np.sqrt(v)) for v in gmm.covariances_.reshape(-1)],
                       "weight": [float(v) for v in gmm.weights_],
                       "high": high},
        "paper": "Li, Socher & Hoi (2020), DivideMix, ICLR",
        "resampled": again,
    })
    return issue, info


def _fit_mixture(fit_x: NDArray[np.float64], x: NDArray[np.float64]) -> tuple[Any, int, NDArray[np.float64]]:
    """The mixture of :func:`label_issues` fitted to ``fit_x``: (the model, its high component,
    the posterior of that component for each of ``x``)."""
    from sklearn.mixture import GaussianMixture

    for n_components in (2, 3, 4):
        gmm = GaussianMixture(n_components, random_state=0).fit(fit_x[:, None])
        high = int(np.argmax(gmm.means_[:, 0]))
        posterior = gmm.predict_proba(x[:, None])[:, high]
        flagged = posterior > 0.5
        upper_tail = flagged.any() and bool(np.array_equal(flagged, x >= x[flagged].min()))
        # A majority of wrong labels is not a noise model, and a high component that is not the
        # upper tail of the losses (e.g. a narrow one inside a wide one) is not the flips:
        # split the losses further.
        if gmm.weights_[high] < 0.5 and upper_tail:
            break
    return gmm, high, posterior


def resampled_rates(x: ArrayLike, *, rounds: int = RESAMPLE_ROUNDS,
                    max_rows: int = RESAMPLE_MAX_ROWS, seed: int = 0) -> dict[str, Any]:
    """How stable the mixture's noise rate is: the rate refitted on bootstrap resamples.

    Each round draws ``min(n, max_rows)`` of the scores ``x`` with replacement and refits the
    mixture of :func:`label_issues` (component count included). Returns the 10th and 90th
    percentiles of the rates (``low``, ``high``), their ``median``, the rounds, the rows per
    round and ``stable``: False when ``high`` exceeds twice ``low`` (on the suite's twenty-six
    runs: 2.0-13x on four of the five sentiment runs, whose losses have no clear two-group split
    and whose flagged counts were 0.2-2x the true one, and at most 1.4x on the others;
    docs/metrics.md). Without enough rows or spread: NaN rates, ``stable`` None.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(-3.0, 0.5, 900), rng.normal(1.0, 0.3, 100)]  # log losses: 10 % high
    >>> r = resampled_rates(x, rounds=8)
    >>> 0.08 < r["low"] <= r["high"] < 0.12, r["stable"]
    (True, True)
    """
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    m = min(v.size, max_rows)
    out: dict[str, Any] = {"rounds": int(rounds), "rows": int(m), "low": float("nan"),
                           "high": float("nan"), "median": float("nan"), "stable": None}
    if v.size < MIN_ROWS or np.ptp(v) <= 1e-9:
        return out
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(rounds):
        sample = rng.choice(v, m, replace=True)
        if np.ptp(sample) <= 1e-9:
            continue
        _, _, posterior = _fit_mixture(sample, sample)
        rates.append(float(np.mean(posterior > 0.5)))
    if rates:
        low, median, high = (float(q) for q in np.quantile(rates, [0.1, 0.5, 0.9]))
        out.update(low=low, high=high, median=median, stable=bool(high <= 2.0 * low))
    return out


def resampled_range(record: Any) -> dict[str, Any] | None:
    """A ``resampled`` record read back from ``ood_eval.json`` (:func:`resampled_rates`) when its
    rates are numbers: ``low`` and ``high`` as floats, ``stable``, ``rounds`` and ``rows`` as
    stored; None when it is absent, has no rates (NaN) or is malformed (a tampered file).

    Examples
    --------
    >>> resampled_range({"low": 0.1, "high": 0.12, "stable": True, "rounds": 16, "rows": 900})["high"]
    0.12
    >>> resampled_range({"low": None, "high": None}) is None, resampled_range("oops") is None
    (True, True)
    """
    if not isinstance(record, dict):
        return None
    low, high = record.get("low"), record.get("high")
    if not isinstance(low, int | float) or not isinstance(high, int | float) or low != low or high != high:
        return None
    return {"low": float(low), "high": float(high), "stable": record.get("stable"),
            "rounds": record.get("rounds"), "rows": record.get("rows")}


def _issue_score(table: pd.DataFrame) -> tuple[NDArray[np.bool_], NDArray[np.float64], str]:
    """Scored training rows, the score ``log(loss_mean)`` (or ``log(-log(confidence))``), its name."""
    y = pd.to_numeric(table[S.LABEL], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    rows = np.isfinite(y)
    if S.SPLIT in table.columns:
        rows &= (table[S.SPLIT].astype(str) == S.TRAIN_SPLIT).to_numpy()
    if S.LOSS_MEAN in table.columns and np.isfinite(_num(table, S.LOSS_MEAN)[rows]).any():
        score, basis = np.log(np.maximum(_num(table, S.LOSS_MEAN), 1e-12)), S.LOSS_MEAN
    elif S.CONFIDENCE in table.columns:
        score, basis = np.log(-np.log(np.clip(_num(table, S.CONFIDENCE), 1e-12, 1.0 - 1e-12))), \
            f"-log({S.CONFIDENCE})"
    else:
        raise ValueError(f"Expected a `{S.LOSS_MEAN}` or `{S.CONFIDENCE}` column, got "
                         f"{list(table.columns)[:12]}.")
    rows &= np.isfinite(score)
    return rows, score, basis


def neighbor_disagreement(
    features: ArrayLike, labels: ArrayLike, *, k: int = NEIGHBOR_K,
    queries: NDArray[np.intp] | None = None,
) -> NDArray[np.float64]:
    """Fraction of a row's ``k`` nearest other rows (cosine distance) whose label differs.

    Parameters
    ----------
    features : array-like, shape (n_rows, n_features)
        The rows and their neighbour bank (each row is left out of its own neighbours).
    labels : array-like of int, shape (n_rows,)
    k : int, default :data:`NEIGHBOR_K`
        Clipped to ``n_rows - 1``.
    queries : ndarray of int, optional
        Only these rows are scored (all rows stay neighbours). Default: every row.

    Returns
    -------
    ndarray of float64, shape (len(queries),) or (n_rows,)

    Examples
    --------
    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9]])
    >>> neighbor_disagreement(x, [0, 0, 1, 1, 1], k=2).tolist()
    [0.5, 0.5, 1.0, 0.0, 0.0]
    """
    index, unit, y = _neighbor_index(features, labels)
    return _disagreement(index, unit, y, queries, k)


def _neighbor_index(features: ArrayLike, labels: ArrayLike) -> tuple[Any, NDArray[np.float32], NDArray[np.int64]]:
    """A fitted :class:`analysis.neighbors.NeighborIndex` over the L2-normalised rows."""
    from analysis.neighbors import NeighborIndex

    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"Expected `features` (n_rows, n_features) and `labels` (n_rows,), got "
                         f"{x.shape} and {y.shape}.")
    if x.shape[0] < 2:
        raise ValueError(f"Expected at least 2 rows for neighbours, got {x.shape[0]}.")
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))
    return NeighborIndex().fit(unit), unit, y


def _disagreement(index: Any, unit: NDArray[np.float32], y: NDArray[np.int64],
                  queries: NDArray[np.intp] | None, k: int) -> NDArray[np.float64]:
    q = np.arange(unit.shape[0]) if queries is None else np.asarray(queries, dtype=np.intp)
    k = int(min(k, unit.shape[0] - 1))
    _, found = index.kneighbors(unit[q], k, exclude=q)
    return np.asarray((y[found] != y[q, None]).mean(axis=1), dtype=np.float64)


def separation_auroc(score: ArrayLike, positive: ArrayLike) -> float:
    """AUROC of ``score`` for ``positive`` rows vs the rest (ties count 1/2); NaN if one class is empty.

    Examples
    --------
    >>> separation_auroc([0.0, 0.1, 0.5, 1.0], [False, True, False, True])
    0.75
    """
    from scipy.stats import rankdata

    s = np.asarray(score, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def rank_combined_issues(
    log_loss: ArrayLike, disagreement: ArrayLike, n_issues: int,
) -> NDArray[np.bool_]:
    """The ``n_issues`` rows with the highest mean percentile rank of the two scores (ties: loss).

    Percentile rank: average rank (ties share it) divided by the number of rows.

    Examples
    --------
    >>> rank_combined_issues([1.0, 2, 3, 4], [0.9, 0, 0, 0.1], 2).tolist()
    [True, False, False, True]
    """
    from scipy.stats import rankdata

    loss = np.asarray(log_loss, dtype=np.float64)
    dis = np.asarray(disagreement, dtype=np.float64)
    if loss.shape != dis.shape or loss.ndim != 1:
        raise ValueError(f"Expected `log_loss` and `disagreement` of one shape (n_rows,), got "
                         f"{loss.shape} and {dis.shape}.")
    if not 0 <= n_issues <= loss.size:
        raise ValueError(f"Expected `n_issues` in [0, {loss.size}], got {n_issues}.")
    combined = (rankdata(loss) + rankdata(dis)) / (2.0 * loss.size)
    order = np.lexsort((-loss, -combined))  # last key first: combined, then loss
    out = np.zeros(loss.size, dtype=bool)
    out[order[:n_issues]] = True
    return out


def refine_with_neighbors(
    table: pd.DataFrame, positions: ArrayLike, features: ArrayLike, info: dict[str, Any],
    *, k: int = NEIGHBOR_K, gate: float = NEIGHBOR_GATE,
) -> tuple[NDArray[np.bool_], dict[str, Any]]:
    """``label_issue`` re-ranked with the label disagreement of feature-space neighbours (module docstring).

    Parameters
    ----------
    table : DataFrame
        The example table with ``label_issue`` (the mixture's) and the columns of :func:`label_issues`.
    positions : array-like of int, shape (n_feature_rows,)
        Table rows of the training ``features``.
    features : array-like, shape (n_feature_rows, n_features)
    info : dict
        The record :func:`label_issues` returned; a copy is updated and returned.
    k, gate : see :data:`NEIGHBOR_K`, :data:`NEIGHBOR_GATE`

    Returns
    -------
    (ndarray of bool (n_examples,), dict)
        The new mask (the old one where the neighbours are not used) and the updated record
        (``neighbors``: k, the agreement AUROC, whether they were used and why not).
    """
    issue = label_issue_mask(table[S.LABEL_ISSUE])
    out = dict(info)
    record: dict[str, Any] = {"k": int(k), "gate_auroc": float(gate), "used": False,
                              "paper": "Bahri, Jiang & Gupta (2020), Deep k-NN for Noisy Labels, ICML"}
    out["neighbors"] = record
    n_issues = int(issue.sum())
    rows, score, _ = _issue_score(table)
    pos = np.asarray(positions, dtype=np.intp)
    x = np.asarray(features)
    finite = np.isfinite(x).all(axis=1)
    pos, x = pos[finite], x[finite]
    have = np.zeros(len(table), dtype=bool)
    have[pos] = True
    if n_issues == 0 or n_issues >= rows.sum() or not have[rows].all() or rows.sum() <= k:
        record["reason"] = ("no label issues to re-rank" if n_issues == 0 or n_issues >= rows.sum()
                            else "some scored training rows have no finite features")
        return issue, out
    # the neighbour bank: every training row with features and a label (scored or not)
    y = pd.to_numeric(table[S.LABEL], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bank = np.isfinite(y[pos])
    pos, x = pos[bank], x[bank]
    labels = y[pos].astype(np.int64)
    scored = np.flatnonzero(rows[pos])  # bank rows that are scored training rows
    sample = scored
    if scored.size > NEIGHBOR_GATE_SAMPLE:
        sample = np.sort(np.random.default_rng(0).choice(scored, NEIGHBOR_GATE_SAMPLE, replace=False))
    index, unit, labels = _neighbor_index(x, labels)
    dis = _disagreement(index, unit, labels, sample, k)
    agreement = separation_auroc(dis, issue[pos[sample]])
    record["agreement_auroc"] = agreement
    if not agreement >= gate:  # NaN (one class empty in the sample) counts as not agreeing
        record["reason"] = f"disagreement separates the mixture's issues at AUROC {agreement:.3f} < {gate}"
        return issue, out
    if sample.size < scored.size:  # the rest of the scored rows
        rest = np.setdiff1d(scored, sample, assume_unique=True)
        full = np.empty(scored.size, dtype=np.float64)
        at = np.searchsorted(scored, sample)
        full[at] = dis
        full[np.searchsorted(scored, rest)] = _disagreement(index, unit, labels, rest, k)
        dis = full
    chosen = rank_combined_issues(score[pos[scored]], dis, n_issues)
    # Two witnesses: a chosen row stays a label issue only when most of its neighbours carry
    # another label (Deep k-NN's filter). The mixture's count runs high where clean rows are
    # also slow to learn (pair flips, short runs); the neighbours do not share that bias.
    confirmed = chosen & (dis > NEIGHBOR_MAJORITY)
    new = np.zeros(len(table), dtype=bool)
    new[pos[scored][confirmed]] = True
    record["used"] = True
    record["not_confirmed"] = int(chosen.sum() - confirmed.sum())
    record["changed"] = int((new != issue).sum())
    out.update(method=NEIGHBOR_METHOD, mixture_cutoff=info.get("cutoff"), cutoff=None,
               score=f"{info.get('score')} and neighbour label disagreement",
               n_issues=int(new.sum()), rate=float(new.sum() / rows.sum()),
               mixture_n_issues=n_issues, mixture_rate=info.get("rate"))
    return new, out


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
        wrong = label_issue_mask(table[S.LABEL_ISSUE]) & rows
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


def label_issue_mask(values: Any) -> NDArray[np.bool_]:
    """A ``label_issue`` column as a bool array (missing = False); booleans or 0/1 only.

    Raises
    ------
    SchemaError
        Other values (the column is not what ``datamap analyze`` writes).

    Examples
    --------
    >>> label_issue_mask(pd.array([True, None, False], dtype="boolean")).tolist()
    [True, False, False]
    """
    series = pd.Series(values)
    if pd.api.types.is_bool_dtype(series.dtype):
        return np.asarray(series.astype("boolean").fillna(False).to_numpy(bool))
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bad = (series.notna().to_numpy() & np.isnan(numbers)) | ~np.isin(numbers[~np.isnan(numbers)], (0, 1)).all()
    if np.any(bad):
        raise S.SchemaError(
            f"Expected `{S.LABEL_ISSUE}` to hold booleans, got values such as "
            f"{series.dropna().unique()[:3].tolist()}. Rebuild the table with `datamap analyze RUN_DIR`."
        )
    return np.nan_to_num(numbers, nan=0.0) == 1


def _rows(table: pd.DataFrame) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """Given and suggested labels (-1: none) and the training rows that have both."""
    y = pd.to_numeric(table[S.LABEL], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    sug = pd.to_numeric(table[S.SUGGESTED_LABEL], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    rows = np.isfinite(y) & np.isfinite(sug) & (sug >= 0)
    if S.SPLIT in table.columns:
        rows &= (table[S.SPLIT].astype(str) == S.TRAIN_SPLIT).to_numpy()
    return (np.where(np.isfinite(y), y, -1).astype(np.int64),
            np.where(np.isfinite(sug), sug, -1).astype(np.int64), rows)


def _num(table: pd.DataFrame, column: str) -> NDArray[np.float64]:
    return np.asarray(pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64, na_value=np.nan))


def _class_names(table: pd.DataFrame) -> dict[int, str]:
    """Class index -> name from the table's (label, label_name) pairs."""
    if S.LABEL_NAME not in table.columns:
        return {}
    pairs = table[[S.LABEL, S.LABEL_NAME]].dropna().drop_duplicates(S.LABEL)
    return {int(k): str(v) for k, v in zip(pairs[S.LABEL], pairs[S.LABEL_NAME], strict=True)}
