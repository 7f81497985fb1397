"""Label issues, suggested labels and the label-noise estimate (analysis.noise)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import diagnosis as D
from analysis import noise
from analysis import schema as S
from analysis.pipeline import AnalyzeOptions, analyze_run
from analysis.synthetic import make_synthetic_run


def test_suggested_label_is_the_majority_vote_by_hand():
    # 4 epochs x 5 examples; -1 marks unobserved
    pred = np.array([[1, 0, 2, 0, 0],
                     [1, 1, 2, 1, 0],
                     [2, 1, 0, 1, 0],
                     [2, 0, 0, 2, 0]])
    observed = np.array([[1, 1, 1, 1, 0]] * 4, bool)
    labels = np.array([0, 0, 1, 2, 0])
    got = noise.suggested_labels(pred, observed, labels)
    # ex0: 1,1,2,2 tie, given 0 not tied -> the latest prediction among the tied: 2
    # ex1: 0,1,1,0 tie including the given label 0 -> 0
    # ex2: 2,2,0,0 tie, given 1 not among them -> latest: 0
    # ex3: 0,1,1,2 -> 1 (majority)
    # ex4: never observed -> -1
    assert got.tolist() == [2, 0, 0, 1, -1]
    # a label issue looks past the given label: ex1's other votes are all for 1
    got = noise.suggested_labels(pred, observed, labels, exclude_label=np.array([0, 1, 0, 0, 0], bool))
    assert got.tolist() == [2, 1, 0, 1, -1]
    with pytest.raises(ValueError, match="Expected `labels` to have shape \\(5,\\)"):
        noise.suggested_labels(pred, observed, labels[:3])


def _table(loss, split="train", label=0):
    return pd.DataFrame({S.SPLIT: split, S.LABEL: label, S.LOSS_MEAN: loss})


def test_label_issues_split_two_loss_populations_by_hand():
    # 80 rows near loss 0.02 and 20 near 2.0 (a factor 100 apart in log space): the mixture's
    # high component is exactly the 20
    rng = np.random.default_rng(0)
    loss = np.r_[0.02 * np.exp(rng.normal(0, 0.3, 80)), 2.0 * np.exp(rng.normal(0, 0.3, 20))]
    issue, info = noise.label_issues(_table(loss))
    assert issue.tolist() == [False] * 80 + [True] * 20
    assert info["n_issues"] == 20 and info["rate"] == pytest.approx(0.2)
    assert loss[:80].max() < info["cutoff"] <= loss[80:].min()
    assert info["components"]["weight"][info["components"]["high"]] == pytest.approx(0.2, abs=0.01)
    # rows outside the training split are never label issues, and do not move the cut-off
    t = pd.concat([_table(loss), _table(np.full(30, 5.0), split="test")], ignore_index=True)
    issue2, info2 = noise.label_issues(t)
    assert issue2[:100].tolist() == issue.tolist() and not issue2[100:].any()
    assert info2["n_scored"] == 100


def test_label_issues_without_enough_rows_or_spread_flag_nothing():
    issue, info = noise.label_issues(_table(np.linspace(0.1, 2.0, 10)))
    assert not issue.any() and info["method"].startswith("none")
    issue, _ = noise.label_issues(_table(np.full(50, 0.3)))
    assert not issue.any()
    with pytest.raises(ValueError, match="Expected a `loss_mean` or `confidence` column"):
        noise.label_issues(pd.DataFrame({S.SPLIT: ["train"], S.LABEL: [0]}))


def test_estimate_label_noise_by_hand():
    t = pd.DataFrame({
        S.SPLIT: ["train"] * 7 + ["test"],
        S.LABEL: [0, 0, 0, 0, 1, 1, 1, 0],
        S.LABEL_NAME: ["cat"] * 4 + ["dog"] * 3 + ["cat"],
        S.SUGGESTED_LABEL: pd.array([0, 1, 1, 0, 1, 0, None, 1], dtype="Int64"),
        S.LABEL_ISSUE: [False, True, True, True, False, True, False, True],
    })
    est = noise.estimate_label_noise(t)
    # scored training rows: 6 (one has no suggestion); issues among them: rows 1, 2, 3, 5
    assert est.rate == pytest.approx(4 / 6)
    assert est.n_per_class == {"cat": 4, "dog": 2}
    assert est.per_class == {"cat": pytest.approx(3 / 4), "dog": pytest.approx(1 / 2)}
    # row 3's suggestion is its own label: not a confused pair
    assert est.confused_pairs == [("cat", "dog", 2), ("dog", "cat", 1)]
    # without the label_issue column the votes alone decide
    est2 = noise.estimate_label_noise(t.drop(columns=S.LABEL_ISSUE))
    assert est2.rate == pytest.approx(3 / 6)
    assert np.isnan(noise.estimate_label_noise(t.drop(columns=S.SUGGESTED_LABEL)).rate)


@pytest.mark.parametrize(("rate", "seed"), [(0.1, 0), (0.2, 1)])
def test_noise_rate_of_a_synthetic_run_is_recovered_within_3_points(tmp_path, rate, seed):
    run = make_synthetic_run(tmp_path / "run", n_examples=2000, noise_rate=rate, seed=seed)
    table = analyze_run(run, AnalyzeOptions(ood=False), write=False)
    truth = float(table[S.IS_NOISY].mean())
    est = noise.estimate_label_noise(table)
    assert est.rate == pytest.approx(truth, abs=0.03)
    # most flipped examples are among the label issues, and their suggested label is a class
    # the model did predict (the synthetic model always predicts label + 1 when wrong)
    issue = table[S.LABEL_ISSUE].to_numpy(bool)
    noisy = table[S.IS_NOISY].to_numpy(bool)
    assert issue[noisy].mean() > 0.95
    sug = table[S.SUGGESTED_LABEL].to_numpy(int)
    lab = table[S.LABEL].to_numpy(int)
    assert (sug[issue & noisy] == (lab[issue & noisy] + 1) % 10).all()


def test_diagnose_with_label_issues_by_hand():
    region = ["easy-to-learn", "hard-to-learn", "hard-to-learn", "ambiguous", "hard-to-learn",
              "easy-to-learn", "no-dynamics", "no-dynamics"]
    issue = [True, True, False, False, True, False, True, False]
    score = [0.0, 0.5, 0.95, 0.0, 9.0, 0.99, 0.0, 5.0]
    # reference: the first six rows; t = 0.5 quantile, t_easy = 0.9 quantile of
    # [0, 0.5, 0.95, 0, 9, 0.99] -> t = 0.725, t_easy = 4.995
    th = D.DiagnosisThresholds(ood_quantile=0.5, learned_ood_quantile=0.9)
    got = D.diagnose(region, score, [True] * 6 + [False] * 2, thresholds=th, label_issue=issue)
    assert got.tolist() == [
        D.SUSPECT_MISLABELED,  # easy region, but a label issue
        D.SUSPECT_MISLABELED,  # label issue, 0.5 <= t_easy
        D.SUSPECT_OOD,         # hard, not an issue, 0.95 > t
        D.AMBIGUOUS,
        D.SUSPECT_OOD,         # label issue beyond t_easy
        D.CLEAN,               # learned, 0.99 > t but not beyond t_easy
        D.NO_DYNAMICS,         # an issue flag without dynamics is ignored
        D.SUSPECT_OOD,         # no dynamics, 5 > t
    ]
    with pytest.raises(ValueError, match="Expected `label_issue` to have shape"):
        D.diagnose(region, score, thresholds=th, label_issue=issue[:3])


def test_a_high_loss_majority_is_split_further():
    # 30 fitted rows, 50 slowly fitted ones and 20 never fitted: a 2-component mixture would
    # call the 70 slow and unfitted rows noise (a majority); with 3 components the highest
    # one is the 20
    rng = np.random.default_rng(1)
    loss = np.r_[0.01 * np.exp(rng.normal(0, 0.2, 30)), 0.5 * np.exp(rng.normal(0, 0.2, 50)),
                 5.0 * np.exp(rng.normal(0, 0.2, 20))]
    issue, info = noise.label_issues(_table(loss))
    assert info["n_components"] == 3
    assert issue.tolist() == [False] * 80 + [True] * 20


def test_a_high_component_that_is_not_the_upper_tail_is_split_further():
    # a narrow cluster inside a wide spread with the same centre, plus a clear high-loss group:
    # the highest-mean component must claim the upper tail (the 8 high rows), not the narrow core
    rng = np.random.default_rng(2)
    loss = np.exp(np.r_[rng.normal(-1.3, 0.08, 300), rng.normal(-1.3, 0.9, 600), rng.normal(1.5, 0.2, 60)])
    issue, info = noise.label_issues(_table(loss))
    cut = loss[issue].min()
    assert (issue == (loss >= cut)).all()  # an upper tail
    assert issue[-60:].mean() > 0.95 and issue[:900].mean() < 0.05


def test_label_issue_column_must_hold_booleans():
    assert noise.label_issue_mask(pd.Series([0, 1, None])).tolist() == [False, True, False]
    bad = pd.DataFrame({S.SPLIT: "train", S.LABEL: [0, 1], S.SUGGESTED_LABEL: [0, 1],
                        S.LABEL_ISSUE: [0, -1]})
    with pytest.raises(S.SchemaError, match="Expected `label_issue` to hold booleans, got values such as \\[0, -1\\]"):
        noise.estimate_label_noise(bad)


# ---- feature-space neighbours ---------------------------------------------------------------------
def _circle_run():
    """40 rows on the unit circle: two clusters of 20 evenly spaced angles, two flips in each."""
    angle = np.r_[0.02 * np.arange(20), np.pi / 2 - 0.02 * np.arange(20)]
    x = np.c_[np.cos(angle), np.sin(angle)]
    label = np.r_[np.zeros(20, int), np.ones(20, int)]
    label[[0, 1]] = 1
    label[[20, 21]] = 0
    return angle, x, label


def _brute_disagreement(angle, label, k):
    """Independent check: neighbours by angular distance (same order as cosine distance)."""
    out = []
    for i in range(len(angle)):
        d = np.abs(angle - angle[i])
        d[i] = np.inf
        nearest = np.argsort(d, kind="stable")[:k]
        out.append(float(np.mean(label[nearest] != label[i])))
    return np.array(out)


def test_neighbor_disagreement_against_a_brute_force_count():
    angle, x, label = _circle_run()
    got = noise.neighbor_disagreement(x, label, k=10)
    want = _brute_disagreement(angle, label, 10)
    assert got.tolist() == pytest.approx(want.tolist())
    # by hand: a flip among 9 neighbours of the other label (and the other flip) disagrees 9/10;
    # row 5's ten nearest are rows 0-10 without itself, two of which (0, 1) carry label 1
    assert got[[0, 1, 20, 21]].tolist() == [0.9, 0.9, 0.9, 0.9]
    assert got[5] == pytest.approx(0.2)
    assert noise.neighbor_disagreement(x, label, k=10, queries=np.array([5, 0])).tolist() == \
        pytest.approx([0.2, 0.9])
    with pytest.raises(ValueError, match="Expected `features`"):
        noise.neighbor_disagreement(x, label[:3])


def test_separation_auroc_by_hand():
    # pairs (positive, negative): (0.1, 0) win, (0.1, 0.5) loss, (1, 0) win, (1, 0.5) win -> 3/4
    assert noise.separation_auroc([0.0, 0.1, 0.5, 1.0], [False, True, False, True]) == 0.75
    # a tie counts one half: (0.5 vs 0.5) -> 1/2
    assert noise.separation_auroc([0.5, 0.5], [True, False]) == 0.5
    assert np.isnan(noise.separation_auroc([0.1, 0.2], [True, True]))


def test_rank_combined_issues_by_hand():
    # percentile ranks: loss 1/4, 2/4, 3/4, 4/4; disagreement [0.9, 0, 0, 0.1] -> 4/4, 1.5/4,
    # 1.5/4, 3/4; means 0.625, 0.4375, 0.5625, 0.875 -> top 2: rows 3 and 0 (the loss alone
    # would pick rows 3 and 2)
    assert noise.rank_combined_issues([1.0, 2, 3, 4], [0.9, 0, 0, 0.1], 2).tolist() == \
        [True, False, False, True]
    # a tie in the mean rank goes to the higher loss: both rows average 1.5/2
    assert noise.rank_combined_issues([1.0, 2.0], [1.0, 0.0], 1).tolist() == [False, True]
    with pytest.raises(ValueError, match="Expected `n_issues` in \\[0, 2\\]"):
        noise.rank_combined_issues([1.0, 2.0], [1.0, 0.0], 3)


def _neighbor_table(label):
    loss = 0.1 + 0.001 * np.arange(40)
    loss[[0, 1, 20, 30, 21]] = [3.0, 2.9, 2.8, 2.7, 1.0]  # row 21: a memorised flip; row 30: hard, clean
    issue = np.zeros(40, bool)
    issue[[0, 1, 20, 30]] = True  # what a loss cut-off flags: the four highest losses
    return pd.DataFrame({S.EXAMPLE_ID: np.arange(40), S.SPLIT: "train", S.LABEL: label,
                         S.LOSS_MEAN: loss, S.LABEL_ISSUE: issue})


def test_refine_with_neighbors_swaps_a_memorised_flip_in_by_hand():
    from sklearn.metrics import roc_auc_score

    angle, x, label = _circle_run()
    table = _neighbor_table(label)
    info = {"method": noise.METHOD, "cutoff": 2.7, "score": S.LOSS_MEAN}
    issue, out = noise.refine_with_neighbors(table, np.arange(40), x, info, k=10, gate=0.6)
    # row 21 (loss rank 36/40, disagreement 0.9 = tied top, rank 38.5/40) replaces row 30
    # (loss rank 37/40, disagreement 0, among the lowest): same count, the four flips
    assert np.flatnonzero(issue).tolist() == [0, 1, 20, 21]
    want_auc = roc_auc_score(table[S.LABEL_ISSUE], _brute_disagreement(angle, label, 10))
    assert out["neighbors"]["agreement_auroc"] == pytest.approx(want_auc)
    assert out["neighbors"]["used"] is True and out["neighbors"]["changed"] == 2
    assert out["neighbors"]["not_confirmed"] == 0  # all four have 9 of 10 neighbours disagreeing
    assert out["method"] == noise.NEIGHBOR_METHOD and out["mixture_cutoff"] == 2.7
    assert info["method"] == noise.METHOD  # the caller's record is not modified
    # below the gate: the loss cut-off stands, and the record says why
    issue, out = noise.refine_with_neighbors(table, np.arange(40), x, info, k=10, gate=0.99)
    assert np.flatnonzero(issue).tolist() == [0, 1, 20, 30]
    assert out["neighbors"]["used"] is False and "AUROC" in out["neighbors"]["reason"]
    assert out["method"] == noise.METHOD
    # a scored row without features: not re-ranked
    issue, out = noise.refine_with_neighbors(table, np.arange(39), x[:39], info, k=10, gate=0.6)
    assert np.flatnonzero(issue).tolist() == [0, 1, 20, 30] and out["neighbors"]["used"] is False


def test_refine_with_neighbors_keeps_only_rows_most_neighbours_dispute_by_hand():
    """A count one too high (a clean, slow row among the loss cut-off's five): the top five by
    mean rank hold the four flips (disagreement 0.9) and one row whose neighbours mostly share
    its label (at most 0.2, by hand in the test above), which is dropped."""
    _, x, label = _circle_run()
    table = _neighbor_table(label)
    table.loc[[0, 1, 20, 21, 30], S.LOSS_MEAN] = [3.0, 2.9, 2.8, 2.75, 2.7]
    table[S.LABEL_ISSUE] = table.index.isin([0, 1, 20, 21, 30])
    info = {"method": noise.METHOD, "cutoff": 2.7, "score": S.LOSS_MEAN}
    issue, out = noise.refine_with_neighbors(table, np.arange(40), x, info, k=10, gate=0.6)
    assert np.flatnonzero(issue).tolist() == [0, 1, 20, 21]
    assert out["neighbors"]["not_confirmed"] == 1 and out["neighbors"]["changed"] == 1
    assert out["n_issues"] == 4 and out["rate"] == 4 / 40 and out["mixture_n_issues"] == 5  # the record follows


def test_refine_with_neighbors_on_a_sample_then_the_rest_gives_the_same(monkeypatch):
    _, x, label = _circle_run()
    table = _neighbor_table(label)
    info = {"method": noise.METHOD, "cutoff": 2.7, "score": S.LOSS_MEAN}
    whole, _ = noise.refine_with_neighbors(table, np.arange(40), x, info, k=10, gate=0.6)
    monkeypatch.setattr(noise, "NEIGHBOR_GATE_SAMPLE", 15)  # the check on 15 rows, then the other 25
    sampled, out = noise.refine_with_neighbors(table, np.arange(40), x, info, k=10, gate=0.0)
    assert out["neighbors"]["used"] is True
    assert sampled.tolist() == whole.tolist()


def _draw_log_losses(means, stds, weights, n, seed=0):
    rng = np.random.default_rng(seed)
    k = rng.choice(len(weights), n, p=np.asarray(weights) / sum(weights))
    return rng.normal(np.asarray(means)[k], np.asarray(stds)[k])


# The mixtures fitted to log(loss_mean) of two real suite runs (ood_eval.json): the sample MLP on
# digits (10 % flips, two clear groups) and a from-scratch text sentiment run (10 % flips, four
# modes, one a narrow spike of uncertain rows; the mixture flagged 2 % there).
DIGITS_RUN = ([-1.534, 1.282], [0.569, 0.285], [0.898, 0.102])
SENTIMENT_RUN = ([-1.938, -0.219, 0.902, -0.601], [0.258, 0.300, 0.277, 0.0624], [0.274, 0.249, 0.020, 0.457])


def test_resampled_rates_tell_a_clear_split_from_an_unclear_one():
    clear = noise.resampled_rates(_draw_log_losses(*DIGITS_RUN, 1154))
    assert clear["stable"] is True and clear["rounds"] == noise.RESAMPLE_ROUNDS and clear["rows"] == 1154
    assert 0.07 < clear["low"] <= clear["high"] < 0.14  # around the true 10.2 %
    unclear = noise.resampled_rates(_draw_log_losses(*SENTIMENT_RUN, 1454))
    assert unclear["stable"] is False and unclear["high"] > 2 * unclear["low"]
    # rows per refit are capped; too few rows or no spread give no verdict
    assert noise.resampled_rates(_draw_log_losses(*DIGITS_RUN, 3000), max_rows=500, rounds=4)["rows"] == 500
    for x in (np.zeros(100), np.arange(5.0), [np.nan] * 50):
        r = noise.resampled_rates(x)
        assert r["stable"] is None and np.isnan(r["low"]) and np.isnan(r["high"])


def test_label_issues_record_how_stable_their_count_is():
    x = _draw_log_losses(*SENTIMENT_RUN, 1454)
    issue, info = noise.label_issues(_table(np.exp(x)))
    again = info["resampled"]
    assert again["stable"] is False and again["low"] <= again["median"] <= again["high"]
    # unstable: the count is the median of the resampled rates, taken from the top of the losses
    k = round(again["median"] * 1454)
    assert info["n_issues"] == int(issue.sum()) == k and "median of the resampled rates" in info["count_rule"]
    assert set(np.flatnonzero(issue)) == set(np.argsort(-x)[:k])
    _, info = noise.label_issues(_table(np.exp(_draw_log_losses(*DIGITS_RUN, 1154))))
    again = info["resampled"]
    assert again["stable"] is True and again["low"] <= info["rate"] * 1.3 and again["high"] >= info["rate"] / 1.3
    assert "count_rule" not in info  # stable: the mixture's own cut-off
