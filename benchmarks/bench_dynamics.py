"""Benchmark: training-dynamics analysis vs the original per-example loop.

Prints three tables:

1. From full logits in memory (n_examples x n_epochs x 10 classes): our vectorised analysis
   (`dynamics_from_logits` + `compute_dynamics_metrics`) next to a per-example Python loop that
   computes the way the original cartography code does (``torch.softmax`` on a fresh tensor per
   example and epoch, ``np.argmax``, then mean/std over the trend), on the same array in the
   same run; both after a small warm-up call. The loop runs in full up to
   ``--loop-max`` examples and on a ``--loop-max`` prefix above that (time scaled linearly,
   marked "~"); its outputs are checked against ours on the rows it computed.
2. End to end: ``datamap analyze`` on stored runs with compact dynamics (a fresh process each,
   wall time and peak RSS).
3. Importing cartography jsonl (100k examples x 5 epochs, written by ``pandas.to_json`` as the
   original code writes them) vs pandas ``read_json(lines=True)``, the way the original code reads
   them: ``--repeat`` rounds, each a fresh process per reader, alternating; the ratio is the median
   of the per-round ratios. A second row times our import with its fast path switched off (Arrow's
   JSON reader, which files in any other layout take).

Usage: ``python benchmarks/bench_dynamics.py [--quick]``. Each case runs in a fresh process so
peak memory is its own. Machines are noisy: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference_loop(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original code's computation: per example, per epoch, ``torch.softmax`` on a fresh tensor,
    then ``np.mean`` / ``np.std`` over the trend and ``np.argmax`` for correctness."""
    import torch

    n_epochs, n = logits.shape[:2]
    conf, var = np.empty(n), np.empty(n)
    for i in range(n):
        trend, correct = [], []
        for e in range(n_epochs):
            epoch_logits = logits[e, i].tolist()  # the original holds lists parsed from jsonl
            probs = torch.nn.functional.softmax(torch.Tensor(epoch_logits), dim=-1)
            trend.append(float(probs[labels[i]]))
            correct.append(np.argmax(epoch_logits) == labels[i])
        conf[i] = np.mean(trend)
        var[i] = np.std(trend)
    return conf, var


def case_memory(n: int, n_epochs: int, loop_max: int) -> dict:
    from analysis import schema as S
    from analysis.dynamics import compute_dynamics_metrics, dynamics_from_logits

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n_epochs, n, 10)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    compute_dynamics_metrics(dynamics_from_logits(logits[:, :1000], labels[:1000]))  # warm-up
    reference_loop(logits[:, :100], labels[:100])
    base_rss = _rss_mb()
    t0 = time.perf_counter()
    metrics = compute_dynamics_metrics(dynamics_from_logits(logits, labels))
    ours = time.perf_counter() - t0
    peak = _rss_mb()
    m = min(n, loop_max)
    t0 = time.perf_counter()
    conf, var = reference_loop(logits[:, :m], labels[:m])
    loop = (time.perf_counter() - t0) * (n / m)
    np.testing.assert_allclose(metrics[S.CONFIDENCE].to_numpy()[:m], conf, atol=1e-6)
    np.testing.assert_allclose(metrics[S.VARIABILITY].to_numpy()[:m], var, atol=1e-6)
    return {"ours_s": ours, "loop_s": loop, "loop_extrapolated": m < n,
            "peak_mb": peak, "input_mb": logits.nbytes / 2**20, "base_mb": base_rss}


def case_analyze(run_dir: str) -> dict:
    from analysis.pipeline import AnalyzeOptions, analyze_run

    t0 = time.perf_counter()
    analyze_run(run_dir, AnalyzeOptions(ood=False))
    return {"wall_s": time.perf_counter() - t0, "peak_mb": _rss_mb()}


def case_import(log_dir: str, out_dir: str, general: bool = False) -> dict:
    from analysis import cartography
    from analysis.cartography import import_cartography

    if general:  # what a file in another layout (whitespace, key order, ...) costs
        cartography._parse_compact = lambda *a: None  # type: ignore[assignment]
    t0 = time.perf_counter()
    import_cartography(log_dir, out_dir, overwrite=True)
    return {"wall_s": time.perf_counter() - t0, "peak_mb": _rss_mb()}


def case_pandas(log_dir: str) -> dict:
    import pandas as pd

    t0 = time.perf_counter()
    for f in sorted(Path(log_dir).glob("dynamics_epoch_*.jsonl")):
        pd.read_json(f, lines=True)
    return {"wall_s": time.perf_counter() - t0, "peak_mb": _rss_mb()}


def _sub(*args: str) -> dict:
    """Run one case in a fresh interpreter; the whole process is timed too (imports included)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--case", *args], capture_output=True, text=True,
                         cwd=ROOT, check=False)
    if out.returncode != 0:
        raise SystemExit(f"case {args} failed:\n{out.stderr}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t0
    return res


def _write_logs(log_dir: Path, n: int, n_epochs: int) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    log_dir.mkdir(parents=True, exist_ok=True)
    for e in range(n_epochs):
        z = rng.normal(size=(n, 10))
        order = rng.permutation(n)
        df = pd.DataFrame({"guid": order, f"logits_epoch_{e}": list(z), "gold": labels[order]})
        df.to_json(log_dir / f"dynamics_epoch_{e}.jsonl", orient="records", lines=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100k only (CI-sized)")
    ap.add_argument("--loop-max", type=int, default=100_000,
                    help="largest n the reference loop runs in full (default 100k)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds of the import comparison (default 5)")
    ap.add_argument("--only", choices=["memory", "analyze", "import"], help="run one of the three tables")
    ap.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        from analysis._alloc import prefer_plain_pages

        prefer_plain_pages()  # every case runs with the `datamap` command's allocator settings
        kind, *rest = args.case
        if kind == "memory":
            res = case_memory(int(rest[0]), int(rest[1]), int(rest[2]))
        elif kind == "analyze":
            res = case_analyze(rest[0])
        elif kind in ("import", "import-general"):
            res = case_import(rest[0], rest[1], general=kind == "import-general")
        else:
            res = case_pandas(rest[0])
        print(json.dumps(res))
        return

    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    epochs = [10] if args.quick else [10, 20]
    print(f"cpu cores: {os.cpu_count()}; numpy {np.__version__}\n")
    sections = {args.only} if args.only else {"memory", "analyze", "import"}
    if "memory" in sections:
        _table_memory(sizes, epochs, args.loop_max)
    with tempfile.TemporaryDirectory() as tmp:
        if "analyze" in sections:
            _table_analyze(Path(tmp), sizes, epochs)
        if "import" in sections:
            _table_import(Path(tmp), args.repeat)


def _table_memory(sizes: list[int], epochs: list[int], loop_max: int) -> None:
    print("1. From full logits in memory (10 classes)")
    print(f"{'examples':>10} {'epochs':>6} {'ours (s)':>9} {'loop (s)':>10} {'speed-up':>9} {'peak RSS (MB)':>14} {'logits (MB)':>11}")
    for n in sizes:
        for e in epochs:
            r = _sub("memory", str(n), str(e), str(loop_max))
            loop = f"{'~' if r['loop_extrapolated'] else ''}{r['loop_s']:.1f}"
            print(f"{n:>10,} {e:>6} {r['ours_s']:>9.2f} {loop:>10} {r['loop_s'] / r['ours_s']:>8.0f}x "
                  f"{r['peak_mb']:>14.0f} {r['input_mb']:>11.0f}")



def _table_analyze(tmp: Path, sizes: list[int], epochs: list[int]) -> None:
    from analysis.synthetic import make_synthetic_run

    print("\n2. End to end: `datamap analyze` on a stored run (compact dynamics, fresh process)")
    print(f"{'examples':>10} {'epochs':>6} {'analyze (s)':>12} {'process (s)':>12} {'peak RSS (MB)':>14}")
    for n in sizes:
        for e in epochs:
            run = tmp / f"run-{n}-{e}"
            make_synthetic_run(run, n_examples=n, n_epochs=e, n_eval=0)
            r = _sub("analyze", str(run))
            print(f"{n:>10,} {e:>6} {r['wall_s']:>12.2f} {r['process_s']:>12.2f} {r['peak_mb']:>14.0f}")
            shutil.rmtree(run)


def _table_import(tmp: Path, repeat: int) -> None:
    print("\n3. Importing cartography jsonl, 100k examples x 5 epochs x 10 classes "
          f"(fresh process each, {repeat} alternating rounds)")
    logs = tmp / "logs"
    _write_logs(logs, 100_000, 5)
    runs: dict[str, list[dict]] = {"pandas": [], "import": [], "import-general": []}
    for _ in range(repeat):
        for kind in runs:
            extra = [] if kind == "pandas" else [str(tmp / "imported")]
            runs[kind].append(_sub(kind, str(logs), *extra))
    pandas = [r["wall_s"] for r in runs["pandas"]]
    print(f"{'reader':>44} {'wall (s), median':>16} {'peak RSS (MB)':>14} {'speed-up vs pandas':>19}")
    print(f"{'pandas read_json(lines=True)':>44} {statistics.median(pandas):>16.2f} "
          f"{max(r['peak_mb'] for r in runs['pandas']):>14.0f} {'1.0x':>19}")
    for kind, label in (("import", "datamap import (parse+validate+write)"),
                        ("import-general", "datamap import, JSON reader (other layouts)")):
        walls = [r["wall_s"] for r in runs[kind]]
        ratios = sorted(p / w for p, w in zip(pandas, walls, strict=True))
        spread = f"{statistics.median(ratios):.1f}x ({ratios[0]:.1f}-{ratios[-1]:.1f})"
        print(f"{label:>44} {statistics.median(walls):>16.2f} "
              f"{max(r['peak_mb'] for r in runs[kind]):>14.0f} {spread:>19}")


if __name__ == "__main__":
    main()
