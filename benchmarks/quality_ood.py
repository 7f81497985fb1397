"""Quality of the OOD scores and the projection on a run with ground truth.

    .venv/bin/python benchmarks/quality_ood.py [RUN_DIR]      # default sample_data/run

Prints a markdown table: OOD AUROC (and AUPR-out, FPR@95 in the classic reading) per scorer per
OOD split and overall, from ``RUN_DIR/table.parquet`` (analysed first if missing or without OOD
columns), and the trustworthiness (``sklearn.manifold.trustworthiness``, 10 neighbours) of the
``umap_x``/``umap_y`` map on a sample of rows with features (target >= 0.9 on the train and test
splits; OOD splits and all splits together are reported).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import ood_eval, runstore  # noqa: E402
from analysis import schema as S  # noqa: E402

TRUSTWORTHINESS_TARGET = 0.9
SAMPLE_ROWS = 2000


def _table(run_dir: Path) -> Any:
    try:
        table = runstore.load_table(run_dir)
    except FileNotFoundError:
        table = None
    from analysis import projection_job

    status = projection_job.read_status(run_dir) or {}
    if table is None or not any(c.startswith(S.OOD_PREFIX) for c in table.columns) \
            or S.UMAP_X not in table.columns or table[S.UMAP_X].isna().all() \
            or status.get("table_method") == "pca":
        from analysis.pipeline import AnalyzeOptions, analyze_run

        table = analyze_run(run_dir, AnalyzeOptions(extra={"projection": "umap"}))  # UMAP in line
    return table


def _trustworthiness(run_dir: Path, table: Any, *, seed: int = 0) -> list[dict[str, Any]]:
    from sklearn.manifold import trustworthiness

    pos = {eid: i for i, eid in enumerate(table[S.EXAMPLE_ID].to_numpy())}
    ux = table[S.UMAP_X].to_numpy(np.float64)
    uy = table[S.UMAP_Y].to_numpy(np.float64)
    rows = []
    feats, coords, names = [], [], []
    for split in runstore.list_array_splits(run_dir, S.FEATURES_DIR):
        ids, x = runstore.load_features(run_dir, split)
        idx = np.array([pos.get(i, -1) for i in ids])
        ok = (idx >= 0)
        ok[ok] &= np.isfinite(ux[idx[ok]])
        feats.append(np.asarray(x)[ok])
        coords.append(np.c_[ux[idx[ok]], uy[idx[ok]]])
        names += [split] * int(ok.sum())
    if not feats:
        return rows
    x_all, c_all = np.concatenate(feats), np.concatenate(coords)
    split_arr = np.asarray(names)
    rng = np.random.default_rng(seed)
    for label, mask in [("all splits", np.ones(len(x_all), bool)),
                        *[(s, split_arr == s) for s in dict.fromkeys(names)]]:
        idx = np.flatnonzero(mask)
        if len(idx) < 30:
            continue
        take = rng.choice(idx, min(SAMPLE_ROWS, len(idx)), replace=False)
        t = float(trustworthiness(x_all[take], c_all[take], n_neighbors=10))
        # The target applies to in-distribution rows (the fitted split and its test split); OOD
        # splits and the mixture are reported for information: unstructured OOD data (noise,
        # photo patches) has no neighbourhoods for a 2-D map to preserve.
        targeted = label == S.TRAIN_SPLIT or label == "test"
        rows.append({"check": "trustworthiness", "scorer": "umap_x/umap_y", "split": label,
                     "value": t, "n": int(len(take)),
                     "target": f">= {TRUSTWORTHINESS_TARGET}" if targeted else "(reported)",
                     "ok": (t >= TRUSTWORTHINESS_TARGET) if targeted else None})
    return rows


def ood_quality_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """OOD AUROC per scorer per OOD split (and overall) and UMAP trustworthiness, as rows.

    Parameters
    ----------
    run_dir : path
        A run with features/logits and OOD ground truth (``ood:*`` splits or ``is_ood``).

    Returns
    -------
    list of dict
        Keys ``check`` ("ood_auroc" or "trustworthiness"), ``scorer``, ``split``, ``value``,
        ``n``, ``target``, ``ok``, and for AUROC rows also ``aupr_out`` and ``fpr95``.
    """
    run = Path(run_dir)
    table = _table(run)
    ev = ood_eval.evaluate_ood(table)
    rows: list[dict[str, Any]] = []
    for col, per_split in sorted(ev["metrics"].items()):
        for split, m in per_split.items():
            rows.append({"check": "ood_auroc", "scorer": col, "split": split, "value": m["auroc"],
                         "n": m["n_ood"], "target": "", "ok": None,
                         "aupr_out": m["aupr_out"], "fpr95": m["fpr95"]})
    rows += _trustworthiness(run, table)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| check | scorer | split | value | AUPR-out | FPR@95 | n | target |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        extra = (f"{r['aupr_out']:.3f} | {r['fpr95']:.3f}" if "aupr_out" in r else " | ")
        ok = "" if r["ok"] is None else (" (met)" if r["ok"] else " (NOT met)")
        lines.append(f"| {r['check']} | {r['scorer']} | {r['split']} | {r['value']:.3f} | {extra} | "
                     f"{r['n']} | {r['target']}{ok} |")
    return "\n".join(lines)


def readme_table(rows: list[dict[str, Any]]) -> str:
    """Compact table for the README: AUROC per scorer (rows) and OOD split (columns)."""
    auroc = [r for r in rows if r["check"] == "ood_auroc"]
    splits = sorted({r["split"] for r in auroc} - {ood_eval.OVERALL}) + [ood_eval.OVERALL]
    scorers = sorted({r["scorer"] for r in auroc})
    val = {(r["scorer"], r["split"]): r for r in auroc}
    lines = ["| score | " + " | ".join(f"AUROC {s}" for s in splits) + " | FPR@95 overall |",
             "| --- |" + " ---: |" * (len(splits) + 1)]
    for sc in scorers:
        cells = [f"{val[(sc, s)]['value']:.3f}" if (sc, s) in val else "" for s in splits]
        fpr = val.get((sc, ood_eval.OVERALL))
        fpr_cell = f"{fpr['fpr95']:.3f}" if fpr else ""
        lines.append(f"| `{sc}` | " + " | ".join(cells) + f" | {fpr_cell} |")
    trust = [r for r in rows if r["check"] == "trustworthiness"]
    if trust:
        lines.append("")
        lines.append("UMAP trustworthiness (10 neighbours): " + ", ".join(
            f"{r['split']} {r['value']:.3f}" for r in trust) + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?", default=str(ROOT / "sample_data" / "run"))
    args = p.parse_args(argv)
    if not (Path(args.run_dir) / S.RUN_JSON).is_file():
        print(f"no run at {args.run_dir}: build one with `python sample_data/build.py` or pass a "
              "RUN_DIR (e.g. one from analysis.synthetic.make_synthetic_run).", file=sys.stderr)
        return 2
    rows = ood_quality_rows(args.run_dir)
    print(readme_table(rows))
    print()
    print(markdown(rows))
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
