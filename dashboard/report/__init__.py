"""The shareable report of a run: one self-contained, offline HTML file (Plotly).

``datamap report RUN_DIR`` and the dashboard's "Download report" button both call
:func:`build_report`. The file embeds Plotly's JavaScript (no CDN, no font, no MathJax: it makes
no outside request of any kind) and holds:

* the run: splits and counts, classes, epochs, how the dynamics were recorded, when;
* the findings: region and diagnosis counts, the label-noise estimate (when
  ``analysis.noise`` is installed), OOD metrics per split;
* the data map and the embedding map: a density image of every row, a bounded uniform sample and
  the suspects (every one up to :data:`MAX_SUSPECT_POINTS`), hover showing id, label, suggested
  label and metrics;
* the OOD score histogram per split and ROC/PR curves per OOD split;
* the top suspects (mislabeled and OOD) with thumbnails or text snippets;
* the flags and relabels so far (counts and a table);
* the settings used and the command that reproduces the analysis.

Every number comes from ``analysis`` (the same functions the dashboard uses); this module only
arranges them. Every string from the run (ids, class and split names, texts, column names,
notes) is escaped. Figures are pure builders (``*_figure(...) -> go.Figure``); sections are pure
functions returning HTML text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import runstore
from analysis.dynamics import RegionThresholds
from dashboard.report.figures import (
    MAX_SAMPLE_POINTS,
    MAX_SUSPECT_POINTS,
    MapPoints,
    data_map_figure,
    embedding_figure,
    hover_lines,
    map_points,
    ood_curves,
    ood_curves_figure,
    ood_histogram_figure,
)
from dashboard.report.inputs import NOISE_MODULE, ReportInputs, load_inputs
from dashboard.report.markup import escape_html
from dashboard.report.sections import (
    findings_section,
    flags_section,
    label_noise_section,
    maps_section,
    ood_section,
    reproduce_command,
    run_section,
    settings_section,
    suspects_section,
)

__all__ = [
    "MAX_SAMPLE_POINTS",
    "MAX_SUSPECT_POINTS",
    "NOISE_MODULE",
    "MapPoints",
    "ReportInputs",
    "assemble_html",
    "build_report",
    "data_map_figure",
    "embedding_figure",
    "hover_lines",
    "label_noise_section",
    "load_inputs",
    "map_points",
    "ood_curves",
    "ood_curves_figure",
    "ood_histogram_figure",
    "reproduce_command",
    "settings_section",
    "write_report",
]


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#222;background:#fff}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{margin:8px 0 4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
nav a{margin-right:14px;color:#4C78A8}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border-bottom:1px solid #eee;padding:4px 10px;text-align:left;vertical-align:middle}
th{background:#f6f6f6}.num{font-variant-numeric:tabular-nums}
.cols{display:flex;flex-wrap:wrap;gap:40px}.cols>.wide{flex:1 1 560px}.note{color:#666;font-size:13px}
.thumb{width:48px;height:48px;object-fit:contain;image-rendering:pixelated;background:#f4f4f4}
pre{background:#f6f6f6;padding:8px 12px;overflow-x:auto}
.figure{min-height:380px;margin:12px 0}
table.suspects td:nth-child(n+2){white-space:nowrap}
"""
_RENDER_JS = """
(function(){
  for (const el of document.querySelectorAll('script[type="application/json"][data-figure]')) {
    const spec = JSON.parse(el.textContent);
    const div = document.getElementById(el.dataset.figure);
    Plotly.newPlot(div, spec.data, spec.layout, spec.config)
      .then(function(){ div.setAttribute('data-rendered', '1'); })
      .catch(function(err){ div.setAttribute('data-error', String(err)); });
  }
})();
"""


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def build_report(
    run_dir: str | os.PathLike[str],
    *,
    table: pd.DataFrame | None = None,
    latest_flags: pd.DataFrame | None = None,
    thresholds: RegionThresholds | None = None,
    ood_quantile: float | None = None,
) -> str:
    """The report of a run as one self-contained HTML document (see the module docstring).

    Parameters are those of :func:`load_inputs`.

    Returns
    -------
    str
        The HTML text (Plotly's JavaScript inline; a few MB).
    """
    inputs = load_inputs(run_dir, table=table, latest_flags=latest_flags, thresholds=thresholds,
                         ood_quantile=ood_quantile)
    return assemble_html(inputs)


def assemble_html(inputs: ReportInputs) -> str:
    """The HTML document of gathered inputs."""
    name = inputs.meta.task if inputs.meta is not None and inputs.meta.task else inputs.run_dir.name
    sections = [run_section(inputs), findings_section(inputs), maps_section(inputs),
                ood_section(inputs), suspects_section(inputs), flags_section(inputs),
                settings_section(inputs)]
    nav = "".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("run", "Run"), ("findings", "Findings"), ("maps", "Maps"), ("ood", "OOD"),
        ("suspects", "Suspects"), ("flags", "Flags"), ("settings", "Settings")))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        # no request of any kind: scripts, styles, images and fonts are inline or data: URLs
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; worker-src blob:\">"
        f"<title>datamap report: {escape_html(name)}</title><style>{_CSS}</style>"
        f"<script>{_plotly_js()}</script></head><body><main>"
        f"<h1>datamap report: {escape_html(name)}</h1><nav>{nav}</nav>"
        + "".join(sections)
        + "<p class='note'>Made by datamap. This file is self-contained: it works offline.</p>"
        + f"</main><script>{_RENDER_JS}</script></body></html>\n"
    )


def write_report(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, **options: Any,
) -> Path:
    """Build the report and write it atomically (default ``RUN_DIR/report.html``); returns the path."""
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    if path.is_dir():
        raise ValueError(f"Expected --out to name a file, got the directory {str(path)!r}.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"The folder of {str(path)!r} does not exist; create it first.")
    text = build_report(run_dir, **options)
    with runstore.atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
