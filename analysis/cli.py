"""The ``datamap`` command line: analyse, import, export and serve runs.

Every subcommand catches the project's input errors and prints one clear line
(``datamap: error: ...``) with exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from analysis import schema as S


def _knn_k(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Expected a positive integer or 'auto', got {value!r}.") from None


def _cmd_analyze(args: argparse.Namespace) -> int:
    from analysis.dynamics import RegionThresholds
    from analysis.pipeline import AnalyzeOptions, analyze_run

    extra: dict[str, object] = {"projection": args.projection, "ood_quantile": args.ood_quantile,
                                "ood_calibration": args.ood_calibration,
                                "knn_k": args.knn_k, "energy_temperature": args.energy_temperature}
    if args.ood_scorer:
        extra["diagnosis_scorer"] = args.ood_scorer
    if args.ood_scorers:
        extra["ood_scorers"] = args.ood_scorers
    if args.mahalanobis_shrinkage is not None:
        extra["mahalanobis_shrinkage"] = _shrinkage(args.mahalanobis_shrinkage)
    opts = AnalyzeOptions(
        thresholds=RegionThresholds(confidence=args.confidence_threshold, variability=args.variability_threshold),
        aum_skip_first_epoch=args.aum_skip_first_epoch,
        ood=not args.no_ood,
        extra=extra,
    )
    t0 = time.perf_counter()
    if args.dask:
        table = _analyze_on_dask(args, opts)
    else:
        table = analyze_run(args.run_dir, opts)
    dt = time.perf_counter() - t0
    print(f"wrote {Path(args.run_dir) / S.TABLE_FILE}: {len(table):,} examples in {dt:.2f} s")
    _print_summary(table, Path(args.run_dir))
    return 0


def _analyze_on_dask(args: argparse.Namespace, opts: object):  # type: ignore[no-untyped-def]
    """``--dask local[:N]`` starts N local worker processes; anything else is a scheduler address."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise SystemExit('datamap: error: --dask needs dask: pip install "datamap[dask]"') from exc
    from analysis.dask_backend import analyze_run_dask

    spec = args.dask
    if spec == "local" or spec.startswith("local:"):
        n = int(spec.split(":", 1)[1]) if ":" in spec else None
        if not args.verbose:
            logging.getLogger("distributed").setLevel(logging.ERROR)
        # everything on the loopback interface; Dask's dashboard on a free local port
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0")
        client = Client(cluster)
    else:
        cluster, client = None, Client(spec)
    print(f"dask: {len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}")
    try:
        return analyze_run_dask(args.run_dir, opts, npartitions=args.dask_partitions)  # type: ignore[arg-type]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _print_summary(table, run_dir: Path | None = None) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    if S.REGION not in table.columns:
        raise S.SchemaError(
            f"The table has no `{S.REGION}` column, so there is nothing to summarise. Rebuild it with "
            "`datamap analyze RUN_DIR`."
        )
    with pd.option_context("display.width", 120):
        print("\nregions:")
        print(table[S.REGION].value_counts().to_string())
        if S.DIAGNOSIS in table.columns:
            print("\ndiagnosis:")
            print(table[S.DIAGNOSIS].value_counts().to_string())
            for line in _cutoff_lines(run_dir):
                print(line)
        _print_label_noise(table)
        if S.N_EPOCHS_SEEN not in table.columns or S.AUM not in table.columns:
            return
        seen = pd.to_numeric(table[S.N_EPOCHS_SEEN], errors="coerce")
        has = (seen > 0).to_numpy(dtype=bool, na_value=False)
        if has.any() and pd.api.types.is_numeric_dtype(table[S.AUM]):
            cols = [c for c in (S.EXAMPLE_ID, S.LABEL, S.CONFIDENCE, S.VARIABILITY, S.CORRECTNESS, S.AUM)
                    if c in table.columns]
            print("\nlowest-AUM training examples (likely mislabeled):")
            print(table.loc[has, cols].nsmallest(10, S.AUM).to_string(index=False))


def _cutoff_lines(run_dir: Path | None) -> list[str]:
    """How the diagnosis' cut-offs were chosen, from ``ood_eval.json`` (empty when not recorded)."""
    import json

    if run_dir is None or not (run_dir / S.OOD_EVAL_FILE).is_file():
        return []
    try:
        info = json.loads((run_dir / S.OOD_EVAL_FILE).read_text()).get("diagnosis") or {}
    except (OSError, ValueError):
        return []
    lines = ["\nhow the diagnosis chose its cut-offs:"]
    issues = info.get("label_issues")
    if isinstance(issues, dict):
        cut = issues.get("cutoff")
        reranked = isinstance(issues.get("neighbors"), dict) and issues["neighbors"].get("used")
        lines.append(f"  suspect_mislabeled: {issues.get('method')}"
                     + ("" if reranked else f" on {issues.get('score')}")  # the method names both
                     + (f" (cut-off {cut:.4g})" if isinstance(cut, (int, float)) else "")
                     + f": {issues.get('n_issues')} of {issues.get('n_scored')} training rows")
        from analysis.noise import resampled_range

        again = resampled_range(issues.get("resampled"))
        if again is not None:
            rows = again["rows"]
            lines.append(f"  the mixture refitted on {again['rounds']} resamples of "
                         + (f"{rows:,} rows " if isinstance(rows, int) else "the rows ")
                         + f"flags {again['low']:.1%}-{again['high']:.1%} (10th-90th percentile): "
                         + ("stable" if again.get("stable") else
                            "UNSTABLE: the losses do not split into clean and wrong labels clearly, so the "
                            "count is uncertain; review by rank (loss_mean) beyond the flagged rows"))
        if issues.get("count_rule"):
            lines.append(f"  the count is {issues['count_rule']}")
        neighbours = issues.get("neighbors")
        if isinstance(neighbours, dict) and isinstance(neighbours.get("agreement_auroc"), (int, float)):
            lines.append(f"  neighbour label check (k={neighbours.get('k')}): agreement AUROC "
                         f"{neighbours['agreement_auroc']:.3f} with the loss mixture, "
                         + (f"used to re-rank; {neighbours.get('not_confirmed', 0)} dropped where most "
                            "neighbours share the given label" if neighbours.get("used")
                            else f"not used (below {neighbours.get('gate_auroc')})"))
    else:
        lines.append(f"  suspect_mislabeled: {info.get('mislabeled_rule', 'hard-to-learn region')}")
    if info.get("score_column"):
        from analysis.diagnosis import describe_reference

        t = info.get("threshold")
        lines.append(f"  suspect_ood: {info['score_column']} above its {info.get('ood_quantile')} "
                     f"quantile over {describe_reference(info)}"
                     + (f" ({t:.4g})" if isinstance(t, (int, float)) else "")
                     + f"; label issues and learned rows above the {info.get('learned_ood_quantile')}"
                     " quantile")
        if info.get("calibration_note"):
            lines.append(f"  note: {info['calibration_note']}")
    return lines


def _print_label_noise(table) -> None:  # type: ignore[no-untyped-def]
    from analysis.noise import estimate_label_noise

    est = estimate_label_noise(table)
    if est.rate != est.rate:  # NaN: no suggested labels
        return
    print(f"\nestimated label noise: {est.rate:.1%} of {sum(est.n_per_class.values()):,} training labels")
    for name, rate in sorted(est.per_class.items(), key=lambda kv: -kv[1]):
        print(f"  {name}: {rate:.1%} of {est.n_per_class[name]:,}")
    if est.confused_pairs:
        print("most confused (given -> suggested):")
        for given, suggested, n in est.confused_pairs[:5]:
            print(f"  {given} -> {suggested}: {n}")


def _cmd_import(args: argparse.Namespace) -> int:
    from analysis.cartography import import_cartography

    names = args.class_names.split(",") if args.class_names else None
    t0 = time.perf_counter()
    run = import_cartography(args.log_dir, args.run_dir, class_names=names,
                             keep_logits=not args.no_logits, overwrite=args.overwrite)
    print(f"imported {args.log_dir} into {run} in {time.perf_counter() - t0:.2f} s; "
          f"next: datamap analyze {run}")
    return 0


def _cmd_export_cartography(args: argparse.Namespace) -> int:
    from analysis.cartography import export_cartography

    files = export_cartography(args.run_dir, args.log_dir)
    print(f"wrote {len(files)} epoch files to {args.log_dir}")
    return 0


def _cmd_project(args: argparse.Namespace) -> int:
    from analysis.projection_job import run_projection_job

    t0 = time.perf_counter()
    last = {"step": ""}

    def show(step: str, fraction: float) -> None:
        if step != last["step"]:
            print(f"  {fraction:4.0%}  {step}", flush=True)
            last["step"] = step

    status = run_projection_job(args.run_dir, progress=show)
    if status.get("state") != "done":
        raise ValueError(f"the projection failed ({status.get('error')}).")
    print(f"wrote the UMAP map into {Path(args.run_dir) / S.TABLE_FILE} in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from analysis.runstore import load_table

    table = load_table(args.run_dir)
    try:
        _print_summary(table, Path(args.run_dir))
    except S.SchemaError as exc:
        raise S.SchemaError(f"{str(Path(args.run_dir) / S.TABLE_FILE)!r}: {exc}") from exc
    return 0


def _serve(run_dir: Path, args: argparse.Namespace) -> int:
    try:
        from dashboard import server
    except ImportError as exc:  # pragma: no cover - dashboard ships with the package
        raise SystemExit(f"datamap: error: the dashboard is unavailable ({exc}).") from exc
    return server.serve(run_dir, port=args.port, address=args.address, open_browser=not args.no_browser,
                        allow_hosts=args.allow_host or ())


def _cmd_serve(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    if not (run / S.TABLE_FILE).exists():
        from analysis.pipeline import analyze_run

        print(f"{run / S.TABLE_FILE} is missing; analysing the run first...")
        analyze_run(run)
    return _serve(run, args)


def _cmd_report(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    if not (run / S.TABLE_FILE).is_file():
        raise FileNotFoundError(
            f"{str(run / S.TABLE_FILE)!r} is missing. Build it with `datamap analyze {run}` first.")
    import importlib

    try:  # the builder is UI code (Plotly): imported here, as `serve` imports the dashboard
        report = importlib.import_module("dashboard.report")
    except ImportError as exc:
        raise SystemExit(f"datamap: error: the report needs plotly ({exc}); pip install plotly.") from exc
    t0 = time.perf_counter()
    path = report.write_report(run, args.out)
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB) in {time.perf_counter() - t0:.1f} s; it opens offline in any browser")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.run_dir:
        run = Path(args.run_dir)
        if args.reset:
            raise ValueError("Expected --reset without --run-dir: it resets the demo's own copy only.")
        if not (run / S.RUN_JSON).exists():
            from analysis import sample

            print(f"building the sample run in {run} (about a minute)...")
            sample.build_sample_run(run)
        if not (run / S.TABLE_FILE).exists():
            from analysis.pipeline import analyze_run

            analyze_run(run)
        return _serve(run, args)
    from analysis.demo import default_demo_dir, prepare_demo_run

    target = default_demo_dir()
    fresh = args.reset or not (target / S.RUN_JSON).is_file()
    run = prepare_demo_run(target, reset=args.reset)
    print(f"demo run: {run} ({'a fresh copy of the sample run' if fresh else 'your copy, with its flags and exports'}; "
          "`datamap demo --reset` starts over)")
    return _serve(run, args)


_RUN_INPUTS = (S.RUN_JSON, S.EXAMPLES_FILE, S.TABLE_FILE, S.OOD_EVAL_FILE, S.DYNAMICS_DIR,
               S.FEATURES_DIR, S.LOGITS_DIR, S.CACHE_DIR)


def _check_export_target(run_dir: Path, out: Path) -> None:
    """``--out`` (and its manifest) must not replace a file of the run, the journal included,
    whatever ``--overwrite`` says."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    run = run_dir.resolve()
    for path in (out, out.with_name(f"{stem}.manifest.json")):
        target = path.resolve()
        if target.parent == run and (target.name in _RUN_INPUTS or target.name.startswith(S.FLAGS_FILE)):
            raise ValueError(f"--out {str(out)!r} would replace the run's own {target.name}; write elsewhere.")
        if any(target.is_relative_to(run / d) for d in _RUN_INPUTS[4:]):
            raise ValueError(f"--out {str(out)!r} lies inside the run's {target.relative_to(run).parts[0]}/; "
                             "write elsewhere.")


def _shrinkage(text: str) -> str | float:
    """``--mahalanobis-shrinkage``: ``auto`` or a number in [0, 1]."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected --mahalanobis-shrinkage to be 'auto' or a number in [0, 1], got {text!r}.")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="datamap", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="compute the per-example table (RUN_DIR/table.parquet)")
    a.add_argument("run_dir")
    a.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="confidence at or above which a low-variability example is easy (default 0.5)")
    a.add_argument("--variability-threshold", type=float, default=0.2,
                   help="variability at or above which an example is ambiguous (default 0.2)")
    a.add_argument("--aum-skip-first-epoch", action="store_true", help="leave epoch 0 out of AUM")
    a.add_argument("--no-ood", action="store_true", help="skip OOD scores and the projection")
    a.add_argument("--projection", choices=("auto", "umap", "pca", "none"), default="auto",
                   help="2-D map of the features, cached in RUN_DIR/cache. auto (default): the cached "
                        "UMAP map, else a PCA map now and UMAP later (`datamap serve` computes it in "
                        "the background, or `datamap project`); umap: compute UMAP now; pca: fast")
    a.add_argument("--ood-scorers", default=None, metavar="NAMES",
                   help="comma-separated OOD scores to compute (msp,maxlogit,energy,mahalanobis,rmd,knn,"
                        "knn_mean,combined; default all the run allows)")
    a.add_argument("--ood-scorer", default=None, metavar="NAME",
                   help="OOD score the diagnosis uses (default combined: the rank average of rmd and "
                        "knn_mean; else mahalanobis, energy, msp in that order)")
    a.add_argument("--ood-quantile", type=float, default=0.95,
                   help="quantile of in-distribution scores beyond which a hard-to-learn or eval row is"
                        " suspect_ood (default 0.95)")
    a.add_argument("--ood-calibration", choices=("held-out", "all"), default="held-out",
                   help="rows whose OOD scores set the diagnosis' cut-offs: held-out (default: the "
                        "in-distribution rows of the evaluation splits, when there are at least 50; "
                        "else all) or all (training rows included)")
    a.add_argument("--knn-k", type=_knn_k, default="auto",
                   help="k of the kNN OOD score (default auto: 0.5%% of the training rows, 1-50)")
    a.add_argument("--energy-temperature", type=float, default=1.0,
                   help="temperature T of the energy score (default 1)")
    a.add_argument("--mahalanobis-shrinkage", default=None, metavar="{auto,FLOAT}",
                   help="covariance shrinkage for Mahalanobis/RMD (default none unless singular)")
    a.add_argument("--dask", default=None, metavar="{local[:N],ADDRESS}",
                   help="compute the dynamics metrics on Dask: 'local' (or local:N workers) starts a local"
                        " cluster, else the scheduler address (e.g. tcp://host:8786)")
    a.add_argument("--dask-partitions", type=int, default=None, metavar="N",
                   help="partitions of the by-example shuffle (default: as many as the dynamics files)")
    a.set_defaults(func=_cmd_analyze)

    i = sub.add_parser("import-cartography", help="import dynamics_epoch_N.jsonl logs into a run")
    i.add_argument("log_dir")
    i.add_argument("run_dir")
    i.add_argument("--class-names", help="comma-separated class names, in label order")
    i.add_argument("--no-logits", action="store_true", help="keep only compact dynamics (smaller)")
    i.add_argument("--overwrite", action="store_true", help="replace an existing RUN_DIR")
    i.set_defaults(func=_cmd_import)

    e = sub.add_parser("export-cartography", help="write a run back as dynamics_epoch_N.jsonl")
    e.add_argument("run_dir")
    e.add_argument("log_dir")
    e.set_defaults(func=_cmd_export_cartography)

    pj = sub.add_parser("project", help="compute the pending UMAP map of an analysed run and write it "
                                        "into RUN_DIR/table.parquet (what `datamap serve` runs in the background)")
    pj.add_argument("run_dir")
    pj.set_defaults(func=_cmd_project)

    s = sub.add_parser("summary", help="print region and diagnosis counts of an analysed run")
    s.add_argument("run_dir")
    s.set_defaults(func=_cmd_summary)

    r = sub.add_parser(
        "report", help="write a self-contained, offline HTML report of an analysed run",
        description="Write one HTML file (Plotly inline, no outside request) with the run, its "
                    "findings, the maps, OOD curves, top suspects, flags and settings.")
    r.add_argument("run_dir")
    r.add_argument("--out", default=None, metavar="FILE",
                   help="HTML file to write (default RUN_DIR/report.html)")
    r.set_defaults(func=_cmd_report)

    x = sub.add_parser(
        "export", help="write a filtered subset (CSV/Parquet) and its manifest to RUN_DIR/exports/",
        description="Export the rows of RUN_DIR/table.parquet that pass a filter, with a manifest "
                    "(see docs/review-and-export.md). Shorthand options override the same fields "
                    "of --filter.")
    x.add_argument("run_dir")
    x.add_argument("--filter", dest="filter_spec", default=None,
                   help="filter spec as JSON text, a JSON file, or an export manifest to repeat")
    x.add_argument("--format", dest="fmt", choices=("csv", "parquet"), default="parquet")
    x.add_argument("--curated", action="store_true",
                   help="a cleaned training set: train split, suspects and flagged rows dropped, "
                        "relabels applied")
    x.add_argument("--out", default=None, help="data file path (default RUN_DIR/exports/NAME.FORMAT)")
    x.add_argument("--name", default=None, help="file stem in RUN_DIR/exports/ (default export-<time>)")
    x.add_argument("--split", action="append", help="keep this split (repeatable or comma-separated)")
    x.add_argument("--label", action="append", help="keep this label index (repeatable)")
    x.add_argument("--region", action="append", help="keep this region (repeatable)")
    x.add_argument("--diagnosis", action="append", help="keep this diagnosis (repeatable)")
    x.add_argument("--flag", action="append", help="keep rows with this flag (repeatable)")
    x.add_argument("--flagged", choices=("any", "flagged", "unflagged"), default=None)
    x.add_argument("--range", action="append", metavar="COLUMN:LO:HI",
                   help="keep LO <= COLUMN <= HI; leave LO or HI empty for one side "
                        "(e.g. confidence::0.3; repeatable)")
    x.add_argument("--search", default=None, help="substring of example_id or text")
    x.add_argument("--include-images", action="store_true", help="keep binary image columns")
    x.add_argument("--overwrite", action="store_true", help="replace existing files")

    def _cmd_export(args: argparse.Namespace) -> int:
        from analysis.export import export_subset
        from analysis.filters import FilterSpec, load_filter_spec
        from analysis.runstore import load_table

        spec = load_filter_spec(args.filter_spec) if args.filter_spec else FilterSpec()
        d = spec.to_dict()

        def items(values: list[str] | None) -> list[str] | None:
            return None if not values else [v.strip() for s in values for v in s.split(",") if v.strip()]

        for key, values in (("splits", args.split), ("regions", args.region),
                            ("diagnoses", args.diagnosis), ("flag_values", args.flag)):
            if values:
                d[key] = items(values)
        if args.label:
            try:
                d["labels"] = [int(v) for v in items(args.label) or []]
            except ValueError as exc:
                raise ValueError(f"Expected integer --label values, got {args.label}.") from exc
        for text in args.range or []:
            parts = text.rsplit(":", 2)
            try:
                col, lo, hi = parts
                d["ranges"][col] = [float(lo) if lo else None, float(hi) if hi else None]
            except ValueError as exc:
                raise ValueError(f"Expected --range COLUMN:LO:HI, got {text!r}.") from exc
        if args.flagged:
            d["flagged"] = args.flagged
        if args.search:
            d["search"] = args.search
        try:
            spec = FilterSpec.from_dict(d)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--filter with the shorthand options: {exc}") from exc
        if args.out:
            _check_export_target(Path(args.run_dir), Path(args.out))
        table = load_table(args.run_dir)
        res = export_subset(args.run_dir, table, None, fmt=args.fmt, filter_spec=spec,
                            curated=args.curated, name=args.name, out_path=args.out,
                            include_images=args.include_images, overwrite=args.overwrite)
        rows = res.manifest["rows"]
        print(f"wrote {res.path} ({rows['exported']:,} of {rows['table']:,} rows; "
              f"filter: {spec.describe()}) and {res.manifest_path}")
        return 0

    x.set_defaults(func=_cmd_export)

    for name, func, helptext in (
        ("serve", _cmd_serve, "open the dashboard on RUN_DIR"),
        ("demo", _cmd_demo, "open the dashboard on your own copy of the shipped sample run"),
    ):
        sp = sub.add_parser(name, help=helptext)
        if name == "serve":
            sp.add_argument("run_dir")
        else:
            sp.add_argument("--run-dir", default=None, help="use another run instead of the sample")
            sp.add_argument("--reset", action="store_true",
                            help="replace the demo's copy of the sample run (in $XDG_DATA_HOME/datamap/demo,"
                                 " default ~/.local/share/datamap/demo) with a fresh one: its flags and "
                                 "exports are deleted")
        sp.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
        sp.add_argument("--address", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
        sp.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
        sp.add_argument("--allow-host", action="append", metavar="NAME",
                        help="also answer requests for this Host name (repeatable; default: the bound"
                             " address and localhost)")
        sp.set_defaults(func=func)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    print(f"datamap: warning: {message}", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    """The error message on one line (file contents quoted in it may hold newlines)."""
    return " ".join(str(exc).split("\n")) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from analysis._alloc import prefer_plain_pages

    prefer_plain_pages()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # One readable line per warning on the command line (no source-line echo).
    previous, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return int(args.func(args) or 0)
    except (S.SchemaError, OSError, ValueError, TypeError) as exc:
        # OSError covers a missing or existing path, permissions and a full disk
        print(f"datamap: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except RecursionError:
        print("datamap: error: an input file is nested too deeply to read.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
