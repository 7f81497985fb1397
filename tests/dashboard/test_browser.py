"""The dashboard in a real browser: `datamap serve` + headless Chromium driven by Playwright.

One server per module (restarted once, for the persistence test). Runs on a copy of the shipped
sample run when it exists, else on a small synthetic run with PNG images. Screenshots of every
page go to ``artifacts/screenshots/``.

Chromium: Debian's ``/usr/bin/chromium`` (``apt-get install chromium``); Playwright's own browser
download is not needed. Override the path with ``DATAMAP_CHROMIUM``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import pytest

from analysis import schema as S
from analysis.filters import FilterSpec, apply_filter, points_in_box, points_in_polygon
from analysis.flags import FlagJournal, apply_flags
from tests.dashboard.runs import SAMPLE_RUN, make_image_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("DATAMAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
CHROMIUM_HINT = (
    "Install it with `sudo apt-get install -y chromium fonts-dejavu-core` (`make test` does this "
    "itself when run as root), or point DATAMAP_CHROMIUM at a Chromium binary; "
    "`pytest -m 'not browser'` leaves the browser tests out explicitly."
)
PAGES = ("", "embeddings", "ood", "review", "queue", "export")
APP_READY = '[data-testid="stApp"][data-test-script-state="notRunning"]'
MAP_READY = ".dm-scatter[data-ready] .dm-plot"
"""The plot area of a drawn map (``dashboard/scatter.js``; Playwright's CSS pierces its shadow root)."""
SVG_READY = ".dm-svg svg"
"""A drawn SVG figure (the OOD page's histogram and curves, the example view's trajectory)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`datamap serve RUN --port P --no-browser` in a child process."""

    def __init__(self, run_dir: Path, log_path: Path) -> None:
        self.run_dir = run_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = _free_port()
        env = dict(os.environ)
        env.pop("DISPLAY", None)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "analysis.cli", "serve", str(self.run_dir),
             "--port", str(self.port), "--no-browser"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not become healthy in 60 s")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()  # SIGTERM: serve() forwards it and waits
        return self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the sample run (flags and exports are written into it)."""
    dest = tmp_path_factory.mktemp("browser") / "run"
    if (SAMPLE_RUN / S.TABLE_FILE).is_file():
        shutil.copytree(SAMPLE_RUN, dest, ignore=shutil.ignore_patterns(
            S.FLAGS_FILE + "*", S.EXPORTS_DIR, S.CACHE_DIR))
        return dest
    return make_image_run(dest, n_examples=1500, n_eval=200)


@pytest.fixture(scope="module")
def server(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(run_dir, tmp_path_factory.mktemp("logs") / "server.log")
    srv.start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        # never pass by skipping: the browser tests run, or the suite fails and says how to fix it
        pytest.fail(f"Chromium not found at {CHROMIUM}. {CHROMIUM_HINT}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: object, tmp_path: Path) -> Iterator[object]:
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


# ---- helpers ------------------------------------------------------------------------------------


def open_page(pg: object, url: str, *, ready: str | None = None) -> None:
    pg.goto(url)  # type: ignore[attr-defined]
    wait_idle(pg)
    if ready:
        pg.wait_for_selector(ready, state="visible")  # type: ignore[attr-defined]


def wait_idle(pg: object, *, settle: float = 0.3) -> None:
    """Wait for the script run to finish (and the status to settle)."""
    time.sleep(settle)
    pg.wait_for_selector(APP_READY)  # type: ignore[attr-defined]


def no_exception(pg: object) -> None:
    n = pg.locator('[data-testid="stException"]').count()  # type: ignore[attr-defined]
    assert n == 0, pg.locator('[data-testid="stException"]').first.inner_text()  # type: ignore[attr-defined]


def nav(pg: object, title: str) -> None:
    """Switch page through the sidebar (keeps the session, unlike a new URL)."""
    pg.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()  # type: ignore[attr-defined]
    wait_idle(pg, settle=0.8)


def shown_count(pg: object) -> int:
    text = pg.locator('[data-testid="stSidebar"] [data-testid="stMetricValue"]').first.inner_text()  # type: ignore[attr-defined]
    return int(text.replace(",", ""))


def pick_multiselect(pg: object, label: str, option: str) -> None:
    box = pg.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').filter(has_text=label).first  # type: ignore[attr-defined]
    choose_option(pg, box.locator("input"), option)
    pg.keyboard.press("Escape")  # type: ignore[attr-defined]
    wait_idle(pg, settle=0.8)


def choose_option(pg: object, widget: object, option: str) -> None:
    """Open a select widget and click ``option`` (retried: a rerun may swallow the first click)."""
    target = pg.get_by_role("option", name=option, exact=True)  # type: ignore[attr-defined]
    for _ in range(4):
        widget.click()  # type: ignore[attr-defined]
        try:
            target.wait_for(timeout=3_000)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError; retry the click
            wait_idle(pg)
            continue
        target.click()
        return
    raise AssertionError(f"option {option!r} never appeared")


def selection_shape(pg: object) -> dict | None:
    """The shape the map shows, in data coordinates (its ``data-selection`` attribute)."""
    text = pg.locator(".dm-scatter").first.get_attribute("data-selection")  # type: ignore[attr-defined]
    return json.loads(text) if text else None


def drag(pg: object, area: dict, fractions: list[tuple[float, float]]) -> None:
    """Press at the first point of the plot area (fractions of its box), move through the rest."""
    x0, y0, w, h = area["x"], area["y"], area["width"], area["height"]
    pg.mouse.move(x0 + fractions[0][0] * w, y0 + fractions[0][1] * h)  # type: ignore[attr-defined]
    pg.mouse.down()  # type: ignore[attr-defined]
    for fx, fy in fractions[1:]:
        pg.mouse.move(x0 + fx * w, y0 + fy * h, steps=8)  # type: ignore[attr-defined]
    pg.mouse.up()  # type: ignore[attr-defined]


def isolated_point(pg: object) -> tuple[object, float, float]:
    """(id, page x, page y) of the drawn point farthest from any other, from the chart's data and
    its axes' ranges (a click there can only mean that point)."""
    d = pg.locator(".dm-scatter").first.evaluate(  # type: ignore[attr-defined]
        "e => { const d = e.__model.data; return {ids: d.ids, x: d.x, y: d.y, xr: d.x_range, yr: d.y_range}; }"
    )
    area = pg.locator(MAP_READY).first.bounding_box()  # type: ignore[attr-defined]
    (xa, xb), (ya, yb) = d["xr"], d["yr"]
    px = area["x"] + (np.asarray(d["x"], float) - xa) / (xb - xa) * area["width"]
    py = area["y"] + (yb - np.asarray(d["y"], float)) / (yb - ya) * area["height"]
    dist = np.hypot(px[:, None] - px[None, :], py[:, None] - py[None, :])
    np.fill_diagonal(dist, np.inf)
    i = int(np.argmax(dist.min(axis=1)))
    assert dist[i].min() > 10, "no isolated point to click"
    return d["ids"][i], float(px[i]), float(py[i])


def download_csv(pg: object) -> pd.DataFrame:
    with pg.expect_download() as info:  # type: ignore[attr-defined]
        pg.locator('[data-testid="stDownloadButton"] button').first.click()  # type: ignore[attr-defined]
    data = Path(info.value.path()).read_bytes()
    return pd.read_csv(io.BytesIO(data))


def prepare_export(pg: object, scope_prefix: str) -> None:
    pg.locator('[data-testid="stRadio"] label', has_text=scope_prefix).first.click()  # type: ignore[attr-defined]
    pg.get_by_role("button", name="Prepare export").click()  # type: ignore[attr-defined]
    pg.wait_for_selector('[data-testid="stDownloadButton"]')  # type: ignore[attr-defined]
    wait_idle(pg)


def working_table(run_dir: Path) -> pd.DataFrame:
    table = pd.read_parquet(run_dir / S.TABLE_FILE)
    return apply_flags(table, FlagJournal(run_dir).latest())


def shot(pg: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"))  # type: ignore[attr-defined]


# ---- tests ----------------------------------------------------------------------------------------


def test_every_page_renders(server: Server, page: object) -> None:
    for slug in PAGES:
        ready = MAP_READY if slug in ("", "embeddings") else SVG_READY if slug == "ood" else None
        open_page(page, f"{server.url}/{slug}", ready=ready)
        no_exception(page)
        assert page.locator("h1").first.is_visible()  # type: ignore[attr-defined]
        if slug == "ood":  # the score histogram, then ROC and PR curves (the run has OOD splits)
            page.locator(SVG_READY).nth(2).wait_for()  # type: ignore[attr-defined]
            assert page.locator(f"{SVG_READY} polyline").count() >= 2  # type: ignore[attr-defined]
        shot(page, slug or "data_map")


def test_lasso_fills_selection_with_the_polygon_rows(server: Server, page: object, run_dir: Path) -> None:
    open_page(page, server.url, ready=MAP_READY)
    area = page.locator(MAP_READY).first.bounding_box()  # type: ignore[attr-defined]
    # a pentagon over the middle of the map
    drag(page, area, [(0.25, 0.2), (0.75, 0.15), (0.9, 0.55), (0.55, 0.85), (0.2, 0.6), (0.25, 0.2)])
    page.get_by_text(re.compile(r"selected by lasso")).wait_for()  # type: ignore[attr-defined]
    wait_idle(page)
    no_exception(page)
    shape = selection_shape(page)
    assert shape is not None and len(shape["lasso"][0]["x"]) > 5, shape
    polygon = np.column_stack([shape["lasso"][0]["x"], shape["lasso"][0]["y"]])
    # the polygon is where the mouse went: its corners lie near the plot area's fractions
    assert 0.0 < polygon[:, 1].min() < polygon[:, 1].max() < 1.05
    table = working_table(run_dir)
    xs = table[S.VARIABILITY].to_numpy(dtype=float, na_value=np.nan)
    ys = table[S.CONFIDENCE].to_numpy(dtype=float, na_value=np.nan)
    expected = set(table.loc[points_in_polygon(xs, ys, polygon), S.EXAMPLE_ID].tolist())
    assert expected, "the lasso should enclose some examples"
    text = page.get_by_text(re.compile(r"selected by lasso")).first.inner_text()  # type: ignore[attr-defined]
    n_shown = int(re.search(r"([\d,]+) selected", text).group(1).replace(",", ""))
    assert n_shown == len(expected)
    shot(page, "data_map_lasso")
    # the selection travels to the Export page: the downloaded ids are the polygon's
    nav(page, "Export")
    prepare_export(page, "current selection")
    got = download_csv(page)
    assert set(got[S.EXAMPLE_ID].tolist()) == expected
    # back on the map, the new chart shows the kept selection's outline and table
    nav(page, "Data map")
    page.wait_for_selector(MAP_READY)  # type: ignore[attr-defined]
    assert selection_shape(page) == shape
    assert page.get_by_text(f"{len(expected):,} selected").count() == 1  # type: ignore[attr-defined]
    # the kept shape still follows the filter: only the train rows inside it remain
    pick_multiselect(page, "split", "train")
    in_train = set(table.loc[table[S.SPLIT] == "train", S.EXAMPLE_ID].tolist()) & expected
    assert page.get_by_text(f"{len(in_train):,} selected").count() == 1  # type: ignore[attr-defined]
    page.get_by_role("button", name="Reset filters").click()  # type: ignore[attr-defined]
    wait_idle(page, settle=0.8)
    # a double-click clears it
    area = page.locator(MAP_READY).first.bounding_box()  # type: ignore[attr-defined]
    page.mouse.dblclick(area["x"] + 0.5 * area["width"], area["y"] + 0.5 * area["height"])  # type: ignore[attr-defined]
    page.get_by_text("Draw a lasso").wait_for()  # type: ignore[attr-defined]
    assert selection_shape(page) is None
    no_exception(page)


def test_click_on_a_point_selects_that_example_and_hover_names_it(server: Server, page: object) -> None:
    open_page(page, server.url, ready=MAP_READY)
    example_id, px, py = isolated_point(page)
    # a double-click on it selects nothing (it clears; its two clicks are not a point selection)
    page.mouse.dblclick(px, py)  # type: ignore[attr-defined]
    wait_idle(page, settle=1.0)
    assert selection_shape(page) is None
    assert page.get_by_text(re.compile(r"selected by")).count() == 0  # type: ignore[attr-defined]
    page.mouse.move(px + 30, py + 30)  # type: ignore[attr-defined]
    page.mouse.move(px, py)  # type: ignore[attr-defined]
    tip = page.locator(".dm-tip")  # type: ignore[attr-defined]
    tip.wait_for(state="visible")
    assert tip.inner_text().splitlines()[0] == f"id {example_id}"
    page.mouse.click(px, py)  # type: ignore[attr-defined]
    page.get_by_text(re.compile(r"selected by points")).wait_for()  # type: ignore[attr-defined]
    wait_idle(page)
    text = page.get_by_text(re.compile(r"selected by points")).first.inner_text()  # type: ignore[attr-defined]
    assert text.startswith("1 selected"), text
    assert selection_shape(page) == {"points": [{"customdata": example_id}]}
    # the click opened its example, and the map marks it
    page.get_by_text(re.compile(rf"Example {example_id}\b")).wait_for()  # type: ignore[attr-defined]
    assert page.locator(".dm-scatter").first.get_attribute("data-marked") == str(example_id)  # type: ignore[attr-defined]
    no_exception(page)
    shot(page, "data_map_click_opens")
    # the PNG button downloads the chart as drawn (the selected point at full colour)
    from PIL import Image

    with page.expect_download() as info:  # type: ignore[attr-defined]
        page.locator('.dm-tools [data-action="png"]').click()  # type: ignore[attr-defined]
    assert info.value.suggested_filename == "datamap-data-map.png"
    png = Image.open(io.BytesIO(Path(info.value.path()).read_bytes()))
    canvas = page.locator(".dm-canvas").first.evaluate("c => [c.width, c.height]")  # type: ignore[attr-defined]
    assert list(png.size) == canvas
    assert np.asarray(png.convert("L")).std() > 5  # axes, points and labels, not a blank image
    # the keyboard: + zooms in about the centre, arrows pan, 0 shows the whole range again
    def view() -> list[float]:
        return page.locator(".dm-scatter").first.evaluate(  # type: ignore[attr-defined]
            "e => { const v = e.__model.mem.view; return [v.x0, v.x1, v.y0, v.y1]; }")

    full = view()
    page.locator(MAP_READY).first.focus()  # type: ignore[attr-defined]
    page.keyboard.press("+")  # type: ignore[attr-defined]
    x0, x1, y0, y1 = view()
    assert x1 - x0 == pytest.approx(0.8 * (full[1] - full[0]))
    assert (x0 + x1) / 2 == pytest.approx((full[0] + full[1]) / 2)
    page.keyboard.press("ArrowRight")  # type: ignore[attr-defined]
    assert view()[0] == pytest.approx(x0 + 0.1 * (x1 - x0))
    page.keyboard.press("0")  # type: ignore[attr-defined]
    assert view() == pytest.approx(full)


def test_box_select_on_the_embedding(server: Server, page: object, run_dir: Path) -> None:
    open_page(page, f"{server.url}/embeddings", ready=MAP_READY)
    page.locator('.dm-tools [data-mode="box"]').click()  # type: ignore[attr-defined]
    area = page.locator(MAP_READY).first.bounding_box()  # type: ignore[attr-defined]
    drag(page, area, [(0.1, 0.1), (0.6, 0.9)])
    page.get_by_text(re.compile(r"selected by box")).wait_for()  # type: ignore[attr-defined]
    wait_idle(page)
    shape = selection_shape(page)
    assert shape is not None and "box" in shape, shape
    box = shape["box"][0]
    table = working_table(run_dir)
    xs = table[S.UMAP_X].to_numpy(dtype=float, na_value=np.nan)
    ys = table[S.UMAP_Y].to_numpy(dtype=float, na_value=np.nan)
    inside = points_in_box(xs, ys, sorted(box["x"]), sorted(box["y"]))
    text = page.get_by_text(re.compile(r"selected by box")).first.inner_text()  # type: ignore[attr-defined]
    n_shown = int(re.search(r"([\d,]+) selected", text).group(1).replace(",", ""))
    assert n_shown == int(inside.sum()) > 0
    no_exception(page)


def test_filter_change_updates_counts_and_export(server: Server, page: object, run_dir: Path) -> None:
    open_page(page, server.url, ready=MAP_READY)
    table = working_table(run_dir)
    assert shown_count(page) == len(table)
    pick_multiselect(page, "split", "train")
    spec = FilterSpec(splits=["train"])
    expected = apply_filter(table, spec)
    assert shown_count(page) == int(expected.sum())
    # a second criterion narrows further
    pick_multiselect(page, "region", S.HARD)
    spec = FilterSpec(splits=["train"], regions=[S.HARD])
    expected = apply_filter(table, spec)
    assert shown_count(page) == int(expected.sum())
    assert page.get_by_text(re.compile("Filter: split ∈ {train}; region")).count() == 1  # type: ignore[attr-defined]
    no_exception(page)
    # the export of the filter holds exactly the filtered rows
    nav(page, "Export")
    prepare_export(page, "current filter")
    got = download_csv(page)
    assert sorted(got[S.EXAMPLE_ID].tolist()) == sorted(table.loc[expected, S.EXAMPLE_ID].tolist())
    shot(page, "export_done")
    # the data and its manifest download together as one zip
    import zipfile

    with page.expect_download() as info:  # type: ignore[attr-defined]
        page.locator('[data-testid="stDownloadButton"] button', has_text=".zip").click()  # type: ignore[attr-defined]
    with zipfile.ZipFile(info.value.path()) as archive:
        names = sorted(archive.namelist())
        assert len(names) == 2 and names[1].endswith(".manifest.json"), names
        manifest = json.loads(archive.read(names[1]))
        data = archive.read(names[0])
    assert manifest["rows"]["exported"] == int(expected.sum())
    assert manifest["output"]["sha256"] == hashlib.sha256(data).hexdigest()
    # a filter change withdraws the prepared file: no download offers the old rows
    n_before = shown_count(page)
    pick_multiselect(page, "region", S.EASY)
    assert shown_count(page) != n_before
    page.get_by_text(re.compile(r"changed since .* was prepared")).wait_for()  # type: ignore[attr-defined]
    assert page.locator('[data-testid="stDownloadButton"]').count() == 0  # type: ignore[attr-defined]
    no_exception(page)
    # reset brings every row back
    page.get_by_role("button", name="Reset filters").click()  # type: ignore[attr-defined]
    wait_idle(page, settle=0.8)
    assert shown_count(page) == len(table)


def test_flag_survives_a_server_restart(server: Server, page: object, run_dir: Path) -> None:
    table = working_table(run_dir)
    suspects = table[table[S.DIAGNOSIS].astype(str) == "suspect_mislabeled"]
    first_id = suspects.sort_values(S.AUM, kind="stable")[S.EXAMPLE_ID].iloc[0]
    open_page(page, f"{server.url}/review")
    grid = page.locator('[data-testid="stDataFrame"]').first  # type: ignore[attr-defined]
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # row-selection cell of the first row  # type: ignore[attr-defined]
    page.get_by_text(re.compile(rf"Example {first_id}\b")).wait_for()  # type: ignore[attr-defined]
    wait_idle(page)
    # its p(gold) trajectory is drawn: one marker per recorded epoch
    page.locator(".dm-svg svg circle").first.wait_for()  # type: ignore[attr-defined]
    assert page.locator(".dm-svg svg circle").count() >= 2  # type: ignore[attr-defined]
    # a suspect's evidence is open: its nearest training examples with their labels
    page.get_by_text("Nearest training examples", exact=True).wait_for()  # type: ignore[attr-defined]
    page.get_by_text("Nearest training examples", exact=True).scroll_into_view_if_needed()  # type: ignore[attr-defined]
    shot(page, "example_evidence")
    form = page.locator('[data-testid="stForm"]').first  # type: ignore[attr-defined]
    choose_option(page, form.locator('[data-testid="stSelectbox"]').first, "mislabeled")
    form.locator('input[type="text"]').last.fill("flagged by the browser test")
    form.get_by_role("button", name="Save").click()
    page.get_by_text(re.compile(rf"Saved: example {first_id}")).wait_for()  # type: ignore[attr-defined]
    wait_idle(page)
    no_exception(page)
    latest = FlagJournal(run_dir).latest()
    assert latest[S.EXAMPLE_ID].tolist() == [first_id]
    assert latest["flag"].tolist() == ["mislabeled"]

    assert server.stop() == 0
    server.start()
    open_page(page, f"{server.url}/review")
    page.locator('[data-testid="stRadio"] label', has_text="already flagged").click()  # type: ignore[attr-defined]
    wait_idle(page, settle=0.8)
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()  # type: ignore[attr-defined]
    assert "1" in values  # one flagged example listed
    page.locator("summary", has_text="Journal").click()  # type: ignore[attr-defined]
    nav(page, "Data map")
    page.locator('[data-testid="stSidebar"] [data-testid="stRadio"] label', has_text="flagged").first.click()  # type: ignore[attr-defined]
    wait_idle(page, settle=0.8)
    assert shown_count(page) == 1
    no_exception(page)


def _open_first_suspect(pg: object, url: str, example_id: object) -> object:
    """Open the Review page and the first listed suspect's example view; returns its flag form."""
    open_page(pg, f"{url}/review")
    grid = pg.locator('[data-testid="stDataFrame"]').first  # type: ignore[attr-defined]
    box = grid.bounding_box()
    pg.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # type: ignore[attr-defined]
    pg.get_by_text(re.compile(rf"Example {example_id}\b")).wait_for()  # type: ignore[attr-defined]
    wait_idle(pg)
    return pg.locator('[data-testid="stForm"]').first  # type: ignore[attr-defined]


def test_an_edit_on_a_stale_view_is_saved_and_the_editor_is_told(
    server: Server, chromium: object, run_dir: Path,
) -> None:
    table = working_table(run_dir)
    suspects = table[table[S.DIAGNOSIS].astype(str) == "suspect_mislabeled"]
    example_id = suspects.sort_values(S.AUM, kind="stable")[S.EXAMPLE_ID].iloc[0]
    journal = FlagJournal(run_dir)
    before = journal.history(example_id)
    contexts = [chromium.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
                for _ in range(2)]
    try:
        alice, bob = (c.new_page() for c in contexts)
        for pg in (alice, bob):
            pg.set_default_timeout(30_000)
        # both open the same example
        form_a = _open_first_suspect(alice, server.url, example_id)
        form_b = _open_first_suspect(bob, server.url, example_id)
        # Alice fills in the form but has not saved yet; Bob saves first.
        # (earlier tests may have flagged this example mislabeled: Alice picks another flag)
        choose_option(alice, form_a.locator('[data-testid="stSelectbox"]').first, "ambiguous")
        form_a.locator('input[type="text"]').last.fill("alice: a 3, not a 5")
        choose_option(bob, form_b.locator('[data-testid="stSelectbox"]').first, "ood")
        form_b.get_by_role("button", name="Save").click()
        bob.get_by_text(re.compile(rf"Saved: example {example_id}")).wait_for()
        wait_idle(bob)
        # Alice saves on her stale view: her edit is written, and she is told
        form_a.get_by_role("button", name="Save").click()
        alice.get_by_text(re.compile(r"another edit of this example had come in")).wait_for()
        wait_idle(alice)
        no_exception(alice)
        assert alice.get_by_text("Nothing changed.").count() == 0
        shot(alice, "review_concurrent_edit")
        hist = journal.history(example_id)
        new = hist[~hist["row_id"].isin(before["row_id"])]
        assert new["flag"].tolist() == ["ood", "ambiguous"]  # both, in commit order
        assert new["note"].tolist()[1] == "alice: a 3, not a 5"
        state = journal.current(example_id)
        assert (state.flag, state.note) == ("ambiguous", "alice: a 3, not a 5")
        # her form now shows the combined state (her flag, saved last)
        form_a = alice.locator('[data-testid="stForm"]').first
        assert form_a.locator('[data-testid="stSelectbox"] input').first.input_value() == "ambiguous"
    finally:
        for c in contexts:
            c.close()


def test_lasso_bulk_relabel_to_suggested_and_undo(server: Server, page: object, run_dir: Path) -> None:
    open_page(page, server.url, ready=MAP_READY)
    before = working_table(run_dir)[[S.EXAMPLE_ID, "flag", "new_label", "note"]]
    n_journal = FlagJournal(run_dir).count()
    area = page.locator(MAP_READY).first.bounding_box()  # type: ignore[attr-defined]
    # a lasso over the hard-to-learn corner (low confidence), where the model disagrees most
    drag(page, area, [(0.02, 0.6), (0.5, 0.6), (0.5, 0.99), (0.02, 0.99), (0.02, 0.6)])
    page.get_by_text(re.compile(r"selected by lasso")).wait_for()  # type: ignore[attr-defined]
    wait_idle(page)
    shape = selection_shape(page)
    polygon = np.column_stack([shape["lasso"][0]["x"], shape["lasso"][0]["y"]])
    table = working_table(run_dir)
    xs = table[S.VARIABILITY].to_numpy(dtype=float, na_value=np.nan)
    ys = table[S.CONFIDENCE].to_numpy(dtype=float, na_value=np.nan)
    inside = table[points_in_polygon(xs, ys, polygon)]
    # the selection as a gallery; pick its first page
    page.locator("[data-testid=\"stButtonGroup\"] button", has_text="gallery").first.click()  # type: ignore[attr-defined]
    page.get_by_role("button", name="Pick this page").wait_for()  # type: ignore[attr-defined]
    wait_idle(page)
    page.get_by_role("button", name="Pick this page").click()  # type: ignore[attr-defined]
    page.get_by_text("24 picked", exact=True).wait_for()  # type: ignore[attr-defined]
    wait_idle(page)
    shot(page, "gallery")
    first_page = inside.iloc[:24]  # the gallery lists the selection in table order
    # what "relabel to the suggested label" must do, computed here from the table
    # the analysis' suggested label (the epochs' majority prediction; docs/metrics.md)
    pred = first_page[S.SUGGESTED_LABEL].astype("Int64")
    want = first_page[pred.notna() & (pred != first_page[S.LABEL].astype("Int64"))]
    want = dict(zip(want[S.EXAMPLE_ID].tolist(), want[S.SUGGESTED_LABEL].astype(int).tolist(), strict=True))
    assert want, "the page should hold examples whose prediction differs from their label"
    # "relabel to the suggested label" is the default action: apply to the picks, confirm the count
    page.get_by_role("button", name="Apply to 24…").click()  # type: ignore[attr-defined]
    confirm = page.get_by_role("button", name=f"Confirm: {len(want):,} examples")  # type: ignore[attr-defined]
    confirm.wait_for()
    assert page.get_by_text(re.compile(rf"Relabel to the suggested label: {len(want):,} examples")).count() == 1  # type: ignore[attr-defined]
    shot(page, "bulk_confirm")
    confirm.click()
    undo = page.get_by_role("button", name=re.compile(r"Undo the last bulk action"))  # type: ignore[attr-defined]
    undo.wait_for()
    wait_idle(page)
    no_exception(page)
    journal = FlagJournal(run_dir)
    assert journal.count() == n_journal + len(want)  # one row per changed example, one write
    latest = journal.latest().set_index(S.EXAMPLE_ID)
    assert {int(i): int(latest.loc[i, "new_label"]) for i in want} == want
    # undo appends rows that bring the journal's state back to where it was
    undo.click()
    page.get_by_role("button", name=re.compile(r"Undo the last bulk action")).wait_for(state="detached")  # type: ignore[attr-defined]
    wait_idle(page)
    no_exception(page)
    assert FlagJournal(run_dir).count() == n_journal + 2 * len(want)
    after = working_table(run_dir)[[S.EXAMPLE_ID, "flag", "new_label", "note"]]
    pd.testing.assert_frame_equal(after, before)


def test_keyboard_queue_reviews_20_suspects(server: Server, page: object, run_dir: Path) -> None:
    before = working_table(run_dir).set_index(S.EXAMPLE_ID)
    suspects = before[before[S.DIAGNOSIS].astype(str) == "suspect_mislabeled"]
    order = suspects.sort_values(S.AUM, kind="stable").index.tolist()
    assert len(order) >= 21
    open_page(page, f"{server.url}/queue")
    page.get_by_text(f"Example 1 of {len(order):,}").wait_for()  # type: ignore[attr-defined]
    keys = ["1", "a", "4", "2", "j"] * 4  # mislabeled, accept suggestion, keep, ood, skip
    # keys reach the page once it has the focus: a click on an empty spot (right of the title)
    page.bring_to_front()  # type: ignore[attr-defined]
    title = page.locator("h1").first.bounding_box()  # type: ignore[attr-defined]
    page.mouse.click(title["x"] + title["width"] - 5, title["y"] + 5)  # type: ignore[attr-defined]
    wait_idle(page, settle=1.0)
    n_journal = FlagJournal(run_dir).count()
    for i, key in enumerate(keys):
        page.keyboard.press(key)  # type: ignore[attr-defined]
        step = page.get_by_text(f"Example {i + 2} of {len(order):,}")  # type: ignore[attr-defined]
        if i == 0:
            try:
                step.wait_for(timeout=15_000)
            except Exception:  # noqa: BLE001 - the first key came before the page had the keys
                assert FlagJournal(run_dir).count() == n_journal  # nothing was decided
                page.mouse.click(title["x"] + title["width"] - 5, title["y"] + 5)  # type: ignore[attr-defined]
                wait_idle(page, settle=1.0)
                page.keyboard.press(key)  # type: ignore[attr-defined]
        step.wait_for()
    wait_idle(page)
    no_exception(page)
    shot(page, "queue")
    after = working_table(run_dir).set_index(S.EXAMPLE_ID)
    for example_id, key in zip(order[:20], keys, strict=True):
        got, was = after.loc[example_id], before.loc[example_id]
        want_flag = {"1": "mislabeled", "4": "keep", "2": "ood"}.get(key, was["flag"])
        want_label = int(was[S.FINAL_PRED]) if key == "a" else was["new_label"]
        assert (got["flag"] if isinstance(got["flag"], str) else None) == (
            want_flag if isinstance(want_flag, str) else None), (example_id, key)
        assert (None if pd.isna(got["new_label"]) else int(got["new_label"])) == (
            None if pd.isna(want_label) else int(want_label)), (example_id, key)
    # the 21st is untouched, and is the one shown now
    assert after.loc[order[20], "flag"] is before.loc[order[20], "flag"] or (
        pd.isna(after.loc[order[20], "flag"]) and pd.isna(before.loc[order[20], "flag"]))


def test_the_wheel_scrolls_the_page_unless_the_chart_is_focused_or_ctrl_is_held(
    server: Server, page: object,
) -> None:
    open_page(page, server.url, ready=MAP_READY)

    def view() -> list[float]:
        return page.locator(".dm-scatter").first.evaluate(  # type: ignore[attr-defined]
            "e => { const v = e.__model.mem.view; return [v.x0, v.x1, v.y0, v.y1]; }")

    full = view()
    area = page.locator(MAP_READY).first.bounding_box()  # type: ignore[attr-defined]
    page.mouse.move(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)  # type: ignore[attr-defined]
    y0 = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollTop")  # type: ignore[attr-defined]
    page.mouse.wheel(0, 300)  # type: ignore[attr-defined]
    time.sleep(0.5)
    assert view() == full  # no zoom
    y1 = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollTop")  # type: ignore[attr-defined]
    assert y1 > y0  # the page scrolled
    area = page.locator(MAP_READY).first.bounding_box()  # type: ignore[attr-defined]
    page.mouse.move(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)  # type: ignore[attr-defined]
    page.keyboard.down("Control")  # type: ignore[attr-defined]
    page.mouse.wheel(0, -200)  # type: ignore[attr-defined]
    page.keyboard.up("Control")  # type: ignore[attr-defined]
    time.sleep(0.3)
    zoomed = view()
    assert zoomed[1] - zoomed[0] < full[1] - full[0]  # Ctrl + wheel zooms in


def test_example_view_at_1024x768_has_no_overlap(server: Server, chromium: object) -> None:
    context = chromium.new_context(viewport={"width": 1024, "height": 768})  # type: ignore[attr-defined]
    try:
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        open_page(pg, f"{server.url}/review")
        grid = pg.locator('[data-testid="stDataFrame"]').first
        box = grid.bounding_box()
        pg.mouse.click(box["x"] + 18, box["y"] + 35 + 17)
        pg.get_by_text(re.compile(r"^Example ")).first.wait_for()
        pg.locator(".dm-svg svg circle").first.wait_for()
        wait_idle(pg)
        image = pg.locator('[data-testid="stImage"] img').first
        metrics = pg.locator('[data-testid="stTable"]').first
        trajectory = pg.locator(".dm-svg svg").first
        boxes = {name: loc.bounding_box() for name, loc in
                 (("image", image), ("metrics", metrics), ("trajectory", trajectory))}
        assert all(b is not None and b["width"] > 40 and b["height"] > 40 for b in boxes.values()), boxes
        # every row of facts is in the page (a static table: no inner scroll hiding the OOD scores)
        text = pg.locator('[data-testid="stTable"]').first.inner_text().replace("\u200b", "")
        assert "ood_mahalanobis" in text and "diagnosis" in text
        # no value is cut: the table needs no horizontal scroll, and every cell shows its text
        # whole (long values wrap inside the column)
        cut = metrics.evaluate(
            """e => { const wrap = e.querySelector('table').parentElement;
                      const out = wrap.scrollWidth > wrap.clientWidth + 1 ? ['table scrolls'] : [];
                      for (const c of e.querySelectorAll('th, td')) {
                        if (c.scrollWidth > c.clientWidth + 1) out.push(c.innerText);
                      }
                      return out; }""")
        assert cut == [], cut
        assert "suspect_mislabeled" in text  # the first suspect's diagnosis, shown whole

        def overlap(a: dict, b: dict) -> bool:
            return (a["x"] < b["x"] + b["width"] - 1 and b["x"] < a["x"] + a["width"] - 1
                    and a["y"] < b["y"] + b["height"] - 1 and b["y"] < a["y"] + a["height"] - 1)

        names = list(boxes)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                assert not overlap(boxes[a], boxes[b]), (a, b, boxes[a], boxes[b])
        pg.get_by_text(re.compile(r"^Example ")).first.scroll_into_view_if_needed()
        shot(pg, "example_view_1024x768")
    finally:
        context.close()


CUT_TEXT_JS = """root => {
    // every element under root (root included) whose text does not fit its box: an ellipsis, a
    // clipped or an overflowing text all show as scrollWidth > clientWidth; an input shows its value
    const cut = [];
    for (const e of [root, ...root.querySelectorAll('*')]) {
        const text = (e.tagName === 'INPUT' ? e.value : e.innerText || '').trim();
        if (!text || e.clientWidth === 0) continue;  // no text, or not laid out as a box
        if (e.scrollWidth > e.clientWidth + 1) cut.push(`${text} (${e.scrollWidth} > ${e.clientWidth} px)`);
    }
    // and the text itself lies inside root's box
    const range = document.createRange();
    range.selectNodeContents(root);
    const t = range.getBoundingClientRect(), r = root.getBoundingClientRect();
    if (t.width && (t.left < r.left - 1 || t.right > r.right + 1)) cut.push(`${root.innerText} (outside its box)`);
    return cut;
}"""
"""The texts cut in an element: an empty list when every text in it shows whole."""


def _bulk_box(pg: object, what: str) -> object:
    """The innermost block holding the select ``bulk action on {what}`` and its "Apply to N…" button."""
    select = pg.get_by_role("combobox", name=f"bulk action on {what}", exact=True)  # type: ignore[attr-defined]
    apply = pg.get_by_role("button", name=re.compile(r"^Apply to [\d,]+…$"))  # type: ignore[attr-defined]
    blocks = pg.locator('[data-testid="stVerticalBlock"], [data-testid="stHorizontalBlock"]')  # type: ignore[attr-defined]
    return blocks.filter(has=select).filter(has=apply).last


def _bulk_action_labels_are_whole(pg: object, what: str) -> list[str]:
    """Open the bulk-action select named ``bulk action on {what}``; every option's label must show
    whole. Returns the option labels in their order."""
    select = pg.get_by_role("combobox", name=f"bulk action on {what}", exact=True)  # type: ignore[attr-defined]
    select.scroll_into_view_if_needed()
    select.click()
    options = pg.get_by_role("option")  # type: ignore[attr-defined]
    options.first.wait_for()
    labels = [o.inner_text().strip() for o in options.all()]
    for option in options.all():
        assert option.evaluate(CUT_TEXT_JS) == [], (what, option.inner_text())
    pg.keyboard.press("Escape")  # type: ignore[attr-defined]
    options.first.wait_for(state="detached")
    return labels


@pytest.mark.parametrize("viewport", [(1024, 768), (1280, 800)], ids=["1024x768", "1280x800"])
def test_bulk_action_labels_are_whole_at_small_windows(
    server: Server, chromium: object, viewport: tuple[int, int],
) -> None:
    from analysis.bulk import ActionKind
    from dashboard.bulk_actions import ACTIONS

    width, height = viewport
    context = chromium.new_context(viewport={"width": width, "height": height})  # type: ignore[attr-defined]
    try:
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        open_page(pg, f"{server.url}/review")
        # the dropdown offers every action the analysis knows, each label whole
        labels = _bulk_action_labels_are_whole(pg, "the whole list")
        assert set(ACTIONS) == set(get_args(ActionKind))
        assert labels == list(ACTIONS.values())
        # each action chosen: the box shows its label, the flag or class select and the "Apply to N…"
        # button whole
        select = pg.get_by_role("combobox", name="bulk action on the whole list", exact=True)
        box = _bulk_box(pg, "the whole list")
        for label in labels:
            choose_option(pg, select, label)
            wait_idle(pg)
            assert select.input_value() == label
            assert box.evaluate(CUT_TEXT_JS) == [], label
            second = {ACTIONS["flag"]: "flag", ACTIONS["relabel"]: "class"}.get(label)
            if second:
                assert box.get_by_role("combobox", name=second, exact=True).is_visible()
        SHOTS.mkdir(parents=True, exist_ok=True)
        box.screenshot(path=str(SHOTS / f"bulk_actions_{width}x{height}.png"))
        # the gallery's picks have the same box, under a longer name
        pg.locator('[data-testid="stButtonGroup"] button', has_text="gallery").first.click()
        pg.get_by_role("button", name="Pick this page").wait_for()
        wait_idle(pg)
        pg.get_by_role("button", name="Pick this page").click()
        pg.get_by_text("24 picked", exact=True).wait_for()
        wait_idle(pg)
        assert _bulk_action_labels_are_whole(pg, "the gallery's picks") == labels
        assert _bulk_box(pg, "the gallery's picks").evaluate(CUT_TEXT_JS) == []
        no_exception(pg)
    finally:
        context.close()


def test_one_clear_selection_control_clears_the_chart_and_the_table(server: Server, page: object) -> None:
    open_page(page, server.url, ready=MAP_READY)
    clear = page.locator('.dm-tools [data-action="clear"]')  # type: ignore[attr-defined]
    assert clear.is_disabled()  # nothing to clear yet
    area = page.locator(MAP_READY).first.bounding_box()  # type: ignore[attr-defined]
    drag(page, area, [(0.25, 0.2), (0.75, 0.15), (0.9, 0.55), (0.55, 0.85), (0.2, 0.6), (0.25, 0.2)])
    page.get_by_text(re.compile(r"selected by lasso")).wait_for()  # type: ignore[attr-defined]
    wait_idle(page)
    # pick a row of the selection table (the visible one; the page holds hidden tables): its example opens
    grid = page.locator('[data-testid="stDataFrame"]:visible').first  # type: ignore[attr-defined]
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # type: ignore[attr-defined]
    page.get_by_text(re.compile(r"^Example ")).first.wait_for()  # type: ignore[attr-defined]
    wait_idle(page)
    # with the table's toolbar shown (hover), one control on the page is named "Clear selection":
    # the chart's (the table's own toolbar button would clear only the row pick)
    box = grid.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 60)  # type: ignore[attr-defined]
    page.locator('[data-testid="stElementToolbar"]:visible').first.wait_for()  # type: ignore[attr-defined]
    visible = [b for b in page.get_by_role("button", name="Clear selection").all() if b.is_visible()]  # type: ignore[attr-defined]
    assert len(visible) == 1, len(visible)
    assert visible[0].get_attribute("data-action") == "clear"
    assert page.locator('[data-testid="stElementToolbar"]:visible [aria-label="Show/hide columns"]').first.is_visible()  # type: ignore[attr-defined]
    shot(page, "data_map_selection_table")
    visible[0].click()
    page.get_by_text("Draw a lasso").wait_for()  # type: ignore[attr-defined]
    wait_idle(page)
    # the chart's selection, the table and the example it opened are gone
    assert selection_shape(page) is None
    assert page.get_by_text(re.compile(r"selected by")).count() == 0  # type: ignore[attr-defined]
    assert page.get_by_text(re.compile(r"^Example ")).count() == 0  # type: ignore[attr-defined]
    assert page.locator('[data-testid="stDataFrame"]:visible').count() == 0  # type: ignore[attr-defined]
    assert clear.is_disabled()
    no_exception(page)


def test_thresholds_stay_open_across_pages_and_reset_to_the_analysis_values(
    server: Server, page: object, run_dir: Path,
) -> None:
    sidebar = page.locator('[data-testid="stSidebar"]')  # type: ignore[attr-defined]
    expander = sidebar.locator("details").filter(has_text="Thresholds").first

    def is_open() -> bool:
        return expander.get_attribute("open") is not None

    def slider_input(label: str) -> object:
        return sidebar.locator('[data-testid="stSlider"]').filter(has_text=label).first.locator('input[type="range"]')

    def slider_value(label: str) -> float:
        return float(slider_input(label).input_value())  # type: ignore[attr-defined]

    open_page(page, server.url, ready=MAP_READY)
    assert not is_open()
    expander.locator("summary").click()
    wait_idle(page, settle=0.8)
    assert is_open() and slider_value("confidence threshold") == pytest.approx(0.5)
    reset = sidebar.get_by_role("button", name="Reset to analysis values")
    assert reset.is_disabled()  # at the analysis' values
    # move the confidence threshold with the keyboard: 0.50 → 0.55
    slider_input("confidence threshold").focus()  # type: ignore[attr-defined]
    for _ in range(5):
        page.keyboard.press("ArrowRight")  # type: ignore[attr-defined]
    wait_idle(page, settle=1.0)
    assert slider_value("confidence threshold") == pytest.approx(0.55)
    # a page switch keeps the expander open, with the moved value
    for title in ("OOD", "Review", "Data map"):
        nav(page, title)
        assert is_open(), title
        assert slider_value("confidence threshold") == pytest.approx(0.55), title
    no_exception(page)
    # the regions follow the moved threshold: more hard-to-learn than the analysis gave
    table = working_table(run_dir)
    pick_multiselect(page, "region", S.HARD)
    n_moved = shown_count(page)
    assert n_moved > int((table[S.REGION] == S.HARD).sum())
    shot(page, "thresholds_moved")
    reset = sidebar.get_by_role("button", name="Reset to analysis values")
    assert reset.is_enabled()
    reset.click()
    wait_idle(page, settle=1.0)
    assert slider_value("confidence threshold") == pytest.approx(0.5)
    assert shown_count(page) == int((table[S.REGION] == S.HARD).sum())
    assert sidebar.get_by_role("button", name="Reset to analysis values").is_disabled()
    # closed, it stays closed on another page
    expander.locator("summary").click()
    wait_idle(page, settle=0.8)
    nav(page, "Review")
    assert not is_open()
    page.get_by_role("button", name="Reset filters").click()  # type: ignore[attr-defined]
    wait_idle(page, settle=0.8)
    no_exception(page)
