"""Cross-diagnosis rules, thresholds and the table wrapper."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from analysis import diagnosis as D
from analysis import schema as S


def test_every_rule_of_the_table():
    region = [S.HARD, S.HARD, S.EASY, S.EASY, S.AMBIGUOUS, S.AMBIGUOUS, S.NO_DYNAMICS, S.NO_DYNAMICS]
    # reference: scores 0..99 -> t(0.95) = 94.05, t(0.995) = 98.505
    ref_scores = np.arange(100.0)
    score = np.r_[[96.0, 10.0, 99.0, 96.0, 99.0, 96.0, 96.0, 10.0], ref_scores]
    reg = np.r_[region, [S.EASY] * 100]
    ref = np.r_[np.zeros(8, bool), np.ones(100, bool)]
    out = D.diagnose(reg, score, ref)[:8].tolist()
    assert out == [D.SUSPECT_OOD, D.SUSPECT_MISLABELED, D.SUSPECT_OOD, D.CLEAN,
                   D.SUSPECT_OOD, D.AMBIGUOUS, D.SUSPECT_OOD, D.NO_DYNAMICS]


def test_thresholds_are_adjustable_and_frozen():
    reg = [S.HARD] * 3 + [S.EASY]
    score = [1.0, 2.0, 3.0, 2.0]  # q0.9 = 2.7, q0.1 = 1.3
    strict = D.DiagnosisThresholds(ood_quantile=0.9, learned_ood_quantile=None)
    loose = D.DiagnosisThresholds(ood_quantile=0.1, learned_ood_quantile=0.1)
    assert D.diagnose(reg, score, thresholds=strict).tolist() == [
        D.SUSPECT_MISLABELED, D.SUSPECT_MISLABELED, D.SUSPECT_OOD, D.CLEAN]
    assert D.diagnose(reg, score, thresholds=loose).tolist() == [
        D.SUSPECT_MISLABELED, D.SUSPECT_OOD, D.SUSPECT_OOD, D.SUSPECT_OOD]
    with pytest.raises(dataclasses.FrozenInstanceError):
        strict.ood_quantile = 0.5  # type: ignore[misc]
    with pytest.raises(ValueError, match="ood_quantile"):
        D.DiagnosisThresholds(ood_quantile=1.0)
    with pytest.raises(ValueError, match="reference_splits"):
        D.DiagnosisThresholds(reference_splits="train")  # type: ignore[arg-type]


def test_missing_scores_fall_back_to_region():
    reg = [S.EASY, S.AMBIGUOUS, S.HARD, S.NO_DYNAMICS]
    expected = [D.CLEAN, D.AMBIGUOUS, D.SUSPECT_MISLABELED, D.NO_DYNAMICS]
    assert D.diagnose(reg, None).tolist() == expected
    assert D.diagnose(reg, [np.nan] * 4).tolist() == expected


def test_bad_input_raises():
    with pytest.raises(ValueError, match="Expected regions among"):
        D.diagnose(["easy"], [1.0])
    with pytest.raises(ValueError, match="Expected `ood_score` to have shape \\(2,\\)"):
        D.diagnose([S.EASY, S.HARD], [1.0])


def test_diagnosis_column_uses_id_reference_rows():
    n = 100
    table = pd.DataFrame({
        S.SPLIT: ["train"] * n + ["ood:far"] * 10,
        S.REGION: [S.EASY] * (n - 1) + [S.HARD] + [S.NO_DYNAMICS] * 10,
        "ood_x": np.r_[np.linspace(0, 1, n - 1), 0.2, np.full(10, 50.0)],
        S.IS_OOD: [False] * n + [True] * 10,
    })
    col, info = D.diagnosis_column(table, "ood_x")
    assert list(col.categories) == list(D.DIAGNOSES)
    assert (col[n:] == D.SUSPECT_OOD).all()
    assert col[n - 1] == D.SUSPECT_MISLABELED
    assert info["score_column"] == "ood_x" and info["threshold"] < 1.0
    # OOD rows never move the thresholds
    table.loc[n:, S.SPLIT] = "train"
    col2, info2 = D.diagnosis_column(table, "ood_x")
    assert info2["threshold"] == info["threshold"]
    assert D.counts(col2)[D.SUSPECT_OOD] >= 10
    col3, info3 = D.diagnosis_column(table, None)
    assert info3["score_column"] is None and (col3[n:] == D.NO_DYNAMICS).all()


def test_categorical_and_string_regions_give_the_same_diagnosis():
    import numpy as np
    import pandas as pd

    from analysis import schema as S
    from analysis.diagnosis import DiagnosisThresholds, diagnosis_column

    rng = np.random.default_rng(0)
    n = 2000
    regions = rng.choice(list(S.REGIONS), n)
    table = pd.DataFrame({
        S.SPLIT: rng.choice(["train", "test", "ood:far"], n),
        S.REGION: pd.Categorical(regions, categories=list(S.REGIONS)),
        "score": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
    })
    th = DiagnosisThresholds(learned_ood_quantile=0.99)
    fast, info_fast = diagnosis_column(table, "score", thresholds=th)
    slow, info_slow = diagnosis_column(table.assign(**{S.REGION: regions.astype(object)}), "score", thresholds=th)
    assert list(fast) == list(slow)
    assert info_fast == info_slow
    assert len(set(fast)) >= 4  # the cases are exercised
