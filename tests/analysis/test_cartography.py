"""Import/export of the original Dataset Cartography logs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import runstore
from analysis import schema as S
from analysis.cartography import export_cartography, import_cartography
from analysis.cli import main as cli_main
from analysis.pipeline import analyze_run
from analysis.schema import SchemaError

from .reference_cartography import compute_train_dy_metrics, read_training_dynamics


def write_logs(log_dir, logits, labels, guids=None, seed=0):
    """Write logs as the original code does: a DataFrame per epoch, ``to_json(lines=True)``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    n = logits.shape[1]
    guids = list(range(n)) if guids is None else list(guids)
    rng = np.random.default_rng(seed)
    for e in range(logits.shape[0]):
        order = rng.permutation(n)  # training order is shuffled each epoch
        df = pd.DataFrame({
            "guid": [guids[i] for i in order],
            f"logits_epoch_{e}": [logits[e, i].tolist() for i in order],
            "gold": [int(labels[i]) for i in order],
        })
        df.to_json(log_dir / f"dynamics_epoch_{e}.jsonl", lines=True, orient="records")
    return log_dir


def test_real_run_matches_original_code(tmp_path, digits_logged_logits):
    logits, labels = digits_logged_logits["logits"], digits_logged_logits["labels"]
    logs = write_logs(tmp_path / "training_dynamics", logits, labels)
    run = import_cartography(tmp_path, tmp_path / "run")  # finds training_dynamics/ below
    table = analyze_run(run).set_index(S.EXAMPLE_ID)
    ref = compute_train_dy_metrics(read_training_dynamics(logs))
    guids = sorted(ref)
    assert table.index.tolist() == guids
    ref_df = pd.DataFrame.from_dict(ref, orient="index").loc[guids]
    np.testing.assert_allclose(table[S.CONFIDENCE], ref_df["confidence"], atol=1e-6)
    np.testing.assert_allclose(table[S.VARIABILITY], ref_df["variability"], atol=1e-6)
    np.testing.assert_array_equal(table[S.CORRECT_COUNT], ref_df["correctness"])
    # forgetting: 1000 in the original for never-learned, explicit flag here
    ours = np.where(table[S.NEVER_LEARNED], 1000, table[S.FORGETTING].fillna(-1))
    np.testing.assert_array_equal(ours, ref_df["forgetfulness"])
    assert table[S.NEVER_LEARNED].any()  # the case is exercised
    assert runstore.load_run_meta(run).source == S.SOURCE_CARTOGRAPHY


def test_round_trip_is_lossless(tmp_path):
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 40, 4)) * 3
    labels = rng.integers(0, 4, 40)
    guids = [f"ex-{i}" for i in range(40)]
    logs = write_logs(tmp_path / "logs", logits, labels, guids=guids)
    run1 = import_cartography(logs, tmp_path / "run1")
    out = tmp_path / "exported"
    export_cartography(run1, out)
    # the export holds exactly the floats of the original files
    for e in range(3):
        orig = {r["guid"]: r for r in map(json.loads, (logs / f"dynamics_epoch_{e}.jsonl").read_text().splitlines())}
        back = {r["guid"]: r for r in map(json.loads, (out / f"dynamics_epoch_{e}.jsonl").read_text().splitlines())}
        assert orig.keys() == back.keys()
        for g in orig:
            assert back[g][f"logits_epoch_{e}"] == orig[g][f"logits_epoch_{e}"]
            assert back[g]["gold"] == orig[g]["gold"]
    run2 = import_cartography(out, tmp_path / "run2")
    a = runstore.load_dynamics(run1).to_pandas()
    b = runstore.load_dynamics(run2).to_pandas()
    assert a[S.EXAMPLE_ID].tolist() == b[S.EXAMPLE_ID].tolist()
    np.testing.assert_array_equal(np.stack(a[S.LOGITS]), np.stack(b[S.LOGITS]))


def test_compact_import_cannot_export(tmp_path):
    logs = write_logs(tmp_path / "logs", np.zeros((1, 3, 2)), np.array([0, 1, 0]))
    run = import_cartography(logs, tmp_path / "run", keep_logits=False)
    with pytest.raises(SchemaError, match="keep_logits=True"):
        export_cartography(run, tmp_path / "out")


def test_missing_epoch_for_some_examples(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 3))
    labels = rng.integers(0, 3, 5)
    logs = write_logs(tmp_path / "logs", logits, labels)
    lines = (logs / "dynamics_epoch_1.jsonl").read_text().splitlines()
    kept = [ln for ln in lines if json.loads(ln)["guid"] != 3]
    (logs / "dynamics_epoch_1.jsonl").write_text("\n".join(kept) + "\n")
    table = analyze_run(import_cartography(logs, tmp_path / "run")).set_index(S.EXAMPLE_ID)
    assert table.loc[3, S.N_EPOCHS_SEEN] == 1
    assert table.loc[0, S.N_EPOCHS_SEEN] == 2


def _good_logs(tmp_path):
    rng = np.random.default_rng(1)
    return write_logs(tmp_path / "logs", rng.normal(size=(2, 6, 3)), rng.integers(0, 3, 6))


def _edit_line(path, lineno, fn):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f: _edit_line(f, 3, lambda s: s[:-5]), r"dynamics_epoch_1.jsonl:3: malformed JSON"),
        (lambda f: _edit_line(f, 2, lambda s: json.dumps({k: v for k, v in json.loads(s).items() if k != "gold"})),
         r"dynamics_epoch_1.jsonl:2: field `gold` is missing"),
        (lambda f: _edit_line(f, 4, lambda s: json.dumps({**json.loads(s), "logits_epoch_1": [1.0, float("nan"), 0.0]})),
         r"dynamics_epoch_1.jsonl:4: logits contain NaN"),
        (lambda f: _edit_line(f, 4, lambda s: s.replace("[", "[null,", 1)),
         r"dynamics_epoch_1.jsonl:4: .*null"),
        (lambda f: f.write_text("\n".join(json.dumps({**json.loads(s), "logits_epoch_1": [0.0, 1.0]})
                                          for s in f.read_text().splitlines()) + "\n"),
         "has 2 logits per line but .* has 3"),
        (lambda f: f.write_text(f.read_text() + f.read_text().splitlines()[0] + "\n"),
         "appears more than once"),
        (lambda f: _edit_line(f, 1, lambda s: json.dumps({**json.loads(s), "gold": 7})),
         r"gold label 7 is outside \[0, 3\)"),
        (lambda f: _edit_line(f, 1, lambda s: json.dumps({**json.loads(s), "gold": (json.loads(s)["gold"] + 1) % 3})),
         "keep its label"),
    ],
    ids=["malformed", "missing-gold", "nan", "null", "class-count", "duplicate", "label-range", "label-changes"],
)
def test_bad_logs_are_rejected_cleanly(tmp_path, mutate, match):
    logs = _good_logs(tmp_path)
    mutate(logs / "dynamics_epoch_1.jsonl")
    target = tmp_path / "run"
    with pytest.raises(SchemaError, match=match):
        import_cartography(logs, target)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]  # no half-written run


def test_empty_dir_and_existing_target(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SchemaError, match="No `dynamics_epoch_N.jsonl`"):
        import_cartography(tmp_path / "empty", tmp_path / "run")
    logs = _good_logs(tmp_path)
    import_cartography(logs, tmp_path / "run")
    with pytest.raises(FileExistsError, match="--overwrite"):
        import_cartography(logs, tmp_path / "run")
    import_cartography(logs, tmp_path / "run", overwrite=True)
    assert runstore.load_dynamics(tmp_path / "run").num_rows == 12


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    logs = _good_logs(tmp_path)
    _edit_line(logs / "dynamics_epoch_0.jsonl", 2, lambda s: "{oops")
    assert cli_main(["import-cartography", str(logs), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("datamap: error:") and "dynamics_epoch_0.jsonl:2" in err
    assert "Traceback" not in err


def test_cli_import_then_analyze(tmp_path, capsys):
    logs = _good_logs(tmp_path)
    assert cli_main(["import-cartography", str(logs), str(tmp_path / "run"), "--class-names", "a,b,c"]) == 0
    assert cli_main(["analyze", str(tmp_path / "run"), "--no-ood", "--variability-threshold", "0.5"]) == 0
    table = runstore.load_table(tmp_path / "run")
    # variability can never reach 0.5 on two epochs unless p jumps 0 -> 1: nothing is ambiguous
    assert (table[S.REGION] != S.AMBIGUOUS).all()
    assert set(table[S.LABEL_NAME]) <= {"a", "b", "c"}
    assert "regions:" in capsys.readouterr().out


# ---- the fast path for the layout pandas writes ------------------------------------------------


def _json_reader(path, epoch):
    """The general path alone: Arrow's JSON reader (or the line parser), no fast path."""
    from analysis import cartography

    saved = cartography._parse_compact
    cartography._parse_compact = lambda *a: None
    try:
        return cartography.read_epoch_file(path, epoch)
    finally:
        cartography._parse_compact = saved


@pytest.mark.parametrize("guid_kind", ["int", "str"])
def test_fast_path_equals_json_reader(tmp_path, guid_kind):
    from analysis.cartography import _parse_compact

    rng = np.random.default_rng(3)
    n, c = 500, 5
    logits = rng.normal(size=(2, n, c)) * 10.0 ** rng.integers(-30, 30, size=(2, n, c))
    logits[0, :5, 0] = [0.0, -0.0, 1e-300, -2.5e300, 7]  # zero signs, extremes, an integral value
    guids = (rng.permutation(10 * n)[:n] - 3 * n) if guid_kind == "int" else [f"doc/{i}:x y" for i in range(n)]
    logs = write_logs(tmp_path / "logs", logits, rng.integers(0, c, n), guids=guids)
    for e in range(2):
        path = logs / f"dynamics_epoch_{e}.jsonl"
        fast, ref = _parse_compact(path, e), _json_reader(path, e)
        assert fast is not None, "pandas' layout must take the fast path"
        assert fast.guids.dtype == ref.guids.dtype
        assert fast.guids.tolist() == ref.guids.tolist()
        np.testing.assert_array_equal(fast.gold, ref.gold)
        # bit for bit, against Python's own float parser as well
        np.testing.assert_array_equal(fast.logits.view(np.int64), ref.logits.view(np.int64))
        first = json.loads(path.read_text().splitlines()[0])
        assert fast.logits[0].tolist() == first[f"logits_epoch_{e}"]


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: json.dumps(json.loads(s)),  # spaces after separators
        lambda s: s.replace('"gold"', '"label"'),  # another key
        lambda s: s.replace('"guid":', '"guid":"a\\\\\\"b",' + '"x":', 1),  # escapes, extra key
        lambda s: s[:-1] + ',"extra":1}',  # an extra field
        lambda s: s.replace("[", "[1e999,", 1),  # one more logit
    ],
    ids=["spaces", "key", "escape", "extra-field", "class-count"],
)
def test_other_layouts_leave_the_fast_path(tmp_path, edit):
    from analysis.cartography import _parse_compact

    logs = _good_logs(tmp_path)
    path = logs / "dynamics_epoch_0.jsonl"
    _edit_line(path, 4, edit)
    assert _parse_compact(path, 0) is None


def test_pandas_nan_in_the_middle_names_the_line(tmp_path):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, 8, 4))
    logits[0, 5, 2] = np.nan  # pandas writes it as null, between two numbers
    logs = write_logs(tmp_path / "logs", logits, rng.integers(0, 4, 8), seed=0)
    lines = (logs / "dynamics_epoch_0.jsonl").read_text().splitlines()
    lineno = next(i for i, s in enumerate(lines, 1) if "null" in s)
    with pytest.raises(SchemaError, match=rf"dynamics_epoch_0.jsonl:{lineno}: .*null"):
        import_cartography(logs, tmp_path / "run")


def test_mixed_guid_kinds_across_files_become_strings(tmp_path):
    rng = np.random.default_rng(4)
    logits, labels = rng.normal(size=(2, 12, 3)), rng.integers(0, 3, 12)
    write_logs(tmp_path / "a", logits[:1], labels, guids=range(12))
    write_logs(tmp_path / "b", logits, labels, guids=[str(i) for i in range(12)])
    logs = tmp_path / "b"
    (logs / "dynamics_epoch_0.jsonl").write_text((tmp_path / "a" / "dynamics_epoch_0.jsonl").read_text())
    dyn = runstore.load_dynamics(import_cartography(logs, tmp_path / "run")).to_pandas()
    expected = sorted(str(i) for i in range(12))  # "10" sorts before "2"
    for e in (0, 1):
        block = dyn[dyn[S.EPOCH] == e]
        assert block[S.EXAMPLE_ID].tolist() == expected
        ours = np.stack(block[S.LOGITS])  # pandas writes 10 decimals
        np.testing.assert_allclose(ours, logits[e][[int(g) for g in expected]], rtol=1e-9, atol=1e-10)
