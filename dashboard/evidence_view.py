"""The evidence panel of the example view: nearest training neighbours and typical examples.

The numbers come from :mod:`analysis.evidence`; this module only lays out thumbnails (or text
snippets) with their labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from analysis import evidence
from analysis import schema as S
from dashboard import data as D

N_NEIGHBOURS = 8
N_TYPICAL = 4
THUMB_PX = 64


@st.cache_data(max_entries=256, show_spinner=False)
def _neighbours(key: D.RunKey, run_dir: str, example_id: Any, split: str, k: int) -> pd.DataFrame | None:
    return evidence.training_neighbors(run_dir, example_id, split, k=k)


def suggested_label(ctx: D.RunContext, row: int) -> int | None:
    """The model's suggested label of the example at ``row`` (None when there is none)."""
    assert ctx.table is not None
    try:
        value = evidence.suggested_labels(ctx.table.iloc[[row]]).iloc[0]
    except ValueError:
        return None
    return None if pd.isna(value) else int(value)


def _strip(ctx: D.RunContext, rows: np.ndarray, captions: list[str], *, empty: str) -> None:
    """Thumbnails (or text snippets) of ``rows`` in one line, each with its caption."""
    assert ctx.table is not None
    if not len(rows):
        st.caption(empty)
        return
    t = ctx.table
    if S.IMAGE in t.columns:
        cols = st.columns(len(rows))
        for col, row, caption in zip(cols, rows, captions, strict=True):
            img = D.image_for_display(t[S.IMAGE].iloc[int(row)], ctx.run_dir)
            if img is not None:
                col.image(img, width=THUMB_PX, caption=caption)
            else:
                col.caption(caption)
    elif S.TEXT in t.columns:
        for row, caption in zip(rows, captions, strict=True):
            text = t[S.TEXT].iloc[int(row)]
            snippet = "" if not isinstance(text, str) else text[:160].replace("\n", " ")
            st.text(f"{caption}: {snippet}")
    else:
        st.caption(" · ".join(captions))


def render_evidence(ctx: D.RunContext, example_id: Any, row: int, *, suggested: int | None) -> None:
    """Nearest training neighbours (with their labels and similarity) and typical examples of the
    given and the suggested class."""
    assert ctx.table is not None and ctx.key is not None
    t = ctx.table
    split = str(t[S.SPLIT].iloc[row])
    ids = t[S.EXAMPLE_ID]
    eid = example_id.item() if hasattr(example_id, "item") else example_id
    near = _neighbours(ctx.key, str(ctx.run_dir), eid, split, N_NEIGHBOURS)
    st.markdown("**Nearest training examples** (cosine similarity of the model's features)")
    if near is None or near.empty:
        st.caption("This run stores no features for this example (features/<split>.npy), so there are "
                   "no neighbours to show.")
    else:
        pos = pd.Index(ids).get_indexer(near[S.EXAMPLE_ID])
        keep = pos >= 0
        rows = pos[keep]
        sims = near["similarity"].to_numpy()[keep]
        labels = t[S.LABEL].iloc[rows].tolist() if S.LABEL in t.columns else [None] * len(rows)
        captions = [f"{ctx.class_name(lab)} · {sim:.2f}" for lab, sim in zip(labels, sims, strict=True)]
        _strip(ctx, rows, captions, empty="No neighbours found in the table.")
        given = t[S.LABEL].iloc[row] if S.LABEL in t.columns else None
        if labels and given is not None and not pd.isna(given):
            agree = sum(1 for lab in labels if not pd.isna(lab) and int(lab) == int(given))
            st.caption(f"{agree} of {len(labels)} neighbours carry the given label "
                       f"({ctx.class_name(given)}).")
    given = t[S.LABEL].iloc[row] if S.LABEL in t.columns else None
    classes: list[tuple[str, int]] = []
    if given is not None and not pd.isna(given):
        classes.append(("given", int(given)))
    if suggested is not None and (not classes or suggested != classes[0][1]):
        classes.append(("suggested", suggested))
    for kind, label in classes:
        st.markdown(f"**Typical examples of the {kind} class, {ctx.class_name(label)}** "
                    "(training examples learned most surely)")
        rows = evidence.typical_examples(t, label, n=N_TYPICAL)
        _strip(ctx, rows, [f"{ids.iloc[int(r)]}" for r in rows],
               empty="No training example of this class.")
