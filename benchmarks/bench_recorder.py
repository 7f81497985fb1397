"""Wall-time overhead of recording training dynamics, on the sample model.

Trains the sample MLP (``analysis.sample``) on the digits and alternates epochs with and without a
:class:`~analysis.recorder.DynamicsRecorder` in the same process (on, off, off, on, ... so drift
and warm-up hit both arms alike), then prints the median epoch time of each arm and their ratio.
Each round trains one epoch with and one without recording (order alternating), so load
drifting on a shared machine hits both arms alike; the reported ratio is the median of the
per-round ratios. The recorded arm also pays for ``to_table()`` once at the end, amortised over
its epochs. "Recorder's own time" sums the wall time inside ``update`` (plus that amortised
``to_table``) relative to a plain epoch: the least noisy view of the overhead.

Usage: ``python benchmarks/bench_recorder.py [--epochs 60] [--batch-size 32]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from analysis import schema as S  # noqa: E402
from analysis.recorder import DynamicsRecorder  # noqa: E402
from analysis.sample import (  # noqa: E402
    LEARNING_RATE,
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


def run(epochs: int, batch_size: int, threads: int | None) -> dict[str, float]:
    if threads:
        torch.set_num_threads(threads)
    data = load_sample_data(seed=0)
    x = torch.as_tensor(data.pixels[S.TRAIN_SPLIT] / 16.0)
    y = torch.as_tensor(data.labels[S.TRAIN_SPLIT])
    ids = torch.as_tensor(data.ids[S.TRAIN_SPLIT])
    model = make_sample_model(seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(0)
    warm_rec = DynamicsRecorder(rank=0)
    for warm in range(4):  # warm-up, both paths
        train_one_epoch(model, opt, x, y, ids, epoch=0, generator=gen, batch_size=batch_size,
                        recorder=warm_rec if warm % 2 else None)
    rec = _TimedRecorder(rank=0)
    on_times, off_times, ratios, inside = [], [], [], []
    for r in range(epochs):
        pair = {}
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            spent0 = rec.spent
            t0 = time.perf_counter()
            train_one_epoch(model, opt, x, y, ids, epoch=r, generator=gen, batch_size=batch_size,
                            recorder=rec if on else None)
            pair[on] = time.perf_counter() - t0
            if on:
                inside.append(rec.spent - spent0)
        on_times.append(pair[True])
        off_times.append(pair[False])
        ratios.append(pair[True] / pair[False])
    t0 = time.perf_counter()
    table = rec.to_table()
    finish = time.perf_counter() - t0
    if table.num_rows != epochs * len(x):
        raise RuntimeError(f"Expected {epochs * len(x)} rows, got {table.num_rows}.")
    off = statistics.median(off_times)
    return {
        "steps_per_epoch": -(-len(x) // batch_size),
        "off_s": off,
        "on_s": statistics.median(on_times),
        "to_table_s": finish,
        # paired ratio (robust to load drifting between rounds) plus the amortised final to_table
        "ratio": statistics.median(ratios) + finish / epochs / off,
        # the recorder's own time: update calls + amortised to_table, over a plain epoch
        "inside": (statistics.median(inside) + finish / epochs) / off,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=60, help="rounds: epochs per arm (default 60)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.epochs} epochs per arm, median epoch wall time\n")
    print("| batch | steps/epoch | recorder off (ms) | recorder on (ms) | to_table (ms, once) "
          "| recorder's own time / epoch | ratio on/off (paired median) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    worst = 0.0
    for bs in args.batch_size:
        r = run(args.epochs, bs, args.threads)
        worst = max(worst, r["ratio"])
        print(f"| {bs} | {r['steps_per_epoch']} | {1e3 * r['off_s']:.2f} | {1e3 * r['on_s']:.2f} | "
              f"{1e3 * r['to_table_s']:.2f} | {100 * r['inside']:.1f}% | {r['ratio']:.3f} |")
    print(f"\nworst overhead: {100 * (worst - 1):+.1f}% (target: under +5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
