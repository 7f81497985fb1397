"""The plain-loop path: DynamicsRecorder's buffered reduction gives what per-batch reduction gives.

For torch tensors ``update`` checks types and shapes and keeps the batch by reference; values are
validated and batches reduced together later. These tests pin down that this changes nothing a
user can observe: values, row order and "last measurement wins" for repeats, labels, row counts;
and that a caller modifying its tensors in place after ``update`` is told so instead of getting
silently wrong numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analysis import schema as S  # noqa: E402
from analysis.dynamics import per_epoch_from_logits  # noqa: E402
from analysis.recorder import DynamicsRecorder  # noqa: E402


def _feed(rec: DynamicsRecorder, logits: np.ndarray, labels: np.ndarray, ids: np.ndarray, *,
          batch: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for e in range(logits.shape[0]):
        order = rng.permutation(len(ids))
        for s in range(0, len(ids), batch):
            b = order[s:s + batch]
            rec.update(torch.as_tensor(ids[b]), torch.as_tensor(logits[e, b]),
                       torch.as_tensor(labels[b]), epoch=e)


@pytest.mark.parametrize("flush_elements", [1, 64, 1 << 20])
def test_buffered_reduction_matches_the_float64_reference(monkeypatch, flush_elements):
    monkeypatch.setattr(DynamicsRecorder, "_FLUSH_ELEMENTS", flush_elements)
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(4, 203, 6)) * 4).astype(np.float32)
    logits[1, 7] = [3, 3, 3, 0, 0, 0]  # a tie for the top class
    labels = rng.integers(0, 6, 203)
    ids = rng.permutation(10_000)[:203]
    rec = DynamicsRecorder(keep_logits=True)
    _feed(rec, logits, labels, ids, batch=17, seed=1)
    assert rec.n_rows == 4 * 203
    t = rec.to_table().to_pandas()
    order = np.argsort(ids)
    for e in range(4):
        got = t[t[S.EPOCH] == e]
        np.testing.assert_array_equal(got[S.EXAMPLE_ID], ids[order])
        ref = per_epoch_from_logits(logits[e, order], labels[order])
        for col in (S.GOLD_PROB, S.MARGIN, S.LOSS, S.EL2N):
            np.testing.assert_allclose(got[col], ref[col].astype(np.float32), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(got[S.PRED], ref[S.PRED])
        np.testing.assert_array_equal(np.stack(got[S.LOGITS].to_numpy()), logits[e, order])
    assert rec.labels == dict(zip(ids.tolist(), labels.tolist(), strict=True))


def test_caller_reusing_its_tensors_is_detected_and_copies_are_safe():
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    ids = torch.tensor([5, 6])
    y = torch.tensor([0, 1])
    rec = DynamicsRecorder()
    rec.update(ids, z, y, epoch=0)
    z.mul_(-1)       # e.g. a buffer reused for the next batch
    with pytest.raises(ValueError, match="modified in place"):
        rec.to_table()
    # passing copies, the caller may reuse its buffers freely
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    rec = DynamicsRecorder()
    rec.update(ids.clone(), z.clone(), y.clone(), epoch=0)
    z.mul_(-1)
    ids.add_(100)
    y.fill_(0)
    t = rec.to_table().to_pandas()
    assert t[S.EXAMPLE_ID].tolist() == [5, 6]
    assert t[S.PRED].tolist() == [0, 1]
    assert rec.labels == {5: 0, 6: 1}


def test_last_measurement_wins_across_torch_and_numpy_batches():
    rec = DynamicsRecorder()
    rec.update(torch.tensor([1]), torch.tensor([[0.0, 1.0]]), torch.tensor([0]), epoch=0)
    rec.update([1], np.array([[1.0, 0.0]]), [0], epoch=0)       # later, NumPy
    rec.update(torch.tensor([2]), torch.tensor([[1.0, 0.0]]), torch.tensor([0]), epoch=0)
    rec.update([2], np.array([[0.0, 1.0]]), [0], epoch=0)
    with pytest.warns(UserWarning, match="more than once"):
        t = rec.to_table().to_pandas().set_index(S.EXAMPLE_ID)
    assert t.loc[1, S.PRED] == 0 and t.loc[2, S.PRED] == 1
    assert rec.labels == {1: 0, 2: 0}
    # a measurement under another label is refused (it used to win silently)
    rec.update([2], np.array([[0.0, 1.0]]), [1], epoch=0)
    with pytest.raises(ValueError, match="one label per example"):
        _ = rec.labels


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_logits(dtype):
    z = torch.tensor([[1.5, -0.5, 0.25]], dtype=dtype)
    rec = DynamicsRecorder()
    rec.update([0], z, [2], epoch=0)
    ref = per_epoch_from_logits(z.float().numpy(), np.array([2]))
    got = rec.to_table().to_pandas()
    np.testing.assert_allclose(got[S.GOLD_PROB], ref[S.GOLD_PROB], rtol=1e-6)
    np.testing.assert_allclose(got[S.MARGIN], ref[S.MARGIN], rtol=1e-6)
    with pytest.raises(ValueError, match="NaN or inf"):
        rec.update([1], torch.tensor([[float("nan"), 0.0, 0.0]], dtype=dtype), [0], epoch=0)
    assert rec.n_rows == 1  # the bad batch was not recorded


def test_gradients_are_untouched():
    lin = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    logits = lin(x)
    rec = DynamicsRecorder()
    rec.update(torch.arange(4), logits, torch.tensor([0, 1, 0, 1]), epoch=0)
    logits.sum().backward()           # the graph is intact after update
    assert lin.weight.grad is not None
    assert rec.to_table().num_rows == 4


def test_one_class_is_refused_at_update():
    with pytest.raises(ValueError, match="at least 2 classes"):
        DynamicsRecorder().update(torch.tensor([0]), torch.zeros(1, 1), torch.tensor([0]), epoch=0)


@pytest.mark.parametrize(
    ("ids", "logits", "labels", "error", "match"),
    [
        (torch.tensor([0, 1]), torch.zeros(2, 3), torch.tensor([0.0, 1.0]), TypeError, "integer labels"),
        (torch.tensor([0.0, 1.0]), torch.zeros(2, 3), torch.tensor([0, 1]), TypeError, "floats"),
        (torch.tensor([0, 1]), torch.zeros(3, 3), torch.tensor([0, 1]), ValueError, r"shape \(2, n_classes\)"),
        (torch.tensor([0, 1]), torch.zeros(2, 3), torch.tensor([0, 1, 2]), ValueError, r"labels` of shape"),
        (torch.tensor([[0, 1]]), torch.zeros(2, 3), torch.tensor([0, 1]), ValueError, "1-D"),
    ],
)
def test_bad_torch_input_is_refused_with_the_general_messages(ids, logits, labels, error, match):
    rec = DynamicsRecorder()
    with pytest.raises(error, match=match):
        rec.update(ids, logits, labels, epoch=0)
    assert rec.n_rows == 0


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (torch.zeros(2, 3), torch.tensor([0, 3]), r"labels in \[0, 3\)"),
        (torch.zeros(2, 3), torch.tensor([0, -1]), r"labels in \[0, 3\)"),
        (torch.tensor([[0.0, 1e38, 1e38], [0.0, 0.0, float("inf")]]), torch.tensor([0, 1]), "NaN or inf"),
    ],
)
def test_bad_torch_values_are_refused_at_the_reduction(logits, labels, match):
    # values of torch batches are checked when batches are reduced (at the latest in to_table)
    rec = DynamicsRecorder()
    rec.update(torch.tensor([0, 1]), logits, labels, epoch=0)
    with pytest.raises(ValueError, match=match):
        rec.to_table()


def test_huge_but_finite_logits_are_accepted():
    # their sum overflows float32; the check must neither refuse them nor warn
    z = torch.tensor([[3e38, 3e38, 0.0], [0.0, 1.0, 2.0]])
    rec = DynamicsRecorder()
    rec.update(torch.tensor([0, 1]), z, torch.tensor([0, 2]), epoch=0)
    t = rec.to_table().to_pandas()
    assert t[S.PRED].tolist() == [0, 2]


def test_class_count_change_with_tensors():
    rec = DynamicsRecorder()
    rec.update(torch.tensor([0]), torch.zeros(1, 3), torch.tensor([0]), epoch=0)
    with pytest.raises(ValueError, match="Expected 3 classes"):
        rec.update(torch.tensor([1]), torch.zeros(1, 4), torch.tensor([0]), epoch=0)


def test_changing_dtypes_and_string_ids_keep_call_order():
    rec = DynamicsRecorder()
    rec.update(torch.tensor([1, 2], dtype=torch.int32), torch.tensor([[0.0, 1.0], [1.0, 0.0]]),
               torch.tensor([0, 0]), epoch=0)
    rec.update(torch.tensor([1]), torch.tensor([[2.0, 0.0]], dtype=torch.float64),  # int64 ids, float64
               torch.tensor([0]), epoch=0)
    rec.update(torch.tensor([2]), torch.tensor([[0.0, 2.0]], dtype=torch.float16), torch.tensor([0]), epoch=0)
    with pytest.warns(UserWarning, match="2 examples were recorded more than once"):
        t = rec.to_table().to_pandas().set_index(S.EXAMPLE_ID)
    assert t.loc[1, S.PRED] == 0 and t.loc[2, S.PRED] == 1  # the later measurements won

    rec = DynamicsRecorder()
    rec.update(["b", "a"], torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 0]), epoch=0)
    rec.update(["a"], torch.tensor([[0.0, 1.0]]), torch.tensor([0]), epoch=0)
    with pytest.warns(UserWarning, match="1 examples were recorded more than once"):
        t = rec.to_table().to_pandas()
    assert t[S.EXAMPLE_ID].tolist() == ["a", "b"] and t[S.PRED].tolist() == [1, 1]
