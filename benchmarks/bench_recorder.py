"""Wall-time overhead of recording training dynamics, on the sample model.

Trains the sample MLP (``analysis.sample``) on the digits in one process, with and without a
:class:`~analysis.recorder.DynamicsRecorder`. One *round* is one recorded run as the sample run
does it: ``--run-epochs`` epochs (default: the sample's 20) with a fresh recorder, then
``to_table()`` (what ``save`` computes before writing), interleaved epoch by epoch with as many
epochs without recording (on, off, off, on, ... so load drifting on a shared machine hits both
arms alike). The round's ratio is

    (its recorded epochs + to_table) / (its plain epochs)

so every cost of recording is in it: the ``update`` calls, the reductions every 256 batches (a
round spans several), the last reduction and the sorting in ``to_table``, and whatever recording
does to the training step itself (memory kept alive, caches). The reported ratio is the median
over rounds, with a 95 % bootstrap confidence interval (rounds resampled); the same for CPU time
(``process_time``: not inflated when other processes preempt this one, but it counts the torch
threads' spinning). "Recorder's own time" is the wall time inside ``update`` plus ``to_table``,
over the plain epochs' time (the timing wrapper's two ``perf_counter`` calls per step are charged
to the recorder).

Usage: ``python benchmarks/bench_recorder.py [--rounds 30] [--batch-size 32 128]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from analysis import schema as S  # noqa: E402
from analysis.recorder import DynamicsRecorder  # noqa: E402
from analysis.sample import (  # noqa: E402
    LEARNING_RATE,
    N_EPOCHS,
    load_sample_data,
    make_sample_model,
    train_one_epoch,
)


class _TimedRecorder(DynamicsRecorder):
    """A recorder that also sums the wall time spent inside ``update``."""

    spent = 0.0

    def update(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        super().update(*args, **kwargs)
        self.spent += time.perf_counter() - t0


def _median_ci(values: list[float], n_boot: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Median and its 95 % percentile-bootstrap confidence interval."""
    a = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boot = np.median(a[rng.integers(0, len(a), size=(n_boot, len(a)))], axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(np.median(a)), float(lo), float(hi)


def run(rounds: int, batch_size: int, run_epochs: int = N_EPOCHS, hidden: int = 128) -> dict[str, Any]:
    data = load_sample_data(seed=0)
    x = torch.as_tensor(data.pixels[S.TRAIN_SPLIT] / 16.0)
    y = torch.as_tensor(data.labels[S.TRAIN_SPLIT])
    ids = torch.as_tensor(data.ids[S.TRAIN_SPLIT])
    model = make_sample_model(seed=0, hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(0)

    def epoch(e: int, recorder: DynamicsRecorder | None) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        train_one_epoch(model, opt, x, y, ids, epoch=e, generator=gen, batch_size=batch_size,
                        recorder=recorder)
        return time.perf_counter() - t0, time.process_time() - c0

    warm_rec = DynamicsRecorder(rank=0)
    for warm in range(4):  # warm-up, both paths
        epoch(warm, warm_rec if warm % 2 else None)
    warm_rec.to_table()

    ratios, cpu_ratios, inside, off_ms, on_ms, finish_ms = [], [], [], [], [], []
    for r in range(rounds):
        rec = _TimedRecorder(rank=0)
        wall = {True: 0.0, False: 0.0}
        cpu = {True: 0.0, False: 0.0}
        for e in range(run_epochs):
            for on in ((True, False) if (r + e) % 2 == 0 else (False, True)):
                w, c = epoch(e, rec if on else None)
                wall[on] += w
                cpu[on] += c
        t0, c0 = time.perf_counter(), time.process_time()
        table = rec.to_table()
        finish, finish_cpu = time.perf_counter() - t0, time.process_time() - c0
        if table.num_rows != run_epochs * len(x):
            raise RuntimeError(f"Expected {run_epochs * len(x)} rows, got {table.num_rows}.")
        wall[True] += finish
        cpu[True] += finish_cpu
        ratios.append(wall[True] / wall[False])
        cpu_ratios.append(cpu[True] / max(cpu[False], 1e-9))
        inside.append((rec.spent + finish) / wall[False])
        off_ms.append(1e3 * wall[False] / run_epochs)
        on_ms.append(1e3 * wall[True] / run_epochs)
        finish_ms.append(1e3 * finish)
    return {
        "steps_per_epoch": -(-len(x) // batch_size),
        "off_ms": float(np.median(off_ms)),
        "on_ms": float(np.median(on_ms)),
        "to_table_ms": float(np.median(finish_ms)),
        "ratio": _median_ci(ratios),
        "cpu_ratio": _median_ci(cpu_ratios),
        "inside": float(np.median(inside)),
        "ratio_range": (min(ratios), max(ratios)),
    }


def _fmt(m: tuple[float, float, float]) -> str:
    return f"{m[0]:.3f} [{m[1]:.3f}, {m[2]:.3f}]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30, help="recorded runs per batch size (default 30)")
    p.add_argument("--run-epochs", type=int, default=N_EPOCHS,
                   help=f"epochs per recorded run, to_table() amortised over them (default {N_EPOCHS}, "
                        "as the sample run)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--hidden", type=int, default=128,
                   help="width of the MLP's first layer (128: the sample model; larger: a slower step)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; MLP 64-{args.hidden}-64-8; {args.rounds} rounds "
          f"of {args.run_epochs} epochs recorded + to_table() vs {args.run_epochs} plain epochs\n")
    print("| batch | steps/epoch | off: ms/epoch | on: ms/epoch | to_table ms (per run) "
          "| recorder's own time | on/off wall, median [95% CI] | round range | on/off CPU [95% CI] |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    worst = 0.0
    for bs in args.batch_size:
        r = run(args.rounds, bs, args.run_epochs, args.hidden)
        worst = max(worst, r["ratio"][2])
        print(f"| {bs} | {r['steps_per_epoch']} | {r['off_ms']:.2f} | {r['on_ms']:.2f} | "
              f"{r['to_table_ms']:.1f} | {100 * r['inside']:.1f}% | {_fmt(r['ratio'])} | "
              f"{r['ratio_range'][0]:.3f}–{r['ratio_range'][1]:.3f} | {_fmt(r['cpu_ratio'])} |", flush=True)
    print(f"\nworst upper 95% bound of the wall-time overhead: {100 * (worst - 1):+.1f}% (target: under "
          "+5%).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
