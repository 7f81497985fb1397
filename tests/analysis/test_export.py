"""Subset export: manifest round trip, CSV injection, curated training set, atomic writes, CLI."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis import export as E
from analysis import runstore
from analysis import schema as S
from analysis.cli import main
from analysis.export import (
    curate_training_set,
    export_subset,
    ids_digest,
    manifest_mask,
    to_csv_bytes,
)
from analysis.filters import FilterSpec, apply_filter
from analysis.flags import FLAG, NEW_LABEL, NOTE, FlagJournal
from analysis.pipeline import AnalyzeOptions, analyze_run
from analysis.synthetic import make_synthetic_run


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    run = make_synthetic_run(tmp_path_factory.mktemp("exp") / "run", n_examples=400, n_epochs=4,
                             n_classes=4, n_eval=30)
    table = analyze_run(run, AnalyzeOptions(ood=False), write=False)
    # A region-based diagnosis, so the test does not depend on the OOD stage.
    region = table[S.REGION].astype(str)
    table[S.DIAGNOSIS] = np.select(
        [region == S.EASY, region == S.AMBIGUOUS, region == S.HARD],
        ["clean", "ambiguous", "suspect_mislabeled"], default="unscored")
    table.loc[table[S.SPLIT] == "ood:far", S.DIAGNOSIS] = "suspect_ood"
    runstore.save_table(run, table)
    return run, runstore.load_table(run)


@pytest.fixture
def run(analysed: tuple[Path, pd.DataFrame], tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(analysed[0], dst)
    return dst


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- manifest ------------------------------------------------------------------------------------


def test_manifest_round_trip_reproduces_the_rows(run: Path, analysed: tuple[Path, pd.DataFrame]) -> None:
    table = analysed[1]
    journal = FlagJournal(run)
    journal.add_many(table[S.EXAMPLE_ID].iloc[:50], flag="ood")
    journal.add(int(table[S.EXAMPLE_ID].iloc[3]), note="seen")
    flags = journal.latest()
    spec = FilterSpec(splits=["train"], ranges={S.CONFIDENCE: (0.0, 0.6)}, flagged="unflagged")
    mask = apply_filter(table, spec, flags=flags)
    ids = table[S.EXAMPLE_ID].to_numpy()
    selection = list(ids[::3]) + [10**9]  # an id the table lacks selects nothing
    res = export_subset(run, table, mask, fmt="parquet", filter_spec=spec, selection_ids=selection,
                        name="round", context={"thresholds": {"confidence": 0.5}})
    m = json.loads(res.manifest_path.read_text())
    assert m == res.manifest
    assert m["context"] == {"thresholds": {"confidence": 0.5}}
    assert res.path == run / S.EXPORTS_DIR / "round.parquet"
    # Hashes: independent recomputation.
    assert m["output"]["sha256"] == _sha(res.path) == hashlib.sha256(res.data).hexdigest()
    assert m["source_run"]["table_sha256"] == _sha(run / S.TABLE_FILE)
    assert m["source_run"]["run_json_sha256"] == _sha(run / S.RUN_JSON)
    # Counts, computed here without the exporter.
    in_sel = np.isin(ids, np.asarray(selection[:-1]))
    want = mask & in_sel
    assert m["rows"] == {"table": len(table), "after_filter": int(mask.sum()),
                         "after_selection": int(want.sum()), "exported": int(want.sum())}
    assert m["selection"]["count"] == len(selection) and m["selection"]["ids"] == [int(v) for v in selection]
    assert m["selection"]["ids_sha256"] == ids_digest(selection)
    assert m["flags"] == {"journal_rows": 51, "examples_with_edits": 50}
    assert m["filter"]["description"] == spec.describe() and m["filter"]["reproduces_rows"] is True
    assert FilterSpec.from_dict(m["filter"]["spec"]) == spec
    # Re-applying the manifest to the table (as stored) gives the same rows.
    out = pq.read_table(res.path).to_pandas()
    again = manifest_mask(runstore.load_table(run), m, flags=FlagJournal(run).latest())
    assert out[S.EXAMPLE_ID].tolist() == ids[again].tolist() == ids[want].tolist()
    assert m["columns"] == out.columns.tolist()
    assert {FLAG, NEW_LABEL, NOTE} <= set(out.columns)


def test_large_selection_is_recorded_by_digest(run: Path, monkeypatch: pytest.MonkeyPatch,
                                               analysed: tuple[Path, pd.DataFrame]) -> None:
    table = analysed[1]
    monkeypatch.setattr(E, "MAX_LISTED_IDS", 10)
    sel = table[S.EXAMPLE_ID].iloc[5:25].tolist()
    res = export_subset(run, table, None, fmt="csv", selection_ids=sel, name="big")
    assert res.manifest["selection"]["ids"] is None
    expected = hashlib.sha256("".join(f"{i}\n" for i in sel).encode()).hexdigest()
    assert res.manifest["selection"]["ids_sha256"] == expected
    with pytest.raises(ValueError, match="only recorded by digest"):
        manifest_mask(table, res.manifest)


def test_mask_that_does_not_match_the_filter_is_reported(run: Path, analysed: tuple[Path, pd.DataFrame]) -> None:
    table = analysed[1]
    spec = FilterSpec(splits=["train"])
    mask = apply_filter(table, spec)
    mask[np.flatnonzero(mask)[0]] = False
    res = export_subset(run, table, mask, fmt="csv", filter_spec=spec, name="mismatch")
    assert res.manifest["filter"]["reproduces_rows"] is False
    assert res.n_rows == int(mask.sum())


def test_existing_files_are_not_overwritten(run: Path, analysed: tuple[Path, pd.DataFrame]) -> None:
    table = analysed[1]
    export_subset(run, table, None, fmt="csv", name="same")
    with pytest.raises(FileExistsError):
        export_subset(run, table, None, fmt="csv", name="same")
    res = export_subset(run, table.iloc[:3], None, fmt="csv", name="same", overwrite=True)
    assert res.n_rows == 3
    with pytest.raises(ValueError, match="plain file stem"):
        export_subset(run, table, None, fmt="csv", name="../escape")
    with pytest.raises(ValueError, match="`fmt` in"):
        export_subset(run, table, None, fmt="xlsx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="boolean array of shape"):
        export_subset(run, table, np.ones(3, dtype=bool), fmt="csv")


# ---- atomic writes -------------------------------------------------------------------------------


def test_failing_data_write_leaves_no_file(run: Path, analysed: tuple[Path, pd.DataFrame],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.write_bytes

    def half_then_fail(self: Path, data: bytes) -> int:
        real(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export_subset(run, analysed[1], None, fmt="parquet", name="fail")
    assert list((run / S.EXPORTS_DIR).iterdir()) == []  # no partial file, no temp file


def test_failing_manifest_write_removes_the_data_file(run: Path, analysed: tuple[Path, pd.DataFrame],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: Path, *args: object, **kwargs: object) -> int:
        raise OSError("no space for the manifest")

    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(OSError, match="manifest"):
        export_subset(run, analysed[1], None, fmt="csv", name="fail2")
    assert list((run / S.EXPORTS_DIR).iterdir()) == []


# ---- CSV -----------------------------------------------------------------------------------------


def _cells(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


@pytest.mark.parametrize("mixed_object_column", [False, True], ids=["arrow-writer", "pandas-writer"])
def test_csv_injection_is_neutralised(mixed_object_column: bool) -> None:
    df = pd.DataFrame({
        "text": ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", "safe",
                 "a=b", None],
        "num": [-1.5, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        "ints": [-1, 0, 1, 2, 3, 4, 5, 6, 7],
        "cat": pd.Categorical(["-x", "y", "=z", "y", "y", "y", "y", "y", "y"]),
    })
    if mixed_object_column:  # Arrow cannot hold it: the pandas writer is used
        df["obj"] = pd.Series([1, "=1", None, "ok", 2, 3, 4, 5, 6], dtype=object)
    rows = _cells(to_csv_bytes(df))
    assert rows[0] == ["text", "num", "ints", "cat"] + (["obj"] if mixed_object_column else [])
    assert all(len(r) == len(rows[0]) for r in rows)  # the CR inside a cell did not split a row
    text = [r[0] for r in rows[1:]]
    assert text == ["'=HYPERLINK(\"http://x\")", "'+1+1", "'-2+3", "'@SUM(A1)", "'\tcmd", "'\rcmd",
                    "safe", "a=b", ""]
    assert [float(r[1]) for r in rows[1:]] == df["num"].tolist()  # numbers untouched
    assert [r[1] for r in rows[1:]][0] == "-1.5" and [r[2] for r in rows[1:]][:2] == ["-1", "0"]
    assert [r[3] for r in rows[1:]][:3] == ["'-x", "y", "'=z"]
    if mixed_object_column:
        assert [r[4] for r in rows[1:]][:4] == ["1", "'=1", "", "ok"]
    # The input frame is not modified.
    assert df["text"].iloc[0].startswith("=")


def test_binary_columns_are_dropped_unless_asked() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00"
    df = pd.DataFrame({S.EXAMPLE_ID: [1, 2], S.IMAGE: [png, None], "path": ["a.png", "b.png"]})
    rows = _cells(to_csv_bytes(df))
    assert rows[0] == [S.EXAMPLE_ID, "path"]
    rows = _cells(to_csv_bytes(df, include_images=True))
    import base64

    assert rows[1][1] == base64.b64encode(png).decode() and rows[2][1] == ""


def test_export_drops_images_from_parquet_too(run: Path) -> None:
    table = pd.DataFrame({S.EXAMPLE_ID: [1, 2], S.SPLIT: ["train", "train"], S.IMAGE: [b"\x89PNG", b"x"]})
    res = export_subset(run, table, None, fmt="parquet", name="img")
    assert S.IMAGE not in pq.read_table(res.path).column_names
    assert res.manifest["dropped_columns"] == [S.IMAGE]
    res = export_subset(run, table, None, fmt="parquet", name="img2", include_images=True)
    assert pq.read_table(res.path).column(S.IMAGE).to_pylist() == [b"\x89PNG", b"x"]


def test_csv_export_bytes_match_the_file(run: Path, analysed: tuple[Path, pd.DataFrame]) -> None:
    table = analysed[1]
    mask = (table[S.SPLIT] == "test").to_numpy()
    res = export_subset(run, table, mask, fmt="csv", name="t")
    assert res.path.read_bytes() == res.data
    back = pd.read_csv(io.BytesIO(res.data))
    assert back[S.EXAMPLE_ID].tolist() == table.loc[mask, S.EXAMPLE_ID].tolist()
    np.testing.assert_allclose(back[S.CONFIDENCE], table.loc[mask, S.CONFIDENCE].to_numpy())


# ---- curated training set --------------------------------------------------------------------------


def _hand_table() -> pd.DataFrame:
    return pd.DataFrame({
        S.EXAMPLE_ID: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        S.SPLIT: ["train", "train", "train", "train", "train", "test", "train", "ood:far", "train",
                  "train", "train"],
        S.LABEL: pd.array([0, 1, 2, 0, 1, 0, 2, pd.NA, 2, 1, 0], dtype="Int64"),
        S.LABEL_NAME: ["cat", "dog", "fox", "cat", "dog", "cat", "fox", None, "fox", "dog", "cat"],
        S.DIAGNOSIS: ["clean", "suspect_mislabeled", "suspect_mislabeled", "clean", "suspect_ood",
                      "clean", "ambiguous", "suspect_ood", "suspect_mislabeled", "clean",
                      "suspect_ood"],
    })


def _hand_flags() -> pd.DataFrame:
    return pd.DataFrame({
        S.EXAMPLE_ID: [1, 2, 3, 6, 5, 8, 9, 10],
        FLAG: pd.Series([None, "keep", "mislabeled", None, None, None, "mislabeled", "ood"], dtype="str"),
        NEW_LABEL: pd.array([pd.NA, 0, pd.NA, 1, 2, 1, 0, 2], dtype="Int64"),
        NOTE: pd.Series([None] * 8, dtype="str"),
    })


def test_curated_training_set_by_hand() -> None:
    out = curate_training_set(_hand_table(), _hand_flags(), class_names=["cat", "dog", "fox"])
    # Dropped: 5, 7 not train; 1 suspect_mislabeled; 4 suspect_ood; 3 flagged mislabeled without
    # a relabel; 10 flagged ood (its relabel does not rescue it).
    # Kept: 0 clean; 2 suspect but flagged keep (relabelled to 0); 6 ambiguous, relabelled to 1;
    # 8 suspect relabelled to 1 (a relabel means "keep it with this label"); 9 flagged
    # mislabeled and relabelled to 0.
    assert out[S.EXAMPLE_ID].tolist() == [0, 2, 6, 8, 9]
    assert out[S.LABEL].tolist() == [0, 0, 1, 1, 0]
    assert out[S.GIVEN_LABEL].tolist() == [0, 2, 2, 2, 1]
    assert out[S.LABEL_NAME].tolist() == ["cat", "cat", "dog", "dog", "cat"]
    assert out.columns.tolist().index(S.GIVEN_LABEL) == out.columns.tolist().index(S.LABEL) + 1
    assert S.ORIGINAL_LABEL not in out.columns


def test_curated_options() -> None:
    table, flags = _hand_table(), _hand_flags()
    # Without relabels a relabel rescues nothing and labels stay as given.
    no_relabel = curate_training_set(table, flags, apply_relabels=False)
    assert no_relabel[S.EXAMPLE_ID].tolist() == [0, 2, 6]
    assert no_relabel[S.LABEL].tolist() == [0, 2, 2] and S.GIVEN_LABEL not in no_relabel
    keep_all = curate_training_set(table, flags, drop_diagnoses=(), drop_flags=())
    assert keep_all[S.EXAMPLE_ID].tolist() == [0, 1, 2, 3, 4, 6, 8, 9, 10]
    # given_label is there without any relabel too.
    plain = curate_training_set(table, None)
    assert plain[S.GIVEN_LABEL].tolist() == plain[S.LABEL].tolist() == [0, 0, 2, 1]
    # Without class names they come from the table's own label/label_name pairs.
    inferred = curate_training_set(table, flags)
    assert inferred[S.LABEL_NAME].tolist() == ["cat", "cat", "dog", "dog", "cat"]
    # An existing original_label column is carried through as it is; given_label still holds
    # the label as given.
    with_orig = table.assign(**{S.ORIGINAL_LABEL: [9] * len(table)})
    out = curate_training_set(with_orig, flags)
    assert out[S.ORIGINAL_LABEL].tolist() == [9] * 5
    assert out[S.GIVEN_LABEL].tolist() == [0, 2, 2, 2, 1]
    bad = flags.copy()
    bad.loc[bad[S.EXAMPLE_ID] == 6, NEW_LABEL] = 3
    with pytest.raises(ValueError, match=r"classes \[3\]"):
        curate_training_set(table, bad)
    with pytest.raises(TypeError, match="sequence of str"):
        curate_training_set(table, flags, drop_flags="ood")  # type: ignore[arg-type]


def test_curated_export_through_the_journal(run: Path, analysed: tuple[Path, pd.DataFrame]) -> None:
    table = analysed[1]
    train = table[table[S.SPLIT] == "train"]
    ids = train[S.EXAMPLE_ID].to_numpy()
    suspect = train[S.DIAGNOSIS].isin(E.DEFAULT_DROP_DIAGNOSES).to_numpy()
    keep_id, flagged_id, relabel_id = int(ids[suspect][0]), int(ids[~suspect][0]), int(ids[~suspect][1])
    j = FlagJournal(run)
    j.add(keep_id, flag="keep")
    j.add(flagged_id, flag="mislabeled")
    old = int(train.loc[train[S.EXAMPLE_ID] == relabel_id, S.LABEL].iloc[0])
    j.add(relabel_id, new_label=(old + 1) % 4)
    res = export_subset(run, table, None, fmt="parquet", curated=True, name="cur")
    out = pq.read_table(res.path).to_pandas()
    expected = set(ids[~suspect].tolist()) - {flagged_id} | {keep_id}
    assert set(out[S.EXAMPLE_ID].tolist()) == expected
    row = out[out[S.EXAMPLE_ID] == relabel_id].iloc[0]
    assert row[S.LABEL] == (old + 1) % 4 and row[S.LABEL_NAME] == f"class_{(old + 1) % 4}"
    assert row[S.GIVEN_LABEL] == old
    assert res.manifest["curated"]["enabled"] and res.manifest["curated"]["relabeled"] == 1
    assert res.manifest["rows"]["exported"] == len(expected)


def test_cli_curated_export_keeps_relabelled_rows(run: Path, analysed: tuple[Path, pd.DataFrame],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    table = analysed[1]
    train = table[table[S.SPLIT] == "train"]
    suspects = train[train[S.DIAGNOSIS] == "suspect_mislabeled"]
    clean = train[train[S.DIAGNOSIS] == "clean"]
    assert len(suspects) >= 2 and len(clean) >= 2
    relabel_only, flagged_relabel = suspects.iloc[0], clean.iloc[0]
    flagged_only, flagged_ood = clean.iloc[1], suspects.iloc[1]
    journal = FlagJournal(run)
    journal.add(int(relabel_only[S.EXAMPLE_ID]), new_label=(int(relabel_only[S.LABEL]) + 1) % 4)
    journal.add(int(flagged_relabel[S.EXAMPLE_ID]), flag="mislabeled",
                new_label=(int(flagged_relabel[S.LABEL]) + 2) % 4)
    journal.add(int(flagged_only[S.EXAMPLE_ID]), flag="mislabeled")
    journal.add(int(flagged_ood[S.EXAMPLE_ID]), flag="ood", new_label=0)
    assert main(["export", str(run), "--curated", "--format", "csv", "--name", "cur"]) == 0
    out = pd.read_csv(run / S.EXPORTS_DIR / "cur.csv").set_index(S.EXAMPLE_ID)
    # relabelled rows stay, with the new label and the label as given
    for row, shift in ((relabel_only, 1), (flagged_relabel, 2)):
        got = out.loc[int(row[S.EXAMPLE_ID])]
        assert got[S.LABEL] == (int(row[S.LABEL]) + shift) % 4
        assert got[S.GIVEN_LABEL] == int(row[S.LABEL])
        assert got[S.LABEL_NAME] == f"class_{(int(row[S.LABEL]) + shift) % 4}"
    # flagged mislabeled without a relabel, and flagged ood: dropped
    assert int(flagged_only[S.EXAMPLE_ID]) not in out.index
    assert int(flagged_ood[S.EXAMPLE_ID]) not in out.index
    # every other row keeps its label; given_label equals it
    untouched = out.drop(index=[int(relabel_only[S.EXAMPLE_ID]), int(flagged_relabel[S.EXAMPLE_ID])])
    assert (untouched[S.GIVEN_LABEL] == untouched[S.LABEL]).all()
    given = table.set_index(S.EXAMPLE_ID).loc[out.index, S.LABEL]
    assert out[S.GIVEN_LABEL].tolist() == given.astype(int).tolist()
    # the sample-style ground truth column is carried through as it was in the table
    if S.ORIGINAL_LABEL in table.columns:
        truth = table.set_index(S.EXAMPLE_ID).loc[out.index, S.ORIGINAL_LABEL]
        assert out[S.ORIGINAL_LABEL].tolist() == truth.tolist()


def test_zip_holds_the_data_and_its_manifest(run: Path, analysed: tuple[Path, pd.DataFrame]) -> None:
    import zipfile

    res = export_subset(run, analysed[1], None, fmt="csv", name="bundle")
    assert res.zip_name == "bundle.zip"
    with zipfile.ZipFile(io.BytesIO(res.zip_bytes())) as archive:
        assert sorted(archive.namelist()) == ["bundle.csv", "bundle.manifest.json"]
        data = archive.read("bundle.csv")
        manifest_bytes = archive.read("bundle.manifest.json")
    assert data == res.path.read_bytes()
    assert manifest_bytes == res.manifest_path.read_bytes() == res.manifest_bytes
    assert json.loads(manifest_bytes)["output"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_rows_fingerprint_changes_with_rows_and_parts() -> None:
    rows = np.zeros(1000, dtype=bool)
    rows[[3, 500]] = True
    base = E.rows_fingerprint(rows, journal_rows=2, scope="filter")
    assert base == E.rows_fingerprint(rows.copy(), scope="filter", journal_rows=2)
    flipped = rows.copy()
    flipped[999] = True  # the last bit of a partial byte counts
    assert E.rows_fingerprint(flipped, journal_rows=2, scope="filter") != base
    assert E.rows_fingerprint(rows, journal_rows=3, scope="filter") != base
    # the same bits with one more row are another table
    assert E.rows_fingerprint(np.append(rows, False), journal_rows=2, scope="filter") != base
    with pytest.raises(ValueError, match="1-D boolean"):
        E.rows_fingerprint(np.ones(3))


# ---- CLI -----------------------------------------------------------------------------------------


def test_cli_export_with_shorthands(run: Path, analysed: tuple[Path, pd.DataFrame],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    table = analysed[1]
    rc = main(["export", str(run), "--split", "train", "--region", f"{S.HARD},{S.AMBIGUOUS}",
               "--range", f"{S.CONFIDENCE}::0.5", "--format", "csv", "--name", "cli"])
    assert rc == 0
    assert "cli.csv" in capsys.readouterr().out
    want = table[(table[S.SPLIT] == "train") & table[S.REGION].isin([S.HARD, S.AMBIGUOUS])
                 & (table[S.CONFIDENCE] <= 0.5)][S.EXAMPLE_ID].tolist()
    got = pd.read_csv(run / S.EXPORTS_DIR / "cli.csv")[S.EXAMPLE_ID].tolist()
    assert got == want and len(want) > 0
    # Repeat it from its manifest, to another path.
    out = run.parent / "elsewhere" / "again.parquet"
    rc = main(["export", str(run), "--filter", str(run / S.EXPORTS_DIR / "cli.manifest.json"),
               "--out", str(out)])
    assert rc == 0 and (run.parent / "elsewhere" / "again.manifest.json").is_file()
    assert pq.read_table(out).column(S.EXAMPLE_ID).to_pylist() == want


def test_cli_export_filter_json_and_errors(run: Path, analysed: tuple[Path, pd.DataFrame],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    table = analysed[1]
    assert main(["export", str(run), "--filter", '{"splits": ["test"], "labels": [1]}', "--name", "j"]) == 0
    want = table[(table[S.SPLIT] == "test") & (table[S.LABEL] == 1)][S.EXAMPLE_ID].tolist()
    assert pq.read_table(run / S.EXPORTS_DIR / "j.parquet").column(S.EXAMPLE_ID).to_pylist() == want
    assert main(["export", str(run), "--filter", '{"bogus": 1}']) == 2
    assert "unknown keys" in capsys.readouterr().err
    assert main(["export", str(run), "--range", "x:1"]) == 2
    assert "COLUMN:LO:HI" in capsys.readouterr().err
    assert main(["export", str(run.parent / "missing")]) == 2


def test_csv_injection_in_string_dtype_and_headers() -> None:
    df = pd.DataFrame({"=cmd": pd.Series(["-1", "x", None, "@a"], dtype="str"),
                       "ok": pd.Series(["+", "y", "z", "w"], dtype="string")})
    rows = _cells(to_csv_bytes(df))
    assert rows == [["'=cmd", "ok"], ["'-1", "'+"], ["x", "y"], ["", "z"], ["'@a", "w"]]
