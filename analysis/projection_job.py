"""The UMAP projection as a stage of its own, off the path from a run to its table.

With the default ``--projection auto``, ``datamap analyze`` writes ``table.parquet`` at once: its
``umap_x``/``umap_y`` hold the cached UMAP map when one exists for these features and parameters
(content hash, :func:`analysis.projection.projection_cache_key`), else a PCA map as a stand-in,
and ``RUN_DIR/cache/projection.json`` records which (``table_method``) and that a UMAP map is
``pending``. :func:`run_projection_job` (``datamap project RUN_DIR``; ``datamap serve`` starts it
in a background process) then fits UMAP, writes progress to the same file, caches the result and
replaces the two columns of ``table.parquet`` atomically. The dashboard reloads a table whose
file changed, so the UMAP map appears without a restart.

Status file (JSON, written atomically)::

    {"state": "pending" | "running" | "done" | "failed", "table_method": "pca" | "umap",
     "key": "<cache key>", "params": {...}, "step": "...", "fraction": 0.0-1.0,
     "pid": int, "error": str, "updated_at": float, "started_at": float}
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from analysis import runstore
from analysis import schema as S

log = logging.getLogger(__name__)

__all__ = ["STATUS_FILE", "feature_arrays", "read_status", "write_status", "run_projection_job",
           "job_is_alive", "set_table_projection"]

STATUS_FILE = "projection.json"
"""Name of the status file inside ``RUN_DIR/cache/``."""
STATES = ("pending", "running", "done", "failed")


def status_path(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/cache/projection.json``."""
    return Path(run_dir) / S.CACHE_DIR / STATUS_FILE


def read_status(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The projection status of a run, or None when there is none (or it is unreadable)."""
    path = status_path(run_dir)
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and status.get("state") in STATES else None


def write_status(run_dir: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the status file (atomically) and return the new status."""
    status = {**(read_status(run_dir) or {}), **fields, "updated_at": time.time()}
    with runstore.atomic_path(status_path(run_dir)) as tmp:
        tmp.write_text(json.dumps(status, indent=1, sort_keys=True, default=str) + "\n")
    return status


def job_is_alive(status: Mapping[str, Any] | None) -> bool:
    """Whether the process a ``running`` status names still exists (on this machine)."""
    if not status or status.get("state") != "running":
        return False
    pid = status.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def feature_arrays(
    run_dir: Path, table: pd.DataFrame, feats: Mapping[str, tuple[NDArray[np.intp], NDArray[Any]]] | None = None,
) -> tuple[dict[str, NDArray[Any]], dict[str, NDArray[np.intp]]]:
    """The finite feature rows of every split and their row positions in ``table``.

    ``feats`` (split -> (table positions, features)) as the OOD stage loads them; None loads them.
    """
    if feats is None:
        from analysis import ood_stage

        feats = ood_stage._consistent(ood_stage._load_kind(run_dir, S.FEATURES_DIR, pd.Index(table[S.EXAMPLE_ID])),
                                      "features", S.TRAIN_SPLIT)
    arrays: dict[str, NDArray[Any]] = {}
    positions: dict[str, NDArray[np.intp]] = {}
    for split, (pos, arr) in feats.items():
        ok = np.isfinite(np.asarray(arr)).all(axis=1)
        if ok.any():
            arrays[split] = np.asarray(arr)[ok]
            positions[split] = pos[ok]
    return arrays, positions


def set_table_projection(table: pd.DataFrame, emb: Mapping[str, NDArray[Any]],
                         positions: Mapping[str, NDArray[np.intp]]) -> None:
    """Write ``emb`` (split -> (n, 2)) into ``table``'s ``umap_x``/``umap_y`` at ``positions``."""
    x = np.full(len(table), np.nan, np.float32)
    y = np.full(len(table), np.nan, np.float32)
    for split, e in emb.items():
        pos = positions[split]
        x[pos], y[pos] = e[:, 0], e[:, 1]
    table[S.UMAP_X], table[S.UMAP_Y] = x, y


def run_projection_job(
    run_dir: str | os.PathLike[str], *, progress: Callable[[str, float], None] | None = None,
) -> dict[str, Any]:
    """Compute the pending UMAP map of a run, cache it and write it into ``table.parquet``.

    Parameters
    ----------
    run_dir : path-like
        An analysed run whose status file (``cache/projection.json``) says ``pending``, ``failed``
        or ``running`` (a job that died). A run without one is projected with the default
        parameters of ``datamap analyze``.
    progress : callable(step, fraction), optional
        Also called at every step (the status file is always updated).

    Returns
    -------
    dict
        The final status (``state`` is ``done`` or ``failed``; ``failed`` carries ``error``).
    """
    from analysis.projection import project_features

    run = Path(run_dir)
    status = read_status(run) or {}
    params = dict(status.get("params") or {})
    if not params:
        from analysis.ood_stage import PROJECTION_MAX_FIT_ROWS

        params = {"max_fit_rows": PROJECTION_MAX_FIT_ROWS}
    started = time.time()
    write_status(run, state="running", pid=os.getpid(), started_at=started, step="loading features",
                 fraction=0.0, error=None, params=params)

    def report(step: str, fraction: float) -> None:
        write_status(run, step=step, fraction=round(float(fraction), 4))
        if progress is not None:
            progress(step, fraction)

    try:
        table = runstore.load_table(run)
        arrays, positions = feature_arrays(run, table)
        if not arrays:
            raise ValueError("the run stores no finite features to project")
        emb = project_features(arrays, method="umap", cache_dir=run / S.CACHE_DIR, progress=report, **params)
        report("writing the table", 0.99)
        # the table may have been rewritten (a new `datamap analyze`) meanwhile: project its rows
        fresh = runstore.load_table(run)
        if not fresh[S.EXAMPLE_ID].equals(table[S.EXAMPLE_ID]):
            arrays, positions = feature_arrays(run, fresh)
            emb = project_features(arrays, method="umap", cache_dir=run / S.CACHE_DIR, **params)
        set_table_projection(fresh, emb, positions)
        runstore.save_table(run, fresh)
    except Exception as exc:  # noqa: BLE001 - recorded for the dashboard, then re-raised by the CLI
        log.exception("projection job failed")
        return write_status(run, state="failed", error=f"{type(exc).__name__}: {exc}", pid=None)
    return write_status(run, state="done", table_method="umap", step="done", fraction=1.0, pid=None,
                        seconds=round(time.time() - started, 1), peak_rss_mb=_peak_rss_mb())


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB (None where the platform does not say)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.projection_job RUN_DIR``: what ``datamap serve`` starts."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m analysis.projection_job RUN_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    status = run_projection_job(args[0])
    return 0 if status.get("state") == "done" else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
