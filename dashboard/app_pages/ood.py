"""OOD: score distributions per split, ROC/PR curves and metrics, the most anomalous examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from analysis import schema as S
from dashboard import data as D
from dashboard import figures as FIG
from dashboard import state as K
from dashboard import widgets as W
from dashboard.text import code as code_span
from dashboard.text import md

st.title("Out-of-distribution")
ctx = W.get_context()
assert ctx.table is not None and ctx.mask is not None and ctx.key is not None
scores = D.ood_columns(ctx.table)
if not scores:
    st.error(
        "This run has no OOD scores (`ood_*` columns). They need stored logits and/or features "
        "(`logits/<split>.npy`, `features/<split>.npy`); store them with the recorder and run "
        f"`datamap analyze` {code_span(ctx.run_dir, limit=None)}."
    )
    st.stop()

evaluation = D.load_ood_eval(ctx.run_dir)
if evaluation is None and (problem := D.ood_eval_problem(ctx.run_dir)):
    st.warning(f"Ignored: {md(problem, limit=None)}")
score = st.selectbox(
    "OOD score (higher = more anomalous)", scores, key=K.W_OOD_SCORER,
    index=scores.index(D.best_ood_score(scores, evaluation)),
    help="msp: −max softmax; maxlogit: −max logit; energy: −T·logsumexp(z/T); mahalanobis: min "
         "class-conditional distance; rmd: relative Mahalanobis; knn: k-th neighbour distance.",
)
filtered = ctx.table.loc[ctx.mask, [S.SPLIT, score]]
cut = W.diagnosis_cutoff(ctx)
W.SVG(data=FIG.ood_histogram_svg(filtered, score, cutoff=cut["threshold"] if cut and cut["column"] == score else None),
      key="ood_hist")
st.caption(f"{len(filtered):,} filtered examples; bars are fractions of each split.")
W.render_ood_cutoff(cut, score)

# ---- evaluation against ground truth -------------------------------------------------------------
st.subheader("Detection quality")
source = f"`{S.OOD_EVAL_FILE}`"
if evaluation is None:
    evaluation = D.ood_metrics(ctx.key, tuple(scores), ctx.table)
    source = "the table (no ood_eval.json in the run)"
metrics = (evaluation or {}).get("metrics") or {}
rows_all, is_ood_all = D.ood_truth_all(ctx.key, ctx.table)
rows, is_ood = rows_all[ctx.mask], is_ood_all[ctx.mask]
truth = (rows, is_ood) if is_ood.any() and (rows & ~is_ood).any() else None
if not metrics and truth is None:
    st.info(
        "No ground truth for OOD detection: the run needs in-distribution evaluation rows (a "
        "`test` split) and OOD rows (`ood:*` splits or an `is_ood` column)."
    )
else:
    if truth is not None:
        codes, names = pd.factorize(filtered[S.SPLIT], sort=True)
        values = filtered[score].to_numpy(dtype=np.float64, na_value=np.nan)
        curves = {}
        id_rows = rows & ~is_ood
        for code in np.unique(codes[is_ood]).tolist():
            name = str(names[code])
            pick = id_rows | (is_ood & (codes == code))
            curves[name] = D.ood_curves(ctx.key, score, name + repr(ctx.spec.to_dict()),
                                        values[pick], is_ood[pick])
        c1, c2 = st.columns(2)
        with c1:
            W.SVG(data=FIG.roc_svg(curves), key="ood_roc")
        with c2:
            W.SVG(data=FIG.pr_svg(curves), key="ood_pr")
        st.caption(
            "Curves over the filtered rows: in-distribution = held-out non-OOD rows (test), "
            "positive = each OOD split."
        )
    if metrics:
        records = []
        for col, per in metrics.items():
            for group, m in per.items():
                records.append({
                    "score": col, "OOD split": group, "AUROC": m.get("auroc"),
                    "AUPR-in": m.get("aupr_in"), "AUPR-out": m.get("aupr_out"),
                    "FPR@95": m.get("fpr95"), "n ID": m.get("n_id"), "n OOD": m.get("n_ood"),
                })
        frame = pd.DataFrame.from_records(records)
        frame = pd.concat([frame[frame["score"] == score], frame[frame["score"] != score]])
        st.dataframe(
            frame, hide_index=True, width="stretch",
            column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                           for c in ("AUROC", "AUPR-in", "AUPR-out", "FPR@95")},
        )
        definition = (evaluation or {}).get("fpr95_definition", "ood_accepted_at_95_id")
        st.caption(
            f"Metrics over the whole run from {source}; OOD is the positive class. FPR@95 reading: "
            f"`{definition}` (fraction of OOD accepted when 95% of in-distribution is kept)."
        )

# ---- most anomalous ---------------------------------------------------------------------------------
st.subheader("Most anomalous examples")
k = st.slider("how many", 6, 60, 18, 6, key=K.W_OOD_TOPK)
vals = ctx.table[score].to_numpy(dtype=np.float64, na_value=np.nan)
cand = np.flatnonzero(ctx.mask & np.isfinite(vals))
if cand.size > k:  # partial sort: the k largest, then order them
    cand = cand[np.argpartition(-vals[cand], k - 1)[:k]]
top = cand[np.argsort(-vals[cand], kind="stable")[:k]]
if top.size == 0:
    st.info("No filtered example has this score.")
    st.stop()
if S.IMAGE in ctx.table.columns:
    per_row = 6
    for start in range(0, len(top), per_row):
        cols = st.columns(per_row)
        for col, row in zip(cols, top[start:start + per_row], strict=False):
            r = ctx.table.iloc[row]
            img = D.image_for_display(r[S.IMAGE], ctx.run_dir)
            with col:
                if img is not None:
                    st.image(img, width=96)
                st.caption(f"{code_span(r[S.EXAMPLE_ID])} · {md(r[S.SPLIT])} · {vals[row]:.2f}")
clicked = W.render_selection_table(ctx, top, key=K.W_TABLE_PREFIX + "ood", extra=(score,), height=300)
if clicked is not None:
    W.render_example_view(ctx, clicked, key="ood_example")
