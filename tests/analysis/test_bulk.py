"""Bulk actions: planned by hand-checked rules, one transaction each, undone by appending."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import runstore
from analysis import schema as S
from analysis.bulk import BulkAction, apply_bulk, plan_bulk, undo_bulk
from analysis.flags import FLAG, NEW_LABEL, NOTE, FlagJournal, apply_flags
from analysis.pipeline import AnalyzeOptions, analyze_run
from analysis.synthetic import make_synthetic_run


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_synthetic_run(tmp_path_factory.mktemp("bulk") / "run", n_examples=200, n_epochs=3,
                             n_classes=4, n_eval=20)
    analyze_run(run, AnalyzeOptions(ood=False))
    return run


@pytest.fixture
def run(analysed: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(analysed, dest)
    return dest


def _hand_table() -> pd.DataFrame:
    return pd.DataFrame({
        S.EXAMPLE_ID: [10, 11, 12, 13, 14],
        S.LABEL: pd.array([0, 1, 2, 3, None], dtype="Int64"),
        S.FINAL_PRED: pd.array([0, 2, None, 1, 1], dtype="Int32"),
    })


def test_plans_by_hand() -> None:
    table = _hand_table()
    sel = [11, 12, 13, 14, 99, 11]  # 99 is not in the table; 11 twice
    plan = plan_bulk(table, sel, BulkAction("relabel_suggested"))
    # 11: 1 -> 2; 12: no suggestion; 13: 3 -> 1; 14: no given label, suggestion 1
    assert plan.edits == [{S.EXAMPLE_ID: 11, NEW_LABEL: 2}, {S.EXAMPLE_ID: 13, NEW_LABEL: 1},
                          {S.EXAMPLE_ID: 14, NEW_LABEL: 1}]
    assert (plan.n_selected, plan.n_skipped, len(plan)) == (4, 1, 3)
    plan = plan_bulk(table, [10, 11, 12], BulkAction("relabel", label=1))
    assert [e[S.EXAMPLE_ID] for e in plan.edits] == [10, 12] and plan.n_skipped == 1
    plan = plan_bulk(table, [10, 13], BulkAction("flag", flag="ood"))
    assert plan.edits == [{S.EXAMPLE_ID: 10, FLAG: "ood"}, {S.EXAMPLE_ID: 13, FLAG: "ood"}]
    plan = plan_bulk(table, [12], BulkAction("clear"))
    assert plan.edits == [{S.EXAMPLE_ID: 12, FLAG: None, NEW_LABEL: None}]
    with pytest.raises(ValueError, match="`flag` in"):
        BulkAction("flag", flag="bogus")
    with pytest.raises(ValueError, match="class index"):
        BulkAction("relabel", label=-2)
    with pytest.raises(ValueError, match="`kind` in"):
        BulkAction("delete")  # type: ignore[arg-type]


def _state(run: Path) -> pd.DataFrame:
    table = runstore.load_table(run)
    return apply_flags(table, FlagJournal(run).latest())[[S.EXAMPLE_ID, FLAG, NEW_LABEL, NOTE]]


def test_apply_is_one_transaction_and_undo_restores_the_state(run: Path) -> None:
    table = runstore.load_table(run)
    journal = FlagJournal(run)
    ids = table.loc[table[S.SPLIT] == "train", S.EXAMPLE_ID].to_numpy()[:60]
    # some earlier edits the undo must bring back exactly
    journal.add(int(ids[0]), flag="keep", note="seen")
    journal.add(int(ids[1]), new_label=3)
    journal.add(int(ids[2]), flag="ambiguous")
    journal.add(int(ids[2]), flag=None)
    before = _state(run)
    n_rows = journal.count()
    plan = plan_bulk(table, ids, BulkAction("relabel_suggested"))
    assert len(plan) > 0
    batch = apply_bulk(journal, plan, author="ann")
    assert len(batch) == len(plan) and journal.count() == n_rows + len(plan)
    after = _state(run).set_index(S.EXAMPLE_ID)
    suggested = table.set_index(S.EXAMPLE_ID)[S.FINAL_PRED]
    for edit in plan.edits:
        assert after.loc[edit[S.EXAMPLE_ID], NEW_LABEL] == suggested.loc[edit[S.EXAMPLE_ID]]
    restored, skipped = undo_bulk(journal, batch, author="ann")
    assert (restored, skipped) == (len(plan), [])
    pd.testing.assert_frame_equal(_state(run), before)
    assert journal.count() == n_rows + 2 * len(plan)  # history kept: nothing rewritten


def test_undo_leaves_examples_edited_afterwards(run: Path) -> None:
    table = runstore.load_table(run)
    journal = FlagJournal(run)
    ids = [int(v) for v in table[S.EXAMPLE_ID].to_numpy()[:5]]
    batch = apply_bulk(journal, plan_bulk(table, ids, BulkAction("flag", flag="ood")))
    journal.add(ids[2], flag="mislabeled", author="bob")
    restored, skipped = undo_bulk(journal, batch)
    assert (restored, skipped) == (4, [ids[2]])
    latest = journal.latest().set_index(S.EXAMPLE_ID)[FLAG]
    assert latest.loc[ids[2]] == "mislabeled"
    assert latest.drop(index=ids[2]).isna().all()


def test_a_bad_edit_writes_nothing(run: Path) -> None:
    journal = FlagJournal(run)
    with pytest.raises(ValueError, match="new_label"):
        journal.add_batch([{S.EXAMPLE_ID: 0, NEW_LABEL: 1}, {S.EXAMPLE_ID: 1, NEW_LABEL: 99}])
    with pytest.raises(ValueError, match="twice"):
        journal.add_batch([{S.EXAMPLE_ID: 0, FLAG: "ood"}, {S.EXAMPLE_ID: 0, FLAG: "keep"}])
    assert journal.count() == 0
    assert len(journal.add_batch([])) == 0 and np.isscalar(journal.count())
