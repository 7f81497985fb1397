"""Pure figure builders: ``*_figure(table, ...) -> go.Figure`` (Plotly) and ``*_svg``, no Streamlit calls.

The OOD page's histograms and curves, and the example view's trajectory as a plain SVG. The two
maps (data map, embeddings) are drawn by the dashboard's own canvas chart: see
:mod:`dashboard.scatter`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis import schema as S

__all__ = [
    "CATEGORICAL_PALETTE",
    "column_choices",
    "ood_histogram_figure",
    "pr_figure",
    "roc_figure",
    "trajectory_svg",
]

CATEGORICAL_PALETTE = (
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2",
    "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC",
)
"""Tableau-like qualitative palette; categories beyond it cycle."""
FLAG_COLOR = "#D62728"
REGION_LINE_COLOR = "#444444"
MAX_CATEGORIES = 30
"""A categorical colour lists at most this many names in its legend."""


def _is_numeric(series: pd.Series) -> bool:
    return (
        pd.api.types.is_numeric_dtype(series)
        and not pd.api.types.is_bool_dtype(series)
    )


# ---- OOD -----------------------------------------------------------------------------------------


def ood_histogram_figure(
    table: pd.DataFrame,
    score: str,
    *,
    by: str = S.SPLIT,
    bins: int = 60,
    height: int = 380,
) -> go.Figure:
    """Distribution of one OOD score per split (higher = more anomalous).

    The bins are shared by every split and counted on the server (a bar per bin), so the figure
    stays small at any table size; each split's bars are normalised to fractions of that split.
    """
    if score not in table.columns:
        raise ValueError(f"Expected a score column in the table, got {score!r}.")
    values = table[score].to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    fig = go.Figure()
    if finite.any():
        lo, hi = float(values[finite].min()), float(values[finite].max())
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        centers = (edges[:-1] + edges[1:]) / 2
        codes, names = pd.factorize(table[by], sort=True)
        present = np.unique(codes[finite & (codes >= 0)])
        for k, code in enumerate(present.tolist()):
            name = str(names[code])
            sel = finite & (codes == code)
            counts, _ = np.histogram(values[sel], bins=edges)
            total = max(int(sel.sum()), 1)
            fig.add_trace(
                go.Bar(
                    x=centers,
                    y=counts / total,
                    width=float(edges[1] - edges[0]),
                    name=f"{name} ({total:,})",
                    marker_color=CATEGORICAL_PALETTE[k % len(CATEGORICAL_PALETTE)],
                    opacity=0.6,
                    hovertemplate=f"{name}<br>{score} %{{x:.3g}}<br>%{{y:.2%}} of split<extra></extra>",
                )
            )
    fig.update_layout(
        barmode="overlay",
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title=f"{score} (higher = more anomalous)",
        yaxis_title="fraction of split",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01},
    )
    return fig


def _curve_figure(
    curves: Mapping[str, Mapping[str, Any]], *, x: str, y: str, summary: str, summary_label: str,
    x_title: str, y_title: str, height: int,
) -> go.Figure:
    """One line per curve, labelled with its summary number; axes on [0, 1]."""
    fig = go.Figure()
    for k, (name, c) in enumerate(curves.items()):
        value = c.get(summary)
        label = f"{name} ({summary_label} {value:.3f})" if value is not None else name
        fig.add_trace(
            go.Scatter(
                x=np.asarray(c[x], dtype=np.float32),
                y=np.asarray(c[y], dtype=np.float32),
                mode="lines",
                name=label,
                line={"color": CATEGORICAL_PALETTE[k % len(CATEGORICAL_PALETTE)]},
            )
        )
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title=x_title,
        yaxis_title=y_title,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01},
    )
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02])
    return fig


def roc_figure(curves: Mapping[str, Mapping[str, Any]], *, height: int = 360) -> go.Figure:
    """ROC curves, OOD as the positive class.

    Parameters
    ----------
    curves : mapping name -> {"fpr": array, "tpr": array, "auroc": float}
    """
    fig = _curve_figure(
        curves, x="fpr", y="tpr", summary="auroc", summary_label="AUROC",
        x_title="false positive rate (in-distribution flagged as OOD)",
        y_title="true positive rate (OOD detected)", height=height,
    )
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                   line={"color": "#999999", "dash": "dot"}, hoverinfo="skip")
    )
    return fig


def pr_figure(curves: Mapping[str, Mapping[str, Any]], *, height: int = 360) -> go.Figure:
    """Precision-recall curves, OOD as the positive class.

    Parameters
    ----------
    curves : mapping name -> {"recall": array, "precision": array, "aupr_out": float}
    """
    return _curve_figure(
        curves, x="recall", y="precision", summary="aupr_out", summary_label="AUPR-out",
        x_title="recall (OOD)", y_title="precision (OOD)", height=height,
    )


# ---- one example --------------------------------------------------------------------------------


def trajectory_svg(
    trajectory: pd.DataFrame,
    *,
    confidence: float | None = None,
    width: int = 420,
    height: int = 240,
) -> str:
    """p(gold) over epochs for one example, as a self-contained SVG (no chart library).

    The example view opens on a row click; an inline SVG shows at once, where a Plotly chart
    would first load Plotly's 4.7 MB bundle into the tab. Each epoch's marker carries a
    ``<title>`` (the browser's tooltip); text and axes use ``currentColor`` (the theme's).

    Parameters
    ----------
    trajectory : DataFrame with columns ``epoch`` and ``gold_prob`` (n_epochs rows)
    confidence : float, optional
        Draws the example's mean p(gold) as a dotted line.
    """
    traj = trajectory.sort_values(S.EPOCH)
    epochs = traj[S.EPOCH].to_numpy(dtype=np.float64)
    probs = traj[S.GOLD_PROB].to_numpy(dtype=np.float64)
    left, right, top, bottom = 44, 12, 10, 36
    pw, ph = width - left - right, height - top - bottom
    e0, e1 = (float(epochs.min()), float(epochs.max())) if epochs.size else (0.0, 1.0)
    if e1 <= e0:
        e0, e1 = e0 - 0.5, e0 + 0.5

    def sx(e: float) -> float:
        return left + (e - e0) / (e1 - e0) * pw

    def sy(p: float) -> float:
        return top + (1.02 - p) / 1.04 * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="p(gold) over epochs" '
        'style="font: 11px sans-serif; color: inherit">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="currentColor" '
        'stroke-opacity="0.35"/>',
    ]
    for p in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        y = sy(p)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="currentColor" '
                     'stroke-opacity="0.12"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="currentColor">{p:.1f}</text>')
    step = max(1, int(np.ceil((e1 - e0) / 10)))  # at most ~10 evenly spaced whole epochs
    ticks = np.arange(np.ceil(e0 / step) * step, e1 + 1e-9, step) if len(epochs) > 1 else epochs
    for e in ticks.tolist():
        parts.append(f'<text x="{sx(e):.1f}" y="{top + ph + 15}" text-anchor="middle" '
                     f'fill="currentColor">{e:g}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle" fill="currentColor">epoch</text>')
    parts.append(f'<text transform="translate(11 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" '
                 'fill="currentColor">p(gold label)</text>')
    if confidence is not None and np.isfinite(confidence):
        y = sy(float(confidence))
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#888888" '
                     'stroke-dasharray="2 3"/>')
        parts.append(f'<text x="{left + pw - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#888888">'
                     f'confidence {confidence:.2f}</text>')
    ok = np.isfinite(epochs) & np.isfinite(probs)
    pts = " ".join(f"{sx(e):.1f},{sy(p):.1f}" for e, p in zip(epochs[ok], probs[ok], strict=True))
    color = CATEGORICAL_PALETTE[0]
    if pts:
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
    for e, p in zip(epochs[ok], probs[ok], strict=True):
        parts.append(f'<circle cx="{sx(e):.1f}" cy="{sy(p):.1f}" r="3.5" fill="{color}">'
                     f"<title>epoch {e:g}: p(gold) {p:.3f}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


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
