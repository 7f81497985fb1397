"""Streamlit widget code shared by the pages: ``render_*`` functions.

The sidebar filters, the linked map → selection table → example view, and the flag form live
here so every page behaves the same. Figures come from :mod:`dashboard.figures`, the maps'
specs from :mod:`dashboard.scatter` (drawn by ``scatter.js``), data from :mod:`dashboard.data`;
widget keys from :mod:`dashboard.state`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from analysis import diagnosis as DG
from analysis import filters as F
from analysis import flags as FL
from analysis import schema as S
from analysis.dynamics import RegionThresholds
from dashboard import data as D
from dashboard import evidence_view as EV
from dashboard import figures as FIG
from dashboard import scatter as SC
from dashboard import state as K
from dashboard.bulk_actions import render_bulk_actions
from dashboard.gallery import render_gallery
from dashboard.text import code, md

RANGE_COLUMNS = (S.CONFIDENCE, S.VARIABILITY, S.CORRECTNESS)
"""Metrics with a range slider in the sidebar (besides the OOD score)."""
TABLE_ROWS = 1_000
"""Rows a selection table shows at most (exports take all of them)."""
NONE_FLAG = "(no flag)"
KEEP_LABEL = "(keep the original label)"

_HERE = Path(__file__).resolve().parent
SCATTER = st.components.v2.component(
    "datamap_scatter",
    js=(_HERE / "scatter.js").read_text(encoding="utf-8"),
    css=(_HERE / "scatter.css").read_text(encoding="utf-8"),
)
"""The maps' chart: a canvas scatter with lasso, box and click selection (``scatter.js``)."""
SVG = st.components.v2.component(
    "datamap_svg",
    js="""export default function ({ data, parentElement }) {
  let box = parentElement.querySelector(".dm-svg");
  if (!box) {
    box = document.createElement("div");
    box.className = "dm-svg";
    parentElement.appendChild(box);
  }
  if (box.__svg !== data) { box.innerHTML = data; box.__svg = data; }
}""",
    css=".dm-svg { color: var(--st-text-color, #31333f); line-height: 0; }",
)
"""Shows an SVG built by :mod:`dashboard.figures` (which escapes any text from the data).
``st.html`` drops SVG (its sanitiser allows HTML only); an ``st.image`` of it would lose the
theme's text colour and the marks' tooltips."""


# ---- context -------------------------------------------------------------------------------------


def get_context() -> D.RunContext:
    """The context the router built for this rerun; shows the load error and stops if any."""
    ctx: D.RunContext | None = st.session_state.get(K.CONTEXT)
    if ctx is None:
        st.error("No run is loaded. Start the dashboard with `datamap serve RUN_DIR`.")
        st.stop()
    if ctx.table is None or ctx.error:
        st.error(md(ctx.error, limit=None) if ctx.error else "The run could not be loaded.")
        st.stop()
    flash = st.session_state.pop(K.FLASH, None)
    if flash:
        st.toast(flash, icon="✅")
    return ctx


# ---- sidebar ---------------------------------------------------------------------------------------


def _kept() -> dict[str, Any]:
    return st.session_state.setdefault(K.KEPT, {})  # type: ignore[no-any-return]


def _is_open(expander: Any) -> bool:
    """Whether a lazily rendered expander is open (any other container counts as open)."""
    return bool(getattr(expander, "open", True))


def _kept_widget(show: bool, key: str, default: Any, render: Callable[[Any], Any]) -> Any:
    """The value of a widget inside a lazily rendered expander.

    Rendered (``show``): the widget starts from the kept value when Streamlit has forgotten it,
    and its value is kept. Not rendered: the kept value (else ``default``).
    """
    kept = _kept()
    if not show:
        return kept.get(key, default)
    value = render(None if key in st.session_state else kept.get(key, default))
    kept[key] = value
    return value


def kept_expander(label: str, key: str) -> Any:
    """A sidebar ``st.expander(..., on_change="rerun")`` that stays open or closed across page
    switches.

    Streamlit gives a widget on another page another identity, which starts at its default
    (closed): the state is therefore kept in :data:`dashboard.state.EXPANDERS_OPEN` too and
    assigned to the widget's key before it is created, which the new identity takes up.
    """
    kept: dict[str, bool] = st.session_state.setdefault(K.EXPANDERS_OPEN, {})
    st.session_state[key] = bool(st.session_state.get(key, kept.get(key, False)))
    box = st.expander(label, key=key, on_change="rerun")
    kept[key] = _is_open(box)
    return box


def render_thresholds(container: Any, run_dir: Path) -> RegionThresholds:
    """Region threshold sliders (the data map regions are recomputed at these values), starting
    at the thresholds the analysis used (:func:`dashboard.data.analysis_thresholds`).

    ``container`` may be an ``st.expander(..., on_change="rerun")``: the sliders are then
    rendered only while it is open, and the thresholds are kept while it is closed.
    """
    start, _ = D.analysis_thresholds(run_dir)
    show = _is_open(container)
    with container:
        conf = _kept_widget(show, K.W_CONF_THRESHOLD, start.confidence, lambda v: st.slider(
            "confidence threshold", 0.0, 1.0, v, 0.01, key=K.W_CONF_THRESHOLD,
            help="Left of the variability threshold: easy-to-learn at or above, hard-to-learn below.",
        ))
        var = _kept_widget(show, K.W_VAR_THRESHOLD, start.variability, lambda v: st.slider(
            "variability threshold", 0.0, 0.5, v, 0.01, key=K.W_VAR_THRESHOLD,
            help="At or above: ambiguous.",
        ))
    return RegionThresholds(confidence=float(conf), variability=float(var))


def _analysis_values(run_dir: Path) -> dict[str, float]:
    """Widget key → the value the analysis used, for every threshold slider of the run."""
    region, _ = D.analysis_thresholds(run_dir)
    values = {K.W_CONF_THRESHOLD: region.confidence, K.W_VAR_THRESHOLD: region.variability}
    settings = D.diagnosis_settings(run_dir)
    if settings is not None and settings[0] is not None:
        values[K.W_OOD_QUANTILE] = settings[1].ood_quantile
    return values


def _reset_thresholds(values: dict[str, float]) -> None:
    """Put the threshold sliders back to ``values`` (assigned, so the browser is sent them)."""
    kept = _kept()
    for key, value in values.items():
        kept[key] = value
        st.session_state[key] = value


def render_threshold_reset(
    container: Any, run_dir: Path, thresholds: RegionThresholds, ood_quantile: float | None,
) -> None:
    """"Reset to analysis values": the thresholds ``datamap analyze`` used (``ood_eval.json``)."""
    if not _is_open(container):
        return
    values = _analysis_values(run_dir)
    current = {K.W_CONF_THRESHOLD: thresholds.confidence, K.W_VAR_THRESHOLD: thresholds.variability,
               K.W_OOD_QUANTILE: ood_quantile}
    changed = any(current.get(key) is None or abs(float(current[key]) - value) > 1e-9  # type: ignore[arg-type]
                  for key, value in values.items())
    _, recorded = D.analysis_thresholds(run_dir)
    with container:
        st.button(
            "Reset to analysis values", key=K.W_RESET_THRESHOLDS, width="stretch", disabled=not changed,
            on_click=_reset_thresholds, args=(values,),
            help="Back to the thresholds `datamap analyze` used: "
                 + ", ".join(f"{name} {values[key]:g}" for key, name in (
                     (K.W_CONF_THRESHOLD, "confidence"), (K.W_VAR_THRESHOLD, "variability"),
                     (K.W_OOD_QUANTILE, "OOD quantile")) if key in values)
                 + ("" if recorded else " (this run does not record its region thresholds: "
                    "those are the defaults of `datamap analyze`)") + ".",
        )


def render_ood_quantile(container: Any, run_dir: Path) -> float | None:
    """The diagnosis' OOD quantile slider (in the same lazily rendered expander), starting at the
    quantile ``datamap analyze`` used; None when the run does not record its diagnosis."""
    settings = D.diagnosis_settings(run_dir)
    if settings is None or settings[0] is None:
        return None
    score, th = settings
    rows = DG.describe_reference((D.load_ood_eval(run_dir) or {}).get("diagnosis") or {})
    show = _is_open(container)
    with container:
        q = _kept_widget(show, K.W_OOD_QUANTILE, th.ood_quantile, lambda v: st.slider(
            "OOD quantile (diagnosis)", 0.5, 0.999, v, 0.001, key=K.W_OOD_QUANTILE, format="%.3f",
            help=f"Hard-to-learn and no-dynamics examples whose {code(score)} is above this quantile of "
                 f"{rows} are suspect_ood. Label issues (the run's own "
                 "cut-off) are suspect_mislabeled unless their score is above the "
                 f"{th.learned_ood_quantile:g} quantile; learned examples above it are suspect_ood "
                 f"too. `datamap analyze` used {th.ood_quantile:g}."
                 if th.learned_ood_quantile is not None else
                 f"Hard-to-learn and no-dynamics examples whose {code(score)} is above this quantile of "
                 f"{rows} are suspect_ood; label issues (the run's own "
                 f"cut-off) are suspect_mislabeled. `datamap analyze` used {th.ood_quantile:g}.",
        ))
    return float(q)


def diagnosis_cutoff(ctx: D.RunContext) -> dict[str, Any] | None:
    """The diagnosis' ``suspect_ood`` cut-off at the sidebar's OOD quantile: ``column``,
    ``threshold``, ``quantile``, ``held_out`` and :func:`analysis.diagnosis.reference_rows`'
    description (``where``); None when the run does not record its diagnosis."""
    settings = D.diagnosis_settings(ctx.run_dir)
    if settings is None or settings[0] is None or ctx.table is None or settings[0] not in ctx.table.columns:
        return None
    column, th = settings
    q = th.ood_quantile if ctx.ood_quantile is None else float(ctx.ood_quantile)
    values = ctx.table[column].to_numpy(np.float64, na_value=np.nan)
    ref, where = DG.reference_rows(ctx.table, th, values)
    return {"column": column, "threshold": DG.calibrated_threshold(values[ref], q, where),
            "quantile": q, "held_out": where["calibrated_on"] == DG.HELD_OUT, "where": where}


def render_ood_cutoff(cut: dict[str, Any] | None, score: str) -> None:
    """Under the OOD histogram of ``score``: where the diagnosis' cut-off lies (the dashed line
    when ``score`` is the diagnosis' score) and which rows set it; a warning when no held-out
    rows could set it."""
    if cut is None:
        return
    column, q = cut["column"], cut["quantile"]
    st.caption(
        f"The diagnosis calls hard-to-learn and evaluation rows suspect_ood above {cut['threshold']:.4g} "
        f"on {code(column)}" + (" (the dashed line)" if column == score else " (not the score shown)")
        + f": the {q:g} quantile of {DG.describe_reference(cut['where'])}"
        + (f", so at most {1 - q:.1%} of new in-distribution data is flagged." if cut["held_out"] else ".")
    )
    if cut["where"].get("calibration_note"):
        st.warning(f"OOD cut-off: {md(str(cut['where']['calibration_note']), limit=None)}.")


@st.cache_resource(max_entries=3, show_spinner=False)
def _filter_options(
    key: D.RunKey, confidence: float, variability: float, ood_quantile: float | None, _table: pd.DataFrame,
) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    opts["splits"] = sorted(_table[S.SPLIT].astype(str).unique().tolist())
    if S.LABEL in _table.columns:
        labs = _table[S.LABEL].dropna().unique()
        opts["labels"] = sorted(int(v) for v in labs)
    else:
        opts["labels"] = []
    opts["regions"] = [r for r in S.REGIONS if (_table[S.REGION].astype(str) == r).any()] if S.REGION in _table.columns else []
    opts["diagnoses"] = (
        sorted(_table[S.DIAGNOSIS].dropna().astype(str).unique().tolist())
        if S.DIAGNOSIS in _table.columns else []
    )
    ranges = {}
    for col in (*RANGE_COLUMNS, *D.ood_columns(_table)):
        if col in _table.columns:
            v = _table[col].to_numpy(dtype=np.float64, na_value=np.nan)
            v = v[np.isfinite(v)]
            if v.size:
                ranges[col] = (float(v.min()), float(v.max()))
    opts["ranges"] = ranges
    return opts


_FILTER_DEFAULTS: dict[str, Any] = {
    K.W_SPLITS: [],
    K.W_LABELS: [],
    K.W_REGIONS: [],
    K.W_DIAGNOSES: [],
    K.W_FLAGGED: "any",
    K.W_FLAG_VALUES: [],
    K.W_SEARCH: "",
}


def _reset_filters() -> None:
    """Put every filter widget back to its default.

    Values are assigned rather than deleted: an assigned value is pushed to the browser, while a
    deleted key can be re-sent by a widget that still holds its old value.
    """
    for key, default in _FILTER_DEFAULTS.items():
        if key in st.session_state:
            st.session_state[key] = default
    full = st.session_state.get(K.RANGE_DEFAULTS, {})
    for key in list(st.session_state.keys()):
        if str(key).startswith(K.W_RANGE_PREFIX) and key in full:
            st.session_state[key] = full[key]
    kept = _kept()
    for key in list(kept):
        if key.startswith(K.W_RANGE_PREFIX) or key == K.W_OOD_SCORE:
            del kept[key]


def _range_slider(
    label: str, col: str, lo: float, hi: float, *, help: str | None = None, show: bool = True,
) -> tuple[float, float] | None:
    """A range slider over ``[lo, hi]``; returns the range when it is narrower than the full one.

    With ``show=False`` nothing is rendered and the kept value of the slider applies.
    """
    if hi <= lo:
        return None
    step = float(10 ** (np.floor(np.log10(hi - lo)) - 2))
    lo_r, hi_r = float(np.floor(lo / step) * step), float(np.ceil(hi / step) * step)
    key = K.W_RANGE_PREFIX + col
    st.session_state.setdefault(K.RANGE_DEFAULTS, {})[key] = (lo_r, hi_r)
    # the default only for a new widget: "Reset filters" sets the value through session state
    value = _kept_widget(show, key, (lo_r, hi_r), lambda v: st.slider(
        label, lo_r, hi_r, v, step=step, key=key, help=help))
    if value[0] <= lo_r and value[1] >= hi_r:
        return None
    return (float(value[0]), float(value[1]))


def render_filters(container: Any, ctx: D.RunContext) -> Any:
    """Sidebar filters; returns the :class:`analysis.filters.FilterSpec` they describe."""
    assert ctx.table is not None and ctx.key is not None
    opts = _filter_options(ctx.key, ctx.thresholds.confidence, ctx.thresholds.variability, ctx.ood_quantile,
                           ctx.table)
    with container:
        st.subheader("Filters")
        splits = st.multiselect("split", opts["splits"], key=K.W_SPLITS, placeholder="all splits")
        labels = st.multiselect(
            "class (given label)", opts["labels"], key=K.W_LABELS, placeholder="all classes",
            format_func=ctx.class_name,
        )
        regions = st.multiselect("region", opts["regions"], key=K.W_REGIONS, placeholder="all regions")
        diagnoses: list[str] = []
        if opts["diagnoses"]:
            diagnoses = st.multiselect(
                "diagnosis", opts["diagnoses"], key=K.W_DIAGNOSES, placeholder="all diagnoses"
            )
        ranges: dict[str, tuple[float, float]] = {}
        # rendered only while open (its five widgets cost ~0.4 s of browser time on every page
        # load); the ranges set in it are kept while it is closed
        box = kept_expander("metric ranges", K.W_EXPAND_RANGES)
        show = _is_open(box)
        with box:
            for col in RANGE_COLUMNS:
                if col in opts["ranges"]:
                    r = _range_slider(col, col, *opts["ranges"][col], show=show)
                    if r is not None:
                        ranges[col] = r
            ood_cols = [c for c in D.ood_columns(ctx.table) if c in opts["ranges"]]
            if ood_cols:
                score = _kept_widget(show, K.W_OOD_SCORE, ood_cols[0], lambda v: st.selectbox(
                    "OOD score", ood_cols, index=ood_cols.index(v) if v in ood_cols else 0,
                    key=K.W_OOD_SCORE))
                if score not in ood_cols:
                    score = ood_cols[0]
                r = _range_slider(f"{score} range", score, *opts["ranges"][score],
                                  help="Higher = more anomalous.", show=show)
                if r is not None:
                    ranges[score] = r
            elif show:
                st.caption("No OOD scores in this run.")
        flagged = st.radio(
            "flags", ["any", "flagged", "unflagged"], horizontal=True, key=K.W_FLAGGED,
        )
        flag_values: list[str] = []
        if flagged == "flagged":
            flag_values = st.multiselect("flag values", list(FL.FLAG_VALUES), key=K.W_FLAG_VALUES,
                                         placeholder="any flag")
        search = st.text_input("search id / text", key=K.W_SEARCH, placeholder="example id or text")
        exact = F.exact_id_row(ctx.table, search) if search.strip() else None
        if exact is not None:
            exact_id = ctx.table[S.EXAMPLE_ID].iloc[exact]
            if st.button(f"Open example {exact_id}", key="w_open_exact_id", width="stretch",
                         help="The search matches ids and text as substrings; this opens the "
                              "example whose id is exactly what you typed (on the Data map)."):
                _open_on_data_map(exact_id)
    # an empty multiselect means "no criterion" (None), not "keep nothing" ([])
    spec = F.FilterSpec(
        splits=list(splits) or None,
        labels=[int(v) for v in labels] or None,
        regions=list(regions) or None,
        diagnoses=list(diagnoses) or None,
        ranges=ranges,
        flagged=flagged,
        flag_values=list(flag_values) or None,
        search=search.strip() or None,
    )
    return spec


def _open_on_data_map(example_id: Any) -> None:
    """Select one example on the Data map (as a click on its point would) and go there."""
    plain = example_id.item() if hasattr(example_id, "item") else example_id
    shape = {"points": [{"customdata": plain}]}
    st.session_state.setdefault(K.SELECTION, {})["data_map"] = D.Selection(
        ids=np.asarray([example_id]), how="points", shape=shape)
    generations = st.session_state.setdefault(K.CHART_GENERATION, {})
    generations["data_map"] = generations.get("data_map", 0) + 1  # a new chart shows the point
    st.switch_page(str(_HERE / "app_pages" / "data_map.py"))


def render_filter_summary(container: Any, ctx: D.RunContext) -> None:
    """The current filter in words, the counts, and the reset button."""
    with container:
        st.metric("examples shown", f"{ctx.n_filtered:,}", help=f"of {ctx.n_total:,} in the run")
        if ctx.spec is not None and not ctx.spec.is_empty():
            st.caption(f"Filter: {md(ctx.spec.describe(), limit=None)}")
        else:
            st.caption("Filter: none (every example)")
        st.button("Reset filters", on_click=_reset_filters, width="stretch",
                  disabled=ctx.spec is None or ctx.spec.is_empty())


# ---- tables ----------------------------------------------------------------------------------------


def display_frame(ctx: D.RunContext, rows: np.ndarray, *, extra: Sequence[str] = ()) -> pd.DataFrame:
    """A readable frame of ``rows`` (positions): names instead of codes, flags, thumbnails."""
    assert ctx.table is not None
    t = ctx.table
    sub = t.iloc[rows]
    out = pd.DataFrame(index=range(len(sub)))
    out[S.EXAMPLE_ID] = sub[S.EXAMPLE_ID].to_numpy()
    if S.IMAGE in sub.columns:
        out[S.IMAGE] = D.image_data_urls(sub[S.IMAGE], ctx.run_dir, key=ctx.key, rows=rows)
    out[S.SPLIT] = sub[S.SPLIT].astype(str).to_numpy()
    if S.LABEL in sub.columns:
        out["label"] = [ctx.class_name(v) for v in sub[S.LABEL].tolist()]
    if S.FINAL_PRED in sub.columns:
        out["prediction"] = [ctx.class_name(v) for v in sub[S.FINAL_PRED].tolist()]
    for col in (S.CONFIDENCE, S.VARIABILITY, S.CORRECTNESS, *extra, S.REGION, S.DIAGNOSIS):
        if col in sub.columns and col not in out.columns:
            out[col] = sub[col].to_numpy()
    if FL.FLAG in sub.columns:
        out[FL.FLAG] = sub[FL.FLAG].astype(object).where(sub[FL.FLAG].notna(), None).to_numpy()
    if FL.NEW_LABEL in sub.columns:
        out["relabel"] = [None if pd.isna(v) else ctx.class_name(v) for v in sub[FL.NEW_LABEL].tolist()]
    if S.TEXT in sub.columns and S.IMAGE not in sub.columns:
        out[S.TEXT] = sub[S.TEXT].astype(object).to_numpy()
    return out


def _column_config(frame: pd.DataFrame) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    if S.IMAGE in frame.columns:
        cfg[S.IMAGE] = st.column_config.ImageColumn("image", width="small")
    for col in frame.columns:
        if pd.api.types.is_float_dtype(frame[col]):
            cfg[col] = st.column_config.NumberColumn(col, format="%.3f")
    return cfg


def render_selection_table(
    ctx: D.RunContext, rows: np.ndarray, *, key: str, extra: Sequence[str] = (), height: int = 320,
) -> Any | None:
    """A table of the examples at ``rows``; returns the ``example_id`` of the clicked row, or None."""
    shown = rows[:TABLE_ROWS]
    frame = display_frame(ctx, shown, extra=extra)
    if len(rows) > TABLE_ROWS:
        st.caption(f"Showing the first {TABLE_ROWS:,} of {len(rows):,} examples; the export takes all.")
    event = st.dataframe(
        frame,
        key=key,
        on_select="rerun",
        selection_mode="single-row",
        hide_index=True,
        column_config=_column_config(frame),
        height=height,
        width="stretch",
    )
    sel_rows = list(event["selection"]["rows"]) if event is not None else []
    if sel_rows and sel_rows[0] < len(frame):
        return frame[S.EXAMPLE_ID].iloc[sel_rows[0]]
    return None


# ---- one example -------------------------------------------------------------------------------------


def _row_of(ctx: D.RunContext, example_id: Any) -> int | None:
    assert ctx.table is not None
    hits = np.flatnonzero((ctx.table[S.EXAMPLE_ID] == example_id).to_numpy())
    return int(hits[0]) if hits.size else None


def _fmt(v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, float | np.floating):
        # three decimals, or three significant digits for very large or very small values, so
        # that no number is wider than a narrow column
        return f"{v:.3g}" if v != 0 and not 1e-3 <= abs(v) < 1e4 else f"{v:.3f}"
    return str(v)


FACTS_CSS = (
    "<style>[class*='st-key-dm_facts'] th { white-space: nowrap; }"
    "[class*='st-key-dm_facts'] td { white-space: normal; overflow-wrap: anywhere; }</style>"
)
"""CSS: the example view's facts wrap their values inside the column (a narrow window cut them)."""


def _fact(v: Any) -> str:
    """A fact of the example view as text that wraps at its underscores (a zero-width space
    after each), so `suspect_mislabeled` breaks into words in a narrow column, not mid-word."""
    return _fmt(v).replace("_", "_\u200b")


def render_example_view(ctx: D.RunContext, example_id: Any, *, key: str) -> None:
    """One example: image or text, label, prediction, metrics, p(gold) trajectory, flag form."""
    row = _row_of(ctx, example_id)
    if row is None:
        st.warning(f"Example {md(repr(example_id))} is not in the table.")
        return
    assert ctx.table is not None
    r = ctx.table.iloc[row]
    with st.container(border=True):
        st.markdown(f"#### Example {code(example_id)}")
        # at 1024 px the facts need ~210 px: the image (a thumbnail) gives up some width
        left, mid, right = st.columns([0.8, 1.9, 1.9])
        with left:
            stored = r.get(S.IMAGE) if S.IMAGE in ctx.table.columns else None
            img = D.image_for_display(stored, ctx.run_dir) if stored is not None else None
            if img is not None:
                # as wide as its column, never wider: at 1024 px the column is narrower than 160 px
                st.image(img, width="stretch", caption=f"split {md(r[S.SPLIT])}")
            elif stored is not None and not (isinstance(stored, float) and np.isnan(stored)):
                st.caption(f"The image of this example could not be read or decoded ({md(_fmt(stored)[:80])}).")
            elif S.TEXT in ctx.table.columns and isinstance(r.get(S.TEXT), str):
                st.text_area("text", r[S.TEXT], height=160, disabled=True, key=f"{key}_text_{example_id}")
            else:
                st.caption("No image or text stored for this example.")
        with mid:
            facts = {
                "split": r.get(S.SPLIT),
                "label": ctx.class_name(r.get(S.LABEL)),
                "prediction": ctx.class_name(r.get(S.FINAL_PRED)) if S.FINAL_PRED in ctx.table.columns else None,
                "region": r.get(S.REGION),
                "diagnosis": r.get(S.DIAGNOSIS),
            }
            for name in (S.CONFIDENCE, S.VARIABILITY, S.CORRECTNESS, S.FORGETTING, S.AUM, S.EL2N_MEAN):
                if name in ctx.table.columns:
                    facts[name] = r.get(name)
            for name in D.ood_columns(ctx.table):
                facts[name] = r.get(name)
            # a static table: every row on the page, no inner scroll hiding the OOD scores; its
            # values wrap (FACTS_CSS) rather than being cut in a narrow window
            st.html(FACTS_CSS)
            with st.container(key=f"dm_facts_{key}"):
                st.table(pd.DataFrame({"value": [_fact(v) for v in facts.values()]}, index=list(facts.keys())))
        with right:
            traj = D.trajectory(ctx.run_dir, example_id)
            if traj is None or traj.empty:
                st.info("No training dynamics recorded for this example (evaluation or OOD split).")
            else:
                conf = r.get(S.CONFIDENCE)
                SVG(data=FIG.trajectory_svg(traj, confidence=None if pd.isna(conf) else float(conf)),
                    key=f"{key}_traj")
        suggested = EV.suggested_label(ctx, row)
        suspect = str(r.get(S.DIAGNOSIS)) == DG.SUSPECT_MISLABELED
        with st.expander("Evidence: nearest training examples, typical examples of the given and "
                         "the suggested class", expanded=suspect):
            EV.render_evidence(ctx, example_id, row, suggested=suggested)
        given = r.get(S.LABEL)
        preselect = (suggested if suspect and suggested is not None and not pd.isna(given)
                     and int(given) != suggested else None)
        render_flag_form(ctx, example_id, r, key=f"{key}_flag", suggested=preselect)


def _plain(example_id: Any) -> Any:
    return example_id.item() if hasattr(example_id, "item") else example_id


def _describe_edits(rows: pd.DataFrame, ctx: D.RunContext) -> str:
    """One line per journal row: who, when (UTC) and what it set."""
    lines = []
    for rec in rows.to_dict("records"):
        parts = []
        if isinstance(rec[FL.FLAG], str):
            parts.append(f"flag {rec[FL.FLAG] or 'cleared'}")
        if not pd.isna(rec[FL.NEW_LABEL]):
            lab = int(rec[FL.NEW_LABEL])
            parts.append("relabel cleared" if lab < 0 else f"relabel to {ctx.class_name(lab)}")
        if isinstance(rec[FL.NOTE], str):
            parts.append(f"note {rec[FL.NOTE]!r}" if rec[FL.NOTE] else "note cleared")
        who = rec[FL.AUTHOR] or "someone"
        lines.append(f"{who} at {rec[FL.AT]:%H:%M:%S} UTC: {', '.join(parts)}")
    return md("; ".join(lines), limit=600)  # authors and notes are anyone's text


def render_flag_form(
    ctx: D.RunContext, example_id: Any, r: pd.Series, *, key: str, suggested: int | None = None,
) -> None:
    """Flag / relabel / note for one example; each save is written to the journal at once.

    The form edits the state it was opened on (kept in session state with the journal row id it
    reflects). Saving writes the fields the person changed in the form, whatever came in
    meanwhile: an edit is never lost. If another edit of the example landed after the form was
    opened (another session, a script), the save still goes through and the person is told
    what came in between; both stay in the journal's history.

    ``suggested``: a class to preselect in the relabel control when the example has no relabel
    yet (the model's suggestion for a suspect); saving then writes it.
    """
    del r  # the form reads the journal itself: the state and its row id at one instant
    eid = _plain(example_id)
    journal = D.flag_journal(ctx.run_dir)
    bases: dict[str, FL.ExampleState] = st.session_state.setdefault(K.FLAG_FORM_BASE, {})
    notices: dict[str, str] = st.session_state.setdefault(K.FLAG_FORM_NOTICE, {})
    base_key = f"{key}_{example_id}"
    try:
        now = journal.current(eid)
    except (ValueError, TypeError, S.SchemaError) as exc:
        st.error(f"The flags journal could not be read: {md(exc, limit=None)}")
        return
    base = bases.get(base_key)
    if base is None:
        base = bases[base_key] = now
    notice = notices.pop(base_key, None)
    if notice:
        st.warning(notice, icon="⚠️")
    stale = now.last_edit_id != base.last_edit_id
    if stale:
        between = journal.history(eid)
        between = between[between[FL.ROW_ID] > base.last_edit_id]
        warn, reload = st.columns([5, 1], vertical_alignment="center")
        warn.warning(
            "Another edit of this example came in after you opened it "
            f"({_describe_edits(between, ctx)}). The form still shows what you opened; Save writes "
            "the fields you change on top of it (both stay in the history).", icon="⚠️",
        )
        if reload.button("Show the latest", key=f"{base_key}_reload", width="stretch"):
            bases.pop(base_key, None)
            st.rerun()
    n_classes = len(ctx.meta.class_names) if ctx.meta is not None else 0
    flag_opts = [NONE_FLAG, *FL.FLAG_VALUES]
    label_opts: list[Any] = [KEEP_LABEL, *range(n_classes)]
    cur_note = base.note or ""
    # the form's key holds the row id its state reflects: a save or a reload opens a fresh form
    with st.form(key=f"{base_key}_{base.last_edit_id}", border=False):
        c1, c2, c3, c4 = st.columns([1, 1, 2, 0.7], vertical_alignment="bottom")
        flag = c1.selectbox("flag", flag_opts, index=flag_opts.index(base.flag) if base.flag in flag_opts else 0)
        start_label = base.new_label if base.new_label is not None else suggested
        label = c2.selectbox(
            "relabel to", label_opts,
            index=label_opts.index(start_label) if start_label in label_opts else 0,
            format_func=lambda v: v if isinstance(v, str) else ctx.class_name(v),
        )
        note = c3.text_input("note", value=cur_note)
        saved = c4.form_submit_button("Save", type="primary", width="stretch")
    if base.new_label is None and suggested is not None:
        st.caption(f"Relabel preselected: the model suggests {ctx.class_name(suggested)}. Choose "
                   f"“{KEEP_LABEL}” to save without a relabel.")
    if not saved:
        return
    new_flag = None if flag == NONE_FLAG else flag
    new_label = None if isinstance(label, str) else int(label)
    changes: dict[str, Any] = {}
    if new_flag != base.flag:
        changes["flag"] = new_flag
    if new_label != base.new_label:
        changes["new_label"] = new_label
    if note.strip() != cur_note:
        changes["note"] = note.strip()
    if not changes:
        if stale:
            bases.pop(base_key, None)
            notices[base_key] = ("You saved no change of your own, and another edit of this example "
                                 "had come in: the form now shows the latest state.")
            st.rerun()
        st.info("Nothing changed.")
        return
    try:
        result = journal.add_checked(eid, seen=base.last_edit_id,
                                     author=st.session_state.get(K.W_AUTHOR, ""), **changes)
    except (ValueError, TypeError, TimeoutError, PermissionError, OSError, S.SchemaError) as exc:
        st.error(f"The edit was not saved: {md(exc, limit=None)}")
        return
    bases.pop(base_key, None)
    st.session_state[K.FLASH] = f"Saved: example {md(example_id)} ({', '.join(changes)})"
    if result.concurrent:
        notices[base_key] = (
            f"Your edit ({', '.join(changes)}) was saved, but another edit of this example had come "
            f"in after you opened it ({_describe_edits(result.intervening, ctx)}). Both are in the "
            "journal's history; yours, saved last, wins for the fields you changed. The form now "
            "shows the combined state."
        )
    st.rerun()


# ---- the linked map ----------------------------------------------------------------------------------


def log_timings(ctx: D.RunContext, what: str) -> None:
    """With ``DATAMAP_TIMINGS`` set, one stderr line of the server timings of this (partial) rerun."""
    if os.environ.get("DATAMAP_TIMINGS"):
        print(f"datamap timings ({what}) " + " ".join(f"{k}={v * 1000:.0f}ms" for k, v in ctx.timings.items()),
              file=sys.stderr, flush=True)


def _ignore() -> None:
    """A state callback: the chart's selection is read from its result, not in a callback."""


@st.fragment
def render_linked_map(
    ctx: D.RunContext,
    *,
    page: str,
    x: str,
    y: str,
    figure: Callable[..., Any],
    figure_kwargs: dict[str, Any],
    default_color: str,
    extreme_columns: Sequence[str] = (),
) -> None:
    """The linked map of a page: scatter of the filtered rows → selection over every row →
    table → example view.

    A fragment: a lasso, a box, a row click or a colour change reruns only this part of the page
    (the sidebar and the rest keep their state); edits that change the run (a saved flag) rerun
    the whole app. The chart draws a bounded sample; a lasso or box is applied on the server to
    every filtered row. The resolved selection is kept per page, so it survives reruns that
    redraw the chart (a flag saved, a colour changed) and is offered by the Export page.
    """
    assert ctx.table is not None
    timings = ctx.timings
    ctx.timings = {}
    try:
        _linked_map(ctx, page=page, x=x, y=y, figure=figure, figure_kwargs=figure_kwargs,
                    default_color=default_color, extreme_columns=tuple(extreme_columns))
    finally:
        log_timings(ctx, "map")
        ctx.timings = {**timings, **ctx.timings}


def _linked_map(
    ctx: D.RunContext,
    *,
    page: str,
    x: str,
    y: str,
    figure: Callable[..., Any],
    figure_kwargs: dict[str, Any],
    default_color: str,
    extreme_columns: Sequence[str] = (),
) -> None:
    assert ctx.table is not None
    choices = FIG.column_choices(ctx.table)
    color = st.selectbox(
        "colour by", choices, index=choices.index(default_color) if default_color in choices else 0,
        key=K.W_COLOR_PREFIX + page,
    )
    t0 = time.perf_counter()
    points = D.plot_points(ctx, x=x, y=y, extreme_columns=extreme_columns)
    rows, n_drawable = points.rows, points.n_drawable
    sample = ctx.table.iloc[rows]
    highlight = ctx.flagged[rows]
    # the density image shows the rows a sample leaves out (none when every row is drawn)
    every = (points.xs, points.ys) if len(rows) < n_drawable else None
    spec = figure(sample, color=color, highlight=highlight, every=every, **figure_kwargs)
    ctx.timings["figure"] = time.perf_counter() - t0
    selections: dict[str, D.Selection] = st.session_state.setdefault(K.SELECTION, {})
    prev = selections.get(page)
    generation = st.session_state.setdefault(K.CHART_GENERATION, {}).get(page, 0)
    key = f"{K.W_CHART_PREFIX}{page}_{generation}"
    # A new chart (no state yet: first visit, or back from another page) is sent the kept
    # selection's shape to draw; an existing one keeps its own. Sending its shape on every
    # selection would change the spec and make Streamlit resend the whole chart each time.
    state = st.session_state.get(key)
    kept_shape = prev.shape if prev is not None else None
    spec["shape"] = kept_shape if state is None else "keep"
    # --- resolve the selection over every filtered row, before the chart is drawn (its state
    # holds what it reported), so that the example it opens can be marked on it. The chart
    # reports None (nothing drawn on it yet: the kept selection's shape, if any, still applies),
    # {} (cleared by a double-click or Esc) or a shape; either is kept across reruns and applied
    # to the current filter on each one.
    raw = _chart_selection(state)
    shape = raw if raw is not None else kept_shape
    if shape:
        mask, how = D.selection_mask(ctx, shape, x=x, y=y)
        selections[page] = D.Selection(ids=ctx.table[S.EXAMPLE_ID].to_numpy()[mask], how=how or "shape", shape=shape)
        if raw is not None:
            st.session_state[K.LAST_SELECTION_PAGE] = page
    elif raw is not None:
        selections.pop(page, None)
    sel = selections.get(page)
    sel_rows = np.zeros(0, dtype=np.int64)
    if sel is not None and len(sel):
        sel_rows = np.flatnonzero(ctx.table[S.EXAMPLE_ID].isin(sel.ids).to_numpy() & ctx.mask)
    # a new selection gets a fresh table (no row picked), so a clicked point opens at once
    table_key = selection_table_key(page, shape)
    open_id = _open_example(ctx, sel, sel_rows, st.session_state.get(table_key))
    spec["marked"] = _marked(ctx, open_id, x=x, y=y)
    SCATTER(data=spec, key=key, on_selection_change=_ignore, default={"selection": None})
    ctx.timings["chart"] = time.perf_counter() - t0
    unplottable = ctx.n_filtered - n_drawable
    missing = f" ({unplottable:,} filtered examples have no {x}/{y} and are not drawn.)" if unplottable else ""
    if len(rows) < n_drawable:
        st.caption(
            f"Drawing {len(rows):,} of {n_drawable:,} filtered examples as points (a uniform sample "
            "plus every flagged and extreme example); the grey shading behind them shows where all "
            f"{n_drawable:,} lie. Counts, lasso/box selections and exports use every row." + missing
        )
    else:
        st.caption(
            f"Drawing all {n_drawable:,} filtered examples. Click a point to open it; lasso or box "
            "to select." + missing
        )
    ctx.timings["map"] = time.perf_counter() - t0
    if sel is None or len(sel) == 0:
        st.info("Draw a lasso or a box on the chart (or click a point) to list those examples here.")
        return
    # One clear control: the chart's "Clear selection" button (or a double-click, or Esc) drops
    # the selection, its table and the example it opened. The table's own toolbar button would
    # clear only the row pick, under the same name: it is hidden (_HIDE_TABLE_CLEAR).
    st.markdown(f"**{len(sel_rows):,} selected** by {sel.how} (of {ctx.n_filtered:,} filtered); "
                "**Clear selection** above the chart clears it")
    render_bulk_actions(ctx, ctx.table[S.EXAMPLE_ID].to_numpy()[sel_rows], key=f"{page}_bulk",
                        what="this selection")
    clicked = None
    if render_view_choice(page) == "gallery":
        render_gallery(ctx, sel_rows, key=f"{page}_gallery", metric=S.CONFIDENCE,
                       what="selected")
    else:
        st.html(_HIDE_TABLE_CLEAR)
        with st.container(key=f"dm_selection_{page}"):
            clicked = render_selection_table(ctx, sel_rows, key=table_key)
    ctx.timings["table"] = time.perf_counter() - t0
    shown = clicked if clicked is not None else open_id
    if shown is not None:
        render_example_view(ctx, shown, key=f"{page}_example")
    else:
        st.caption("Click a row (or a point on the map) to open the example.")


_HIDE_TABLE_CLEAR = (
    "<style>[class*='st-key-dm_selection_'] [data-testid='stElementToolbarButton']"
    ":has(button[aria-label='Clear selection']) { display: none; }</style>"
)
"""CSS: a map's selection table shows no "Clear selection" of its own (the chart's clears both)."""


def render_view_choice(page: str) -> str:
    """"table" or "gallery": how a page lists its examples (kept per page)."""
    choice = st.segmented_control("show as", ["table", "gallery"], default="table",
                                  key=K.W_VIEW_PREFIX + page, label_visibility="collapsed")
    return str(choice or "table")


def selection_table_key(page: str, shape: Any) -> str:
    """The widget key of a map page's selection table: one per selection shape."""
    return f"{K.W_TABLE_PREFIX}{page}_{SC.shape_digest(shape)}"


def _chart_selection(state: Any) -> Any:
    """The selection the chart reported (its state at the start of this run), or None."""
    if state is None:
        return None
    try:
        return state.get("selection")
    except AttributeError:
        return None


def _open_example(ctx: D.RunContext, sel: D.Selection | None, sel_rows: np.ndarray,
                  table_state: Any) -> Any | None:
    """The example the map opens: the table row picked, else the point clicked on the chart."""
    assert ctx.table is not None
    if sel is None or not len(sel_rows):
        return None
    ids = ctx.table[S.EXAMPLE_ID].to_numpy()
    picked: list[int] = []
    if table_state is not None:
        try:
            picked = list(table_state["selection"]["rows"])
        except (KeyError, TypeError):
            picked = []
    if picked and 0 <= picked[0] < min(len(sel_rows), TABLE_ROWS):
        return ids[sel_rows[picked[0]]]
    if sel.how == "points":
        return ids[sel_rows[0]]
    return None


def _marked(ctx: D.RunContext, example_id: Any, *, x: str, y: str) -> dict[str, Any] | None:
    if example_id is None:
        return None
    row = _row_of(ctx, example_id)
    if row is None:
        return None
    assert ctx.table is not None
    return SC.marked_point(example_id, ctx.table[x].iloc[row], ctx.table[y].iloc[row])
