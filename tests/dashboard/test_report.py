"""The offline HTML report (dashboard/report/, `datamap report`, the Export page's button).

Unit tests of the section and figure builders, then the report opened in headless Chromium with
every outside request blocked and counted: each figure renders, and every number shown equals
the one computed here from ``table.parquet`` (pandas and scikit-learn, not the report's code).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import runstore
from analysis import schema as S
from analysis.cli import main as cli_main
from analysis.flags import FlagJournal
from analysis.pipeline import AnalyzeOptions, analyze_run
from analysis.synthetic import make_synthetic_run
from dashboard import report
from dashboard.report import inputs as inputs_module
from dashboard.report import markup
from tests.dashboard.runs import SAMPLE_RUN, make_image_run

CHROMIUM = os.environ.get("DATAMAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
EVIL_CLASS = "<script>alert('class')</script>"
EVIL_SPLIT = "ood:<b>far</b>&co"
EVIL_TEXT = '<img src="x" onerror="alert(1)">a snippet'
EVIL_NOTE = "<i>note</i></td></tr></table><script>alert('note')</script>"
EVIL_KEY = "<u>new_setting</u>"


# ---- runs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small analysed run whose class names, an OOD split, texts, a note and a setting key are
    HTML; with a few flags and relabels in the journal."""
    run = make_synthetic_run(tmp_path_factory.mktemp("report") / "run", n_examples=500, n_eval=80,
                             seed=3)
    meta = runstore.load_run_meta(run)
    meta.class_names[0] = EVIL_CLASS
    meta.task = "task <b>bold</b>"
    runstore.save_run_meta(run, meta)
    examples = runstore.load_examples(run)
    examples[S.SPLIT] = examples[S.SPLIT].replace({"ood:far": EVIL_SPLIT})
    examples[S.TEXT] = examples[S.TEXT].astype(object)
    examples.loc[examples[S.LABEL] == 0, S.TEXT] = EVIL_TEXT
    examples.loc[examples[S.TEXT].isna(), S.TEXT] = "held-out text"
    examples[S.LABEL_NAME] = examples[S.LABEL_NAME].replace({"class_0": EVIL_CLASS})
    runstore.save_examples(run, examples)
    analyze_run(run, AnalyzeOptions(extra={"projection": "pca"}))
    evaluation = json.loads((run / S.OOD_EVAL_FILE).read_text())
    evaluation["diagnosis"][EVIL_KEY] = "<b>value</b>"
    (run / S.OOD_EVAL_FILE).write_text(json.dumps(evaluation))
    table = runstore.load_table(run)
    ids = table[S.EXAMPLE_ID].to_numpy()
    journal = FlagJournal(run)
    journal.add(int(ids[0]), flag="mislabeled", new_label=2)
    journal.add(int(ids[1]), flag="mislabeled")
    journal.add(int(ids[2]), flag="mislabeled", note=EVIL_NOTE)
    journal.add(int(ids[3]), flag="ood")
    journal.add(int(ids[4]), new_label=1, author="<b>me</b>")
    journal.add(int(ids[5]), flag="keep")
    journal.add(int(ids[5]), flag=None)  # cleared: no flag any more
    return run


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped sample run (digits with images) when present, else a synthetic image run."""
    dest = tmp_path_factory.mktemp("report-images") / "run"
    if (SAMPLE_RUN / S.TABLE_FILE).is_file():
        shutil.copytree(SAMPLE_RUN, dest, ignore=shutil.ignore_patterns(
            S.FLAGS_FILE + "*", S.EXPORTS_DIR, S.CACHE_DIR))
        return dest
    return make_image_run(dest, n_examples=600, n_eval=100)


@pytest.fixture(scope="module")
def evil_html(evil_run: Path) -> str:
    return report.build_report(evil_run)


# ---- sections and figures ----------------------------------------------------------------------------


@dataclass
class FakeNoise:
    rate: float
    per_class: dict[str, float]
    n_per_class: dict[str, int]
    confused_pairs: list[tuple[str, str, int]]


def test_label_noise_section_shows_rates_and_pairs_escaped() -> None:
    estimate = FakeNoise(rate=0.125, per_class={"cat": 0.2, "<dog>": 0.05},
                         n_per_class={"cat": 40, "<dog>": 60},
                         confused_pairs=[("cat", "<dog>", 7), ("<dog>", "cat", 3)])
    text = report.label_noise_section(estimate)
    assert "12.5%" in text and "20.0%" in text and "5.0%" in text
    assert "&lt;dog&gt;" in text and "<dog>" not in text
    # pairs, most confused first, with their counts
    pairs = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td><span[^>]*>(\d+)</span>", text)
    assert pairs == [("cat", "&lt;dog&gt;", "7"), ("&lt;dog&gt;", "cat", "3")]
    assert report.label_noise_section(None) == ""
    # how stable the count is, from ood_eval.json's label_issues.resampled
    shaky = report.label_noise_section(estimate, resampled={"low": 0.02, "high": 0.24, "stable": False})
    assert "2.0%-24.0%" in shaky and "<b>unstable</b>" in shaky
    steady = report.label_noise_section(estimate, resampled={"low": 0.09, "high": 0.11, "stable": True})
    assert "9.0%-11.0%" in steady and "unstable" not in steady
    for bad in ({"low": "x", "high": 0.1}, {"low": None, "high": None}, "oops", {"low": float("nan"), "high": 1.0}):
        assert "resampled" not in report.label_noise_section(estimate, resampled=bad)


def test_noise_section_follows_the_noise_module(evil_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, report.NOISE_MODULE, None)  # import raises ImportError
    assert "id='label-noise'" not in report.build_report(evil_run)
    fake = types.ModuleType(report.NOISE_MODULE)
    seen: list[int] = []

    def estimate_label_noise(table: pd.DataFrame) -> FakeNoise:
        seen.append(len(table))
        return FakeNoise(0.031, {"class_1": 0.04}, {"class_1": 50}, [("class_1", "class_2", 2)])

    fake.estimate_label_noise = estimate_label_noise  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, report.NOISE_MODULE, fake)
    html_text = report.build_report(evil_run)
    assert seen == [len(runstore.load_table(evil_run))]
    assert "id='label-noise'" in html_text and "3.1%" in html_text
    again = json.loads((evil_run / S.OOD_EVAL_FILE).read_text())["diagnosis"]["label_issues"]["resampled"]
    assert f"<span data-key='noise:resampled'>{again['low']:.1%}-{again['high']:.1%}</span>" in html_text


def test_hover_shows_the_suggested_label_when_the_column_exists(
    evil_run: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = runstore.load_table(evil_run)
    rows = np.arange(5)
    assert all("suggested" not in line for line in report.hover_lines(table, rows))
    monkeypatch.setattr(S, "SUGGESTED_LABEL", "suggested_label", raising=False)
    table["suggested_label"] = pd.array([0, 3, None, 3, 3] + [None] * (len(table) - 5), dtype="Int64")
    inputs = report.load_inputs(evil_run, table=table)
    lines = report.hover_lines(table, rows, class_names=inputs.class_names_of,
                               suggested=inputs_module.suggested_column(table))
    assert "suggested &lt;script&gt;" in lines[0] and "suggested class_3" in lines[1]
    assert "suggested" not in lines[2]
    assert f"id {table[S.EXAMPLE_ID].iloc[1]} · train<br>label " in lines[1]


def test_hover_escapes_text_ids() -> None:
    table = pd.DataFrame({S.EXAMPLE_ID: ["<b>x</b>", "a&b"], S.SPLIT: ["train", "ood:<i>"],
                          S.LABEL: pd.array([1, None], dtype="Int64")})
    lines = report.hover_lines(table, np.array([0, 1]))
    assert lines == ["id &lt;b&gt;x&lt;/b&gt; · train<br>label 1", "id a&amp;b · ood:&lt;i&gt;<br>label —"]


def test_map_points_keep_every_suspect_up_to_the_cap() -> None:
    n = 2_000
    rng = np.random.default_rng(0)
    diag = np.array(["clean"] * n, dtype=object)
    diag[rng.choice(n, 60, replace=False)] = "suspect_mislabeled"
    table = pd.DataFrame({S.VARIABILITY: rng.random(n), S.CONFIDENCE: rng.random(n),
                          S.DIAGNOSIS: diag})
    table.loc[:9, S.VARIABILITY] = np.nan  # not drawable
    suspects = np.flatnonzero((diag == "suspect_mislabeled") & table[S.VARIABILITY].notna().to_numpy())
    pts = report.map_points(table, x=S.VARIABILITY, y=S.CONFIDENCE, max_sample=100, max_suspects=80)
    assert set(suspects) <= set(pts.rows.tolist())
    assert len(pts.rows) == len(suspects) + 100 and pts.n_drawable == n - 10
    capped = report.map_points(table, x=S.VARIABILITY, y=S.CONFIDENCE, max_sample=100, max_suspects=20)
    assert len(capped.rows) == 120 and capped.n_suspects_drawn == 20
    assert set(capped.rows.tolist()) & set(suspects.tolist()) and len(set(capped.rows.tolist())) == 120


def test_figures_are_plotly_figures_with_bounded_data(evil_run: Path) -> None:
    table = runstore.load_table(evil_run)
    fig = report.ood_histogram_figure(table, S.OOD_ENERGY, bins=30)
    splits = sorted(table[S.SPLIT].unique())
    assert [t.name.split(" (")[0] for t in fig.data] == [markup.escape_html(s) for s in splits]
    for trace, split in zip(fig.data, splits, strict=True):
        values = table.loc[table[S.SPLIT] == split, S.OOD_ENERGY].dropna()
        assert len(trace.y) == 30 and trace.customdata.sum() == len(values)
        assert abs(sum(trace.y) - 1.0) < 1e-9
    curves = report.ood_curves(table, S.OOD_ENERGY)
    assert list(curves) == [EVIL_SPLIT]
    fig = report.ood_curves_figure(curves, score=S.OOD_ENERGY)
    assert len(fig.data) == 3 and "&lt;b&gt;far" in fig.data[0].name
    with pytest.raises(ValueError, match="Expected a score column"):
        report.ood_histogram_figure(table, "ood_missing")


def test_text_snippets_are_escaped_and_short(evil_html: str) -> None:
    assert EVIL_TEXT not in evil_html
    assert markup.escape_html(EVIL_TEXT) in evil_html or "&lt;img src=&quot;x&quot;" in evil_html
    long = markup.snippet("word " * 200)
    assert len(long) <= markup.SNIPPET_CHARS and long.endswith("…")


def test_no_string_from_the_run_reaches_the_html_unescaped(evil_html: str, evil_run: Path) -> None:
    for raw in (EVIL_CLASS, EVIL_NOTE, EVIL_KEY, "<b>bold</b>", "<b>far</b>", "<b>me</b>",
                "<b>value</b>", "<i>note</i>"):
        assert raw not in evil_html, raw
    assert "&lt;u&gt;new_setting&lt;/u&gt;" in evil_html  # the setting's key is shown, escaped
    command = re.search(r"<pre id='reproduce'>([^<]*)</pre>", evil_html).group(1)  # type: ignore[union-attr]
    scores = sorted(c for c in runstore.load_table(evil_run).columns if c.startswith("ood_"))
    assert command.startswith("datamap analyze ") and command.endswith(" --ood-quantile 0.95")
    assert "--ood-scorer combined " in command  # the diagnosis' default score (analysis.ood_stage)
    listed = command.split("--ood-scorers ")[1].split(" ")[0].split(",")
    assert sorted("ood_" + name for name in listed) == scores
    # one <script> for Plotly, one per figure's JSON and the renderer: nothing from the run
    scripts = re.findall(r"<script[^>]*>", evil_html)
    assert scripts.count("<script>") == 2
    assert all(s.startswith('<script type="application/json" data-figure="fig-') for s in scripts
               if s != "<script>")


def test_no_outside_address_but_plotly_s_own_strings(evil_html: str) -> None:
    """No src/href attribute points outside the file (links, images, fonts, styles)."""
    attributes = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""",
                            evil_html.split("</head>", 1)[1])
    assert attributes, "expected the navigation links"
    assert all(a.startswith(("#", "data:")) for a in attributes), attributes
    assert "@import" not in evil_html.split("<script>", 1)[0]


def test_report_of_a_run_analysed_without_ood(tmp_path: Path) -> None:
    run = make_synthetic_run(tmp_path / "run", n_examples=300)
    analyze_run(run, AnalyzeOptions(ood=False))
    html_text = report.build_report(run)
    assert re.findall(r'data-figure="([^"]+)"', html_text) == ["fig-data_map"]
    assert "Not evaluated" in html_text and "id='ood'" not in html_text
    assert f"<pre id='reproduce'>datamap analyze {run} --no-ood</pre>" in html_text
    table = runstore.load_table(run)
    assert f'data-key="n_examples">{len(table):,}</span>' in html_text


def test_settings_follow_the_dashboard_s_thresholds(evil_run: Path) -> None:
    from analysis.dynamics import RegionThresholds

    inputs = report.load_inputs(evil_run, thresholds=RegionThresholds(confidence=0.6, variability=0.25),
                                ood_quantile=0.9)
    command = report.reproduce_command(inputs)
    assert "--confidence-threshold 0.6 --variability-threshold 0.25" in command
    assert command.endswith("--ood-quantile 0.9")
    section = report.settings_section(inputs)
    assert "OOD quantile set in the dashboard" in section and "set in the dashboard" in section
    # the analysis' own quantile is no override; the defaults reproduce the stored regions
    inputs = report.load_inputs(evil_run, ood_quantile=0.95)
    assert inputs.ood_quantile is None and inputs.region_thresholds == RegionThresholds()
    assert "--confidence-threshold" not in report.reproduce_command(inputs)


def test_cli_writes_the_report(evil_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert cli_main(["report", str(evil_run), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert f"wrote {out}" in capsys.readouterr().out
    assert cli_main(["report", str(tmp_path)]) == 2  # not an analysed run
    assert "datamap analyze" in capsys.readouterr().err
    assert cli_main(["report", str(evil_run), "--out", str(tmp_path / "no" / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["report", str(evil_run), "--out", str(tmp_path)]) == 2  # a directory
    assert "Expected --out to name a file" in capsys.readouterr().err


def test_export_page_builds_and_offers_the_report(
    image_run: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamlit.testing.v1 import AppTest

    from dashboard import state

    root = Path(__file__).resolve().parents[2] / "dashboard"
    monkeypatch.setenv("DATAMAP_RUN_DIR", str(image_run))
    at = AppTest.from_file(str(root / "app.py"), default_timeout=90)
    at.run()
    at.switch_page(str(root / "app_pages" / "export.py")).run()
    at.button(key=state.W_REPORT_BUILD).click().run()
    assert not at.exception and not at.error
    key, data = at.session_state[state.REPORT]
    text = data.decode("utf-8")
    assert text.startswith("<!DOCTYPE html>")
    n = len(runstore.load_table(image_run))
    assert f'data-key="n_examples">{n:,}</span>' in text
    assert at.get("download_button"), "expected the Download report button"


# ---- in a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        message = f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set DATAMAP_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the browser tests (.ci/run installs it)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@dataclass
class Opened:
    page: object
    outside: list[str]
    dialogs: list[str]
    errors: list[str]


@contextlib.contextmanager
def open_offline(chromium: object, path: Path) -> Iterator[Opened]:
    """Open ``path`` with every request that is not the file itself blocked and counted."""
    context = chromium.new_context(viewport={"width": 1300, "height": 900})  # type: ignore[attr-defined]
    opened = Opened(page=None, outside=[], dialogs=[], errors=[])
    target = path.resolve().as_uri()

    def route(r: object) -> None:
        url = r.request.url  # type: ignore[attr-defined]
        if url == target:
            r.continue_()  # type: ignore[attr-defined]
        else:
            opened.outside.append(url)
            r.abort()  # type: ignore[attr-defined]

    context.route("**/*", route)
    page = context.new_page()
    page.on("request", lambda req: None if req.url in (target,) or req.url.startswith(("data:", "blob:"))
            else opened.outside.append(req.url))
    page.on("websocket", lambda ws: opened.outside.append(ws.url))
    page.on("dialog", lambda d: (opened.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: opened.errors.append(str(e)))
    page.set_default_timeout(30_000)
    page.goto(target)
    opened.page = page
    yield opened
    context.close()


def figures_rendered(page: object) -> dict[str, list[int]]:
    """Each figure's id -> points per trace, once every figure has rendered (or failed)."""
    page.wait_for_function(  # type: ignore[attr-defined]
        "Array.from(document.querySelectorAll('.figure')).every("
        "e => e.hasAttribute('data-rendered') || e.hasAttribute('data-error'))")
    errors = page.eval_on_selector_all(".figure[data-error]",  # type: ignore[attr-defined]
                                       "els => els.map(e => e.id + ': ' + e.dataset.error)")
    assert not errors, errors
    return page.evaluate(  # type: ignore[attr-defined]
        "Object.fromEntries(Array.from(document.querySelectorAll('.figure')).map("
        "e => [e.id, e._fullData.map(t => t._length)]))")


def shown_numbers(page: object) -> dict[str, str]:
    return page.evaluate(  # type: ignore[attr-defined]
        "Object.fromEntries(Array.from(document.querySelectorAll('[data-key]')).map("
        "e => [e.dataset.key, e.textContent]))")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.browser
@pytest.mark.slow
def test_report_in_chromium_offline_with_the_table_s_numbers(
    chromium: object, evil_run: Path, evil_html: str, tmp_path: Path,
) -> None:
    path = tmp_path / "report.html"
    path.write_text(evil_html, encoding="utf-8")
    with open_offline(chromium, path) as opened:
        page = opened.page
        traces = figures_rendered(page)
        assert set(traces) == {"fig-data_map", "fig-embedding_map", "fig-ood_histogram", "fig-ood_curves"}
        for fig_id in traces:  # drawn: Plotly's SVG layers (and WebGL canvases for the maps)
            assert page.locator(f"#{fig_id} .main-svg").count() >= 1  # type: ignore[attr-defined]
        assert page.locator("#fig-data_map canvas").count() >= 1  # type: ignore[attr-defined]

        table = pd.read_parquet(evil_run / S.TABLE_FILE)
        shown = shown_numbers(page)
        # the run
        assert _int(shown["n_examples"]) == len(table)
        for split, n in table[S.SPLIT].value_counts().items():
            assert _int(shown[f"split:{split}"]) == n, split
        train = table[table[S.SPLIT] == "train"]
        names = runstore.load_run_meta(evil_run).class_names
        for label, n in train[S.LABEL].value_counts().items():
            assert _int(shown[f"class:{names[int(label)]}"]) == n
        # findings
        for region, n in table[S.REGION].astype(str).value_counts().items():
            assert _int(shown[f"region:{region}"]) == n
        diag = table[S.DIAGNOSIS].astype(str).value_counts()
        for value in ("clean", "ambiguous", "suspect_mislabeled", "suspect_ood", "no_dynamics"):
            assert _int(shown[f"diagnosis:{value}"]) == diag.get(value, 0), value
        assert _int(shown["suspects:suspect_mislabeled"]) == diag.get("suspect_mislabeled", 0)
        assert _int(shown["suspects:suspect_ood"]) == diag.get("suspect_ood", 0)
        # OOD metrics: AUROC of every score against sklearn on the table's rows
        from sklearn.metrics import roc_auc_score

        test_rows = table[table[S.SPLIT] == "test"]
        ood_rows = table[table[S.SPLIT] == EVIL_SPLIT]
        scores = [c for c in table.columns if c.startswith("ood_") and table[c].dtype.kind == "f"]
        assert scores
        for col in scores:
            y = np.r_[np.zeros(len(test_rows)), np.ones(len(ood_rows))]
            s = np.r_[test_rows[col].to_numpy(), ood_rows[col].to_numpy()]
            expected = roc_auc_score(y, s)
            for group in (EVIL_SPLIT, "overall"):
                assert abs(float(shown[f"auroc:{col}:{group}"]) - expected) <= 5e-4, (col, group)
        # flags, by hand: 3 mislabeled, 1 ood, 0 keep (cleared), 2 relabels, 1 note, 6 examples, 7 entries
        assert {k: _int(v) for k, v in shown.items() if k.startswith("flag:")} == {
            "flag:mislabeled": 3, "flag:ood": 1, "flag:ambiguous": 0, "flag:keep": 0,
            "flag:relabelled": 2, "flag:noted": 1, "flag:examples": 6, "flag:entries": 7}

        # the maps: every training row is drawn (fewer than the sample size), hover lines hold ids
        drawable = table[S.CONFIDENCE].notna() & table[S.VARIABILITY].notna()
        assert sum(traces["fig-data_map"]) == int(drawable.sum())
        has_xy = table[S.UMAP_X].notna() & table[S.UMAP_Y].notna()
        assert sum(traces["fig-embedding_map"]) == int(has_xy.sum())
        texts = page.evaluate(  # type: ignore[attr-defined]
            "document.getElementById('fig-data_map')._fullData.flatMap(t => Array.from(t.text))")
        some = table.loc[drawable, S.EXAMPLE_ID].iloc[7]
        assert any(t.startswith(f"id {some} · train<br>label ") for t in texts)
        # the histogram counts every row of each split
        hist = page.evaluate(  # type: ignore[attr-defined]
            "document.getElementById('fig-ood_histogram')._fullData.map("
            "t => [t.name, Array.from(t.customdata).reduce((a, b) => a + b, 0)])")
        score = json.loads((evil_run / S.OOD_EVAL_FILE).read_text())["diagnosis"]["score_column"]
        counts = table.dropna(subset=[score])[S.SPLIT].value_counts()
        shown_as = {EVIL_SPLIT: "ood:&lt;b&gt;far&lt;/b&gt;&amp;co"}  # escaped by hand
        assert {name.split(" (")[0]: n for name, n in hist} == {
            shown_as.get(k, k): v for k, v in counts.items()}

        # escaped strings show as text; nothing from the run ran or became markup
        body = page.inner_text("body")  # type: ignore[attr-defined]
        assert EVIL_CLASS in body and EVIL_SPLIT in body and "<i>note</i>" in body
        assert not opened.dialogs and not opened.errors, (opened.dialogs, opened.errors)
        assert page.locator("main img[src='x'], main u, main i, main b:has-text('far')").count() == 0  # type: ignore[attr-defined]
        page.hover("#fig-data_map .nsewdrag")  # type: ignore[attr-defined]
        page.mouse.wheel(0, 4000)  # type: ignore[attr-defined]
        page.wait_for_timeout(300)  # type: ignore[attr-defined]
        assert opened.outside == [], opened.outside


@pytest.mark.browser
@pytest.mark.slow
def test_report_thumbnails_render_offline(chromium: object, image_run: Path, tmp_path: Path) -> None:
    path = report.write_report(image_run, tmp_path / "images.html")
    with open_offline(chromium, path) as opened:
        page = opened.page
        figures_rendered(page)
        thumbs = page.locator("#suspects img.thumb")  # type: ignore[attr-defined]
        assert thumbs.count() > 0
        widths = page.eval_on_selector_all(  # type: ignore[attr-defined]
            "#suspects img.thumb", "els => els.map(e => [e.complete, e.naturalWidth])")
        assert all(done and width > 0 for done, width in widths), widths
        assert all(src.startswith("data:image/") for src in page.eval_on_selector_all(  # type: ignore[attr-defined]
            "#suspects img.thumb", "els => els.map(e => e.getAttribute('src'))"))
        SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "report.png"))  # type: ignore[attr-defined]
        assert opened.outside == [] and not opened.errors, (opened.outside, opened.errors)
