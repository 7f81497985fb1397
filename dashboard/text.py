"""Show strings that come from a run (split names, ids, paths, class and column names, error
messages quoting them) as text where Streamlit renders Markdown.

Streamlit renders captions, ``st.markdown``, alerts and image captions as GitHub-flavoured
Markdown with its own directives (``:red[...]``, ``:material/...:``, ``$...$``). A run is data
from anywhere: a split named ``![m](http://host/x)`` would make the viewer's browser fetch that
URL, and a backtick in an id would break out of a code span. :func:`md` escapes every Markdown
punctuation character and breaks what GFM would autolink (``http://``, ``www.``, ``@``) with an
invisible word joiner, so the string renders literally; :func:`code` makes an inline code span
that no backtick inside can close (nothing in a code span is interpreted).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["md", "code"]

_SPECIAL = re.compile(r"([\\`*_\[\]()<>#+\-.!|~$:&])")
_AUTOLINK = re.compile(r"(?i)(?<=:)(?=//)|(?<=www)(?=\.)|(?=@)")
"""Where GFM would turn plain text into a link (``http://``, ``www.``, ``name@host``)."""
WORD_JOINER = "\u2060"
"""Invisible, zero-width: put inside those spots so no link is made (GFM links them even when
every character is escaped)."""
_NEWLINES = re.compile(r"[\r\n\u2028\u2029]+")


def md(value: Any, *, limit: int | None = 300) -> str:
    """``str(value)`` escaped for Markdown, on one line, cut to ``limit`` characters.

    >>> md("![m](http://127.0.0.1:9/x)").replace(WORD_JOINER, "")
    '\\\\!\\\\[m\\\\]\\\\(http\\\\://127\\\\.0\\\\.0\\\\.1\\\\:9/x\\\\)'
    """
    text = _NEWLINES.sub(" ", str(value))
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return _SPECIAL.sub(r"\\\1", _AUTOLINK.sub(WORD_JOINER, text))


def code(value: Any, *, limit: int | None = 300) -> str:
    """``str(value)`` as an inline code span, on one line, cut to ``limit`` characters.

    The fence is one backtick longer than the longest run of backticks inside, so the value
    cannot end the span early.

    >>> code("a`b")
    '`` a`b ``'
    >>> code(42)
    '`42`'
    """
    text = _NEWLINES.sub(" ", str(value))
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    if not text.strip() or text.startswith("`") or text.endswith("`") or longest:
        text = f" {text} "
    return f"{fence}{text}{fence}"
