"""Small analysed runs for the dashboard tests: synthetic dynamics plus PNG images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import runstore
from analysis import schema as S
from analysis.pipeline import AnalyzeOptions, analyze_run
from analysis.synthetic import make_synthetic_run

SAMPLE_RUN = Path(__file__).resolve().parents[2] / "sample_data" / "run"


def _png(label: int | None, seed: int) -> bytes:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    if label is None:  # OOD: noise
        arr = (rng.random((28, 28)) * 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    else:
        img = Image.new("L", (28, 28), 0)
        ImageDraw.Draw(img).text((10, 8), str(label % 10), fill=255)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def make_image_run(
    run_dir: str | Path, *, n_examples: int = 1500, n_eval: int = 200, seed: int = 0,
    projection: str = "pca",
) -> Path:
    """An analysed synthetic run with an ``image`` column (PNG bytes), OOD scores and a projection.

    ``projection="pca"`` keeps it fast (UMAP's first call in a process compiles for ~45 s).
    """
    run = make_synthetic_run(run_dir, n_examples=n_examples, n_eval=n_eval, seed=seed)
    examples = runstore.load_examples(run)
    labels = examples[S.LABEL].to_numpy(dtype=np.int64, na_value=-1)
    examples[S.IMAGE] = [_png(None if lab < 0 else int(lab), i) for i, lab in enumerate(labels)]
    runstore.save_examples(run, examples)
    analyze_run(run, AnalyzeOptions(extra={"projection": projection}))
    return Path(run)


def table_of(run_dir: str | Path) -> pd.DataFrame:
    return runstore.load_table(run_dir)
