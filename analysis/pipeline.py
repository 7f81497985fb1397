"""``datamap analyze``: from a stored run to the per-example ``table.parquet``.

Steps: read ``run.json`` and ``examples.parquet``; read the compact dynamics columns; pivot to
dense arrays; compute the metrics of :mod:`analysis.dynamics`; assign regions; add OOD scores,
the projection and the diagnosis (:mod:`analysis.ood_stage`); write the table atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from analysis import noise, runstore
from analysis import schema as S
from analysis.dynamics import (
    DenseDynamics,
    RegionThresholds,
    assign_regions,
    compute_dynamics_metrics,
    pivot_dynamics,
)

__all__ = ["AnalyzeOptions", "analyze_run", "build_dynamics_table", "check_recorded_labels"]

_COMPACT = (S.GOLD_PROB, S.MARGIN, S.PRED, S.LOSS, S.EL2N)


@dataclass
class AnalyzeOptions:
    """Options of :func:`analyze_run` (all have working defaults)."""

    thresholds: RegionThresholds = field(default_factory=RegionThresholds)
    aum_skip_first_epoch: bool = False
    ood: bool = True
    """Compute OOD scores, projection and diagnosis where features/logits are stored."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Options passed through to the OOD/projection stage."""


def build_dynamics_table(
    run_dir: str | os.PathLike[str], options: AnalyzeOptions | None = None
) -> tuple[pd.DataFrame, runstore.RunMeta]:
    """Examples joined with their dynamics metrics and region (no OOD stage)."""
    table, meta = _dynamics_table(run_dir, options or AnalyzeOptions())
    finish_suggested_labels(table)
    return table, meta


def _dynamics_table(
    run_dir: str | os.PathLike[str], opts: AnalyzeOptions
) -> tuple[pd.DataFrame, runstore.RunMeta]:
    """:func:`build_dynamics_table` before the label issues' suggested labels are finished."""
    meta = runstore.load_run_meta(run_dir)
    examples = runstore.load_examples(run_dir)
    dyn = runstore.load_dynamics(run_dir, columns=_COMPACT)
    labels = examples[S.LABEL].to_numpy(dtype=np.int64, na_value=-1)
    dense = pivot_dynamics(dyn, examples[S.EXAMPLE_ID].to_numpy(), labels)
    del dyn
    metrics = metrics_from_dense(dense, meta.n_classes, opts)
    return assemble_table(examples, metrics, meta, opts), meta


_SUGGESTED_OTHER = "_suggested_other"
"""Per-example metric kept until the label issues are known: the class predicted most often
instead of the given label (the suggestion for a label issue)."""


def _nullable_labels(values: NDArray[np.int64]) -> Any:
    column = pd.array(np.where(values >= 0, values, 0), dtype="Int64")
    column[values < 0] = pd.NA
    return column


def add_label_noise_columns(table: pd.DataFrame) -> None:
    """Add ``label_issue`` (:mod:`analysis.noise`) in place.

    How the cut-off was chosen goes to ``table.attrs["label_issues"]`` (the OOD stage may re-rank
    the issues with feature-space neighbours and records it in ``ood_eval.json``);
    :func:`finish_suggested_labels` then gives the label issues their suggestion.
    """
    issue, info = noise.label_issues(table)
    table[S.LABEL_ISSUE] = issue
    table.attrs["label_issues"] = info


def finish_suggested_labels(table: pd.DataFrame) -> None:
    """``suggested_label`` of a label issue: the class predicted most often instead of its label.

    In place; drops the private per-example column that held it (a no-op without it).
    """
    if _SUGGESTED_OTHER not in table.columns:
        return
    if S.LABEL_ISSUE in table.columns:
        issue = noise.label_issue_mask(table[S.LABEL_ISSUE])
        table[S.SUGGESTED_LABEL] = table[S.SUGGESTED_LABEL].where(~issue, table[_SUGGESTED_OTHER])
    del table[_SUGGESTED_OTHER]


def metrics_from_dense(dense: DenseDynamics, n_classes: int, opts: AnalyzeOptions) -> pd.DataFrame:
    """Per-example metrics of pivoted dynamics (checks predictions against the class count)."""
    bad_pred = dense.observed & ((dense.pred < 0) | (dense.pred >= n_classes))
    if bad_pred.any():
        raise S.SchemaError(
            f"dynamics column `pred` holds class {int(dense.pred[bad_pred][0])}, outside the "
            f"{n_classes} classes of run.json."
        )
    check_recorded_labels(dense)
    metrics = compute_dynamics_metrics(dense, aum_skip_first_epoch=opts.aum_skip_first_epoch)
    metrics[S.SUGGESTED_LABEL] = _nullable_labels(
        noise.suggested_labels(dense.pred, dense.observed, dense.labels))
    metrics[_SUGGESTED_OTHER] = _nullable_labels(noise.suggested_labels(
        dense.pred, dense.observed, dense.labels, exclude_label=np.ones(len(dense.labels), bool)))
    return metrics


def check_recorded_labels(dense: DenseDynamics) -> None:
    """Refuse dynamics recorded against labels other than ``examples.parquet``'s.

    The dynamics store no label, but each row's ``margin`` (gold logit minus the largest other
    logit) and ``pred`` (the argmax) agree only for the label they were computed with:
    ``margin > 0`` means ``pred`` is that label, ``margin < 0`` means it is not. A row whose
    ``pred`` contradicts its ``margin`` under the ``examples.parquet`` label was recorded with a
    different label, so ``gold_prob`` and ``margin`` would silently describe another class than
    ``correctness`` does.

    Raises
    ------
    SchemaError
        Some row's margin and prediction disagree with the examples' label.
    """
    with np.errstate(invalid="ignore"):
        correct = dense.pred == dense.labels[None, :]
        bad = dense.observed & (((dense.margin > 0) & ~correct) | ((dense.margin < 0) & correct))
    if bad.any():
        epoch_i, col = (int(v[0]) for v in np.nonzero(bad))
        n_bad = int(bad.any(axis=0).sum())
        raise S.SchemaError(
            f"Expected the dynamics to be recorded with the labels of {S.EXAMPLES_FILE}, got "
            f"{n_bad} example(s) whose recorded margin and prediction contradict that label (first: "
            f"example {S._py(dense.example_ids[col])!r}, epoch {int(dense.epochs[epoch_i])}, label "
            f"{int(dense.labels[col])}, predicted {int(dense.pred[epoch_i, col])}, margin "
            f"{float(dense.margin[epoch_i, col]):.3g}). Pass the same labels to `update` as in "
            f"the `examples` table given to `save`."
        )


def assemble_table(
    examples: pd.DataFrame, metrics: pd.DataFrame, meta: runstore.RunMeta, opts: AnalyzeOptions
) -> pd.DataFrame:
    """The examples with their metrics (row-aligned), region and label name."""
    table = examples.reset_index(drop=True)
    for col in metrics.columns:
        table[col] = metrics[col].to_numpy() if not isinstance(metrics[col].dtype, pd.api.extensions.ExtensionDtype) else metrics[col].array
    table[S.REGION] = pd.Categorical(
        assign_regions(metrics[S.CONFIDENCE].to_numpy(), metrics[S.VARIABILITY].to_numpy(), opts.thresholds),
        categories=list(S.REGIONS),
    )
    if S.LABEL_NAME not in table.columns:
        names = np.asarray(meta.class_names, dtype=object)
        lab = table[S.LABEL].to_numpy(dtype=np.int64, na_value=-1)
        table[S.LABEL_NAME] = np.where(lab >= 0, names[np.clip(lab, 0, None)], None)
    if S.SUGGESTED_LABEL in table.columns:
        add_label_noise_columns(table)
    return table


def analyze_run(
    run_dir: str | os.PathLike[str], options: AnalyzeOptions | None = None, *, write: bool = True
) -> pd.DataFrame:
    """Analyse a run and (by default) write ``RUN_DIR/table.parquet``.

    ``write=False`` leaves ``table.parquet`` as it was; the OOD stage still writes
    ``ood_eval.json`` and the projection cache (``cache/``), so after such a call the evaluation
    file describes the returned table, not the stored one.

    Returns
    -------
    DataFrame
        One row per example: ids, split, label, payload, the dynamics metrics, ``region`` and,
        where the run stores features/logits, ``ood_*`` scores, ``umap_x``/``umap_y`` and
        ``diagnosis``.
    """
    opts = options or AnalyzeOptions()
    table, meta = _dynamics_table(run_dir, opts)
    return finish_table(Path(run_dir), table, meta, opts, write=write)


def finish_table(
    run_dir: Path, table: pd.DataFrame, meta: runstore.RunMeta, opts: AnalyzeOptions, *, write: bool
) -> pd.DataFrame:
    """The OOD stage (when enabled; it may re-rank the label issues), the label issues'
    suggested labels and the atomic write of ``table.parquet``."""
    if opts.ood:
        from analysis import ood_stage

        table = ood_stage.add_ood_columns(Path(run_dir), table, meta, opts)
    finish_suggested_labels(table)
    if write:
        runstore.save_table(run_dir, table)
    return table
