"""datamap's computation layer: record, store and analyse per-example training dynamics.

The public entry points are importable from here::

    from analysis import DynamicsRecorder, analyze_run, load_table

Nothing here imports Streamlit or Plotly, and torch/umap are imported only where used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DynamicsRecorder": "analysis.recorder",
    "analyze_run": "analysis.pipeline",
    "analyze_run_dask": "analysis.dask_backend",
    "AnalyzeOptions": "analysis.pipeline",
    "RegionThresholds": "analysis.dynamics",
    "compute_dynamics_metrics": "analysis.dynamics",
    "dynamics_from_logits": "analysis.dynamics",
    "import_cartography": "analysis.cartography",
    "export_cartography": "analysis.cartography",
    "load_table": "analysis.runstore",
    "load_run_meta": "analysis.runstore",
    "load_examples": "analysis.runstore",
    "load_dynamics": "analysis.runstore",
    "save_features": "analysis.runstore",
    "save_logits": "analysis.runstore",
    "SchemaError": "analysis.schema",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    """Import public names lazily, so ``import analysis.schema`` stays light."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(import_module(module), name)
