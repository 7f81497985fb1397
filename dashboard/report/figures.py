"""The report's Plotly figures: pure builders ``*_figure(...) -> go.Figure``.

The maps draw a density image of every row, every suspect up to :data:`MAX_SUSPECT_POINTS` and a
uniform sample of :data:`MAX_SAMPLE_POINTS` other rows, so their size is bounded at any run size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis import diagnosis as DG
from analysis import ood_eval
from analysis import schema as S
from analysis.dynamics import RegionThresholds
from analysis.filters import plot_sample
from dashboard.figures import CATEGORICAL_PALETTE, split_histograms
from dashboard.report.markup import equals, escape_html, is_missing
from dashboard.scatter import density_image

MAX_SAMPLE_POINTS = 5_000
"""Rows drawn as points on each map besides the suspects (a uniform sample)."""
MAX_SUSPECT_POINTS = 20_000
"""Suspects drawn as points on each map: every one up to this many, else a uniform sample of
them. With the density image of every row this bounds the file at any run size."""
MAX_LEGEND_CATEGORIES = 10
"""A map's colour column shows this many categories; the rest are drawn as "other"."""


@dataclass
class MapPoints:
    """Rows one map draws: a uniform sample and the suspects, and where every row lies.

    Attributes
    ----------
    rows : int array (n_drawn,)
        Sorted row positions drawn as points.
    n_drawable : int
        Rows with finite coordinates (all of them are in the density image).
    n_suspects, n_suspects_drawn : int
        Suspect rows with finite coordinates, and how many of them are drawn.
    """

    rows: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    n_drawable: int
    n_suspects: int
    n_suspects_drawn: int


def suspect_mask(table: pd.DataFrame) -> np.ndarray:
    """Bool array (n_examples,): rows diagnosed ``suspect_mislabeled`` or ``suspect_ood``."""
    if S.DIAGNOSIS not in table.columns:
        return np.zeros(len(table), dtype=bool)
    diag = table[S.DIAGNOSIS]
    return equals(diag, DG.SUSPECT_MISLABELED) | equals(diag, DG.SUSPECT_OOD)


def map_points(
    table: pd.DataFrame, *, x: str, y: str, max_sample: int = MAX_SAMPLE_POINTS,
    max_suspects: int = MAX_SUSPECT_POINTS, seed: int = 0,
) -> MapPoints:
    """The rows to draw on a map of ``x`` against ``y`` (see :class:`MapPoints`)."""
    xs = table[x].to_numpy(dtype=np.float64, na_value=np.nan)
    ys = table[y].to_numpy(dtype=np.float64, na_value=np.nan)
    drawable = np.isfinite(xs) & np.isfinite(ys)
    suspects = suspect_mask(table) & drawable
    picked_suspects = plot_sample(suspects, max_points=max_suspects, seed=seed)
    picked_rest = plot_sample(drawable & ~suspects, max_points=max_sample, seed=seed)
    rows = np.sort(np.concatenate([picked_suspects, picked_rest]).astype(np.int64))
    return MapPoints(rows=rows, xs=xs[drawable], ys=ys[drawable], n_drawable=int(drawable.sum()),
                     n_suspects=int(suspects.sum()), n_suspects_drawn=int(len(picked_suspects)))


def _take(table: pd.DataFrame, column: str, rows: np.ndarray) -> list[Any]:
    """Values of one column at ``rows`` (None where the column is absent)."""
    if column not in table.columns:
        return [None] * len(rows)
    return table[column].iloc[rows].tolist()


def hover_lines(
    table: pd.DataFrame, rows: np.ndarray, *, class_names: Any = None, suggested: str | None = None,
) -> list[str]:
    """One escaped hover line per drawn row: id, split, label, suggested label and diagnosis.

    ``class_names`` maps a Series of labels to their names (default: the values as text).
    """
    def names(column: str) -> list[Any]:
        if column not in table.columns:
            return [None] * len(rows)
        values = table[column].iloc[rows]
        if class_names is not None:
            return list(class_names(values))
        return ["—" if is_missing(v) else str(v) for v in values.tolist()]

    memo: dict[Any, str] = {}

    def esc(value: Any) -> str:  # few distinct names: escape each once
        if value not in memo:
            memo[value] = escape_html(value)
        return memo[value]

    id_col = table[S.EXAMPLE_ID].iloc[rows]
    # integer ids need no escaping (and are all distinct: no memo)
    ids = (id_col.astype(str).tolist() if pd.api.types.is_integer_dtype(id_col)
           else [escape_html(v) for v in id_col.tolist()])
    labels = names(S.LABEL)
    splits = _take(table, S.SPLIT, rows)
    diags = _take(table, S.DIAGNOSIS, rows)
    sugg = names(suggested) if suggested is not None else [None] * len(rows)
    out = []
    for i, lab, sp, dg, sg in zip(ids, labels, splits, diags, sugg, strict=True):
        line = f"id {i} · {esc(sp)}<br>label {esc(lab)}"
        if sg is not None and sg != "—":
            line += f" · suggested {esc(sg)}"
        out.append(line if dg is None else f"{line}<br>{esc(dg)}")
    return out


def _category_codes(series: pd.Series, *, max_categories: int = MAX_LEGEND_CATEGORIES,
                    order: Sequence[str] = ()) -> tuple[np.ndarray, list[str]]:
    """Codes into a list of names: ``order`` first, then by frequency; the rest is ``other``."""
    values = series.astype(str).where(series.notna(), "—")
    counts = values.value_counts()
    names = [v for v in order if v in counts.index] + [v for v in counts.index if v not in order]
    if len(names) > max_categories:
        names = names[: max_categories - 1] + ["other"]
    index = {name: k for k, name in enumerate(names)}
    other = index.get("other", len(names) - 1)
    codes = np.fromiter((index.get(v, other) for v in values.tolist()), dtype=np.int64, count=len(values))
    return codes, names


def _map_figure(
    table: pd.DataFrame, points: MapPoints, *, x: str, y: str, color: str, x_title: str,
    y_title: str, x_range: tuple[float, float], y_range: tuple[float, float], hover: list[str],
    metrics: Sequence[str], order: Sequence[str] = (), title: str = "", show_ticks: bool = True,
) -> go.Figure:
    sub = table[[c for c in dict.fromkeys((x, y, color, *metrics)) if c in table.columns]]
    sub = sub.iloc[points.rows]
    fig = go.Figure()
    density = density_image(points.xs, points.ys, x_range=x_range, y_range=y_range)
    if density is not None:
        fig.add_layout_image(
            source=density["src"], xref="x", yref="y", x=density["x0"], y=density["y1"],
            sizex=density["x1"] - density["x0"], sizey=density["y1"] - density["y0"],
            sizing="stretch", layer="below", xanchor="left", yanchor="top",
        )
    present = [m for m in metrics if m in sub.columns]
    custom = np.column_stack([sub[m].to_numpy(dtype=np.float32, na_value=np.nan) for m in present]) \
        if present else None
    template = "%{text}" + "".join(
        f"<br>{escape_html(m)} %{{customdata[{k}]:.3f}}" for k, m in enumerate(present)) + "<extra></extra>"
    hover_arr = np.asarray(hover, dtype=object)
    xs = sub[x].to_numpy(dtype=np.float32, na_value=np.nan)
    ys = sub[y].to_numpy(dtype=np.float32, na_value=np.nan)
    if color in sub.columns and len(sub):
        codes, names = _category_codes(sub[color], order=order)
    else:
        codes, names = np.zeros(len(sub), dtype=np.int64), [color]
    for k, name in enumerate(names):
        pick = codes == k
        if not pick.any():
            continue
        fig.add_trace(go.Scattergl(
            x=xs[pick], y=ys[pick], mode="markers", name=f"{escape_html(name)} ({int(pick.sum()):,})",
            marker={"size": 5, "color": CATEGORICAL_PALETTE[k % len(CATEGORICAL_PALETTE)],
                    "opacity": 0.8},
            text=hover_arr[pick].tolist(), customdata=None if custom is None else custom[pick],
            hovertemplate=template,
            _validate=False,  # tens of thousands of hover lines: checking each costs seconds
        ))
    fig.update_layout(
        title={"text": title}, height=560, margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"title": {"text": escape_html(color)}, "itemsizing": "constant"},
        xaxis={"title": {"text": x_title}, "range": list(x_range), "showticklabels": show_ticks,
               "zeroline": False},
        yaxis={"title": {"text": y_title}, "range": list(y_range), "showticklabels": show_ticks,
               "zeroline": False},
        plot_bgcolor="white", hovermode="closest",
    )
    return fig


def _padded(values: np.ndarray, pad: float = 0.04) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if not v.size:
        return (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else 1.0
    return lo - pad * span, hi + pad * span


def data_map_figure(
    table: pd.DataFrame, points: MapPoints, *, thresholds: RegionThresholds | None = None,
    hover: list[str] | None = None,
) -> go.Figure:
    """The data map: variability (x) against confidence (y), coloured by diagnosis.

    Parameters
    ----------
    table : DataFrame
        Every example (``variability``, ``confidence``, optional ``diagnosis``).
    points : MapPoints
        :func:`map_points` of ``variability`` and ``confidence``.
    thresholds : RegionThresholds, optional
        Draws the region boundaries.
    hover : list of str, optional
        Escaped hover line per drawn row (:func:`hover_lines`).
    """
    finite = points.xs[np.isfinite(points.xs)]
    x_max = max(float(finite.max()) * 1.05, 0.05) if finite.size else 0.5
    if thresholds is not None:
        x_max = max(x_max, float(thresholds.variability) * 1.15)
    color = S.DIAGNOSIS if S.DIAGNOSIS in table.columns else S.REGION
    fig = _map_figure(
        table, points, x=S.VARIABILITY, y=S.CONFIDENCE, color=color, x_title="variability",
        y_title="confidence", x_range=(0.0, x_max), y_range=(-0.05, 1.05),
        hover=hover if hover is not None else hover_lines(table, points.rows),
        metrics=(S.CONFIDENCE, S.VARIABILITY, S.CORRECTNESS, S.AUM),
        order=DG.DIAGNOSES if color == S.DIAGNOSIS else S.REGIONS,
        title=f"Data map: {points.n_drawable:,} examples",
    )
    if thresholds is not None:
        v, c = float(thresholds.variability), float(thresholds.confidence)
        line = {"color": "#555", "width": 1, "dash": "dash"}
        fig.add_shape(type="line", x0=v, x1=v, y0=0, y1=1, line=line)
        fig.add_shape(type="line", x0=0, x1=v, y0=c, y1=c, line=line)
        for text, x, y in ((S.EASY, v / 2, 1.02), (S.HARD, v / 2, -0.02),
                           (S.AMBIGUOUS, (v + x_max) / 2, 1.02)):
            fig.add_annotation(text=text, x=x, y=y, showarrow=False, font={"color": "#555"})
    return fig


def embedding_figure(
    table: pd.DataFrame, points: MapPoints, *, hover: list[str] | None = None,
    score: str | None = None,
) -> go.Figure:
    """The 2-D projection of the features (``umap_x``, ``umap_y``), coloured by split; the hover
    shows the OOD ``score`` (when given) besides confidence and variability."""
    return _map_figure(
        table, points, x=S.UMAP_X, y=S.UMAP_Y, color=S.SPLIT, x_title=S.UMAP_X, y_title=S.UMAP_Y,
        x_range=_padded(points.xs), y_range=_padded(points.ys),
        hover=hover if hover is not None else hover_lines(table, points.rows),
        metrics=((score,) if score else ()) + (S.CONFIDENCE, S.VARIABILITY),
        order=(S.TRAIN_SPLIT, "test"),
        title=f"Embedding map: {points.n_drawable:,} examples", show_ticks=False,
    )


def ood_histogram_figure(table: pd.DataFrame, score: str, *, bins: int = 60) -> go.Figure:
    """Distribution of one OOD score per split (fractions of each split), bars overlaid.

    The bins are shared by every split and counted here, so the figure stays small at any size.
    """
    edges, split_counts = split_histograms(table, score, by=S.SPLIT, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    for raw_name, counts, total in split_counts:
        name = escape_html(raw_name)
        fig.add_trace(go.Bar(
            x=centers, y=counts / max(total, 1), width=float(edges[1] - edges[0]),
            name=f"{name} ({total:,})", opacity=0.6,
            marker_color=CATEGORICAL_PALETTE[len(fig.data) % len(CATEGORICAL_PALETTE)],
            customdata=counts, hovertemplate=f"{name}: %{{x:.3g}}: %{{y:.2%}} (%{{customdata:,}})"
                                             "<extra></extra>",
        ))
    fig.update_layout(
        barmode="overlay", height=380, margin={"l": 60, "r": 20, "t": 50, "b": 50},
        title={"text": f"{escape_html(score)} per split (higher = more anomalous)"},
        xaxis={"title": {"text": escape_html(score)}}, yaxis={"title": {"text": "fraction of split"},
                                                       "tickformat": ".0%"},
        plot_bgcolor="white",
    )
    return fig


def ood_curves(table: pd.DataFrame, score: str) -> dict[str, dict[str, Any]]:
    """ROC and PR curve points per OOD split (:func:`analysis.ood_eval.ood_curves`): the
    in-distribution evaluation rows against each OOD split's rows."""
    truth = ood_eval.ood_ground_truth(table)
    is_id = (truth == False).fillna(False).to_numpy(dtype=bool)  # noqa: E712 - nullable boolean
    is_ood = (truth == True).fillna(False).to_numpy(dtype=bool)  # noqa: E712
    if not is_id.any() or not is_ood.any() or score not in table.columns:
        return {}
    values = table[score].to_numpy(dtype=np.float64, na_value=np.nan)
    codes, names = pd.factorize(table[S.SPLIT], sort=True)
    out = {}
    for code in np.unique(codes[is_ood & (codes >= 0)]).tolist():
        name = str(names[code])
        pick = is_id | (is_ood & (codes == code))
        try:
            out[name] = ood_eval.ood_curves(values[pick], is_ood[pick])
        except ValueError:
            continue  # one kind of row only once non-finite scores are dropped
    return out


def ood_curves_figure(curves: Mapping[str, Mapping[str, Any]], *, score: str = "") -> go.Figure:
    """ROC (left) and precision-recall (right) curves, one line per OOD split (OOD positive)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ROC", "Precision-recall (OOD positive)"))
    for k, (name, c) in enumerate(curves.items()):
        color = CATEGORICAL_PALETTE[k % len(CATEGORICAL_PALETTE)]
        label = escape_html(name)
        fig.add_trace(go.Scatter(
            x=np.asarray(c["fpr"], dtype=np.float32), y=np.asarray(c["tpr"], dtype=np.float32),
            mode="lines", line={"color": color}, legendgroup=label,
            name=f"{label} (AUROC {float(c['auroc']):.3f})",
            hovertemplate=f"{label}: FPR %{{x:.3f}}, TPR %{{y:.3f}}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(
            x=np.asarray(c["recall"], dtype=np.float32), y=np.asarray(c["precision"], dtype=np.float32),
            mode="lines", line={"color": color, "dash": "dot"}, legendgroup=label,
            name=f"{label} (AUPR-out {float(c['aupr_out']):.3f})",
            hovertemplate=f"{label}: recall %{{x:.3f}}, precision %{{y:.3f}}<extra></extra>"),
            row=1, col=2)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line={"color": "#999", "dash": "dash", "width": 1},
                             hoverinfo="skip"), row=1, col=1)
    fig.update_xaxes(title_text="false-positive rate", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="true-positive rate", range=[0, 1.02], row=1, col=1)
    fig.update_xaxes(title_text="recall", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title_text="precision", range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=400, margin={"l": 60, "r": 20, "t": 60, "b": 50},
                      title={"text": f"Detection curves of {escape_html(score)}"}, plot_bgcolor="white")
    return fig
