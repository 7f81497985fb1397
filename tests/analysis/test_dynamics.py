"""Training-dynamics metrics: hand-computed golden values, the original code, properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import softmax

from analysis import schema as S
from analysis.dynamics import (
    RegionThresholds,
    assign_regions,
    compute_aum,
    compute_confidence,
    compute_correctness,
    compute_dynamics_metrics,
    compute_forgetting,
    compute_variability,
    forgetting_reference,
    per_epoch_from_logits,
    pivot_dynamics,
)
from analysis.schema import SchemaError

from .reference_cartography import compute_forgetfulness, reference_loop_from_logits


def _long(logits: np.ndarray, labels: np.ndarray, ids=None, epochs=None) -> pa.Table:
    n_epochs, n = logits.shape[:2]
    ids = np.arange(n) if ids is None else np.asarray(ids)
    epochs = np.arange(n_epochs) if epochs is None else np.asarray(epochs)
    rows = []
    for k, e in enumerate(epochs):
        v = per_epoch_from_logits(logits[k], labels)
        rows.append(pd.DataFrame({S.EXAMPLE_ID: ids, S.EPOCH: e, **v}))
    return pa.Table.from_pandas(pd.concat(rows, ignore_index=True), preserve_index=False)


# ---- golden values, by hand --------------------------------------------------------------------


def test_per_epoch_values_by_hand():
    # logits [0, ln 3] for label 1: p = [1/4, 3/4]
    out = per_epoch_from_logits(np.array([[0.0, np.log(3.0)]]), np.array([1]))
    assert out[S.GOLD_PROB][0] == pytest.approx(0.75)
    assert out[S.MARGIN][0] == pytest.approx(np.log(3.0))
    assert out[S.PRED][0] == 1
    assert out[S.LOSS][0] == pytest.approx(-np.log(0.75))
    # el2n = ||(0.25, -0.25)|| = sqrt(0.125)
    assert out[S.EL2N][0] == pytest.approx(np.sqrt(0.125))
    # three classes, gold is not the max: margin = z_gold - max other = 1 - 3
    out = per_epoch_from_logits(np.array([[3.0, 1.0, 2.0]]), np.array([1]))
    assert out[S.MARGIN][0] == pytest.approx(-2.0)
    assert out[S.PRED][0] == 0


def test_metrics_by_hand():
    gp = np.array([[0.2, 0.9], [0.4, 0.9], [0.9, 0.3]])
    # example 0: mean 0.5, deviations (-.3, -.1, .4) -> var = (.09+.01+.16)/3
    np.testing.assert_allclose(compute_confidence(gp), [0.5, 0.7])
    np.testing.assert_allclose(compute_variability(gp), [np.sqrt(0.26 / 3), np.sqrt(0.08)])
    correct = np.array([[0, 1], [1, 1], [0, 0]], bool)
    np.testing.assert_allclose(compute_correctness(correct), [1 / 3, 2 / 3])
    np.testing.assert_array_equal(compute_correctness(correct, as_count=True), [1, 2])
    f, never = compute_forgetting(correct)
    assert f.tolist() == [1, 1] and never.tolist() == [False, False]
    margin = np.array([[-1.0, 2.0], [1.0, 2.0], [3.0, -1.0]])
    np.testing.assert_allclose(compute_aum(margin), [1.0, 1.0])
    np.testing.assert_allclose(compute_aum(margin, skip_first_epoch=True), [2.0, 0.5])


def test_forgetting_sequences():
    # columns are examples: learnt-forgot-learnt-forgot, never, always, learnt late
    seqs = [[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]]
    correct = np.array(seqs, bool).T
    f, never = compute_forgetting(correct)
    assert f.tolist() == [2, 0, 0, 0]
    assert never.tolist() == [False, True, False, False]
    assert forgetting_reference(correct).tolist() == [compute_forgetfulness(s) for s in seqs]


def test_missing_epochs_rule():
    # Example 1 is absent at epoch 1: scored over epochs {0, 2}, forgetting compares 0 -> 2.
    gp = np.array([[0.2, 0.8], [0.4, np.nan], [0.9, 0.1]])
    obs = np.array([[1, 1], [1, 0], [1, 1]], bool)
    np.testing.assert_allclose(compute_confidence(gp, obs), [0.5, 0.45])
    np.testing.assert_allclose(compute_variability(gp, obs), [np.std([0.2, 0.4, 0.9]), 0.35])
    correct = np.array([[0, 1], [1, 0], [0, 0]], bool)
    np.testing.assert_allclose(compute_correctness(correct, obs), [1 / 3, 0.5])
    f, never = compute_forgetting(correct, obs)
    assert f.tolist() == [1, 1]
    assert never.tolist() == [False, False]


def test_pivot_handles_missing_and_shuffled_rows():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 5, 4))
    labels = rng.integers(0, 4, 5)
    full = _long(logits, labels).to_pandas()
    shuffled = full.sample(frac=1.0, random_state=3)
    dropped = shuffled[~((shuffled[S.EXAMPLE_ID] == 2) & (shuffled[S.EPOCH] == 1))]
    dense = pivot_dynamics(pa.Table.from_pandas(dropped, preserve_index=False), np.arange(5), labels)
    assert not dense.observed[1, 2] and dense.observed.sum() == 14
    ref = softmax(logits, axis=-1)[:, np.arange(5), labels]
    np.testing.assert_allclose(dense.gold_prob[dense.observed], ref[dense.observed], rtol=1e-6)
    m = compute_dynamics_metrics(dense)
    assert m[S.N_EPOCHS_SEEN].tolist() == [3, 3, 2, 3, 3]
    np.testing.assert_allclose(m[S.CONFIDENCE][2], ref[[0, 2], 2].mean(), rtol=1e-6)


def test_pivot_errors():
    logits = np.random.default_rng(0).normal(size=(2, 3, 2))
    labels = np.array([0, 1, 0])
    tab = _long(logits, labels)
    with pytest.raises(SchemaError, match="not in examples.parquet"):
        pivot_dynamics(tab, np.array([0, 1]), np.array([0, 1]))
    dup = pa.concat_tables([tab, tab.slice(0, 1)])
    with pytest.raises(SchemaError, match="more than once"):
        pivot_dynamics(dup, np.arange(3), labels, on_duplicate="error")
    with pytest.warns(UserWarning, match="Keeping the first"):
        pivot_dynamics(dup, np.arange(3), labels)
    bad = tab.to_pandas()
    bad.loc[4, S.GOLD_PROB] = np.nan
    with pytest.raises(SchemaError, match="NaN or inf"):
        pivot_dynamics(pa.Table.from_pandas(bad), np.arange(3), labels)
    with pytest.raises(SchemaError, match="no label"):
        pivot_dynamics(tab, np.arange(3), np.array([0, -1, 0]))


def test_per_epoch_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN or inf"):
        per_epoch_from_logits(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
        per_epoch_from_logits(np.array([[0.0, 1.0]]), np.array([2]))
    with pytest.raises(ValueError, match="shape"):
        per_epoch_from_logits(np.zeros((3, 2)), np.array([0, 1]))


def test_regions_follow_thresholds():
    conf = np.array([0.9, 0.9, 0.2, 0.6, np.nan])
    var = np.array([0.05, 0.3, 0.05, 0.1, np.nan])
    assert assign_regions(conf, var).tolist() == [S.EASY, S.AMBIGUOUS, S.HARD, S.EASY, S.NO_DYNAMICS]
    strict = RegionThresholds(confidence=0.7, variability=0.08)
    assert assign_regions(conf, var, strict).tolist() == [S.EASY, S.AMBIGUOUS, S.HARD, S.AMBIGUOUS, S.NO_DYNAMICS]
    with pytest.raises(ValueError, match="variability threshold"):
        RegionThresholds(variability=0.7)


# ---- against the original code's definitions on a real logged run ------------------------------------


def test_matches_original_loop_on_real_run(digits_logged_logits):
    logits, labels = digits_logged_logits["logits"], digits_logged_logits["labels"]
    dense = pivot_dynamics(_long(logits, labels), np.arange(logits.shape[1]), labels)
    ours = compute_dynamics_metrics(dense)
    ref = reference_loop_from_logits(logits, labels)
    np.testing.assert_allclose(ours[S.CONFIDENCE], ref["confidence"], atol=1e-6)
    np.testing.assert_allclose(ours[S.VARIABILITY], ref["variability"], atol=1e-6)
    np.testing.assert_array_equal(ours[S.CORRECT_COUNT], ref["correctness"])
    np.testing.assert_allclose(ours[S.CORRECTNESS], ref["correctness"] / logits.shape[0])
    # The flipped labels are what the data map should surface: far lower AUM than clean ones.
    noisy = labels != digits_logged_logits["true_labels"]
    assert ours[S.AUM][noisy].mean() < ours[S.AUM][~noisy].mean() - 1.0


# ---- properties ------------------------------------------------------------------------------------

logit_arrays = hnp.arrays(
    np.float64, hnp.array_shapes(min_dims=3, max_dims=3, min_side=2, max_side=6),
    elements=st.floats(-20, 20, allow_nan=False, width=64),
)


@settings(max_examples=60, deadline=None)
@given(logit_arrays, st.integers(0, 2**31 - 1), st.floats(-50, 50))
def test_properties(logits, seed, shift):
    n_epochs, n, k = logits.shape
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    dense = pivot_dynamics(_long(logits, labels), np.arange(n), labels)
    m = compute_dynamics_metrics(dense)
    assert ((m[S.CONFIDENCE] >= 0) & (m[S.CONFIDENCE] <= 1)).all()
    assert ((m[S.VARIABILITY] >= 0) & (m[S.VARIABILITY] <= 0.5 + 1e-9)).all()
    assert ((m[S.CORRECTNESS] >= 0) & (m[S.CORRECTNESS] <= 1)).all()
    # adding a constant to every logit changes no metric
    shifted = compute_dynamics_metrics(pivot_dynamics(_long(logits + shift, labels), np.arange(n), labels))
    for col in (S.CONFIDENCE, S.VARIABILITY, S.AUM, S.EL2N):
        np.testing.assert_allclose(shifted[col], m[col], atol=2e-5)
    # permuting examples permutes the outputs
    perm = rng.permutation(n)
    permuted = compute_dynamics_metrics(
        pivot_dynamics(_long(logits[:, perm], labels[perm], ids=perm), np.arange(n), labels)
    )
    for col in (S.CONFIDENCE, S.VARIABILITY, S.CORRECT_COUNT, S.AUM):
        np.testing.assert_allclose(permuted[col], m[col], rtol=1e-6)


def test_dynamics_from_logits_equals_pivoted_long_table(digits_logged_logits):
    from analysis.dynamics import dynamics_from_logits

    logits, labels = digits_logged_logits["logits"], digits_logged_logits["labels"]
    a = compute_dynamics_metrics(dynamics_from_logits(logits, labels, chunk_size=100))
    b = compute_dynamics_metrics(pivot_dynamics(_long(logits, labels), np.arange(logits.shape[1]), labels))
    pd.testing.assert_frame_equal(a, b)


# ---- EL2N in float32 (regression: it cancelled to 0 for confidently learned rows) ------------------


def _el2n_exact(logits, labels):
    """float64 reference, the definition ||softmax(z) - onehot(y)||_2 term by term."""
    z = np.asarray(logits, np.float64)
    p = softmax(z, axis=-1)
    onehot = np.eye(z.shape[-1])[labels]
    return np.sqrt(((p - onehot) ** 2).sum(-1))


def test_el2n_of_a_confident_float32_row_by_hand():
    # z = (10, 0, 0, 0), y = 0: p_k = e^-10 / (1 + 3 e^-10) for k != 0, 1 - p_0 = 3 p_k,
    # so EL2N = sqrt(3 p_k^2 + 9 p_k^2) = sqrt(12) e^-10 / (1 + 3 e^-10) = 1.5725e-4.
    expected = np.sqrt(12.0) * np.exp(-10.0) / (1.0 + 3.0 * np.exp(-10.0))
    got = per_epoch_from_logits(np.array([[10.0, 0, 0, 0]], np.float32), np.array([0]))[S.EL2N]
    assert got.dtype == np.float32
    assert got[0] == pytest.approx(expected, rel=1e-5)


def test_el2n_float32_ranks_confident_rows_like_the_exact_value():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 10)).astype(np.float32)
    y = rng.integers(0, 10, 2000)
    z[np.arange(2000), y] += rng.uniform(6, 14, 2000).astype(np.float32)  # learned rows
    got = per_epoch_from_logits(z, y)[S.EL2N]
    exact = _el2n_exact(z, y)
    np.testing.assert_allclose(got, exact, rtol=1e-4)
    assert spearmanr(got, exact).statistic > 0.9999


def test_recorder_el2n_of_a_confident_row():
    torch = pytest.importorskip("torch")
    from analysis.recorder import DynamicsRecorder

    rec = DynamicsRecorder()
    rec.update(torch.tensor([0, 1]), torch.tensor([[10.0, 0, 0, 0], [0.0, 12, 1, -3]]),
               torch.tensor([0, 1]), epoch=0)
    t = rec.to_table().to_pandas()
    exact = _el2n_exact([[10.0, 0, 0, 0], [0.0, 12, 1, -3]], np.array([0, 1]))
    np.testing.assert_allclose(t[S.EL2N].to_numpy(), exact, rtol=1e-5)
