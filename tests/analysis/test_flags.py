"""The flags journal: append-only SQLite history, latest state, validation, concurrency."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis import runstore
from analysis import schema as S
from analysis.flags import (
    FLAG,
    FLAG_VALUES,
    NEW_LABEL,
    NOTE,
    UNCHANGED,
    FlagJournal,
    apply_flags,
)
from analysis.pipeline import AnalyzeOptions, analyze_run
from analysis.synthetic import make_synthetic_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    run = make_synthetic_run(tmp_path_factory.mktemp("run") / "run", n_examples=300, n_epochs=4,
                             n_classes=5)
    table = analyze_run(run, AnalyzeOptions(ood=False))
    return run, table


@pytest.fixture
def run(analysed_run: tuple[Path, pd.DataFrame], tmp_path: Path) -> Path:
    """A fresh copy of the analysed run (no journal yet)."""
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(analysed_run[0], dst, ignore=shutil.ignore_patterns(S.FLAGS_FILE + "*", S.EXPORTS_DIR))
    return dst


def _string_id_run(tmp_path: Path, ids: list[str]) -> Path:
    """A run with string ids, run.json with 3 classes and no table (no id check)."""
    run = tmp_path / "strrun"
    runstore.save_run_meta(run, runstore.RunMeta(class_names=["a", "b", "c"], n_epochs=1))
    runstore.save_examples(run, pd.DataFrame({S.EXAMPLE_ID: ids, S.LABEL: [0] * len(ids)}))
    return run


# ---- latest-state semantics -----------------------------------------------------------------------


def test_latest_takes_last_non_null_value_of_each_field(run: Path) -> None:
    j = FlagJournal(run)
    r1 = j.add(3, flag="mislabeled", new_label=1, note="looks like b", author="ann")
    r2 = j.add(3, note="second look", author="bob")  # flag and label unchanged
    r3 = j.add(5, flag="ood")
    r4 = j.add(5, flag=None)  # cleared
    r5 = j.add(7, flag="keep", new_label=2)
    r6 = j.add(7, new_label=None)  # relabel cleared, flag stays
    assert [r1, r2, r3, r4, r5, r6] == list(range(r1, r1 + 6))
    latest = j.latest().set_index(S.EXAMPLE_ID)
    assert list(latest.index) == [3, 5, 7]  # order of last edit
    assert latest.loc[3, FLAG] == "mislabeled"
    assert latest.loc[3, NEW_LABEL] == 1
    assert latest.loc[3, NOTE] == "second look"
    assert latest.loc[3, "author"] == "bob"
    assert pd.isna(latest.loc[5, FLAG])
    assert latest.loc[7, FLAG] == "keep"
    assert pd.isna(latest.loc[7, NEW_LABEL])
    assert j.count() == 6


def test_clear_flag_with_empty_string_and_reflag(run: Path) -> None:
    j = FlagJournal(run)
    j.add(1, flag="ambiguous")
    j.add(1, flag="")
    assert pd.isna(j.latest()[FLAG].iloc[0])
    j.add(1, flag="ood")
    assert j.latest()[FLAG].iloc[0] == "ood"


def test_note_cleared_by_empty_string(run: Path) -> None:
    j = FlagJournal(run)
    j.add(2, note="x")
    j.add(2, note="")
    assert pd.isna(j.latest()[NOTE].iloc[0])


_EDIT = st.fixed_dictionaries({
    "id": st.integers(0, 5),
    "flag": st.sampled_from([UNCHANGED, None, "", *FLAG_VALUES]),
    "new_label": st.sampled_from([UNCHANGED, None, 0, 1, 4]),
    "note": st.sampled_from([UNCHANGED, None, "", "a", "b"]),
})


def _reference_latest(edits: list[dict]) -> dict[int, dict]:
    """Fold the edits in order, by hand: the state a person expects to see."""
    state: dict[int, dict] = {}
    for e in edits:
        s = state.setdefault(e["id"], {"flag": None, "new_label": None, "note": None})
        if e["flag"] is not UNCHANGED:
            s["flag"] = e["flag"] or None
        if e["new_label"] is not UNCHANGED:
            s["new_label"] = e["new_label"]
        if e["note"] is not UNCHANGED:
            s["note"] = e["note"] or None
    return state


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(_EDIT, min_size=1, max_size=12))
def test_latest_matches_a_reference_fold(run: Path, edits: list[dict]) -> None:
    (run / S.FLAGS_FILE).unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(str(run / S.FLAGS_FILE) + suffix).unlink(missing_ok=True)
    j = FlagJournal(run)
    written = []
    for e in edits:
        if e["flag"] is UNCHANGED and e["new_label"] is UNCHANGED and e["note"] is UNCHANGED:
            with pytest.raises(ValueError, match="changes nothing"):
                j.add(e["id"], flag=e["flag"], new_label=e["new_label"], note=e["note"])
            continue
        j.add(e["id"], flag=e["flag"], new_label=e["new_label"], note=e["note"])
        written.append(e)
    expected = _reference_latest(written)
    got = j.latest().set_index(S.EXAMPLE_ID)
    assert sorted(got.index.tolist()) == sorted(expected)
    for eid, s in expected.items():
        row = got.loc[eid]
        for col in (FLAG, NEW_LABEL, NOTE):
            if s[col] is None:
                assert pd.isna(row[col]), (eid, col, row[col])
            else:
                assert row[col] == s[col], (eid, col)
    assert j.count() == len(written)


# ---- ids -----------------------------------------------------------------------------------------


def test_string_ids_keep_their_type_and_do_not_collide_with_ints(tmp_path: Path) -> None:
    run = _string_id_run(tmp_path, ["a", "1"])
    j = FlagJournal(run)
    j.add("1", flag="ood")
    j.add(1, flag="mislabeled")  # no table: not checked, and a different id than "1"
    j.add(np.int64(1), note="numpy int")
    latest = j.latest()
    assert latest[S.EXAMPLE_ID].tolist() == ["1", 1]
    assert [type(v) for v in latest[S.EXAMPLE_ID]] == [str, int]
    assert latest.set_index(S.EXAMPLE_ID).loc[1, NOTE] == "numpy int"
    assert j.history("1")[FLAG].tolist() == ["ood"]
    assert j.history(1)[FLAG].isna().tolist() == [False, True]


def test_latest_ids_join_the_table(run: Path, analysed_run: tuple[Path, pd.DataFrame]) -> None:
    table = analysed_run[1]
    j = FlagJournal(run)
    j.add_many(table[S.EXAMPLE_ID].iloc[[10, 20, 30]], flag="mislabeled")
    j.add(int(table[S.EXAMPLE_ID].iloc[20]), new_label=4, note="n")
    latest = j.latest()
    assert latest[S.EXAMPLE_ID].dtype == table[S.EXAMPLE_ID].dtype
    out = apply_flags(table, latest)
    assert len(out) == len(table) and list(out.index) == list(table.index)
    assert np.flatnonzero(out[FLAG].notna().to_numpy()).tolist() == [10, 20, 30]
    assert out[NEW_LABEL].iloc[20] == 4 and out[NEW_LABEL].isna().sum() == len(table) - 1
    assert out[NOTE].iloc[20] == "n"
    # The table's own columns are untouched and apply_flags replaces stale flag columns.
    again = apply_flags(out, latest.iloc[:0])
    assert again[FLAG].isna().all() and again.columns.tolist() == out.columns.tolist()


def test_string_table_ids_join(tmp_path: Path) -> None:
    table = pd.DataFrame({S.EXAMPLE_ID: pd.Series(["x", "y", "z"], dtype="str"), "v": [1, 2, 3]})
    latest = pd.DataFrame({S.EXAMPLE_ID: ["z"], FLAG: ["ood"], NEW_LABEL: pd.array([pd.NA], "Int64"),
                           NOTE: [None]})
    out = apply_flags(table, latest)
    assert out[FLAG].isna().tolist() == [True, True, False]


# ---- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"flag": "bogus"}, ValueError, "Expected `flag` in"),
        ({"new_label": 5}, ValueError, r"\[0, 5\)"),
        ({"new_label": -2}, ValueError, "Expected `new_label` in"),
        ({"new_label": True}, TypeError, "int class index"),
        ({"new_label": 1.0}, TypeError, "int class index"),
        ({"note": 3}, TypeError, "`note`"),
        ({}, ValueError, "changes nothing"),
    ],
)
def test_bad_edits_are_refused(run: Path, kwargs: dict, exc: type, match: str) -> None:
    j = FlagJournal(run)
    with pytest.raises(exc, match=match):
        j.add(0, **kwargs)
    assert j.count() == 0


def test_unknown_and_mistyped_ids_are_refused(run: Path) -> None:
    j = FlagJournal(run)
    with pytest.raises(ValueError, match=r"unknown: \[99999\]"):
        j.add(99999, flag="ood")
    with pytest.raises(ValueError, match="ids there are ints"):
        j.add("3", flag="ood")
    with pytest.raises(TypeError, match="int or a str"):
        j.add(3.0, flag="ood")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bool"):
        j.add(True, flag="ood")
    with pytest.raises(ValueError, match="64 bits"):
        j.add(2**64, flag="ood")
    # A batch with one bad id writes nothing.
    with pytest.raises(ValueError, match="unknown"):
        j.add_many([1, 2, 99999], flag="ood")
    assert j.count() == 0
    assert FlagJournal(run, check_ids=False).add(99999, flag="ood") > 0


def test_add_many_is_one_batch(run: Path) -> None:
    j = FlagJournal(run)
    assert j.add_many(np.array([4, 5, 6, 5]), flag="ood", note="batch", author="me") == 3
    h = j.history()
    assert h[S.EXAMPLE_ID].tolist() == [4, 5, 6]
    assert h["at"].nunique() == 1 and set(h["author"]) == {"me"}
    assert j.add_many([], flag="ood") == 0


# ---- storage -------------------------------------------------------------------------------------


def test_reading_without_a_journal_creates_nothing(run: Path) -> None:
    j = FlagJournal(run)
    assert j.count() == 0 and j.latest().empty and j.history().empty
    assert list(j.latest().columns) == [S.EXAMPLE_ID, FLAG, NEW_LABEL, NOTE, "author", "at"]
    assert not (run / S.FLAGS_FILE).exists()


def test_durable_across_instances_and_processes(run: Path) -> None:
    row = FlagJournal(run).add(8, flag="ambiguous", note="persist me")
    fresh = FlagJournal(run)
    assert fresh.history()["row_id"].tolist() == [row]
    # Another process reads it with plain sqlite3 (no datamap), as the docs describe.
    code = (
        "import sqlite3, sys; con = sqlite3.connect(sys.argv[1]); "
        "print(con.execute('SELECT example_id, flag, note FROM edits').fetchall())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(run / S.FLAGS_FILE)],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[(8, 'ambiguous', 'persist me')]"
    con = sqlite3.connect(run / S.FLAGS_FILE)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_history_is_append_only(run: Path) -> None:
    j = FlagJournal(run)
    j.add(1, flag="ood", note="first")
    before = j.history()
    j.add(1, flag=None)
    j.add(2, new_label=0)
    after = j.history()
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)
    assert after["row_id"].is_monotonic_increasing and len(after) == 3
    # The raw encoding of a clear is kept: '' for the flag.
    assert after[FLAG].tolist()[:2] == ["ood", ""]
    con = sqlite3.connect(run / S.FLAGS_FILE)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("UPDATE edits SET flag = 'keep'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM edits")
    con.close()
    assert j.count() == 3


def test_corrupt_file_gives_a_clear_error(run: Path) -> None:
    (run / S.FLAGS_FILE).write_bytes(b"this is not an sqlite database at all" * 200)
    with pytest.raises(S.SchemaError, match="not a readable flags journal"):
        FlagJournal(run)


def test_foreign_sqlite_file_is_refused(run: Path) -> None:
    con = sqlite3.connect(run / S.FLAGS_FILE)
    con.execute("CREATE TABLE something (x)")
    con.commit()
    con.close()
    with pytest.raises(S.SchemaError, match="not a flags journal"):
        FlagJournal(run)


def test_missing_run_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FlagJournal(tmp_path / "nope")


# ---- concurrency ---------------------------------------------------------------------------------


def _writer(run_dir: str, start: int, n: int, tag: str) -> None:
    j = FlagJournal(run_dir)
    for i in range(n):
        j.add(start + i, flag="ood", note=tag, author=tag)


def test_a_first_edit_waits_while_another_writer_holds_the_new_journal(run: Path) -> None:
    """Switching a new journal to WAL mode does not wait for SQLite's lock by itself: two first
    edits at once used to fail at once with "database is locked"."""
    other = sqlite3.connect(run / S.FLAGS_FILE, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock of a file not yet in WAL mode
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    try:
        FlagJournal(run).add(7, flag="ood")
    finally:
        release.join()
        other.close()
    latest = FlagJournal(run).latest()
    assert latest[S.EXAMPLE_ID].tolist() == [7]


def test_concurrent_writers_from_processes_and_threads(run: Path) -> None:
    n = 60
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(run), k * n, n, f"p{k}")) for k in range(2)]
    threads = [threading.Thread(target=_writer, args=(str(run), 150 + k * 20, 20, f"t{k}"))
               for k in range(2)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    j = FlagJournal(run)
    h = j.history()
    assert len(h) == 2 * n + 40 == j.count()
    assert h["row_id"].is_unique
    for tag, ids in (("p0", range(0, n)), ("p1", range(n, 2 * n)), ("t0", range(150, 170)),
                     ("t1", range(170, 190))):
        mine = h[h["author"] == tag]
        # Each writer's own edits are all there, in its own order.
        assert mine[S.EXAMPLE_ID].tolist() == list(ids)
    assert len(j.latest()) == 2 * n + 40


def test_documented_sql_gives_the_latest_state(run: Path) -> None:
    """The plain-SQL reading in docs/review-and-export.md agrees with FlagJournal.latest()."""
    doc = (REPO / "docs" / "review-and-export.md").read_text()
    start = doc.index("SELECT e.example_id")
    query = doc[start: doc.index(";", start)]
    j = FlagJournal(run)
    j.add(1, flag="ood", new_label=2, note="a")
    j.add(1, flag="")
    j.add(2, new_label=3)
    j.add(2, new_label=None, note="b")
    j.add(3, flag="keep")
    con = sqlite3.connect(run / S.FLAGS_FILE)
    got = sorted(con.execute(query).fetchall())
    con.close()
    latest = j.latest()
    want = sorted(
        (int(r.example_id), None if pd.isna(r.flag) else r.flag,
         None if pd.isna(r.new_label) else int(r.new_label), None if pd.isna(r.note) else r.note)
        for r in latest.itertuples()
    )
    assert got == want == [(1, None, 2, "a"), (2, None, None, "b"), (3, "keep", None, None)]


def test_acknowledged_edit_survives_a_killed_writer(run: Path) -> None:
    """A process killed (SIGKILL) right after add() returned: the edit is in the journal."""
    code = (
        "import os, signal, sys; from analysis.flags import FlagJournal; "
        "row = FlagJournal(sys.argv[1]).add(11, flag='ood', note='before the crash'); "
        "print(row, flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == -9, proc.stderr
    row = int(proc.stdout.strip())
    h = FlagJournal(run).history(11)
    assert h["row_id"].tolist() == [row] and h[NOTE].tolist() == ["before the crash"]



def test_an_edit_on_a_stale_view_is_saved_and_reports_the_edit_in_between(run: Path) -> None:
    # Two editors (two journal objects, as two dashboard sessions) read example 5 at once.
    alice, bob = FlagJournal(run), FlagJournal(run)
    assert alice.last_edit_id(5) == 0
    first = alice.add(5, note="first look")
    seen_by_alice = alice.last_edit_id(5)
    seen_by_bob = bob.last_edit_id(5)
    assert seen_by_alice == seen_by_bob == first
    # Bob saves first; Alice, on her older view, saves a flag and a relabel.
    bob_saved = bob.add_checked(5, seen=seen_by_bob, flag="ood", author="bob")
    assert not bob_saved.concurrent and bob_saved.row_id > first
    alice_saved = alice.add_checked(5, seen=seen_by_alice, flag="mislabeled", new_label=2, author="alice")
    assert alice_saved.concurrent
    assert alice_saved.intervening["row_id"].tolist() == [bob_saved.row_id]
    assert alice_saved.intervening["author"].tolist() == ["bob"]
    assert alice_saved.intervening["flag"].tolist() == ["ood"]
    # Both edits stay in the history, in commit order; the later one wins per field.
    hist = alice.history(5)
    assert hist["row_id"].tolist() == [first, bob_saved.row_id, alice_saved.row_id]
    assert hist["flag"].tolist()[1:] == ["ood", "mislabeled"]
    latest = alice.latest().set_index(S.EXAMPLE_ID).loc[5]
    assert (latest[FLAG], latest[NEW_LABEL], latest[NOTE]) == ("mislabeled", 2, "first look")
    assert alice.last_edit_id(5) == alice_saved.row_id
    state = bob.current(5)
    assert (state.flag, state.new_label, state.note) == ("mislabeled", 2, "first look")
    assert state.last_edit_id == alice_saved.row_id
    # Edits of other examples are not "in between".
    alice.add(6, flag="keep")
    again = alice.add_checked(5, seen=alice_saved.row_id, note="checked")
    assert not again.concurrent
    with pytest.raises(ValueError, match="`seen`"):
        alice.add_checked(5, seen=-1, note="x")
    with pytest.raises(ValueError, match="changes nothing"):
        alice.add_checked(5, seen=0)
    assert alice.last_edit_id(999) == 0
