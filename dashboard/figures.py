"""Pure Plotly figure builders: ``*_figure(table, ...) -> go.Figure``, no Streamlit calls.

Every scatter is ONE ``Scattergl`` trace carrying ``example_id`` in ``customdata`` (selection
events report ``point_index`` per trace, so several traces would make indices collide). A
categorical colour is mapped to integer codes with a stepped colour scale, so it stays one trace.
Flagged examples get a second, outline-only trace drawn on top; its points carry the same ids.
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
    "ColorSpec",
    "color_spec",
    "data_map_figure",
    "embedding_figure",
    "ood_histogram_figure",
    "pr_figure",
    "roc_figure",
    "trajectory_figure",
]

CATEGORICAL_PALETTE = (
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2",
    "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC",
)
"""Tableau-like qualitative palette; categories beyond it cycle."""
FLAG_COLOR = "#D62728"
REGION_LINE_COLOR = "#444444"
MAX_CATEGORIES = 30
"""A column with more distinct values than this is coloured by code without a legend of names."""
NUMERIC_SCALE = "Viridis"


# ---- colour ------------------------------------------------------------------------------------


class ColorSpec:
    """How one column maps to a marker colour.

    Attributes
    ----------
    values : ndarray (n_points,)
        Numbers for ``marker.color`` (category codes for a categorical column; NaN for missing).
    colorscale : str or list
        A continuous scale name, or a stepped scale for categories.
    colorbar : dict
        ``marker.colorbar`` settings (category names as tick labels).
    categories : list of str or None
        Category names in code order, or None for a numeric column.
    """

    def __init__(
        self,
        values: np.ndarray,
        colorscale: Any,
        colorbar: dict[str, Any],
        categories: list[str] | None,
        cmin: float | None = None,
        cmax: float | None = None,
    ) -> None:
        self.values = values
        self.colorscale = colorscale
        self.colorbar = colorbar
        self.categories = categories
        self.cmin = cmin
        self.cmax = cmax


def _is_numeric(series: pd.Series) -> bool:
    return (
        pd.api.types.is_numeric_dtype(series)
        and not pd.api.types.is_bool_dtype(series)
    )


def _stepped_scale(n: int) -> list[list[Any]]:
    """A colour scale with ``n`` flat steps, one per integer code in ``[0, n-1]``."""
    if n <= 1:
        return [[0.0, CATEGORICAL_PALETTE[0]], [1.0, CATEGORICAL_PALETTE[0]]]
    scale: list[list[Any]] = []
    for k in range(n):
        color = CATEGORICAL_PALETTE[k % len(CATEGORICAL_PALETTE)]
        scale.append([k / n, color])
        scale.append([(k + 1) / n, color])
    return scale


def color_spec(series: pd.Series, *, title: str | None = None) -> ColorSpec:
    """Map a column to marker colours: a continuous scale or category codes.

    Parameters
    ----------
    series : Series (n_points,)
        The column to colour by. Numbers (not booleans) get the continuous scale; anything else
        becomes categories sorted by name, missing values shown as ``"(missing)"``.
    """
    name = title if title is not None else str(series.name)
    if _is_numeric(series):
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        finite = values[np.isfinite(values)]
        cmin = float(finite.min()) if finite.size else 0.0
        cmax = float(finite.max()) if finite.size else 1.0
        return ColorSpec(values, NUMERIC_SCALE, {"title": {"text": name}}, None, cmin, cmax)
    as_str = series.astype("object").where(series.notna(), "(missing)").astype(str)
    cats = sorted(pd.unique(as_str.to_numpy()).tolist())
    codes = pd.Categorical(as_str, categories=cats).codes.astype(np.float64)
    n = len(cats)
    colorbar: dict[str, Any] = {"title": {"text": name}}
    if n <= MAX_CATEGORIES:
        colorbar.update(tickvals=[k + 0.5 if n > 1 else 0 for k in range(n)], ticktext=cats)
        # codes sit at k; shift them to the middle of their colour step
        codes = codes + (0.5 if n > 1 else 0.0)
    return ColorSpec(codes, _stepped_scale(n), colorbar, cats, 0.0, float(max(n, 1)))


# ---- scatter -----------------------------------------------------------------------------------


def _scatter_figure(
    table: pd.DataFrame,
    *,
    x: str,
    y: str,
    color: str | None,
    highlight: np.ndarray | None,
    x_title: str,
    y_title: str,
    height: int,
    marker_size: float,
    hover_name: str | None,
) -> go.Figure:
    ids = table[S.EXAMPLE_ID].to_numpy()
    xs = table[x].to_numpy(dtype=np.float64, na_value=np.nan)
    ys = table[y].to_numpy(dtype=np.float64, na_value=np.nan)
    marker: dict[str, Any] = {"size": marker_size, "opacity": 0.75, "line": {"width": 0}}
    hover = f"id %{{customdata}}<br>{x_title} %{{x:.3f}}<br>{y_title} %{{y:.3f}}"
    text = None
    if hover_name is not None and hover_name in table.columns and len(table) <= 50_000:
        text = table[hover_name].astype("object").where(table[hover_name].notna(), "").astype(str).to_numpy()
        hover += "<br>%{text}"
    if color is not None and color in table.columns:
        spec = color_spec(table[color])
        marker.update(
            color=spec.values.astype(np.float32),
            colorscale=spec.colorscale,
            cmin=spec.cmin,
            cmax=spec.cmax,
            colorbar=spec.colorbar,
            showscale=True,
        )
        if spec.categories is None:
            hover += f"<br>{color} %{{marker.color:.3f}}"
    else:
        marker.update(color=CATEGORICAL_PALETTE[0])
    fig = go.Figure()
    fig.add_trace(
        go.Scattergl(
            x=xs.astype(np.float32),
            y=ys.astype(np.float32),
            mode="markers",
            customdata=ids,
            text=text,
            marker=marker,
            name="examples",
            hovertemplate=hover + "<extra></extra>",
            showlegend=False,
        )
    )
    if highlight is not None:
        hl = np.asarray(highlight, dtype=bool)
        if hl.shape != ids.shape:
            raise ValueError(
                f"Expected `highlight` to have shape {ids.shape} (one entry per row), got {hl.shape}."
            )
        if hl.any():
            fig.add_trace(
                go.Scattergl(
                    x=xs[hl].astype(np.float32),
                    y=ys[hl].astype(np.float32),
                    mode="markers",
                    customdata=ids[hl],
                    marker={
                        "symbol": "circle-open",
                        "size": marker_size + 6,
                        "color": FLAG_COLOR,
                        "line": {"width": 2, "color": FLAG_COLOR},
                    },
                    name="flagged",
                    hovertemplate="flagged id %{customdata}<extra></extra>",
                    showlegend=True,
                )
            )
    fig.update_layout(
        height=height,
        dragmode="lasso",
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title=x_title,
        yaxis_title=y_title,
        uirevision=f"{x}|{y}",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "xanchor": "right", "x": 1},
        hovermode="closest",
    )
    return fig


def data_map_figure(
    table: pd.DataFrame,
    *,
    color: str | None = S.CORRECTNESS,
    thresholds: Any | None = None,
    highlight: np.ndarray | None = None,
    height: int = 560,
    marker_size: float = 5,
    hover_name: str | None = S.LABEL_NAME,
) -> go.Figure:
    """The data map: variability (x) against confidence (y), one point per example.

    Parameters
    ----------
    table : DataFrame (n_points, ...)
        The rows to draw (already sampled), with ``example_id``, ``variability``, ``confidence``.
    color : str or None
        Column to colour by (numeric: continuous scale; otherwise: categories).
    thresholds : RegionThresholds or None
        Draws the region boundaries: a vertical line at ``variability`` (ambiguous to its right)
        and, left of it, a horizontal line at ``confidence`` (easy above, hard below).
    highlight : bool array (n_points,) or None
        Rows to ring in red (flagged examples).
    """
    fig = _scatter_figure(
        table,
        x=S.VARIABILITY,
        y=S.CONFIDENCE,
        color=color,
        highlight=highlight,
        x_title="variability",
        y_title="confidence",
        height=height,
        marker_size=marker_size,
        hover_name=hover_name,
    )
    x_max = 0.5
    if len(table):
        observed = table[S.VARIABILITY].to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isfinite(observed).any():
            x_max = max(float(np.nanmax(observed)) * 1.05, 0.05)
    if thresholds is not None:
        x_max = max(x_max, thresholds.variability * 1.15)
        v, c = float(thresholds.variability), float(thresholds.confidence)
        line = {"color": REGION_LINE_COLOR, "width": 1.5, "dash": "dash"}
        fig.add_shape(type="line", x0=v, x1=v, y0=0, y1=1, line=line, name="variability threshold")
        fig.add_shape(type="line", x0=0, x1=v, y0=c, y1=c, line=line, name="confidence threshold")
        font = {"size": 12, "color": REGION_LINE_COLOR}
        fig.add_annotation(x=v / 2, y=1.0, text=S.EASY, showarrow=False, yanchor="bottom", font=font)
        fig.add_annotation(x=v / 2, y=0.0, text=S.HARD, showarrow=False, yanchor="top", font=font)
        fig.add_annotation(
            x=(v + x_max) / 2, y=1.0, text=S.AMBIGUOUS, showarrow=False, yanchor="bottom", font=font
        )
    fig.update_xaxes(range=[0, x_max])
    fig.update_yaxes(range=[-0.05, 1.05])
    return fig


def embedding_figure(
    table: pd.DataFrame,
    *,
    x: str = S.UMAP_X,
    y: str = S.UMAP_Y,
    color: str | None = S.SPLIT,
    highlight: np.ndarray | None = None,
    height: int = 560,
    marker_size: float = 4,
    hover_name: str | None = S.LABEL_NAME,
) -> go.Figure:
    """The 2-D projection of the features (UMAP), every split in one space, one trace."""
    fig = _scatter_figure(
        table,
        x=x,
        y=y,
        color=color,
        highlight=highlight,
        x_title=x,
        y_title=y,
        height=height,
        marker_size=marker_size,
        hover_name=hover_name,
    )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, scaleanchor=None)
    return fig


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


def trajectory_figure(
    trajectory: pd.DataFrame,
    *,
    confidence: float | None = None,
    title: str | None = None,
    height: int = 260,
) -> go.Figure:
    """p(gold) over epochs for one example.

    Parameters
    ----------
    trajectory : DataFrame with columns ``epoch`` and ``gold_prob`` (n_epochs rows)
    confidence : float, optional
        Draws the example's mean p(gold) as a dotted line.
    """
    traj = trajectory.sort_values(S.EPOCH)
    fig = go.Figure(
        go.Scatter(
            x=traj[S.EPOCH].to_numpy(),
            y=traj[S.GOLD_PROB].to_numpy(dtype=np.float64),
            mode="lines+markers",
            name="p(gold)",
            line={"color": CATEGORICAL_PALETTE[0]},
            hovertemplate="epoch %{x}<br>p(gold) %{y:.3f}<extra></extra>",
        )
    )
    if confidence is not None and np.isfinite(confidence):
        fig.add_hline(y=float(confidence), line={"color": "#888888", "dash": "dot", "width": 1},
                      annotation_text=f"confidence {confidence:.2f}", annotation_position="bottom right")
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30 if title else 10, "b": 10},
        title=title,
        xaxis_title="epoch",
        yaxis_title="p(gold label)",
        showlegend=False,
    )
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_xaxes(dtick=1 if len(traj) <= 12 else None)
    return fig


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
