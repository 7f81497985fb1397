"""Review: ranked suspects; flag, relabel and annotate, each edit journaled at once."""

from __future__ import annotations

import numpy as np
import streamlit as st

from analysis import schema as S
from dashboard import data as D
from dashboard import review_queue
from dashboard import state as K
from dashboard import widgets as W
from dashboard.bulk_actions import render_bulk_actions
from dashboard.gallery import render_gallery
from dashboard.text import code

SUSPECT_MISLABELED = "suspect_mislabeled"
SUSPECT_OOD = "suspect_ood"
OOD_RANKING = (S.OOD_RMD, S.OOD_MAHALANOBIS, S.OOD_ENERGY, S.OOD_KNN, S.OOD_MAXLOGIT, S.OOD_MSP)

st.title("Review")
ctx = W.get_context()
assert ctx.table is not None and ctx.mask is not None
t = ctx.table

kinds = {
    "suspected mislabeled": SUSPECT_MISLABELED,
    "suspected OOD": SUSPECT_OOD,
    "already flagged": "flagged",
}
kind_label = st.radio("show", list(kinds), horizontal=True, key=K.W_REVIEW_KIND)
kind = kinds[kind_label]

if kind == SUSPECT_OOD and not D.ood_columns(t):
    st.info(
        "**This run has no OOD scores**, so nothing is diagnosed as suspected OOD (the diagnosis "
        "used the data-map region alone). OOD scores need stored logits and/or features "
        "(`logits/<split>.npy`, `features/<split>.npy`, e.g. from `capture_split`); store them and "
        f"run `datamap analyze` {code(ctx.run_dir, limit=None)}.", icon=":material/info:",
    )
    st.stop()

rank_col: str | None = None
ascending = True
if kind == "flagged":
    cand = ctx.flagged & ctx.mask
    rank_col = None
elif S.DIAGNOSIS in t.columns:
    cand = review_queue.equals(t[S.DIAGNOSIS], kind) & ctx.mask
else:
    cand = np.zeros(len(t), dtype=bool)
    st.warning("This run's table has no `diagnosis` column; run `datamap analyze` to rank suspects.")
if kind == SUSPECT_MISLABELED:
    rank_col = next((c for c in (S.AUM, S.CONFIDENCE) if c in t.columns), None)
    ascending = True
elif kind == SUSPECT_OOD:
    # the score the diagnosis used (run.json), so the ranking agrees with who is a suspect
    settings = D.diagnosis_settings(ctx.run_dir)
    used = settings[0] if settings is not None else None
    rank_col = used if used in t.columns else next((c for c in OOD_RANKING if c in t.columns), None)
    ascending = False

# cached per (run, ranking, candidate set): a page turn or a flag does not sort again
rows = review_queue.ranked_rows(ctx, cand, by=rank_col, ascending=ascending)
n_flagged = int((ctx.flagged[rows]).sum()) if rows.size else 0
c1, c2, c3 = st.columns(3)
c1.metric(kind_label, f"{rows.size:,}")
c2.metric("of those flagged", f"{n_flagged:,}")
c3.metric("edits in the journal", f"{D.flag_journal(ctx.run_dir).count():,}")
if rank_col is not None:
    direction = "lowest first" if ascending else "highest first"
    st.caption(f"Ranked by {code(rank_col)} ({direction}); the sidebar filter applies.")
if rows.size == 0:
    st.info("Nothing to review under the current filter.")
    st.stop()

if W.render_view_choice("review") == "gallery":
    render_gallery(ctx, rows, key="review_gallery", metric=rank_col)
else:
    clicked = W.render_selection_table(
        ctx, rows, key=K.W_REVIEW_TABLE, extra=(rank_col,) if rank_col else (), height=360,
    )
    if clicked is not None:
        W.render_example_view(ctx, clicked, key="review_example")
    else:
        st.caption("Click a row to open the example and flag, relabel or annotate it.")

render_bulk_actions(ctx, t[S.EXAMPLE_ID].to_numpy()[rows], key="review_bulk",
                    what="the whole list")

with st.expander("Journal: the latest state of every edited example"):
    latest = ctx.latest_flags
    if latest is None or latest.empty:
        st.caption(f"No edits yet. They are stored in {code(ctx.run_dir / S.FLAGS_FILE, limit=None)}.")
    else:
        st.dataframe(latest.iloc[::-1], hide_index=True, width="stretch")
        st.caption(f"Append-only journal: {code(ctx.run_dir / S.FLAGS_FILE, limit=None)} (SQLite).")
