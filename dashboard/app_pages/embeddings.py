"""Embeddings: the UMAP projection of every split in one space, with the same linked selection."""

from __future__ import annotations

import streamlit as st

from analysis import projection_job
from analysis import schema as S
from dashboard import data as D
from dashboard import scatter as SC
from dashboard import widgets as W
from dashboard.text import code

PROGRESS_POLL_S = 1.5  # seconds between two reads of the background projection's progress

st.title("Embeddings")
ctx = W.get_context()
assert ctx.table is not None
if not D.has_projection(ctx.key, ctx.table):
    run = code(ctx.run_dir, limit=None)
    if not any((ctx.run_dir / S.FEATURES_DIR).glob("*.npy")):
        st.info(
            "**There is no projection: this run stores no features.** This page maps the model's "
            f"penultimate-layer features (`{S.FEATURES_DIR}/<split>.npy`) to 2-D. To get the map, "
            "store the features of every split with `capture_split` (`analysis.integrations`; see "
            f"docs/integrations.md), then run `datamap analyze` {run}. The Data map, OOD and "
            "Review pages work without it.", icon=":material/info:",
        )
    else:
        st.info(
            "**There is no projection yet.** This run stores features but was analysed without a "
            f"2-D map (`--projection none`). Compute the UMAP map with `datamap project` {run} (or "
            f"a quick PCA map with `datamap analyze` {run} `--projection pca`), then reload this "
            "page.", icon=":material/info:",
        )
    st.stop()
projection = projection_job.read_status(ctx.run_dir) or {}
shows_pca = projection.get("table_method") == "pca"
umap_pending = shows_pca and projection.get("state") in ("pending", "running", "failed")


@st.fragment(run_every=PROGRESS_POLL_S)
def render_projection_progress() -> None:
    """Progress of the background UMAP job; reruns the app once the table holds the UMAP map."""
    status = projection_job.read_status(ctx.run_dir) or {}
    if status.get("table_method") == "umap" or run_key_changed():
        st.rerun(scope="app")
    state = status.get("state")
    if state == "failed":
        st.warning(
            f"The UMAP map could not be computed ({status.get('error')}). Run "
            f"`datamap project {ctx.run_dir}` to retry and see the full error."
        )
        return
    fraction = float(status.get("fraction") or 0.0)
    step = status.get("step") or "waiting"
    if state == "pending" and step == "waiting for a worker":
        st.info(
            "The UMAP map has not been computed yet. `datamap serve` computes it in the background; "
            f"or run `datamap project {ctx.run_dir}`. This page updates when it is ready."
        )
    st.progress(min(max(fraction, 0.0), 1.0), text=f"UMAP map: {step} ({fraction:.0%})")


def run_key_changed() -> bool:
    """Whether ``table.parquet`` changed since this rerun loaded it."""
    try:
        return D.run_key(ctx.run_dir) != ctx.key
    except OSError:
        return False


if umap_pending:
    st.caption(
        "**PCA map (a stand-in)**: the first two principal components of the features, fitted on "
        "the training split. The UMAP map is being computed and replaces it here when ready."
    )
    render_projection_progress()
elif shows_pca:
    st.caption(
        "**PCA map**: the first two principal components of the features, fitted on the training "
        "split (the run was analysed with `--projection pca`)."
    )
else:
    st.caption(
        "UMAP of the penultimate-layer features: fitted on the training split, every other split "
        "transformed into the same space. OOD examples far from every class cluster stand out."
    )
W.render_linked_map(
    ctx,
    page="embeddings",
    x=S.UMAP_X,
    y=S.UMAP_Y,
    figure=SC.embedding_spec,
    figure_kwargs={},
    default_color=S.SPLIT,
    extreme_columns=tuple(D.ood_columns(ctx.table)[:2]),
)
