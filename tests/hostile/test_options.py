"""Hostile command-line options, filter specs and hand-edited journals: one line naming the
option or file, nothing written."""

from __future__ import annotations

import sqlite3

import pytest

from analysis import schema as S
from analysis.flags import FlagJournal

from .conftest import tree_state, write_logs


@pytest.fixture(scope="module")
def analysed_template(tmp_path_factory):
    from analysis.cartography import import_cartography
    from analysis.pipeline import AnalyzeOptions, analyze_run

    root = tmp_path_factory.mktemp("tpl")
    run = import_cartography(write_logs(root / "logs"), root / "run")
    analyze_run(run, AnalyzeOptions(ood=False))
    return run


@pytest.fixture
def analysed(tmp_path, analysed_template):
    import shutil

    return shutil.copytree(analysed_template, tmp_path / "run")


@pytest.mark.parametrize("spec, mention", [
    ('{"search":5}', "`search`"),
    ('{"labels":"3"}', "`labels`"),
    ('{"labels":[true]}', "`labels`"),
    ('{"ranges":{"confidence":[1,2,3]}}', "ranges"),
    ('{"ranges":[1]}', "ranges"),
    ('{"flagged":["x"]}', "flagged"),
    ('{"splits":[1]}', "`splits`"),
    ('{"nope":1}', "unknown keys"),
    ('{"search":', "JSON"),
    ('{"a":' + "[" * 50000 + "]" * 50000 + "}", "nested"),
])
def test_bad_filter_text(analysed, cli, spec, mention):
    before = tree_state(analysed)
    cli("export", analysed, "--filter", spec).one_line_error("--filter", mention)
    assert tree_state(analysed) == before


def test_binary_filter_file(analysed, cli, tmp_path):
    path = tmp_path / "filter.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff")
    cli("export", analysed, "--filter", path).one_line_error("--filter", "filter.json", "UTF-8")


def test_manifest_with_a_bad_filter_block(analysed, cli, tmp_path):
    path = tmp_path / "old.manifest.json"
    path.write_text('{"manifest_version": 1, "filter": "oops"}')
    cli("export", analysed, "--filter", path).one_line_error("--filter", "old.manifest.json")


def test_bad_shorthand_options(analysed, cli):
    cli("export", analysed, "--range", "confidence:abc:1").one_line_error("--range")
    cli("export", analysed, "--label", "x").one_line_error("--label")


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "2", ""])
def test_shrinkage_that_is_not_a_number(analysed, cli, value):
    cli("analyze", analysed, "--mahalanobis-shrinkage", value).one_line_error(
        "--mahalanobis-shrinkage", repr(value))


@pytest.mark.parametrize("values, mention", [
    ("(0, 'mislabeled', NULL, NULL, 'me', 'yesterday')", "`at` 'yesterday'"),
    ("(0, NULL, 'abc', NULL, 'me', '2026-01-01T00:00:00+00:00')", "`new_label` 'abc'"),
    ("(0, NULL, 2.5, NULL, 'me', '2026-01-01T00:00:00+00:00')", "`new_label` 2.5"),
    ("(0, NULL, 99, NULL, 'me', '2026-01-01T00:00:00+00:00')", "`new_label` 99"),
    ("(0, NULL, NULL, x'00ff', 'me', '2026-01-01T00:00:00+00:00')", "`note`"),
    ("(0, NULL, NULL, NULL, x'00ff', '2026-01-01T00:00:00+00:00')", "`author`"),
])
def test_hand_inserted_journal_row_is_named(analysed, cli, values, mention):
    FlagJournal(analysed).add(1, flag="ood")
    con = sqlite3.connect(analysed / S.FLAGS_FILE)
    con.execute(f"INSERT INTO edits (example_id, flag, new_label, note, author, at) VALUES {values}")
    con.commit()
    con.close()
    before = tree_state(analysed)
    cli("export", analysed, "--curated").one_line_error("flags.sqlite", "row id 2", mention)
    assert tree_state(analysed) == before


def test_undecodable_journal_text_is_reported_as_such(analysed, cli):
    FlagJournal(analysed).add(1, flag="ood")
    con = sqlite3.connect(analysed / S.FLAGS_FILE)
    con.execute("INSERT INTO edits (example_id, note, author, at) VALUES "
                "(0, CAST(x'00ff' AS TEXT), 'me', '2026-01-01T00:00:00+00:00')")
    con.commit()
    con.close()
    cli("export", analysed, "--curated").one_line_error("flags.sqlite")


@pytest.mark.parametrize("name", [S.TABLE_FILE, S.EXAMPLES_FILE, S.FLAGS_FILE, S.RUN_JSON, "dynamics/x.parquet"])
def test_export_out_never_replaces_a_run_file(analysed, cli, name):
    FlagJournal(analysed).add(1, flag="ood")
    before = tree_state(analysed)
    cli("export", analysed, "--out", analysed / name, "--overwrite").one_line_error("--out")
    assert tree_state(analysed) == before
