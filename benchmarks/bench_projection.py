"""UMAP's fit on 20,000 rows: umap-learn's NN-descent graph against the exact kNN graph.

    .venv/bin/python benchmarks/bench_projection.py                  # 20,000 x 64, both caches
    .venv/bin/python benchmarks/bench_projection.py --rows 10000 --caches warm

``analysis.projection`` hands UMAP an exact kNN graph of the fitted rows
(``analysis.projection.exact_knn_graph``, umap-learn's ``precomputed_knn``) from 4,096 up to
20,000 fitted rows; umap-learn would otherwise build it by NN-descent (pynndescent), whose kernels
are partly compiled again in every fresh process. The map is computed where it matters, in a fresh
process (as ``python -m analysis.projection_job``): synthetic 64-d class clusters (10 classes, as
``bench_time_to_map.py --transform-quality``), PCA to 50 dimensions, UMAP fitted on every row with
the defaults of ``project_features``. For each numba cache state, one fresh process per graph:

* ``empty``: an empty ``NUMBA_CACHE_DIR`` (a new machine: every kernel compiles);
* ``warm``: the cache the ``empty`` process of the same graph left.

Each process fits twice: ``first fit`` (import of umap included, the time a job waits) and
``second fit`` (same process, every kernel compiled: the search and the layout alone). ``graph``
is the exact search's share of the first fit. Trustworthiness: 10 neighbours, on 2,000 random
rows (features against map). The graphs alternate (NN-descent first) and the load average is
printed beside each row: compare within a cache state, and quote the ratio. ``--repeat N`` runs
it all N times (new caches each time), the graphs' order alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_time_to_map import markdown  # noqa: E402  (this folder is on sys.path when run as a script)


def features(rows: int, dims: int = 64, classes: int = 10, seed: int = 0) -> np.ndarray:
    """Class clusters: ``classes`` Gaussian centres (spread 3) plus unit noise, float32."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, (classes, dims)).astype(np.float32)
    return means[rng.integers(0, classes, rows)] + rng.normal(0, 1, (rows, dims)).astype(np.float32)


def child(path: Path, graph: str) -> dict[str, Any]:
    """Fit UMAP twice in this process on the features at ``path``; seconds and trustworthiness."""
    t_start = time.perf_counter()
    from sklearn.manifold import trustworthiness

    from analysis import projection

    if graph == "nndescent":
        projection.EXACT_GRAPH_MAX_ROWS = 0  # umap-learn builds its own graph
    x = np.load(path)
    marks: dict[str, float] = {}

    def progress(step: str, fraction: float) -> None:
        if step.startswith("finding the nearest"):
            marks.setdefault("graph", time.perf_counter())
        elif step.startswith("fitting UMAP"):
            marks.setdefault("fit", time.perf_counter())

    row: dict[str, Any] = {"graph": graph}
    for attempt in ("first fit", "second fit"):
        marks.clear()
        t0 = time.perf_counter()
        out = projection.project_features({"train": x}, method="umap", progress=progress)["train"]
        row[attempt] = time.perf_counter() - t0
        if attempt == "first fit":
            row["graph s"] = marks["fit"] - marks["graph"] if "graph" in marks else 0.0
            row["process s"] = time.perf_counter() - t_start
    pick = np.random.default_rng(1).choice(len(x), min(2000, len(x)), replace=False)
    row["trustworthiness"] = float(trustworthiness(x[pick], out[pick], n_neighbors=10))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000, help="fitted rows (64-d class clusters)")
    ap.add_argument("--caches", nargs="+", choices=("empty", "warm"), default=["empty", "warm"])
    ap.add_argument("--repeat", type=int, default=1,
                    help="repeats (each with new caches; the graphs' order alternates)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--child", nargs=2, metavar=("FEATURES", "GRAPH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1])))
        return 0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-projection-") as tmp:
        path = Path(tmp) / "features.npy"
        np.save(path, features(args.rows))
        for repeat, cache in [(r, c) for r in range(args.repeat) for c in args.caches]:
            by_graph: dict[str, dict[str, Any]] = {}
            graphs = ("nndescent", "exact") if repeat % 2 == 0 else ("exact", "nndescent")
            for graph in graphs:
                cache_dir = Path(tmp) / f"numba-{graph}-{repeat}"
                env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
                load_before = os.getloadavg()[0]
                proc = subprocess.run([sys.executable, __file__, "--child", str(path), graph],
                                      capture_output=True, text=True, env=env, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(f"{graph} fit failed:\n{proc.stderr[-3000:]}")
                row = {"rows": args.rows, "numba cache": cache,
                       **json.loads(proc.stdout.strip().splitlines()[-1]),
                       "load avg": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"}
                by_graph[graph] = row
                rows.append(row)
                print(markdown([row]), flush=True)
            for key in ("first fit", "second fit"):
                by_graph["exact"][f"{key} ratio"] = by_graph["nndescent"][key] / by_graph["exact"][key]
    print()
    print(markdown([{k: v for k, v in r.items() if "ratio" not in k} for r in rows]))
    print()
    for r in rows:
        if r["graph"] == "exact":
            print(f"{r['numba cache']} cache: NN-descent / exact, first fit {r['first fit ratio']:.2f}x, "
                  f"second fit {r['second fit ratio']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
