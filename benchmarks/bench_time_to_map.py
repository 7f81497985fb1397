"""Time from a new run with features to its dashboard: the table, the data map, the UMAP map.

    .venv/bin/python benchmarks/bench_time_to_map.py                         # 50k x 64
    .venv/bin/python benchmarks/bench_time_to_map.py --sizes 50000 200000 1000000
    .venv/bin/python benchmarks/bench_time_to_map.py --knn-quality           # kNN AUROC only

For each size a synthetic run (``analysis.synthetic``, 64-d features, ``--eval`` rows in each of
``test`` and ``ood:far``) is analysed in fresh processes, each under ``/usr/bin/time`` for its
peak memory:

* ``datamap analyze --no-ood`` (the reference) and ``datamap analyze`` with default options
  (the table, OOD scores and a PCA stand-in map; the bar is at most 6x the reference);
* ``datamap serve`` with headless Chromium: seconds from the server's start to the data map drawn
  in the browser, and to the background job's UMAP map written into the table (polled from
  ``cache/projection.json``; the job's own peak memory is recorded there), with an empty numba
  cache (a new machine) and again with the cache that left (``warm``; the projection cache is
  emptied and the run re-analysed before).

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
    """Start ``datamap serve``; seconds to the data map in Chromium and to the UMAP map."""
    from playwright.sync_api import sync_playwright

    from analysis import projection_job

    port = free_port()
    t0 = time.perf_counter()
    server = subprocess.Popen(datamap("serve", str(run), "--port", str(port), "--no-browser"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, Any] = {}
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
            browser.close()
        deadline = time.monotonic() + umap_timeout
        while time.monotonic() < deadline:
            status = projection_job.read_status(run) or {}
            if status.get("state") in ("done", "failed"):
                break
            time.sleep(0.5)
        out["to_umap_s"] = time.perf_counter() - t0 if status.get("state") == "done" else None
        out["umap_state"] = status.get("state") if status.get("state") in ("done", "failed") else \
            f"timed out at {float(status.get('fraction') or 0):.0%}: {status.get('step')}"
        out["umap_job_rss_mb"] = status.get("peak_rss_mb")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return out


def bench_size(n: int, n_eval: int, root: Path, umap_timeout: float, browser: bool,
               caches: list[str]) -> list[dict[str, Any]]:
    from analysis.synthetic import make_synthetic_run

    run = make_synthetic_run(root / f"run-{n}", n_examples=n, n_features=64, n_eval=n_eval)
    numba_dir = root / f"numba-{n}"
    numba_dir.mkdir()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_dir), "PYTHONPATH": str(ROOT)}
    rows = []
    ref_s, ref_mb, _ = timed(datamap("analyze", str(run), "--no-ood"), env)
    rows.append({"n": n, "step": "analyze --no-ood (reference)", "seconds": ref_s, "peak_mb": ref_mb})
    for cache in caches:
        for f in (run / S.CACHE_DIR).glob("projection-*"):
            f.unlink()
        wall, mb, _ = timed(datamap("analyze", str(run)), env)
        rows.append({"n": n, "step": f"analyze (default; {cache} numba cache)", "seconds": wall,
                     "peak_mb": mb, "ratio": wall / ref_s})
        if browser:
            watched = serve_and_watch(run, env, umap_timeout)
            rows.append({"n": n, "step": f"  table -> data map in the browser ({cache})",
                         "seconds": wall + watched["to_data_map_s"], "peak_mb": None})
            rows.append({"n": n, "step": f"  table -> UMAP map in the table ({cache}; "
                                         f"{watched['umap_state']})",
                         "seconds": None if watched["to_umap_s"] is None else wall + watched["to_umap_s"],
                         "peak_mb": watched["umap_job_rss_mb"]})
        print(markdown(rows[-3:]), flush=True)
    if browser and (trust := umap_trustworthiness(run)):
        rows.append({"n": n, "step": "  UMAP trustworthiness (10 neighbours, 2,000 rows): "
                                     + ", ".join(f"{k} {v:.3f}" for k, v in trust.items())})
        print(rows[-1]["step"], flush=True)
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
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    if args.knn_quality:
        rows = knn_quality()
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
