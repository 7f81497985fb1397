"""Hostile run files (run.json, examples.parquet, dynamics, ids files, table.parquet): one line
naming the file and what is wrong, never a traceback or a silently wrong table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import runstore
from analysis import schema as S

from .conftest import copy_sample_run, tree_state, write_logs


@pytest.fixture
def small_run(tmp_path, cli):
    """An imported (not yet analysed) run of 12 examples over 3 epochs and 3 classes."""
    assert cli("import-cartography", write_logs(tmp_path / "logs"), tmp_path / "run").code == 0
    return tmp_path / "run"


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("changes, mention", [
    ({"extra": "oops"}, "`extra`"),
    ({"class_names": ["a", 1, None]}, "`class_names`"),
    ({"n_epochs": True}, "`n_epochs`"),
    ({"schema_version": [1]}, "schema_version"),
    ({"task": {"x": 1}}, "`task`"),
    ({"source": ["x"]}, "`source`"),
])
def test_run_json_fields_of_the_wrong_type(small_run, cli, changes, mention):
    _edit_json(small_run / S.RUN_JSON, **changes)
    cli("analyze", small_run, "--no-ood").one_line_error("run.json", mention)


def test_run_json_nested_too_deep(small_run, cli):
    (small_run / S.RUN_JSON).write_text("[" * 100000 + "]" * 100000)
    cli("analyze", small_run, "--no-ood").one_line_error("run.json")


def _rewrite_examples(run, **columns):
    df = pd.read_parquet(run / S.EXAMPLES_FILE)
    for k, v in columns.items():
        df[k] = v
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, run / S.EXAMPLES_FILE)


def test_example_id_stored_as_lists(small_run, cli):
    _rewrite_examples(small_run, example_id=[[i] for i in range(12)])
    cli("analyze", small_run, "--no-ood").one_line_error("examples.parquet", "ints or strings")


def test_null_split_values(small_run, cli):
    _rewrite_examples(small_run, split=["train"] * 10 + [None, None])
    cli("analyze", small_run, "--no-ood").one_line_error("examples.parquet", "`split`", "example_id 10")


def _rewrite_dynamics(run, column, values):
    shard = next((run / S.DYNAMICS_DIR).glob("*.parquet"))
    table = pq.read_table(shard)
    i = table.column_names.index(column)
    pq.write_table(table.set_column(i, column, pa.array(values)), shard)
    return table


def test_gold_prob_outside_0_1(small_run, cli):
    table = pq.read_table(next((small_run / S.DYNAMICS_DIR).glob("*.parquet")))
    values = table.column(S.GOLD_PROB).to_numpy().astype(np.float32)
    values[5] = 7.5
    _rewrite_dynamics(small_run, S.GOLD_PROB, values)
    eid, epoch = table.column(S.EXAMPLE_ID)[5].as_py(), table.column(S.EPOCH)[5].as_py()
    cli("analyze", small_run, "--no-ood").one_line_error(
        "gold_prob", "7.5", f"example {eid!r} at epoch {epoch}", "[0, 1]")


def test_fractional_pred(small_run, cli):
    table = pq.read_table(next((small_run / S.DYNAMICS_DIR).glob("*.parquet")))
    values = table.column(S.PRED).to_numpy().astype(np.float64)
    values[3] = 1.5
    _rewrite_dynamics(small_run, S.PRED, values)
    cli("analyze", small_run, "--no-ood").one_line_error("`pred`", "1.5", "integers")


def test_nan_gold_prob_names_example_and_epoch(small_run, cli):
    table = pq.read_table(next((small_run / S.DYNAMICS_DIR).glob("*.parquet")))
    values = table.column(S.GOLD_PROB).to_numpy().astype(np.float64)
    values[7] = np.nan
    _rewrite_dynamics(small_run, S.GOLD_PROB, pd.array(values, dtype="Float64"))  # NaN -> null
    eid, epoch = table.column(S.EXAMPLE_ID)[7].as_py(), table.column(S.EPOCH)[7].as_py()
    cli("analyze", small_run, "--no-ood").one_line_error("gold_prob", f"example {eid!r} at epoch {epoch}")


def test_duplicate_id_in_a_features_ids_file(tmp_path, cli):
    run = copy_sample_run(tmp_path / "run")
    ids_path = run / S.FEATURES_DIR / "test.ids.parquet"
    ids = pq.read_table(ids_path)
    col = ids.column(S.EXAMPLE_ID).to_pylist()
    col[0] = col[1]
    pq.write_table(ids.set_column(0, S.EXAMPLE_ID, pa.array(col)), ids_path)
    before = runstore.load_table(run)
    cli("analyze", run, "--projection", "none").one_line_error("test.ids.parquet", "unique")
    pd.testing.assert_frame_equal(runstore.load_table(run), before)  # the old table stays


@pytest.fixture
def analysed(tmp_path, small_run, cli):
    assert cli("analyze", small_run, "--no-ood").code == 0
    return small_run


def _rewrite_table(run, drop=(), **columns):
    df = pd.read_parquet(run / S.TABLE_FILE).drop(columns=list(drop))
    for k, v in columns.items():
        df[k] = v
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), run / S.TABLE_FILE)


@pytest.mark.parametrize("column", [S.REGION, S.N_EPOCHS_SEEN, S.AUM])
def test_summary_of_a_table_without_an_optional_column(analysed, cli, column):
    _rewrite_table(analysed, drop=[column])
    res = cli("summary", analysed)
    if column == S.REGION:
        res.one_line_error("table.parquet", "`region`", "datamap analyze")
    else:
        assert res.code == 0 and "regions:" in res.out, res


@pytest.mark.parametrize("column", [S.EXAMPLE_ID, S.SPLIT])
def test_table_without_a_required_column(analysed, cli, column):
    _rewrite_table(analysed, drop=[column])
    cli("summary", analysed).one_line_error("table.parquet", column)
    cli("export", analysed).one_line_error("table.parquet", column)


def test_duplicate_ids_in_the_table_are_not_exported(analysed, cli):
    ids = pd.read_parquet(analysed / S.TABLE_FILE)[S.EXAMPLE_ID].tolist()
    ids[1] = ids[0]
    _rewrite_table(analysed, example_id=ids)
    before = tree_state(analysed)
    cli("export", analysed, "--format", "csv").one_line_error("table.parquet", "unique")
    assert tree_state(analysed) == before and not (analysed / S.EXPORTS_DIR).exists()


def test_null_split_in_the_table(analysed, cli):
    _rewrite_table(analysed, split=[None] + ["train"] * 11)
    cli("export", analysed).one_line_error("table.parquet", "`split`")


@pytest.mark.parametrize("command", [["analyze"], ["summary"], ["export"], ["serve", "--no-browser"]])
def test_run_dir_that_is_a_file(tmp_path, cli, command):
    path = tmp_path / "run"
    path.write_text("not a run")
    cli(command[0], path, *command[1:]).one_line_error(str(path), "is a file")
    assert path.read_text() == "not a run"


@pytest.mark.parametrize("column, values, mention", [
    (S.EXAMPLE_ID, lambda t: [[v] for v in t.column(S.EXAMPLE_ID).to_pylist()], "ints or strings"),
    (S.EPOCH, lambda t: [e + 0.5 for e in t.column(S.EPOCH).to_pylist()], "integers"),
    (S.MARGIN, lambda t: [str(v) for v in t.column(S.MARGIN).to_pylist()], "numbers"),
    (S.GOLD_PROB, lambda t: ["x"] * t.num_rows, "numbers"),
    (S.LOGITS, lambda t: ["x"] * t.num_rows, "lists of numbers"),
])
def test_dynamics_columns_of_the_wrong_type(small_run, cli, tmp_path, column, values, mention):
    shard = next((small_run / S.DYNAMICS_DIR).glob("*.parquet"))
    table = pq.read_table(shard)
    _rewrite_dynamics(small_run, column, values(table))
    cli("analyze", small_run, "--no-ood").one_line_error(shard.name, f"`{column}`", mention)
    cli("export-cartography", small_run, tmp_path / "out").one_line_error(shard.name, f"`{column}`")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_export_cartography_of_ids_missing_from_examples(small_run, cli, tmp_path):
    table = pq.read_table(next((small_run / S.DYNAMICS_DIR).glob("*.parquet")))
    _rewrite_dynamics(small_run, S.EXAMPLE_ID, [v + 1000 for v in table.column(S.EXAMPLE_ID).to_pylist()])
    cli("export-cartography", small_run, tmp_path / "out").one_line_error("examples.parquet", "1000")
