"""The shareable report of a run: one self-contained, offline HTML file (Plotly).

``datamap report RUN_DIR`` and the dashboard's "Download report" button both call
:func:`build_report`. The file embeds Plotly's JavaScript (no CDN, no font, no MathJax: it makes
no outside request of any kind) and holds:

* the run: splits and counts, classes, epochs, how the dynamics were recorded, when;
* the findings: region and diagnosis counts, the label-noise estimate (when
  ``analysis.noise`` is installed), OOD metrics per split;
* the data map and the embedding map: a density image of every row, a bounded uniform sample and
  the suspects (every one up to :data:`MAX_SUSPECT_POINTS`), hover showing id, label, suggested
  label and metrics;
* the OOD score histogram per split and ROC/PR curves per OOD split;
* the top suspects (mislabeled and OOD) with thumbnails or text snippets;
* the flags and relabels so far (counts and a table);
* the settings used and the command that reproduces the analysis.

Every number comes from ``analysis`` (the same functions the dashboard uses); this module only
arranges them. Every string from the run (ids, class and split names, texts, column names,
notes) is escaped. Figures are pure builders (``*_figure(...) -> go.Figure``); sections are pure
functions returning HTML text.
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib
import json
import math
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from analysis import diagnosis as DG
from analysis import flags as FL
from analysis import ood_eval, runstore
from analysis import schema as S
from analysis.dynamics import RegionThresholds, assign_regions
from analysis.filters import plot_sample
from dashboard.figures import CATEGORICAL_PALETTE
from dashboard.scatter import density_image

__all__ = [
    "MAX_SAMPLE_POINTS",
    "MAX_SUSPECT_POINTS",
    "ReportInputs",
    "build_report",
    "data_map_figure",
    "embedding_figure",
    "label_noise_section",
    "load_inputs",
    "ood_curves_figure",
    "ood_histogram_figure",
    "write_report",
]

MAX_SAMPLE_POINTS = 5_000
"""Rows drawn as points on each map besides the suspects (a uniform sample)."""
MAX_SUSPECT_POINTS = 20_000
"""Suspects drawn as points on each map: every one up to this many, else a uniform sample of
them. With the density image of every row this bounds the file at any run size."""
TOP_SUSPECTS = 25
"""Rows of each top-suspects table."""
MAX_FLAG_ROWS = 200
"""Rows of the flags table (the most recent edits)."""
SNIPPET_CHARS = 160
"""Characters of a text shown in a table."""
MAX_LEGEND_CATEGORIES = 10
"""A map's colour column shows this many categories; the rest are drawn as "other"."""
OOD_RANKING = (S.OOD_RMD, S.OOD_MAHALANOBIS, S.OOD_ENERGY, S.OOD_KNN, S.OOD_MAXLOGIT, S.OOD_MSP)
"""Score that ranks the OOD suspects: the first present (the Review page's order)."""
NOISE_MODULE = "analysis.noise"
SOURCE_TEXT = {
    S.SOURCE_FORWARD_PASS: "logits of each training step's forward pass (as the original "
                           "cartography code)",
    S.SOURCE_EVAL_PASS: "an evaluation pass over the training set at the end of each epoch",
    S.SOURCE_CARTOGRAPHY: "imported from cartography dynamics_epoch_N.jsonl logs",
    S.SOURCE_SYNTHETIC: "synthetic (generated for tests and benchmarks)",
}
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "typesetMath": False,
                  "showLink": False, "showSendToCloud": False, "showEditInChartStudio": False}


def _esc(value: Any) -> str:
    """Text of ``value`` escaped for HTML (element content and quoted attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(isinstance(value, float | np.floating) and np.isnan(value))
    except TypeError:
        return False


def _is(series: pd.Series, value: str) -> np.ndarray:
    """Bool array: ``series == value`` (vectorised for categorical and Arrow string columns)."""
    return (series == value).to_numpy(dtype=bool, na_value=False)


def _fmt(value: Any, digits: int = 3) -> str:
    """A number as shown in the report (integers with thousands separators)."""
    if _missing(value):
        return "—"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}f}" if math.isfinite(value) else str(float(value))
    return _esc(value)


# ---- inputs -------------------------------------------------------------------------------------


@dataclass
class ReportInputs:
    """Everything a report shows, gathered once (see :func:`load_inputs`).

    Attributes
    ----------
    table : DataFrame
        Every example with ``region``/``diagnosis`` as reported.
    latest_flags : DataFrame
        :meth:`analysis.flags.FlagJournal.latest`: the current flag of every edited example.
    evaluation : dict or None
        :func:`analysis.ood_eval.evaluate_ood` output (``ood_eval.json`` when the run has it).
    settings : dict
        The ``diagnosis`` section of ``ood_eval.json`` (empty when absent).
    region_thresholds : RegionThresholds or None
        The thresholds the ``region`` column was assigned with, when known.
    noise : object or None
        ``analysis.noise.estimate_label_noise(table)`` when that module exists.
    """

    run_dir: Path
    meta: runstore.RunMeta | None
    table: pd.DataFrame
    latest_flags: pd.DataFrame
    journal_edits: int = 0
    evaluation: dict[str, Any] | None = None
    evaluation_source: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    region_thresholds: RegionThresholds | None = None
    region_note: str = ""
    ood_quantile: float | None = None
    """The OOD quantile the dashboard diagnosed with when it differs from the analysis' own."""
    noise: Any = None
    generated_at: str = ""

    def class_names_of(self, values: pd.Series) -> list[str]:
        """:meth:`class_name` of every value (vectorised for integer labels)."""
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            lab = values.to_numpy(dtype=np.float64, na_value=np.nan)
            names = np.asarray(list(self.meta.class_names) if self.meta is not None else [], dtype=object)
            ok = np.isfinite(lab) & (lab == np.round(lab)) & (lab >= 0) & (lab < len(names))
            out = np.full(len(lab), "—", dtype=object)
            out[ok] = names[lab[ok].astype(np.int64)]
            other = np.isfinite(lab) & ~ok
            out[other] = [str(int(v)) if v == round(v) else str(v) for v in lab[other]]
            return out.tolist()
        return [self.class_name(v) for v in values.tolist()]

    def class_name(self, label: Any) -> str:
        """Name of an integer class (``"—"`` when missing)."""
        if _missing(label):
            return "—"
        try:
            k = int(label)
        except (TypeError, ValueError):
            return str(label)
        names = self.meta.class_names if self.meta is not None else []
        return str(names[k]) if 0 <= k < len(names) else str(k)


def _load_ood_eval(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / S.OOD_EVAL_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def ood_score_columns(table: pd.DataFrame) -> list[str]:
    """The numeric ``ood_*`` score columns of the table, known scores first."""
    known = [S.OOD_MSP, S.OOD_MAXLOGIT, S.OOD_ENERGY, S.OOD_MAHALANOBIS, S.OOD_RMD, S.OOD_KNN]
    present = [c for c in known if c in table.columns]
    return present + [
        c for c in table.columns
        if isinstance(c, str) and c.startswith(S.OOD_PREFIX) and c not in present
        and pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
    ]


def _suggested_column(table: pd.DataFrame) -> str | None:
    """The ``suggested_label`` column when this version of the schema names it and the table has it."""
    name = getattr(S, "SUGGESTED_LABEL", None)
    return name if isinstance(name, str) and name in table.columns else None


def _estimate_noise(table: pd.DataFrame) -> Any:
    """``analysis.noise.estimate_label_noise(table)``, or None where that module is absent."""
    try:
        module = importlib.import_module(NOISE_MODULE)
    except ImportError:
        return None
    estimate = getattr(module, "estimate_label_noise", None)
    if not callable(estimate):
        return None
    try:
        return estimate(table)
    except (ValueError, KeyError, TypeError, S.SchemaError):
        return None  # the estimate does not apply to this run (e.g. no labels or no dynamics)


def _infer_region_thresholds(table: pd.DataFrame) -> RegionThresholds | None:
    """The default thresholds when they reproduce the stored ``region`` column, else None.

    ``run.json`` does not record the thresholds ``datamap analyze`` was given; the defaults are
    the common case and checking them costs one vectorised pass.
    """
    if not {S.CONFIDENCE, S.VARIABILITY, S.REGION} <= set(table.columns):
        return None
    default = RegionThresholds()
    again = assign_regions(table[S.CONFIDENCE].to_numpy(dtype=np.float64, na_value=np.nan),
                           table[S.VARIABILITY].to_numpy(dtype=np.float64, na_value=np.nan), default)
    categories = list(S.REGIONS)
    again_codes = pd.Categorical(again, categories=categories).codes
    stored = table[S.REGION]
    stored_codes = (stored.cat.set_categories(categories).cat.codes.to_numpy()
                    if isinstance(stored.dtype, pd.CategoricalDtype)
                    else pd.Categorical(stored.astype(object), categories=categories).codes)
    return default if np.array_equal(again_codes, stored_codes) else None


def load_inputs(
    run_dir: str | os.PathLike[str],
    *,
    table: pd.DataFrame | None = None,
    latest_flags: pd.DataFrame | None = None,
    thresholds: RegionThresholds | None = None,
    ood_quantile: float | None = None,
) -> ReportInputs:
    """Gather what the report shows.

    Parameters
    ----------
    run_dir : path-like
        An analysed run (``table.parquet``).
    table : DataFrame, optional
        The example table to report (the dashboard passes its working table: regions and
        diagnosis at its thresholds). Default: ``table.parquet`` as analysed.
    latest_flags : DataFrame, optional
        :meth:`analysis.flags.FlagJournal.latest` (read from the run when omitted).
    thresholds : RegionThresholds, optional
        The thresholds ``table``'s regions were assigned with (shown in the settings).
    ood_quantile : float, optional
        The diagnosis' OOD quantile when it differs from the analysis' own.
    """
    run = Path(run_dir)
    journal = FL.FlagJournal(run, check_ids=False)
    latest = journal.latest() if latest_flags is None else latest_flags
    if table is None:
        table = runstore.load_table(run).reset_index(drop=True)
    meta = runstore.load_run_meta(run) if (run / S.RUN_JSON).is_file() else None
    evaluation = _load_ood_eval(run)
    source = f"{S.OOD_EVAL_FILE} (written by datamap analyze)"
    scores = ood_score_columns(table)
    if (evaluation is None or not evaluation.get("metrics")) and scores:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh = ood_eval.evaluate_ood(table, scores)
        if fresh.get("metrics"):
            evaluation = {**(evaluation or {}), **fresh}
            source = "evaluated from the table"
    settings = dict((evaluation or {}).get("diagnosis") or {})
    note = ""
    if thresholds is None:
        thresholds = _infer_region_thresholds(table)
        note = ("the defaults of datamap analyze: they reproduce the stored regions"
                if thresholds is not None else
                "not recorded in the run: the stored regions do not match the defaults 0.5 / 0.2")
    else:
        note = "set in the dashboard: regions and diagnosis recomputed at them"
    if ood_quantile is not None and settings.get("ood_quantile") is not None \
            and math.isclose(float(ood_quantile), float(settings["ood_quantile"])):
        ood_quantile = None
    return ReportInputs(
        run_dir=run, meta=meta, table=table, latest_flags=latest, journal_edits=journal.count(),
        evaluation=evaluation, evaluation_source=source, settings=settings,
        region_thresholds=thresholds, region_note=note, ood_quantile=ood_quantile,
        noise=_estimate_noise(table),
        generated_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


# ---- figures --------------------------------------------------------------------------------------


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
    return _is(diag, DG.SUSPECT_MISLABELED) | _is(diag, DG.SUSPECT_OOD)


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
        return class_names(values) if class_names is not None else values.astype(str).tolist()

    memo: dict[Any, str] = {}

    def esc(value: Any) -> str:  # few distinct names: escape each once
        if value not in memo:
            memo[value] = _esc(value)
        return memo[value]

    id_col = table[S.EXAMPLE_ID].iloc[rows]
    # integer ids need no escaping (and are all distinct: no memo)
    ids = (id_col.astype(str).tolist() if pd.api.types.is_integer_dtype(id_col)
           else [_esc(v) for v in id_col.tolist()])
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
        f"<br>{_esc(m)} %{{customdata[{k}]:.3f}}" for k, m in enumerate(present)) + "<extra></extra>"
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
            x=xs[pick], y=ys[pick], mode="markers", name=f"{_esc(name)} ({int(pick.sum()):,})",
            marker={"size": 5, "color": CATEGORICAL_PALETTE[k % len(CATEGORICAL_PALETTE)],
                    "opacity": 0.8},
            text=hover_arr[pick].tolist(), customdata=None if custom is None else custom[pick],
            hovertemplate=template,
            _validate=False,  # tens of thousands of hover lines: checking each costs seconds
        ))
    fig.update_layout(
        title={"text": title}, height=560, margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"title": {"text": _esc(color)}, "itemsizing": "constant"},
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
) -> go.Figure:
    """The 2-D projection of the features (``umap_x``, ``umap_y``), coloured by split."""
    return _map_figure(
        table, points, x=S.UMAP_X, y=S.UMAP_Y, color=S.SPLIT, x_title=S.UMAP_X, y_title=S.UMAP_Y,
        x_range=_padded(points.xs), y_range=_padded(points.ys),
        hover=hover if hover is not None else hover_lines(table, points.rows),
        metrics=(S.CONFIDENCE, S.VARIABILITY), order=(S.TRAIN_SPLIT, "test"),
        title=f"Embedding map: {points.n_drawable:,} examples", show_ticks=False,
    )


def ood_histogram_figure(table: pd.DataFrame, score: str, *, bins: int = 60) -> go.Figure:
    """Distribution of one OOD score per split (fractions of each split), bars overlaid.

    The bins are shared by every split and counted here, so the figure stays small at any size.
    """
    if score not in table.columns:
        raise ValueError(f"Expected a score column in the table, got {score!r}.")
    values = np.clip(table[score].to_numpy(dtype=np.float64, na_value=np.nan), -1e300, 1e300)
    finite = np.isfinite(values)
    lo, hi = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    codes, names = pd.factorize(table[S.SPLIT], sort=True)
    fig = go.Figure()
    for code in np.unique(codes[finite & (codes >= 0)]).tolist():
        sel = finite & (codes == code)
        counts, _ = np.histogram(values[sel], bins=edges)
        total = int(sel.sum())
        name = _esc(names[code])
        fig.add_trace(go.Bar(
            x=centers, y=counts / max(total, 1), width=float(edges[1] - edges[0]),
            name=f"{name} ({total:,})", opacity=0.6,
            marker_color=CATEGORICAL_PALETTE[len(fig.data) % len(CATEGORICAL_PALETTE)],
            customdata=counts, hovertemplate=f"{name}: %{{x:.3g}}: %{{y:.2%}} (%{{customdata:,}})"
                                             "<extra></extra>",
        ))
    fig.update_layout(
        barmode="overlay", height=380, margin={"l": 60, "r": 20, "t": 50, "b": 50},
        title={"text": f"{_esc(score)} per split (higher = more anomalous)"},
        xaxis={"title": {"text": _esc(score)}}, yaxis={"title": {"text": "fraction of split"},
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
        label = _esc(name)
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
                      title={"text": f"Detection curves of {_esc(score)}"}, plot_bgcolor="white")
    return fig


# ---- sections -------------------------------------------------------------------------------------


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    """An HTML table; ``header`` is escaped here, cells must already be HTML."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _count_cell(key: str, value: int) -> str:
    """A count with a ``data-key`` (tests read the report's numbers by it)."""
    return f'<span class="num" data-key="{_esc(key)}">{int(value):,}</span>'


def _value_counts(series: pd.Series, order: Sequence[str] = ()) -> list[tuple[str, int]]:
    raw = series.value_counts(dropna=False)
    counts: dict[str, int] = {}
    for value, n in raw.items():
        name = "—" if _missing(value) else str(value)
        counts[name] = counts.get(name, 0) + int(n)
    names = [v for v in order if counts.get(v)] + sorted(v for v in counts if v not in order and counts[v])
    return [(name, counts[name]) for name in names]


def run_section(inputs: ReportInputs) -> str:
    """The run: task, classes, epochs, how the dynamics were recorded, when; splits and counts."""
    t, meta = inputs.table, inputs.meta
    facts: list[tuple[str, str]] = [("run directory", f"<code>{_esc(inputs.run_dir)}</code>")]
    if meta is not None:
        facts += [
            ("task", _esc(meta.task) or "—"),
            ("created", _esc(meta.created_at)),
            ("epochs recorded", _fmt(meta.n_epochs)),
            ("dynamics from", f"<code>{_esc(meta.source)}</code>: "
                              f"{_esc(SOURCE_TEXT.get(meta.source, ''))}"),
            ("classes", f"{meta.n_classes:,}: " + ", ".join(_esc(c) for c in meta.class_names)),
        ]
    facts += [("examples", _count_cell("n_examples", len(t))),
              ("report generated", _esc(inputs.generated_at))]
    out = ["<section id='run'><h2>The run</h2>",
           _table_html(("", ""), [(f"<b>{_esc(k)}</b>", v) for k, v in facts], cls="facts")]
    if S.SPLIT in t.columns:
        rows = [(f"<code>{_esc(name)}</code>", _count_cell(f"split:{name}", n))
                for name, n in _value_counts(t[S.SPLIT], (S.TRAIN_SPLIT, "test"))]
        out += ["<h3>Splits</h3>", _table_html(("split", "examples"), rows)]
    if S.LABEL in t.columns and S.SPLIT in t.columns:
        labels = t[S.LABEL][_is(t[S.SPLIT], S.TRAIN_SPLIT)].dropna()
        if len(labels):
            counts = labels.astype(np.int64).value_counts().sort_index()
            rows = [(_esc(inputs.class_name(k)), _count_cell(f"class:{inputs.class_name(k)}", n))
                    for k, n in counts.items()]
            out += ["<h3>Training examples per class (given label)</h3>",
                    _table_html(("class", "examples"), rows)]
    out.append("</section>")
    return "".join(out)


def findings_section(inputs: ReportInputs) -> str:
    """Region and diagnosis counts, the label-noise estimate and the OOD metrics per split."""
    t = inputs.table
    out = ["<section id='findings'><h2>Findings</h2><div class='cols'>"]
    if S.REGION in t.columns:
        rows = [(_esc(name), _count_cell(f"region:{name}", n))
                for name, n in _value_counts(t[S.REGION], S.REGIONS)]
        out += ["<div><h3>Data-map regions</h3>", _table_html(("region", "examples"), rows), "</div>"]
    if S.DIAGNOSIS in t.columns:
        counts = DG.counts(t[S.DIAGNOSIS])
        rows = [(_esc(name), _count_cell(f"diagnosis:{name}", n)) for name, n in counts.items()]
        out += ["<div><h3>Diagnosis</h3>", _table_html(("diagnosis", "examples"), rows), "</div>"]
    out.append(ood_metrics_section(inputs.evaluation, source=inputs.evaluation_source))
    out.append("</div>")
    out.append(label_noise_section(inputs.noise))
    out.append("</section>")
    return "".join(out)


def label_noise_section(estimate: Any, *, max_pairs: int = 10) -> str:
    """The estimated label-noise rate overall and per class and the most confused pairs.

    ``estimate`` has ``rate``, ``per_class`` (class name -> rate), ``n_per_class`` (class name ->
    examples) and ``confused_pairs`` (``(given, suggested, count)``), as
    ``analysis.noise.estimate_label_noise`` returns; None gives an empty string (the section is
    left out).
    """
    if estimate is None:
        return ""
    rate = getattr(estimate, "rate", None)
    per_class = dict(getattr(estimate, "per_class", None) or {})
    n_per_class = dict(getattr(estimate, "n_per_class", None) or {})
    pairs = list(getattr(estimate, "confused_pairs", None) or [])
    out = ["<div id='label-noise'><h3>Label noise (estimated)</h3>"]
    if rate is not None and not _missing(rate):
        out.append(f"<p>Estimated rate of wrong labels: <span class='num' data-key='noise:rate'>"
                   f"{float(rate):.1%}</span> of the labelled training examples.</p>")
    if per_class:
        rows = [(_esc(name), f"<span class='num' data-key='noise:class:{_esc(name)}'>"
                             f"{float(r):.1%}</span>",
                 _fmt(n_per_class.get(name)))
                for name, r in sorted(per_class.items(), key=lambda kv: -float(kv[1]))]
        out.append(_table_html(("class", "estimated noise", "examples"), rows))
    if pairs:
        top = sorted(pairs, key=lambda p: -int(p[2]))[:max_pairs]
        rows = [(_esc(given), _esc(suggested), _count_cell(f"noise:pair:{given}>{suggested}", n))
                for given, suggested, n in top]
        out += ["<h4>Most confused class pairs</h4>",
                _table_html(("given label", "suggested label", "examples"), rows)]
    out.append("</div>")
    return "".join(out)


def ood_metrics_section(evaluation: Mapping[str, Any] | None, *, source: str = "") -> str:
    """AUROC, AUPR-in/out and FPR@95 of every score per OOD split (and overall)."""
    metrics = (evaluation or {}).get("metrics") or {}
    if not metrics:
        skipped = (evaluation or {}).get("skipped") or []
        why = "; ".join(_esc(s) for s in skipped) or "the run has no OOD scores or no ground truth"
        return f"<div id='ood-metrics'><h3>OOD detection</h3><p>Not evaluated: {why}.</p></div>"
    rows = []
    for col, per in metrics.items():
        for group, m in per.items():
            key = f"{col}:{group}"
            rows.append((
                f"<code>{_esc(col)}</code>", _esc(group),
                f"<span class='num' data-key='auroc:{_esc(key)}'>{_fmt(m.get('auroc'))}</span>",
                _fmt(m.get("aupr_in")), _fmt(m.get("aupr_out")), _fmt(m.get("fpr95")),
                _fmt(m.get("n_id")), _fmt(m.get("n_ood")),
            ))
    definition = _esc((evaluation or {}).get("fpr95_definition", "ood_accepted_at_95_id"))
    return ("<div id='ood-metrics' class='wide'><h3>OOD detection (OOD is the positive class)</h3>"
            + _table_html(("score", "OOD split", "AUROC", "AUPR-in", "AUPR-out", "FPR@95", "n ID",
                           "n OOD"), rows)
            + f"<p class='note'>From {_esc(source)}. FPR@95 reading: <code>{definition}</code>. "
              "In-distribution rows: the held-out <code>test</code> split (training rows fitted "
              "the scorers).</p></div>")


def _snippet(value: Any, limit: int = SNIPPET_CHARS) -> str:
    if _missing(value):
        return ""
    text = " ".join(str(value).split())
    return _esc(text if len(text) <= limit else text[: limit - 1] + "…")


def _image_urls(values: pd.Series, run_dir: Path) -> list[str | None]:
    """Thumbnail ``data:`` URLs of an image column (:func:`dashboard.data.image_data_urls`).

    That module imports Streamlit, whose caches log "no runtime" warnings outside a running app
    (meaningless here): it is imported only when a run has images, with logging held back.
    """
    import logging

    logging.disable(logging.WARNING)
    try:
        from dashboard import data

        return data.image_data_urls(values, run_dir)
    finally:
        logging.disable(logging.NOTSET)


def _payload_cells(inputs: ReportInputs, rows: np.ndarray) -> list[str]:
    """A thumbnail (``<img>`` with a ``data:`` URL) or a text snippet per row."""
    t = inputs.table
    if S.IMAGE in t.columns:
        urls = _image_urls(t[S.IMAGE].iloc[rows], inputs.run_dir)
        return [f'<img class="thumb" alt="" src="{_esc(u)}">' if u else "" for u in urls]
    if S.TEXT in t.columns:
        return [_snippet(v) for v in t[S.TEXT].iloc[rows].tolist()]
    return [""] * len(rows)


def _id_key(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _flag_lookup(latest: pd.DataFrame) -> dict[Any, str]:
    """``example_id -> flag`` of the examples with a current flag."""
    if latest is None or not len(latest) or FL.FLAG not in latest.columns:
        return {}
    have = latest[latest[FL.FLAG].notna()]
    return {_id_key(i): str(f) for i, f in zip(have[S.EXAMPLE_ID], have[FL.FLAG], strict=True)}


def _ranked(table: pd.DataFrame, kind: str, columns: Sequence[str], *, ascending: bool,
            k: int) -> tuple[np.ndarray, str | None, int]:
    """Rows diagnosed ``kind``, the ``k`` first by the first present column of ``columns``."""
    if S.DIAGNOSIS not in table.columns:
        return np.zeros(0, dtype=np.int64), None, 0
    rows = np.flatnonzero(_is(table[S.DIAGNOSIS], kind))
    total = int(rows.size)
    col = next((c for c in columns if c in table.columns), None)
    if col is not None and rows.size:
        vals = table[col].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
        vals = np.where(np.isnan(vals), np.inf, vals if ascending else -vals)
        if rows.size > k:  # partial sort: the k first, then order them
            keep = np.argpartition(vals, k - 1)[:k]
            rows, vals = rows[keep], vals[keep]
        rows = rows[np.argsort(vals, kind="stable")]
    return rows[:k], col, total


def suspects_section(inputs: ReportInputs, *, k: int = TOP_SUSPECTS) -> str:
    """The top suspects: mislabeled (lowest AUM first) and OOD (highest score first)."""
    t = inputs.table
    suggested = _suggested_column(t)
    out = ["<section id='suspects'><h2>Top suspects</h2><div class='cols'>"]
    for kind, title, columns, ascending in (
        (DG.SUSPECT_MISLABELED, "Suspected mislabeled", (S.AUM, S.CONFIDENCE), True),
        (DG.SUSPECT_OOD, "Suspected out-of-distribution", OOD_RANKING, False),
    ):
        rows, col, total = _ranked(t, kind, columns, ascending=ascending, k=k)
        out.append(f"<div><h3 id='{kind}'>{_esc(title)}: "
                   f"{_count_cell(f'suspects:{kind}', total)}</h3>")
        if not rows.size:
            out.append("<p>None.</p></div>")
            continue
        payload = _payload_cells(inputs, rows)
        flag_of = _flag_lookup(inputs.latest_flags)
        predicted = S.FINAL_PRED in t.columns and kind == DG.SUSPECT_MISLABELED
        header = ["", "example_id", "split", "label"] + (["suggested"] if suggested else []) + \
            (["model predicts"] if predicted else []) + ([col] if col else []) + ["confidence", "flag"]
        body = []
        for r, cell in zip(rows.tolist(), payload, strict=True):
            rec = t.iloc[r]
            line = [cell, f"<code>{_esc(rec[S.EXAMPLE_ID])}</code>", _esc(rec.get(S.SPLIT)),
                    _esc(inputs.class_name(rec.get(S.LABEL)))]
            if suggested:
                line.append(_esc(inputs.class_name(rec.get(suggested))))
            if predicted:
                line.append(_esc(inputs.class_name(rec.get(S.FINAL_PRED))))
            if col:
                line.append(_fmt(rec.get(col)))
            line += [_fmt(rec.get(S.CONFIDENCE)), _esc(flag_of.get(_id_key(rec[S.EXAMPLE_ID]), ""))]
            body.append(line)
        shown = f"the first {len(rows):,} of {total:,}" if total > len(rows) else f"all {total:,}"
        ranked = f", ranked by <code>{_esc(col)}</code> ({'lowest' if ascending else 'highest'} first)" \
            if col else ""
        out += [_table_html(header, body, cls="suspects"),
                f"<p class='note'>Showing {shown}{ranked}.</p></div>"]
    out.append("</div></section>")
    return "".join(out)


def flags_section(inputs: ReportInputs, *, max_rows: int = MAX_FLAG_ROWS) -> str:
    """The person's flags and relabels so far: counts and a table of the latest state."""
    latest = inputs.latest_flags
    out = ["<section id='flags'><h2>Flags and relabels</h2>"]
    flags = latest[FL.FLAG].dropna().astype(str) if len(latest) else pd.Series(dtype=str)
    n_relabels = int(latest[FL.NEW_LABEL].notna().sum()) if len(latest) else 0
    n_notes = int(latest[FL.NOTE].notna().sum()) if len(latest) else 0
    rows = [(_esc(f), _count_cell(f"flag:{f}", int((flags == f).sum()))) for f in FL.FLAG_VALUES]
    rows += [("relabelled", _count_cell("flag:relabelled", n_relabels)),
             ("with a note", _count_cell("flag:noted", n_notes)),
             ("examples edited", _count_cell("flag:examples", len(latest))),
             ("journal entries", _count_cell("flag:entries", inputs.journal_edits))]
    out.append(_table_html(("", "examples"), rows))
    if len(latest):
        recent = latest.iloc[::-1].head(max_rows)
        body = [(f"<code>{_esc(r[S.EXAMPLE_ID])}</code>", _esc("" if _missing(r[FL.FLAG]) else r[FL.FLAG]),
                 "" if _missing(r[FL.NEW_LABEL]) else _esc(inputs.class_name(r[FL.NEW_LABEL])),
                 _snippet(r[FL.NOTE]), _esc(r[FL.AUTHOR]), _esc(r[FL.AT]))
                for _, r in recent.iterrows()]
        out.append(_table_html(("example_id", "flag", "new label", "note", "author", "at (UTC)"),
                               body, cls="flags"))
        if len(latest) > max_rows:
            out.append(f"<p class='note'>The {max_rows:,} most recent of {len(latest):,} edited "
                       "examples.</p>")
    else:
        out.append("<p>No flags or relabels yet.</p>")
    out.append(f"<p class='note'>Journal: <code>{_esc(inputs.run_dir / S.FLAGS_FILE)}</code> "
               "(append-only SQLite).</p></section>")
    return "".join(out)


def _setting_value(value: Any) -> str:
    if isinstance(value, float):
        return _esc(f"{value:.6g}")
    if isinstance(value, list | tuple | dict):
        return f"<code>{_esc(json.dumps(value))}</code>"
    return _esc(value)


def reproduce_command(inputs: ReportInputs) -> str:
    """The ``datamap analyze`` command that recomputes this analysis (plain text, unescaped)."""
    parts = ["datamap", "analyze", shlex.quote(str(inputs.run_dir))]
    th = inputs.region_thresholds
    if th is not None and th != RegionThresholds():
        parts += ["--confidence-threshold", f"{th.confidence:g}",
                  "--variability-threshold", f"{th.variability:g}"]
    if not inputs.settings:
        return " ".join(parts + ["--no-ood"])
    scores = [c.removeprefix(S.OOD_PREFIX) for c in ood_score_columns(inputs.table)]
    if scores:
        parts += ["--ood-scorers", shlex.quote(",".join(scores))]
    score = inputs.settings.get("score_column")
    if score:
        parts += ["--ood-scorer", shlex.quote(str(score).removeprefix(S.OOD_PREFIX))]
    quantile = inputs.ood_quantile if inputs.ood_quantile is not None else inputs.settings.get("ood_quantile")
    if quantile is not None:
        parts += ["--ood-quantile", f"{float(quantile):g}"]
    return " ".join(parts)


def settings_section(inputs: ReportInputs) -> str:
    """The settings used (region thresholds, the diagnosis section of ``ood_eval.json``) and the
    command that reproduces the analysis."""
    th = inputs.region_thresholds
    rows = [("region thresholds",
             (f"confidence {th.confidence:g}, variability {th.variability:g}" if th else "—")
             + f" <span class='note'>({_esc(inputs.region_note)})</span>")]
    if inputs.ood_quantile is not None:
        rows.append(("OOD quantile set in the dashboard", _esc(f"{inputs.ood_quantile:g}")))
    rows += [(f"<code>{_esc(k)}</code>", _setting_value(v)) for k, v in inputs.settings.items()]
    out = ["<section id='settings'><h2>Settings</h2>",
           f"<p>Diagnosis settings from <code>{_esc(S.OOD_EVAL_FILE)}</code>"
           + ("" if inputs.settings else " (absent: the run was analysed without the OOD stage)")
           + ":</p>",
           _table_html(("setting", "value"), rows, cls="facts"),
           "<p>Reproduce the analysis:</p>",
           f"<pre id='reproduce'>{_esc(reproduce_command(inputs))}</pre>",
           "<p class='note'>The run does not record the projection method (<code>--projection"
           "</code>, default umap) or scorer options such as <code>--knn-k</code>; add them if "
           "the analysis used others.</p>",
           "<p>and this report: <code>"
           + _esc(f"datamap report {shlex.quote(str(inputs.run_dir))}") + "</code></p>"]
    learned = inputs.settings.get("learned_ood_quantile")
    if learned is not None and not math.isclose(float(learned), 0.995):
        out.append("<p class='note'>The learned-example quantile differs from the default: pass "
                   "it as <code>AnalyzeOptions(extra={'learned_ood_quantile': ...})</code>.</p>")
    out.append("</section>")
    return "".join(out)


# ---- assembly -------------------------------------------------------------------------------------


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#222;background:#fff}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{margin:8px 0 4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
nav a{margin-right:14px;color:#4C78A8}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border-bottom:1px solid #eee;padding:4px 10px;text-align:left;vertical-align:middle}
th{background:#f6f6f6}.num{font-variant-numeric:tabular-nums}
.cols{display:flex;flex-wrap:wrap;gap:40px}.cols>.wide{flex:1 1 560px}.note{color:#666;font-size:13px}
.thumb{width:48px;height:48px;object-fit:contain;image-rendering:pixelated;background:#f4f4f4}
pre{background:#f6f6f6;padding:8px 12px;overflow-x:auto}
.figure{min-height:380px;margin:12px 0}
table.suspects td:nth-child(n+2){white-space:nowrap}
"""

_RENDER_JS = """
(function(){
  for (const el of document.querySelectorAll('script[type="application/json"][data-figure]')) {
    const spec = JSON.parse(el.textContent);
    const div = document.getElementById(el.dataset.figure);
    Plotly.newPlot(div, spec.data, spec.layout, spec.config)
      .then(function(){ div.setAttribute('data-rendered', '1'); })
      .catch(function(err){ div.setAttribute('data-error', String(err)); });
  }
})();
"""


def _figure_block(fig_id: str, fig: go.Figure, caption: str = "") -> str:
    spec = fig.to_plotly_json()
    payload = pio.to_json({"data": spec["data"], "layout": spec["layout"], "config": _PLOTLY_CONFIG},
                          validate=False)
    # plotly's JSON writer escapes <, > and / as \\u003c..., so the text cannot close the script
    return (f'<div class="figure" id="{fig_id}"></div>'
            + (f"<p class='note'>{caption}</p>" if caption else "")
            + f'<script type="application/json" data-figure="{fig_id}">{payload}</script>')


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def maps_section(inputs: ReportInputs) -> str:
    """The data map and the embedding map (density of every row, a sample and the suspects)."""
    t = inputs.table
    suggested = _suggested_column(t)
    out = ["<section id='maps'><h2>Maps</h2>"]
    for key, x, y, builder, what in (
        ("data_map", S.VARIABILITY, S.CONFIDENCE, "data", "Variability and confidence of p(gold) "
                                                           "across epochs (Swayamdipta et al., 2020)."),
        ("embedding_map", S.UMAP_X, S.UMAP_Y, "embedding", "The 2-D projection of the features; "
                                                            "every split in one space."),
    ):
        if x not in t.columns or y not in t.columns:
            continue
        points = map_points(t, x=x, y=y)
        if points.n_drawable == 0:
            continue
        hover = hover_lines(t, points.rows, class_names=inputs.class_names_of, suggested=suggested)
        fig = (data_map_figure(t, points, thresholds=inputs.region_thresholds, hover=hover)
               if builder == "data" else embedding_figure(t, points, hover=hover))
        suspects = (f"every suspect ({points.n_suspects:,})"
                    if points.n_suspects == points.n_suspects_drawn else
                    f"{points.n_suspects_drawn:,} of {points.n_suspects:,} suspects (a uniform sample)")
        caption = (f"{_esc(what)} The shaded layer shows where all {points.n_drawable:,} examples "
                   f"lie (darker = more); points: {suspects} and a uniform sample of "
                   f"{len(points.rows) - points.n_suspects_drawn:,} others. Hover a point for its "
                   "id, labels and metrics; click a legend entry to hide a group.")
        out.append(_figure_block(f"fig-{key}", fig, caption))
    out.append("</section>")
    return "".join(out)


def ood_section(inputs: ReportInputs) -> str:
    """The OOD score histogram per split and ROC/PR curves of the diagnosis' score."""
    t = inputs.table
    scores = ood_score_columns(t)
    if not scores:
        return ""
    score = inputs.settings.get("score_column")
    if score not in scores:
        metrics = (inputs.evaluation or {}).get("metrics") or {}
        aurocs = {c: ((metrics.get(c) or {}).get(ood_eval.OVERALL) or {}).get("auroc") for c in scores}
        known = {c: a for c, a in aurocs.items() if isinstance(a, int | float)}
        score = max(known, key=lambda c: known[c]) if known else scores[0]
    out = ["<section id='ood'><h2>Out-of-distribution scores</h2>",
           _figure_block("fig-ood_histogram", ood_histogram_figure(t, str(score)),
                         "Bars are fractions of each split; every row is counted.")]
    curves = ood_curves(t, str(score))
    if curves:
        out.append(_figure_block("fig-ood_curves", ood_curves_figure(curves, score=str(score)),
                                 "In-distribution: held-out non-OOD rows (test); positive: each "
                                 "OOD split."))
    out.append("</section>")
    return "".join(out)


def build_report(
    run_dir: str | os.PathLike[str],
    *,
    table: pd.DataFrame | None = None,
    latest_flags: pd.DataFrame | None = None,
    thresholds: RegionThresholds | None = None,
    ood_quantile: float | None = None,
) -> str:
    """The report of a run as one self-contained HTML document (see the module docstring).

    Parameters are those of :func:`load_inputs`.

    Returns
    -------
    str
        The HTML text (Plotly's JavaScript inline; a few MB).
    """
    inputs = load_inputs(run_dir, table=table, latest_flags=latest_flags, thresholds=thresholds,
                         ood_quantile=ood_quantile)
    return assemble_html(inputs)



def assemble_html(inputs: ReportInputs) -> str:
    """The HTML document of gathered inputs."""
    name = inputs.meta.task if inputs.meta is not None and inputs.meta.task else inputs.run_dir.name
    sections = [run_section(inputs), findings_section(inputs), maps_section(inputs),
                ood_section(inputs), suspects_section(inputs), flags_section(inputs),
                settings_section(inputs)]
    nav = "".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("run", "Run"), ("findings", "Findings"), ("maps", "Maps"), ("ood", "OOD"),
        ("suspects", "Suspects"), ("flags", "Flags"), ("settings", "Settings")))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        # no request of any kind: scripts, styles, images and fonts are inline or data: URLs
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; worker-src blob:\">"
        f"<title>datamap report: {_esc(name)}</title><style>{_CSS}</style>"
        f"<script>{_plotly_js()}</script></head><body><main>"
        f"<h1>datamap report: {_esc(name)}</h1><nav>{nav}</nav>"
        + "".join(sections)
        + "<p class='note'>Made by datamap. This file is self-contained: it works offline.</p>"
        + f"</main><script>{_RENDER_JS}</script></body></html>\n"
    )


def write_report(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, **options: Any,
) -> Path:
    """Build the report and write it atomically (default ``RUN_DIR/report.html``); returns the path."""
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    if path.is_dir():
        raise ValueError(f"Expected --out to name a file, got the directory {str(path)!r}.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"The folder of {str(path)!r} does not exist; create it first.")
    text = build_report(run_dir, **options)
    with runstore.atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
