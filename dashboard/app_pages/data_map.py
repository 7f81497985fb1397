"""Data map: variability × confidence, region boundaries, lasso/box → table → example."""

from __future__ import annotations

import streamlit as st

from analysis import noise
from analysis import schema as S
from dashboard import data
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


def render_label_noise() -> None:
    """The run's estimated label noise and how the diagnosis chose its cut-offs (analysis.noise)."""
    assert ctx.table is not None
    est = noise.estimate_label_noise(ctx.table)
    if est.rate != est.rate:  # NaN: analysed before suggested labels existed
        return
    n = sum(est.n_per_class.values())
    with st.expander(f"Estimated label noise: {est.rate:.1%} of {n:,} training labels"):
        info = ((data.load_ood_eval(ctx.run_dir) or {}).get("diagnosis") or {}).get("label_issues")
        if isinstance(info, dict):
            cut = info.get("cutoff")
            again = noise.resampled_range(info.get("resampled"))
            spread = (f" Refitted on {again['rounds']} resamples, the mixture flags {again['low']:.1%}-"
                      f"{again['high']:.1%} of the rows (10th-90th percentile)." if again else "")
            st.caption(
                f"`suspect_mislabeled` cut-off chosen from this run: {info.get('method')} on "
                f"`{info.get('score')}`" + (f" (at {cut:.4g})" if isinstance(cut, (int, float)) else "")
                + f"; `{S.SUGGESTED_LABEL}` is the class the model predicted most often." + spread
            )
            if again and again["stable"] is False:
                st.warning(
                    f"The estimated noise rate is unstable on this run ({again['low']:.1%}-{again['high']:.1%} across "
                    "resamples): its losses do not split into clean and wrong labels clearly, so the "
                    "number of suspects is uncertain"
                    + (f"; it is {info['count_rule']}" if isinstance(info.get("count_rule"), str) else "")
                    + ". Review by rank (sort by `loss_mean`) beyond the flagged rows."
                )
        left, right = st.columns(2)
        left.dataframe(
            {"class": list(est.per_class), "estimated noise": [f"{v:.1%}" for v in est.per_class.values()],
             "labels": list(est.n_per_class.values())},
            hide_index=True,
        )
        right.dataframe(
            {"given": [p[0] for p in est.confused_pairs[:10]],
             "suggested": [p[1] for p in est.confused_pairs[:10]],
             "count": [p[2] for p in est.confused_pairs[:10]]},
            hide_index=True,
        )


render_label_noise()
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
