"""In a real browser (headless Chromium): a run's split name written as a Markdown image renders
literally and makes the browser fetch nothing, and no page requests anything from another host."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import schema as S
from dashboard.text import WORD_JOINER
from tests.dashboard.test_browser import (  # noqa: F401 - fixtures used by name
    APP_READY,
    Server,
    chromium,
    nav,
    open_page,
    page,
    pick_multiselect,
)

from .conftest import copy_sample_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]
EVIL_SPLIT = "![m](http://127.0.0.1:9/x)"


@pytest.fixture(scope="module")
def evil_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    run = copy_sample_run(tmp_path_factory.mktemp("evil") / "run")
    table = pd.read_parquet(run / S.TABLE_FILE)
    table[S.SPLIT] = table[S.SPLIT].replace({"ood:far": EVIL_SPLIT})
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), run / S.TABLE_FILE)
    srv = Server(run, tmp_path_factory.mktemp("logs") / "server.log")
    srv.start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.stop()


def test_markdown_in_a_split_name_renders_literally_and_fetches_nothing(evil_server, page):  # noqa: F811
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    open_page(page, evil_server.url)
    pick_multiselect(page, "split", EVIL_SPLIT)
    sidebar = page.locator('[data-testid="stSidebar"]').first.inner_text().replace(WORD_JOINER, "")
    assert f"Filter: split ∈ {{{EVIL_SPLIT}}}" in sidebar  # the caption shows the name as typed
    for title in ("OOD", "Export"):
        nav(page, title)
        main = page.locator('[data-testid="stMain"]').first.inner_text().replace(WORD_JOINER, "")
        assert EVIL_SPLIT in main, title
    links = page.locator('img[src*="127.0.0.1:9/"], a[href*="127.0.0.1:9/"]')
    assert links.count() == 0, [links.nth(i).evaluate("e => e.parentElement.outerHTML") for i in range(links.count())]
    foreign = [u for u in requests if not u.startswith((evil_server.url, "data:", "blob:"))]
    assert foreign == [], foreign  # no fetch of the split's URL, no font host for the page icon
    icon = page.locator('link[rel="shortcut icon"], link[rel="icon"]').first.get_attribute("href")
    assert icon and not icon.startswith("http") or icon.startswith(evil_server.url), icon
