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
    # tensors are checked for values when reduced: the NaN surfaces at to_table, not at update
    rec = DynamicsRecorder()
    rec.update(torch.tensor([0]), torch.tensor([[float("inf"), 0.0]]), torch.tensor([0]), epoch=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        rec.to_table()
    rec.update([0], np.zeros((1, 2)), [0], epoch=0)
    with pytest.raises(ValueError, match="Expected 2 classes"):
        rec.update([1], np.zeros((1, 4)), [0], epoch=0)
    with pytest.raises(ValueError, match="Expected 2 classes"):  # shapes: still at update
        rec.update(torch.tensor([1]), torch.zeros(1, 4), torch.tensor([0]), epoch=0)
    with pytest.raises(ValueError, match="non-negative int"):
        rec.update([1], np.zeros((1, 2)), [0], epoch=-1)
    with pytest.raises(ValueError, match="non-negative int"):
        rec.update(torch.tensor([1]), torch.zeros(1, 2), torch.tensor([0]), epoch=-1)
    with pytest.raises(ValueError, match="Nothing recorded"):
        DynamicsRecorder().to_table()


def test_torch_nan_is_reported_at_to_table_with_epoch_and_id():
    rec = DynamicsRecorder()
    rec.update(torch.tensor([1, 2]), torch.zeros(2, 3), torch.tensor([0, 1]), epoch=0)
    z = torch.zeros(2, 3)
    z[1, 2] = float("nan")
    rec.update(torch.tensor([7, 8]), z, torch.tensor([0, 1]), epoch=3)  # no error yet
    rec.update(torch.tensor([1, 2]), torch.ones(2, 3), torch.tensor([0, 1]), epoch=1)
    with pytest.raises(ValueError, match=r"epoch 3 contain NaN or inf .*example id 8; the batch was not recorded"):
        rec.to_table()
    # the other batches were recorded; the bad one was dropped
    t = rec.to_table().to_pandas()
    assert list(zip(t[S.EPOCH], t[S.EXAMPLE_ID], strict=True)) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert rec.labels == {1: 0, 2: 1}


@pytest.mark.parametrize("bad", [3, -1])
def test_torch_label_out_of_range_is_reported_at_to_table(bad):
    rec = DynamicsRecorder()
    rec.update(torch.tensor([4, 5]), torch.zeros(2, 3), torch.tensor([0, bad]), epoch=2)
    with pytest.raises(ValueError, match=rf"labels in \[0, 3\), got {bad} \(epoch 2, example id 5\)"):
        rec.to_table()
    with pytest.raises(ValueError, match="Nothing recorded"):
        rec.to_table()


@pytest.mark.parametrize(("limit", "value"), [("_FLUSH_ELEMENTS", 8), ("_FLUSH_BATCHES", 3)])
def test_value_error_from_a_flush_inside_update_names_the_earlier_batch(monkeypatch, limit, value):
    monkeypatch.setattr(DynamicsRecorder, limit, value)
    rec = DynamicsRecorder()
    rec.update(torch.tensor([0]), torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), epoch=5)
    with pytest.raises(ValueError, match="epoch 5 contain NaN"):
        for i in range(1, 10):
            rec.update(torch.tensor([i]), torch.zeros(1, 2), torch.tensor([1]), epoch=6)
    t = rec.to_table().to_pandas()  # the batch whose update raised is recorded
    assert t[S.EPOCH].tolist() == [6] * len(t) and len(t) >= 1


@pytest.mark.parametrize("which", ["example_ids", "logits", "labels"])
def test_in_place_modification_after_update_is_detected(which):
    ids, z, y = torch.tensor([5, 6]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    rec = DynamicsRecorder()
    rec.update(torch.tensor([1]), torch.zeros(1, 2), torch.tensor([0]), epoch=0)
    rec.update(ids, z, y, epoch=4)
    {"example_ids": ids, "logits": z, "labels": y}[which].add_(1)  # e.g. a reused buffer
    with pytest.raises(ValueError, match=rf"`{which}` of the batch of epoch 4 was modified in place.*clone\(\)"):
        rec.to_table()
    assert rec.to_table().num_rows == 1  # the modified batch was dropped, the other kept


def test_modification_through_a_detached_alias_is_detected_and_copies_are_safe():
    z = torch.tensor([[2.0, 0.0]], requires_grad=True) * 1
    rec = DynamicsRecorder()
    rec.update(torch.tensor([0]), z, torch.tensor([0]), epoch=0)
    z.detach().mul_(-1)  # shares the change counter with z
    with pytest.raises(ValueError, match="modified in place"):
        rec.to_table()
    # copies (and views of a larger buffer, which the recorder copies) may be reused freely
    buf = torch.tensor([[2.0, 0.0], [0.0, 1.0], [9.0, 9.0]])
    z = torch.tensor([[2.0, 0.0]])
    rec.update(torch.tensor([1]), z.detach().clone(), torch.tensor([0]), epoch=0)
    rec.update(torch.tensor([2, 3]), buf[:2], torch.tensor([0, 1]), epoch=0)
    z.mul_(-1)
    buf.mul_(-1)
    assert rec.to_table().to_pandas()[S.PRED].tolist() == [0, 0, 1]


def test_inference_mode_tensors_are_checked_and_copied_at_once():
    rec = DynamicsRecorder()
    with torch.inference_mode():
        z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        ids, y = torch.tensor([5, 6]), torch.tensor([0, 1])
        with pytest.raises(ValueError, match="NaN or inf"):
            rec.update(ids, torch.full((2, 2), float("nan")), y, epoch=0)
        rec.update(ids, z, y, epoch=0)
        z.mul_(-1)
    assert rec.to_table().to_pandas()[S.PRED].tolist() == [0, 1]


def _batches(seed, n_examples=53, n_classes=4, epochs=3):
    rng = np.random.default_rng(seed)
    ids = rng.permutation(1000)[:n_examples]
    labels = rng.integers(0, n_classes, n_examples)
    logits = (rng.normal(size=(epochs, n_examples, n_classes)) * 3).astype(np.float32)
    out = []
    for e in range(epochs):
        order = rng.permutation(n_examples)
        start = 0
        for size in [1, *rng.integers(1, 9, n_examples)]:  # includes batches of one
            b = order[start:start + int(size)]
            if len(b):
                out.append((ids[b], logits[e, b], labels[b], e))
            start += int(size)
    out.append((ids[:1], logits[0, :1], labels[:1], 0))  # a repeat: the last measurement wins
    return out


@pytest.mark.parametrize("flush_elements", [1, 40, 1 << 20])
@pytest.mark.parametrize("seed", [0, 1])
def test_deferred_tensor_path_gives_exactly_the_eager_numpy_results(monkeypatch, flush_elements, seed):
    monkeypatch.setattr(DynamicsRecorder, "_FLUSH_ELEMENTS", flush_elements)
    eager, deferred = DynamicsRecorder(), DynamicsRecorder()
    for ids, z, y, e in _batches(seed):
        eager.update(ids, z, y, epoch=e)
        deferred.update(torch.as_tensor(ids), torch.as_tensor(z), torch.as_tensor(y), epoch=e)
    with pytest.warns(UserWarning, match="more than once"):
        a = eager.to_table()
    with pytest.warns(UserWarning, match="more than once"):
        b = deferred.to_table()
    assert a.equals(b)
    assert eager.labels == deferred.labels


def test_string_ids_with_tensors_take_the_general_path():
    rec = DynamicsRecorder()
    rec.update(["b", "a"], torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 0]), epoch=0)
    rec.update(["c"], torch.tensor([5.0, -5.0]), torch.tensor([1]), epoch=1)  # batch of one, 1-D logits
    with pytest.raises(ValueError, match="NaN or inf"):  # not all tensors: checked at once
        rec.update(["d"], torch.tensor([[float("nan"), 0.0]]), [0], epoch=1)
    t = rec.to_table().to_pandas()
    assert t[S.EXAMPLE_ID].tolist() == ["a", "b", "c"]
    assert t[S.PRED].tolist() == [0, 1, 0]


def test_a_flush_larger_than_one_reduction_block_gives_the_eager_results():
    # 3 x 7000 rows wait together and are reduced in blocks of 8192 rows: same values
    rng = np.random.default_rng(3)
    z = (rng.normal(size=(3, 7000, 8)) * 3).astype(np.float32)
    y = rng.integers(0, 8, 7000)
    eager, deferred = DynamicsRecorder(), DynamicsRecorder()
    for e in range(3):
        eager.update(np.arange(7000), z[e], y, epoch=e)
        deferred.update(torch.arange(7000), torch.as_tensor(z[e]), torch.as_tensor(y), epoch=e)
    assert deferred.n_rows == 21000
    assert eager.to_table().equals(deferred.to_table())


@pytest.mark.parametrize("bad", ["nan", "label"])
def test_a_bad_row_in_a_later_reduction_block_drops_only_its_batch(bad):
    rng = np.random.default_rng(4)
    z = rng.normal(size=(3, 7000, 4)).astype(np.float32)
    y = rng.integers(0, 4, (3, 7000))
    rec = DynamicsRecorder()
    for e in range(3):
        zt, yt = torch.as_tensor(z[e]), torch.as_tensor(y[e])
        if e == 2:  # row 16400 of the waiting rows: in the third block of 8192
            zt[2400, 1] = float("nan") if bad == "nan" else zt[2400, 1]
            yt[2400] = 4 if bad == "label" else yt[2400]
        rec.update(torch.arange(7000) + 10 * e, zt, yt, epoch=e)
    match = "epoch 2 contain NaN.*example id 2420" if bad == "nan" else r"got 4 \(epoch 2, example id 2420\)"
    with pytest.raises(ValueError, match=match):
        rec.to_table()
    t = rec.to_table().to_pandas()
    assert sorted(set(t[S.EPOCH])) == [0, 1] and len(t) == 14000


@pytest.mark.parametrize(("dtype", "ids"), [
    (np.int8, np.arange(-128, 128)),  # the whole range of a narrow type
    (np.uint16, np.arange(65_000, 65_536)),
    (np.int64, np.arange(-300, 0)),
    (np.int64, np.arange(0, 10**12, 10**10)),  # sparse: sorted, not counted
])
def test_table_is_sorted_by_epoch_and_id_for_any_integer_ids(dtype, ids):
    rng = np.random.default_rng(5)
    ids = ids.astype(dtype)
    z = rng.normal(size=(3, len(ids), 3)).astype(np.float32)
    y = rng.integers(0, 3, len(ids))
    rec = DynamicsRecorder()
    want = {}
    for e in (2, 0, 1):  # epochs out of order as well
        order = rng.permutation(len(ids))
        for s in range(0, len(ids), 37):
            b = order[s:s + 37]
            rec.update(ids[b], z[e, b], y[b], epoch=e)
            vals = per_epoch_from_logits(z[e, b], y[b])[S.GOLD_PROB]
            want.update({(e, int(i)): float(v) for i, v in zip(ids[b], vals, strict=True)})
    t = rec.to_table().to_pandas()
    keys = sorted(want)
    assert list(zip(t[S.EPOCH].tolist(), t[S.EXAMPLE_ID].tolist(), strict=True)) == keys
    np.testing.assert_array_equal(t[S.GOLD_PROB].to_numpy(), np.array([want[k] for k in keys], np.float32))


def test_waiting_logits_keep_no_autograd_graph_alive():
    import gc
    import weakref

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(weakref.ref(o)))
    rec = DynamicsRecorder()
    for i in range(2):  # the second batch takes the fast path
        logits = model(torch.randn(5, 4))  # no backward: the graph holds the activations
        rec.update(torch.arange(5) + 5 * i, logits, torch.zeros(5, dtype=torch.long), epoch=0)
    del logits
    gc.collect()
    assert all(r() is None for r in seen)  # saved activations freed while the batches wait
    assert rec.n_rows == 10 and rec.to_table().num_rows == 10


# ---- recorded labels vs examples.parquet (regression) -----------------------------------------------


def _digits_batches(n_classes: int = 3, n: int = 60):
    from sklearn.datasets import load_digits

    d = load_digits(n_class=n_classes)
    x = torch.tensor(d.data[:n] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target[:n])
    torch.manual_seed(0)
    model = torch.nn.Linear(64, n_classes)
    return model(x).detach(), y


def test_save_refuses_examples_whose_labels_differ_from_the_recorded_ones(tmp_path):
    import pandas as pd

    logits, y = _digits_batches()
    rec = DynamicsRecorder()
    for epoch in range(2):
        rec.update(torch.arange(len(y)), logits, (y + 1) % 3, epoch=epoch)
    examples = pd.DataFrame({S.EXAMPLE_ID: np.arange(len(y)), S.SPLIT: "train", S.LABEL: y.numpy()})
    with pytest.raises(ValueError, match=r"labels given to `update` to match the `label` column of "
                                         r"`examples`, got 60 of 60 .*example 0"):
        rec.save(tmp_path / "run", examples=examples)
    assert not (tmp_path / "run" / S.RUN_JSON).exists()


def test_a_label_that_changes_between_epochs_is_refused():
    logits, y = _digits_batches()
    rec = DynamicsRecorder()
    rec.update(torch.arange(len(y)), logits, y, epoch=0)
    changed = y.clone()
    changed[5] = (changed[5] + 1) % 3
    rec.update(torch.arange(len(y)), logits, changed, epoch=1)
    with pytest.raises(ValueError, match=r"one label per example across epochs, got 1 example\(s\) "
                                         r"recorded with several \(first: example 5"):
        rec.save("never-written")


def test_analyze_refuses_dynamics_recorded_with_other_labels(tmp_path):
    # A run written by other means (here: examples.parquet replaced after saving) whose dynamics
    # were computed against other labels: gold_prob and correctness would describe different
    # classes. The margin/prediction pair gives it away.
    logits, y = _digits_batches()
    rec = DynamicsRecorder()
    for epoch in range(2):
        rec.update(torch.arange(len(y)), logits, (y + 1) % 3, epoch=epoch)
    run = rec.save(tmp_path / "run")
    examples = runstore.load_examples(run)
    examples[S.LABEL] = y.numpy()
    runstore.save_examples(run, examples)
    with pytest.raises(S.SchemaError, match=r"recorded with the labels of examples.parquet, got \d+ "
                                            r"example\(s\) whose recorded margin and prediction"):
        analyze_run(run)
    # the same run with matching labels analyses
    examples[S.LABEL] = ((y + 1) % 3).numpy()
    runstore.save_examples(run, examples)
    assert len(analyze_run(run)) == len(y)
