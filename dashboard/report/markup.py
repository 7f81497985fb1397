"""HTML helpers of the report: escaping, number formatting, tables (no Plotly)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

SNIPPET_CHARS = 160
"""Characters of a text shown in a table."""


def escape_html(value: Any) -> str:
    """Text of ``value`` escaped for HTML (element content and quoted attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def is_missing(value: Any) -> bool:
    """Whether a cell is missing (None, ``pd.NA`` or a float NaN)."""
    if value is None or value is pd.NA:
        return True
    try:
        return bool(isinstance(value, float | np.floating) and np.isnan(value))
    except TypeError:
        return False


def equals(series: pd.Series, value: str) -> np.ndarray:
    """Bool array: ``series == value`` (vectorised for categorical and Arrow string columns)."""
    return (series == value).to_numpy(dtype=bool, na_value=False)


def format_value(value: Any, digits: int = 3) -> str:
    """A number as shown in the report (integers with thousands separators)."""
    if is_missing(value):
        return "—"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}f}" if math.isfinite(value) else str(float(value))
    return escape_html(value)


def snippet(value: Any, limit: int = SNIPPET_CHARS) -> str:
    """The first ``limit`` characters of a text, whitespace collapsed, escaped (empty if missing)."""
    if is_missing(value):
        return ""
    text = " ".join(str(value).split())
    return escape_html(text if len(text) <= limit else text[: limit - 1] + "…")


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    """An HTML table; ``header`` is escaped here, cells must already be HTML."""
    head = "".join(f"<th>{escape_html(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def count_cell(key: str, value: int) -> str:
    """A count with a ``data-key`` (tests read the report's numbers by it)."""
    return f'<span class="num" data-key="{escape_html(key)}">{int(value):,}</span>'


def value_counts_in_order(series: pd.Series, order: Sequence[str] = ()) -> list[tuple[str, int]]:
    """``(value, count)`` of a column: ``order`` first, then the rest sorted; missing as "—"."""
    raw = series.value_counts(dropna=False)
    counts: dict[str, int] = {}
    for value, n in raw.items():
        name = "—" if is_missing(value) else str(value)
        counts[name] = counts.get(name, 0) + int(n)
    names = [v for v in order if counts.get(v)] + sorted(v for v in counts if v not in order and counts[v])
    return [(name, counts[name]) for name in names]
