"""Take the README screenshots of the dashboard (on a copy of the sample run).

    .venv/bin/python docs/screenshots/make_screenshots.py [RUN_DIR]

Starts ``datamap serve`` on a temporary copy of the run, drives headless Chromium and writes
``data_map.png``, ``embeddings.png``, ``ood.png``, ``review.png``, ``evidence.png``,
``gallery.png`` and ``queue.png`` beside this script, each quantised to a palette PNG (under
300 KB).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("DATAMAP_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
APP_READY = '[data-testid="stApp"][data-test-script-state="notRunning"]'
MAP_READY = ".dm-scatter[data-ready] .dm-plot"
SVG_READY = ".dm-svg svg"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _idle(page: object, settle: float = 0.8) -> None:
    time.sleep(settle)
    page.wait_for_selector(APP_READY, timeout=60_000)  # type: ignore[attr-defined]


def _save(page: object, name: str, *, height: int | None = None) -> None:
    from PIL import Image

    path = OUT / f"{name}.png"
    clip = None
    if height is not None:
        clip = {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": height}  # type: ignore[attr-defined]
    page.screenshot(path=str(path), clip=clip)  # type: ignore[attr-defined]
    img = Image.open(path).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KB")


def _quantise(path: Path) -> None:
    from PIL import Image

    img = Image.open(path).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KB")


def _save_element(element: object, name: str) -> None:
    path = OUT / f"{name}.png"
    element.screenshot(path=str(path))  # type: ignore[attr-defined]
    _quantise(path)


def _open_first_row(page: object) -> None:
    grid = page.locator('[data-testid="stDataFrame"]:visible').first  # type: ignore[attr-defined]
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # type: ignore[attr-defined]
    page.get_by_text(re.compile(r"^Example ")).first.wait_for()  # type: ignore[attr-defined]
    _idle(page)


def main() -> int:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "sample_data" / "run"
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(src, run, ignore=shutil.ignore_patterns("flags.sqlite*", "exports"))
        port = _port()
        env = dict(os.environ)
        env.pop("DISPLAY", None)
        proc = subprocess.Popen([sys.executable, "-m", "analysis.cli", "serve", str(run), "--port",
                                 str(port), "--no-browser"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
                page = browser.new_page(viewport={"width": 1440, "height": 1500})
                page.set_default_timeout(60_000)
                # data map: lasso over the low-confidence corner, open the first example
                page.goto(url)
                page.wait_for_selector(MAP_READY, state="visible")
                _idle(page)
                area = page.locator(MAP_READY).first.bounding_box()
                x0, y0, w, h = area["x"], area["y"], area["width"], area["height"]
                pts = [(0.02, 0.55), (0.6, 0.55), (0.75, 0.98), (0.02, 0.98), (0.02, 0.55)]
                page.mouse.move(x0 + pts[0][0] * w, y0 + pts[0][1] * h)
                page.mouse.down()
                for fx, fy in pts[1:]:
                    page.mouse.move(x0 + fx * w, y0 + fy * h, steps=6)
                page.mouse.up()
                page.get_by_text(re.compile("selected by lasso")).wait_for()
                _idle(page)
                _open_first_row(page)
                page.evaluate("window.scrollTo(0, 0)")
                _save(page, "data_map")
                # embeddings, coloured by split
                page.locator('[data-testid="stSidebarNav"] a', has_text="Embeddings").click()
                page.wait_for_selector(MAP_READY, state="visible")
                _idle(page, 1.5)
                _save(page, "embeddings", height=1000)
                # OOD
                page.locator('[data-testid="stSidebarNav"] a', has_text="OOD").click()
                page.wait_for_selector(SVG_READY, state="visible")
                _idle(page, 1.5)
                _save(page, "ood")
                # review, first suspect opened
                page.locator('[data-testid="stSidebarNav"] a', has_text="Review").click()
                _idle(page, 1.0)
                _open_first_row(page)
                page.evaluate("window.scrollTo(0, 0)")
                _save(page, "review", height=1300)
                # the evidence panel of that suspect
                evidence = page.locator('[data-testid="stExpander"]', has_text="Nearest training examples").first
                evidence.scroll_into_view_if_needed()
                _save_element(evidence, "evidence")
                # the Review list as a gallery
                page.evaluate("window.scrollTo(0, 0)")
                page.locator('[data-testid="stButtonGroup"] button', has_text="gallery").first.click()
                page.get_by_role("button", name="Pick this page").wait_for()
                _idle(page, 1.0)
                page.locator('[data-testid="stCheckbox"] p').nth(23).wait_for()
                _idle(page, 2.0)
                _save(page, "gallery", height=1300)
                # the keyboard queue
                page.locator('[data-testid="stSidebarNav"] a', has_text="Queue").click()
                page.get_by_text(re.compile(r"^Example 1 of")).first.wait_for()
                _idle(page, 1.0)
                _save(page, "queue", height=1100)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
