"""DynamicsRecorder: batch order, devices, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import runstore
from analysis import schema as S
from analysis.dynamics import per_epoch_from_logits
from analysis.pipeline import analyze_run
from analysis.recorder import DynamicsRecorder


def _record(logits, labels, batch_size, seed):
    rec = DynamicsRecorder()
    rng = np.random.default_rng(seed)
    n = logits.shape[1]
    for e in range(logits.shape[0]):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            rec.update(torch.as_tensor(idx), torch.as_tensor(logits[e, idx]), torch.as_tensor(labels[idx]), epoch=e)
    return rec.to_table().to_pandas()


def test_batch_order_and_size_do_not_matter():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 37, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 37)
    a = _record(logits, labels, batch_size=1, seed=1)
    b = _record(logits, labels, batch_size=8, seed=2)
    assert len(a) == 3 * 37
    np.testing.assert_array_equal(a[S.EXAMPLE_ID], b[S.EXAMPLE_ID])
    np.testing.assert_allclose(a[S.GOLD_PROB], b[S.GOLD_PROB], rtol=1e-6)
    # and equal the float64 NumPy reference
    ref = per_epoch_from_logits(logits[0], labels)
    first = a[a[S.EPOCH] == 0].sort_values(S.EXAMPLE_ID)
    np.testing.assert_allclose(first[S.GOLD_PROB], ref[S.GOLD_PROB], rtol=1e-5)
    np.testing.assert_allclose(first[S.MARGIN], ref[S.MARGIN], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(first[S.PRED], ref[S.PRED])


def test_numpy_and_torch_inputs_agree():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(6, 3))
    y = rng.integers(0, 3, 6)
    r1, r2 = DynamicsRecorder(), DynamicsRecorder()
    r1.update(np.arange(6), z, y, epoch=0)
    r2.update(torch.arange(6), torch.as_tensor(z), torch.as_tensor(y), epoch=0)
    t1, t2 = r1.to_table().to_pandas(), r2.to_table().to_pandas()
    for col in (S.GOLD_PROB, S.MARGIN, S.LOSS, S.EL2N):
        np.testing.assert_allclose(t1[col], t2[col], rtol=1e-6)


def test_string_ids_and_save(tmp_path):
    rec = DynamicsRecorder(keep_logits=True)
    for e in range(2):
        rec.update(["b", "a"], np.array([[2.0, 0.0], [0.0, 1.0]]), [0, 0], epoch=e)
    rec.update(["c"], np.array([5.0, -5.0]), [1], epoch=0)  # a batch of one, 1-D logits
    rec.save(tmp_path, class_names=["neg", "pos"])
    ex = runstore.load_examples(tmp_path)
    assert ex[S.EXAMPLE_ID].tolist() == ["a", "b", "c"]
    assert ex[S.LABEL_NAME].tolist() == ["neg", "neg", "pos"]
    table = analyze_run(tmp_path)
    row = table.set_index(S.EXAMPLE_ID).loc["c"]
    assert row[S.N_EPOCHS_SEEN] == 1 and row[S.NEVER_LEARNED]


def test_repeated_example_within_epoch_keeps_last():
    rec = DynamicsRecorder()
    rec.update([1], np.array([[0.0, 1.0]]), [0], epoch=0)
    rec.update([1], np.array([[1.0, 0.0]]), [0], epoch=0)
    with pytest.warns(UserWarning, match="more than once"):
        t = rec.to_table().to_pandas()
    assert len(t) == 1 and t[S.PRED].iloc[0] == 0


@pytest.mark.parametrize(
    ("ids", "logits", "labels", "match"),
    [
        ([1, 2], np.zeros((3, 2)), [0, 1], r"shape \(2, n_classes\)"),
        ([1, 2], np.array([[np.nan, 0.0], [0.0, 0.0]]), [0, 1], "NaN or inf"),
        ([1, 2], np.zeros((2, 2)), [0, 2], r"labels in \[0, 2\)"),
        ([1, 2], np.zeros((2, 2)), [0], r"labels` of shape \(2,\)"),
    ],
)
def test_bad_input(ids, logits, labels, match):
    with pytest.raises(ValueError, match=match):
        DynamicsRecorder().update(ids, logits, labels, epoch=0)


def test_torch_nan_and_class_count_change():
    rec = DynamicsRecorder()
    with pytest.raises(ValueError, match="NaN or inf"):
        rec.update(torch.tensor([0]), torch.tensor([[float("inf"), 0.0]]), torch.tensor([0]), epoch=0)
    rec.update([0], np.zeros((1, 3)), [0], epoch=0)
    with pytest.raises(ValueError, match="Expected 3 classes"):
        rec.update([1], np.zeros((1, 4)), [0], epoch=0)
    with pytest.raises(ValueError, match="non-negative int"):
        rec.update([1], np.zeros((1, 3)), [0], epoch=-1)
    with pytest.raises(ValueError, match="Nothing recorded"):
        DynamicsRecorder().to_table()
