"""The UMAP map arrives after the dashboard opens: progress on the Embeddings page, then the map.

`datamap serve` on a freshly analysed run (no cached UMAP map) starts the projection job in the
background; the page shows the PCA stand-in with a progress bar, then the UMAP map, with no
server restart. Real server, headless Chromium (see ``test_browser.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from analysis import projection_job, runstore
from analysis import schema as S
from analysis.pipeline import analyze_run
from analysis.synthetic import make_synthetic_run
from tests.dashboard import test_browser as harness
from tests.dashboard.test_browser import MAP_READY, Server, open_page, shot, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]
chromium = harness.chromium  # the same browser fixtures
page = harness.page

UMAP_TIMEOUT_S = 420
"""A fresh process compiles UMAP's kernels (about a minute on 2 cores without numba's cache)."""


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_synthetic_run(tmp_path_factory.mktemp("fresh") / "run", n_examples=20_000,
                             n_features=32, n_eval=1000)
    analyze_run(run)  # default options: PCA stand-in, UMAP pending
    return run


@pytest.fixture(scope="module")
def server(fresh_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(fresh_run, tmp_path_factory.mktemp("logs") / "server.log")
    srv.start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.stop()


def test_analyze_leaves_the_umap_map_pending(fresh_run: Path) -> None:
    status = projection_job.read_status(fresh_run)
    assert status is not None and status["table_method"] == "pca"
    assert status["state"] in ("pending", "running")  # the server below may have started it


def test_embeddings_page_shows_progress_then_the_umap_map(server: Server, page: object, fresh_run: Path) -> None:
    before = runstore.load_table(fresh_run, columns=[S.UMAP_X, S.UMAP_Y])
    pca_rows = np.column_stack([before[S.UMAP_X], before[S.UMAP_Y]])
    open_page(page, f"{server.url}/embeddings", ready=MAP_READY)
    page.get_by_text("PCA map (a stand-in)").wait_for()  # type: ignore[attr-defined]
    bar = page.locator('[data-testid="stProgress"]')  # type: ignore[attr-defined]
    bar.first.wait_for()
    assert "UMAP map:" in page.locator("body").inner_text()  # type: ignore[attr-defined]
    shot(page, "embeddings_pending")
    pid = server.proc.pid  # type: ignore[union-attr]
    # the page reruns by itself once the job has written the UMAP map into the table
    page.get_by_text("UMAP of the penultimate-layer features").wait_for(timeout=UMAP_TIMEOUT_S * 1000)  # type: ignore[attr-defined]
    wait_idle(page, settle=1.0)  # the rerun has finished: no stale elements of the PCA page left
    page.locator(MAP_READY).first.wait_for(state="visible")  # type: ignore[attr-defined]
    assert page.get_by_text("colour by").count() == 1  # type: ignore[attr-defined]
    assert page.locator('[data-testid="stProgress"]').count() == 0  # type: ignore[attr-defined]
    assert page.get_by_text("PCA map (a stand-in)").count() == 0  # type: ignore[attr-defined]
    assert server.proc is not None and server.proc.poll() is None and server.proc.pid == pid
    status = projection_job.read_status(fresh_run)
    assert status is not None and status["state"] == "done" and status["table_method"] == "umap"
    after = runstore.load_table(fresh_run, columns=[S.UMAP_X, S.UMAP_Y])
    umap_rows = np.column_stack([after[S.UMAP_X], after[S.UMAP_Y]])
    assert np.isfinite(umap_rows).all() and not np.allclose(umap_rows, pca_rows)
    shot(page, "embeddings_umap")
    # a second analyze finds the cached UMAP map and writes it straight into the table
    time.sleep(0.1)
    again = analyze_run(fresh_run)
    np.testing.assert_allclose(np.column_stack([again[S.UMAP_X], again[S.UMAP_Y]]), umap_rows)
    assert projection_job.read_status(fresh_run)["table_method"] == "umap"  # type: ignore[index]
