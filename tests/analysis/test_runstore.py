"""Run store: round trips, validation, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import runstore
from analysis import schema as S
from analysis.schema import SchemaError


@pytest.fixture
def run(tmp_path):
    runstore.save_run_meta(tmp_path, runstore.RunMeta(class_names=["a", "b", "c"], n_epochs=2))
    return tmp_path


def test_meta_round_trip(run):
    meta = runstore.load_run_meta(run)
    assert meta.class_names == ["a", "b", "c"] and meta.n_classes == 3
    assert meta.schema_version == S.SCHEMA_VERSION


def test_unknown_schema_version(run):
    raw = json.loads((run / S.RUN_JSON).read_text())
    raw["schema_version"] = 99
    (run / S.RUN_JSON).write_text(json.dumps(raw))
    with pytest.raises(SchemaError, match="schema_version 99"):
        runstore.load_run_meta(run)


def test_corrupt_and_missing_meta(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a datamap run"):
        runstore.load_run_meta(tmp_path)
    (tmp_path / S.RUN_JSON).write_text("{not json")
    with pytest.raises(SchemaError, match="not valid JSON"):
        runstore.load_run_meta(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runstore.load_run_meta(tmp_path / "nope")


def test_examples_round_trip_and_validation(run):
    ex = pd.DataFrame({S.EXAMPLE_ID: ["x", "y", "z"], S.LABEL: [0, 2, None], S.TEXT: ["a", "b", "c"]})
    runstore.save_examples(run, ex)
    back = runstore.load_examples(run)
    assert back[S.EXAMPLE_ID].tolist() == ["x", "y", "z"]
    assert back[S.LABEL].isna().tolist() == [False, False, True]
    assert back[S.SPLIT].tolist() == ["train"] * 3
    with pytest.raises(SchemaError, match="unique"):
        runstore.save_examples(run, pd.DataFrame({S.EXAMPLE_ID: [1, 1], S.LABEL: [0, 1]}))
    with pytest.raises(SchemaError, match=r"labels must lie in \[0, 3\)"):
        runstore.save_examples(run, pd.DataFrame({S.EXAMPLE_ID: [1, 2], S.LABEL: [0, 3]}))
    with pytest.raises(SchemaError, match="missing `example_id`"):
        runstore.save_examples(run, pd.DataFrame({S.EXAMPLE_ID: [1, None], S.LABEL: [0, 1]}))
    # the failed writes left the good file untouched and no temporary files behind
    assert runstore.load_examples(run)[S.EXAMPLE_ID].tolist() == ["x", "y", "z"]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), runstore.atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_features_round_trip_and_checks(run):
    feats = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    runstore.save_features(run, "ood:far", [10, 11, 12, 13], feats)
    ids, back = runstore.load_features(run, "ood:far")
    assert ids.tolist() == [10, 11, 12, 13]
    np.testing.assert_array_equal(back, feats)
    assert runstore.list_array_splits(run, S.FEATURES_DIR) == ["ood:far"]
    with pytest.raises(ValueError, match="one id per row"):
        runstore.save_features(run, "test", [1, 2], feats)
    with pytest.raises(ValueError, match="NaN or inf"):
        runstore.save_features(run, "test", [1, 2, 3, 4], np.full((4, 3), np.nan))
    with pytest.raises(FileNotFoundError, match="No stored features"):
        runstore.load_features(run, "test")


def test_dynamics_shards_and_errors(run):
    with pytest.raises(SchemaError, match="no .parquet shard"):
        runstore.load_dynamics(run)
    part = pd.DataFrame({S.EXAMPLE_ID: [1, 2], S.EPOCH: 0, S.GOLD_PROB: [0.1, 0.2],
                         S.MARGIN: [0.0, 1.0], S.PRED: [0, 1]})
    runstore.save_dynamics(run, part, shard="rank-0")
    runstore.save_dynamics(run, part.assign(**{S.EPOCH: 1}), shard="rank-1")
    assert runstore.load_dynamics(run).num_rows == 4
    with pytest.raises(SchemaError, match="misses the required columns"):
        runstore.save_dynamics(run, part.drop(columns=[S.MARGIN]))
    (run / S.DYNAMICS_DIR / "rank-2.parquet").write_bytes(b"garbage")
    with pytest.raises(SchemaError, match="not a readable Parquet"):
        runstore.load_dynamics(run)


def test_dynamics_writer_streams_pieces_atomically(run):
    import pyarrow as pa

    part = pa.table({S.EXAMPLE_ID: [1, 2], S.EPOCH: pa.array([0, 0], pa.int32()), S.GOLD_PROB: [0.1, 0.2],
                     S.MARGIN: [0.0, 1.0], S.PRED: [0, 1]})
    with runstore.dynamics_writer(run, shard="stream") as write:
        write(part)
        write(part.set_column(1, S.EPOCH, pa.array([1, 1], pa.int32())))
    got = runstore.load_dynamics(run).to_pandas()
    assert got[S.EPOCH].tolist() == [0, 0, 1, 1] and got[S.EXAMPLE_ID].tolist() == [1, 2, 1, 2]
    # a failure half-way, a piece with other types, or no piece at all leave no shard behind
    for bad in (RuntimeError("boom"), part.set_column(0, S.EXAMPLE_ID, pa.array(["a", "b"]))):
        with pytest.raises((RuntimeError, SchemaError)), runstore.dynamics_writer(run, shard="x") as write:
            write(part)
            if isinstance(bad, Exception):
                raise bad
            write(bad)
    with pytest.raises(SchemaError, match="nothing was written"), runstore.dynamics_writer(run, shard="y"):
        pass
    with pytest.raises(SchemaError, match="misses the required"), runstore.dynamics_writer(run, shard="z") as w:
        w(part.drop_columns([S.MARGIN]))
    assert sorted(p.name for p in (run / S.DYNAMICS_DIR).iterdir()) == ["stream.parquet"]


def test_corrupt_table(run):
    with pytest.raises(FileNotFoundError, match="datamap analyze"):
        runstore.load_table(run)
    (run / S.TABLE_FILE).write_bytes(b"PAR1 broken")
    with pytest.raises(SchemaError, match="corrupt"):
        runstore.load_table(run)
