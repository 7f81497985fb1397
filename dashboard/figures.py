"""Pure figure builders: ``*_svg(...) -> str``, self-contained SVG, no Streamlit calls.

The OOD page's histograms and curves and the example view's p(gold) trajectory. They are plain
SVG rather than chart-library figures: the browser shows them at once, where the first Plotly
chart on a tab loads a 4.7 MB bundle (about a second here; docs/dashboard.md, "Speed"). Each
mark carries a ``<title>`` (the browser's tooltip); text and axes use ``currentColor`` so they
follow the theme. Any text from the data (split names, score names) is escaped. The two maps are
drawn by the dashboard's own canvas chart: see :mod:`dashboard.scatter`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from analysis import schema as S

__all__ = [
    "CATEGORICAL_PALETTE",
    "column_choices",
    "nice_ticks",
    "ood_histogram_svg",
    "pr_svg",
    "roc_svg",
    "trajectory_svg",
]

CATEGORICAL_PALETTE = (
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2",
    "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC",
)
"""Tableau-like qualitative palette; categories beyond it cycle."""


def _is_numeric(series: pd.Series) -> bool:
    return (
        pd.api.types.is_numeric_dtype(series)
        and not pd.api.types.is_bool_dtype(series)
    )


# ---- SVG frame -------------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 × 10^k) covering ``[lo, hi]``.

    Examples
    --------
    >>> nice_ticks(0.0, 1.0, 5)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    span = hi - lo
    if not (span > 0 and math.isfinite(span)):
        return [lo] if math.isfinite(lo) else []
    raw = span / max(count, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    norm = raw / mag
    step = (1 if norm < 1.5 else 2 if norm < 3 else 5 if norm < 7 else 10) * mag
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def _label(v: float, step: float) -> str:
    if not (step > 0 and math.isfinite(step)):
        return f"{v:g}"
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{v:.{digits}f}" if digits <= 6 else f"{v:.3g}"


def _widened(lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)``, or a range around ``lo`` when it is empty (a constant: ±0.5, or relative to
    the value where 0.5 would vanish in rounding)."""
    if hi > lo:
        return lo, hi
    pad = max(0.5, abs(lo) * 1e-6)
    return lo - pad, lo + pad


class _Frame:
    """An SVG plot area: data → pixel transforms, gridlines, tick labels, axis titles."""

    def __init__(
        self, *, width: int, height: int, x_range: tuple[float, float], y_range: tuple[float, float],
        x_title: str, y_title: str, margin: tuple[int, int, int, int] = (48, 14, 12, 38),
        x_ticks: Sequence[float] | None = None, y_ticks: Sequence[float] | None = None,
    ) -> None:
        self.width, self.height = width, height
        left, right, top, bottom = margin
        self.left, self.top = left, top
        self.pw, self.ph = width - left - right, height - top - bottom
        self.x0, self.x1 = _widened(*x_range)
        self.y0, self.y1 = _widened(*y_range)
        self.parts: list[str] = [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
            f'style="max-width: {width}px; font: 11px sans-serif; color: inherit" role="img">',
        ]
        xt = list(x_ticks) if x_ticks is not None else nice_ticks(self.x0, self.x1, max(3, self.pw // 70))
        yt = list(y_ticks) if y_ticks is not None else nice_ticks(self.y0, self.y1, max(3, self.ph // 45))
        xstep = xt[1] - xt[0] if len(xt) > 1 else 1.0
        ystep = yt[1] - yt[0] if len(yt) > 1 else 1.0
        for v in yt:
            y = self.sy(v)
            self.parts.append(f'<line x1="{left}" x2="{left + self.pw}" y1="{y:.1f}" y2="{y:.1f}" '
                              'stroke="currentColor" stroke-opacity="0.12"/>')
            self.parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                              f'fill="currentColor">{_label(v, ystep)}</text>')
        for v in xt:
            x = self.sx(v)
            self.parts.append(f'<text x="{x:.1f}" y="{top + self.ph + 15}" text-anchor="middle" '
                              f'fill="currentColor">{_label(v, xstep)}</text>')
        self.parts.append(f'<rect x="{left}" y="{top}" width="{self.pw}" height="{self.ph}" fill="none" '
                          'stroke="currentColor" stroke-opacity="0.35"/>')
        self.parts.append(f'<text x="{left + self.pw / 2:.1f}" y="{height - 4}" text-anchor="middle" '
                          f'fill="currentColor">{escape(x_title)}</text>')
        self.parts.append(f'<text transform="translate(11 {top + self.ph / 2:.1f}) rotate(-90)" '
                          f'text-anchor="middle" fill="currentColor">{escape(y_title)}</text>')

    def sx(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.pw

    def sy(self, y: float) -> float:
        return self.top + (self.y1 - y) / (self.y1 - self.y0) * self.ph

    def legend(self, items: Sequence[tuple[str, str]], *, bottom: bool = False) -> None:
        """Colour swatches with names, in rows inside the top (or bottom) of the plot area."""
        rows: list[list[tuple[str, str, float]]] = [[]]
        x = self.left + 8
        for name, color in items:
            w = 22 + 6.2 * len(name)
            if rows[-1] and x + w > self.left + self.pw:
                rows.append([])
                x = self.left + 8
            rows[-1].append((name, color, x))
            x += w + 10
        y = self.top + 12 if not bottom else self.top + self.ph - 8 - 16 * (len(rows) - 1)
        for row in rows:
            for name, color, x in row:
                self.parts.append(f'<rect x="{x:.1f}" y="{y - 8:.1f}" width="12" height="10" fill="{color}" '
                                  'fill-opacity="0.8"/>')
                self.parts.append(f'<text x="{x + 16:.1f}" y="{y + 1:.1f}" fill="currentColor">{escape(name)}</text>')
            y += 16

    def svg(self) -> str:
        return "".join([*self.parts, "</svg>"])


# ---- OOD -----------------------------------------------------------------------------------------


def split_histograms(
    table: pd.DataFrame, score: str, *, by: str = S.SPLIT, bins: int = 60
) -> tuple[NDArray[np.float64], list[tuple[str, NDArray[np.int64], int]]]:
    """Counts of one score per group (split) on bins shared by every group.

    Scores are clipped to ±1e300 so that the bin width stays finite; a constant score gets a
    range around its value. Rows with a missing score or group are left out.

    Returns
    -------
    (edges of shape (bins + 1,), [(group name, counts of shape (bins,), rows counted), ...])
    """
    if score not in table.columns:
        raise ValueError(f"Expected a score column in the table, got {score!r}.")
    values = np.clip(table[score].to_numpy(dtype=np.float64, na_value=np.nan), -1e300, 1e300)
    finite = np.isfinite(values)
    lo, hi = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 1.0)
    edges = np.linspace(*_widened(lo, hi), bins + 1)
    codes, names = pd.factorize(table[by], sort=True)
    groups = []
    for code in np.unique(codes[finite & (codes >= 0)]).tolist():
        sel = finite & (codes == code)
        counts, _ = np.histogram(values[sel], bins=edges)
        groups.append((str(names[code]), counts, int(sel.sum())))
    return edges, groups


def ood_histogram_svg(
    table: pd.DataFrame,
    score: str,
    *,
    by: str = S.SPLIT,
    bins: int = 60,
    width: int = 980,
    height: int = 340,
    cutoff: float | None = None,
) -> str:
    """Distribution of one OOD score per split (higher = more anomalous), bars overlaid.

    The bins are shared by every split and counted on the server, so the figure stays small at
    any table size; each split's bars are fractions of that split (its bars sum to 1). ``cutoff``
    (the diagnosis' ``suspect_ood`` threshold on this score) is drawn as a dashed vertical line
    when it lies inside the range (up to the tallest bar, below the legend).
    """
    edges, split_counts = split_histograms(table, score, by=by, bins=bins)
    lo, hi = float(edges[0]), float(edges[-1])
    groups = [(name, counts / max(total, 1), max(total, 1)) for name, counts, total in split_counts]
    top = max((float(f.max()) for _, f, _ in groups), default=1.0) or 1.0
    frame = _Frame(width=width, height=height, x_range=(lo, hi), y_range=(0.0, top * 1.12),
                   x_title=f"{score} (higher = more anomalous)", y_title="fraction of split",
                   margin=(52, 14, 12, 38))
    for k, (name, frac, total) in enumerate(groups):
        color = CATEGORICAL_PALETTE[k % len(CATEGORICAL_PALETTE)]
        frame.parts.append(f'<g fill="{color}" fill-opacity="0.6">')
        for b, f in enumerate(frac.tolist()):
            if f <= 0:
                continue
            x0, x1 = frame.sx(float(edges[b])), frame.sx(float(edges[b + 1]))
            y = frame.sy(f)
            frame.parts.append(
                f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 0.5):.1f}" '
                f'height="{frame.sy(0.0) - y:.1f}"><title>{escape(name)}: {escape(score)} '
                f'{edges[b]:.3g} to {edges[b + 1]:.3g}: {f:.2%} of {total:,}</title></rect>')
        frame.parts.append("</g>")
    if cutoff is not None and np.isfinite(cutoff) and lo <= cutoff <= hi:
        x = frame.sx(float(cutoff))
        frame.parts.append(
            f'<line class="cutoff" x1="{x:.1f}" y1="{frame.sy(top * 1.02):.1f}" x2="{x:.1f}" '
            f'y2="{frame.sy(0.0):.1f}" stroke="#333333" stroke-width="1.5" stroke-dasharray="5 4">'
            f"<title>suspect_ood cut-off: {escape(score)} above {cutoff:.4g}</title></line>")
    frame.legend([(f"{name} ({total:,})", CATEGORICAL_PALETTE[k % len(CATEGORICAL_PALETTE)])
                  for k, (name, _, total) in enumerate(groups)])
    return frame.svg()


def _curves_svg(
    curves: Mapping[str, Mapping[str, Any]], *, x: str, y: str, summary: str, summary_label: str,
    x_title: str, y_title: str, width: int, height: int, extra: Callable[[_Frame], None] | None = None,
) -> str:
    """One line per curve on [0, 1]², labelled with its summary number."""
    frame = _Frame(width=width, height=height, x_range=(0.0, 1.0), y_range=(0.0, 1.02),
                   x_title=x_title, y_title=y_title, x_ticks=nice_ticks(0, 1, 5), y_ticks=nice_ticks(0, 1, 5))
    if extra is not None:
        extra(frame)
    items = []
    for k, (name, c) in enumerate(curves.items()):
        color = CATEGORICAL_PALETTE[k % len(CATEGORICAL_PALETTE)]
        value = c.get(summary)
        label = f"{name} ({summary_label} {value:.3f})" if value is not None else name
        xs = np.asarray(c[x], dtype=np.float64)
        ys = np.asarray(c[y], dtype=np.float64)
        ok = np.isfinite(xs) & np.isfinite(ys)
        pts = " ".join(f"{frame.sx(a):.1f},{frame.sy(b):.1f}" for a, b in zip(xs[ok], ys[ok], strict=True))
        frame.parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2">'
                           f"<title>{escape(label)}</title></polyline>")
        # invisible markers at up to 40 points, for their values on hover
        for i in np.unique(np.linspace(0, ok.sum() - 1, min(40, int(ok.sum()))).astype(int)).tolist():
            a, b = float(xs[ok][i]), float(ys[ok][i])
            frame.parts.append(f'<circle cx="{frame.sx(a):.1f}" cy="{frame.sy(b):.1f}" r="5" fill="{color}" '
                               f'fill-opacity="0"><title>{escape(name)}: {escape(x_title.split(" (")[0])} '
                               f'{a:.3f}, {escape(y_title.split(" (")[0])} {b:.3f}</title></circle>')
        items.append((label, color))
    frame.legend(items, bottom=True)
    return frame.svg()


def roc_svg(curves: Mapping[str, Mapping[str, Any]], *, width: int = 420, height: int = 340) -> str:
    """ROC curves, OOD as the positive class, with the chance diagonal.

    Parameters
    ----------
    curves : mapping name -> {"fpr": array, "tpr": array, "auroc": float}
    """
    def chance(frame: _Frame) -> None:
        frame.parts.append(f'<line x1="{frame.sx(0):.1f}" y1="{frame.sy(0):.1f}" x2="{frame.sx(1):.1f}" '
                           f'y2="{frame.sy(1):.1f}" stroke="#999999" stroke-dasharray="2 3">'
                           "<title>chance</title></line>")

    return _curves_svg(
        curves, x="fpr", y="tpr", summary="auroc", summary_label="AUROC",
        x_title="false positive rate (ID flagged as OOD)", y_title="true positive rate (OOD detected)",
        width=width, height=height, extra=chance,
    )


def pr_svg(curves: Mapping[str, Mapping[str, Any]], *, width: int = 420, height: int = 340) -> str:
    """Precision-recall curves, OOD as the positive class.

    Parameters
    ----------
    curves : mapping name -> {"recall": array, "precision": array, "aupr_out": float}
    """
    return _curves_svg(
        curves, x="recall", y="precision", summary="aupr_out", summary_label="AUPR-out",
        x_title="recall (OOD)", y_title="precision (OOD)", width=width, height=height,
    )


# ---- one example --------------------------------------------------------------------------------


def trajectory_svg(
    trajectory: pd.DataFrame,
    *,
    confidence: float | None = None,
    width: int = 420,
    height: int = 240,
) -> str:
    """p(gold) over epochs for one example.

    Parameters
    ----------
    trajectory : DataFrame with columns ``epoch`` and ``gold_prob`` (n_epochs rows)
    confidence : float, optional
        Draws the example's mean p(gold) as a dotted line.
    """
    traj = trajectory.sort_values(S.EPOCH)
    epochs = traj[S.EPOCH].to_numpy(dtype=np.float64)
    probs = traj[S.GOLD_PROB].to_numpy(dtype=np.float64)
    known = epochs[np.isfinite(epochs)]
    e0, e1 = (float(known.min()), float(known.max())) if known.size else (0.0, 1.0)
    step = max(1, math.ceil((e1 - e0) / 10))  # at most ~10 evenly spaced whole epochs
    ticks = [float(v) for v in np.arange(math.ceil(e0 / step) * step, e1 + 1e-9, step)] or [e0]
    frame = _Frame(width=width, height=height, x_range=(e0, e1), y_range=(-0.02, 1.02),
                   x_title="epoch", y_title="p(gold label)", margin=(44, 12, 10, 36),
                   x_ticks=ticks, y_ticks=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    if confidence is not None and np.isfinite(confidence):
        y = frame.sy(float(confidence))
        frame.parts.append(f'<line x1="{frame.left}" x2="{frame.left + frame.pw}" y1="{y:.1f}" y2="{y:.1f}" '
                           'stroke="#888888" stroke-dasharray="2 3"/>')
        frame.parts.append(f'<text x="{frame.left + frame.pw - 4}" y="{y - 4:.1f}" text-anchor="end" '
                           f'fill="#888888">confidence {confidence:.2f}</text>')
    ok = np.isfinite(epochs) & np.isfinite(probs)
    color = CATEGORICAL_PALETTE[0]
    pts = " ".join(f"{frame.sx(e):.1f},{frame.sy(p):.1f}" for e, p in zip(epochs[ok], probs[ok], strict=True))
    if pts:
        frame.parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
    for e, p in zip(epochs[ok], probs[ok], strict=True):
        frame.parts.append(f'<circle cx="{frame.sx(e):.1f}" cy="{frame.sy(p):.1f}" r="3.5" fill="{color}">'
                           f"<title>epoch {e:g}: p(gold) {p:.3f}</title></circle>")
    return frame.svg()


def column_choices(table: pd.DataFrame, *, exclude: Sequence[str] = ()) -> list[str]:
    """Columns a person can colour by: numbers, booleans and few-valued categories."""
    skip = {S.EXAMPLE_ID, S.IMAGE, S.TEXT, *exclude}
    out = []
    for col in table.columns:
        if col in skip:
            continue
        ser = table[col]
        if _is_numeric(ser) or pd.api.types.is_bool_dtype(ser):
            out.append(col)
        elif isinstance(ser.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(ser) or ser.dtype == object:
            # bytes payloads and free text are not colours
            sample = ser.dropna().head(50)
            if len(sample) and isinstance(sample.iloc[0], bytes | bytearray):
                continue
            if ser.head(20_000).nunique(dropna=True) <= 200:
                out.append(col)
    return out
