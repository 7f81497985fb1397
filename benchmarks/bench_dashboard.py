"""Dashboard speed in a real browser on synthetic runs of 10k, 100k and 1M examples.

For each size: builds (or reuses) an analysed synthetic run under ``runs/bench-dashboard/``,
starts ``datamap serve`` on it, drives headless Chromium with Playwright and measures

* **map (cold)**: first page open after the server started (table loaded from disk) until the
  script has finished and the data map (``dashboard/scatter.js``) has drawn its points;
* **map (warm)**: the same in a new browser session (cached table);
* **filter**: clicking a sidebar filter option until the new count is shown and the app is idle;
* **lasso → table**: mouse-up of a lasso over the map until the selection table is shown and the
  app is idle (the polygon is applied to every filtered row on the server);
* **row → example**: a click on the table's first row until the example view (with its p(gold)
  trajectory) is shown and the app is idle;
* **OOD page**: the OOD page in a new tab until its score histogram and ROC/PR curves are drawn
  and the script has finished;
* **decision → next example**: on the keyboard review queue (suspected mislabeled), the key `4`
  (flag ``keep``, one journal write) until the next example is shown and the app is idle;
* **gallery page**: on the Review page shown as a gallery, "Next ▶" until the next page's 24 tiles
  (thumbnails decoded on the server) are shown and the app is idle.

Two reference pages, opened the same way, are timed right before every warm map load, so each
size's ratios to them compare runs made under the same machine load:

* the **floor**: a bare Streamlit page (a title and a line of text): what any page costs;
* **Plotly**: a bare page with one 500-point Plotly scatter (``st.plotly_chart`` with selection
  events): the least a map drawn with Plotly could cost, which the maps used before they were
  drawn by the dashboard's own chart. The server runs with ``DATAMAP_TIMINGS=1``; the median Python time of a
map page rerun is read from its log.

Medians of ``--repeat`` runs. Usage::

    .venv/bin/python benchmarks/bench_dashboard.py            # 10k, 100k, 1M
    .venv/bin/python benchmarks/bench_dashboard.py --sizes 10000 100000 --repeat 5

Targets (issue 5): map under 3 s at 100k and under 8 s at 1M; filter and selection updates
under 1 s at 100k. Issue 11: decision → next example under 1 s at 100k; a gallery page under 1.5 s
at 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import schema as S  # noqa: E402
from benchmarks.synthetic_runs import build_run  # noqa: E402

CHROMIUM = os.environ.get("DATAMAP_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
APP_READY = '[data-testid="stApp"][data-test-script-state="notRunning"]'
MAP_READY = ".dm-scatter[data-ready] .dm-plot"
OOD_READY = (
    '[data-testid="stColumn"] .dm-svg svg polyline, '
    '[data-testid="stColumn"] [data-testid="stPlotlyChart"] .js-plotly-plot .nsewdrag'
)
"""The OOD page's ROC curve drawn (an SVG; a Plotly chart in older versions): the histogram
above it is drawn by then."""
EXAMPLE_READY = '.dm-svg svg circle, [data-testid="stPlotlyChart"] .js-plotly-plot .nsewdrag'
"""The example view's p(gold) trajectory, drawn (an inline SVG; a Plotly chart in older versions)."""
PLOTLY_READY = '[data-testid="stPlotlyChart"] .js-plotly-plot .nsewdrag'
METRIC = '[data-testid="stSidebar"] [data-testid="stMetricValue"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run: Path, port: int, log: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **extra_env)
    env.pop("DISPLAY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis.cli", "serve", str(run), "--port", str(port), "--no-browser"],
        cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"server did not start; see {log}")


def wait_idle(page: object) -> None:
    page.wait_for_selector(APP_READY, timeout=120_000)  # type: ignore[attr-defined]


def time_map(
    browser: object, url: str, context: object | None = None, ready: str = MAP_READY
) -> tuple[float, object, object]:
    """Open a page in a new tab (of ``context``: cached assets; else a fresh context) and time it
    until ``ready`` is visible and the script has finished."""
    if context is None:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    page = context.new_page()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(ready, state="visible", timeout=120_000)
    wait_idle(page)
    return time.perf_counter() - t0, context, page


def time_filter(page: object, option: str) -> float:
    before = page.locator(METRIC).first.inner_text()  # type: ignore[attr-defined]
    box = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').filter(has_text="region").first  # type: ignore[attr-defined]
    box.locator("input").click()
    opt = page.get_by_role("option", name=option, exact=True)  # type: ignore[attr-defined]
    opt.wait_for()
    t0 = time.perf_counter()
    opt.click()
    page.wait_for_function(  # type: ignore[attr-defined]
        """(before) => {
            const m = document.querySelector('[data-testid="stSidebar"] [data-testid="stMetricValue"]');
            const app = document.querySelector('[data-testid="stApp"]');
            return m && m.innerText !== before && app.dataset.testScriptState === "notRunning";
        }""", arg=before, timeout=120_000,
    )
    page.wait_for_selector(MAP_READY, state="visible")  # type: ignore[attr-defined]
    dt = time.perf_counter() - t0
    page.keyboard.press("Escape")  # type: ignore[attr-defined]
    page.locator("h1").first.click()  # blur the multiselect before resetting  # type: ignore[attr-defined]
    time.sleep(0.5)
    wait_idle(page)
    page.get_by_role("button", name="Reset filters").click()  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        """(before) => {
            const m = document.querySelector('[data-testid="stSidebar"] [data-testid="stMetricValue"]');
            const app = document.querySelector('[data-testid="stApp"]');
            return m && m.innerText === before && app.dataset.testScriptState === "notRunning";
        }""", arg=before, timeout=120_000,
    )
    time.sleep(0.5)
    wait_idle(page)
    page.wait_for_selector(MAP_READY, state="visible")  # type: ignore[attr-defined]
    return dt


def time_lasso(page: object) -> tuple[float, int, float]:
    area = page.locator(MAP_READY).first.bounding_box()  # type: ignore[attr-defined]
    x0, y0, w, h = area["x"], area["y"], area["width"], area["height"]
    pts = [(0.3, 0.3), (0.7, 0.25), (0.85, 0.6), (0.5, 0.8), (0.25, 0.6), (0.3, 0.3)]
    page.mouse.move(x0 + pts[0][0] * w, y0 + pts[0][1] * h)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    for fx, fy in pts[1:]:
        page.mouse.move(x0 + fx * w, y0 + fy * h, steps=6)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    page.mouse.up()  # type: ignore[attr-defined]
    label = page.get_by_text(re.compile(r"selected by lasso")).first  # type: ignore[attr-defined]
    label.wait_for(timeout=120_000)
    page.wait_for_selector('[data-testid="stDataFrame"]', timeout=120_000)  # type: ignore[attr-defined]
    wait_idle(page)
    dt = time.perf_counter() - t0
    n = int(label.inner_text().split(" selected")[0].replace(",", ""))
    # open the first listed example: its view (metrics, image, p(gold) trajectory) appears
    table = page.locator('[data-testid="stDataFrame"]').first  # type: ignore[attr-defined]
    table.scroll_into_view_if_needed()
    grid = table.bounding_box()
    t1 = time.perf_counter()
    page.mouse.click(grid["x"] + 18, grid["y"] + 35 + 17)  # type: ignore[attr-defined]
    page.get_by_text(re.compile(r"^Example ")).first.wait_for(timeout=120_000)  # type: ignore[attr-defined]
    page.wait_for_selector(EXAMPLE_READY, state="visible", timeout=120_000)  # type: ignore[attr-defined]
    wait_idle(page)
    dt_example = time.perf_counter() - t1
    # the page's button (the table's toolbar has a "Clear selection" of its own, for its rows)
    page.locator('[data-testid="stBaseButton-secondary"]', has_text="Clear selection").click()  # type: ignore[attr-defined]
    page.evaluate("window.scrollTo(0, 0)")  # type: ignore[attr-defined]
    page.get_by_text("Draw a lasso").wait_for(timeout=120_000)  # type: ignore[attr-defined]
    wait_idle(page)
    return dt, n, dt_example


def time_review_loop(context: object, url: str) -> tuple[float, float]:
    """(decision → next example, gallery page) in a new tab of ``context``."""
    page = context.new_page()  # type: ignore[attr-defined]
    page.goto(url + "/queue")
    page.get_by_text(re.compile(r"^Example 1 of")).first.wait_for(timeout=120_000)
    wait_idle(page)
    title = page.locator("h1").first.bounding_box()
    page.mouse.click(title["x"] + title["width"] - 5, title["y"] + 5)  # the page takes the keys
    wait_idle(page)
    t0 = time.perf_counter()
    page.keyboard.press("4")
    page.get_by_text(re.compile(r"^Example 2 of")).first.wait_for(timeout=120_000)
    wait_idle(page)
    decision = time.perf_counter() - t0
    page.goto(url + "/review")
    wait_idle(page)
    page.locator('[data-testid="stButtonGroup"] button', has_text="gallery").first.click()
    page.get_by_role("button", name="Pick this page").wait_for(timeout=120_000)
    wait_idle(page)
    t1 = time.perf_counter()
    page.get_by_role("button", name="Next ▶").click()
    page.get_by_text(re.compile(r"Page 2 of")).first.wait_for(timeout=120_000)
    page.locator('[data-testid="stCheckbox"] p').nth(23).wait_for(timeout=120_000)
    wait_idle(page)
    gallery = time.perf_counter() - t1
    page.close()
    return decision, gallery


FLOOR_APP = """
import streamlit as st
st.title("floor")
st.markdown('<div id="floor-ready">a bare page</div>', unsafe_allow_html=True)
"""
PLOTLY_APP = """
import numpy as np, plotly.graph_objects as go, streamlit as st
st.title("plotly")
n = 500
r = np.random.default_rng(0)
fig = go.Figure(go.Scattergl(x=r.random(n), y=r.random(n), mode="markers", customdata=np.arange(n)))
fig.update_layout(dragmode="lasso")
st.plotly_chart(fig, on_select="rerun", selection_mode=("lasso", "box", "points"), key="c")
"""


class Reference:
    """A reference page's server and browser context, kept open for the whole benchmark."""

    def __init__(self, base: Path, browser: object, name: str, source: str, ready: str) -> None:
        app = base / f"reference_{name}.py"
        app.write_text(source)
        port = free_port()
        self.ready = ready
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false"],
            cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        self.url = f"http://127.0.0.1:{port}"
        _, self.ctx, first = time_map(browser, self.url, ready=ready)  # cold: fills the asset cache
        first.close()  # type: ignore[attr-defined]
        self.browser = browser

    def time(self) -> float:
        """Time to the shown page in a new tab (cached assets)."""
        t, _, page = time_map(self.browser, self.url, self.ctx, ready=self.ready)
        page.close()  # type: ignore[attr-defined]
        return t

    def close(self) -> None:
        self.ctx.close()  # type: ignore[attr-defined]
        self.proc.terminate()
        self.proc.wait(timeout=30)


def server_script_ms(log: Path) -> float | None:
    """Median Python time of the full map-page reruns the server logged (``DATAMAP_TIMINGS``)."""
    vals = [float(m) for m in re.findall(r"datamap timings \(app\).* script=(\d+)ms", log.read_text())]
    return statistics.median(vals) if vals else None


def bench_size(
    n: int, base: Path, repeat: int, browser: object, floor_page: Reference, plotly_page: Reference
) -> dict[str, object]:
    run = build_run(n, base)
    port = free_port()
    log = base / f"server-n{n}.log"
    proc = start_server(run, port, log, DATAMAP_TIMINGS="1")
    url = f"http://127.0.0.1:{port}"
    try:
        cold, ctx, first = time_map(browser, url)
        first.close()  # type: ignore[attr-defined]
        floor, plotly, warm, filt, lasso, example, ood, n_sel = [], [], [], [], [], [], [], 0
        decision, gallery = [], []
        for _ in range(repeat):
            floor.append(floor_page.time())
            plotly.append(plotly_page.time())
            t, ctx, page = time_map(browser, url, ctx)
            warm.append(t)
            filt.append(time_filter(page, S.HARD))
            dt, n_sel, dt_example = time_lasso(page)
            lasso.append(dt)
            example.append(dt_example)
            page.close()  # type: ignore[attr-defined]
            t, ctx, page = time_map(browser, url + "/ood", ctx, ready=OOD_READY)
            ood.append(t)
            page.close()  # type: ignore[attr-defined]
            dt_decision, dt_gallery = time_review_loop(ctx, url)
            decision.append(dt_decision)
            gallery.append(dt_gallery)
        ctx.close()  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "n_examples": n,
        "n_rows": n + 2 * min(max(n // 20, 500), 20_000),
        "floor_s": statistics.median(floor),
        "map_cold_s": cold,
        "map_warm_s": statistics.median(warm),
        "map_warm_runs_s": warm,
        "floor_runs_s": floor,
        "plotly_s": statistics.median(plotly),
        "plotly_runs_s": plotly,
        "filter_s": statistics.median(filt),
        "lasso_s": statistics.median(lasso),
        "lasso_selected": n_sel,
        "example_s": statistics.median(example),
        "ood_page_s": statistics.median(ood),
        "decision_s": statistics.median(decision),
        "gallery_page_s": statistics.median(gallery),
        "server_script_ms": server_script_ms(log),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-dashboard")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench_dashboard.json")
    args = ap.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        floor_page = Reference(args.runs, browser, "floor", FLOOR_APP, "#floor-ready")
        plotly_page = Reference(args.runs, browser, "plotly", PLOTLY_APP, PLOTLY_READY)
        try:
            for n in args.sizes:
                print(f"n = {n:,} ...", flush=True)
                results.append(bench_size(n, args.runs, args.repeat, browser, floor_page, plotly_page))
                print("  " + json.dumps(results[-1]), flush=True)
        finally:
            floor_page.close()
            plotly_page.close()
        browser.close()
    floor = statistics.median([t for r in results for t in r["floor_runs_s"]])  # type: ignore[attr-defined]
    plotly = statistics.median([t for r in results for t in r["plotly_runs_s"]])  # type: ignore[attr-defined]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"floor_s": floor, "plotly_s": plotly, "sizes": results}, indent=2) + "\n")
    print()
    print("| examples (rows) | map, cold | map, warm (× floor, × Plotly page) | filter change "
          "| lasso → table (selected) | row → example | OOD page (warm) | Python per rerun "
          "| decision → next example | gallery page |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| bare Streamlit page (floor) | — | {floor:.2f} s | — | — | — | — | — | — | — |")
    print(f"| bare page + one 500-point Plotly chart | — | {plotly:.2f} s | — | — | — | — | — | — | — |")
    for r in results:
        py = f"{r['server_script_ms']:.0f} ms" if r["server_script_ms"] is not None else "—"
        print(f"| {r['n_examples']:,} ({r['n_rows']:,}) | {r['map_cold_s']:.2f} s | {r['map_warm_s']:.2f} s "
              f"({r['map_warm_s'] / r['floor_s']:.2f}×, {r['map_warm_s'] / r['plotly_s']:.2f}×) "
              f"| {r['filter_s']:.2f} s | {r['lasso_s']:.2f} s ({r['lasso_selected']:,}) "
              f"| {r['example_s']:.2f} s | {r['ood_page_s']:.2f} s | {py} "
              f"| {r['decision_s']:.2f} s | {r['gallery_page_s']:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
