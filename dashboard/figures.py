"""Pure Plotly figure builders: ``*_figure(table, ...) -> go.Figure``, no Streamlit calls.

Every scatter is ONE point trace carrying ``example_id`` in ``customdata`` (selection events
report ``point_index`` per trace, so several traces would make indices collide): ``Scattergl``
from :data:`WEBGL_MIN_POINTS` points on, SVG ``Scatter`` below. A categorical colour is mapped to
integer codes with a stepped colour scale, so it stays one trace. Flagged examples get a second,
outline-only trace drawn on top; its points carry the same ids. Behind the points, an optional
density image (:func:`density_image`) shows where every row lies, drawn or not.
"""

from __future__ import annotations

import base64
import io
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
    "density_image",
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
WEBGL_MIN_POINTS = 1_000
"""A scatter of at least this many points is drawn with WebGL (``Scattergl``), a smaller one as
SVG (``Scatter``). Measured in headless Chromium without a GPU (WebGL emulated in software): a
500-point SVG scatter appears 0.1-0.2 s sooner than a WebGL one (context creation is the cost);
at 3,000 points WebGL and SVG appear at about the same time, but SVG restyles every marker on a
filter change or a lasso (0.2-0.25 s slower per interaction at 100k rows)."""
DENSITY_BINS = (160, 100)
"""(x bins, y bins) of the density image behind a scatter."""
DENSITY_RGB = (90, 98, 112)


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
    density: dict[str, Any] | None = None,
) -> go.Figure:
    ids = table[S.EXAMPLE_ID].to_numpy()
    xs = table[x].to_numpy(dtype=np.float64, na_value=np.nan)
    ys = table[y].to_numpy(dtype=np.float64, na_value=np.nan)
    marker: dict[str, Any] = {"size": marker_size, "opacity": 0.75, "line": {"width": 0}}
    if ids.dtype.kind in "iu" and ids.size and np.iinfo(np.int32).min <= ids.min() and ids.max() <= np.iinfo(np.int32).max:
        ids = ids.astype(np.int32)  # half the bytes on the wire; the same numbers come back
    hover = f"id %{{customdata}}<br>{x_title} %{{x:.3f}}<br>{y_title} %{{y:.3f}}"
    text = None
    if hover_name is not None and hover_name in table.columns and len(table) <= 50_000:
        text = table[hover_name].astype("object").where(table[hover_name].notna(), "").astype(str).to_numpy()
        hover += "<br>%{text}"
    right = 20  # px: the right margin, widened for a colour bar
    if color is not None and color in table.columns:
        spec = color_spec(table[color])
        labels = [str(spec.colorbar.get("title", {}).get("text", "")), *(spec.categories or [])]
        right = 60 + int(6.5 * max(10, *(len(v) for v in labels)))
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
    trace_type = go.Scattergl if len(table) >= WEBGL_MIN_POINTS else go.Scatter
    fig = go.Figure()
    fig.add_trace(
        trace_type(
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
                trace_type(
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
        # fixed margins: letting the colour bar and legend push them (autoexpand) makes Plotly
        # draw every point twice; measured ~0.4 s of a 3,000-point SVG scatter without a GPU
        margin={"l": 64, "r": right, "t": 40, "b": 56, "autoexpand": False},
        xaxis_title=x_title,
        yaxis_title=y_title,
        uirevision=f"{x}|{y}",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "xanchor": "right", "x": 1},
        hovermode="closest",
    )
    if density is not None:
        fig.add_layout_image(density)
    return fig


def density_image(
    xs: np.ndarray,
    ys: np.ndarray,
    *,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    bins: tuple[int, int] = DENSITY_BINS,
) -> dict[str, Any] | None:
    """Where every point lies: a 2-D histogram as a translucent PNG layout image.

    The chart draws a sample; this image, placed below the points in data coordinates, shows the
    rest (darker = more rows, on a log scale). Empty bins are transparent.

    Parameters
    ----------
    xs, ys : arrays (n,)
        Every row's coordinates (non-finite values and values outside the ranges are ignored).
    x_range, y_range : (lo, hi)
        The area the image covers, in data units.

    Returns
    -------
    dict or None
        ``layout.images`` entry (``source`` is a ``data:image/png;base64`` URL); None when no
        point falls in the ranges.
    """
    from PIL import Image

    (x0, x1), (y0, y1) = (float(v) for v in x_range), (float(v) for v in y_range)
    nx, ny = int(bins[0]), int(bins[1])
    if not (x1 > x0 and y1 > y0):
        return None
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    # bin indices by arithmetic + bincount (np.histogram2d sorts; this is ~10x faster at 1M rows)
    ix = np.floor((xs - x0) * (nx / (x1 - x0)))
    iy = np.floor((ys - y0) * (ny / (y1 - y0)))
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)  # False for NaN
    if not ok.any():
        return None
    flat = iy[ok].astype(np.int64) * nx + ix[ok].astype(np.int64)
    counts = np.bincount(flat, minlength=nx * ny).reshape(ny, nx)[::-1]  # row 0 = top
    level = np.log1p(counts) / np.log1p(counts.max())
    alpha = np.where(counts > 0, 40 + 150 * level, 0).astype(np.uint8)
    rgba = np.empty((ny, nx, 4), dtype=np.uint8)
    rgba[..., :3] = DENSITY_RGB
    rgba[..., 3] = alpha
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG", optimize=False, compress_level=6)
    return {
        "source": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
        "xref": "x", "yref": "y", "x": x0, "y": y1, "sizex": x1 - x0, "sizey": y1 - y0,
        "xanchor": "left", "yanchor": "top", "sizing": "stretch", "layer": "below",
        "name": "density",
    }


def data_map_figure(
    table: pd.DataFrame,
    *,
    color: str | None = S.CORRECTNESS,
    thresholds: Any | None = None,
    highlight: np.ndarray | None = None,
    height: int = 560,
    marker_size: float = 5,
    hover_name: str | None = S.LABEL_NAME,
    every: tuple[np.ndarray, np.ndarray] | None = None,
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
    every : (variability, confidence) arrays or None
        Every row the sample was drawn from: sets the axis range and is drawn as a density image
        behind the points (:func:`density_image`).
    """
    x_max = 0.5
    observed = (
        every[0] if every is not None else table[S.VARIABILITY].to_numpy(dtype=np.float64, na_value=np.nan)
    )
    observed = np.asarray(observed, dtype=np.float64)
    finite = observed[np.isfinite(observed)]
    if finite.size:
        x_max = max(float(finite.max()) * 1.05, 0.05)
    if thresholds is not None:
        x_max = max(x_max, thresholds.variability * 1.15)
    y_range = (-0.05, 1.05)
    density = None
    if every is not None:
        density = density_image(every[0], every[1], x_range=(0.0, x_max), y_range=y_range)
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
        density=density,
    )
    if thresholds is not None:
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
    fig.update_yaxes(range=list(y_range))
    return fig


def _padded_range(values: np.ndarray, pad: float = 0.04) -> tuple[float, float] | None:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return None
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else 1.0
    return lo - pad * span, hi + pad * span


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
    every: tuple[np.ndarray, np.ndarray] | None = None,
) -> go.Figure:
    """The 2-D projection of the features (UMAP), every split in one space, one trace.

    ``every`` (x, y arrays of every row the sample was drawn from) sets the axis ranges and is
    drawn as a density image behind the points (:func:`density_image`).
    """
    density = None
    ranges = None
    if every is not None:
        xr, yr = _padded_range(every[0]), _padded_range(every[1])
        if xr is not None and yr is not None:
            ranges = (xr, yr)
            density = density_image(every[0], every[1], x_range=xr, y_range=yr)
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
        density=density,
    )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, scaleanchor=None)
    if ranges is not None:
        fig.update_xaxes(range=list(ranges[0]))
        fig.update_yaxes(range=list(ranges[1]))
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
