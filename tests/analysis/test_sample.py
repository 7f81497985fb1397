"""The sample run: real digits, known label noise and OOD splits, checked against sklearn's data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from analysis import runstore  # noqa: E402
from analysis import schema as S  # noqa: E402
from analysis.pipeline import AnalyzeOptions, analyze_run  # noqa: E402
from analysis.sample import build_sample_run  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "sample_data" / "run"
SPLITS = [S.TRAIN_SPLIT, "test", "ood:near", "ood:far"]


def _auroc(pos_scores, neg_scores) -> float:
    """Probability that a positive outscores a negative (ties count half): AUROC by its definition."""
    pos, neg = np.asarray(pos_scores)[:, None], np.asarray(neg_scores)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build_sample_run(tmp_path_factory.mktemp("sample") / "run", seed=0)


@pytest.mark.slow
def test_examples_hold_the_ground_truth(run):
    from sklearn.datasets import load_digits

    digits = load_digits()
    ex = runstore.load_examples(run)
    assert sorted(ex[S.SPLIT].unique()) == sorted(SPLITS)
    assert ex[S.EXAMPLE_ID].is_unique
    train = ex[ex[S.SPLIT] == S.TRAIN_SPLIT]
    idx = train["digits_index"].to_numpy(int)
    # original labels are sklearn's; exactly 10 % flipped, always to another in-distribution class
    np.testing.assert_array_equal(train[S.ORIGINAL_LABEL].to_numpy(int), digits.target[idx])
    noisy = train[S.IS_NOISY].to_numpy(bool)
    assert noisy.sum() == round(0.1 * len(train))
    np.testing.assert_array_equal(noisy, train[S.LABEL].to_numpy(int) != digits.target[idx])
    assert train[S.LABEL].between(0, 7).all() and set(digits.target[idx]) == set(range(8))
    test = ex[ex[S.SPLIT] == "test"]
    np.testing.assert_array_equal(test[S.LABEL].to_numpy(int), digits.target[test["digits_index"].to_numpy(int)])
    assert not test[S.IS_NOISY].any()
    # train and test are disjoint digits; near OOD are exactly the held-out 8s and 9s
    assert not set(idx) & set(test["digits_index"].astype(int))
    near = ex[ex[S.SPLIT] == "ood:near"]
    assert sorted(near["digits_index"].astype(int)) == np.flatnonzero(digits.target >= 8).tolist()
    assert near[S.LABEL].isna().all() and set(near[S.ORIGINAL_LABEL].astype(int)) == {8, 9}
    np.testing.assert_array_equal(ex[S.IS_OOD].to_numpy(bool), ex[S.SPLIT].str.startswith("ood:").to_numpy())
    far = ex[ex[S.SPLIT] == "ood:far"]
    assert len(far) == 300 and far["digits_index"].isna().all() and far[S.LABEL].isna().all()


@pytest.mark.slow
def test_images_are_the_pixels(run):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    ex = runstore.load_examples(run)
    assert ex[S.IMAGE].map(lambda b: isinstance(b, bytes) and b[:8] == b"\x89PNG\r\n\x1a\n").all()
    for _, row in ex[ex["digits_index"].notna()].sample(40, random_state=0).iterrows():
        img = np.asarray(Image.open(io.BytesIO(row[S.IMAGE])))
        assert img.shape == (32, 32)
        want = np.round(255 - digits.images[int(row["digits_index"])] * 255 / 16)
        np.testing.assert_array_equal(img[::4, ::4], want)  # nearest-neighbour upscale of 8x8
    far = np.stack([np.asarray(Image.open(io.BytesIO(b)))[::4, ::4] for b in ex.loc[ex[S.SPLIT] == "ood:far", S.IMAGE]])
    levels = (255 - far.astype(float)) * 16 / 255
    np.testing.assert_allclose(levels, np.round(levels), atol=0.05)  # the digits' 0..16 grid
    assert levels.min() == 0 and levels.max() == 16


@pytest.mark.slow
def test_arrays_dynamics_and_meta(run):
    meta = runstore.load_run_meta(run)
    assert meta.source == S.SOURCE_FORWARD_PASS and meta.n_epochs == 20
    assert meta.class_names == [str(k) for k in range(8)]
    ex = runstore.load_examples(run)
    for split in SPLITS:
        fid, feats = runstore.load_features(run, split)
        lid, logits = runstore.load_logits(run, split)
        np.testing.assert_array_equal(fid, lid)
        assert sorted(fid) == sorted(ex.loc[ex[S.SPLIT] == split, S.EXAMPLE_ID])
        assert feats.shape == (len(fid), 64) and logits.shape == (len(fid), 8)
    dyn = runstore.load_dynamics(run).to_pandas()
    train_ids = set(ex.loc[ex[S.SPLIT] == S.TRAIN_SPLIT, S.EXAMPLE_ID])
    assert set(dyn[S.EXAMPLE_ID]) == train_ids and len(dyn) == 20 * len(train_ids)

    # the model learned the clean labels: test accuracy from the stored final logits
    tid, tlog = runstore.load_logits(run, "test")
    truth = ex.set_index(S.EXAMPLE_ID).loc[tid, S.LABEL].to_numpy(int)
    assert (tlog.argmax(1) == truth).mean() > 0.9
    # held-out digits get lower max-softmax than test digits
    def msp(z):
        z = z - z.max(1, keepdims=True)
        return (np.exp(z) / np.exp(z).sum(1, keepdims=True)).max(1)
    assert _auroc(-msp(runstore.load_logits(run, "ood:near")[1]), -msp(tlog)) > 0.85


@pytest.mark.slow
def test_flipped_labels_stand_out(run):
    table = analyze_run(run, AnalyzeOptions(ood=False), write=False)
    train = table[table[S.SPLIT] == S.TRAIN_SPLIT]
    noisy = train[S.IS_NOISY].to_numpy(bool)
    aum = train[S.AUM].to_numpy(float)
    assert _auroc(-aum[noisy], -aum[~noisy]) > 0.95
    assert (train.loc[noisy, S.REGION] == S.HARD).mean() > 0.8


@pytest.mark.slow
def test_deterministic_for_a_seed(tmp_path):
    a = build_sample_run(tmp_path / "a", seed=3, n_epochs=2)
    b = build_sample_run(tmp_path / "b", seed=3, n_epochs=2)
    pd.testing.assert_frame_equal(runstore.load_examples(a), runstore.load_examples(b))
    assert runstore.load_dynamics(a).equals(runstore.load_dynamics(b))
    np.testing.assert_array_equal(runstore.load_features(a, "ood:far")[1], runstore.load_features(b, "ood:far")[1])
    from analysis.sample import load_sample_data

    other = load_sample_data(seed=4).labels[S.TRAIN_SPLIT]
    assert not np.array_equal(runstore.load_examples(a).query("split == 'train'")[S.LABEL].to_numpy(int), other)
    with pytest.raises(FileExistsError):
        build_sample_run(a, overwrite=False)
    with pytest.raises(ValueError, match="n_epochs"):
        build_sample_run(tmp_path / "d", n_epochs=0)


def test_shipped_run_is_complete_and_small():
    if not (SHIPPED / S.RUN_JSON).exists():
        pytest.skip("sample_data/run is not built (python sample_data/build.py)")
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 5_000_000
    table = runstore.load_table(SHIPPED)
    ex = runstore.load_examples(SHIPPED)
    assert len(table) == len(ex) and set(table[S.SPLIT]) == set(SPLITS)
    assert {S.AUM, S.REGION, S.DIAGNOSIS, S.IMAGE, S.IS_NOISY, S.IS_OOD} <= set(table.columns)
    # the shipped examples are what the builder makes from sklearn's data (the data side is exact)
    import pyarrow as pa

    from analysis.sample import _examples_frame, load_sample_data

    fresh = runstore.validate_examples(_examples_frame(load_sample_data(seed=0)), n_classes=8, where="fresh")
    fresh = pa.Table.from_pandas(fresh, preserve_index=False).to_pandas()  # the same Parquet dtypes
    pd.testing.assert_frame_equal(ex.reset_index(drop=True), fresh.reset_index(drop=True))
