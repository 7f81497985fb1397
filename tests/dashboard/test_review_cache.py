"""The per-run caches behind the queue, the Review list and the evidence panel give the same
answers as the plain computations they replace (a cache key that forgets an input would not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import evidence
from analysis import schema as S
from analysis.filters import FilterSpec
from dashboard import data as D
from dashboard import evidence_view as EV
from dashboard import review_queue as RQ
from tests.dashboard.runs import make_image_run


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> D.RunContext:
    run = make_image_run(tmp_path_factory.mktemp("cache") / "run", n_examples=400, n_eval=60)
    return D.build_context(run, spec=FilterSpec())


def test_ranked_rows_follow_the_candidates_and_the_direction(ctx: D.RunContext) -> None:
    assert ctx.table is not None
    t = ctx.table
    aum = t[S.AUM].to_numpy(dtype=np.float64, na_value=np.nan)
    rng = np.random.default_rng(0)
    for _ in range(3):  # different candidate sets of the same run must not share a cache entry
        cand = rng.random(len(t)) < 0.3
        for ascending in (True, False):
            got = RQ.ranked_rows(ctx, cand, by=S.AUM, ascending=ascending)
            rows = np.flatnonzero(cand)
            # independent order: sort by (missing last, value in the direction, position)
            vals = aum[rows]
            want = sorted(rows.tolist(), key=lambda r: (np.isnan(aum[r]),
                                                        (aum[r] if ascending else -aum[r]) if not np.isnan(aum[r]) else 0.0,
                                                        r))
            assert got.tolist() == want, (ascending, vals[:5])
            assert not got.flags.writeable  # shared between reruns: read-only


def test_equals_on_a_categorical_matches_string_comparison(ctx: D.RunContext) -> None:
    assert ctx.table is not None
    diag = ctx.table[S.DIAGNOSIS]
    assert isinstance(diag.dtype, pd.CategoricalDtype)
    for value in ("suspect_mislabeled", "suspect_ood", "no such value"):
        want = np.array([str(v) == value for v in diag.tolist()])
        assert RQ.equals(diag, value).tolist() == want.tolist()


def test_typical_examples_per_class_equal_the_full_scan(ctx: D.RunContext) -> None:
    assert ctx.table is not None and ctx.key is not None
    labels = ctx.table[S.LABEL].dropna().astype(int).unique().tolist()
    assert len(labels) >= 2
    for label in [*labels, 999]:
        got = EV._typical(ctx.key, label, EV.N_TYPICAL, ctx.table)
        want = evidence.typical_examples(ctx.table, label, n=EV.N_TYPICAL)
        assert got.tolist() == want.tolist(), label


def test_neighbours_from_the_cached_bank_equal_training_neighbors(ctx: D.RunContext) -> None:
    assert ctx.table is not None and ctx.key is not None
    t = ctx.table
    for split in (S.TRAIN_SPLIT, "test"):
        for eid in t.loc[t[S.SPLIT].astype(str) == split, S.EXAMPLE_ID].iloc[:3].tolist():
            got = EV._neighbours(ctx.key, str(ctx.run_dir), eid, split, 8)
            want = evidence.training_neighbors(Path(ctx.run_dir), eid, split, k=8)
            assert got is not None and want is not None
            pd.testing.assert_frame_equal(got, want)
