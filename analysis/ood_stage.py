"""OOD scores, projection and cross-diagnosis stage of ``datamap analyze``.

For every split with stored features and/or logits (training split included) this stage adds
the ``ood_*`` columns (:mod:`analysis.ood`, fitted on the training split), ``umap_x``/``umap_y``
(:mod:`analysis.projection`, fitted on the training split, cached in ``RUN_DIR/cache``) and the
``diagnosis`` column (:mod:`analysis.diagnosis`), and writes the OOD evaluation
(:mod:`analysis.ood_eval`) to ``RUN_DIR/ood_eval.json`` atomically. A run without features or
logits still analyses: the columns are NaN and the diagnosis comes from the region alone. Rows
without dynamics (test, OOD) get their ``final_pred`` from their stored logits (the argmax).

Options (``AnalyzeOptions.extra``; every key optional):

``ood_scorers``            columns or short names to compute (default: all that the run allows)
``energy_temperature``     float, default 1.0
``mahalanobis_shrinkage``  None, "auto" or a float in [0, 1] (default None)
``knn_k``                  int or "auto" (default): ``clip(round(n_bank / 200), 1, 50)`` (``ood_knn``
                           and ``ood_knn_mean``)
``knn_max_train``          int or None, default 200_000: the kNN neighbour bank (random training
                           rows) is capped at this size; above 10k bank rows the search is
                           clustered (:mod:`analysis.neighbors`), so scoring stays linear in n
``projection``             "auto" (default), "umap", "pca" or "none". ``auto`` writes the cached
                           UMAP map when there is one, else a PCA map and leaves the UMAP map to
                           a background job (:mod:`analysis.projection_job`); ``umap`` computes
                           it in line (for scripts)
``projection_params``      dict passed to :func:`analysis.projection.project_features`
                           (default ``max_fit_rows=20_000``)
``diagnosis_scorer``       column used by the diagnosis (default: ``ood_combined`` when
                           ``ood_rmd`` and ``ood_knn_mean`` were computed, else the first of
                           ``ood_mahalanobis``, ``ood_energy``, ``ood_msp``...)
``ood_quantile``           float, default 0.95 (:class:`analysis.diagnosis.DiagnosisThresholds`)
``learned_ood_quantile``   float or None, default 0.995
``ood_calibration``        "held-out" (default) or "all": which in-distribution rows set the
                           diagnosis' OOD cut-offs (:func:`analysis.diagnosis.reference_rows`)
``reference_splits``       splits known to be in-distribution, default ("train", "test")
``fpr_definition``         "ood_accepted_at_95_id" (default) or "id_rejected_at_95_ood"
``label_neighbors``        bool, default True: re-rank the label issues with the label
                           disagreement of training-feature neighbours where it agrees with the
                           dynamics (:func:`analysis.noise.refine_with_neighbors`)
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from analysis import diagnosis as D
from analysis import noise, ood_eval, runstore
from analysis import ood as O
from analysis import schema as S

log = logging.getLogger(__name__)

__all__ = ["add_ood_columns", "DIAGNOSIS_PREFERENCE", "OPTION_KEYS"]

COMBINED_PARTS = (S.OOD_RMD, S.OOD_KNN_MEAN)
"""The scores :func:`combined_score` ranks and averages (chosen by ``benchmarks/suite.py``)."""
DIAGNOSIS_PREFERENCE = (S.OOD_COMBINED, S.OOD_MAHALANOBIS, S.OOD_ENERGY, S.OOD_MSP, S.OOD_RMD, S.OOD_KNN,
                        S.OOD_KNN_MEAN, S.OOD_MAXLOGIT)
OPTION_KEYS = frozenset({
    "ood_scorers", "energy_temperature", "mahalanobis_shrinkage", "knn_k", "projection",
    "projection_params", "diagnosis_scorer", "ood_quantile", "learned_ood_quantile",
    "fpr_definition", "knn_max_train", "label_neighbors", "ood_calibration", "reference_splits",
})
KNN_MAX_TRAIN = 200_000
"""Default cap on the kNN neighbour bank (random training rows): its k-means index and memory."""
PROJECTION_MAX_FIT_ROWS = 20_000
"""Default: UMAP is fitted on at most this many training rows; the rest are transformed."""
_PROJECTIONS = ("auto", "umap", "pca", "none")


def _warn(message: str) -> None:
    """A user-facing warning (the CLI prints it as one line), also in the INFO log."""
    log.info("warning: %s", message)
    warnings.warn(message, stacklevel=3)


def _split_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"Expected `reference_splits` as a list of split names, got {value!r}.")
    return tuple(value)


def _resolve_columns(names: Any) -> list[str]:
    if names is None:
        return list(O.SCORERS)
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    out = []
    for n in names:
        key = n if str(n).startswith(S.OOD_PREFIX) else S.OOD_PREFIX + str(n)
        if key == S.OOD_COMBINED:  # derived from its parts whenever they are computed
            out.append(key)
            continue
        if key not in O.SCORERS:
            raise ValueError(f"Expected OOD scorers among {[*O.SCORERS, S.OOD_COMBINED]}, got {n!r}.")
        out.append(key)
    return out


def _load_kind(run_dir: Path, kind: str, id_index: pd.Index) -> dict[str, tuple[NDArray[np.intp], NDArray[Any]]]:
    """split -> (row positions in the table, array rows in the same order)."""
    out: dict[str, tuple[NDArray[np.intp], NDArray[Any]]] = {}
    for split in runstore.list_array_splits(run_dir, kind):
        ids, arr = runstore.load_array_with_ids(run_dir, kind, split)
        pos = id_index.get_indexer(pd.Index(ids))
        missing = pos < 0
        if missing.any():
            _warn(f"{kind}/{split}: {int(missing.sum())} of {len(ids)} example ids are not in "
                  f"{S.EXAMPLES_FILE}; those rows are ignored.")
            keep = np.flatnonzero(~missing)
            out[split] = (pos[keep], np.asarray(arr)[keep])
        else:
            out[split] = (pos, arr)
    return out


def _consistent(arrays: dict[str, tuple[NDArray[np.intp], NDArray[Any]]], kind: str,
                ref_split: str) -> dict[str, tuple[NDArray[np.intp], NDArray[Any]]]:
    """Drop (with a warning) splits whose width differs from the reference split's."""
    if not arrays:
        return arrays
    ref = ref_split if ref_split in arrays else next(iter(arrays))
    width = arrays[ref][1].shape[1]
    out = {}
    for split, (pos, arr) in arrays.items():
        if arr.shape[1] != width:
            _warn(f"Expected {kind} of split {split!r} to have {width} columns (as split {ref!r}), "
                  f"got {arr.shape[1]}; that split is not scored or projected.")
            continue
        out[split] = (pos, arr)
    return out


def _finite_rows(arr: NDArray[Any], kind: str, split: str) -> NDArray[np.bool_]:
    ok = np.isfinite(np.asarray(arr)).all(axis=1)
    if not ok.all():
        _warn(f"{kind}/{split}: {int((~ok).sum())} rows hold NaN or inf; their scores are NaN.")
    return ok


def _fill_predictions(table: pd.DataFrame, logits: dict[str, tuple[NDArray[np.intp], NDArray[Any]]]) -> None:
    """Fill ``final_pred`` of the rows without dynamics (test, OOD) from their stored logits.

    The dynamics give training rows the last epoch's prediction; evaluation and OOD rows have no
    dynamics, but their logits are the final model's output, so their prediction is the argmax.
    Rows that already have a prediction keep it; rows whose logits hold NaN or inf stay empty.
    """
    pred = np.full(len(table), -1, dtype=np.int64)
    for pos, arr in logits.values():
        values = np.asarray(arr)
        finite = np.isfinite(values).all(axis=1)
        pred[pos[finite]] = np.argmax(values[finite], axis=1)
    if S.FINAL_PRED in table.columns:
        column = pd.array(table[S.FINAL_PRED], dtype="Int32")
        fill = column.isna() & (pred >= 0)
    else:
        column = pd.array(np.zeros(len(table), dtype=np.int32), dtype="Int32")
        column[:] = pd.NA
        fill = pred >= 0
    if not fill.any():
        return
    column[fill] = pred[fill].astype(np.int32)
    table[S.FINAL_PRED] = column


def _score_kind(
    table: pd.DataFrame,
    columns: list[str],
    arrays: dict[str, tuple[NDArray[np.intp], NDArray[Any]]],
    kind: str,
    labels: NDArray[np.int64],
    params: dict[str, dict[str, Any]],
) -> list[str]:
    """Fit the ``kind`` scorers on the training split, score every split; return columns written."""
    cols = [c for c in columns if O.SCORERS[c].input_kind == kind]
    if not cols or not arrays:
        return []
    fit_split = S.TRAIN_SPLIT if S.TRAIN_SPLIT in arrays else None
    ok = {s: _finite_rows(a, kind, s) for s, (_, a) in arrays.items()}
    written = []
    for col in cols:
        scorer = O.make_scorer(col, **params.get(col, {}))
        needs_train = kind == "features"
        if fit_split is None and needs_train:
            _warn(f"No training-split {kind}: {col} cannot be fitted and stays NaN.")
            continue
        fit_on = fit_split or next(iter(arrays))
        pos_fit, arr_fit = arrays[fit_on]
        fit_rows = ok[fit_on].copy()
        if O.SCORERS[col].needs_labels:
            fit_rows &= labels[pos_fit] >= 0
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                scorer.fit(np.asarray(arr_fit)[fit_rows], labels[pos_fit][fit_rows])
            for w in caught:
                _warn(f"{col}: {w.message}")
        except (ValueError, np.linalg.LinAlgError) as exc:
            _warn(f"{col} could not be fitted on the {fit_on!r} split ({exc}); it stays NaN.")
            continue
        values = np.full(len(table), np.nan)
        for split, (pos, arr) in arrays.items():
            rows = ok[split]
            x = np.asarray(arr)[rows]
            # training rows the scorer was fitted on: leave-one-out where it matters (kNN)
            s = scorer.score_fitted(x) if split == fit_on and fit_rows.all() else scorer.score(x)
            values[pos[rows]] = s
        table[col] = values
        written.append(col)
        log.info("%s: fitted on %s and scored %d splits in %.2f s", col, fit_on, len(arrays),
                 time.perf_counter() - t0)
    return written


def add_ood_columns(run_dir: Path, table: pd.DataFrame, meta: Any, options: Any) -> pd.DataFrame:
    """Return ``table`` with ``ood_*`` scores, ``umap_x``/``umap_y`` and ``diagnosis`` added.

    Parameters
    ----------
    run_dir : Path
        The run directory (features/, logits/; ``ood_eval.json`` and ``cache/`` are written).
    table : DataFrame
        One row per example with ``example_id``, ``split``, ``label`` and ``region``.
    meta : RunMeta
        ``run.json`` contents (unused beyond validation of the class count).
    options : AnalyzeOptions
        ``options.extra`` holds this stage's options (module docstring).

    Returns
    -------
    DataFrame
        ``table`` with the new columns. Missing inputs leave NaN columns and a logged warning.
    """
    run_dir = Path(run_dir)
    extra: dict[str, Any] = dict(getattr(options, "extra", None) or {})
    unknown = set(extra) - OPTION_KEYS
    if unknown:
        raise ValueError(f"Expected OOD stage options among {sorted(OPTION_KEYS)}, got {sorted(unknown)}.")
    columns = _resolve_columns(extra.get("ood_scorers"))
    label_neighbors = extra.get("label_neighbors", True)
    if not isinstance(label_neighbors, (bool, np.bool_)):
        raise ValueError(f"Expected `label_neighbors` True or False, got {label_neighbors!r}.")
    projection = extra.get("projection", "auto")
    if projection not in _PROJECTIONS:
        raise ValueError(f"Expected `projection` among {_PROJECTIONS}, got {projection!r}.")
    thresholds = D.DiagnosisThresholds(
        ood_quantile=float(extra.get("ood_quantile", 0.95)),
        learned_ood_quantile=extra.get("learned_ood_quantile", 0.995),
        calibrate_on=extra.get("ood_calibration", D.HELD_OUT),
        reference_splits=_split_names(extra.get("reference_splits", D.DiagnosisThresholds.reference_splits)),
    )
    params: dict[str, dict[str, Any]] = {
        S.OOD_ENERGY: {"temperature": float(extra.get("energy_temperature", 1.0))},
        S.OOD_MAHALANOBIS: {"shrinkage": extra.get("mahalanobis_shrinkage")},
        S.OOD_RMD: {"shrinkage": extra.get("mahalanobis_shrinkage")},
        S.OOD_KNN: {"k": _knn_k(extra.get("knn_k", "auto")),
                    "max_train": extra.get("knn_max_train", KNN_MAX_TRAIN)},
        S.OOD_KNN_MEAN: {"k": _knn_k(extra.get("knn_k", "auto")),
                         "max_train": extra.get("knn_max_train", KNN_MAX_TRAIN)},
    }

    attrs = dict(table.attrs)
    table = table.reset_index(drop=True)
    table.attrs.update(attrs)
    id_index = pd.Index(table[S.EXAMPLE_ID])
    labels = table[S.LABEL].to_numpy(dtype=np.float64, na_value=np.nan) if S.LABEL in table else np.full(len(table), np.nan)
    labels_int = np.where(np.isfinite(labels), labels, -1).astype(np.int64)
    feats = _consistent(_load_kind(run_dir, S.FEATURES_DIR, id_index), "features", S.TRAIN_SPLIT)
    logits = _consistent(_load_kind(run_dir, S.LOGITS_DIR, id_index), "logits", S.TRAIN_SPLIT)
    if logits:
        width = next(iter(logits.values()))[1].shape[1]
        if width != meta.n_classes:
            _warn(f"Stored logits have {width} columns but run.json lists {meta.n_classes} classes.")
        else:
            _fill_predictions(table, logits)
    if not feats and not logits:
        _warn(f"The run stores no features or logits ({S.FEATURES_DIR}/, {S.LOGITS_DIR}/): no OOD "
              "scores or projection; the diagnosis uses the data-map region alone.")

    combined_requested = S.OOD_COMBINED in columns
    columns = [c for c in columns if c != S.OOD_COMBINED]
    for col in columns:
        table[col] = np.nan
    written = _score_kind(table, columns, logits, "logits", labels_int, params)
    written += _score_kind(table, columns, feats, "features", labels_int, params)
    if all(c in written for c in COMBINED_PARTS) and (combined_requested
                                                      or extra.get("ood_scorers") is None):
        fit_rows = (table[S.SPLIT].astype(str) == S.TRAIN_SPLIT).to_numpy()
        table[S.OOD_COMBINED] = combined_score(
            [table[c].to_numpy(np.float64) for c in COMBINED_PARTS], fit_rows)
        written.append(S.OOD_COMBINED)
    for col in columns:  # keep only what could be computed from the stored inputs
        if col not in written and not (feats if O.SCORERS[col].input_kind == "features" else logits):
            table = table.drop(columns=col)

    table[S.UMAP_X] = np.float32(np.nan)
    table[S.UMAP_Y] = np.float32(np.nan)
    if projection != "none" and feats:
        pparams = {"max_fit_rows": PROJECTION_MAX_FIT_ROWS, **dict(extra.get("projection_params") or {})}
        _add_projection(run_dir, table, feats, projection, pparams)
    else:
        _clear_projection_status(run_dir)

    diag_col = extra.get("diagnosis_scorer")
    if diag_col is not None:
        diag_col = _resolve_columns([diag_col])[0]
        if diag_col not in written:
            _warn(f"{diag_col} was not computed; the diagnosis falls back to the default scorer.")
            diag_col = None
    if diag_col is None:
        diag_col = next((c for c in DIAGNOSIS_PREFERENCE if c in written), None)
    label_info = table.attrs.get("label_issues")
    if S.LABEL_ISSUE not in table.columns and (S.LOSS_MEAN in table.columns
                                                or S.CONFIDENCE in table.columns):
        table[S.LABEL_ISSUE], label_info = noise.label_issues(table)
    if (S.LABEL_ISSUE in table.columns and isinstance(label_info, dict) and S.TRAIN_SPLIT in feats
            and label_neighbors):
        pos_train, arr_train = feats[S.TRAIN_SPLIT]
        t0 = time.perf_counter()
        table[S.LABEL_ISSUE], label_info = noise.refine_with_neighbors(table, pos_train, arr_train,
                                                                       label_info)
        log.info("label issues: neighbour check in %.2f s", time.perf_counter() - t0)
    table[S.DIAGNOSIS], diag_info = D.diagnosis_column(table, diag_col, thresholds=thresholds)
    if label_info is not None:
        diag_info["label_issues"] = label_info

    evaluation = ood_eval.evaluate_ood(
        table, written, fpr_definition=extra.get("fpr_definition", "ood_accepted_at_95_id"),
    ) if written else {"format_version": ood_eval.EVAL_FORMAT_VERSION, "metrics": {},
                       "skipped": ["no OOD scores (the run stores no features or logits)"]}
    evaluation["diagnosis"] = diag_info
    region = getattr(options, "thresholds", None)
    if region is not None:  # the data-map thresholds the `region` column was assigned with
        evaluation["region_thresholds"] = {"confidence": float(region.confidence),
                                           "variability": float(region.variability)}
    evaluation["diagnosis_counts"] = D.counts(table[S.DIAGNOSIS])
    with runstore.atomic_path(run_dir / S.OOD_EVAL_FILE) as tmp:
        tmp.write_text(json.dumps(_plain(evaluation), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return table


def _knn_k(value: Any) -> int | str:
    if value == "auto":
        return "auto"
    return int(value)


def combined_score(scores: list[NDArray[np.float64]], reference: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Mean over ``scores`` of each row's percentile rank among the ``reference`` rows.

    Each score is mapped through the empirical CDF of its finite reference values (the fraction
    of reference rows scoring at most as high; 1.0 beyond all of them, with the excess over the
    reference maximum, in reference-range units, added so far outliers still order), then
    averaged. Rank averaging puts scores of different units on one scale. NaN where any part
    is NaN.

    Examples
    --------
    >>> ref = np.array([True, True, True, True, False])
    >>> combined_score([np.array([1.0, 2, 3, 4, 2.5]), np.array([4.0, 3, 2, 1, 9])], ref).round(3)
    array([0.625, 0.625, 0.625, 0.625, 1.583])
    """
    total = np.zeros(len(reference), dtype=np.float64)
    for s in scores:
        s = np.asarray(s, dtype=np.float64)
        ref = np.sort(s[reference & np.isfinite(s)])
        if ref.size == 0:
            return np.full(len(reference), np.nan)
        pct = np.searchsorted(ref, s, side="right") / ref.size
        span = max(float(ref[-1] - ref[0]), 1e-12)
        total += pct + np.maximum(s - ref[-1], 0.0) / span
        total[~np.isfinite(s)] = np.nan
    return total / len(scores)


def _plain(obj: Any) -> Any:
    """JSON-safe copy: NumPy scalars to Python, NaN/inf to None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _clear_projection_status(run_dir: Path) -> None:
    from analysis import projection_job

    projection_job.status_path(run_dir).unlink(missing_ok=True)


def _add_projection(run_dir: Path, table: pd.DataFrame,
                    feats: dict[str, tuple[NDArray[np.intp], NDArray[Any]]], method: str,
                    params: dict[str, Any]) -> None:
    """Fill ``umap_x``/``umap_y`` and record in ``cache/projection.json`` what they hold."""
    from analysis import projection_job
    from analysis.projection import cached_projection, project_features, projection_params

    arrays, positions = projection_job.feature_arrays(run_dir, table, feats)
    if not arrays:
        _clear_projection_status(run_dir)
        return
    cache_dir = run_dir / S.CACHE_DIR
    t0 = time.perf_counter()
    if method == "auto":
        full = projection_params(method="umap", **params)
        key, emb = cached_projection(arrays, full, cache_dir)
        if emb is not None:
            method = "umap"
            status = {"state": "done", "table_method": "umap", "step": "done", "fraction": 1.0}
        else:
            method = "pca"
            emb = project_features(arrays, method="pca", cache_dir=cache_dir)
            status = {"state": "pending", "table_method": "pca", "step": "waiting for a worker",
                      "fraction": 0.0}
        projection_job.write_status(run_dir, key=key, params=params, pid=None, error=None, **status)
    else:
        try:
            emb = project_features(arrays, method=method, cache_dir=cache_dir, **params)  # type: ignore[arg-type]
        except ImportError as exc:
            _warn(f"{exc} Falling back to PCA.")
            method = "pca"
            emb = project_features(arrays, method="pca", cache_dir=cache_dir)
        except ValueError as exc:
            _warn(f"Projection skipped ({exc}).")
            _clear_projection_status(run_dir)
            return
        projection_job.write_status(run_dir, state="done", table_method=method, params=params,
                                    step="done", fraction=1.0, pid=None, error=None)
    projection_job.set_table_projection(table, emb, positions)
    log.info("projection (%s) of %d splits in %.2f s", method, len(emb), time.perf_counter() - t0)
