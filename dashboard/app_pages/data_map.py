"""Data map: variability × confidence, region boundaries, lasso/box → table → example."""

from __future__ import annotations

import streamlit as st

from analysis import schema as S
from dashboard import scatter as SC
from dashboard import widgets as W
from dashboard.text import code

st.title("Data map")
ctx = W.get_context()
assert ctx.table is not None
missing = [c for c in (S.CONFIDENCE, S.VARIABILITY) if c not in ctx.table.columns]
if missing:
    st.error(
        f"This run's table has no training dynamics ({', '.join(missing)} missing), so there is "
        f"no data map. Record dynamics during training and run `datamap analyze` {code(ctx.run_dir, limit=None)}."
    )
    st.stop()
st.caption(
    "Each point is a training example: how confidently the model predicted its given label on "
    "average over epochs (confidence) and how much that varied (variability). Dashed lines are "
    f"the region thresholds (confidence {ctx.thresholds.confidence:.2f}, variability "
    f"{ctx.thresholds.variability:.2f}); change them in the sidebar."
)
W.render_linked_map(
    ctx,
    page="data_map",
    x=S.VARIABILITY,
    y=S.CONFIDENCE,
    figure=SC.data_map_spec,
    figure_kwargs={"thresholds": ctx.thresholds},
    default_color=S.CORRECTNESS,
    extreme_columns=(S.CONFIDENCE, S.VARIABILITY, S.AUM),
)
