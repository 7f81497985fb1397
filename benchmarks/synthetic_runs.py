"""Analysed synthetic runs shared by the dashboard and report benchmarks (built once, reused)."""

from __future__ import annotations

import time
from pathlib import Path

from analysis import schema as S


def build_run(n: int, base: Path) -> Path:
    """An analysed synthetic run of ``n`` training examples (reused when present)."""
    from analysis.pipeline import AnalyzeOptions, analyze_run
    from analysis.synthetic import make_synthetic_run

    run = base / f"n{n}"
    if (run / S.TABLE_FILE).is_file():
        return run
    t0 = time.perf_counter()
    n_eval = min(max(n // 20, 500), 20_000)
    make_synthetic_run(run, n_examples=n, n_eval=n_eval, seed=1)
    analyze_run(run, AnalyzeOptions(extra={
        "projection": "pca",
        "ood_scorers": ["ood_msp", "ood_energy", "ood_mahalanobis"],
    }))
    print(f"  built {run} in {time.perf_counter() - t0:.1f} s", flush=True)
    return run
