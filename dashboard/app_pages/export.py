"""Export: the current filter or selection as CSV/Parquet, downloaded and saved with a manifest."""

from __future__ import annotations

import streamlit as st

from analysis import export as E
from analysis import schema as S
from dashboard import data as D
from dashboard import state as K
from dashboard import widgets as W
from dashboard.text import code, md

PAGE_TITLES = {"data_map": "Data map", "embeddings": "Embeddings"}

st.title("Export")
ctx = W.get_context()
assert ctx.table is not None and ctx.mask is not None

selections = st.session_state.get(K.SELECTION, {})
sel_page = st.session_state.get(K.LAST_SELECTION_PAGE)
sel = selections.get(sel_page) if sel_page else None
scopes = {f"current filter ({ctx.n_filtered:,} examples)": "filter"}
if sel is not None and len(sel):
    n_sel = int((ctx.table[S.EXAMPLE_ID].isin(sel.ids).to_numpy() & ctx.mask).sum())
    scopes[f"current selection on {PAGE_TITLES.get(sel_page, sel_page)} ({n_sel:,} examples)"] = "selection"
else:
    st.caption("Select examples with a lasso or box on the Data map or Embeddings page to export a selection.")

st.markdown(f"**Filter:** {md(ctx.spec.describe(), limit=None) if ctx.spec is not None else 'all examples'}")
with st.form("export_form", border=True):
    scope_label = st.radio("what", list(scopes), key=K.W_EXPORT_SCOPE)
    fmt = st.radio("format", ["csv", "parquet"], horizontal=True, key=K.W_EXPORT_FORMAT,
                   format_func=lambda f: {"csv": "CSV", "parquet": "Parquet"}[f])
    curated = st.checkbox(
        "curated training set: train split only, drop suspects (suspect_mislabeled, suspect_ood) "
        "unless flagged `keep` or relabelled, drop examples flagged ood or mislabeled (without a "
        "relabel); the label as given goes to `given_label`",
        key=K.W_EXPORT_CURATED,
    )
    relabel = st.checkbox("apply relabels (curated set)", value=True, key=K.W_EXPORT_APPLY_RELABELS)
    submitted = st.form_submit_button("Prepare export", type="primary")


def _fingerprint(scope: str) -> str:
    """What the file of ``scope`` depends on: its rows, the thresholds and the journal's size."""
    rows = ctx.mask
    if scope == "selection":
        if sel is None:
            return "no selection"
        rows = rows & ctx.table[S.EXAMPLE_ID].isin(sel.ids).to_numpy()
    return E.rows_fingerprint(
        rows, scope=scope, selection_page=sel_page if scope == "selection" else None,
        confidence=ctx.thresholds.confidence, variability=ctx.thresholds.variability,
        ood_quantile=ctx.ood_quantile, journal_rows=D.flag_journal(ctx.run_dir).count(),
    )


if submitted:
    scope = scopes.get(scope_label, "filter")
    with st.spinner("Writing the export…"):
        try:
            result = E.export_subset(
                ctx.run_dir, ctx.table, ctx.mask, fmt=fmt, filter_spec=ctx.spec,
                selection_ids=(sel.ids.tolist() if scope == "selection" and sel is not None else None),
                flags=ctx.latest_flags, curated=curated, apply_relabels=relabel,
                # `region` and `diagnosis` are recomputed at the sidebar thresholds (the
                # diagnosis with the analysis' OOD quantiles): record them so the manifest's
                # filter reproduces the rows.
                context={"region_thresholds": {"confidence": ctx.thresholds.confidence,
                                               "variability": ctx.thresholds.variability},
                         "diagnosis_ood_quantile": ctx.ood_quantile},
            )
        except (ValueError, FileExistsError, OSError, S.SchemaError) as exc:
            st.session_state.pop(K.EXPORT_RESULT, None)
            st.session_state.pop(K.EXPORT_FINGERPRINT, None)
            st.error(f"The export failed: {md(exc, limit=None)}")
        else:
            st.session_state[K.EXPORT_RESULT] = result
            st.session_state[K.EXPORT_FINGERPRINT] = (scope, _fingerprint(scope))

result = st.session_state.get(K.EXPORT_RESULT)
if result is not None:
    scope, fingerprint = st.session_state.get(K.EXPORT_FINGERPRINT, ("filter", None))
    if _fingerprint(scope) != fingerprint:
        # the filter, the selection, the thresholds or the flags changed: the file no longer
        # holds what the page shows, so it is not offered any more
        st.session_state.pop(K.EXPORT_RESULT, None)
        st.session_state.pop(K.EXPORT_FINGERPRINT, None)
        st.warning(
            f"The {'selection' if scope == 'selection' else 'filter'} or the flags changed since "
            f"{code(result.path.name)} ({result.n_rows:,} rows) was prepared, so it is no longer "
            "offered here (it stays on disk). Prepare the export again.",
            icon="⚠️",
        )
        result = None
if result is not None:
    rows = result.manifest.get("rows", {})
    st.success(f"{rows.get('exported', 0):,} rows saved to {code(result.path, limit=None)} (manifest: {code(result.manifest_path.name)}).")
    mime = "text/csv" if result.path.suffix == ".csv" else "application/vnd.apache.parquet"
    data_col, zip_col, manifest_col = st.columns(3)
    data_col.download_button(
        f"Download {result.path.name} ({len(result.data) / 1e6:.2f} MB)",
        data=result.data, file_name=result.path.name, mime=mime, on_click="ignore",
        type="primary", icon="⬇️", width="stretch",
    )
    zip_col.download_button(
        f"Download {result.zip_name} (data + manifest)",
        data=result.zip_bytes(), file_name=result.zip_name, mime="application/zip",
        on_click="ignore", icon="🗜️", width="stretch",
    )
    manifest_col.download_button(
        f"Download {result.manifest_path.name}",
        data=result.manifest_bytes, file_name=result.manifest_path.name, mime="application/json",
        on_click="ignore", icon="🧾", width="stretch",
    )
    st.subheader("Manifest")
    st.json(result.manifest, expanded=1)


# ---- the shareable report ----------------------------------------------------------------------------
st.subheader("Report")
st.caption("One HTML file with the run, its findings, both maps, the OOD curves, the top suspects, "
           "your flags and the settings: it opens offline in any browser (same as "
           f"`datamap report` {code(ctx.run_dir, limit=None)}). Thresholds as set in the sidebar; every example, "
           "not only the filtered ones.")
if st.button("Build report", key=K.W_REPORT_BUILD):
    from dashboard import report

    with st.spinner("Building the report…"):
        try:
            html_text = report.build_report(
                ctx.run_dir, table=ctx.table, latest_flags=ctx.latest_flags,
                thresholds=ctx.thresholds, ood_quantile=ctx.ood_quantile)
        except (ValueError, OSError, S.SchemaError) as exc:
            st.session_state.pop(K.REPORT, None)
            st.error(f"The report failed: {md(exc, limit=None)}")
        else:
            st.session_state[K.REPORT] = (ctx.key, html_text.encode("utf-8"))
built = st.session_state.get(K.REPORT)
if built is not None and built[0] == ctx.key:
    st.download_button(
        f"Download report ({len(built[1]) / 1e6:.1f} MB)", data=built[1],
        file_name=f"datamap-report-{ctx.run_dir.name}.html", mime="text/html", on_click="ignore",
        type="primary", key=K.W_REPORT_DOWNLOAD,
    )
