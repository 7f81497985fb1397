"""A keyboard review queue over a ranked list: one key per decision, saved at once, next shown.

Keys (Streamlit button shortcuts; they act while no text field has the focus):

=====  ===============================================
J      next example (no decision)
K      previous example
1      flag ``mislabeled``
2      flag ``ood``
3      flag ``ambiguous``
4      flag ``keep``
A      accept the suggested label (relabel to it)
X      clear the flag and the relabel
=====  ===============================================

Each decision is one journal write (in the button's callback, before the page reruns), then the
queue moves to the next example. The ranked lists: suspected mislabeled (lowest AUM first),
suspected OOD (highest OOD score of the diagnosis first), or a map page's selection (lowest AUM
first); the sidebar filter applies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from analysis import diagnosis as DG
from analysis import flags as FL
from analysis import schema as S
from dashboard import data as D
from dashboard import evidence_view as EV
from dashboard import state as K


@dataclass(frozen=True)
class Decision:
    """One key of the queue: its label, and the journal fields it writes (None: move only)."""

    key: str
    label: str
    fields: dict[str, Any] | None


DECISIONS: tuple[Decision, ...] = (
    Decision("1", "mislabeled", {FL.FLAG: FL.FLAG_MISLABELED}),
    Decision("2", "ood", {FL.FLAG: FL.FLAG_OOD}),
    Decision("3", "ambiguous", {FL.FLAG: FL.FLAG_AMBIGUOUS}),
    Decision("4", "keep", {FL.FLAG: FL.FLAG_KEEP}),
    Decision("A", "accept suggested label", {}),  # the label is the example's own suggestion
    Decision("X", "clear", {FL.FLAG: None, FL.NEW_LABEL: None}),
)


def rank(table: pd.DataFrame, candidates: np.ndarray, *, by: str | None, ascending: bool) -> np.ndarray:
    """Positions of the ``candidates`` rows ordered by column ``by`` (missing values last; ties in
    table order). Pure: no Streamlit.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> t = pd.DataFrame({"aum": [0.5, -1.0, np.nan, -1.0]})
    >>> rank(t, np.array([True, True, True, True]), by="aum", ascending=True).tolist()
    [1, 3, 0, 2]
    >>> rank(t, np.array([True, True, True, True]), by="aum", ascending=False).tolist()
    [0, 1, 3, 2]
    """
    rows = np.flatnonzero(candidates)
    if by is None or by not in table.columns or not rows.size:
        return rows
    values = table[by].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
    # NumPy sorts NaN last in both directions; a stable sort keeps ties in table order
    return rows[np.argsort(values if ascending else -values, kind="stable")]


@st.cache_resource(max_entries=16, show_spinner=False)
def _ranked(key: D.RunKey, by: str | None, ascending: bool, digest: str, _table: pd.DataFrame,
            _candidates: np.ndarray) -> np.ndarray:
    rows = rank(_table, _candidates, by=by, ascending=ascending)
    rows.setflags(write=False)  # shared between reruns and sessions
    return rows


def ranked_rows(ctx: D.RunContext, candidates: np.ndarray, *, by: str | None, ascending: bool) -> np.ndarray:
    """:func:`rank` of the ``candidates`` of ``ctx.table``, cached per (run, rank column, direction,
    candidate set): a rerun that changes nothing of these (a decision, a page turn) does not sort
    again. The returned array is shared: read-only."""
    assert ctx.table is not None and ctx.key is not None
    mask = np.asarray(candidates, dtype=bool)
    digest = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).hexdigest() + f":{mask.size}"
    return _ranked(ctx.key, by, ascending, digest, ctx.table, mask)


def equals(column: pd.Series, value: str) -> np.ndarray:
    """Bool array of ``column.astype(str) == value``; a categorical column is compared on its codes
    (no million-string copy per rerun).

    Examples
    --------
    >>> import pandas as pd
    >>> equals(pd.Series(pd.Categorical(["a", None, "b", "a"])), "a").tolist()
    [True, False, False, True]
    >>> equals(pd.Series(["a", None, "b"]), "b").tolist()
    [False, False, True]
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = column.cat.categories
        if not all(isinstance(c, str) for c in categories):
            return (column.astype(str) == value).to_numpy(dtype=bool)
        if value not in categories:
            return np.zeros(len(column), dtype=bool)
        return np.asarray(column.cat.codes.to_numpy() == categories.get_loc(value), dtype=bool)
    return (column.astype(str) == value).to_numpy(dtype=bool)


def queue_sources(ctx: D.RunContext) -> dict[str, tuple[np.ndarray, str | None, bool]]:
    """The ranked lists the queue can walk: ``label -> (candidate mask, rank column, ascending)``."""
    assert ctx.table is not None and ctx.mask is not None
    t = ctx.table
    out: dict[str, tuple[np.ndarray, str | None, bool]] = {}
    aum = next((c for c in (S.AUM, S.CONFIDENCE) if c in t.columns), None)
    if S.DIAGNOSIS in t.columns:
        diag = t[S.DIAGNOSIS]
        out["suspected mislabeled"] = (equals(diag, DG.SUSPECT_MISLABELED) & ctx.mask, aum, True)
        settings = D.diagnosis_settings(ctx.run_dir)
        ood_col = settings[0] if settings is not None and settings[0] in t.columns else None
        if ood_col is None:
            ood_col = next(iter(D.ood_columns(t)), None)
        out["suspected OOD"] = (equals(diag, DG.SUSPECT_OOD) & ctx.mask, ood_col, False)
    for page, sel in (st.session_state.get(K.SELECTION) or {}).items():
        if sel is not None and len(sel):
            cand = t[S.EXAMPLE_ID].isin(sel.ids).to_numpy() & ctx.mask
            out[f"selection on {page.replace('_', ' ')}"] = (cand, aum, True)
    return out


def _decide(run_dir: str, example_id: Any, fields: dict[str, Any] | None, suggested: int | None,
            source: str, n: int) -> None:
    """Button callback: write the decision, move to the next example."""
    positions: dict[str, int] = st.session_state.setdefault(K.QUEUE_POSITION, {})
    pos = positions.get(source, 0)
    if fields is not None:
        edit = dict(fields)
        if edit == {}:  # accept the suggested label
            if suggested is None:
                st.session_state[K.FLASH] = f"Example {example_id} has no suggested label."
                return
            edit = {FL.NEW_LABEL: suggested}
        try:
            D.flag_journal(run_dir).add(example_id, author=str(st.session_state.get(K.W_AUTHOR, "")), **edit)
        except (ValueError, TypeError, TimeoutError, OSError, S.SchemaError) as exc:
            st.session_state[K.FLASH] = f"Not saved: {exc}"
            return
        st.session_state[K.FLASH] = f"Saved: example {example_id} ({', '.join(edit)})"
    positions[source] = min(pos + 1, max(n - 1, 0))


def _back(source: str) -> None:
    positions: dict[str, int] = st.session_state.setdefault(K.QUEUE_POSITION, {})
    positions[source] = max(positions.get(source, 0) - 1, 0)


def render_queue(ctx: D.RunContext) -> None:
    """The queue: a ranked list, one example at a time, a key per decision."""
    assert ctx.table is not None
    t = ctx.table
    sources = queue_sources(ctx)
    if not sources:
        st.info("Nothing to queue: this run has no diagnosis and no map selection.")
        return
    source = st.radio("queue", list(sources), horizontal=True, key=K.W_QUEUE_SOURCE)
    cand, by, ascending = sources[source]
    rows = ranked_rows(ctx, cand, by=by, ascending=ascending)
    if not rows.size:
        st.info("Nothing in this queue under the current filter.")
        return
    positions: dict[str, int] = st.session_state.setdefault(K.QUEUE_POSITION, {})
    pos = min(positions.get(source, 0), rows.size - 1)
    positions[source] = pos
    row = int(rows[pos])
    r = t.iloc[row]
    eid = r[S.EXAMPLE_ID]
    eid = eid.item() if hasattr(eid, "item") else eid
    decided = int(ctx.flagged[rows].sum())
    ranked = f", ranked by `{by}` ({'lowest' if ascending else 'highest'} first)" if by else ""
    st.markdown(f"**Example {pos + 1} of {rows.size:,}** in the queue{ranked} · {decided:,} with a "
                f"flag or relabel")
    st.progress((pos + 1) / rows.size)
    suggested = EV.suggested_label(ctx, row)
    left, right = st.columns([1, 2])
    with left:
        stored = r.get(S.IMAGE) if S.IMAGE in t.columns else None
        img = D.image_for_display(stored, ctx.run_dir) if stored is not None else None
        if img is not None:
            st.image(img, width=200)
        elif S.TEXT in t.columns and isinstance(r.get(S.TEXT), str):
            st.text(r[S.TEXT][:2000])
    with right:
        flag = r.get(FL.FLAG) if FL.FLAG in t.columns else None
        relabel = r.get(FL.NEW_LABEL) if FL.NEW_LABEL in t.columns else None
        facts = {
            "example": str(eid),
            "given label": ctx.class_name(r.get(S.LABEL)),
            "suggested label": ctx.class_name(suggested),
            "diagnosis": str(r.get(S.DIAGNOSIS, "—")),
        }
        if by is not None:
            facts[by] = f"{float(r[by]):.3f}" if not pd.isna(r[by]) else "—"
        facts["current flag"] = "—" if flag is None or pd.isna(flag) else str(flag)
        facts["current relabel"] = "—" if relabel is None or pd.isna(relabel) else ctx.class_name(relabel)
        st.table(pd.DataFrame({"value": list(facts.values())}, index=list(facts.keys())))
    cols = st.columns(len(DECISIONS) + 2)
    cols[0].button("Previous", key="queue_prev", shortcut="K", on_click=_back, args=(source,),
                   disabled=pos == 0, width="stretch")
    for col, decision in zip(cols[1:], DECISIONS, strict=False):
        label = decision.label
        if decision.fields == {} and suggested is not None:
            label = f"accept {ctx.class_name(suggested)}"
        col.button(label, key=f"queue_{decision.key}", shortcut=decision.key, width="stretch",
                   on_click=_decide,
                   args=(str(ctx.run_dir), eid, decision.fields, suggested, source, int(rows.size)),
                   disabled=decision.fields == {} and suggested is None)
    cols[-1].button("Next", key="queue_next", shortcut="J", on_click=_decide, width="stretch",
                    args=(str(ctx.run_dir), eid, None, suggested, source, int(rows.size)))
    st.caption("Keys: 1 mislabeled · 2 ood · 3 ambiguous · 4 keep · A accept the suggested label · "
               "X clear · J next · K previous. Each decision is saved at once and the next example "
               "is shown.")
    with st.expander("Evidence", expanded=True):
        EV.render_evidence(ctx, eid, row, suggested=suggested)
