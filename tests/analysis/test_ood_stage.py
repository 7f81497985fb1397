"""The OOD stage of ``datamap analyze``: columns for every split, evaluation file, degenerate runs."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import diagnosis as D
from analysis import noise, runstore
from analysis import ood as O
from analysis import schema as S
from analysis.cli import main as cli_main
from analysis.pipeline import AnalyzeOptions, analyze_run
from analysis.synthetic import make_synthetic_run

N_TRAIN, N_EVAL = 1500, 200


@pytest.fixture(scope="module")
def run_with_features(tmp_path_factory):
    return make_synthetic_run(tmp_path_factory.mktemp("r") / "run", n_examples=N_TRAIN,
                              n_eval=N_EVAL, seed=3)


@pytest.fixture(scope="module")
def analysed(run_with_features):
    table = analyze_run(run_with_features, AnalyzeOptions(extra={"projection": "pca"}))
    return run_with_features, table


def test_scores_projection_and_diagnosis_for_every_split(analysed):
    run, table = analysed
    for col in O.SCORERS:
        assert table[col].notna().all(), col
    assert table[S.UMAP_X].notna().all() and table[S.UMAP_Y].notna().all()
    assert set(table[S.DIAGNOSIS].astype(str)) <= set(D.DIAGNOSES)
    by = table.groupby(S.SPLIT)[S.OOD_MAHALANOBIS].median()
    assert by["ood:far"] > 10 * by["test"]
    far = table[S.SPLIT] == "ood:far"
    assert (table.loc[far, S.DIAGNOSIS] == D.SUSPECT_OOD).mean() > 0.95
    test = table[S.SPLIT] == "test"
    assert (table.loc[test, S.DIAGNOSIS] == D.NO_DYNAMICS).mean() > 0.8
    train = table[S.SPLIT] == S.TRAIN_SPLIT
    # the mislabeling suspects are the run's estimated label issues (analysis.noise), not the
    # hard-to-learn region: every label issue is a suspect, every other training row is not
    # suspect_mislabeled
    issue = table[S.LABEL_ISSUE].to_numpy(bool)
    assert issue[train.to_numpy()].mean() == pytest.approx(table.loc[train, S.IS_NOISY].mean(), abs=0.03)
    assert (table.loc[issue, S.DIAGNOSIS].isin([D.SUSPECT_MISLABELED, D.SUSPECT_OOD])).all()
    assert not (table.loc[~issue, S.DIAGNOSIS] == D.SUSPECT_MISLABELED).any()
    # most flipped labels are found
    noisy = table[S.IS_NOISY].fillna(False).to_numpy(bool)
    assert issue[noisy].mean() > 0.95
    # the written table carries the columns too
    stored = runstore.load_table(run)
    assert S.DIAGNOSIS in stored.columns and S.OOD_KNN in stored.columns


def test_scores_match_the_scorers_run_directly(analysed):
    run, table = analysed
    _, x_train = runstore.load_features(run, S.TRAIN_SPLIT)
    ids, x_test = runstore.load_features(run, "test")
    labels = table.set_index(S.EXAMPLE_ID).loc[np.arange(N_TRAIN), S.LABEL].to_numpy(int)
    direct = O.MahalanobisScorer().fit(x_train, labels).score(x_test)
    got = table.set_index(S.EXAMPLE_ID).loc[ids, S.OOD_MAHALANOBIS].to_numpy()
    np.testing.assert_allclose(got, direct, rtol=1e-6)
    _, z_test = runstore.load_logits(run, "test")
    np.testing.assert_allclose(table.set_index(S.EXAMPLE_ID).loc[ids, S.OOD_ENERGY], O.energy_score(z_test))


def test_ood_eval_file(analysed):
    run, _ = analysed
    ev = json.loads((run / S.OOD_EVAL_FILE).read_text(), parse_constant=lambda c: 1 / 0)
    assert set(ev["metrics"]) == set(O.SCORERS) | {S.OOD_COMBINED}
    assert ev["metrics"][S.OOD_MAHALANOBIS]["ood:far"]["auroc"] > 0.99
    assert ev["metrics"][S.OOD_KNN]["overall"]["fpr95_definition"] == "ood_accepted_at_95_id"
    # the default OOD score of the diagnosis: the rank combination of RMD and kNN
    assert ev["diagnosis"]["score_column"] == S.OOD_COMBINED
    assert ev["metrics"][S.OOD_COMBINED]["ood:far"]["auroc"] > 0.99
    assert sum(ev["diagnosis_counts"].values()) == N_TRAIN + 2 * N_EVAL
    assert not list(run.glob(f".{S.OOD_EVAL_FILE}.*"))  # no temporary files left behind
    # how the label issues were chosen: the mixture's count, re-ranked with neighbours or not
    issues = ev["diagnosis"]["label_issues"]
    neighbours = issues["neighbors"]
    assert neighbours["k"] == noise.NEIGHBOR_K and 0.0 <= neighbours["agreement_auroc"] <= 1.0
    assert neighbours["used"] == (neighbours["agreement_auroc"] >= noise.NEIGHBOR_GATE)
    assert issues["method"] == (noise.NEIGHBOR_METHOD if neighbours["used"] else noise.METHOD)
    assert int(analysed[1][S.LABEL_ISSUE].sum()) == issues["n_issues"]


def test_label_neighbors_can_be_switched_off(run_with_features):
    table = analyze_run(run_with_features, AnalyzeOptions(
        extra={"projection": "none", "label_neighbors": False}), write=False)
    mixture, _ = noise.label_issues(table)
    assert table[S.LABEL_ISSUE].to_numpy(bool).tolist() == mixture.tolist()
    ev = json.loads((run_with_features / S.OOD_EVAL_FILE).read_text())
    assert "neighbors" not in ev["diagnosis"]["label_issues"]
    with pytest.raises(ValueError, match="Expected `label_neighbors` True or False, got 'no'"):
        analyze_run(run_with_features, AnalyzeOptions(extra={"label_neighbors": "no"}), write=False)


def test_second_analyze_reuses_the_projection_cache(analysed):
    run, table = analysed
    cached = list((run / S.CACHE_DIR).glob("projection-pca-*.npz"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    again = analyze_run(run, AnalyzeOptions(extra={"projection": "pca", "ood_scorers": ["msp"]}),
                        write=False)
    assert cached[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again[S.UMAP_X], table[S.UMAP_X])
    assert S.OOD_KNN not in again.columns


def test_run_without_features_or_logits_still_analyses(tmp_path):
    run = make_synthetic_run(tmp_path / "bare", n_examples=300, n_eval=0)
    with pytest.warns(UserWarning, match="no features or logits"):
        table = analyze_run(run, AnalyzeOptions(extra={"projection": "pca"}))
    assert not [c for c in table.columns if c.startswith(S.OOD_PREFIX)]
    assert table[S.UMAP_X].isna().all()
    expected = D.diagnose(table[S.REGION].astype(str).to_numpy(), None,
                          label_issue=table[S.LABEL_ISSUE].to_numpy(bool))
    assert (table[S.DIAGNOSIS].astype(str).to_numpy() == expected).all()
    ev = json.loads((run / S.OOD_EVAL_FILE).read_text())
    assert ev["metrics"] == {} and ev["skipped"]
    assert ev["diagnosis"]["score_column"] is None


def test_eval_file_values_are_strict_json():
    from analysis.ood_stage import _plain

    got = _plain({"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(2), np.inf], 3: "x"})
    assert got == {"a": None, "b": 1.5, "c": [2, None], "3": "x"}
    json.dumps(got, allow_nan=False)


def test_logits_only_run(tmp_path, run_with_features):
    import shutil

    run = tmp_path / "logits_only"
    shutil.copytree(run_with_features, run)
    shutil.rmtree(run / S.FEATURES_DIR)
    table = analyze_run(run, AnalyzeOptions(extra={"projection": "umap"}), write=False)
    assert table[S.OOD_ENERGY].notna().all()
    assert S.OOD_MAHALANOBIS not in table.columns and table[S.UMAP_X].isna().all()
    ev = json.loads((run / S.OOD_EVAL_FILE).read_text())
    assert ev["diagnosis"]["score_column"] == S.OOD_ENERGY


def test_mismatched_dimensions_and_nan_rows(tmp_path, run_with_features):
    import shutil

    run = tmp_path / "bad"
    shutil.copytree(run_with_features, run)
    ids, x = runstore.load_features(run, "test")
    runstore.save_features(run, "test", ids, np.asarray(x)[:, :5])  # wrong width
    ids_o, x_o = runstore.load_features(run, "ood:far", mmap=False)
    x_o[0, 0] = np.nan  # a corrupt row, written past the store's own check
    np.save(run / S.FEATURES_DIR / "ood__far.npy", x_o)
    with pytest.warns(UserWarning) as rec:
        table = analyze_run(run, AnalyzeOptions(extra={"projection": "pca"}), write=False)
    msgs = " ".join(str(w.message) for w in rec)
    assert "Expected features of split 'test' to have 32 columns" in msgs
    assert "1 rows hold NaN" in msgs
    t = table.set_index(S.EXAMPLE_ID)
    assert t.loc[ids, S.OOD_MAHALANOBIS].isna().all() and t.loc[ids, S.UMAP_X].isna().all()
    assert t.loc[ids, S.OOD_ENERGY].notna().all()  # logits of that split are fine
    assert np.isnan(t.loc[ids_o[0], S.OOD_KNN]) and t.loc[ids_o[1:], S.OOD_KNN].notna().all()


def test_options_are_checked(run_with_features):
    with pytest.raises(ValueError, match="Expected OOD stage options among"):
        analyze_run(run_with_features, AnalyzeOptions(extra={"projektion": "pca"}), write=False)
    with pytest.raises(ValueError, match="Expected `projection` among"):
        analyze_run(run_with_features, AnalyzeOptions(extra={"projection": "tsne"}), write=False)
    with pytest.raises(ValueError, match="Expected OOD scorers among"):
        analyze_run(run_with_features, AnalyzeOptions(extra={"ood_scorers": ["odin"]}), write=False)
    with pytest.raises(ValueError, match="Expected `reference_splits` as a list of split names"):
        analyze_run(run_with_features, AnalyzeOptions(extra={"reference_splits": "train"}), write=False)
    with pytest.raises(ValueError, match="Expected `calibrate_on` among"):
        analyze_run(run_with_features, AnalyzeOptions(extra={"ood_calibration": "test"}), write=False)


def test_the_calibration_options_reach_the_diagnosis(run_with_features):
    """Default: the 200 test rows set the cut-off; `reference_splits` without test, or
    `ood_calibration: all`, pool the training rows (the recorded thresholds say which)."""
    runs = {}
    for name, extra in {"default": {}, "train only": {"reference_splits": ["train"]},
                        "all": {"ood_calibration": "all"}}.items():
        table = analyze_run(run_with_features, AnalyzeOptions(extra={"projection": "none", **extra}),
                            write=False)
        runs[name] = table, json.loads((run_with_features / S.OOD_EVAL_FILE).read_text())["diagnosis"]
    table, info = runs["default"]
    assert info["calibrated_on"] == "held-out" and info["reference_rows"] == N_EVAL
    test = np.sort(table.loc[table[S.SPLIT] == "test", info["score_column"]].to_numpy(float))
    assert info["threshold"] == test[int(np.ceil((N_EVAL + 1) * 0.95)) - 1]  # by hand
    table, info = runs["train only"]
    assert info["calibrated_on"] == "all" and info["reference_splits"] == ["train"]
    assert "the split test is not among the reference splits ['train']" in info["calibration_note"]
    train = table.loc[table[S.SPLIT] == S.TRAIN_SPLIT, info["score_column"]].to_numpy(float)
    assert info["threshold"] == pytest.approx(np.quantile(train, 0.95))
    table, info = runs["all"]
    assert info["calibrate_on"] == "all" and "calibration_note" not in info
    pooled = table.loc[table[S.SPLIT].isin(["train", "test"]), info["score_column"]].to_numpy(float)
    assert info["threshold"] == pytest.approx(np.quantile(pooled, 0.95))


def test_cli_flags(tmp_path, run_with_features, capsys):
    import shutil

    run = tmp_path / "cli"
    shutil.copytree(run_with_features, run)
    rc = cli_main(["analyze", str(run), "--projection", "none", "--ood-scorers", "energy,knn",
                   "--ood-scorer", "knn", "--ood-quantile", "0.9", "--knn-k", "5"])
    assert rc == 0
    table = runstore.load_table(run)
    assert {S.OOD_ENERGY, S.OOD_KNN} <= set(table.columns) and S.OOD_MSP not in table.columns
    ev = json.loads((run / S.OOD_EVAL_FILE).read_text())
    assert ev["diagnosis"]["score_column"] == S.OOD_KNN and ev["diagnosis"]["ood_quantile"] == 0.9
    assert "suspect_ood" in capsys.readouterr().out
    assert cli_main(["analyze", str(run), "--mahalanobis-shrinkage", "lots", "--projection", "none"]) == 2


@pytest.mark.slow
def test_umap_projection_in_the_stage(tmp_path, monkeypatch):
    run = make_synthetic_run(tmp_path / "u", n_examples=600, n_eval=100, n_features=16)
    opts = AnalyzeOptions(extra={"projection": "umap", "projection_params": {"n_epochs": 50},
                                 "ood_scorers": ["mahalanobis"]})
    table = analyze_run(run, opts)
    assert table[S.UMAP_X].notna().all()
    monkeypatch.setitem(sys.modules, "umap", None)  # the second run must not need umap at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean second run: cache hit, no warnings
        again = analyze_run(run, opts, write=False)
    np.testing.assert_array_equal(again[S.UMAP_Y], table[S.UMAP_Y])


def test_combined_score_by_hand():
    from analysis.ood_stage import combined_score

    ref = np.array([True, True, True, True, False])
    # part a: reference [1, 2, 3, 4] -> ranks 0.25, 0.5, 0.75, 1.0; 2.5 -> 0.5
    # part b: reference [1, 2, 3, 4] -> 4, 3, 2, 1 -> 1.0, 0.75, 0.5, 0.25; 9 -> 1.0 + (9 - 4) / 3
    got = combined_score([np.array([1.0, 2, 3, 4, 2.5]), np.array([4.0, 3, 2, 1, 9])], ref)
    np.testing.assert_allclose(got, [0.625, 0.625, 0.625, 0.625, (0.5 + 1.0 + 5 / 3) / 2])
    nan = combined_score([np.array([1.0, 2, 3, 4, np.nan])], ref)
    assert np.isnan(nan[-1]) and np.isfinite(nan[:-1]).all()


def test_combined_can_be_named_like_a_scorer(run_with_features):
    table = analyze_run(run_with_features, AnalyzeOptions(extra={
        "projection": "none", "ood_scorers": ["rmd", "knn_mean", "combined"], "diagnosis_scorer": "combined"}),
        write=False)
    from analysis.ood_stage import combined_score

    train = (table[S.SPLIT] == S.TRAIN_SPLIT).to_numpy()
    expected = combined_score([table[S.OOD_RMD].to_numpy(float), table[S.OOD_KNN_MEAN].to_numpy(float)], train)
    np.testing.assert_allclose(table[S.OOD_COMBINED].to_numpy(float), expected)
    assert S.OOD_MSP not in table.columns


SAMPLE_RUN = Path(__file__).resolve().parents[2] / "sample_data" / "run"


def test_rows_without_dynamics_get_their_prediction_from_the_logits(tmp_path):
    """On a copy of the shipped sample run (real digits, test and OOD splits with logits): the
    test and OOD rows' ``final_pred`` is the argmax of their stored logits, read here straight
    from the ``.npy`` files; the training rows keep their last epoch's prediction."""
    import shutil

    run = tmp_path / "sample"
    shutil.copytree(SAMPLE_RUN, run, ignore=shutil.ignore_patterns(
        S.TABLE_FILE, S.FLAGS_FILE + "*", S.EXPORTS_DIR, S.CACHE_DIR))
    # a test row whose logits hold NaN keeps no prediction
    logits_test = np.load(run / S.LOGITS_DIR / "test.npy")
    logits_test[0, 3] = np.nan
    np.save(run / S.LOGITS_DIR / "test.npy", logits_test)
    with pytest.warns(UserWarning, match="hold NaN"):
        table = analyze_run(run, AnalyzeOptions(extra={"projection": "none"}), write=False)
    pred = table.set_index(S.EXAMPLE_ID)[S.FINAL_PRED]
    expected: dict[int, int] = {}
    for stem in ("test", "ood__near", "ood__far"):
        ids = pd.read_parquet(run / S.LOGITS_DIR / f"{stem}.ids.parquet").iloc[:, 0].tolist()
        logits = np.load(run / S.LOGITS_DIR / f"{stem}.npy")
        assert len(ids) == len(logits) > 0
        for example_id, row in zip(ids, logits, strict=True):
            if np.isfinite(row).all():
                expected[int(example_id)] = int(max(range(len(row)), key=lambda c: row[c]))
    nan_id = int(pd.read_parquet(run / S.LOGITS_DIR / "test.ids.parquet").iloc[0, 0])
    assert pd.isna(pred.loc[nan_id])
    got = {i: int(pred.loc[i]) for i in expected}
    assert got == expected
    # training rows: the prediction of their last recorded epoch (from the dynamics file)
    dyn = pd.read_parquet(run / S.DYNAMICS_DIR)
    last = dyn.sort_values("epoch").groupby(S.EXAMPLE_ID)["pred"].last()
    train_ids = table.loc[table[S.SPLIT] == S.TRAIN_SPLIT, S.EXAMPLE_ID]
    assert (pred.loc[train_ids].astype(int).to_numpy() == last.loc[train_ids].to_numpy()).all()
    # every row with logits now has a prediction
    split = table.set_index(S.EXAMPLE_ID)[S.SPLIT]
    assert pred[split != S.TRAIN_SPLIT].notna().sum() == len(expected)


def test_summary_says_how_the_diagnosis_chose_its_cut_offs():
    """On the shipped sample run (analysed with the defaults): the lines `datamap summary` prints."""
    from analysis.cli import _cutoff_lines

    ev = json.loads((SAMPLE_RUN / S.OOD_EVAL_FILE).read_text())
    table = runstore.load_table(SAMPLE_RUN)
    text = "\n".join(_cutoff_lines(SAMPLE_RUN))
    assert f"suspect_ood: {S.OOD_COMBINED} above its 0.95 quantile" in text
    assert f"({ev['diagnosis']['threshold']:.4g})" in text
    assert f": {int(table[S.LABEL_ISSUE].sum())} of {int((table[S.SPLIT] == S.TRAIN_SPLIT).sum())} training rows" in text
    again = ev["diagnosis"]["label_issues"]["resampled"]
    assert (f"refitted on {again['rounds']} resamples of {again['rows']:,} rows flags "
            f"{again['low']:.1%}-{again['high']:.1%} (10th-90th percentile): stable") in text
    assert "neighbours on loss_mean" not in text  # the re-ranked method is named once
