"""Take the README screenshot of the offline HTML report (on a copy of the sample run).

    .venv/bin/python docs/screenshots/make_report_screenshot.py [RUN_DIR]

Builds the report of a temporary copy of the run (with a few flags, so that section is not
empty), opens it in headless Chromium with every outside request blocked, and writes
``report.png`` beside this script: the findings and the data map, quantised to a palette PNG.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = Path(__file__).resolve().parent / "report.png"
CHROMIUM = os.environ.get("DATAMAP_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from analysis import runstore
    from analysis import schema as S
    from analysis.flags import FlagJournal
    from dashboard.report import write_report

    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "sample_data" / "run"
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(src, run, ignore=shutil.ignore_patterns("flags.sqlite*", "exports"))
        table = runstore.load_table(run)
        suspects = table.loc[table[S.DIAGNOSIS].astype(str) == "suspect_mislabeled", S.EXAMPLE_ID]
        journal = FlagJournal(run)
        for example_id in suspects.head(3).tolist():
            journal.add(int(example_id), flag="mislabeled")
        path = write_report(run, Path(tmp) / "report.html")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1240, "height": 1300})
            outside: list[str] = []
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:")
                       else (outside.append(r.request.url), r.abort()))
            page.goto(path.as_uri())
            page.wait_for_selector("#fig-data_map[data-rendered]")
            page.locator("#findings").scroll_into_view_if_needed()
            top = page.evaluate("document.getElementById('findings').getBoundingClientRect().top"
                                " + window.scrollY")
            page.evaluate(f"window.scrollTo(0, {top} - 10)")
            page.screenshot(path=str(OUT))
            browser.close()
        if outside:
            raise SystemExit(f"the report made outside requests: {outside}")
    img = Image.open(OUT).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        OUT, optimize=True)
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
