"""The report's sections: pure functions of :class:`~dashboard.report.inputs.ReportInputs`
returning HTML text (every string from the run escaped)."""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from analysis import diagnosis as DG
from analysis import flags as FL
from analysis import ood_eval
from analysis import schema as S
from analysis.dynamics import RegionThresholds
from dashboard.report.figures import (
    data_map_figure,
    embedding_figure,
    hover_lines,
    map_points,
    ood_curves,
    ood_curves_figure,
    ood_histogram_figure,
)
from dashboard.report.inputs import ReportInputs, ood_score_columns, suggested_column
from dashboard.report.markup import (
    count_cell,
    equals,
    escape_html,
    format_value,
    is_missing,
    snippet,
    table_html,
    value_counts_in_order,
)

TOP_SUSPECTS = 25
"""Rows of each top-suspects table."""
MAX_FLAG_ROWS = 200
"""Rows of the flags table (the most recent edits)."""
OOD_RANKING = (S.OOD_RMD, S.OOD_MAHALANOBIS, S.OOD_ENERGY, S.OOD_KNN, S.OOD_MAXLOGIT, S.OOD_MSP)
"""Score that ranks the OOD suspects: the first present (the Review page's order)."""
SOURCE_TEXT = {
    S.SOURCE_FORWARD_PASS: "logits of each training step's forward pass (as the original "
                           "cartography code)",
    S.SOURCE_EVAL_PASS: "an evaluation pass over the training set at the end of each epoch",
    S.SOURCE_CARTOGRAPHY: "imported from cartography dynamics_epoch_N.jsonl logs",
    S.SOURCE_SYNTHETIC: "synthetic (generated for tests and benchmarks)",
}
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "typesetMath": False,
                  "showLink": False, "showSendToCloud": False, "showEditInChartStudio": False}


def run_section(inputs: ReportInputs) -> str:
    """The run: task, classes, epochs, how the dynamics were recorded, when; splits and counts."""
    t, meta = inputs.table, inputs.meta
    facts: list[tuple[str, str]] = [("run directory", f"<code>{escape_html(inputs.run_dir)}</code>")]
    if meta is not None:
        facts += [
            ("task", escape_html(meta.task) or "—"),
            ("created", escape_html(meta.created_at)),
            ("epochs recorded", format_value(meta.n_epochs)),
            ("dynamics from", f"<code>{escape_html(meta.source)}</code>: "
                              f"{escape_html(SOURCE_TEXT.get(meta.source, ''))}"),
            ("classes", f"{meta.n_classes:,}: " + ", ".join(escape_html(c) for c in meta.class_names)),
        ]
    facts += [("examples", count_cell("n_examples", len(t))),
              ("report generated", escape_html(inputs.generated_at))]
    out = ["<section id='run'><h2>The run</h2>",
           table_html(("", ""), [(f"<b>{escape_html(k)}</b>", v) for k, v in facts], cls="facts")]
    if S.SPLIT in t.columns:
        rows = [(f"<code>{escape_html(name)}</code>", count_cell(f"split:{name}", n))
                for name, n in value_counts_in_order(t[S.SPLIT], (S.TRAIN_SPLIT, "test"))]
        out += ["<h3>Splits</h3>", table_html(("split", "examples"), rows)]
    if S.LABEL in t.columns and S.SPLIT in t.columns:
        labels = t[S.LABEL][equals(t[S.SPLIT], S.TRAIN_SPLIT)].dropna()
        if len(labels):
            counts = labels.astype(np.int64).value_counts().sort_index()
            rows = [(escape_html(inputs.class_name(k)), count_cell(f"class:{inputs.class_name(k)}", n))
                    for k, n in counts.items()]
            out += ["<h3>Training examples per class (given label)</h3>",
                    table_html(("class", "examples"), rows)]
    out.append("</section>")
    return "".join(out)


def findings_section(inputs: ReportInputs) -> str:
    """Region and diagnosis counts, the label-noise estimate and the OOD metrics per split."""
    t = inputs.table
    out = ["<section id='findings'><h2>Findings</h2><div class='cols'>"]
    if S.REGION in t.columns:
        rows = [(escape_html(name), count_cell(f"region:{name}", n))
                for name, n in value_counts_in_order(t[S.REGION], S.REGIONS)]
        out += ["<div><h3>Data-map regions</h3>", table_html(("region", "examples"), rows), "</div>"]
    if S.DIAGNOSIS in t.columns:
        counts = DG.counts(t[S.DIAGNOSIS])
        rows = [(escape_html(name), count_cell(f"diagnosis:{name}", n)) for name, n in counts.items()]
        out += ["<div><h3>Diagnosis</h3>", table_html(("diagnosis", "examples"), rows), "</div>"]
    out.append(ood_metrics_section(inputs.evaluation, source=inputs.evaluation_source))
    out.append("</div>")
    issues = inputs.settings.get("label_issues")
    out.append(label_noise_section(inputs.noise,
                                   resampled=issues.get("resampled") if isinstance(issues, Mapping) else None))
    out.append("</section>")
    return "".join(out)


def label_noise_section(estimate: Any, *, max_pairs: int = 10, resampled: Any = None) -> str:
    """The estimated label-noise rate overall and per class and the most confused pairs.

    ``estimate`` has ``rate``, ``per_class`` (class name -> rate), ``n_per_class`` (class name ->
    examples) and ``confused_pairs`` (``(given, suggested, count)``), as
    ``analysis.noise.estimate_label_noise`` returns; None gives an empty string (the section is
    left out). ``resampled``: ``ood_eval.json``'s ``label_issues.resampled`` (how stable the
    count is, ``analysis.noise.resampled_rates``), shown when its numbers are there.
    """
    if estimate is None:
        return ""
    rate = getattr(estimate, "rate", None)
    per_class = dict(getattr(estimate, "per_class", None) or {})
    n_per_class = dict(getattr(estimate, "n_per_class", None) or {})
    pairs = list(getattr(estimate, "confused_pairs", None) or [])
    out = ["<div id='label-noise'><h3>Label noise (estimated)</h3>"]
    if rate is not None and not is_missing(rate):
        out.append(f"<p>Estimated rate of wrong labels: <span class='num' data-key='noise:rate'>"
                   f"{float(rate):.1%}</span>.</p>")
    low, high = (resampled.get("low"), resampled.get("high")) if isinstance(resampled, Mapping) else (None, None)
    if isinstance(low, int | float) and isinstance(high, int | float) and not is_missing(low) \
            and not is_missing(high):
        out.append(f"<p class='note'>Refitted on bootstrap resamples, the mixture flags "
                   f"<span data-key='noise:resampled'>{float(low):.1%}-{float(high):.1%}</span> of the "
                   "training rows (10th-90th percentile)"
                   + ("." if resampled.get("stable") is not False else
                      ": <b>unstable</b>. The losses do not split into clean and wrong labels "
                      "clearly, so the number of suspects is uncertain; the count is the median of "
                      "the resampled rates.") + "</p>")
    if per_class:
        rows = [(escape_html(name), f"<span class='num' data-key='noise:class:{escape_html(name)}'>"
                             f"{float(r):.1%}</span>",
                 format_value(n_per_class.get(name)))
                for name, r in sorted(per_class.items(), key=lambda kv: -float(kv[1]))]
        out.append(table_html(("class", "estimated noise", "examples"), rows))
    if pairs:
        top = sorted(pairs, key=lambda p: -int(p[2]))[:max_pairs]
        rows = [(escape_html(given), escape_html(suggested), count_cell(f"noise:pair:{given}>{suggested}", n))
                for given, suggested, n in top]
        out += ["<h4>Most confused class pairs</h4>",
                table_html(("given label", "suggested label", "examples"), rows)]
    out.append("</div>")
    return "".join(out)


def ood_metrics_section(evaluation: Mapping[str, Any] | None, *, source: str = "") -> str:
    """AUROC, AUPR-in/out and FPR@95 of every score per OOD split (and overall)."""
    metrics = (evaluation or {}).get("metrics") or {}
    if not metrics:
        skipped = (evaluation or {}).get("skipped") or []
        why = "; ".join(escape_html(s) for s in skipped) or "the run has no OOD scores or no ground truth"
        return f"<div id='ood-metrics'><h3>OOD detection</h3><p>Not evaluated: {why}.</p></div>"
    rows = []
    for col, per in metrics.items():
        for group, m in per.items():
            key = f"{col}:{group}"
            rows.append((
                f"<code>{escape_html(col)}</code>", escape_html(group),
                f"<span class='num' data-key='auroc:{escape_html(key)}'>{format_value(m.get('auroc'))}</span>",
                format_value(m.get("aupr_in")), format_value(m.get("aupr_out")), format_value(m.get("fpr95")),
                format_value(m.get("n_id")), format_value(m.get("n_ood")),
            ))
    definition = escape_html((evaluation or {}).get("fpr95_definition", "ood_accepted_at_95_id"))
    return ("<div id='ood-metrics' class='wide'><h3>OOD detection (OOD is the positive class)</h3>"
            + table_html(("score", "OOD split", "AUROC", "AUPR-in", "AUPR-out", "FPR@95", "n ID",
                           "n OOD"), rows)
            + f"<p class='note'>From {escape_html(source)}. FPR@95 reading: <code>{definition}</code>. "
              "In-distribution rows: the held-out <code>test</code> split (training rows fitted "
              "the scorers).</p></div>")


def _image_urls(values: pd.Series, run_dir: Path) -> list[str | None]:
    """Thumbnail ``data:`` URLs of an image column (:func:`dashboard.data.image_data_urls`).

    That module imports Streamlit, whose caches log "no runtime" warnings outside a running app
    (meaningless here): it is imported only when a run has images, with logging held back.
    """
    import logging

    logging.disable(logging.WARNING)
    try:
        from dashboard import data

        return data.image_data_urls(values, run_dir)
    finally:
        logging.disable(logging.NOTSET)


def _payload_cells(inputs: ReportInputs, rows: np.ndarray) -> list[str]:
    """A thumbnail (``<img>`` with a ``data:`` URL) or a text snippet per row."""
    t = inputs.table
    if S.IMAGE in t.columns:
        urls = _image_urls(t[S.IMAGE].iloc[rows], inputs.run_dir)
        return [f'<img class="thumb" alt="" src="{escape_html(u)}">' if u else "" for u in urls]
    if S.TEXT in t.columns:
        return [snippet(v) for v in t[S.TEXT].iloc[rows].tolist()]
    return [""] * len(rows)


def _id_key(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _flag_lookup(latest: pd.DataFrame) -> dict[Any, str]:
    """``example_id -> flag`` of the examples with a current flag."""
    if latest is None or not len(latest) or FL.FLAG not in latest.columns:
        return {}
    have = latest[latest[FL.FLAG].notna()]
    return {_id_key(i): str(f) for i, f in zip(have[S.EXAMPLE_ID], have[FL.FLAG], strict=True)}


def _ranked(table: pd.DataFrame, kind: str, columns: Sequence[str], *, ascending: bool,
            k: int) -> tuple[np.ndarray, str | None, int]:
    """Rows diagnosed ``kind``, the ``k`` first by the first present column of ``columns``."""
    if S.DIAGNOSIS not in table.columns:
        return np.zeros(0, dtype=np.int64), None, 0
    rows = np.flatnonzero(equals(table[S.DIAGNOSIS], kind))
    total = int(rows.size)
    col = next((c for c in columns if c in table.columns), None)
    if col is not None and rows.size:
        vals = table[col].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
        vals = np.where(np.isnan(vals), np.inf, vals if ascending else -vals)
        if rows.size > k:  # partial sort: the k first, then order them
            keep = np.argpartition(vals, k - 1)[:k]
            rows, vals = rows[keep], vals[keep]
        rows = rows[np.argsort(vals, kind="stable")]
    return rows[:k], col, total


def suspects_section(inputs: ReportInputs, *, k: int = TOP_SUSPECTS) -> str:
    """The top suspects: mislabeled (lowest AUM first) and OOD (highest score first)."""
    t = inputs.table
    suggested = suggested_column(t)
    out = ["<section id='suspects'><h2>Top suspects</h2><div class='cols'>"]
    for kind, title, columns, ascending in (
        (DG.SUSPECT_MISLABELED, "Suspected mislabeled", (S.AUM, S.CONFIDENCE), True),
        (DG.SUSPECT_OOD, "Suspected out-of-distribution", OOD_RANKING, False),
    ):
        rows, col, total = _ranked(t, kind, columns, ascending=ascending, k=k)
        out.append(f"<div><h3 id='{kind}'>{escape_html(title)}: "
                   f"{count_cell(f'suspects:{kind}', total)}</h3>")
        if not rows.size:
            out.append("<p>None.</p></div>")
            continue
        payload = _payload_cells(inputs, rows)
        flag_of = _flag_lookup(inputs.latest_flags)
        predicted = S.FINAL_PRED in t.columns and kind == DG.SUSPECT_MISLABELED
        header = ["", "example_id", "split", "label"] + (["suggested"] if suggested else []) + \
            (["model predicts"] if predicted else []) + ([col] if col else []) + ["confidence", "flag"]
        body = []
        for r, cell in zip(rows.tolist(), payload, strict=True):
            rec = t.iloc[r]
            line = [cell, f"<code>{escape_html(rec[S.EXAMPLE_ID])}</code>", escape_html(rec.get(S.SPLIT)),
                    escape_html(inputs.class_name(rec.get(S.LABEL)))]
            if suggested:
                line.append(escape_html(inputs.class_name(rec.get(suggested))))
            if predicted:
                line.append(escape_html(inputs.class_name(rec.get(S.FINAL_PRED))))
            if col:
                line.append(format_value(rec.get(col)))
            line += [format_value(rec.get(S.CONFIDENCE)), escape_html(flag_of.get(_id_key(rec[S.EXAMPLE_ID]), ""))]
            body.append(line)
        shown = f"the first {len(rows):,} of {total:,}" if total > len(rows) else f"all {total:,}"
        ranked = f", ranked by <code>{escape_html(col)}</code> ({'lowest' if ascending else 'highest'} first)" \
            if col else ""
        out += [table_html(header, body, cls="suspects"),
                f"<p class='note'>Showing {shown}{ranked}.</p></div>"]
    out.append("</div></section>")
    return "".join(out)


def flags_section(inputs: ReportInputs, *, max_rows: int = MAX_FLAG_ROWS) -> str:
    """The person's flags and relabels so far: counts and a table of the latest state."""
    latest = inputs.latest_flags
    out = ["<section id='flags'><h2>Flags and relabels</h2>"]
    flags = latest[FL.FLAG].dropna().astype(str) if len(latest) else pd.Series(dtype=str)
    n_relabels = int(latest[FL.NEW_LABEL].notna().sum()) if len(latest) else 0
    n_notes = int(latest[FL.NOTE].notna().sum()) if len(latest) else 0
    rows = [(escape_html(f), count_cell(f"flag:{f}", int((flags == f).sum()))) for f in FL.FLAG_VALUES]
    rows += [("relabelled", count_cell("flag:relabelled", n_relabels)),
             ("with a note", count_cell("flag:noted", n_notes)),
             ("examples edited", count_cell("flag:examples", len(latest))),
             ("journal entries", count_cell("flag:entries", inputs.journal_edits))]
    out.append(table_html(("", "examples"), rows))
    if len(latest):
        recent = latest.iloc[::-1].head(max_rows)
        body = [(f"<code>{escape_html(r[S.EXAMPLE_ID])}</code>", escape_html("" if is_missing(r[FL.FLAG]) else r[FL.FLAG]),
                 "" if is_missing(r[FL.NEW_LABEL]) else escape_html(inputs.class_name(r[FL.NEW_LABEL])),
                 snippet(r[FL.NOTE]), escape_html(r[FL.AUTHOR]), escape_html(r[FL.AT]))
                for _, r in recent.iterrows()]
        out.append(table_html(("example_id", "flag", "new label", "note", "author", "at (UTC)"),
                               body, cls="flags"))
        if len(latest) > max_rows:
            out.append(f"<p class='note'>The {max_rows:,} most recent of {len(latest):,} edited "
                       "examples.</p>")
    else:
        out.append("<p>No flags or relabels yet.</p>")
    out.append(f"<p class='note'>Journal: <code>{escape_html(inputs.run_dir / S.FLAGS_FILE)}</code> "
               "(append-only SQLite).</p></section>")
    return "".join(out)


def _setting_value(value: Any) -> str:
    if isinstance(value, float):
        return escape_html(f"{value:.6g}")
    if isinstance(value, list | tuple | dict):
        return f"<code>{escape_html(json.dumps(value))}</code>"
    return escape_html(value)


def reproduce_command(inputs: ReportInputs) -> str:
    """The ``datamap analyze`` command that recomputes this analysis (plain text, unescaped)."""
    parts = ["datamap", "analyze", shlex.quote(str(inputs.run_dir))]
    th = inputs.region_thresholds
    if th is not None and th != RegionThresholds():
        parts += ["--confidence-threshold", f"{th.confidence:g}",
                  "--variability-threshold", f"{th.variability:g}"]
    if not inputs.settings:
        return " ".join(parts + ["--no-ood"])
    scores = [c.removeprefix(S.OOD_PREFIX) for c in ood_score_columns(inputs.table)]
    if scores:
        parts += ["--ood-scorers", shlex.quote(",".join(scores))]
    score = inputs.settings.get("score_column")
    if score:
        parts += ["--ood-scorer", shlex.quote(str(score).removeprefix(S.OOD_PREFIX))]
    quantile = inputs.ood_quantile if inputs.ood_quantile is not None else inputs.settings.get("ood_quantile")
    if quantile is not None:
        parts += ["--ood-quantile", f"{float(quantile):g}"]
    if inputs.settings.get("calibrate_on", "all") == "all":  # absent: analysed before the option
        parts += ["--ood-calibration", "all"]
    return " ".join(parts)


def settings_section(inputs: ReportInputs) -> str:
    """The settings used (region thresholds, the diagnosis section of ``ood_eval.json``) and the
    command that reproduces the analysis."""
    th = inputs.region_thresholds
    rows = [("region thresholds",
             (f"confidence {th.confidence:g}, variability {th.variability:g}" if th else "—")
             + f" <span class='note'>({escape_html(inputs.region_note)})</span>")]
    if inputs.ood_quantile is not None:
        rows.append(("OOD quantile set in the dashboard", escape_html(f"{inputs.ood_quantile:g}")))
    rows += [(f"<code>{escape_html(k)}</code>", _setting_value(v)) for k, v in inputs.settings.items()]
    out = ["<section id='settings'><h2>Settings</h2>",
           f"<p>Diagnosis settings from <code>{escape_html(S.OOD_EVAL_FILE)}</code>"
           + ("" if inputs.settings else " (absent: the run was analysed without the OOD stage)")
           + ":</p>",
           table_html(("setting", "value"), rows, cls="facts"),
           "<p>Reproduce the analysis:</p>",
           f"<pre id='reproduce'>{escape_html(reproduce_command(inputs))}</pre>",
           "<p class='note'>The run does not record the projection method (<code>--projection"
           "</code>, default umap) or scorer options such as <code>--knn-k</code>; add them if "
           "the analysis used others.</p>",
           "<p>and this report: <code>"
           + escape_html(f"datamap report {shlex.quote(str(inputs.run_dir))}") + "</code></p>"]
    learned = inputs.settings.get("learned_ood_quantile")
    if learned is not None and not math.isclose(float(learned), 0.995):
        out.append("<p class='note'>The learned-example quantile differs from the default: pass "
                   "it as <code>AnalyzeOptions(extra={'learned_ood_quantile': ...})</code>.</p>")
    out.append("</section>")
    return "".join(out)


def _figure_block(fig_id: str, fig: go.Figure, caption: str = "") -> str:
    spec = fig.to_plotly_json()
    payload = pio.to_json({"data": spec["data"], "layout": spec["layout"], "config": _PLOTLY_CONFIG},
                          validate=False)
    # plotly's JSON writer escapes <, > and / as \\u003c..., so the text cannot close the script
    return (f'<div class="figure" id="{fig_id}"></div>'
            + (f"<p class='note'>{caption}</p>" if caption else "")
            + f'<script type="application/json" data-figure="{fig_id}">{payload}</script>')


def maps_section(inputs: ReportInputs) -> str:
    """The data map and the embedding map (density of every row, a sample and the suspects)."""
    t = inputs.table
    suggested = suggested_column(t)
    out = ["<section id='maps'><h2>Maps</h2>"]
    for key, x, y, builder, what in (
        ("data_map", S.VARIABILITY, S.CONFIDENCE, "data", "Variability and confidence of p(gold) "
                                                           "across epochs (Swayamdipta et al., 2020)."),
        ("embedding_map", S.UMAP_X, S.UMAP_Y, "embedding", "The 2-D projection of the features; "
                                                            "every split in one space."),
    ):
        if x not in t.columns or y not in t.columns:
            continue
        points = map_points(t, x=x, y=y)
        if points.n_drawable == 0:
            continue
        hover = hover_lines(t, points.rows, class_names=inputs.class_names_of, suggested=suggested)
        fig = (data_map_figure(t, points, thresholds=inputs.region_thresholds, hover=hover)
               if builder == "data" else
               embedding_figure(t, points, hover=hover, score=inputs.settings.get("score_column")))
        suspects = (f"every suspect ({points.n_suspects:,})"
                    if points.n_suspects == points.n_suspects_drawn else
                    f"{points.n_suspects_drawn:,} of {points.n_suspects:,} suspects (a uniform sample)")
        caption = (f"{escape_html(what)} The shaded layer shows where all {points.n_drawable:,} examples "
                   f"lie (darker = more); points: {suspects} and a uniform sample of "
                   f"{len(points.rows) - points.n_suspects_drawn:,} others. Hover a point for its "
                   "id, labels and metrics; click a legend entry to hide a group.")
        out.append(_figure_block(f"fig-{key}", fig, caption))
    out.append("</section>")
    return "".join(out)


def ood_section(inputs: ReportInputs) -> str:
    """The OOD score histogram per split and ROC/PR curves of the diagnosis' score."""
    t = inputs.table
    scores = ood_score_columns(t)
    if not scores:
        return ""
    score = inputs.settings.get("score_column")
    if score not in scores:
        metrics = (inputs.evaluation or {}).get("metrics") or {}
        aurocs = {c: ((metrics.get(c) or {}).get(ood_eval.OVERALL) or {}).get("auroc") for c in scores}
        known = {c: a for c, a in aurocs.items() if isinstance(a, int | float)}
        score = max(known, key=lambda c: known[c]) if known else scores[0]
    out = ["<section id='ood'><h2>Out-of-distribution scores</h2>",
           _figure_block("fig-ood_histogram", ood_histogram_figure(t, str(score)),
                         "Bars are fractions of each split; every row is counted.")]
    curves = ood_curves(t, str(score))
    if curves:
        out.append(_figure_block("fig-ood_curves", ood_curves_figure(curves, score=str(score)),
                                 "In-distribution: held-out non-OOD rows (test); positive: each "
                                 "OOD split."))
    out.append("</section>")
    return "".join(out)
