"""Hostile runs in the dashboard (Streamlit's AppTest): strings from the run render as text, and
malformed files give a message on the page, never an exception."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from analysis import schema as S
from dashboard import state as K
from dashboard.text import code, md

from .conftest import copy_sample_run

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PAGES = Path(__file__).resolve().parents[2] / "dashboard" / "app_pages"
PAGE_FILES = ("data_map.py", "embeddings.py", "ood.py", "review.py", "export.py")
EVIL_SPLIT = "![m](http://127.0.0.1:9/x)"
EVIL_ID = "id`` :red[x] ![i](http://127.0.0.1:9/id)"


def _app(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("DATAMAP_RUN_DIR", str(run_dir))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    return at


def _markdown_sources(at: AppTest) -> list[str]:
    """Every string the page hands to Streamlit's Markdown renderer."""
    out = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "toast"):
        out += [str(e.value) for e in getattr(at, kind)]
    return out


def _links(source: str) -> list[str]:
    """Images and links a CommonMark renderer makes of ``source`` (an independent parser)."""
    html = MarkdownIt("commonmark").render(source)
    return [tag for tag in ("<img", "<a ") if tag in html]


def _rewrite_table(run: Path, **columns: object) -> None:
    table = pd.read_parquet(run / S.TABLE_FILE)
    for name, values in columns.items():
        table[name] = values
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), run / S.TABLE_FILE)


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample run with a split named like a Markdown image and ids with backticks."""
    run = copy_sample_run(tmp_path_factory.mktemp("evil") / "run")
    table = pd.read_parquet(run / S.TABLE_FILE)
    split = table[S.SPLIT].replace({"ood:far": EVIL_SPLIT})
    ids = [f"{EVIL_ID} {i}" for i in table[S.EXAMPLE_ID]]
    _rewrite_table(run, split=split, example_id=ids)
    return run


def test_split_names_and_ids_render_as_text(evil_run, monkeypatch):
    at = _app(evil_run, monkeypatch)
    at.multiselect(key=K.W_SPLITS).set_value([EVIL_SPLIT]).run()
    assert not at.exception
    for page in PAGE_FILES:
        at.switch_page(str(PAGES / page)).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        sources = _markdown_sources(at)
        assert not [s for s in sources if _links(s)], (page, [s for s in sources if _links(s)])
        assert any(md(EVIL_SPLIT) in s for s in sources), page  # shown, escaped (sidebar filter)
    at.switch_page(str(PAGES / "ood.py")).run()
    assert any(f"{md(EVIL_SPLIT)} ·" in s for s in _markdown_sources(at))  # the gallery captions
    at.multiselect(key=K.W_SPLITS).set_value([]).run()
    at.switch_page(str(PAGES / "review.py")).run()
    at.session_state[K.W_REVIEW_TABLE] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    heading = next(m.value for m in at.markdown if m.value.startswith("#### Example"))
    assert heading.startswith("#### Example ```") and EVIL_ID in heading  # a fence no id closes


def test_code_span_fence_outlasts_any_backtick_run():
    assert code("a`b") == "`` a`b ``"
    assert code("x```y") == "```` x```y ````"
    assert code("plain") == "`plain`"
    assert "\n" not in code("two\nlines") and "\n" not in md("two\nlines")


@pytest.mark.parametrize("payload", [
    {"metrics": {"ood_msp": [1, 2]}},
    {"metrics": [1]},
    {"metrics": {"ood_msp": {"overall": {"auroc": {"x": 1}}}}},
    {"diagnosis": "oops"},
    [1, 2],
])
def test_malformed_ood_eval_is_ignored_with_a_warning(tmp_path, monkeypatch, payload):
    run = copy_sample_run(tmp_path / "run")
    (run / S.OOD_EVAL_FILE).write_text(json.dumps(payload))
    at = _app(run, monkeypatch)
    for page in PAGE_FILES:
        at.switch_page(str(PAGES / page)).run()
        assert not at.exception, (page, [e.value for e in at.exception])
    at.switch_page(str(PAGES / "ood.py")).run()
    assert any("ood\\_eval\\.json" in w.value for w in at.warning), [w.value for w in at.warning]


@pytest.mark.parametrize("resampled", [
    {"stable": False, "low": "x", "high": None, "rounds": "<b>"},
    {"stable": False},
    "oops",
])
def test_malformed_cut_off_records_leave_every_page_working(tmp_path, monkeypatch, resampled):
    """The diagnosis section as a tampered file may hold it: wrong types in the label-issue
    stability record and the OOD calibration keys."""
    run = copy_sample_run(tmp_path / "run")
    ev = json.loads((run / S.OOD_EVAL_FILE).read_text())
    ev["diagnosis"]["label_issues"]["resampled"] = resampled
    ev["diagnosis"]["label_issues"]["count_rule"] = ["not", "text"]
    ev["diagnosis"].update(calibrate_on="sideways", calibrated_on=7, reference_rows="many",
                           calibration_splits="test")
    (run / S.OOD_EVAL_FILE).write_text(json.dumps(ev))
    at = _app(run, monkeypatch)
    for page in PAGE_FILES:
        at.switch_page(str(PAGES / page)).run()
        assert not at.exception, (page, [e.value for e in at.exception])
    from analysis.cli import _cutoff_lines

    ev["diagnosis"]["label_issues"]["resampled"] = {"low": 0.1, "high": "x", "rows": "<b>"}
    (run / S.OOD_EVAL_FILE).write_text(json.dumps(ev))
    assert any("suspect_ood" in line for line in _cutoff_lines(run))  # `datamap summary` still prints


def test_ood_eval_not_utf8_or_too_deep(tmp_path, monkeypatch):
    run = copy_sample_run(tmp_path / "run")
    (run / S.OOD_EVAL_FILE).write_bytes(b"\xff\xfe" + b"[" * 100000)
    at = _app(run, monkeypatch)
    at.switch_page(str(PAGES / "ood.py")).run()
    assert not at.exception and at.warning


@pytest.mark.parametrize("column", [S.SPLIT, S.EXAMPLE_ID])
def test_table_without_a_required_column_is_an_error_on_every_page(tmp_path, monkeypatch, column):
    run = copy_sample_run(tmp_path / "run")
    table = pd.read_parquet(run / S.TABLE_FILE).drop(columns=[column])
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), run / S.TABLE_FILE)
    at = _app(run, monkeypatch)
    for page in PAGE_FILES:
        at.switch_page(str(PAGES / page)).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert at.error and md(column) in at.error[0].value, (page, [e.value for e in at.error])
