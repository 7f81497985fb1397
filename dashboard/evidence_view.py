"""The evidence panel of the example view: nearest training neighbours and typical examples.

The numbers come from :mod:`analysis.evidence`; this module only lays out thumbnails (or text
snippets) with their labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from analysis import evidence, runstore
from analysis import schema as S
from dashboard import data as D

N_NEIGHBOURS = 8
N_TYPICAL = 4
THUMB_PX = 64


@st.cache_data(max_entries=256, show_spinner=False)
def _neighbours(key: D.RunKey, run_dir: str, example_id: Any, split: str, k: int) -> pd.DataFrame | None:
    """:func:`analysis.evidence.training_neighbors` on the features read once per run (the bank
    is not re-read and re-checked for every example)."""
    bank = _features(key, run_dir, S.TRAIN_SPLIT)
    own = bank if split == S.TRAIN_SPLIT else _features(key, run_dir, split)
    if bank is None or own is None:
        return None
    bank_ids, bank_feats = bank
    ids, feats = own
    row = int(ids.get_indexer([example_id])[0])
    if row < 0:
        return None
    query = np.asarray(feats[row:row + 1], dtype=np.float32)
    exclude = [row] if split == S.TRAIN_SPLIT else None
    idx, sim = evidence.nearest_neighbors(query, bank_feats, k=k, exclude=exclude)
    return pd.DataFrame({S.EXAMPLE_ID: np.asarray(bank_ids)[idx[0]], "similarity": sim[0]})


@st.cache_resource(max_entries=2, show_spinner=False)
def _class_rows(key: D.RunKey, _table: pd.DataFrame) -> dict[float, np.ndarray]:
    """Row positions of each given label (in table order), computed once per run."""
    labels = _table[S.LABEL].to_numpy(dtype=np.float64, na_value=np.nan)
    order = np.argsort(labels, kind="stable")  # NaN last; each class's rows stay in table order
    ordered = labels[order]
    finite = int(np.isfinite(ordered).sum())
    cuts = np.flatnonzero(np.diff(ordered[:finite])) + 1
    out: dict[float, np.ndarray] = {}
    for group in np.split(order[:finite], cuts):
        if group.size:
            out[float(labels[group[0]])] = group
    return out


@st.cache_resource(max_entries=256, show_spinner=False)
def _typical(key: D.RunKey, label: int, n: int, _table: pd.DataFrame) -> np.ndarray:
    """:func:`analysis.evidence.typical_examples` of ``_table``, computed on the class's own rows
    (the same rows in the same order, so the same answer) instead of a scan of every row per rerun."""
    if S.LABEL not in _table.columns:
        return np.zeros(0, dtype=np.int64)
    rows = _class_rows(key, _table).get(float(label))
    if rows is None:
        return np.zeros(0, dtype=np.int64)
    columns = [c for c in (S.LABEL, S.SPLIT, S.CONFIDENCE) if c in _table.columns]
    out = rows[evidence.typical_examples(_table[columns].iloc[rows], label, n=n)].astype(np.int64)
    out.setflags(write=False)
    return out


@st.cache_resource(max_entries=4, show_spinner="Loading the training features (once per run)…")
def _features(key: D.RunKey, run_dir: str, split: str) -> tuple[pd.Index, np.ndarray] | None:
    """``(example ids, features)`` of one split (memory-mapped), read and checked once per run."""
    try:
        ids, feats = runstore.load_features(run_dir, split)
    except FileNotFoundError:
        return None
    return pd.Index(ids), feats


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
        # cached thumbnails sent inline (data URLs): nothing decoded again, no request per image
        positions = np.asarray(rows, dtype=np.int64)
        thumbs = D.image_data_urls(t[S.IMAGE].iloc[positions], ctx.run_dir, key=ctx.key, rows=positions)
        for col, thumb, caption in zip(cols, thumbs, captions, strict=True):
            if thumb is not None:
                col.image(thumb, width=THUMB_PX, caption=caption)
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
        rows = _typical(ctx.key, label, N_TYPICAL, t)
        _strip(ctx, rows, [f"{ids.iloc[int(r)]}" for r in rows],
               empty="No training example of this class.")
