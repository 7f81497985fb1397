"""Every ``st.session_state`` key the dashboard uses, named in one place.

Widget keys are prefixed ``w_`` (Streamlit owns their values); the others hold what the pages
share: the loaded run context, the current selection and the last export.
"""

from __future__ import annotations

# ---- shared, non-widget state ------------------------------------------------------------------
CONTEXT = "ctx"
"""The :class:`dashboard.data.RunContext` built by the router on every rerun."""
SELECTION = "selection"
"""``dict[page, Selection]``: the examples selected on each map page (all filtered rows inside
the lasso/box, not only the drawn sample)."""
LAST_SELECTION_PAGE = "selection_last_page"
"""The page whose selection the Export page offers."""
CHART_GENERATION = "chart_generation"
"""``dict[page, int]``: bumped to give a page's chart a fresh key (a new chart draws the kept
selection, e.g. the example an exact-id lookup opens)."""
EXPORT_RESULT = "export_result"
"""The last :class:`analysis.export.ExportResult` (download bytes and manifest)."""
REPORT = "report_html"
"""``(run key, HTML bytes)`` of the last report built on the Export page."""
EXPORT_FINGERPRINT = "export_fingerprint"
"""``(scope, fingerprint)`` of the last export (:func:`analysis.export.rows_fingerprint`): when the
current filter, selection, thresholds or journal give another fingerprint, the prepared download
is stale and is withdrawn."""
RANGE_DEFAULTS = "range_defaults"
"""``dict[widget key, (lo, hi)]``: the full range of each range slider, for "Reset filters"."""
KEPT = "kept_filter_values"
"""``dict[widget key, value]``: the last value of every slider or selectbox inside a sidebar
expander. The expanders render their widgets only while open (a closed expander sends nothing to
the browser), and Streamlit forgets the value of a widget that is not rendered, so the filters and
thresholds they set are kept here."""
FLAG_FORM_BASE = "flag_form_base"
"""``dict[form, analysis.flags.ExampleState]``: the journal state an open flag form was opened on
(with the row id it reflects), so that a save on a stale view is detected and still written."""
FLAG_FORM_NOTICE = "flag_form_notice"
"""``dict[form, str]``: a message for the next run of a flag form (an edit came in between)."""
BULK_PENDING = "bulk_pending"
"""``dict[widget key, (BulkPlan, ids digest)]``: a bulk action waiting for its confirmation."""
BULK_LAST = "bulk_last"
"""``(analysis.flags.Batch, description, widget key)``: this session's last bulk action, for the
"Undo" button of the widget it was taken in."""
QUEUE_POSITION = "queue_position"
"""``dict[queue, int]``: where the keyboard review queue stands in each ranked list."""
GALLERY_PAGE = "gallery_page"
"""``dict[gallery, int]``: the page each gallery shows."""
GALLERY_PICKS = "gallery_picks"
"""``dict[gallery, set[example id]]``: the examples picked in each gallery (across its pages)."""
EXPANDERS_OPEN = "expanders_open"
"""``dict[widget key, bool]``: whether each sidebar expander is open, so that it stays open (or
closed) on another page (:func:`dashboard.widgets.kept_expander`)."""
FLASH = "flash"
"""A one-shot message shown at the top of the next page run (e.g. "flag saved")."""

# ---- sidebar widgets -----------------------------------------------------------------------------
W_SPLITS = "w_filter_splits"
W_LABELS = "w_filter_labels"
W_REGIONS = "w_filter_regions"
W_DIAGNOSES = "w_filter_diagnoses"
W_RANGE_PREFIX = "w_filter_range_"
"""Followed by the column name: one slider per range-filtered metric."""
W_OOD_SCORE = "w_filter_ood_score"
W_OOD_RANGE = "w_filter_ood_range"
W_FLAGGED = "w_filter_flagged"
W_FLAG_VALUES = "w_filter_flag_values"
W_SEARCH = "w_filter_search"
W_CONF_THRESHOLD = "w_threshold_confidence"
W_VAR_THRESHOLD = "w_threshold_variability"
W_OOD_QUANTILE = "w_threshold_ood_quantile"
W_RESET_THRESHOLDS = "w_threshold_reset"
W_AUTHOR = "w_author"
W_EXPAND_THRESHOLDS = "w_expand_thresholds"
W_EXPAND_RANGES = "w_expand_ranges"
"""Open/closed state of the two sidebar expanders (``st.expander(..., on_change="rerun")``)."""

# ---- page widgets --------------------------------------------------------------------------------
W_COLOR_PREFIX = "w_color_"
W_CHART_PREFIX = "w_chart_"
W_TABLE_PREFIX = "w_table_"
W_FLAG_PREFIX = "w_flag_"
W_OOD_SCORER = "w_ood_scorer"
W_OOD_TOPK = "w_ood_topk"
W_REVIEW_KIND = "w_review_kind"
W_REVIEW_TABLE = "w_review_table"
W_REVIEW_LIMIT = "w_review_limit"
W_QUEUE_SOURCE = "w_queue_source"
W_VIEW_PREFIX = "w_view_"
"""Followed by a page name: show a selection as a table or a gallery."""
W_EXPORT_SCOPE = "w_export_scope"
W_EXPORT_FORMAT = "w_export_format"
W_EXPORT_CURATED = "w_export_curated"
W_EXPORT_APPLY_RELABELS = "w_export_apply_relabels"
W_REPORT_BUILD = "w_report_build"
W_REPORT_DOWNLOAD = "w_report_download"

FILTER_WIDGETS = (
    W_SPLITS,
    W_LABELS,
    W_REGIONS,
    W_DIAGNOSES,
    W_OOD_SCORE,
    W_OOD_RANGE,
    W_FLAGGED,
    W_FLAG_VALUES,
    W_SEARCH,
)
"""Keys cleared by "Reset filters" (the range sliders are found by their prefix)."""
