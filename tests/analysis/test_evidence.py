"""Suggested labels and the exact blockwise nearest-neighbour search, against independent references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from analysis import schema as S
from analysis.evidence import SUGGESTED_LABEL, nearest_neighbors, suggested_labels


def test_suggested_labels_prefers_the_analysis_column() -> None:
    table = pd.DataFrame({S.FINAL_PRED: pd.array([1, 2, None], dtype="Int32"),
                          S.LABEL: [0, 2, 1]})
    assert suggested_labels(table).tolist() == [1, 2, pd.NA]
    table[SUGGESTED_LABEL] = pd.array([3, None, 0], dtype="Int64")
    got = suggested_labels(table)
    assert got.tolist() == [3, pd.NA, 0] and got.index.equals(table.index)
    with pytest.raises(ValueError, match="suggested_label"):
        suggested_labels(pd.DataFrame({S.LABEL: [0]}))


@pytest.mark.parametrize("block_rows", [7, 64, 10_000])
def test_neighbours_match_a_brute_force_reference(block_rows: int) -> None:
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(300, 16)).astype(np.float32) * rng.uniform(0.1, 5, size=(300, 1))
    queries = rng.normal(size=(25, 16))
    idx, sim = nearest_neighbors(queries, bank, k=6, block_rows=block_rows)
    ref = NearestNeighbors(n_neighbors=6, metric="cosine", algorithm="brute").fit(bank)
    dist, ref_idx = ref.kneighbors(queries)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sim, 1 - dist, atol=1e-5)
    assert (np.diff(sim, axis=1) <= 1e-7).all()  # nearest first


def test_neighbours_exclude_the_query_and_handle_small_banks() -> None:
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(40, 5))
    # the queries are bank rows: each one's nearest neighbour is itself unless excluded
    rows = np.array([3, 17, 39])
    idx, _ = nearest_neighbors(bank[rows], bank, k=3, block_rows=9)
    assert idx[:, 0].tolist() == rows.tolist()
    idx, _ = nearest_neighbors(bank[rows], bank, k=3, exclude=rows, block_rows=9)
    assert not (idx == rows[:, None]).any()
    full = NearestNeighbors(n_neighbors=4, metric="cosine", algorithm="brute").fit(bank)
    np.testing.assert_array_equal(idx, full.kneighbors(bank[rows])[1][:, 1:])
    # k beyond the bank: every other row, nearest first
    idx, sim = nearest_neighbors(bank[:1], bank[:4], k=10, exclude=[0])
    assert sorted(idx[0].tolist()) == [1, 2, 3] and sim.shape == (1, 3)
    # a zero vector has similarity 0 to everything (no NaN)
    _, sim = nearest_neighbors(np.zeros((1, 5)), bank, k=2)
    assert np.all(sim == 0)
    with pytest.raises(ValueError, match="same d"):
        nearest_neighbors(bank[:, :3], bank)
    with pytest.raises(ValueError, match="`k` >= 1"):
        nearest_neighbors(bank[:1], bank, k=0)


def test_training_neighbours_of_a_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from analysis import runstore
    from analysis.evidence import training_neighbors
    from analysis.synthetic import make_synthetic_run

    run = make_synthetic_run(tmp_path / "run", n_examples=150, n_epochs=2, n_classes=3, n_eval=20)
    train_ids, train = runstore.load_features(run, "train")
    ref = NearestNeighbors(n_neighbors=6, metric="cosine", algorithm="brute").fit(train)
    # a training example: itself excluded
    got = training_neighbors(run, train_ids[10], "train", k=5)
    assert got is not None and list(got.columns) == [S.EXAMPLE_ID, "similarity"]
    want = ref.kneighbors(np.asarray(train[10:11]))[1][0][1:]
    assert got[S.EXAMPLE_ID].tolist() == train_ids[want].tolist()
    # a test example: its neighbours come from the training bank
    test_ids, test = runstore.load_features(run, "test")
    got = training_neighbors(run, test_ids[3], "test", k=4)
    assert got[S.EXAMPLE_ID].tolist() == train_ids[ref.kneighbors(np.asarray(test[3:4]), 4)[1][0]].tolist()
    assert training_neighbors(run, -12345, "train") is None
    assert training_neighbors(run, test_ids[0], "ood:none") is None


SAMPLE_RUN = __import__("pathlib").Path(__file__).resolve().parents[2] / "sample_data" / "run"


def test_a_large_bank_is_searched_through_a_kept_index_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the shipped sample run's real features (1,154 training rows of a digits MLP), with the
    exact limit lowered so that the bank counts as large: the neighbours come from a
    NeighborIndex built once and kept, and are those of the blockwise scan (checked against
    scikit-learn too); a bank over the memory budget is scanned as before."""
    from analysis import evidence, neighbors, runstore
    from analysis.evidence import training_neighbors

    train_ids, train = runstore.load_features(SAMPLE_RUN, "train")
    test_ids, _ = runstore.load_features(SAMPLE_RUN, "test")
    x = np.asarray(train, dtype=np.float64)
    assert len(x) > 1000
    brute = NearestNeighbors(n_neighbors=9, metric="cosine", algorithm="brute").fit(x)
    picks = range(0, len(x), 23)
    monkeypatch.setattr(evidence, "_BANKS", {})
    scanned = {i: training_neighbors(SAMPLE_RUN, train_ids[i], "train", k=8) for i in picks}
    scanned_test = training_neighbors(SAMPLE_RUN, test_ids[5], "test", k=8)
    assert evidence._BANKS == {}  # below the limit: the blockwise scan, no index
    for i, got in scanned.items():
        assert got[S.EXAMPLE_ID].tolist() == train_ids[brute.kneighbors(x[i:i + 1])[1][0][1:]].tolist()

    monkeypatch.setattr(neighbors, "EXACT_MAX_REFERENCE", 100)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for i, want in scanned.items():
        got = training_neighbors(SAMPLE_RUN, train_ids[i], "train", k=8)
        assert got[S.EXAMPLE_ID].tolist() == want[S.EXAMPLE_ID].tolist()
        np.testing.assert_allclose(got["similarity"], want["similarity"], atol=1e-5)
        rows = [int(np.flatnonzero(train_ids == v)[0]) for v in got[S.EXAMPLE_ID]]
        np.testing.assert_allclose(got["similarity"], unit[rows] @ unit[i], atol=1e-5)
    got = training_neighbors(SAMPLE_RUN, test_ids[5], "test", k=8)
    assert got[S.EXAMPLE_ID].tolist() == scanned_test[S.EXAMPLE_ID].tolist()
    (kept,) = evidence._BANKS.values()  # built once, reused for every lookup
    index = kept.index
    assert index.method_ == "exact" and index.reference_.shape == x.shape
    np.testing.assert_allclose(np.linalg.norm(index.reference_, axis=1), 1.0, atol=1e-5)
    # over the memory budget: the bank is scanned again (no index kept), same answer
    monkeypatch.setattr(evidence, "_BANKS", {})
    monkeypatch.setattr(evidence, "INDEX_MAX_BYTES", 1000)
    got = training_neighbors(SAMPLE_RUN, train_ids[0], "train", k=8)
    assert got[S.EXAMPLE_ID].tolist() == scanned[0][S.EXAMPLE_ID].tolist()
    assert evidence._BANKS == {}
