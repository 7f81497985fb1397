"""OOD evaluation: hand-computed tiny cases, scikit-learn references, ground-truth rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from analysis import ood_eval as E
from analysis import schema as S


def test_tiny_case_by_hand():
    # ID scores 0,1,2,3; OOD 0.5,10,11,12 (OOD positive, higher = more anomalous)
    s_id, s_ood = [0.0, 1.0, 2.0, 3.0], [0.5, 10.0, 11.0, 12.0]
    m = E.compute_ood_metrics(s_id, s_ood, recall=0.75)
    # pairs (ood > id): 0.5 beats only 0 -> 1; the other three beat all 4 -> 12; 13/16
    assert m["auroc"] == pytest.approx(13 / 16)
    # ranking by score: 12,11,10 (ood), 3,2,1 (id), 0.5 (ood), 0 (id)
    # AP_out = 1/4 * (1 + 1 + 1 + 4/7)
    assert m["aupr_out"] == pytest.approx((3 + 4 / 7) / 4)
    # ID positive ranked by -score: 0 (id), 0.5 (ood), 1, 2, 3 (id), ...
    assert m["aupr_in"] == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 5) / 4)
    # keep 75% of ID -> t = 2; OOD <= 2: {0.5} -> 1/4
    assert m["fpr95"] == m["fpr_ood_accepted_at_95_id"] == 0.25
    # detect 75% of OOD -> t = 10; ID >= 10: none
    assert m["fpr_id_rejected_at_95_ood"] == 0.0
    assert (m["n_id"], m["n_ood"]) == (4, 4)


def test_fpr_definitions_by_name_and_ties():
    s_id = np.arange(100, dtype=float)  # 95% kept -> t = 94
    s_ood = np.array([94.0, 94.0, 95.0, 200.0])
    assert E.fpr_at_recall(s_id, s_ood) == 0.5  # ties at t count as accepted
    assert E.fpr_at_recall(s_id, s_ood, definition="id_rejected_at_95_ood") == pytest.approx(6 / 100)
    with pytest.raises(ValueError, match="Expected `definition` among"):
        E.fpr_at_recall(s_id, s_ood, definition="tpr95")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recall"):
        E.fpr_at_recall(s_id, s_ood, recall=0.0)


def _classic_fpr_from_roc(s_id, s_ood, recall=0.95):
    """Independent reading via sklearn's ROC with ID as positive and -score as its score."""
    y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
    fpr, tpr, _ = roc_curve(y, -np.r_[s_id, s_ood], drop_intermediate=False)
    return fpr[np.searchsorted(tpr, recall - 1e-12)]


@settings(max_examples=60, deadline=None)
@given(
    s_id=st.lists(st.integers(-20, 20), min_size=1, max_size=40),
    s_ood=st.lists(st.integers(-20, 20), min_size=1, max_size=40),
)
def test_metrics_match_sklearn_with_ties(s_id, s_ood):
    a, b = np.asarray(s_id, float), np.asarray(s_ood, float)
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    s = np.r_[a, b]
    m = E.compute_ood_metrics(a, b)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m["aupr_in"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    assert m["fpr95"] == pytest.approx(_classic_fpr_from_roc(a, b), abs=1e-12)


def test_metrics_on_separable_and_reversed_scores():
    m = E.compute_ood_metrics([0.0, 1.0], [5.0, 6.0])
    assert (m["auroc"], m["aupr_in"], m["aupr_out"], m["fpr95"]) == (1.0, 1.0, 1.0, 0.0)
    r = E.compute_ood_metrics([5.0, 6.0], [0.0, 1.0])
    assert r["auroc"] == 0.0 and r["fpr95"] == 1.0


def test_bad_scores_raise():
    with pytest.raises(ValueError, match="Expected finite `scores_id`"):
        E.compute_ood_metrics([np.nan, 1.0], [1.0])
    with pytest.raises(ValueError, match="at least one value in `scores_ood`"):
        E.auroc([1.0], [])
    with pytest.raises(ValueError, match="at least one positive"):
        E.average_precision([1.0, 2.0], [False, False])


def _table(**cols):
    return pd.DataFrame(cols)


def test_ground_truth_from_split_names_and_is_ood():
    t = _table(split=["train", "test", "ood:far", "other", "test"])
    assert E.ood_ground_truth(t).tolist() == [pd.NA, False, True, pd.NA, False]
    t[S.IS_OOD] = pd.array([None, None, None, True, True], dtype="boolean")
    # is_ood wins where present; train rows are never used
    assert E.ood_ground_truth(t).tolist() == [pd.NA, False, True, True, True]


def test_evaluate_per_split_and_overall():
    rng = np.random.default_rng(0)
    n = 200
    t = _table(
        split=["train"] * n + ["test"] * n + ["ood:near"] * n + ["ood:far"] * n,
        ood_x=np.r_[rng.normal(0, 1, 2 * n), rng.normal(1, 1, n), rng.normal(5, 1, n)],
    )
    ev = E.evaluate_ood(t)
    res = ev["metrics"]["ood_x"]
    assert set(res) == {"ood:near", "ood:far", E.OVERALL}
    assert res["ood:far"]["auroc"] > 0.99 > res["ood:near"]["auroc"] > 0.6
    lo, hi = sorted([res["ood:near"]["auroc"], res["ood:far"]["auroc"]])
    assert lo <= res[E.OVERALL]["auroc"] <= hi
    assert res[E.OVERALL]["n_ood"] == 2 * n and res["ood:far"]["n_id"] == n
    y = np.r_[np.zeros(n), np.ones(n)]
    assert res["ood:near"]["auroc"] == pytest.approx(
        roc_auc_score(y, t.ood_x.to_numpy()[n : 3 * n]))
    assert ev["ood_splits"] == {"ood:far": n, "ood:near": n}


def test_ood_split_without_id_reference_is_skipped_with_warning():
    t = _table(split=["train", "ood:far"], ood_x=[0.0, 1.0])
    with pytest.warns(UserWarning, match="no in-distribution evaluation rows"):
        ev = E.evaluate_ood(t)
    assert ev["metrics"] == {} and "OOD evaluation skipped" in ev["skipped"][-1]


def test_split_without_ground_truth_is_reported_not_guessed():
    t = _table(split=["test", "test", "ood:far", "unlabelled"], ood_x=[0.0, 0.1, 1.0, 9.0])
    ev = E.evaluate_ood(t)
    assert ev["metrics"]["ood_x"][E.OVERALL]["n_ood"] == 1
    assert any("unlabelled" in s for s in ev["skipped"])


def test_nan_scores_are_left_out():
    t = _table(split=["test", "test", "ood:far", "ood:far"], ood_x=[0.0, np.nan, 1.0, np.nan])
    m = E.evaluate_ood(t)["metrics"]["ood_x"][E.OVERALL]
    assert (m["n_id"], m["n_ood"], m["auroc"]) == (1, 1, 1.0)


@settings(max_examples=40, deadline=None)
@given(
    # a grid, so that exp() keeps distinct values distinct in float64
    s_id=st.lists(st.integers(-50, 50).map(lambda v: v / 10), min_size=2, max_size=30),
    s_ood=st.lists(st.integers(-50, 50).map(lambda v: v / 10), min_size=2, max_size=30),
)
def test_metrics_invariant_to_strictly_increasing_transforms(s_id, s_ood):
    a, b = np.asarray(s_id), np.asarray(s_ood)
    m1 = E.compute_ood_metrics(a, b)
    m2 = E.compute_ood_metrics(np.exp(a) * 3 + 1, np.exp(b) * 3 + 1)
    for key in ("auroc", "aupr_in", "aupr_out", "fpr95", "fpr_id_rejected_at_95_ood"):
        assert m1[key] == pytest.approx(m2[key], abs=1e-12), key
    # swapping the roles of ID and OOD and negating the scores mirrors AUROC
    assert E.auroc(-b, -a) == pytest.approx(m1["auroc"], abs=1e-12)


def test_ood_curves_match_hand_computed_points():
    from analysis.ood_eval import ood_curves

    # ID scores 0, 1; OOD scores 2, 0.5 (one OOD ranked below an ID example)
    c = ood_curves(np.array([0.0, 1.0, 2.0, 0.5]), np.array([False, False, True, True]))
    # thresholds 2 -> (fpr 0, tpr .5); 1 -> (.5, .5); .5 -> (.5, 1); 0 -> (1, 1)
    pts = set(zip(c["fpr"].tolist(), c["tpr"].tolist(), strict=True))
    assert {(0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)} <= pts
    assert c["auroc"] == pytest.approx(0.75)  # 3 of 4 (ID, OOD) pairs ordered correctly
    # average precision, OOD positive: ranks 2.0 (hit), 1.0, 0.5 (hit) -> (1 + 2/3) / 2
    assert c["aupr_out"] == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="one kind only"):
        ood_curves(np.array([0.0, 1.0]), np.array([True, True]))
