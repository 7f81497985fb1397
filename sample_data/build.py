"""Build the shipped sample run into ``sample_data/run`` and analyse it.

Usage: ``python sample_data/build.py [--seed 0] [--no-analyze]``. What the run contains is
described in :mod:`analysis.sample`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from analysis.sample import build_sample_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "run")
    parser.add_argument("--no-analyze", action="store_true", help="skip `datamap analyze`")
    args = parser.parse_args()
    t0 = time.perf_counter()
    run = build_sample_run(args.out, seed=args.seed)
    print(f"built {run} in {time.perf_counter() - t0:.1f} s")
    if not args.no_analyze:
        from analysis.pipeline import analyze_run

        t1 = time.perf_counter()
        table = analyze_run(run)
        print(f"analysed {len(table):,} examples in {time.perf_counter() - t1:.1f} s")
    size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    print(f"{run}: {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
