"""Bulk actions on a selection, with a confirmation and undo: ``render_bulk_actions``.

The rules live in :mod:`analysis.bulk`; this module only asks, confirms and reports. Each action
is one journal transaction; "Undo" appends rows that restore the state from before it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from analysis import bulk
from analysis import flags as FL
from analysis import schema as S
from dashboard import data as D
from dashboard import state as K

ACTIONS = {
    "relabel_suggested": "relabel to suggested label",
    "flag": "flag as …",
    "relabel": "relabel to a class …",
    "clear": "clear flag and relabel",
}
ACTION_WIDTH = 200
"""Pixels of the action select: its longest label (about 150 px in the 14 px UI font) shows whole,
and the row still holds the flag or class select and the button at a 1024 px wide window."""


def _digest(ids: np.ndarray) -> int:
    return hash((len(ids), ids[:64].tobytes() if ids.dtype.kind in "iuf" else tuple(ids[:64].tolist())))


def render_bulk_actions(ctx: D.RunContext, ids: np.ndarray, *, key: str, what: str) -> None:
    """Choose an action for the examples ``ids`` (``what`` names them), confirm it, undo it."""
    assert ctx.table is not None
    pending: dict[str, Any] = st.session_state.setdefault(K.BULK_PENDING, {})
    with st.container(border=True):
        # One row that wraps: the action select is wide enough for its longest label, the flag or
        # class select takes what is left, and the button is as wide as its text.
        row = st.container(horizontal=True, vertical_alignment="bottom")
        with row:
            kind = st.selectbox(f"bulk action on {what}", list(ACTIONS), format_func=ACTIONS.__getitem__,
                                key=f"{key}_kind", width=ACTION_WIDTH)
            flag = label = None
            if kind == "flag":
                flag = st.selectbox("flag", list(FL.FLAG_VALUES), key=f"{key}_flag")
            elif kind == "relabel":
                n_classes = len(ctx.meta.class_names) if ctx.meta is not None else 0
                label = st.selectbox("class", list(range(n_classes)), format_func=ctx.class_name,
                                     key=f"{key}_label")
            prepare = st.button(f"Apply to {len(ids):,}…", key=f"{key}_prepare", disabled=not len(ids))
        if prepare:
            try:
                action = bulk.BulkAction(kind, flag=flag, label=label)  # type: ignore[arg-type]
                plan = bulk.plan_bulk(ctx.table, ids, action)
            except ValueError as exc:
                st.error(f"The action cannot be planned: {exc}")
            else:
                pending[key] = (plan, _digest(ids))
        entry = pending.get(key)
        if entry is not None and entry[1] != _digest(ids):
            pending.pop(key, None)  # the selection changed: ask again
            entry = None
        if entry is not None:
            plan = entry[0]
            left_out = f" ({plan.n_skipped:,} left out: no suggestion or already that label)" if plan.n_skipped else ""
            if not len(plan):
                st.info(f"Nothing to do: {plan.action.describe(ctx.class_name)} changes none of the "
                        f"{plan.n_selected:,} examples{left_out}.")
                pending.pop(key, None)
            else:
                st.warning(
                    f"**{plan.action.describe(ctx.class_name).capitalize()}: {len(plan):,} examples**"
                    f"{left_out}. One journal write; you can undo it.", icon="⚠️",
                )
                ok, cancel, _ = st.columns([1, 1, 3])
                if ok.button(f"Confirm: {len(plan):,} examples", key=f"{key}_confirm", type="primary"):
                    _apply(ctx, plan, key)
                if cancel.button("Cancel", key=f"{key}_cancel"):
                    pending.pop(key, None)
                    st.rerun()
        last = st.session_state.get(K.BULK_LAST)
        if last is not None and last[2] == key:  # offered where the action was taken
            batch, description, _ = last
            if st.button(f"Undo the last bulk action ({description})", key=f"{key}_undo",
                         icon="↩️"):
                _undo(ctx, batch, description)


def _author() -> str:
    return str(st.session_state.get(K.W_AUTHOR, ""))


def _apply(ctx: D.RunContext, plan: bulk.BulkPlan, key: str) -> None:
    try:
        batch = bulk.apply_bulk(D.flag_journal(ctx.run_dir), plan, author=_author())
    except (ValueError, TypeError, TimeoutError, OSError, S.SchemaError) as exc:
        st.error(f"Nothing was saved: {exc}")
        return
    description = f"{plan.action.describe(ctx.class_name)}, {len(batch):,} examples"
    st.session_state[K.BULK_LAST] = (batch, description, key)
    st.session_state[K.BULK_PENDING] = {}
    st.session_state[K.FLASH] = f"Saved: {description}"
    st.rerun()


def _undo(ctx: D.RunContext, batch: FL.Batch, description: str) -> None:
    try:
        restored, skipped = bulk.undo_bulk(D.flag_journal(ctx.run_dir), batch, author=_author())
    except (ValueError, TypeError, TimeoutError, OSError, S.SchemaError) as exc:
        st.error(f"The undo was not saved: {exc}")
        return
    st.session_state.pop(K.BULK_LAST, None)
    note = f"; {len(skipped):,} edited since were left as they are" if skipped else ""
    st.session_state[K.FLASH] = f"Undone ({description}): {restored:,} examples restored{note}"
    st.rerun()
