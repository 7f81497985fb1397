"""The dashboard's entry script: a router (``st.navigation``) over ``app_pages/``.

Run it with ``datamap serve RUN_DIR`` (which passes the run in ``DATAMAP_RUN_DIR``), or
``streamlit run dashboard/app.py -- RUN_DIR``. On every rerun the router loads the run (cached),
draws the sidebar filters, and hands the pages one :class:`dashboard.data.RunContext`; the
filters therefore apply to every page and survive page switches.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

_T0 = time.perf_counter()

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `streamlit run dashboard/app.py` from a source checkout
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from dashboard import data as D  # noqa: E402
from dashboard import state as K  # noqa: E402
from dashboard import widgets as W  # noqa: E402
from dashboard.text import code  # noqa: E402

_PAGES = Path(__file__).resolve().parent / "app_pages"
_ICON = Path(__file__).resolve().parent / "icon.png"  # bundled: no request to a font host

st.set_page_config(page_title="datamap", page_icon=str(_ICON), layout="wide")


def _run_dir() -> Path | None:
    env = D.run_dir_from_env()
    if env is not None:
        return env
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    return Path(args[0]) if args else None


pages = [
    st.Page(_PAGES / "data_map.py", title="Data map", icon=":material/scatter_plot:", default=True),
    st.Page(_PAGES / "embeddings.py", title="Embeddings", icon=":material/bubble_chart:",
            url_path="embeddings"),
    st.Page(_PAGES / "ood.py", title="OOD", icon=":material/radar:", url_path="ood"),
    st.Page(_PAGES / "review.py", title="Review", icon=":material/flag:", url_path="review"),
    st.Page(_PAGES / "queue.py", title="Queue", icon=":material/keyboard:", url_path="queue"),
    st.Page(_PAGES / "export.py", title="Export", icon=":material/download:", url_path="export"),
]
nav = st.navigation(pages)

run_dir = _run_dir()
with st.sidebar:
    st.markdown("### datamap")
    run_box = st.container()
    summary_box = st.container()
    filters_box = st.container()
    # rendered only while open: its sliders cost ~0.3 s of browser time on every page load
    thresholds_box = W.kept_expander("Thresholds", K.W_EXPAND_THRESHOLDS)
    st.text_input("your name (recorded with flags)", key=K.W_AUTHOR)

if run_dir is None:
    ctx = D.RunContext(run_dir=Path("."), error=(
        "No run directory given. Start the dashboard with `datamap serve RUN_DIR` "
        "(or `streamlit run dashboard/app.py -- RUN_DIR`)."))
else:
    thresholds = W.render_thresholds(thresholds_box, run_dir)
    ood_quantile = W.render_ood_quantile(thresholds_box, run_dir)
    W.render_threshold_reset(thresholds_box, run_dir, thresholds, ood_quantile)
    ctx = D.load_context(run_dir, thresholds=thresholds, ood_quantile=ood_quantile)
    run_box.caption(f"run: {code(run_dir, limit=None)}")
    if ctx.table is not None:
        spec = W.render_filters(filters_box, ctx)
        ctx = D.apply_spec(ctx, spec)
        W.render_filter_summary(summary_box, ctx)
st.session_state[K.CONTEXT] = ctx
nav.run()
ctx.timings["script"] = time.perf_counter() - _T0
W.log_timings(ctx, "app")
