"""Embeddings: the UMAP projection of every split in one space, with the same linked selection."""

from __future__ import annotations

import streamlit as st

from analysis import schema as S
from dashboard import data as D
from dashboard import scatter as SC
from dashboard import widgets as W
from dashboard.text import code

st.title("Embeddings")
ctx = W.get_context()
assert ctx.table is not None
if S.UMAP_X not in ctx.table.columns or S.UMAP_Y not in ctx.table.columns:
    st.error(
        "This run has no 2-D projection (`umap_x`/`umap_y`). It needs stored features "
        "(`features/<split>.npy`) and the projection step of the analysis: store the features "
        f"with the recorder, then run `datamap analyze` {code(ctx.run_dir, limit=None)}."
    )
    st.stop()
st.caption(
    "UMAP of the penultimate-layer features: fitted on the training split, every other split "
    "transformed into the same space. OOD examples far from every class cluster stand out."
)
W.render_linked_map(
    ctx,
    page="embeddings",
    x=S.UMAP_X,
    y=S.UMAP_Y,
    figure=SC.embedding_spec,
    figure_kwargs={},
    default_color=S.SPLIT,
    extreme_columns=tuple(D.ood_columns(ctx.table)[:2]),
)
