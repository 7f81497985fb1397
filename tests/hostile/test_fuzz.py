"""Property-based fuzzing (hypothesis) of every reader: cartography jsonl logs, run.json, the
Parquet files (examples, dynamics, table), ids files, the ``--filter`` parser and ood_eval.json.

For any input: no exception escapes (``main`` returns, so the exit status is 0 or 2, never a
traceback or a signal), a failure is one ``datamap: error:`` line naming the file or the option,
the inputs are unchanged and nothing hidden is left behind. Each property runs a bounded number
of examples (no deadline) so the whole file takes well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from analysis import runstore
from analysis import schema as S

from .conftest import hidden_leftovers, tree_state, write_logs

FUZZ = settings(
    max_examples=40, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-3, 3)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _check(res, *names: str) -> None:
    """Exit 0, or exactly one error line naming one of ``names``; never a traceback."""
    assert res.code in (0, 2), res
    assert "Traceback" not in res.err, res
    event(f"exit {res.code}")  # shown by --hypothesis-show-statistics
    if res.code == 2:
        lines = [ln for ln in res.err.splitlines() if ln.startswith("datamap: error:")]
        assert len(lines) == 1, res
        assert any(n in lines[0] for n in names), (names, lines[0])


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """An imported and analysed run (12 examples, 3 epochs, 3 classes) with features."""
    from analysis.cartography import import_cartography
    from analysis.pipeline import AnalyzeOptions, analyze_run

    root = tmp_path_factory.mktemp("fuzz")
    run = import_cartography(write_logs(root / "logs"), root / "run")
    analyze_run(run, AnalyzeOptions(ood=False))
    runstore.save_features(run, "train", np.arange(12), np.eye(12, 4, dtype=np.float32))
    return run


def _workdir(base: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=base))


# ---- cartography logs ------------------------------------------------------------------------------

guids = st.integers(0, 8) | st.integers() | st.text(max_size=5) | scalars | json_values
golds = st.integers(0, 2) | st.integers() | scalars
logit_lists = (st.lists(st.floats(-5, 5), min_size=3, max_size=3)
               | st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4)
               | st.lists(st.integers(), max_size=4) | json_values)


@st.composite
def hostile_line(draw, epoch: int) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=60))
    if kind == 1:
        depth = draw(st.sampled_from([3, 70, 3000, 25000]))
        head = f'{{"guid":1,"logits_epoch_{epoch}":[1,2,3],"gold":0,"x":'
        return (head + "[" * depth + "]" * depth + "}").encode()
    record = {"guid": draw(guids), f"logits_epoch_{epoch}": draw(logit_lists), "gold": draw(golds)}
    if kind == 2:
        del record[draw(st.sampled_from(sorted(record)))]
    if kind == 3:
        return json.dumps(draw(json_values)).encode()
    compact = draw(st.booleans())
    return json.dumps(record, separators=(",", ":") if compact else None).encode()


@st.composite
def log_files(draw) -> dict[int, bytes]:
    n_epochs = draw(st.integers(1, 3))
    files = {}
    for e in range(n_epochs):
        lines = [json.dumps({"guid": i, f"logits_epoch_{e}": [0.5 * i, -0.25, 0.1 * e], "gold": i % 3},
                            separators=(",", ":")).encode() for i in range(6)]
        for _ in range(draw(st.integers(0, 2))):
            lines[draw(st.integers(0, len(lines) - 1))] = draw(hostile_line(e))
        files[e] = b"\n".join(lines) + b"\n"
    return files


@FUZZ
@given(files=log_files())
def test_fuzz_cartography_logs(tmp_path, cli, files):
    work = _workdir(tmp_path)
    logs = work / "logs"
    logs.mkdir()
    for e, data in files.items():
        (logs / f"dynamics_epoch_{e}.jsonl").write_bytes(data)
    before = tree_state(logs)
    res = cli("import-cartography", logs, work / "run")
    _check(res, str(logs))
    assert tree_state(logs) == before
    assert hidden_leftovers(work) == []
    if res.code == 0:
        assert len(runstore.load_examples(work / "run")) >= 1
    else:
        assert not (work / "run").exists()
    shutil.rmtree(work)


# ---- run.json ----------------------------------------------------------------------------------------

def _inputs(run: Path) -> dict[str, str]:
    """Every input file of a run (outputs of `analyze` and exports left out)."""
    return {k: v for k, v in tree_state(run).items()
            if not k.startswith((S.TABLE_FILE, S.CACHE_DIR, S.EXPORTS_DIR, S.OOD_EVAL_FILE))}


run_json_edits = st.dictionaries(
    st.sampled_from(["schema_version", "class_names", "n_epochs", "source", "task", "created_at",
                     "extra", "other"]),
    json_values | st.sampled_from([1, ["a", "b", "c"], 3, "cartography_import", {}]),
    max_size=3,
)


@FUZZ
@given(edits=run_json_edits, drop=st.lists(st.sampled_from(["class_names", "n_epochs", "schema_version"]), max_size=1),
       raw=st.none() | st.binary(max_size=40))
def test_fuzz_run_json(tmp_path, cli, template, edits, drop, raw):
    work = _workdir(tmp_path)
    run = shutil.copytree(template, work / "run")
    path = run / S.RUN_JSON
    if raw is not None:
        path.write_bytes(raw)
    else:
        meta = json.loads(path.read_text())
        meta.update(edits)
        for key in drop:
            meta.pop(key, None)
        path.write_text(json.dumps(meta, allow_nan=True))
    before = _inputs(run)
    _check(cli("analyze", run, "--no-ood"), "run.json")
    assert _inputs(run) == before and hidden_leftovers(work) == []
    shutil.rmtree(work)


# ---- Parquet files -------------------------------------------------------------------------------------

column_values = st.one_of(
    st.lists(st.integers(-2, 40), min_size=12, max_size=12),
    st.lists(st.none() | st.integers(0, 2), min_size=12, max_size=12),
    st.lists(st.text(max_size=4), min_size=12, max_size=12),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=12, max_size=12),
    st.lists(st.none() | st.text(max_size=3), min_size=12, max_size=12),
    st.lists(st.lists(st.integers(0, 3), max_size=2), min_size=12, max_size=12),
    st.lists(st.binary(max_size=3), min_size=12, max_size=12),
    st.just(None),  # drop the column
)


def _mutated(table: pa.Table, column: str, values: list | None) -> pa.Table | None:
    if values is None:
        return table.drop_columns([column]) if column in table.column_names else table
    try:
        array = pa.array(values)
    except (pa.ArrowException, OverflowError):
        return None
    if len(array) != table.num_rows:
        return None
    i = table.column_names.index(column) if column in table.column_names else None
    return table.append_column(column, array) if i is None else table.set_column(i, column, array)


@FUZZ
@given(which=st.sampled_from(["examples", "dynamics", "table"]), data=st.data())
def test_fuzz_parquet_files(tmp_path, cli, template, which, data):
    work = _workdir(tmp_path)
    run = shutil.copytree(template, work / "run")
    path = {"examples": run / S.EXAMPLES_FILE, "table": run / S.TABLE_FILE,
            "dynamics": next((run / S.DYNAMICS_DIR).glob("*.parquet"))}[which]
    if data.draw(st.integers(0, 9)) == 0:
        path.write_bytes(data.draw(st.binary(max_size=64)))
    else:
        table = pq.read_table(path)
        column = data.draw(st.sampled_from(table.column_names))
        if which == "dynamics":
            values = data.draw(st.just(None) | st.lists(
                st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5),
                min_size=table.num_rows, max_size=table.num_rows))
        else:
            values = data.draw(column_values)
        changed = _mutated(table, column, values)
        if changed is None:
            shutil.rmtree(work)
            return
        pq.write_table(changed, path)
    if which == "table":
        before = tree_state(run)
        _check(cli("summary", run), "table.parquet")
        res = cli("export", run, "--format", "csv", "--name", "fuzz")
        _check(res, "table.parquet", "flags.sqlite")
        after = tree_state(run)
        assert {k: v for k, v in after.items() if not k.startswith(S.EXPORTS_DIR)} == before
    else:
        before = _inputs(run)
        _check(cli("analyze", run, "--no-ood"), str(path), "examples.parquet", "dynamics")
        assert _inputs(run) == before
    assert hidden_leftovers(work) == []
    shutil.rmtree(work)


# ---- ids files ----------------------------------------------------------------------------------------

@FUZZ
@given(values=column_values.filter(lambda v: v is not None), raw=st.none() | st.binary(max_size=40))
def test_fuzz_ids_files(tmp_path, template, values, raw):
    work = _workdir(tmp_path)
    run = shutil.copytree(template, work / "run")
    ids_path = run / S.FEATURES_DIR / "train.ids.parquet"
    if raw is not None:
        ids_path.write_bytes(raw)
    else:
        table = _mutated(pq.read_table(ids_path), S.EXAMPLE_ID, values)
        if table is None:
            shutil.rmtree(work)
            return
        pq.write_table(table, ids_path)
    try:
        ids, features = runstore.load_features(run, "train")
    except S.SchemaError as exc:
        assert "train.ids.parquet" in str(exc) or "train.npy" in str(exc), exc
        event("rejected")
    else:
        event("accepted")
        assert len(ids) == len(features) and len(set(ids.tolist())) == len(ids)
        assert all(isinstance(v, (int, str)) for v in ids.tolist())
    shutil.rmtree(work)


# ---- --filter ------------------------------------------------------------------------------------------

filter_specs = st.one_of(
    st.dictionaries(
        st.sampled_from(["splits", "labels", "regions", "diagnoses", "ranges", "flagged", "flag_values",
                         "search", "unknown"]),
        json_values | st.lists(st.integers(-1, 3)) | st.lists(st.text(max_size=3))
        | st.dictionaries(st.sampled_from(["confidence", "aum", "nope", "split"]),
                          st.lists(st.none() | st.floats(allow_nan=True) | st.text(max_size=2), max_size=3)),
        max_size=4,
    ).map(lambda d: json.dumps(d, allow_nan=True)),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
    st.text(max_size=30),
)


@FUZZ
@given(spec=filter_specs, as_file=st.booleans(), raw=st.none() | st.binary(max_size=30))
def test_fuzz_filter_option(tmp_path, cli, template, spec, as_file, raw):
    work = _workdir(tmp_path)
    run = shutil.copytree(template, work / "run")
    argument: str = spec
    if as_file or raw is not None:
        path = work / "filter.json"
        path.write_bytes(raw if raw is not None else spec.encode("utf-8", "surrogatepass"))
        argument = str(path)
    if "\x00" in argument:
        shutil.rmtree(work)
        return
    before = tree_state(run)
    res = cli("export", run, "--filter", argument, "--format", "csv", "--name", "fuzz")
    _check(res, "--filter")
    after = tree_state(run)
    assert {k: v for k, v in after.items() if not k.startswith(S.EXPORTS_DIR)} == before
    assert hidden_leftovers(work) == []
    shutil.rmtree(work)


# ---- ood_eval.json ----------------------------------------------------------------------------------

ood_eval_payloads = st.one_of(
    json_values,
    st.fixed_dictionaries({"metrics": st.dictionaries(
        st.sampled_from(["ood_msp", "ood_energy"]),
        json_values | st.dictionaries(st.sampled_from(["overall", "ood:far"]),
                                      json_values | st.dictionaries(st.sampled_from(["auroc", "n_id"]), json_values)),
    )}, optional={"diagnosis": json_values, "fpr95_definition": json_values}),
)


@FUZZ
@given(payload=ood_eval_payloads, raw=st.none() | st.binary(max_size=40))
def test_fuzz_ood_eval(tmp_path, template, payload, raw):
    from analysis.ood_eval import load_ood_eval
    from dashboard import data as dashboard_data

    work = _workdir(tmp_path)
    run = shutil.copytree(template, work / "run")
    path = run / S.OOD_EVAL_FILE
    path.write_bytes(raw if raw is not None else json.dumps(payload, allow_nan=True).encode())
    try:
        checked = load_ood_eval(run)
    except S.SchemaError as exc:
        assert "ood_eval.json" in str(exc)
        checked = None
    event("rejected" if checked is None else "accepted")
    shown = dashboard_data.load_ood_eval(run)  # what the OOD page reads
    assert (shown is None) == (checked is None)
    best = dashboard_data.best_ood_score(["ood_msp", "ood_energy"], shown)
    assert best in ("ood_msp", "ood_energy")
    dashboard_data.diagnosis_settings(run)
    if shown is not None:
        for groups in (shown.get("metrics") or {}).values():
            for values in groups.values():
                assert all(v is None or isinstance(v, (int, float, str)) for v in values.values())
    shutil.rmtree(work)


def test_float_strategies_reach_non_finite_values():
    """The strategies above include NaN and infinities (a guard against a silent narrowing)."""
    assert math.isnan(float("nan"))
    values = st.floats(allow_nan=True, allow_infinity=True)
    assert values.validate() is None
