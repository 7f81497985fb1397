"""The evidence panel's neighbour lookup: a blockwise scan of the bank against a kept index.

    .venv/bin/python benchmarks/bench_evidence.py                    # 20k, 100k and 300k x 64
    .venv/bin/python benchmarks/bench_evidence.py --sizes 1000000

For each size a synthetic run (``analysis.synthetic``, 64-d class-clustered features) is written
and :func:`analysis.evidence.training_neighbors` is timed on it as the dashboard calls it (one
example at a time): the blockwise scan of the stored training bank (the reference: read and
normalise every block on every lookup), and the :class:`analysis.neighbors.NeighborIndex` of the
normalised bank it keeps above ``EXACT_MAX_REFERENCE`` rows (``exact``: built once, then one
matrix-vector product a lookup; ``clustered``: its k-means inverted file), with the recall of the
8 nearest against the scan. Medians over ``--queries`` training examples.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import evidence, neighbors, runstore  # noqa: E402
from analysis.synthetic import make_synthetic_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 300_000])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=["exact", "clustered"],
                        choices=["exact", "clustered"])
    args = parser.parse_args()
    print("| training rows | scan lookup | index | build (once) | indexed lookup | × faster | recall@8 |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            run = make_synthetic_run(Path(tmp) / "run", n_examples=n, n_epochs=2, n_eval=10, seed=0)
            ids, _ = runstore.load_features(run, "train")
            picks = ids[:: max(1, len(ids) // args.queries)][: args.queries]
            limit = neighbors.EXACT_MAX_REFERENCE
            scan_s, scanned = [], {}
            neighbors.EXACT_MAX_REFERENCE = 10**12  # the blockwise scan for every bank
            for example_id in picks:
                t0 = time.perf_counter()
                scanned[example_id] = evidence.training_neighbors(run, example_id, "train", k=8)
                scan_s.append(time.perf_counter() - t0)
            scan = statistics.median(scan_s)
            neighbors.EXACT_MAX_REFERENCE = 0  # the kept index for every bank
            for method in args.methods:
                evidence._BANKS.clear()
                original = neighbors.NeighborIndex.__init__
                neighbors.NeighborIndex.__init__ = (  # type: ignore[method-assign]
                    lambda self, *, _m=method, _init=original, **kw: _init(self, method=_m))
                try:
                    t0 = time.perf_counter()
                    evidence.training_neighbors(run, picks[0], "train", k=8)
                    build = time.perf_counter() - t0
                    index_s, hits = [], 0
                    for example_id in picks:
                        t0 = time.perf_counter()
                        got = evidence.training_neighbors(run, example_id, "train", k=8)
                        index_s.append(time.perf_counter() - t0)
                        hits += len(set(got["example_id"]) & set(scanned[example_id]["example_id"]))
                finally:
                    neighbors.NeighborIndex.__init__ = original  # type: ignore[method-assign]
                indexed = statistics.median(index_s)
                print(f"| {n:,} | {scan * 1000:.0f} ms | {method} | {build:.2f} s | {indexed * 1000:.1f} ms "
                      f"| {scan / indexed:.0f}× | {hits / (8 * len(picks)):.3f} |", flush=True)
            neighbors.EXACT_MAX_REFERENCE = limit
            evidence._BANKS.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
