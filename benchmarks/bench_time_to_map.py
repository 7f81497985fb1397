"""Time from a new run with features to its dashboard: the table, the data map, the UMAP map.

    .venv/bin/python benchmarks/bench_time_to_map.py                         # 50k x 64
    .venv/bin/python benchmarks/bench_time_to_map.py --sizes 50000 200000 1000000
    .venv/bin/python benchmarks/bench_time_to_map.py --knn-quality           # kNN AUROC only
    .venv/bin/python benchmarks/bench_time_to_map.py --transform-quality 200000

One command prints the README table: for each size a synthetic run (``analysis.synthetic``, 64-d
features, ``--eval`` rows in each of ``test`` and ``ood:far``) is analysed in fresh processes,
each under ``/usr/bin/time`` for its peak memory, one row per numba cache state:

* ``datamap analyze --no-ood`` (the reference) and ``datamap analyze`` with default options
  (the table, OOD scores and a PCA stand-in map; the bar is at most 6x the reference);
* ``datamap serve`` with headless Chromium: the data map drawn in the browser, then the UMAP map,
  both when the background job reports it done (``cache/projection.json``; the job's own peak
  memory is recorded there) and when the open Embeddings page shows it. Every time counts from
  the start of ``datamap analyze`` (a new run to its dashboard). ``empty``: an empty numba cache
  (a new machine); ``warm``: the cache that left (the projection cache is emptied and the run
  re-analysed before). The load average before and after each row is printed beside it: the
  timings are only comparable within a row on a shared machine.

``--transform-quality N`` compares umap-learn's ``transform`` with the default placement of the
rows UMAP was not fitted on (each at the weighted mean of its nearest fitted rows' positions):
seconds and trustworthiness, on the sample run and a synthetic N x 64 run.

``--knn-quality`` compares the kNN OOD score's AUROC with the exact search against the default
(clustered above 10k training rows) on the sample run and on a synthetic 50k x 64 run with a
near OOD split (class clusters with a wider spread), and times both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import schema as S  # noqa: E402

CHROMIUM = os.environ.get("DATAMAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAP_READY = ".dm-scatter[data-ready] .dm-plot"
UMAP_TITLE = "UMAP of the penultimate-layer features"
"""The Embeddings page's heading once it shows the UMAP map (the PCA stand-in says otherwise)."""


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``cmd`` under ``/usr/bin/time``: (wall seconds, peak RSS in MB, output)."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M", *cmd], capture_output=True, text=True,
                          env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rss = float(re.findall(r"MAXRSS (\d+)", proc.stderr)[-1]) / 1024
    return wall, rss, proc.stdout


def datamap(*args: str) -> list[str]:
    return [sys.executable, "-m", "analysis.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_and_watch(run: Path, env: dict[str, str], umap_timeout: float) -> dict[str, Any]:
    """Start ``datamap serve``; seconds to the data map in Chromium and to the UMAP map.

    After the data map, a second tab opens the Embeddings page (the PCA stand-in and the job's
    progress) and stays open: the UMAP map counts as there when the background job reports
    ``done`` (``to_umap_s``) and when that page, rerunning by itself, shows the UMAP map
    (``to_umap_page_s``).
    """
    from playwright.sync_api import sync_playwright

    from analysis import projection_job

    port = free_port()
    t0 = time.perf_counter()
    server = subprocess.Popen(datamap("serve", str(run), "--port", str(port), "--no-browser"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, Any] = {"to_umap_s": None, "to_umap_page_s": None}
    status: dict[str, Any] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(300_000)
            deadline = time.monotonic() + 120
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}/")
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            page.wait_for_selector(MAP_READY, state="visible")
            out["to_data_map_s"] = time.perf_counter() - t0
            embeddings = browser.new_page(viewport={"width": 1400, "height": 1000})
            embeddings.set_default_timeout(300_000)
            embeddings.goto(f"http://127.0.0.1:{port}/embeddings")
            deadline = time.monotonic() + umap_timeout
            while time.monotonic() < deadline:
                status = projection_job.read_status(run) or {}
                if out["to_umap_s"] is None and status.get("state") == "done":
                    out["to_umap_s"] = time.perf_counter() - t0
                if out["to_umap_page_s"] is None and embeddings.get_by_text(UMAP_TITLE).count():
                    out["to_umap_page_s"] = time.perf_counter() - t0
                if status.get("state") == "failed" or out["to_umap_page_s"] is not None:
                    break
                embeddings.wait_for_timeout(500)
            browser.close()
        state = status.get("state")
        out["umap_state"] = state if state in ("done", "failed") else \
            f"timed out at {float(status.get('fraction') or 0):.0%}: {status.get('step')}"
        out["umap_job_rss_mb"] = status.get("peak_rss_mb")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return out


def bench_size(n: int, n_eval: int, root: Path, umap_timeout: float, browser: bool,
               caches: list[str]) -> list[dict[str, Any]]:
    """One README row per numba cache state: the table, the data map, the UMAP map, memory."""
    from analysis.synthetic import make_synthetic_run

    run = make_synthetic_run(root / f"run-{n}", n_examples=n, n_features=64, n_eval=n_eval)
    numba_dir = root / f"numba-{n}"
    numba_dir.mkdir()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_dir), "PYTHONPATH": str(ROOT)}
    rows = []
    load = os.getloadavg()[0]
    ref_s, _, _ = timed(datamap("analyze", str(run), "--no-ood"), env)
    for cache in caches:
        for f in (run / S.CACHE_DIR).glob("projection-*"):
            f.unlink()
        wall, mb, _ = timed(datamap("analyze", str(run)), env)
        row: dict[str, Any] = {
            "training rows": n, "numba cache": cache, "analyze --no-ood s": ref_s,
            "analyze s (the table)": wall, "ratio": wall / ref_s, "analyze peak GB": mb / 1024,
        }
        if browser:
            watched = serve_and_watch(run, env, umap_timeout)
            row["data map in the browser s"] = wall + watched["to_data_map_s"]
            row["UMAP job done s"] = None if watched["to_umap_s"] is None else wall + watched["to_umap_s"]
            row["UMAP on the Embeddings page s"] = (None if watched["to_umap_page_s"] is None
                                                    else wall + watched["to_umap_page_s"])
            row["UMAP job peak GB"] = (None if watched["umap_job_rss_mb"] is None
                                       else watched["umap_job_rss_mb"] / 1024)
            if watched["umap_state"] != "done":
                row["note"] = f"UMAP job {watched['umap_state']}"
        row["load avg (1 min) start-end"] = f"{load:.1f}-{os.getloadavg()[0]:.1f}"
        load = os.getloadavg()[0]
        rows.append(row)
        print(markdown([row]), flush=True)
    if browser and (trust := umap_trustworthiness(run)):
        for row in rows:
            row["trustworthiness (10 nn, 2,000 rows)"] = ", ".join(f"{k} {v:.3f}" for k, v in trust.items())
        print(rows[-1]["trustworthiness (10 nn, 2,000 rows)"], flush=True)
    shutil.rmtree(run, ignore_errors=True)
    return rows


def umap_trustworthiness(run: Path) -> dict[str, float]:
    """Trustworthiness of the table's map per split (``benchmarks/quality_ood.py``'s measure)."""
    from analysis import projection_job, runstore

    if (projection_job.read_status(run) or {}).get("table_method") != "umap":
        return {}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from quality_ood import _trustworthiness

    rows = _trustworthiness(run, runstore.load_table(run))
    return {r["split"]: r["value"] for r in rows}


def transform_quality(n: int, fit_rows: int = 20_000) -> list[dict[str, Any]]:
    """umap-learn's ``transform`` against the nearest-fitted-rows placement: seconds and trustworthiness.

    UMAP is fitted on ``fit_rows`` of ``n`` synthetic training rows (64-d class clusters, as
    ``analysis.synthetic``); the other training rows, 5,000 test rows and 5,000 far-OOD rows are
    placed by each transform. Also on the sample run with UMAP fitted on 600 of its 1,154 training
    rows. Trustworthiness: 10 neighbours, on up to 2,000 rows of each group.
    """
    from sklearn.manifold import trustworthiness

    from analysis import projection, runstore

    sets: list[tuple[str, dict[str, np.ndarray], int]] = []
    sample_run = ROOT / "sample_data" / "run"
    if (sample_run / S.RUN_JSON).exists():
        sets.append(("sample run, fit on 600 of 1,154",
                     {s: np.asarray(runstore.load_features(sample_run, s)[1])
                      for s in runstore.list_array_splits(sample_run, S.FEATURES_DIR)}, 600))
    rng = np.random.default_rng(0)
    d, c = 64, 10
    means = rng.normal(0, 3, (c, d)).astype(np.float32)
    sets.append((f"synthetic {n:,} x 64, fit on {fit_rows:,}", {
        "train": means[rng.integers(0, c, n)] + rng.normal(0, 1, (n, d)).astype(np.float32),
        "test": means[rng.integers(0, c, 5000)] + rng.normal(0, 1, (5000, d)).astype(np.float32),
        "ood:far": rng.normal(0, 1, (5000, d)).astype(np.float32) * 4 + 8}, fit_rows))
    # compile umap's kernels outside the timings
    projection.project_features({"train": sets[-1][1]["train"][:2000]}, method="umap", n_epochs=20,
                                max_fit_rows=1000, transform="umap")
    rows = []
    for name, feats, fit in sets:
        n_train = len(feats["train"])
        fitted = np.sort(np.random.default_rng(0).choice(n_train, fit, replace=False))
        placed = np.setdiff1d(np.arange(n_train), fitted)
        pick = np.random.default_rng(1).choice(placed, min(2000, len(placed)), replace=False)
        for method in ("umap", "neighbors"):
            marks: dict[str, float] = {}

            def progress(step: str, fraction: float, marks: dict[str, float] = marks) -> None:
                if step.startswith("placing"):
                    marks.setdefault("placing", time.perf_counter())

            t0 = time.perf_counter()
            out = projection.project_features(feats, method="umap", max_fit_rows=fit, transform=method,
                                              progress=progress)
            t_end = time.perf_counter()
            groups = {"train, placed rows": (feats["train"][pick], out["train"][pick]),
                      "train, fitted rows": (feats["train"][fitted[:2000]], out["train"][fitted[:2000]])}
            for split in feats:
                if split != "train":
                    groups[split] = (feats[split][:2000], out[split][:2000])
            row: dict[str, Any] = {"set": name, "transform": method,
                                   "fit s": marks.get("placing", t_end) - t0,
                                   "placing s": t_end - marks.get("placing", t_end),
                                   "placed rows": int(sum(len(v) for k, v in feats.items() if k != "train")
                                                      + len(placed))}
            for group, (x, y) in groups.items():
                row[group] = float(trustworthiness(x, y, n_neighbors=10))
            row["load avg"] = round(os.getloadavg()[0], 1)
            rows.append(row)
            print(markdown([row]), flush=True)
    return rows


def knn_quality() -> list[dict[str, Any]]:
    """AUROC of the kNN score, exact search against the default search, and their times."""
    from analysis import ood as O
    from analysis import runstore
    from analysis.ood_eval import auroc

    def features(split_names: list[str], run: Path) -> dict[str, np.ndarray]:
        return {s: np.asarray(runstore.load_features(run, s)[1]) for s in split_names}

    sample = ROOT / "sample_data" / "run"
    sets: list[tuple[str, np.ndarray, list[np.ndarray], list[np.ndarray]]] = []
    if (sample / S.RUN_JSON).exists():
        f = features(runstore.list_array_splits(sample, S.FEATURES_DIR), sample)
        sets.append(("sample run (1,154 train)", f["train"], [f["test"]],
                     [v for k, v in f.items() if k.startswith("ood")]))
    rng = np.random.default_rng(1)
    n, d, c = 50_000, 64, 10
    means = rng.normal(0, 3, (c, d)).astype(np.float32)
    train = means[rng.integers(0, c, n)] + rng.normal(0, 1, (n, d)).astype(np.float32)
    test = means[rng.integers(0, c, 5000)] + rng.normal(0, 1, (5000, d)).astype(np.float32)
    near = means[rng.integers(0, c, 5000)] + rng.normal(0, 1.15, (5000, d)).astype(np.float32)
    sets.append(("synthetic 50k x 64, near OOD", train, [test], [near]))
    rows = []
    for name, x, ids, oods in sets:
        results = {}
        for search in ("exact", "auto"):
            scorer = O.KNNScorer(k=50)
            scorer.search = search
            t0 = time.perf_counter()
            scorer.fit(x)
            loo = scorer.score_fitted(x)
            s_id = np.concatenate([scorer.score(q) for q in ids])
            s_ood = np.concatenate([scorer.score(q) for q in oods])
            results[search] = (auroc(s_id, s_ood), time.perf_counter() - t0, scorer.index_.method_, loo)
        a_exact, t_exact, _, loo_exact = results["exact"]
        a_auto, t_auto, method, loo_auto = results["auto"]
        rows.append({"set": name, "search": method, "auroc_exact": a_exact, "auroc": a_auto,
                     "diff": a_auto - a_exact, "seconds_exact": t_exact, "seconds": t_auto,
                     "train_score_median_rel_err": float(np.median(loo_auto / loo_exact - 1))})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("" if v is None else f"{v:,.3f}" if isinstance(v, float) and abs(v) < 1 else
                         f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000])
    ap.add_argument("--eval", type=int, default=5000, help="rows in each evaluation split")
    ap.add_argument("--no-browser", action="store_true", help="time the analysis only")
    ap.add_argument("--umap-timeout", type=float, default=3600.0)
    ap.add_argument("--caches", nargs="+", choices=("empty", "warm"), default=["empty", "warm"],
                    help="numba cache states to measure (warm needs empty first)")
    ap.add_argument("--knn-quality", action="store_true", help="only the kNN AUROC comparison")
    ap.add_argument("--transform-quality", type=int, default=None, metavar="N",
                    help="only umap-learn's transform against the neighbour placement, N training rows")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    if args.knn_quality:
        rows = knn_quality()
    elif args.transform_quality:
        rows = transform_quality(args.transform_quality)
    else:
        rows = []
        with tempfile.TemporaryDirectory(prefix="datamap-ttm-") as tmp:
            for n in args.sizes:
                rows += bench_size(n, args.eval, Path(tmp), args.umap_timeout, not args.no_browser,
                                   args.caches)
    print(f"load average at end: {os.getloadavg()}")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
