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
  (flag ``keep``, one journal write) until the next example is shown (header, facts, image decoded)
  and until the page has settled (the evidence below it drawn, the app idle); ``--decisions`` in a
  row per tab, each tab on examples no earlier tab has shown;
* **gallery page**: on the Review page shown as a gallery, "Next ▶" until all 24 tiles show a new
  caption and a decoded thumbnail, and until the app is idle; ``--turns`` per tab;
* for both, the CPU seconds of the server's process tree and of the Chromium processes per action
  (``/proc``): the work, whatever the machine's load; the 1-minute load average before and after
  each size is printed next to them.

The runs are built with ``images=True`` (every row names one of 1,000 small PNG files).

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
    nice -n 5 .venv/bin/python benchmarks/bench_dashboard.py --only review   # queue and gallery only

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    page.wait_for_selector('[data-testid="stDataFrame"]:visible', timeout=120_000)  # type: ignore[attr-defined]
    wait_idle(page)
    dt = time.perf_counter() - t0
    n = int(label.inner_text().split(" selected")[0].replace(",", ""))
    # open the first listed example: its view (metrics, image, p(gold) trajectory) appears
    table = page.locator('[data-testid="stDataFrame"]:visible').first  # type: ignore[attr-defined]
    table.scroll_into_view_if_needed()
    grid = table.bounding_box()
    t1 = time.perf_counter()
    page.mouse.click(grid["x"] + 18, grid["y"] + 35 + 17)  # type: ignore[attr-defined]
    page.get_by_text(re.compile(r"^Example ")).first.wait_for(timeout=120_000)  # type: ignore[attr-defined]
    page.wait_for_selector(EXAMPLE_READY, state="visible", timeout=120_000)  # type: ignore[attr-defined]
    wait_idle(page)
    dt_example = time.perf_counter() - t1
    # the chart toolbar's one clear control (it also clears the selection table and the example)
    page.locator('.dm-tools [data-action="clear"]').first.click()  # type: ignore[attr-defined]
    page.evaluate("window.scrollTo(0, 0)")  # type: ignore[attr-defined]
    page.get_by_text("Draw a lasso").wait_for(timeout=120_000)  # type: ignore[attr-defined]
    wait_idle(page)
    return dt, n, dt_example


QUEUE_SHOWN = """([k, before]) => {
    const table = document.querySelector('[data-testid="stTable"]');
    const img = document.querySelector('[data-testid="stImage"] img');
    return document.body.innerText.includes(`Example ${k} of`) && table && table.innerText !== before
        && (!img || (img.complete && img.naturalWidth > 0));
}"""
"""The queue shows example ``k``: its header, its facts (the table differs from the last one's) and
its image decoded in the browser."""
GALLERY_SHOWN = """([k, before]) => {
    const boxes = [...document.querySelectorAll('[data-testid="stCheckbox"]')].map(b => b.innerText);
    const imgs = [...document.querySelectorAll('[data-testid="stImage"] img')];
    return document.body.innerText.includes(`Page ${k} of`) && boxes.length >= 24
        && boxes.every(t => !before.includes(t))
        && imgs.length >= 24 && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""
"""The gallery shows page ``k``: every tile's caption is new and every thumbnail is decoded."""


def focus_keys(page: object) -> None:
    """Give the page the keyboard (a click on an empty spot right of the title)."""
    title = page.locator("h1").first.bounding_box()  # type: ignore[attr-defined]
    page.mouse.click(title["x"] + title["width"] - 5, title["y"] + 5)  # type: ignore[attr-defined]
    time.sleep(0.5)
    wait_idle(page)


def time_queue(
    context: object, url: str, decisions: int, log: ServerLog, server_pid: int, skip: int = 0
) -> tuple[list[float], ...]:
    """(decision → next example shown, decision → page settled, server Python per decision) of
    ``decisions`` keypresses ``4`` (flag ``keep``: one journal write each) in a row, in a new tab
    of ``context``; and the work per decision (:class:`Work`). ``skip`` examples are passed over
    first (key ``J``, untimed), so that each tab decides on examples no earlier tab has shown (their
    evidence is not cached yet)."""
    page = context.new_page()  # type: ignore[attr-defined]
    page.goto(url + "/queue")
    page.get_by_text(re.compile(r"^Example 1 of")).first.wait_for(timeout=120_000)
    wait_idle(page)
    focus_keys(page)
    page.keyboard.press("j")  # untimed: makes sure the keys reach the page (J: next, no write)
    try:
        page.get_by_text(re.compile(r"^Example 2 of")).first.wait_for(timeout=15_000)
    except Exception:  # noqa: BLE001 - the key came before the page had the keyboard
        focus_keys(page)
        page.keyboard.press("j")
        page.get_by_text(re.compile(r"^Example 2 of")).first.wait_for(timeout=120_000)
    wait_idle(page)
    for k in range(3, 3 + skip):
        page.keyboard.press("j")  # type: ignore[attr-defined]
        page.get_by_text(re.compile(rf"^Example {k} of")).first.wait_for(timeout=120_000)  # type: ignore[attr-defined]
        wait_idle(page)
    work = Work(server_pid)
    rows = []
    for k in range(3 + skip, 3 + skip + decisions):
        before = page.locator('[data-testid="stTable"]').first.inner_text()  # type: ignore[attr-defined]
        rows.append(_time_action(
            page, work, log,
            act=lambda: page.keyboard.press("4"),  # type: ignore[attr-defined]
            shown=lambda k=k, before=before: page.wait_for_function(  # type: ignore[attr-defined]
                QUEUE_SHOWN, arg=[k, before], timeout=120_000)))
    page.close()  # type: ignore[attr-defined]
    return tuple(list(col) for col in zip(*rows, strict=True))


def _time_action(page: Any, work: Work, log: ServerLog, *, act: Callable[[], object],
                 shown: Callable[[], object]) -> tuple[float, float, float, float, float]:
    """One timed action in ``page``: (action → ``shown`` returns, action → page settled, server
    Python of the rerun from the server log, server CPU, browser busy time)."""
    log.since()
    work.start()
    t0 = time.perf_counter()
    act()
    shown()
    t_shown = time.perf_counter() - t0
    wait_idle(page)
    t_settled = time.perf_counter() - t0
    cpu, busy = work.stop()
    time.sleep(0.3)  # the log line is written after the script's last delta
    return t_shown, t_settled, sum(log.since()), cpu, busy


def time_gallery(
    context: object, url: str, turns: int, log: ServerLog, server_pid: int
) -> tuple[list[float], ...]:
    """(next page → all tiles shown, next page → page settled, server Python per turn) of
    ``turns`` clicks on "Next ▶" of the Review page's gallery (suspected mislabeled), in a new tab
    of ``context``; and the work per turn (:class:`Work`)."""
    page = context.new_page()  # type: ignore[attr-defined]
    page.goto(url + "/review")
    page.locator('[data-testid="stButtonGroup"] button', has_text="gallery").first.wait_for(timeout=120_000)
    wait_idle(page)
    page.locator('[data-testid="stButtonGroup"] button', has_text="gallery").first.click()
    page.get_by_role("button", name="Pick this page").wait_for(timeout=120_000)
    wait_idle(page)
    work = Work(server_pid)
    rows = []
    for k in range(2, 2 + turns):
        before = page.locator('[data-testid="stCheckbox"]').all_inner_texts()  # type: ignore[attr-defined]
        rows.append(_time_action(
            page, work, log,
            act=lambda: page.get_by_role("button", name="Next ▶").click(),  # type: ignore[attr-defined]
            shown=lambda k=k, before=before: page.wait_for_function(  # type: ignore[attr-defined]
                GALLERY_SHOWN, arg=[k, before], timeout=120_000)))
    page.close()  # type: ignore[attr-defined]
    return tuple(list(col) for col in zip(*rows, strict=True))


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


def _processes() -> tuple[dict[int, list[int]], dict[int, float], dict[int, str]]:
    """(children of each pid, CPU seconds of each pid, command name of each pid), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            head, tail = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
        names[int(entry)] = head.split("(", 1)[-1]
    return children, cpu, names


def _tree(children: dict[int, list[int]], pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(server_pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by the ``datamap serve`` process tree and by every
    Chromium process this benchmark started (Linux ``/proc``): work, whatever the machine's load."""
    children, cpu, names = _processes()
    server = sum(cpu.get(p, 0.0) for p in _tree(children, server_pid))
    chromium = [p for p in _tree(children, os.getpid()) if names.get(p, "").startswith("chrom")]
    browser = sum(cpu.get(p, 0.0) for p in set(chromium))  # children of Chromium are Chromium
    return server, browser


class Work:
    """The work one action costs: CPU seconds of the server and of the browser (see
    :func:`cpu_seconds`; one tab is active at a time)."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.start()

    def start(self) -> None:
        self.before = cpu_seconds(self.pid)

    def stop(self) -> tuple[float, float]:
        after = cpu_seconds(self.pid)
        return after[0] - self.before[0], after[1] - self.before[1]


class ServerLog:
    """The Python time of the reruns the server logged (``DATAMAP_TIMINGS``) since the last call."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = log.stat().st_size if log.exists() else 0

    def since(self) -> list[float]:
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
        self.offset += len(text.encode())
        return [float(m) / 1000 for m in re.findall(r"datamap timings \(app\).* script=(\d+)ms", text)]


def server_script_ms(log: Path) -> float | None:
    """Median Python time of the full map-page reruns the server logged (``DATAMAP_TIMINGS``)."""
    vals = [float(m) for m in re.findall(r"datamap timings \(app\).* script=(\d+)ms", log.read_text())]
    return statistics.median(vals) if vals else None


def bench_size(
    n: int, base: Path, args: argparse.Namespace, browser: object, floor_page: Reference,
    plotly_page: Reference | None,
) -> dict[str, object]:
    run = build_run(n, base, images=True)
    port = free_port()
    log = base / f"server-n{n}.log"
    load_before = os.getloadavg()[0]
    proc = start_server(run, port, log, DATAMAP_TIMINGS="1")
    url = f"http://127.0.0.1:{port}"
    maps = args.only == "all"
    out: dict[str, object] = {"n_examples": n, "n_rows": n + 2 * min(max(n // 20, 500), 20_000)}
    runs: dict[str, list[float]] = {k: [] for k in (
        "floor", "plotly", "map_warm", "filter", "lasso", "example", "ood_page",
        "decision_shown", "decision_settled", "decision_server", "decision_server_cpu",
        "decision_browser", "gallery_shown", "gallery_settled", "gallery_server", "gallery_server_cpu",
        "gallery_browser")}
    try:
        cold, ctx, first = time_map(browser, url)
        first.close()  # type: ignore[attr-defined]
        out["map_cold_s"] = cold
        n_sel = 0
        for repeat in range(args.repeat):
            runs["floor"].append(floor_page.time())
            if maps:
                assert plotly_page is not None
                runs["plotly"].append(plotly_page.time())
                t, ctx, page = time_map(browser, url, ctx)
                runs["map_warm"].append(t)
                runs["filter"].append(time_filter(page, S.HARD))
                dt, n_sel, dt_example = time_lasso(page)
                runs["lasso"].append(dt)
                runs["example"].append(dt_example)
                page.close()  # type: ignore[attr-defined]
                t, ctx, page = time_map(browser, url + "/ood", ctx, ready=OOD_READY)
                runs["ood_page"].append(t)
                page.close()  # type: ignore[attr-defined]
            timed = (
                ("decision", time_queue(ctx, url, args.decisions, ServerLog(log), proc.pid,
                                        skip=repeat * args.decisions)),
                ("gallery", time_gallery(ctx, url, args.turns, ServerLog(log), proc.pid)),
            )
            for what, got in timed:
                for name, values in zip(("shown", "settled", "server", "server_cpu", "browser"), got,
                                        strict=True):
                    runs[f"{what}_{name}"] += values
        ctx.close()  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for name, values in runs.items():
        if values:
            out[f"{name}_s"] = statistics.median(values)
            out[f"{name}_runs_s"] = values
    out["lasso_selected"] = n_sel
    out["server_script_ms"] = server_script_ms(log)
    out["load_avg_1min"] = [load_before, os.getloadavg()[0]]
    return out


def _s(r: dict[str, object], name: str) -> str:
    value = r.get(f"{name}_s")
    return "—" if value is None else f"{value:.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                    help="training examples per run (default: 10000 100000 1000000)")
    ap.add_argument("--repeat", type=int, default=3, help="new tabs per size (default 3)")
    ap.add_argument("--decisions", type=int, default=5,
                    help="queue decisions timed per tab (default 5)")
    ap.add_argument("--turns", type=int, default=3, help="gallery page turns timed per tab (default 3)")
    ap.add_argument("--only", choices=("all", "review"), default="all",
                    help="'review': only the queue and the gallery (and the bare-page floor)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-dashboard",
                    help="where the synthetic runs are built once and reused")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench_dashboard.json")
    args = ap.parse_args()
    for value, name in ((args.repeat, "--repeat"), (args.decisions, "--decisions"), (args.turns, "--turns")):
        if value < 1:
            ap.error(f"Expected {name} >= 1, got {value}.")
    args.runs.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        floor_page = Reference(args.runs, browser, "floor", FLOOR_APP, "#floor-ready")
        plotly_page = (Reference(args.runs, browser, "plotly", PLOTLY_APP, PLOTLY_READY)
                       if args.only == "all" else None)
        try:
            for n in args.sizes:
                print(f"n = {n:,} ...", flush=True)
                results.append(bench_size(n, args.runs, args, browser, floor_page, plotly_page))
                print("  " + json.dumps(results[-1]), flush=True)
        finally:
            floor_page.close()
            if plotly_page is not None:
                plotly_page.close()
        browser.close()
    floor = statistics.median([t for r in results for t in r["floor_runs_s"]])  # type: ignore[attr-defined]
    plotly = (statistics.median([t for r in results for t in r["plotly_runs_s"]])  # type: ignore[attr-defined]
              if args.only == "all" else None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"floor_s": floor, "plotly_s": plotly, "cpus": os.cpu_count(),
                                    "sizes": results}, indent=2) + "\n")
    print()
    if args.only == "all":
        print("| examples (rows) | map, cold | map, warm (× floor, × Plotly page) | filter change "
              "| lasso → table (selected) | row → example | OOD page (warm) | Python per rerun |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        print(f"| bare Streamlit page (floor) | — | {floor:.2f} s | — | — | — | — | — |")
        print(f"| bare page + one 500-point Plotly chart | — | {plotly:.2f} s | — | — | — | — | — |")
        for r in results:
            py = f"{r['server_script_ms']:.0f} ms" if r["server_script_ms"] is not None else "—"
            warm = float(r["map_warm_s"])  # type: ignore[arg-type]
            print(f"| {r['n_examples']:,} ({r['n_rows']:,}) | {_s(r, 'map_cold')} | {warm:.2f} s "
                  f"({warm / float(r['floor_s']):.2f}×, {warm / plotly:.2f}×) "  # type: ignore[arg-type, operator]
                  f"| {_s(r, 'filter')} | {_s(r, 'lasso')} ({r['lasso_selected']:,}) "
                  f"| {_s(r, 'example')} | {_s(r, 'ood_page')} | {py} |")
        print()
    print("| examples (rows) | bare page (floor), same run | load avg (1 min), before → after "
          "| decision → next example shown | decision → page settled "
          "| CPU per decision: server (script), browser "
          "| gallery next page → 24 tiles shown | gallery next page → page settled "
          "| CPU per page: server (script), browser |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        lo, hi = r["load_avg_1min"]  # type: ignore[misc]
        print(f"| {r['n_examples']:,} ({r['n_rows']:,}) | {_s(r, 'floor')} | {lo:.1f} → {hi:.1f} "
              f"| {_s(r, 'decision_shown')} | {_s(r, 'decision_settled')} "
              f"| {_s(r, 'decision_server_cpu')} ({_s(r, 'decision_server')}), {_s(r, 'decision_browser')} "
              f"| {_s(r, 'gallery_shown')} | {_s(r, 'gallery_settled')} "
              f"| {_s(r, 'gallery_server_cpu')} ({_s(r, 'gallery_server')}), {_s(r, 'gallery_browser')} |")
    print(f"\nmedians of {args.repeat} tabs × {args.decisions} decisions / {args.turns} page turns; "
          f"{os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
