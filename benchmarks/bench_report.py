"""Size and build time of the offline HTML report (`datamap report`) on synthetic runs.

For each size: builds (or reuses) an analysed synthetic run under ``runs/bench-report/``
(``analysis/synthetic.py``: compact dynamics, a ``test`` and an ``ood:far`` split of
``n / 20`` rows (500 to 20,000) with features and logits, PCA projection, three OOD scores),
then times three commands, each in a fresh process (interpreter start and imports included):

* **report**: ``python -m analysis.cli report RUN --out FILE`` (what a person runs);
* **floor**: a process that imports pandas and reads ``table.parquet`` (what any report costs);
* **naive**: every row of the data map in one Plotly ``Scattergl`` with an id/label hover line,
  written by ``Figure.write_html(include_plotlyjs=True)``: the report without sampling.

Medians of ``--repeat`` runs; the ratio to the floor compares numbers measured under the same
machine load. Usage::

    .venv/bin/python benchmarks/bench_report.py                   # 100k and 1M
    .venv/bin/python benchmarks/bench_report.py --sizes 1000000 --repeat 5 --no-naive

Targets (issue 14): at 1M examples the file is at most 15 MB and builds in at most 10 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic_runs import build_run  # noqa: E402

FLOOR = """
import sys
from analysis import runstore
runstore.load_table(sys.argv[1])
"""

NAIVE = """
import sys
import plotly.graph_objects as go
from analysis import runstore, schema as S
table = runstore.load_table(sys.argv[1])
hover = ("id " + table[S.EXAMPLE_ID].astype(str) + " label " + table[S.LABEL].astype(str)).tolist()
fig = go.Figure(go.Scattergl(x=table[S.VARIABILITY].to_numpy(), y=table[S.CONFIDENCE].to_numpy(),
                             mode="markers", text=hover))
fig.write_html(sys.argv[2], include_plotlyjs=True)
"""


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of a command in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _median(pairs: list[tuple[float, float]], k: int) -> float:
    return statistics.median(p[k] for p in pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-naive", action="store_true", help="skip the unsampled reference")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-report")
    args = ap.parse_args()
    py = sys.executable
    rows = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            run = build_run(n, args.runs)
            out, naive_out = Path(tmp) / f"report-{n}.html", Path(tmp) / f"naive-{n}.html"
            report_t, floor_t, naive_t = [], [], []
            for _ in range(args.repeat):
                floor_t.append(timed([py, "-c", FLOOR, str(run)]))
                report_t.append(timed([py, "-m", "analysis.cli", "report", str(run), "--out", str(out)]))
                if not args.no_naive:
                    naive_t.append(timed([py, "-c", NAIVE, str(run), str(naive_out)]))
            rows.append((n, out.stat().st_size / 1e6, report_t, floor_t,
                         naive_out.stat().st_size / 1e6 if naive_t else None, naive_t))
            print(f"  {n:,}: report wall/CPU s: "
                  + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in report_t), flush=True)
    load = max(load, os.getloadavg()[0])
    print(f"\nmedians of {args.repeat}; wall = elapsed, CPU = user + system of the process (what "
          f"the wall time would be on an idle machine); load average up to {load:.1f}\n")
    print("| examples | report MB | report wall s | report CPU s | floor wall / CPU s | "
          "report / floor (CPU) | naive MB | naive wall / CPU s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, mb, rep, floor, naive_mb, naive in rows:
        ratio = _median(rep, 1) / _median(floor, 1)
        nmb = f"{naive_mb:.1f}" if naive_mb is not None else "—"
        ns = f"{_median(naive, 0):.2f} / {_median(naive, 1):.2f}" if naive else "—"
        print(f"| {n:,} | {mb:.1f} | {_median(rep, 0):.2f} | {_median(rep, 1):.2f} | "
              f"{_median(floor, 0):.2f} / {_median(floor, 1):.2f} | {ratio:.1f}x | {nmb} | {ns} |")
    print("\ntargets at 1M: <= 15 MB, <= 10 s (fresh process, imports included)")


if __name__ == "__main__":
    main()
