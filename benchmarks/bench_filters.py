"""Benchmark: filtering, lasso and plot sampling on the example table at 100k and 1M rows.

Compares ``apply_filter`` with the same filter written as a plain row-wise pandas ``apply``
(the naive reference) and ``points_in_polygon`` with a per-point Python ray-casting loop on a
subsample (time scaled linearly, marked "~"). Prints a table; read the ratios, not the seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import schema as S  # noqa: E402
from analysis.filters import FilterSpec, apply_filter, extreme_mask, plot_sample, points_in_polygon  # noqa: E402


def _table(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        S.EXAMPLE_ID: np.arange(n),
        S.SPLIT: pd.Series(rng.choice(["train", "test", "ood:far"], n), dtype="str"),
        S.LABEL: pd.array(rng.integers(0, 10, n), dtype="Int64"),
        S.REGION: pd.Categorical(rng.choice(list(S.REGIONS[:3]), n), categories=list(S.REGIONS)),
        S.CONFIDENCE: rng.random(n),
        S.AUM: rng.normal(size=n),
        S.UMAP_X: rng.normal(size=n),
        S.UMAP_Y: rng.normal(size=n),
    })


def _best(fn, repeat=3):  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _pip_loop(xs, ys, poly):  # type: ignore[no-untyped-def]
    out = []
    n = len(poly)
    for x, y in zip(xs, ys, strict=True):
        inside = False
        j = n - 1
        for i in range(n):
            xi, yi = poly[i]
            xj, yj = poly[j]
            if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
                inside = not inside
            j = i
        out.append(inside)
    return out


def main() -> None:
    spec = FilterSpec(splits=["train"], regions=[S.HARD, S.AMBIGUOUS], ranges={S.CONFIDENCE: (0.0, 0.3)})
    theta = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    poly = np.c_[np.cos(theta), np.sin(theta)]
    print(f"{'rows':>10} {'filter (s)':>11} {'row-wise (s)':>13} {'ratio':>7} {'lasso (s)':>10} {'loop (s)':>10} {'ratio':>7} {'sample (s)':>11}")
    for n in (100_000, 1_000_000):
        t = _table(n)
        ours = _best(lambda t=t: apply_filter(t, spec))
        sub = t.iloc[:20_000]
        naive = _best(lambda sub=sub: sub.apply(
            lambda r: r[S.SPLIT] == "train" and r[S.REGION] in (S.HARD, S.AMBIGUOUS) and 0 <= r[S.CONFIDENCE] <= 0.3,
            axis=1), repeat=1) * n / len(sub)
        lasso = _best(lambda t=t: points_in_polygon(t[S.UMAP_X], t[S.UMAP_Y], poly))
        m = 2_000
        loop = _best(lambda t=t, m=m: _pip_loop(t[S.UMAP_X].to_numpy()[:m], t[S.UMAP_Y].to_numpy()[:m], poly), repeat=1) * n / m
        samp = _best(lambda t=t, n=n: plot_sample(n, max_points=30_000, priority=extreme_mask(t, [S.AUM], k=500)))
        print(f"{n:>10,} {ours:>11.3f} {'~' + format(naive, '.1f'):>13} {naive / ours:>6.0f}x {lasso:>10.3f} "
              f"{'~' + format(loop, '.1f'):>10} {loop / lasso:>6.0f}x {samp:>11.3f}")


if __name__ == "__main__":
    main()
