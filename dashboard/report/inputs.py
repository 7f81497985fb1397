"""What a report shows, gathered once from a run (and the dashboard's working table)."""

from __future__ import annotations

import datetime as _dt
import importlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import flags as FL
from analysis import ood_eval, runstore
from analysis import schema as S
from analysis.dynamics import RegionThresholds, assign_regions
from dashboard.report.markup import is_missing

NOISE_MODULE = "analysis.noise"


@dataclass
class ReportInputs:
    """Everything a report shows, gathered once (see :func:`load_inputs`).

    Attributes
    ----------
    table : DataFrame
        Every example with ``region``/``diagnosis`` as reported.
    latest_flags : DataFrame
        :meth:`analysis.flags.FlagJournal.latest`: the current flag of every edited example.
    evaluation : dict or None
        :func:`analysis.ood_eval.evaluate_ood` output (``ood_eval.json`` when the run has it).
    settings : dict
        The ``diagnosis`` section of ``ood_eval.json`` (empty when absent).
    region_thresholds : RegionThresholds or None
        The thresholds the ``region`` column was assigned with, when known.
    noise : object or None
        ``analysis.noise.estimate_label_noise(table)`` when that module exists.
    """

    run_dir: Path
    meta: runstore.RunMeta | None
    table: pd.DataFrame
    latest_flags: pd.DataFrame
    journal_edits: int = 0
    evaluation: dict[str, Any] | None = None
    evaluation_source: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    region_thresholds: RegionThresholds | None = None
    region_note: str = ""
    ood_quantile: float | None = None
    """The OOD quantile the dashboard diagnosed with when it differs from the analysis' own."""
    noise: Any = None
    generated_at: str = ""

    def class_names_of(self, values: pd.Series) -> list[str]:
        """:meth:`class_name` of every value (vectorised for integer labels)."""
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            lab = values.to_numpy(dtype=np.float64, na_value=np.nan)
            names = np.asarray(list(self.meta.class_names) if self.meta is not None else [], dtype=object)
            ok = np.isfinite(lab) & (lab == np.round(lab)) & (lab >= 0) & (lab < len(names))
            out = np.full(len(lab), "—", dtype=object)
            out[ok] = names[lab[ok].astype(np.int64)]
            other = np.isfinite(lab) & ~ok
            out[other] = [str(int(v)) if v == round(v) else str(v) for v in lab[other]]
            return out.tolist()
        return [self.class_name(v) for v in values.tolist()]

    def class_name(self, label: Any) -> str:
        """Name of an integer class (``"—"`` when missing)."""
        if is_missing(label):
            return "—"
        try:
            k = int(label)
        except (TypeError, ValueError):
            return str(label)
        names = self.meta.class_names if self.meta is not None else []
        return str(names[k]) if 0 <= k < len(names) else str(k)


def _load_ood_eval(run_dir: Path) -> dict[str, Any] | None:
    try:
        return ood_eval.load_ood_eval(run_dir)  # checked: a malformed file is left out
    except S.SchemaError:
        return None


def ood_score_columns(table: pd.DataFrame) -> list[str]:
    """The numeric ``ood_*`` score columns of the table, known scores first."""
    known = [S.OOD_MSP, S.OOD_MAXLOGIT, S.OOD_ENERGY, S.OOD_MAHALANOBIS, S.OOD_RMD, S.OOD_KNN]
    present = [c for c in known if c in table.columns]
    return present + [
        c for c in table.columns
        if isinstance(c, str) and c.startswith(S.OOD_PREFIX) and c not in present
        and pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
    ]


def suggested_column(table: pd.DataFrame) -> str | None:
    """The ``suggested_label`` column when this version of the schema names it and the table has it."""
    name = getattr(S, "SUGGESTED_LABEL", None)
    return name if isinstance(name, str) and name in table.columns else None


def _estimate_noise(table: pd.DataFrame) -> Any:
    """``analysis.noise.estimate_label_noise(table)``, or None where that module is absent."""
    try:
        module = importlib.import_module(NOISE_MODULE)
    except ImportError:
        return None
    estimate = getattr(module, "estimate_label_noise", None)
    if not callable(estimate):
        return None
    try:
        return estimate(table)
    except (ValueError, KeyError, TypeError, S.SchemaError):
        return None  # the estimate does not apply to this run (e.g. no labels or no dynamics)


def _infer_region_thresholds(table: pd.DataFrame) -> RegionThresholds | None:
    """The default thresholds when they reproduce the stored ``region`` column, else None.

    ``run.json`` does not record the thresholds ``datamap analyze`` was given; the defaults are
    the common case and checking them costs one vectorised pass.
    """
    if not {S.CONFIDENCE, S.VARIABILITY, S.REGION} <= set(table.columns):
        return None
    default = RegionThresholds()
    again = assign_regions(table[S.CONFIDENCE].to_numpy(dtype=np.float64, na_value=np.nan),
                           table[S.VARIABILITY].to_numpy(dtype=np.float64, na_value=np.nan), default)
    categories = list(S.REGIONS)
    again_codes = pd.Categorical(again, categories=categories).codes
    stored = table[S.REGION]
    stored_codes = (stored.cat.set_categories(categories).cat.codes.to_numpy()
                    if isinstance(stored.dtype, pd.CategoricalDtype)
                    else pd.Categorical(stored.astype(object), categories=categories).codes)
    return default if np.array_equal(again_codes, stored_codes) else None


def load_inputs(
    run_dir: str | os.PathLike[str],
    *,
    table: pd.DataFrame | None = None,
    latest_flags: pd.DataFrame | None = None,
    thresholds: RegionThresholds | None = None,
    ood_quantile: float | None = None,
) -> ReportInputs:
    """Gather what the report shows.

    Parameters
    ----------
    run_dir : path-like
        An analysed run (``table.parquet``).
    table : DataFrame, optional
        The example table to report (the dashboard passes its working table: regions and
        diagnosis at its thresholds). Default: ``table.parquet`` as analysed.
    latest_flags : DataFrame, optional
        :meth:`analysis.flags.FlagJournal.latest` (read from the run when omitted).
    thresholds : RegionThresholds, optional
        The thresholds ``table``'s regions were assigned with (shown in the settings).
    ood_quantile : float, optional
        The diagnosis' OOD quantile when it differs from the analysis' own.
    """
    run = Path(run_dir)
    journal = FL.FlagJournal(run, check_ids=False)
    latest = journal.latest() if latest_flags is None else latest_flags
    if table is None:
        table = runstore.load_table(run).reset_index(drop=True)
    meta = runstore.load_run_meta(run) if (run / S.RUN_JSON).is_file() else None
    evaluation = _load_ood_eval(run)
    source = f"{S.OOD_EVAL_FILE} (written by datamap analyze)"
    scores = ood_score_columns(table)
    if (evaluation is None or not evaluation.get("metrics")) and scores:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh = ood_eval.evaluate_ood(table, scores)
        if fresh.get("metrics"):
            evaluation = {**(evaluation or {}), **fresh}
            source = "evaluated from the table"
    settings = dict((evaluation or {}).get("diagnosis") or {})
    note = ""
    if thresholds is None:
        thresholds = _infer_region_thresholds(table)
        note = ("the defaults of datamap analyze: they reproduce the stored regions"
                if thresholds is not None else
                "not recorded in the run: the stored regions do not match the defaults 0.5 / 0.2")
    else:
        note = "set in the dashboard: regions and diagnosis recomputed at them"
    if ood_quantile is not None and settings.get("ood_quantile") is not None \
            and math.isclose(float(ood_quantile), float(settings["ood_quantile"])):
        ood_quantile = None
    return ReportInputs(
        run_dir=run, meta=meta, table=table, latest_flags=latest, journal_edits=journal.count(),
        evaluation=evaluation, evaluation_source=source, settings=settings,
        region_thresholds=thresholds, region_note=note, ood_quantile=ood_quantile,
        noise=_estimate_noise(table),
        generated_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
