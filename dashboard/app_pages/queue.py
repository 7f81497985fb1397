"""Queue: review a ranked list one example at a time with the keyboard (a key per decision)."""

from __future__ import annotations

import streamlit as st

from dashboard import review_queue
from dashboard import widgets as W

st.title("Review queue")
ctx = W.get_context()
review_queue.render_queue(ctx)
