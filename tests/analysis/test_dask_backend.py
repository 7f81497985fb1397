"""The Dask backend on a real local cluster (two worker processes) against the in-memory code."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analysis import ood as O
from analysis import runstore
from analysis import schema as S
from analysis.cli import main as cli_main
from analysis.diagnosis import SUSPECT_MISLABELED
from analysis.pipeline import AnalyzeOptions, analyze_run
from analysis.schema import SchemaError
from analysis.synthetic import make_synthetic_run

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
import dask.array as dsa  # noqa: E402

from analysis import dask_backend as DB  # noqa: E402

SAMPLE_RUN = Path(__file__).resolve().parents[2] / "sample_data" / "run"


@pytest.fixture(scope="module")
def client():
    logging.getLogger("distributed").setLevel(logging.ERROR)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _messy_run(path: Path, *, string_ids: bool, seed: int) -> Path:
    """A run whose dynamics come in three shuffled shards with rows missing, evaluation examples
    without dynamics and (optionally) string ids: nothing the in-memory fast paths rely on."""
    make_synthetic_run(path, n_examples=1500, n_epochs=5, n_classes=4, n_eval=120, seed=seed)
    rng = np.random.default_rng(seed)
    examples = runstore.load_examples(path)
    dyn = runstore.load_dynamics(path).to_pandas()
    dyn = dyn[rng.random(len(dyn)) > 0.07].sample(frac=1.0, random_state=seed)  # 7% missing
    if string_ids:
        examples[S.EXAMPLE_ID] = [f"doc-{i}" for i in examples[S.EXAMPLE_ID]]
        dyn[S.EXAMPLE_ID] = [f"doc-{i}" for i in dyn[S.EXAMPLE_ID]]
        shutil.rmtree(path / S.FEATURES_DIR, ignore_errors=True)
        shutil.rmtree(path / S.LOGITS_DIR, ignore_errors=True)
    runstore.save_examples(path, examples)
    shutil.rmtree(path / S.DYNAMICS_DIR)
    bounds = np.linspace(0, len(dyn), 4).astype(int)
    for k in range(3):
        runstore.save_dynamics(path, dyn.iloc[bounds[k]:bounds[k + 1]].reset_index(drop=True), shard=f"rank-{k}")
    return path


@pytest.mark.parametrize(("string_ids", "skip_first"), [(False, False), (True, True)])
def test_dask_table_equals_in_memory(tmp_path, client, string_ids, skip_first):
    run = _messy_run(tmp_path / "run", string_ids=string_ids, seed=3)
    opts = AnalyzeOptions(ood=False, aum_skip_first_epoch=skip_first)
    expected = analyze_run(run, opts, write=False)
    got = DB.analyze_run_dask(run, opts, npartitions=5)
    pd.testing.assert_frame_equal(got, expected)
    assert got[S.N_EPOCHS_SEEN].eq(0).sum() == 240  # the evaluation rows are kept, without dynamics
    assert got[S.N_EPOCHS_SEEN].between(1, 4).any()  # and some examples miss epochs
    pd.testing.assert_frame_equal(runstore.load_table(run), expected)


def test_sample_run_with_ood_stage(tmp_path, client):
    run = tmp_path / "run"
    shutil.copytree(SAMPLE_RUN, run)
    opts = AnalyzeOptions(extra={"projection": "none"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sample's singular-covariance notice, twice
        expected = analyze_run(run, opts, write=False)
        got = DB.analyze_run_dask(run, opts, write=False)
    pd.testing.assert_frame_equal(got, expected)
    assert got[S.DIAGNOSIS].eq(SUSPECT_MISLABELED).any()


def test_dynamics_ids_missing_from_examples(tmp_path, client):
    run = tmp_path / "run"
    make_synthetic_run(run, n_examples=300, n_epochs=3, n_classes=3, seed=1)
    stray = pd.DataFrame({S.EXAMPLE_ID: [10_000], S.EPOCH: [0], S.GOLD_PROB: [0.5],
                          S.MARGIN: [0.1], S.PRED: [1]})
    cols = runstore.load_dynamics(run).column_names
    stray = stray.reindex(columns=cols).fillna(0.0).astype(runstore.load_dynamics(run).to_pandas().dtypes)
    runstore.save_dynamics(run, pa.Table.from_pandas(stray, preserve_index=False), shard="stray")
    with pytest.raises(SchemaError, match=r"1 example ids in the dynamics are not in examples.parquet \(e.g. \[10000\]\)"):
        DB.analyze_run_dask(run, AnalyzeOptions(ood=False), write=False)
    assert not (run / S.TABLE_FILE).exists()


def _features(n=4000, d=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) @ rng.normal(size=(d, d))).astype(np.float32)
    y = rng.integers(0, k, n)
    return x + 2.0 * y[:, None].astype(np.float32), y


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("shrinkage", [None, "auto", 0.2])
def test_mahalanobis_from_sufficient_statistics(client, relative, shrinkage):
    x, y = _features()
    cls = O.RelativeMahalanobisScorer if relative else O.MahalanobisScorer
    mem64 = cls(shrinkage=shrinkage, dtype="float64").fit(x, y)
    xd, yd = dsa.from_array(x, chunks=(700, 12)), dsa.from_array(y, chunks=700)
    got64 = DB.fit_mahalanobis(xd, yd, relative=relative, shrinkage=shrinkage, dtype="float64")
    np.testing.assert_allclose(got64.means_, mem64.means_, rtol=1e-12)
    np.testing.assert_allclose(got64.covariance_, mem64.covariance_, rtol=1e-9, atol=1e-12)
    assert got64.shrinkage_ == pytest.approx(mem64.shrinkage_, rel=1e-9, abs=1e-15)
    ref = mem64.score(x)
    scores = DB.score_blocks(got64, dsa.from_array(x, chunks=(900, 12))).compute()
    np.testing.assert_allclose(scores, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    if relative:
        np.testing.assert_allclose(got64.background_covariance_, mem64.background_covariance_, rtol=1e-9)
    # float32 products: as close to float64 as the in-memory float32 fit is (same arithmetic)
    mem32 = cls(shrinkage=shrinkage).fit(x, y).score(x)
    got32 = DB.score_blocks(DB.fit_mahalanobis(xd, yd, relative=relative, shrinkage=shrinkage), xd).compute()
    scale = np.abs(ref).max()
    assert np.abs(got32 - ref).max() <= 4 * np.abs(mem32 - ref).max() + 1e-6 * scale


def test_mahalanobis_singular_falls_back_like_in_memory(client):
    x, y = _features(n=60, d=80, k=3, seed=2)  # more features than rows
    xd, yd = dsa.from_array(x, chunks=(25, 80)), dsa.from_array(y, chunks=25)
    with pytest.warns(UserWarning, match="singular"):
        mem = O.MahalanobisScorer(dtype="float64").fit(x, y)
    with pytest.warns(UserWarning, match="singular"):
        got = DB.fit_mahalanobis(xd, yd, dtype="float64")
    assert got.shrinkage_ == pytest.approx(mem.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(DB.score_blocks(got, xd).compute(), mem.score(x), rtol=1e-7)


def test_mahalanobis_rejects_bad_input(client):
    x, y = _features(n=100)
    x[5, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        DB.fit_mahalanobis(dsa.from_array(x, chunks=(30, 12)), dsa.from_array(y, chunks=30))
    with pytest.raises(TypeError, match="integer class"):
        DB.fit_mahalanobis(dsa.from_array(x, chunks=(30, 12)), dsa.from_array(y.astype(float), chunks=30))


@pytest.mark.parametrize("max_train", [None, 150])
def test_knn_on_dask_arrays_equals_in_memory(client, max_train):
    x, _ = _features(n=400, d=12, k=3, seed=3)
    test, _ = _features(n=90, d=12, k=3, seed=4)
    mem = O.KNNScorer(k=7, max_train=max_train, random_state=1).fit(x)
    xd = dsa.from_array(x, chunks=(70, 12))  # uneven blocks: 6 x 70 + 50
    got = DB.fit_knn(xd, k=7, max_train=max_train, random_state=1)
    np.testing.assert_array_equal(got.bank_index_, mem.bank_index_)
    np.testing.assert_array_equal(got.train_, mem.train_)
    np.testing.assert_allclose(DB.score_blocks(got, dsa.from_array(test, chunks=(40, 12))).compute(),
                               mem.score(test), rtol=1e-12)
    # training rows leave themselves out, wherever their block starts
    loo = DB.score_fitted_blocks(got, xd).compute()
    np.testing.assert_allclose(loo, mem.score_fitted(x), rtol=1e-12)
    assert (loo > 0).all()  # a row's own zero distance was skipped
    with pytest.raises(ValueError, match="rows given to `fit`"):
        DB.score_fitted_blocks(got, xd[:-1])


def test_cli_analyze_on_a_local_cluster(tmp_path, capsys):
    run = _messy_run(tmp_path / "run", string_ids=False, seed=5)
    expected = analyze_run(run, AnalyzeOptions(ood=False), write=False)
    assert cli_main(["analyze", str(run), "--no-ood", "--dask", "local:2", "--dask-partitions", "3"]) == 0
    assert "dask: 2 workers at tcp://127.0.0.1:" in capsys.readouterr().out
    pd.testing.assert_frame_equal(runstore.load_table(run), expected)
