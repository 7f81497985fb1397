"""OOD scores, projection and cross-diagnosis stage of ``datamap analyze``.

Placeholder until the OOD scorers land: adds a ``diagnosis`` derived from the region alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import schema as S


def add_ood_columns(run_dir: Path, table: pd.DataFrame, meta: Any, options: Any) -> pd.DataFrame:
    """Return ``table`` with OOD columns, projection and ``diagnosis`` added where possible."""
    region = table[S.REGION].astype(str).to_numpy()
    diag = np.select(
        [region == S.EASY, region == S.AMBIGUOUS, region == S.HARD],
        ["clean", "ambiguous", "suspect_mislabeled"],
        default="unscored",
    )
    table[S.DIAGNOSIS] = diag
    return table
