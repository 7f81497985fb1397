"""Cross-diagnosis: one actionable label per example from its label issues, region and OOD score.

Thresholds in :class:`DiagnosisThresholds`; ``t`` = the ``ood_quantile`` quantile of the OOD
score over the reference in-distribution rows, ``t_easy`` = the ``learned_ood_quantile``
quantile. The reference rows are the held-out in-distribution rows (an evaluation split such as
``test``) when the run records enough of them, else all in-distribution rows
(:func:`reference_rows`). When the table has a ``label_issue`` column (written by ``datamap
analyze``: the run's own cut-off, :mod:`analysis.noise`), the rules are (first match wins):

=========================== ====================== ==========================================
row                         OOD score              diagnosis
=========================== ====================== ==========================================
label issue                 ``> t_easy``           ``suspect_ood``
label issue                 otherwise              ``suspect_mislabeled``
hard-to-learn               ``> t``                ``suspect_ood``
any region                  ``> t_easy``           ``suspect_ood``
easy-to-learn               otherwise              ``clean``
ambiguous / hard-to-learn   otherwise              ``ambiguous``
no-dynamics (eval/OOD rows) ``> t``                ``suspect_ood``
no-dynamics                 ``<= t`` or missing    ``no_dynamics``
=========================== ====================== ==========================================

A label issue is called OOD only at the strict threshold: its features mostly look like a known
class (that is why the model could learn it as another one). Without a ``label_issue`` column
(tables analysed before it existed, or ``diagnose`` without ``label_issue``), the region decides:

=========================== ====================== ==========================================
region                      OOD score              diagnosis
=========================== ====================== ==========================================
hard-to-learn               ``> t``                ``suspect_ood``
hard-to-learn               ``<= t`` or missing    ``suspect_mislabeled``
easy-to-learn / ambiguous   ``> t_easy``           ``suspect_ood``
easy-to-learn               otherwise              ``clean``
ambiguous                   otherwise              ``ambiguous``
no-dynamics (eval/OOD rows) ``> t``                ``suspect_ood``
no-dynamics                 ``<= t`` or missing    ``no_dynamics``
=========================== ====================== ==========================================

Hard-to-learn examples that look in-distribution are the classic mislabeling suspects
(Swayamdipta et al., 2020); hard examples that also look out-of-distribution are more likely
junk or a missing class than a wrong label. Learned examples are only flagged OOD at a stricter
threshold, since the model fitted them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from analysis import noise
from analysis import schema as S

__all__ = [
    "CLEAN",
    "AMBIGUOUS",
    "SUSPECT_MISLABELED",
    "SUSPECT_OOD",
    "NO_DYNAMICS",
    "DIAGNOSES",
    "DiagnosisThresholds",
    "HELD_OUT",
    "ALL_ROWS",
    "CALIBRATIONS",
    "MIN_HELD_OUT",
    "ood_threshold",
    "reference_rows",
    "calibrated_threshold",
    "describe_reference",
    "diagnose",
    "diagnosis_column",
    "counts",
]

CLEAN = "clean"
AMBIGUOUS = "ambiguous"
SUSPECT_MISLABELED = "suspect_mislabeled"
SUSPECT_OOD = "suspect_ood"
NO_DYNAMICS = "no_dynamics"
DIAGNOSES = (CLEAN, AMBIGUOUS, SUSPECT_MISLABELED, SUSPECT_OOD, NO_DYNAMICS)
"""Every value of the ``diagnosis`` column, in display order."""

HELD_OUT = "held-out"
ALL_ROWS = "all"
CALIBRATIONS = (HELD_OUT, ALL_ROWS)
"""Values of :attr:`DiagnosisThresholds.calibrate_on`."""
MIN_HELD_OUT = 50
"""Fewest held-out in-distribution rows that set the OOD cut-offs on their own (else all
reference rows do, training rows included)."""


@dataclass(frozen=True)
class DiagnosisThresholds:
    """Explicit, adjustable thresholds of :func:`diagnose`.

    Parameters
    ----------
    ood_quantile : float in (0, 1), default 0.95
        ``t``: quantile of the reference ID scores above which hard-to-learn and no-dynamics rows
        are ``suspect_ood`` (0.95: 5% of reference ID rows would be flagged).
    learned_ood_quantile : float in (0, 1] or None, default 0.995
        ``t_easy`` for easy-to-learn and ambiguous rows; None never flags them.
    reference_splits : tuple of str, default ("train", "test")
        Splits whose rows (minus those with ``is_ood`` true) form the in-distribution reference.
    calibrate_on : {"held-out", "all"}, default "held-out"
        ``"held-out"``: when the reference holds at least :data:`MIN_HELD_OUT` rows outside the
        training split, those rows alone set ``t`` and ``t_easy``, as conformal order statistics
        (:func:`ood_threshold` with ``conformal=True``); otherwise all reference rows do.
        ``"all"``: all reference rows, training rows included, with linear interpolation (the
        rule before this option existed, so older runs re-diagnose to their stored column).
    """

    ood_quantile: float = 0.95
    learned_ood_quantile: float | None = 0.995
    reference_splits: tuple[str, ...] = (S.TRAIN_SPLIT, "test")
    calibrate_on: str = HELD_OUT

    def __post_init__(self) -> None:
        if not 0.0 < self.ood_quantile < 1.0:
            raise ValueError(f"Expected `ood_quantile` in (0, 1), got {self.ood_quantile!r}.")
        q = self.learned_ood_quantile
        if q is not None and not 0.0 < q <= 1.0:
            raise ValueError(f"Expected `learned_ood_quantile` in (0, 1] or None, got {q!r}.")
        if isinstance(self.reference_splits, str) or not self.reference_splits:
            raise ValueError(
                f"Expected `reference_splits` as a non-empty tuple of split names, got "
                f"{self.reference_splits!r}."
            )
        if self.calibrate_on not in CALIBRATIONS:
            raise ValueError(f"Expected `calibrate_on` among {CALIBRATIONS}, got {self.calibrate_on!r}.")


def ood_threshold(reference_scores: ArrayLike, quantile: float, *, conformal: bool = False) -> float:
    """The ``quantile`` of the finite reference scores, NaN if none.

    ``conformal=False``: linear interpolation (``numpy.quantile``). ``conformal=True``: the
    ``ceil((n + 1) * quantile)``-th smallest of the ``n`` scores (the largest when that exceeds
    ``n``), so that a new score exchangeable with them is above it with probability at most
    ``1 - quantile`` (split-conformal; Vovk et al. 2005). For held-out reference rows.

    Examples
    --------
    >>> ood_threshold([0.0, 1.0, 2.0, 3.0, 4.0], 0.5)
    2.0
    >>> ood_threshold([0.0, 1.0, 2.0, 3.0, 4.0], 0.6), ood_threshold([0.0, 1.0, 2.0, 3.0, 4.0], 0.6, conformal=True)
    (2.4, 3.0)
    """
    s = np.asarray(reference_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not s.size:
        return float("nan")
    if conformal:
        k = min(int(np.ceil((s.size + 1) * quantile - 1e-9)), s.size)  # 1e-9: (n+1)q exact in reals
        return float(np.partition(s, k - 1)[k - 1])
    return float(np.quantile(s, quantile))


def diagnose(
    region: ArrayLike,
    ood_score: ArrayLike | None,
    reference: ArrayLike | None = None,
    *,
    thresholds: DiagnosisThresholds | None = None,
    label_issue: ArrayLike | None = None,
    conformal: bool = False,
) -> NDArray[np.object_]:
    """Label every example ``clean``, ``ambiguous``, ``suspect_mislabeled``, ``suspect_ood`` or ``no_dynamics``.

    Parameters
    ----------
    region : array-like of str, shape (n_examples,)
        Values of :data:`analysis.schema.REGIONS`.
    ood_score : array-like of float, shape (n_examples,), or None
        Higher = more anomalous; NaN where not scored. None: diagnosis from the region alone.
    reference : array-like of bool, shape (n_examples,), optional
        Rows whose scores define the thresholds (in-distribution reference). Default: all rows.
    thresholds : DiagnosisThresholds, optional
    label_issue : array-like of bool, shape (n_examples,), optional
        Rows whose label the run estimates to be wrong (:func:`analysis.noise.label_issues`).
        When given, these (not the hard-to-learn region) are the mislabeling suspects, and
        hard-to-learn rows that are not label issues are ``ambiguous``.
    conformal : bool, default False
        Cut-offs as :func:`ood_threshold` with ``conformal=True`` (for held-out reference rows).

    Returns
    -------
    ndarray of object (str), shape (n_examples,)

    Examples
    --------
    >>> diagnose(["easy-to-learn", "hard-to-learn", "hard-to-learn", "no-dynamics"],
    ...          [0.0, 0.0, 9.0, 9.0], [True, True, False, False],
    ...          thresholds=DiagnosisThresholds(ood_quantile=0.5)).tolist()
    ['clean', 'suspect_mislabeled', 'suspect_ood', 'suspect_ood']
    """
    th = thresholds or DiagnosisThresholds()
    reg = np.asarray(region, dtype=object)
    if reg.ndim != 1:
        raise ValueError(f"Expected `region` to have shape (n_examples,), got {reg.shape}.")
    unknown = sorted(str(r) for r in set(pd.unique(reg)) - set(S.REGIONS))  # hashing, not sorting
    if unknown:
        raise ValueError(f"Expected regions among {S.REGIONS}, got {unknown}.")
    n = reg.shape[0]
    if ood_score is None:
        score = np.full(n, np.nan)
    else:
        score = np.asarray(ood_score, dtype=np.float64)
        if score.shape != (n,):
            raise ValueError(f"Expected `ood_score` to have shape ({n},), got {score.shape}.")
    ref = np.ones(n, bool) if reference is None else np.asarray(reference, dtype=bool)
    if ref.shape != (n,):
        raise ValueError(f"Expected `reference` to have shape ({n},), got {ref.shape}.")
    t, t_easy = _cutoffs(score[ref], th, conformal)
    with np.errstate(invalid="ignore"):
        beyond = score > t  # NaN compares False
        beyond_easy = score > t_easy
    hard, easy, amb = reg == S.HARD, reg == S.EASY, reg == S.AMBIGUOUS
    issue = None
    if label_issue is not None:
        issue = noise.label_issue_mask(label_issue)
        if issue.shape != (n,):
            raise ValueError(f"Expected `label_issue` to have shape ({n},), got {issue.shape}.")
    codes = _diagnosis_codes(hard, easy, amb, beyond, beyond_easy, issue)
    return np.asarray(DIAGNOSES, dtype=object)[codes]


def _cutoffs(reference_scores: NDArray[np.float64], th: DiagnosisThresholds, conformal: bool,
             ) -> tuple[float, float]:
    """``t`` and ``t_easy`` (NaN when ``learned_ood_quantile`` is None) over the reference scores."""
    t = ood_threshold(reference_scores, th.ood_quantile, conformal=conformal)
    t_easy = (ood_threshold(reference_scores, th.learned_ood_quantile, conformal=conformal)
              if th.learned_ood_quantile is not None else float("nan"))
    return t, t_easy


def _diagnosis_codes(
    hard: NDArray[np.bool_], easy: NDArray[np.bool_], amb: NDArray[np.bool_],
    beyond: NDArray[np.bool_], beyond_easy: NDArray[np.bool_],
    issue: NDArray[np.bool_] | None = None,
) -> NDArray[np.int8]:
    """Index into :data:`DIAGNOSES` of each row (the rule of :func:`diagnose`, first match wins)."""
    code = {d: np.int8(i) for i, d in enumerate(DIAGNOSES)}
    learned = easy | amb
    if issue is None:
        return np.select(
            [hard & beyond, hard, learned & beyond_easy, easy, amb, beyond],
            [code[SUSPECT_OOD], code[SUSPECT_MISLABELED], code[SUSPECT_OOD], code[CLEAN],
             code[AMBIGUOUS], code[SUSPECT_OOD]],
            default=code[NO_DYNAMICS],
        ).astype(np.int8)
    dyn = easy | amb | hard
    issue = issue & dyn
    return np.select(
        [issue & beyond_easy, issue, hard & beyond, dyn & beyond_easy, easy, amb | hard, beyond],
        [code[SUSPECT_OOD], code[SUSPECT_MISLABELED], code[SUSPECT_OOD], code[SUSPECT_OOD],
         code[CLEAN], code[AMBIGUOUS], code[SUSPECT_OOD]],
        default=code[NO_DYNAMICS],
    ).astype(np.int8)


def reference_rows(table: pd.DataFrame, thresholds: DiagnosisThresholds | None = None,
                   score: NDArray[np.floating[Any]] | None = None,
                   ) -> tuple[NDArray[np.bool_], dict[str, Any]]:
    """The rows whose OOD scores set the diagnosis' cut-offs, and how they were chosen.

    The in-distribution reference is the ``reference_splits`` rows whose ``is_ood`` is not true.
    With ``calibrate_on="held-out"`` and at least :data:`MIN_HELD_OUT` of them outside the
    training split (with a finite ``score``, when given), only those held-out rows count: the scorers were fitted on the training rows
    and the model learned them, so training rows score lower than new in-distribution data
    (on the suite's text runs 20-28 % of the test rows were above the 0.95 quantile of the pooled
    reference). Held-out rows are exchangeable with new in-distribution data, so about
    ``1 - quantile`` of new in-distribution rows score above their quantile (split-conformal
    calibration; Vovk, Gammerman & Shafer 2005; Bates et al. 2023, Testing for outliers with
    conformal p-values, Ann. Statist.).

    Returns
    -------
    (bool mask over the table's rows, dict with ``calibrated_on`` ("held-out" or "all"),
    ``reference_rows`` (count), ``calibration_splits`` (the splits the rows come from) and, when
    held-out calibration was asked for but not possible, ``calibration_note``)
    """
    th = thresholds or DiagnosisThresholds()
    split = table[S.SPLIT]
    if not isinstance(split.dtype, pd.CategoricalDtype):  # categories compare as strings already
        split = split.astype(str)
    ref = split.isin(list(th.reference_splits)).to_numpy(bool).copy()
    if S.IS_OOD in table.columns:
        ref &= ~table[S.IS_OOD].astype("boolean").fillna(False).to_numpy(bool)
    scored = np.ones(len(table), dtype=bool) if score is None else np.isfinite(score)
    info: dict[str, Any] = {"calibrated_on": ALL_ROWS}
    if th.calibrate_on == HELD_OUT:
        held = ref & (split != S.TRAIN_SPLIT).to_numpy(bool) & scored
        n_held = int(held.sum())
        if n_held >= MIN_HELD_OUT:
            ref = held
            info["calibrated_on"] = HELD_OUT
        else:
            others = sorted(n for n in (str(v) for v in pd.unique(split))
                            if n not in th.reference_splits and not S.is_ood_split(n))
            info["calibration_note"] = (
                f"{n_held} held-out in-distribution rows (fewer than {MIN_HELD_OUT}): the cut-offs "
                "come from all reference rows, training rows included, and may flag more new "
                "in-distribution rows than the quantile says; record an in-distribution evaluation "
                "split named test to fix this"
                + (f"; the split{'s' if len(others) > 1 else ''} {', '.join(others)} "
                   f"{'are' if len(others) > 1 else 'is'} not among the reference splits "
                   f"{list(th.reference_splits)}: only those are known to be in-distribution"
                   if others else ""))
    info["reference_rows"] = int((ref & scored).sum())
    info["calibration_splits"] = sorted(str(v) for v in pd.unique(split[ref]))
    return ref, info


def calibrated_threshold(reference_scores: ArrayLike, quantile: float, calibration: dict[str, Any]) -> float:
    """:func:`ood_threshold` of the rows :func:`reference_rows` chose, as its ``calibration``
    record asks: the conformal order statistic over held-out rows, else linear interpolation."""
    return ood_threshold(reference_scores, quantile, conformal=calibration["calibrated_on"] == HELD_OUT)


def describe_reference(info: dict[str, Any]) -> str:
    """Which rows set the OOD cut-offs, in words, from ``ood_eval.json["diagnosis"]``.

    Examples
    --------
    >>> describe_reference({"calibrated_on": "held-out", "reference_rows": 289,
    ...                     "calibration_splits": ["test"]})
    'the 289 held-out in-distribution rows (test)'
    >>> describe_reference({})
    'the in-distribution rows, training rows included'
    """
    n, splits = info.get("reference_rows"), info.get("calibration_splits")
    where = f" ({', '.join(map(str, splits))})" if isinstance(splits, list) and splits else ""
    count = f"{n:,} " if isinstance(n, int) else ""
    if info.get("calibrated_on") == HELD_OUT:
        return f"the {count}held-out in-distribution rows{where}"
    return f"the {count}in-distribution rows{where}, training rows included"


def diagnosis_column(
    table: pd.DataFrame,
    score_column: str | None,
    *,
    thresholds: DiagnosisThresholds | None = None,
) -> tuple[pd.Categorical, dict[str, Any]]:
    """:func:`diagnose` applied to the example table; also returns the thresholds used.

    The reference rows that set the OOD cut-offs are those of :func:`reference_rows`.

    Returns
    -------
    (Categorical with categories :data:`DIAGNOSES`, dict of the thresholds, score column and
    reference rows)
    """
    th = thresholds or DiagnosisThresholds()
    issue = noise.label_issue_mask(table[S.LABEL_ISSUE]) if S.LABEL_ISSUE in table.columns else None
    score = None
    if score_column is not None and score_column in table.columns:
        score = pd.to_numeric(table[score_column], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    ref, ref_info = reference_rows(table, th, score)
    conformal = ref_info["calibrated_on"] == HELD_OUT
    t, t_easy = _cutoffs((np.full(len(table), np.nan) if score is None else score)[ref], th, conformal)
    region = table[S.REGION]
    if isinstance(region.dtype, pd.CategoricalDtype) and not region.isna().any():
        # Work on category codes: no per-row strings (a second at a million rows).
        cats = [str(c) for c in region.cat.categories]
        unknown = sorted(set(cats) - set(S.REGIONS))
        if unknown:
            raise ValueError(f"Expected regions among {S.REGIONS}, got {unknown}.")
        rc = region.cat.codes.to_numpy()

        def is_(name: str) -> NDArray[np.bool_]:
            return rc == cats.index(name) if name in cats else np.zeros(len(rc), bool)

        sc = np.full(len(rc), np.nan) if score is None else score
        with np.errstate(invalid="ignore"):
            codes = _diagnosis_codes(is_(S.HARD), is_(S.EASY), is_(S.AMBIGUOUS), sc > t, sc > t_easy,
                                     issue)
        diag_cat = pd.Categorical.from_codes(codes, categories=list(DIAGNOSES))
    else:
        reg = region.astype(str).to_numpy(dtype=object)
        diag_cat = pd.Categorical(diagnose(reg, score, ref, thresholds=th, label_issue=issue,
                                           conformal=conformal),
                                  categories=list(DIAGNOSES))
    info: dict[str, Any] = {"score_column": score_column if score is not None else None,
                            "mislabeled_rule": (f"`{S.LABEL_ISSUE}` column" if issue is not None
                                                else "hard-to-learn region"),
                            "ood_quantile": th.ood_quantile,
                            "learned_ood_quantile": th.learned_ood_quantile,
                            "reference_splits": list(th.reference_splits),
                            "calibrate_on": th.calibrate_on, **ref_info}
    if score is not None:
        info["threshold"] = t
        if th.learned_ood_quantile is not None:
            info["learned_threshold"] = t_easy
    return diag_cat, info


def counts(diagnosis: Sequence[str]) -> dict[str, int]:
    """Number of examples per diagnosis value (all values present, zeros included)."""
    vc = pd.Series(diagnosis).value_counts()
    return {d: int(vc.get(d, 0)) for d in DIAGNOSES}
