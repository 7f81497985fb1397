"""A gallery of examples: thumbnails (or text snippets) with given label, suggested label and a
key metric, paged on the server, with multi-select feeding the bulk actions.

Only the shown page's rows are read and decoded, so the gallery of a million-row selection costs
what one page costs. Picks are kept per gallery (by example id) across pages and reruns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from analysis import evidence
from analysis import schema as S
from dashboard import data as D
from dashboard import state as K
from dashboard.bulk_actions import render_bulk_actions

COLUMNS = 6
PAGE_SIZE = 24
THUMB_PX = 96


def page_bounds(n_rows: int, page: int, page_size: int = PAGE_SIZE) -> tuple[int, int, int, int]:
    """``(page, n_pages, start, stop)`` of page ``page`` (clipped to the valid pages) of ``n_rows``.

    Examples
    --------
    >>> page_bounds(50, 2, 24)
    (2, 3, 48, 50)
    >>> page_bounds(50, 9, 24)
    (2, 3, 48, 50)
    >>> page_bounds(0, 0, 24)
    (0, 1, 0, 0)
    """
    if page_size < 1:
        raise ValueError(f"Expected `page_size` >= 1, got {page_size}.")
    n_pages = max(1, -(-n_rows // page_size))
    page = min(max(int(page), 0), n_pages - 1)
    start = page * page_size
    return page, n_pages, start, min(start + page_size, n_rows)


def _tile_caption(ctx: D.RunContext, row: int, suggested: Any, metric: str | None) -> str:
    assert ctx.table is not None
    t = ctx.table
    given = ctx.class_name(t[S.LABEL].iloc[row]) if S.LABEL in t.columns else "—"
    text = f"{t[S.EXAMPLE_ID].iloc[row]} · {given}"
    if suggested is not None and not pd.isna(suggested):
        text += f"→{ctx.class_name(suggested)}"
    if metric is not None and metric in t.columns:
        value = t[metric].iloc[row]
        if not pd.isna(value):
            text += f" · {float(value):.2f}"
    return text


def render_gallery(ctx: D.RunContext, rows: np.ndarray, *, key: str, metric: str | None = None,
                   what: str = "listed") -> list[Any]:
    """A paged gallery of ``rows`` (positions, in order) with picks; returns the picked ids.

    The gallery is a fragment: turning a page or ticking a tile reruns only the gallery (not the
    sidebar, the page above it or a map), so the browser redraws only the tiles. A bulk action
    taken on the picks reruns the whole app.
    """
    _gallery(ctx, rows, key=key, metric=metric, what=what)
    return sorted(st.session_state.get(K.GALLERY_PICKS, {}).get(key, set()), key=str)


@st.fragment
def _gallery(ctx: D.RunContext, rows: np.ndarray, *, key: str, metric: str | None, what: str) -> None:
    assert ctx.table is not None
    t = ctx.table
    pages: dict[str, int] = st.session_state.setdefault(K.GALLERY_PAGE, {})
    picks: dict[str, set[Any]] = st.session_state.setdefault(K.GALLERY_PICKS, {})
    picked = picks.setdefault(key, set())
    page, n_pages, start, stop = page_bounds(len(rows), pages.get(key, 0))
    pages[key] = page
    shown = rows[start:stop]
    ids = t[S.EXAMPLE_ID].to_numpy()
    try:  # only the page's rows of the one column it reads (not a copy of every column)
        label_cols = [c for c in (evidence.SUGGESTED_LABEL, S.FINAL_PRED) if c in t.columns][:1]
        suggested = evidence.suggested_labels(t[label_cols].iloc[shown]).tolist()
    except ValueError:
        suggested = [None] * len(shown)
    page_ids = [i.item() if hasattr(i, "item") else i for i in ids[shown]]
    # cached thumbnails sent inline (data URLs): no image decoded again, no request per tile
    thumbs = (D.image_data_urls(t[S.IMAGE].iloc[shown], ctx.run_dir, key=ctx.key, rows=shown)
              if S.IMAGE in t.columns else [None] * len(shown))
    nav_prev, nav_text, nav_next, pick_page, clear_picks = st.columns([1, 2, 1, 1.2, 1.2],
                                                                     vertical_alignment="center")
    nav_prev.button("◀ Previous", key=f"{key}_prev", disabled=page == 0, width="stretch",
                    on_click=_turn, args=(key, page - 1))
    nav_text.markdown(f"Page **{page + 1}** of {n_pages:,} · examples {start + 1 if len(shown) else 0:,}–"
                      f"{stop:,} of {len(rows):,} · **{len(picked):,} picked**",
                      help="Each tile: example id · given label→suggested label"
                           + (f" · {metric}" if metric else "") + ". Tick tiles to pick them for a "
                           "bulk action; picks are kept across pages.")
    nav_next.button("Next ▶", key=f"{key}_next", disabled=page >= n_pages - 1, width="stretch",
                    on_click=_turn, args=(key, page + 1))
    pick_page.button("Pick this page", key=f"{key}_pick_page", width="stretch",
                     on_click=_pick, args=(key, page_ids, True))
    clear_picks.button("Clear picks", key=f"{key}_clear_picks", width="stretch", disabled=not picked,
                       on_click=_pick, args=(key, None, False))
    for line in range(0, len(shown), COLUMNS):
        cols = st.columns(COLUMNS)
        for col, pos in zip(cols, range(line, min(line + COLUMNS, len(shown))), strict=False):
            row = int(shown[pos])
            eid = page_ids[pos]
            with col:
                _tile(ctx, row, thumbs[pos])
                box_key = _box_key(key, eid)
                if box_key not in st.session_state:
                    st.session_state[box_key] = eid in picked
                st.checkbox(_tile_caption(ctx, row, suggested[pos], metric), key=box_key,
                            on_change=_toggle, args=(key, eid, box_key))
    if picked:
        render_bulk_actions(ctx, np.asarray(sorted(picked, key=str), dtype=object), key=f"{key}_bulk",
                            what="the gallery's picks")


def _turn(key: str, page: int) -> None:
    st.session_state.setdefault(K.GALLERY_PAGE, {})[key] = page


def _toggle(key: str, eid: Any, box_key: str) -> None:
    picked: set[Any] = st.session_state.setdefault(K.GALLERY_PICKS, {}).setdefault(key, set())
    if st.session_state.get(box_key):
        picked.add(eid)
    else:
        picked.discard(eid)


def _pick(key: str, ids: Sequence[Any] | None, value: bool) -> None:
    """Pick every id of ``ids`` (or clear every pick: ``ids`` None) and set their checkboxes."""
    picked: set[Any] = st.session_state.setdefault(K.GALLERY_PICKS, {}).setdefault(key, set())
    if value and ids is not None:
        picked.update(ids)
    else:
        picked.clear()
    if value and ids is not None:
        for eid in ids:
            st.session_state[_box_key(key, eid)] = True
    else:
        prefix = _box_key(key, "")
        for name in [k for k in st.session_state if str(k).startswith(prefix)]:
            st.session_state[name] = False


def _box_key(key: str, eid: Any) -> str:
    return f"{key}_box_{eid}"


def _tile(ctx: D.RunContext, row: int, thumbnail: str | None) -> None:
    """One tile: the image's thumbnail (a ``data:`` URL), else a text snippet, else a note."""
    assert ctx.table is not None
    t = ctx.table
    if thumbnail is not None:
        st.image(thumbnail, width=THUMB_PX)
        return
    if S.TEXT in t.columns and isinstance(t[S.TEXT].iloc[row], str):
        st.text(t[S.TEXT].iloc[row][:200])
        return
    st.caption("(no image or text)")
