"""Hostile cartography logs: each one fails with one line naming the file (and line), leaves the
logs untouched and no hidden folder beside RUN_DIR."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from analysis import runstore
from analysis import schema as S

from .conftest import hidden_leftovers, tree_state, write_logs

DEEP = '{"guid":1,"logits_epoch_0":[0.1,0.2,0.3],"gold":0,"x":' + "[" * 20000 + "]" * 20000 + "}\n"


def _append(path, text: str | bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(text if isinstance(text, bytes) else text.encode())


def test_deeply_nested_line_is_an_error_not_a_crash(tmp_path):
    """20,000 levels crashed Arrow's reader (exit 139) and left `.run.*/` behind: run it in a
    child process so a crash would show as its exit status."""
    logs = write_logs(tmp_path / "logs")
    _append(logs / "dynamics_epoch_0.jsonl", DEEP)
    before = tree_state(logs)
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.cli", "import-cartography", str(logs), str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "dynamics_epoch_0.jsonl:13: JSON nested more than" in proc.stderr
    assert tree_state(logs) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


def test_nested_5000_then_bad_line_names_the_line(tmp_path, cli):
    logs = write_logs(tmp_path / "logs")
    _append(logs / "dynamics_epoch_1.jsonl", DEEP.replace("[" * 20000, "[" * 5000).replace("]" * 20000, "]" * 5000))
    _append(logs / "dynamics_epoch_1.jsonl", "not json\n")
    cli("import-cartography", logs, tmp_path / "run").one_line_error("dynamics_epoch_1.jsonl:13")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


def test_brackets_inside_strings_do_not_count(tmp_path, cli):
    logs = tmp_path / "logs"
    logs.mkdir()
    for e in range(2):
        with open(logs / f"dynamics_epoch_{e}.jsonl", "w") as fh:
            for i in range(3):
                fh.write(json.dumps({"guid": "[" * 100 + str(i) + "{" * 100,
                                     f"logits_epoch_{e}": [1.0, 0.0], "gold": 0}) + "\n")
    res = cli("import-cartography", logs, tmp_path / "run")
    assert res.code == 0, res
    ids = runstore.load_examples(tmp_path / "run")[S.EXAMPLE_ID].tolist()
    assert ids[0] == "[" * 100 + "0" + "{" * 100


def test_non_utf8_line_names_file_and_line(tmp_path, cli):
    logs = write_logs(tmp_path / "logs")
    _append(logs / "dynamics_epoch_2.jsonl", b'{"guid":"caf\xe9","logits_epoch_2":[1,2,3],"gold":0}\n')
    line = cli("import-cartography", logs, tmp_path / "run").one_line_error("dynamics_epoch_2.jsonl:13")
    assert "UTF-8" in line


def test_guid_beyond_64_bits(tmp_path, cli):
    logs = write_logs(tmp_path / "logs")
    _append(logs / "dynamics_epoch_0.jsonl", '{"guid":99999999999999999999,"logits_epoch_0":[1,2,3],"gold":0}\n')
    cli("import-cartography", logs, tmp_path / "run").one_line_error("dynamics_epoch_0.jsonl:13", "64 bits")


def test_gold_beyond_64_bits(tmp_path, cli):
    logs = write_logs(tmp_path / "logs")
    _append(logs / "dynamics_epoch_0.jsonl", '{"guid":99,"logits_epoch_0":[1,2,3],"gold":99999999999999999999}\n')
    cli("import-cartography", logs, tmp_path / "run").one_line_error("dynamics_epoch_0.jsonl:13", "gold")


def test_finite_huge_logit_is_not_called_nan(tmp_path, cli):
    logs = write_logs(tmp_path / "logs")
    _append(logs / "dynamics_epoch_1.jsonl", '{"guid":12,"logits_epoch_1":[1e308,0,0],"gold":0}\n')
    line = cli("import-cartography", logs, tmp_path / "run").one_line_error("dynamics_epoch_1.jsonl:13")
    assert "1e+308" in line and "NaN" not in line


def test_single_class_logits(tmp_path, cli):
    logs = write_logs(tmp_path / "logs", n_classes=1)
    cli("import-cartography", logs, tmp_path / "run").one_line_error("dynamics_epoch_0.jsonl", "at least 2")


def test_symlink_loop_epoch_file_is_an_error(tmp_path, cli):
    logs = write_logs(tmp_path / "logs")
    loop = logs / "dynamics_epoch_3.jsonl"
    loop.symlink_to(loop)
    cli("import-cartography", logs, tmp_path / "run").one_line_error("dynamics_epoch_3.jsonl", "symlink")


def test_two_files_for_one_epoch(tmp_path, cli):
    logs = write_logs(tmp_path / "logs")
    (logs / "dynamics_epoch_00.jsonl").write_bytes((logs / "dynamics_epoch_0.jsonl").read_bytes())
    cli("import-cartography", logs, tmp_path / "run").one_line_error(
        "dynamics_epoch_0.jsonl", "dynamics_epoch_00.jsonl", "epoch 0")


def test_run_dir_is_an_existing_file(tmp_path, cli):
    logs = write_logs(tmp_path / "logs")
    (tmp_path / "run").write_text("mine")
    cli("import-cartography", logs, tmp_path / "run").one_line_error("run", "existing file")
    assert (tmp_path / "run").read_text() == "mine"


@pytest.mark.parametrize("layout", ["same", "inside"])
def test_overwrite_never_deletes_the_input_logs(tmp_path, cli, layout):
    if layout == "same":
        logs = run = write_logs(tmp_path / "logs")
    else:
        run = tmp_path / "run"
        logs = write_logs(run / "training_dynamics")
        assert cli("import-cartography", logs, tmp_path / "elsewhere").code == 0
        for name in ("run.json", "examples.parquet"):
            (run / name).write_bytes((tmp_path / "elsewhere" / name).read_bytes())
    before = tree_state(logs)
    cli("import-cartography", logs, run, "--overwrite").one_line_error("inside RUN_DIR")
    assert tree_state(logs) == before


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, cli):
    logs = write_logs(tmp_path / "logs")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("keep me")
    cli("import-cartography", logs, tmp_path / "home", "--overwrite").one_line_error("not a datamap run")
    assert (tmp_path / "home" / "notes.txt").read_text() == "keep me"


def test_overwrite_keeps_the_review_journal_and_says_where(tmp_path, cli):
    from analysis.flags import FlagJournal

    logs = write_logs(tmp_path / "logs")
    run = tmp_path / "run"
    assert cli("import-cartography", logs, run).code == 0
    assert cli("analyze", run, "--no-ood").code == 0
    FlagJournal(run).add(3, flag="mislabeled", author="a person")
    (run / "exports").mkdir()
    (run / "exports" / "mine.csv").write_text("example_id\n3\n")
    res = cli("import-cartography", logs, run, "--overwrite")
    assert res.code == 0, res
    kept = [p for p in run.iterdir() if p.name.startswith("previous-")]
    assert len(kept) == 1
    assert str(kept[0]) in res.err and "datamap: warning:" in res.err
    assert (kept[0] / "exports" / "mine.csv").read_text() == "example_id\n3\n"
    journal = FlagJournal(kept[0])
    assert journal.count() == 1 and journal.history()["example_id"].tolist() == [3]
    assert not (run / S.FLAGS_FILE).exists()  # not applied to the new import unasked
    assert hidden_leftovers(tmp_path) == []
