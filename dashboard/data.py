"""Loading and caching for the dashboard: one module, keyed by run identity.

``st.cache_data`` hashes big frames from a sample, so two different tables could share a key:
every cache here is keyed by the run's identity (resolved path + modification time + size of the
file it reads) and big arrays travel as ``_``-prefixed, unhashed arguments. The example table is
cached with ``st.cache_resource`` (one shared, read-only object; never mutated) so a rerun does
not copy a million rows.

The dashboard does no metric arithmetic of its own: numbers come from ``analysis``.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from analysis import diagnosis as DG
from analysis import filters as F
from analysis import flags as FL
from analysis import runstore
from analysis import schema as S
from analysis.dynamics import RegionThresholds, assign_regions
from dashboard.server import ENV_RUN_DIR

__all__ = [
    "MAX_PLOT_POINTS",
    "RunContext",
    "RunKey",
    "analysis_thresholds",
    "apply_spec",
    "build_context",
    "class_names",
    "load_ood_eval",
    "has_projection",
    "ood_columns",
    "ood_curves",
    "plot_points",
    "run_key",
    "selection_mask",
    "trajectory",
]

MAX_PLOT_POINTS = int(os.environ.get("DATAMAP_MAX_POINTS", "3000"))
"""Points a scatter draws at most (``DATAMAP_MAX_POINTS``, default 3,000); a density image behind
them shows every filtered row, and filters, counts, selections and exports use every row.
Measured at 100k rows in headless Chromium without a GPU, 10,000 WebGL points appeared about as
fast as 3,000, but a filter change took ~0.3 s longer and a lasso ~0.4 s longer (figure payload,
drawing, and every lasso sends the selected drawn points back), so the default favours speed;
raise it on a GPU-backed browser."""
EXTREME_K = 50
"""Per extreme column, the top and bottom ``k`` rows always drawn."""

RunKey = tuple[str, int, int]
"""(resolved path of table.parquet, modification time in ns, size in bytes)."""


def run_dir_from_env() -> Path | None:
    """The run directory given to the server (``DATAMAP_RUN_DIR``), or None."""
    value = os.environ.get(ENV_RUN_DIR)
    return Path(value) if value else None


def run_key(run_dir: str | os.PathLike[str]) -> RunKey:
    """Identity of a run's analysed table; raises ``FileNotFoundError`` with the fix."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(
            f"Run directory {str(run)!r} does not exist. Pass an existing run to "
            "`datamap serve RUN_DIR`, or try `datamap demo`."
        )
    path = run / S.TABLE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is missing. Build it with `datamap analyze {run}` and reload."
        )
    st_ = path.stat()
    return (str(path.resolve()), st_.st_mtime_ns, st_.st_size)


@st.cache_resource(max_entries=2, show_spinner="Loading the example table…")
def _load_table(key: RunKey) -> pd.DataFrame:
    table = runstore.load_table(Path(key[0]).parent)
    if S.EXAMPLE_ID not in table.columns:
        raise S.SchemaError(f"{key[0]!r} has no `example_id` column; rebuild it with `datamap analyze`.")
    return table.reset_index(drop=True)


@st.cache_resource(max_entries=4, show_spinner=False)
def _load_meta(run_dir: str, mtime_ns: int) -> runstore.RunMeta:
    return runstore.load_run_meta(run_dir)


def load_meta(run_dir: str | os.PathLike[str]) -> runstore.RunMeta | None:
    """``run.json`` of the run (cached on its modification time), or None when absent."""
    path = Path(run_dir) / S.RUN_JSON
    if not path.is_file():
        return None
    return _load_meta(str(Path(run_dir).resolve()), path.stat().st_mtime_ns)


@st.cache_resource(max_entries=3, show_spinner="Assigning regions…")
def _regions(key: RunKey, confidence: float, variability: float, _table: pd.DataFrame) -> pd.Categorical:
    if S.CONFIDENCE not in _table.columns or S.VARIABILITY not in _table.columns:
        return _table[S.REGION] if S.REGION in _table.columns else None
    region = assign_regions(
        _table[S.CONFIDENCE].to_numpy(dtype=np.float64, na_value=np.nan),
        _table[S.VARIABILITY].to_numpy(dtype=np.float64, na_value=np.nan),
        RegionThresholds(confidence=confidence, variability=variability),
    )
    return pd.Categorical(region, categories=list(S.REGIONS))


def diagnosis_settings(run_dir: str | os.PathLike[str]) -> tuple[str | None, DG.DiagnosisThresholds] | None:
    """The OOD score column and thresholds ``datamap analyze`` diagnosed with (``ood_eval.json``),
    or None when the run does not record them."""
    info = (load_ood_eval(run_dir) or {}).get("diagnosis")
    if not isinstance(info, dict) or "ood_quantile" not in info:
        return None
    try:
        th = DG.DiagnosisThresholds(
            ood_quantile=float(info["ood_quantile"]),
            learned_ood_quantile=None if info.get("learned_ood_quantile") is None else float(info["learned_ood_quantile"]),
            reference_splits=tuple(str(v) for v in info.get("reference_splits") or (S.TRAIN_SPLIT, "test")),
            # runs analysed before the option existed were calibrated on all reference rows
            calibrate_on=str(info.get("calibrate_on") or DG.ALL_ROWS),
        )
    except (TypeError, ValueError):
        return None
    score = info.get("score_column")
    return (str(score) if score else None), th


def analysis_thresholds(run_dir: str | os.PathLike[str]) -> tuple[RegionThresholds, bool]:
    """The data-map thresholds ``datamap analyze`` assigned the ``region`` column with
    (``ood_eval.json["region_thresholds"]``), and whether the run records them; a run that does
    not (analysed before they were recorded, or without the OOD stage) gets the defaults of
    ``datamap analyze`` (0.5, 0.2)."""
    info = (load_ood_eval(run_dir) or {}).get("region_thresholds")
    if isinstance(info, dict):
        conf, var = info.get("confidence"), info.get("variability")
        if (isinstance(conf, int | float) and isinstance(var, int | float)
                and 0.0 <= conf <= 1.0 and 0.0 <= var <= 0.5):  # the sidebar sliders' ranges
            return RegionThresholds(confidence=float(conf), variability=float(var)), True
    return RegionThresholds(), False


@st.cache_resource(max_entries=3, show_spinner="Diagnosing…")
def _diagnosis(
    key: RunKey, confidence: float, variability: float, ood_quantile: float | None,
    _table: pd.DataFrame, _region: pd.Categorical,
) -> pd.Categorical | None:
    """The ``diagnosis`` column again, from the regions at the current thresholds.

    Uses the OOD score, quantiles and reference splits the analysis used (``ood_eval.json``),
    the OOD quantile replaced by ``ood_quantile`` when given; so at the analysis' thresholds it
    equals the stored column. None (keep the stored one) when the run does not record them.
    """
    how = diagnosis_settings(Path(key[0]).parent)
    if how is None:
        return None
    score, th = how
    if ood_quantile is not None:
        th = replace(th, ood_quantile=float(ood_quantile))
    if score is not None and score not in _table.columns:
        return None
    frame = pd.DataFrame({S.SPLIT: _table[S.SPLIT], S.REGION: _region})
    if S.IS_OOD in _table.columns:
        frame[S.IS_OOD] = _table[S.IS_OOD]
    if S.LABEL_ISSUE in _table.columns:  # the run's own label-issue cut-off (analysis.noise)
        frame[S.LABEL_ISSUE] = _table[S.LABEL_ISSUE]
    if score is not None:
        frame[score] = _table[score]
    diag, _ = DG.diagnosis_column(frame, score, thresholds=th)
    return diag


@st.cache_resource(max_entries=3, show_spinner="Applying flags…")
def _working_table(
    key: RunKey, confidence: float, variability: float, ood_quantile: float | None,
    flag_version: tuple[int, float], _table: pd.DataFrame, _latest: pd.DataFrame,
) -> pd.DataFrame:
    out = _table.copy(deep=False)
    region = _regions(key, confidence, variability, _table)
    if region is not None:
        out[S.REGION] = region
        if S.DIAGNOSIS in _table.columns:
            diag = _diagnosis(key, confidence, variability, ood_quantile, _table, region)
            if diag is not None:
                out[S.DIAGNOSIS] = diag
    return FL.apply_flags(out, _latest)


@st.cache_resource(max_entries=3, show_spinner=False)
def _extremes(key: RunKey, columns: tuple[str, ...], k: int, _table: pd.DataFrame) -> np.ndarray:
    cols = [c for c in columns if c in _table.columns]
    if not cols:
        return np.zeros(len(_table), dtype=bool)
    return np.asarray(F.extreme_mask(_table, cols, k=k), dtype=bool)


@st.cache_resource(max_entries=4, show_spinner=False)
def _flag_journal(run_dir: str) -> FL.FlagJournal:
    return FL.FlagJournal(run_dir)


def flag_journal(run_dir: str | os.PathLike[str]) -> FL.FlagJournal:
    """The run's flag journal, shared between sessions.

    The journal opens a connection per call, so one instance serves every thread; sharing it
    keeps its cache of valid table ids warm (building it reads the id column once).
    """
    return _flag_journal(str(Path(run_dir).resolve()))


def _journal_version(run_dir: Path) -> tuple[int, float]:
    """Changes whenever an edit lands: (number of journal entries, file modification time)."""
    path = run_dir / S.FLAGS_FILE
    if not path.exists():
        return (0, 0.0)
    mtimes = [p.stat().st_mtime for p in run_dir.glob(S.FLAGS_FILE + "*") if p.exists()]
    return (flag_journal(run_dir).count(), max(mtimes))


# ---- the per-rerun context ---------------------------------------------------------------------


@dataclass
class RunContext:
    """What every page needs, built once per rerun by the router.

    Attributes
    ----------
    run_dir : Path
    table : DataFrame or None
        Every example, with ``region`` at the current thresholds and the flag columns of
        :func:`analysis.flags.apply_flags`. Shared and cached: never mutate it.
    mask : bool array (n_examples,)
        The sidebar filter applied to every row.
    error : str or None
        Why the run could not be loaded; pages show it and stop.
    """

    run_dir: Path
    key: RunKey | None = None
    meta: runstore.RunMeta | None = None
    table: pd.DataFrame | None = None
    latest_flags: pd.DataFrame | None = None
    thresholds: RegionThresholds = field(default_factory=RegionThresholds)
    ood_quantile: float | None = None
    """The diagnosis' OOD quantile set in the sidebar (None: the analysis' own)."""
    spec: Any = None
    mask: np.ndarray | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _flagged: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_total(self) -> int:
        return 0 if self.table is None else len(self.table)

    @property
    def n_filtered(self) -> int:
        return 0 if self.mask is None else int(self.mask.sum())

    @property
    def flagged(self) -> np.ndarray:
        """Bool array (n_examples,): rows with a current flag or relabel (computed once)."""
        if self._flagged is None:
            assert self.table is not None
            out = np.zeros(self.n_total, dtype=bool)
            if FL.FLAG in self.table.columns:
                out |= self.table[FL.FLAG].notna().to_numpy(dtype=bool)
            if FL.NEW_LABEL in self.table.columns:
                out |= self.table[FL.NEW_LABEL].notna().to_numpy(dtype=bool)
            self._flagged = out
        return self._flagged

    def class_name(self, label: Any) -> str:
        return class_names(self.meta, label)


def class_names(meta: runstore.RunMeta | None, label: Any) -> str:
    """Name of an integer class (or ``"—"`` when missing)."""
    if label is None or (isinstance(label, float) and np.isnan(label)) or label is pd.NA:
        return "—"
    try:
        k = int(label)
    except (TypeError, ValueError):
        return str(label)
    if meta is not None and 0 <= k < len(meta.class_names):
        return str(meta.class_names[k])
    return str(k)


def load_context(
    run_dir: str | os.PathLike[str], *, thresholds: RegionThresholds | None = None,
    ood_quantile: float | None = None,
) -> RunContext:
    """Load the run (cached) and apply thresholds and flags; errors land in ``ctx.error``."""
    run = Path(run_dir)
    ctx = RunContext(run_dir=run, thresholds=thresholds or RegionThresholds(), ood_quantile=ood_quantile)
    t0 = time.perf_counter()
    try:
        ctx.key = run_key(run)
        base = _load_table(ctx.key)
        ctx.meta = load_meta(run)
        ctx.latest_flags = flag_journal(run).latest()
        ctx.table = _working_table(
            ctx.key, ctx.thresholds.confidence, ctx.thresholds.variability, ctx.ood_quantile,
            _journal_version(run), base, ctx.latest_flags,
        )
    except (FileNotFoundError, S.SchemaError, ValueError, OSError) as exc:
        ctx.error = str(exc)
        ctx.table = None
    ctx.timings["load"] = time.perf_counter() - t0
    return ctx


def build_context(
    run_dir: str | os.PathLike[str], *, thresholds: RegionThresholds | None = None, spec: Any = None
) -> RunContext:
    """:func:`load_context` plus the filter mask of ``spec`` over every row."""
    return apply_spec(load_context(run_dir, thresholds=thresholds), spec)


def apply_spec(ctx: RunContext, spec: Any) -> RunContext:
    """Set ``ctx.spec`` and ``ctx.mask`` (the filter over every row); returns ``ctx``."""
    ctx.spec = spec if spec is not None else F.FilterSpec()
    if ctx.table is not None:
        t0 = time.perf_counter()
        try:
            ctx.mask = np.asarray(F.apply_filter(ctx.table, ctx.spec, flags=ctx.latest_flags), dtype=bool)
        except (ValueError, KeyError) as exc:
            ctx.error = f"The filter could not be applied ({exc}). Reset the filters."
            ctx.mask = np.ones(len(ctx.table), dtype=bool)
        ctx.timings["filter"] = time.perf_counter() - t0
    elif ctx.mask is None:
        ctx.mask = np.zeros(0, dtype=bool)
    return ctx


# ---- plotting rows and selections ----------------------------------------------------------------


@dataclass
class PlotPoints:
    """What a scatter of the filtered rows draws.

    Attributes
    ----------
    rows : int array (n_drawn,)
        Sorted row positions to draw as points.
    xs, ys : float arrays (n_drawable,)
        Coordinates of EVERY filtered row with finite ``x`` and ``y`` (for the density image).
    """

    rows: np.ndarray
    xs: np.ndarray
    ys: np.ndarray

    @property
    def n_drawable(self) -> int:
        return len(self.xs)


def plot_points(
    ctx: RunContext,
    *,
    x: str,
    y: str,
    max_points: int | None = None,
    extreme_columns: Sequence[str] = (),
) -> PlotPoints:
    """A bounded sample of the filtered rows with finite ``x``/``y``, and where all of them lie.

    Flagged rows and the extremes of ``extreme_columns`` are always included (up to
    ``max_points``, default :data:`MAX_PLOT_POINTS`); the rest is a uniform sample, reproducible
    across reruns.
    """
    assert ctx.table is not None and ctx.mask is not None and ctx.key is not None
    if max_points is None:
        max_points = MAX_PLOT_POINTS
    xs = ctx.table[x].to_numpy(dtype=np.float64, na_value=np.nan)
    ys = ctx.table[y].to_numpy(dtype=np.float64, na_value=np.nan)
    drawable = ctx.mask & np.isfinite(xs) & np.isfinite(ys)
    priority = ctx.flagged | _extremes(ctx.key, tuple(extreme_columns), EXTREME_K, ctx.table)
    rows = F.plot_sample(drawable, max_points=max_points, priority=priority & drawable, seed=0)
    return PlotPoints(rows=np.sort(np.asarray(rows, dtype=np.int64)), xs=xs[drawable], ys=ys[drawable])


@dataclass
class Selection:
    """Examples selected on a map: every filtered row inside the drawn shapes (or clicked)."""

    ids: np.ndarray
    how: str  # "lasso", "box", "points" or ""
    shape: dict[str, Any] | None = None
    """The chart's selection it was resolved from (drawn again when the chart is new)."""

    def __len__(self) -> int:
        return len(self.ids)


def selection_mask(
    ctx: RunContext, event_selection: Any, *, x: str, y: str
) -> tuple[np.ndarray, str]:
    """Resolve a chart selection on the server, over ALL filtered rows.

    ``event_selection`` is what the scatter reports (``dashboard/scatter.js``; the same shape as
    a Plotly selection event): ``{"lasso": [{"x": [...], "y": [...]}], "box": [{"x": [x0, x1],
    "y": [y0, y1]}], "points": [{"customdata": id}]}``, each key optional.

    Lasso polygons and boxes are applied to every filtered row (the chart draws only a sample);
    clicked points are taken by the ``example_id`` in their ``customdata``.

    Returns
    -------
    mask : bool array (n_examples,)
    how : str
        ``"lasso"``, ``"box"``, ``"points"`` or ``""`` when nothing is selected.
    """
    assert ctx.table is not None and ctx.mask is not None
    n = len(ctx.table)
    out = np.zeros(n, dtype=bool)
    if not event_selection:
        return out, ""
    lassos = list(event_selection.get("lasso") or [])
    boxes = list(event_selection.get("box") or [])
    how = []
    if lassos or boxes:
        xs = ctx.table[x].to_numpy(dtype=np.float64, na_value=np.nan)
        ys = ctx.table[y].to_numpy(dtype=np.float64, na_value=np.nan)
        cand_all = ctx.mask & np.isfinite(xs) & np.isfinite(ys)
        for lasso in lassos:
            px_, py_ = np.asarray(lasso.get("x", []), float), np.asarray(lasso.get("y", []), float)
            if len(px_) < 3:
                continue
            # bounding-box prefilter, then the exact polygon test on the candidates only
            cand = cand_all & (xs >= px_.min()) & (xs <= px_.max()) & (ys >= py_.min()) & (ys <= py_.max())
            idx = np.flatnonzero(cand)
            if idx.size:
                inside = np.asarray(
                    F.points_in_polygon(xs[idx], ys[idx], np.column_stack([px_, py_])), dtype=bool
                )
                out[idx[inside]] = True
            how.append("lasso")
        for box in boxes:
            bx, by = box.get("x", []), box.get("y", [])
            if len(bx) < 2 or len(by) < 2:
                continue
            inside = np.asarray(
                F.points_in_box(xs, ys, (min(bx), max(bx)), (min(by), max(by))), dtype=bool
            )
            out |= inside & cand_all
            how.append("box")
    if not how:
        points = event_selection.get("points") or []
        ids = []
        for p in points:
            cd = p.get("customdata")
            if isinstance(cd, list | tuple):
                cd = cd[0] if cd else None
            if cd is not None:
                ids.append(cd)
        if ids:
            id_col = ctx.table[S.EXAMPLE_ID]
            wanted = pd.Index(ids).astype(id_col.dtype, copy=False) if _castable(ids, id_col) else pd.Index(ids)
            out = id_col.isin(wanted).to_numpy() & ctx.mask
            how.append("points")
    return out, "+".join(dict.fromkeys(how))


def _castable(ids: list[Any], col: pd.Series) -> bool:
    try:
        pd.Index(ids).astype(col.dtype)
        return True
    except (TypeError, ValueError):
        return False


# ---- one example ----------------------------------------------------------------------------------


def _dynamics_key(run_dir: Path) -> tuple[str, int, int] | None:
    d = run_dir / S.DYNAMICS_DIR
    if not d.is_dir():
        return None
    files = sorted(d.glob("*.parquet"))
    if not files:
        return None
    return (str(d.resolve()), max(f.stat().st_mtime_ns for f in files), sum(f.stat().st_size for f in files))


@st.cache_resource(max_entries=1, show_spinner="Indexing the training dynamics (once per run)…")
def _dynamics_index(key: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(example ids sorted, epoch, gold_prob) of the whole dynamics dataset, sorted by id."""
    dyn = runstore.load_dynamics(Path(key[0]).parent, columns=[S.GOLD_PROB])
    ids = dyn.column(S.EXAMPLE_ID).to_numpy(zero_copy_only=False)
    order = np.argsort(ids, kind="stable")
    epoch = dyn.column(S.EPOCH).to_numpy(zero_copy_only=False)[order]
    gold = dyn.column(S.GOLD_PROB).to_numpy(zero_copy_only=False)[order]
    return ids[order], epoch, gold


def trajectory(run_dir: str | os.PathLike[str], example_id: Any) -> pd.DataFrame | None:
    """p(gold) per epoch of one example (``epoch``, ``gold_prob``), or None without dynamics."""
    key = _dynamics_key(Path(run_dir))
    if key is None:
        return None
    try:
        ids, epoch, gold = _dynamics_index(key)
    except (S.SchemaError, OSError, KeyError):
        return None
    try:
        probe = np.asarray([example_id]).astype(ids.dtype)
    except (TypeError, ValueError):
        return None
    lo, hi = np.searchsorted(ids, probe[0], side="left"), np.searchsorted(ids, probe[0], side="right")
    if hi <= lo:
        return None
    return pd.DataFrame({S.EPOCH: epoch[lo:hi], S.GOLD_PROB: gold[lo:hi]}).sort_values(S.EPOCH)


@st.cache_resource(max_entries=2, show_spinner=False)
def _has_projection(key: RunKey | None, _table: pd.DataFrame) -> bool:
    if S.UMAP_X not in _table.columns or S.UMAP_Y not in _table.columns:
        return False
    x = _table[S.UMAP_X].to_numpy(dtype=np.float64, na_value=np.nan)
    y = _table[S.UMAP_Y].to_numpy(dtype=np.float64, na_value=np.nan)
    return bool((np.isfinite(x) & np.isfinite(y)).any())


def has_projection(key: RunKey | None, table: pd.DataFrame) -> bool:
    """Whether the table holds a 2-D projection: ``umap_x``/``umap_y`` with at least one finite
    point (a run analysed without features has the columns, all NaN)."""
    return _has_projection(key, table)


# ---- OOD -----------------------------------------------------------------------------------------


def ood_columns(table: pd.DataFrame) -> list[str]:
    """The OOD score columns present (every one oriented higher = more anomalous)."""
    known = [S.OOD_MSP, S.OOD_MAXLOGIT, S.OOD_ENERGY, S.OOD_MAHALANOBIS, S.OOD_RMD, S.OOD_KNN]
    present = [c for c in known if c in table.columns]
    extra = [
        c for c in table.columns
        if c.startswith(S.OOD_PREFIX) and c not in present and pd.api.types.is_numeric_dtype(table[c])
        and not pd.api.types.is_bool_dtype(table[c])
    ]
    return present + extra


def load_ood_eval(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``RUN_DIR/ood_eval.json`` written by ``datamap analyze``, or None when absent/unreadable."""
    from analysis.ood_eval import load_ood_eval as read_checked

    try:
        return read_checked(run_dir)
    except S.SchemaError:
        return None  # the OOD page says the file is ignored (ood_eval_problem)


def ood_eval_problem(run_dir: str | os.PathLike[str]) -> str | None:
    """Why ``ood_eval.json`` is ignored, or None when it is absent or fine."""
    from analysis.ood_eval import load_ood_eval as read_checked

    try:
        read_checked(run_dir)
    except S.SchemaError as exc:
        return str(exc)
    return None


def best_ood_score(scores: Sequence[str], evaluation: dict[str, Any] | None) -> str:
    """The score to show first: best overall AUROC in ``ood_eval.json``, else the first listed."""
    best, best_auc = scores[0], -1.0
    metrics = (evaluation or {}).get("metrics") or {}
    for col in scores:
        auc = ((metrics.get(col) or {}).get("overall") or {}).get("auroc")
        if isinstance(auc, int | float) and auc > best_auc:
            best, best_auc = col, float(auc)
    return best


@st.cache_resource(max_entries=3, show_spinner=False)
def ood_truth_all(key: RunKey, _table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(evaluated rows, is_ood) over every row of the run (cached per run identity)."""
    from analysis.ood_eval import ood_ground_truth

    truth = ood_ground_truth(_table)
    return truth.notna().to_numpy(), (truth == True).fillna(False).to_numpy(dtype=bool)  # noqa: E712


@st.cache_data(max_entries=4, show_spinner="Evaluating the OOD scores…")
def ood_metrics(key: RunKey, columns: tuple[str, ...], _table: pd.DataFrame) -> dict[str, Any]:
    """:func:`analysis.ood_eval.evaluate_ood` over the whole table (when ood_eval.json is absent)."""
    import warnings

    from analysis.ood_eval import evaluate_ood

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_ood(_table, list(columns))


@st.cache_data(max_entries=16, show_spinner="Computing ROC and PR curves…")
def ood_curves(key: RunKey, score: str, group: str, _scores: np.ndarray, _is_ood: np.ndarray) -> dict[str, Any]:
    """ROC and PR curve points for one score (OOD positive), thinned to at most ~500 points.

    Computed by :func:`analysis.ood_eval.ood_curves`; cached per run, score and group.
    """
    from analysis.ood_eval import ood_curves as _curves

    return _curves(_scores, _is_ood)


# ---- images --------------------------------------------------------------------------------------


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
"""File types an ``image`` path may name (anything else is not read)."""
MAX_IMAGE_FILE_BYTES = 20 * 2**20
"""Image files larger than this are not read (20 MiB)."""
MAX_IMAGE_PIXELS = 40_000_000
"""Images with more pixels than this are not decoded (a small file can hold a huge image)."""
THUMBNAIL_PX = 96
"""Table thumbnails are at most this many pixels on a side."""


def _image_path(value: str, run_dir: str | os.PathLike[str] | None) -> tuple[Path, os.stat_result] | None:
    """The image file an ``image`` cell names (absolute, or relative to the run) and its stat,
    or None when it is not a readable file with an image suffix of at most the size limit."""
    try:
        path = Path(value).expanduser()
        if not path.is_absolute():
            if run_dir is None:
                return None
            path = Path(run_dir) / path
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            return None
        stat = path.stat()
    except (OSError, ValueError, RuntimeError):  # unreadable, a NUL byte, "~unknown-user"
        return None
    return (path, stat) if stat.st_size <= MAX_IMAGE_FILE_BYTES else None


def _cell_path(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
        return str(value["path"])  # an HF Image cell without bytes
    if isinstance(value, str | os.PathLike):
        return os.fspath(value)
    return None


def image_bytes(value: Any, run_dir: str | os.PathLike[str] | None = None) -> bytes | None:
    """The stored bytes of an ``image`` cell (encoded: PNG, JPEG, ...), or None.

    The cell holds the bytes, a Hugging Face ``Image`` dict (``{"bytes": ..., "path": ...}``), or
    a path to an image file: absolute, or relative to ``run_dir``. A path is read only when it
    names a file with an image suffix (:data:`IMAGE_SUFFIXES`) of at most
    :data:`MAX_IMAGE_FILE_BYTES`. The bytes are not decoded here: see :func:`image_for_display`.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict) and value.get("bytes") is not None:
        return bytes(value["bytes"])
    path = _cell_path(value)
    found = _image_path(path, run_dir) if path is not None else None
    if found is None:
        return None
    try:
        return found[0].read_bytes()
    except OSError:
        return None


def _mime(data: bytes) -> str | None:
    """The image type of encoded bytes from their signature, or None when not an image we know."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    return None


_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
"""PIL modes with more than 8 bits per sample (a browser may show them wrongly)."""


def _decode(data: bytes, max_side: int | None) -> tuple[Any, bool] | None:
    """``(image, wide)``: a displayable 8-bit PIL image of encoded bytes (at most ``max_side``
    pixels on a side) and whether the stored pixels had more than 8 bits; None when they do not
    decode or hold more than :data:`MAX_IMAGE_PIXELS` pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                return None
            if max_side is not None:
                img.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
            img.load()
            wide = img.mode in _WIDE_MODES
            if wide:
                # 16-bit or float pixels: stretch to 8 bits (a plain convert would clip to white)
                arr = np.asarray(img, dtype=np.float64)
                finite = arr[np.isfinite(arr)]
                lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
                scaled = (np.nan_to_num(arr, nan=lo) - lo) / (hi - lo if hi > lo else 1.0)
                out = Image.fromarray((np.clip(scaled, 0, 1) * 255).astype(np.uint8), mode="L")
            elif img.mode not in ("RGB", "RGBA", "L", "LA"):
                out = img.convert("RGBA" if "A" in img.getbands() or img.mode == "P" else "RGB")
            else:
                out = img.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    if max_side is not None:
        out.thumbnail((max_side, max_side))
    return out, wide


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_for_display(value: Any, run_dir: str | os.PathLike[str] | None = None) -> bytes | None:
    """Bytes ``st.image`` can show for an ``image`` cell, or None (no image, or it does not decode).

    The stored bytes when they decode and are 8-bit; else a PNG of the decoded pixels (16-bit or
    float images stretched to 8 bits).
    """
    data = image_bytes(value, run_dir)
    decoded = _decode(data, None) if data is not None else None
    if data is None or decoded is None:
        return None
    img, wide = decoded
    return data if _mime(data) is not None and not wide else _png(img)


def _thumbnail(data: bytes) -> tuple[bytes, str] | None:
    """``(bytes, mime)`` small enough for a table cell: the image itself when small and 8-bit,
    else a PNG of at most :data:`THUMBNAIL_PX` pixels on a side; None when it does not decode."""
    decoded = _decode(data, THUMBNAIL_PX)
    if decoded is None:
        return None
    img, wide = decoded
    mime = _mime(data)
    if mime is not None and len(data) <= 16_384 and not wide:
        return data, mime
    return _png(img), "image/png"


def _data_url(data: bytes | None) -> str | None:
    import base64

    thumb = _thumbnail(data) if data is not None else None
    return None if thumb is None else f"data:{thumb[1]};base64," + base64.b64encode(thumb[0]).decode()


@st.cache_resource(max_entries=4096, show_spinner=False)
def _file_thumbnail_url(path: str, mtime_ns: int, size: int) -> str | None:
    """The thumbnail data URL of an image file (a few KB), cached by path and modification."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return _data_url(data)


@st.cache_resource(max_entries=8192, show_spinner=False)
def _row_thumbnail_url(key: RunKey, row: int, _value: Any) -> str | None:
    """The thumbnail data URL of an image stored in the table, cached by run and row (the
    table of a run key never changes): a 100 KB photo takes ~2.5 ms to shrink, every rerun."""
    return _data_url(image_bytes(_value))


def image_data_urls(
    values: pd.Series,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    key: RunKey | None = None,
    rows: Sequence[int] | np.ndarray | None = None,
) -> list[str | None]:
    """``data:`` URLs of small thumbnails for a table's image column (None where there is none).

    Thumbnails of image files are cached by path, modification time and size; those of images
    stored in the table by run ``key`` and table ``rows`` (positions of ``values``) when given.
    """
    if rows is not None and len(rows) != len(values):
        raise ValueError(f"Expected one row position per value ({len(values)}), got {len(rows)}.")
    out: list[str | None] = []
    for i, v in enumerate(values):
        path = _cell_path(v)
        if path is not None:
            found = _image_path(path, run_dir)
            out.append(None if found is None else _file_thumbnail_url(
                str(found[0]), found[1].st_mtime_ns, found[1].st_size))
        elif key is not None and rows is not None:
            out.append(_row_thumbnail_url(key, int(rows[i]), v))
        else:
            out.append(_data_url(image_bytes(v, run_dir)))
    return out
