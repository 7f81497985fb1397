"""Specs for the dashboard's scatter chart (``scatter.js``): pure functions, no Streamlit calls.

The data map and the embedding map are drawn by a small canvas component of our own rather than
Plotly: the browser then loads a few kilobytes of script instead of Plotly's 4.7 MB bundle, which
was most of the time to a shown map (docs/dashboard.md, "Speed"). A spec is a JSON-ready dict:

* ``x``, ``y``, ``ids``: one entry per drawn point; ``ids`` come back in click selections;
* ``c``: a palette index per point (-1: missing value, drawn in ``missing_color``); ``palette``;
* ``v``: the colour column's numbers (hover text) when it is numeric; ``text``: a hover line per
  point, shown after ``text_title``;
* ``legend``: ``{"kind": "numeric", "title", "min", "max", "stops"}`` or
  ``{"kind": "categorical", "title", "items": [{"name", "color"}], "max_items"}`` (the chart
  lists at most ``max_items`` names);
* ``flag``: indices of the points to ring (flagged examples);
* ``x_range``, ``y_range``, ``x_title``, ``y_title``, ``show_ticks``, ``height``, ``marker_size``;
* ``density``: ``{"src": PNG data URL, "x0", "x1", "y0", "y1"}`` or None (:func:`density_image`);
* ``lines`` (``x0, y0, x1, y1``) and ``labels`` (``x, y, text, anchor``) in data coordinates;
* ``name``: the file name of the chart's PNG download;
* ``shape``: the selection a new chart shows, or ``"keep"`` (set by the caller; see
  ``scatter.js``);
* ``marked``: the open example, ``{"id", "x", "y"}`` in data coordinates, drawn with a ring and
  cross hairs (set by the caller with :func:`marked_point`; it need not be among the drawn
  points), or None.

Every number is finite or ``None``: JSON has no NaN.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from analysis import schema as S
from dashboard.figures import CATEGORICAL_PALETTE, _is_numeric

__all__ = [
    "DENSITY_BINS",
    "data_map_spec",
    "density_image",
    "embedding_spec",
    "marked_point",
    "shape_digest",
    "point_colors",
    "scatter_spec",
]

DENSITY_BINS = (160, 100)
"""(x bins, y bins) of the density image behind a scatter."""
DENSITY_RGB = (90, 98, 112)
MISSING_COLOR = "#BBBBBB"
FLAG_COLOR = "#D62728"
MARKED_COLOR = "#FF7F0E"
"""The ring and cross hairs of the open example."""
MAX_CATEGORIES = 30
"""A categorical colour lists at most this many names in its legend."""
VIRIDIS = (
    "#440154", "#482878", "#3E4989", "#31688E", "#26828E",
    "#1F9E89", "#35B779", "#6ECE58", "#B5DE2B", "#FDE725",
)
"""Viridis at ten evenly spaced stops (matplotlib's values), low to high."""
NUMERIC_STEPS = 64
"""A numeric colour column is drawn in this many shades of :data:`VIRIDIS`."""
MAX_TEXT_POINTS = 50_000
"""Above this many drawn points the hover line (``text``) is left out to keep the payload small."""


def _hex(rgb: np.ndarray) -> str:
    r, g, b = (int(round(float(v))) for v in rgb)
    return f"#{r:02X}{g:02X}{b:02X}"


def _viridis(n: int) -> list[str]:
    """``n`` colours evenly spaced along :data:`VIRIDIS`, linearly interpolated in RGB."""
    stops = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in VIRIDIS], dtype=np.float64)
    pos = np.linspace(0.0, len(VIRIDIS) - 1.0, n)
    lo = np.minimum(np.floor(pos).astype(int), len(VIRIDIS) - 2)
    frac = (pos - lo)[:, None]
    return [_hex(v) for v in stops[lo] * (1 - frac) + stops[lo + 1] * frac]


def _finite_list(values: np.ndarray, decimals: int) -> list[float | None]:
    """Rounded numbers, ``None`` where not finite (JSON has no NaN)."""
    v = np.round(np.asarray(values, dtype=np.float64), decimals)
    out: list[float | None] = v.tolist()
    bad = np.flatnonzero(~np.isfinite(v))
    for i in bad.tolist():
        out[i] = None
    return out


def point_colors(
    series: pd.Series, *, title: str | None = None, scale: Literal["auto", "linear", "rank"] = "auto",
) -> dict[str, Any]:
    """Map a column to a palette index per point, with its palette and legend.

    Numbers (not booleans) are spread over :data:`NUMERIC_STEPS` shades of Viridis: linearly
    between the column's finite minimum and maximum, or by rank (each point's percentile among
    the finite values) for heavy-tailed columns — ``scale="auto"`` picks the rank scale for OOD
    scores (``ood_*``), where a few far points would otherwise leave every other point one colour.
    Anything else becomes categories sorted by name (missing values are the category
    ``"(missing)"``), coloured by :data:`CATEGORICAL_PALETTE` in turn.

    Returns
    -------
    dict with ``c`` (int array, -1 for a missing number), ``palette``, ``legend`` and ``v`` (the
    numbers, for hover text; None for categories). A rank legend also gives the median (``mid``).
    """
    if scale not in ("auto", "linear", "rank"):
        raise ValueError(f"Expected `scale` in ('auto', 'linear', 'rank'), got {scale!r}.")
    name = title if title is not None else str(series.name)
    if _is_numeric(series):
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(values)
        lo = float(values[finite].min()) if finite.any() else 0.0
        hi = float(values[finite].max()) if finite.any() else 1.0
        codes = np.full(len(values), -1, dtype=np.int64)
        if scale == "auto":
            scale = "rank" if str(series.name).startswith(S.OOD_PREFIX) else "linear"
        legend: dict[str, Any] = {"kind": "numeric", "title": name, "min": lo, "max": hi,
                                  "stops": list(VIRIDIS)}
        if scale == "rank" and finite.sum() > 1:
            fin = values[finite]
            order = np.argsort(fin, kind="stable")
            ranks = np.empty(len(fin), dtype=np.float64)
            ranks[order] = np.arange(len(fin))
            # ties share their mean rank, so equal values get one colour
            uniq, inverse = np.unique(fin, return_inverse=True)
            mean_rank = np.bincount(inverse, weights=ranks) / np.bincount(inverse)
            pct = mean_rank[inverse] / (len(fin) - 1)
            codes[finite] = np.clip((pct * NUMERIC_STEPS).astype(np.int64), 0, NUMERIC_STEPS - 1)
            legend.update(title=f"{name} (rank)", mid=float(np.median(fin)), scale="rank")
        else:
            span = hi - lo if hi > lo else 1.0
            codes[finite] = np.clip(((values[finite] - lo) / span * NUMERIC_STEPS).astype(np.int64), 0, NUMERIC_STEPS - 1)
        return {"c": codes, "palette": _viridis(NUMERIC_STEPS), "legend": legend, "v": values}
    as_str = series.astype("object").where(series.notna(), "(missing)").astype(str)
    cats = sorted(pd.unique(as_str.to_numpy()).tolist())
    codes = pd.Categorical(as_str, categories=cats).codes.astype(np.int64)
    palette = [CATEGORICAL_PALETTE[k % len(CATEGORICAL_PALETTE)] for k in range(len(cats))]
    return {
        "c": codes,
        "palette": palette,
        # every category (hover names each point); the chart lists at most MAX_CATEGORIES
        "legend": {"kind": "categorical", "title": name, "max_items": MAX_CATEGORIES,
                   "items": [{"name": c, "color": palette[k]} for k, c in enumerate(cats)]},
        "v": None,
    }


def density_image(
    xs: np.ndarray,
    ys: np.ndarray,
    *,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    bins: tuple[int, int] = DENSITY_BINS,
) -> dict[str, Any] | None:
    """Where every point lies: a 2-D histogram as a translucent PNG placed in data coordinates.

    The chart draws a sample; this image, drawn below the points, shows the rest (darker = more
    rows, on a log scale). Empty bins are transparent.

    Parameters
    ----------
    xs, ys : arrays (n,)
        Every row's coordinates (non-finite values and values outside the ranges are ignored).
    x_range, y_range : (lo, hi)
        The area the image covers, in data units.

    Returns
    -------
    dict or None
        ``{"src": "data:image/png;base64,...", "x0", "x1", "y0", "y1"}``: the PNG's first row is
        the top (``y1``) of the area. None when no point falls in the ranges.
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
        "src": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
        "x0": x0, "x1": x1, "y0": y0, "y1": y1,
    }


def scatter_spec(
    table: pd.DataFrame,
    *,
    x: str,
    y: str,
    color: str | None,
    highlight: np.ndarray | None,
    x_title: str,
    y_title: str,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    height: int,
    marker_size: float,
    hover_name: str | None,
    density: dict[str, Any] | None = None,
    show_ticks: bool = True,
    lines: Sequence[dict[str, float]] = (),
    labels: Sequence[dict[str, Any]] = (),
    name: str = "datamap-chart",
) -> dict[str, Any]:
    """The spec of one scatter: one point per row of ``table`` (the rows to draw); ``name`` is
    the file name of its PNG download."""
    n = len(table)
    ids = table[S.EXAMPLE_ID].to_numpy()
    # JSON numbers are doubles in the browser: integers beyond 2**53 travel as strings (the
    # server casts a clicked id back to the column's type)
    exact = ids.dtype.kind in "iu" and (not n or (np.abs(ids.astype(np.float64)).max() < 2.0**53))
    id_list = ids.tolist() if exact else [str(v) for v in ids]
    xs = table[x].to_numpy(dtype=np.float64, na_value=np.nan)
    ys = table[y].to_numpy(dtype=np.float64, na_value=np.nan)
    if color is not None and color in table.columns:
        colors = point_colors(table[color])
    else:
        colors = {"c": np.zeros(n, dtype=np.int64), "palette": [CATEGORICAL_PALETTE[0]], "legend": None, "v": None}
    text = None
    if hover_name is not None and hover_name in table.columns and n <= MAX_TEXT_POINTS:
        col = table[hover_name]
        text = col.astype("object").where(col.notna(), "").astype(str).tolist()
    flag: list[int] = []
    if highlight is not None:
        hl = np.asarray(highlight, dtype=bool)
        if hl.shape != (n,):
            raise ValueError(f"Expected `highlight` to have shape {(n,)} (one entry per row), got {hl.shape}.")
        flag = np.flatnonzero(hl).tolist()
    return {
        "x": _finite_list(xs, 5),
        "y": _finite_list(ys, 5),
        "ids": id_list,
        "c": np.asarray(colors["c"], dtype=np.int64).tolist(),
        "palette": colors["palette"],
        "missing_color": MISSING_COLOR,
        "v": _finite_list(colors["v"], 4) if colors["v"] is not None else None,
        "text": text,
        "text_title": hover_name if text is not None else None,
        "legend": colors["legend"],
        "flag": flag,
        "flag_color": FLAG_COLOR,
        "x_title": x_title,
        "y_title": y_title,
        "x_range": [float(x_range[0]), float(x_range[1])],
        "y_range": [float(y_range[0]), float(y_range[1])],
        "show_ticks": show_ticks,
        "height": int(height),
        "marker_size": float(marker_size),
        "density": density,
        "lines": [{k: float(v) for k, v in ln.items()} for ln in lines],
        "labels": list(labels),
        "name": name,
        "shape": None,
        "marked": None,
        "marked_color": MARKED_COLOR,
    }


def marked_point(example_id: Any, x: Any, y: Any) -> dict[str, Any] | None:
    """The ``marked`` entry of a spec: the open example at (x, y); None without finite coordinates.

    Examples
    --------
    >>> marked_point(7, 0.25, 0.5)
    {'id': 7, 'x': 0.25, 'y': 0.5}
    >>> marked_point(7, float("nan"), 0.5) is None
    True
    """
    try:
        fx, fy = float(x), float(y)
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(fx) and np.isfinite(fy)):
        return None
    plain = example_id.item() if isinstance(example_id, np.generic) else example_id
    if isinstance(plain, int) and abs(plain) >= 2**53:  # as the chart's ids (JSON doubles)
        plain = str(plain)
    return {"id": plain, "x": fx, "y": fy}


def shape_digest(shape: Any) -> str:
    """A short stable digest of a chart selection (``{}``/None: ``"none"``), for widget keys.

    Examples
    --------
    >>> shape_digest(None), shape_digest({})
    ('none', 'none')
    >>> shape_digest({"box": [{"x": [0, 1], "y": [0, 1]}]}) == shape_digest({"box": [{"y": [0, 1], "x": [0, 1]}]})
    True
    """
    if not shape:
        return "none"
    import hashlib
    import json

    text = json.dumps(shape, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _padded_range(values: np.ndarray, pad: float = 0.04) -> tuple[float, float] | None:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return None
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else 1.0
    return lo - pad * span, hi + pad * span


def data_map_spec(
    table: pd.DataFrame,
    *,
    color: str | None = S.CORRECTNESS,
    thresholds: Any | None = None,
    highlight: np.ndarray | None = None,
    height: int = 560,
    marker_size: float = 5,
    hover_name: str | None = S.LABEL_NAME,
    every: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The data map: variability (x) against confidence (y), one point per row of ``table``.

    Parameters
    ----------
    table : DataFrame (n_points, ...)
        The rows to draw (already sampled), with ``example_id``, ``variability``, ``confidence``.
    color : str or None
        Column to colour by (numeric: Viridis; otherwise: categories).
    thresholds : RegionThresholds or None
        Draws the region boundaries: a vertical line at ``variability`` (ambiguous to its right)
        and, left of it, a horizontal line at ``confidence`` (easy above, hard below), with the
        regions' names.
    highlight : bool array (n_points,) or None
        Rows to ring in red (flagged examples).
    every : (variability, confidence) arrays or None
        Every row the sample was drawn from: sets the x range and is drawn as a density image
        behind the points (:func:`density_image`).
    """
    observed = every[0] if every is not None else table[S.VARIABILITY].to_numpy(dtype=np.float64, na_value=np.nan)
    observed = np.asarray(observed, dtype=np.float64)
    finite = observed[np.isfinite(observed)]
    x_max = max(float(finite.max()) * 1.05, 0.05) if finite.size else 0.5
    if thresholds is not None:
        x_max = max(x_max, float(thresholds.variability) * 1.15)
    y_range = (-0.05, 1.05)
    density = density_image(every[0], every[1], x_range=(0.0, x_max), y_range=y_range) if every is not None else None
    lines: list[dict[str, float]] = []
    labels: list[dict[str, Any]] = []
    if thresholds is not None:
        v, c = float(thresholds.variability), float(thresholds.confidence)
        lines = [{"x0": v, "y0": 0.0, "x1": v, "y1": 1.0}, {"x0": 0.0, "y0": c, "x1": v, "y1": c}]
        labels = [
            {"x": v / 2, "y": 1.0, "text": S.EASY, "anchor": "bottom"},
            {"x": v / 2, "y": 0.0, "text": S.HARD, "anchor": "top"},
            {"x": (v + x_max) / 2, "y": 1.0, "text": S.AMBIGUOUS, "anchor": "bottom"},
        ]
    return scatter_spec(
        table, x=S.VARIABILITY, y=S.CONFIDENCE, color=color, highlight=highlight,
        x_title="variability", y_title="confidence", x_range=(0.0, x_max), y_range=y_range,
        height=height, marker_size=marker_size, hover_name=hover_name, density=density,
        lines=lines, labels=labels, name="datamap-data-map",
    )


def embedding_spec(
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
) -> dict[str, Any]:
    """The 2-D projection of the features (UMAP), every split in one space.

    ``every`` (x, y arrays of every row the sample was drawn from) sets the ranges and is drawn
    as a density image behind the points. The axes have no tick labels: UMAP units mean nothing.
    """
    xs, ys = every if every is not None else (
        table[x].to_numpy(dtype=np.float64, na_value=np.nan), table[y].to_numpy(dtype=np.float64, na_value=np.nan))
    xr, yr = _padded_range(xs), _padded_range(ys)
    density = None
    if xr is not None and yr is not None and every is not None:
        density = density_image(every[0], every[1], x_range=xr, y_range=yr)
    return scatter_spec(
        table, x=x, y=y, color=color, highlight=highlight, x_title=x, y_title=y,
        x_range=xr or (0.0, 1.0), y_range=yr or (0.0, 1.0), height=height, marker_size=marker_size,
        hover_name=hover_name, density=density, show_ticks=False, name="datamap-embeddings",
    )
