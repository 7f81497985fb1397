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


def test_conformal_threshold_by_hand():
    s = [3.0, 1.0, np.nan, 4.0, 2.0, 5.0]  # five finite scores
    # ceil(6 q)-th smallest: q = 0.5 -> 3rd (3.0); q = 0.51 -> ceil(3.06) = 4th (4.0); q = 0.9 -> 6 > 5 -> largest
    assert D.ood_threshold(s, 0.5, conformal=True) == 3.0
    assert D.ood_threshold(s, 0.51, conformal=True) == 4.0
    assert D.ood_threshold(s, 0.9, conformal=True) == 5.0
    assert D.ood_threshold(s, 0.5) == 3.0 and D.ood_threshold(s, 0.9) == pytest.approx(4.6)
    # (n + 1) q an integer in exact arithmetic: 100 * 0.95 = 95 -> the 95th smallest; and
    # 100 * 0.55, which is 55.00000000000001 in floating point -> still the 55th, not the 56th
    assert D.ood_threshold(np.arange(99.0), 0.95, conformal=True) == 94.0
    assert D.ood_threshold(np.arange(99.0), 0.55, conformal=True) == 54.0
    assert np.isnan(D.ood_threshold([np.nan], 0.5, conformal=True))


def _calibration_table(n_train: int, n_test: int, *, test_split: str = "test") -> pd.DataFrame:
    """Training rows scoring 0..n_train-1 / n_train (low: the model learned them), held-out rows
    scoring 10 + 0..n_test-1 (higher), and ten OOD rows far beyond."""
    return pd.DataFrame({
        S.SPLIT: ["train"] * n_train + [test_split] * n_test + ["ood:far"] * 10,
        S.REGION: [S.EASY] * n_train + [S.NO_DYNAMICS] * (n_test + 10),
        "s": np.r_[np.arange(n_train) / n_train, 10.0 + np.arange(n_test), np.full(10, 1e6)],
        S.IS_OOD: [False] * (n_train + n_test) + [True] * 10,
    })


def test_held_out_rows_set_the_cut_offs():
    table = _calibration_table(900, 100)
    col, info = D.diagnosis_column(table, "s")
    # conformal order statistics of the 100 held-out scores 10..109: the ceil(101 * 0.95) = 96th
    # smallest; for 0.995, ceil(101 * 0.995) = 101 > 100 rows, so the largest
    assert info["threshold"] == 105.0
    assert info["learned_threshold"] == 109.0
    assert info["calibrated_on"] == D.HELD_OUT and info["calibrate_on"] == D.HELD_OUT
    assert info["reference_rows"] == 100 and info["calibration_splits"] == ["test"]
    assert "calibration_note" not in info
    # rows 106..109 of the held-out split (4 of 100, at most 5 %) are beyond it
    assert int((np.asarray(col)[900:1000] == D.SUSPECT_OOD).sum()) == 4
    # pooled with the training rows the cut-off falls inside the held-out scores: 50 are flagged
    col_all, info_all = D.diagnosis_column(table, "s", thresholds=D.DiagnosisThresholds(calibrate_on=D.ALL_ROWS))
    assert info_all["calibrated_on"] == D.ALL_ROWS and info_all["reference_rows"] == 1000
    assert info_all["threshold"] == pytest.approx(np.quantile(table["s"][:1000], 0.95))
    assert int((np.asarray(col_all)[900:1000] == D.SUSPECT_OOD).sum()) == 50
    assert D.describe_reference(info) == "the 100 held-out in-distribution rows (test)"
    assert D.describe_reference(info_all) == "the 1,000 in-distribution rows (test, train), training rows included"


def test_too_few_held_out_rows_fall_back_to_all_rows_and_say_so():
    table = _calibration_table(900, D.MIN_HELD_OUT - 1)
    _, info = D.diagnosis_column(table, "s")
    assert info["calibrate_on"] == D.HELD_OUT and info["calibrated_on"] == D.ALL_ROWS
    assert info["reference_rows"] == 900 + D.MIN_HELD_OUT - 1
    assert f"{D.MIN_HELD_OUT - 1} held-out in-distribution rows" in info["calibration_note"]
    assert "evaluation split named test" in info["calibration_note"] and "reference splits" not in info["calibration_note"]
    # exactly MIN_HELD_OUT rows are enough; a split outside reference_splits is never used
    _, info = D.diagnosis_column(_calibration_table(900, D.MIN_HELD_OUT), "s")
    assert info["calibrated_on"] == D.HELD_OUT
    _, info = D.diagnosis_column(_calibration_table(900, 500, test_split="validation"), "s")
    assert info["calibrated_on"] == D.ALL_ROWS and info["reference_rows"] == 900
    assert "; the split validation is not among the reference splits ['train', 'test']" in info["calibration_note"]
    th = D.DiagnosisThresholds(reference_splits=("train", "validation"))
    _, info = D.diagnosis_column(_calibration_table(900, 500, test_split="validation"), "s", thresholds=th)
    assert info["calibrated_on"] == D.HELD_OUT and info["calibration_splits"] == ["validation"]
    # held-out rows without a score (no features or logits stored for them) do not count
    table = _calibration_table(900, 500)
    table.loc[900:1399 - D.MIN_HELD_OUT + 1, "s"] = np.nan  # 49 scored held-out rows remain
    col, info = D.diagnosis_column(table, "s")
    assert info["calibrated_on"] == D.ALL_ROWS and info["reference_rows"] == 900 + 49
    pooled = np.r_[np.arange(900) / 900, 10.0 + np.arange(451, 500)]  # the finite scores
    assert info["threshold"] == pytest.approx(np.quantile(pooled, 0.95))
    assert (np.asarray(col)[-10:] == D.SUSPECT_OOD).all()
    with pytest.raises(ValueError, match="calibrate_on"):
        D.DiagnosisThresholds(calibrate_on="test")


def test_held_out_calibration_holds_the_false_flag_rate_of_a_real_overfit_model():
    """A real MLP on scikit-learn's digits: its training rows are more confident than new rows
    of the same distribution, so a cut-off at the 0.95 quantile over training rows flags more
    than 5 % of new in-distribution rows; the held-out rows' quantile flags about 5 %."""
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    from analysis.ood import msp_score

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    perm = np.random.default_rng(0).permutation(len(y))
    train, rest = perm[:900], perm[900:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: it is meant to fit the training rows
        model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0).fit(x[train], y[train])
    score = msp_score(np.log(model.predict_proba(x) + 1e-12))
    assert np.median(score[train]) < np.median(score[rest])  # the model learned its training rows
    rates: dict[str, list[float]] = {D.HELD_OUT: [], D.ALL_ROWS: []}
    for seed in range(20):  # random halves of the other rows: one calibrates, one is "new"
        split = np.full(len(y), "train", dtype=object)
        cal = np.random.default_rng(seed).random(len(rest)) < 0.5
        split[rest[cal]], split[rest[~cal]] = "test", "new"
        table = pd.DataFrame({S.SPLIT: split, S.REGION: np.where(split == "train", S.EASY, S.NO_DYNAMICS),
                              "s": score})
        for how in rates:
            col, _ = D.diagnosis_column(table, "s", thresholds=D.DiagnosisThresholds(calibrate_on=how))
            rates[how].append(float(np.mean(np.asarray(col)[split == "new"] == D.SUSPECT_OOD)))
    assert abs(np.mean(rates[D.HELD_OUT]) - 0.05) < 0.015
    assert np.mean(rates[D.ALL_ROWS]) > 1.4 * np.mean(rates[D.HELD_OUT])
